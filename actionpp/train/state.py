"""Everything a run carries from one iteration to the next, and its checkpoint form.

:class:`TrainerState` holds the student (and its DDP wrapper), the EMA teacher, the
optimiser of the current phase, the method state (``saacl``: the class centres' allocator
and the SAACL queue; ``banks``: the ISD memory banks), the four random generators, the
counters and the best validation score. What a switched-on term needs comes from
:meth:`TrainerState.require_teacher`, ``require_saacl`` and ``require_banks`` (an error
naming the switch that is off, never None); ``probe`` instruments the steps' stages.
:meth:`TrainerState.state_dict` is a plain dict that ``torch.load(weights_only=True)`` reads back;
:meth:`TrainerState.load_state_dict` restores it exactly, so a killed run resumes bit-for-bit.

Random generators (each seeded from ``runtime.seed`` plus a per-rank offset):
``batch`` (CPU: which images), ``aug`` (the device: augmentation, mean-teacher noise),
``loss`` (the device: pixel sampling), ``cpu`` (CPU: the draws of the anatomical contrast).

Taught in notebooks/04_train.ipynb.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from actionpp.allocation import CentreAllocator
from actionpp.checkpoint import FORMAT_VERSION, CheckpointError, capture_rng, restore_rng, tensors_to
from actionpp.config import Config, config_hash
from actionpp.distributed import RANK_SEED_OFFSET, DistInfo
from actionpp.losses import FeatureQueue, MemoryBank
from actionpp.models import EMATeacher
from actionpp.models.segmodel import SegModel

__all__ = ["PHASES", "TrainerState", "SaaclState", "IsdBanks", "StageProbe", "windows_per_image", "phase_bounds"]

PHASES = ("pretrain", "finetune")


class StageProbe(Protocol):
    """Instrumentation of a step (:mod:`actionpp.train.steps`): called with a stage's name, it returns the
    context the stage runs in (a timer, a ``torch.profiler.record_function``). Set as ``TrainerState.probe``;
    it never changes what a step computes."""

    def __call__(self, stage: str) -> contextlib.AbstractContextManager[Any]: ...


@dataclass
class SaaclState:
    """SAACL's running state (``method.saacl``): the class-centre allocator and the teacher-embedding queue."""

    allocator: CentreAllocator
    queue: FeatureQueue


@dataclass
class IsdBanks:
    """ISD's memory banks (``method.pretrain``): one global embedding per image, and every local window of it."""

    global_bank: MemoryBank
    local_bank: MemoryBank


def windows_per_image(cfg: Config) -> int:
    """Local ISD windows per training image (2D: ((size - patch) // stride + 1)^2; 3D: per crop axis)."""
    p = cfg.pretrain
    spatial = (cfg.data.size, cfg.data.size) if cfg.model.arch == "unet2d" else tuple(cfg.data.crop)
    n = 1
    for extent in spatial:
        n *= (extent - p.patch) // p.stride + 1
    return n


def phase_bounds(cfg: Config) -> list[tuple[str, int, int]]:
    """``(phase, first global iteration, number of iterations)`` for the phases that run."""
    out = []
    start = 0
    for phase, n in (("pretrain", cfg.pretrain_iters), ("finetune", cfg.finetune_iters)):
        if n > 0:
            out.append((phase, start, n))
            start += n
    return out


class TrainerState:
    """All mutable state of a run (see the module docstring)."""

    def __init__(self, cfg: Config, info: DistInfo, device: torch.device) -> None:
        self.cfg = cfg
        self.info = info
        self.device = device
        self.hash = config_hash(cfg)
        seed = cfg.runtime.seed
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        offset = RANK_SEED_OFFSET * info.rank
        self.gen_batch = torch.Generator(device="cpu").manual_seed(seed + offset)
        self.gen_aug = torch.Generator(device=device).manual_seed(seed + 1 + offset)
        self.gen_loss = torch.Generator(device=device).manual_seed(seed + 2 + offset)
        self.gen_cpu = torch.Generator(device="cpu").manual_seed(seed + 3 + offset)

        # ---- models: identical initial weights on every rank
        torch.manual_seed(seed)
        self.student = SegModel(cfg).to(device)
        self.memory_format = torch.contiguous_format
        if cfg.runtime.channels_last:
            # before the teacher copies the student: both hold their convolution weights channels-last
            self.memory_format = torch.channels_last if self.student.spatial_dims == 2 else torch.channels_last_3d
            self.student.to(memory_format=self.memory_format)  # type: ignore[call-overload]
        self.teacher: EMATeacher[SegModel] | None = None
        if cfg.method.teacher:
            self.teacher = EMATeacher(self.student, batch_statistics=cfg.train.teacher_mode == "train").to(device)
        self.ddp: nn.Module = self.student
        if info.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.ddp = DDP(
                self.student,
                device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=True,
            )
        if cfg.runtime.compile:
            # compile the backbone's forward (a bound method): state_dict keys stay unchanged
            net = self.student.net
            setattr(net, "forward_features", torch.compile(net.forward_features))  # noqa: B010 - mypy forbids method assignment

        # ---- method state: centres and allocator with the SAACL queue, ISD memory banks
        self.saacl: SaaclState | None = None
        if cfg.method.saacl:
            from actionpp.centers import make_centers

            centres = make_centers(cfg.data.num_classes, cfg.model.rep_dim, method=cfg.saacl.centre_method, seed=seed)
            self.saacl = SaaclState(
                CentreAllocator(centres.vectors.to(device), momentum=cfg.saacl.allocator_momentum,
                                mode=cfg.saacl.assignment, seed=seed),
                FeatureQueue(cfg.saacl.queue_size, cfg.model.rep_dim, device=device),
            )
        self.banks: IsdBanks | None = None
        if cfg.method.pretrain:
            # the banks hold memory_bank *images*: one global embedding each, and all its local windows
            self.banks = IsdBanks(
                MemoryBank(cfg.pretrain.memory_bank, cfg.model.proj_dim, device=device),
                MemoryBank(cfg.pretrain.memory_bank * windows_per_image(cfg), cfg.model.proj_dim, device=device),
            )

        # ---- optimiser (a fresh one at each phase start: phase_of_optimizer says whose it is) and counters
        self.iteration = 0  # completed iterations over both phases
        self.phase_of_optimizer: str | None = None  # None: no phase has stepped this optimiser yet
        self.optimizer: torch.optim.Optimizer = self.new_optimizer(self.phase_at(0) or "finetune")
        self.best_score = -math.inf
        self.best_iteration: int | None = None
        self.best_summary: dict[str, Any] | None = None
        self.phase_seconds = {p: 0.0 for p in PHASES}
        self.phase_done_iters = {p: 0 for p in PHASES}
        self.last_checkpoint: Path | None = None
        self.probe: StageProbe | None = None  # instrumentation of the steps' stages (never checkpointed)

    # ------------------------------------------------------------------ what a switched-on term needs

    def require_teacher(self) -> EMATeacher[SegModel]:
        """The EMA teacher; :class:`RuntimeError` when the run has none (``method.teacher`` off)."""
        if self.teacher is None:
            raise RuntimeError(f"method {self.cfg.method.name!r}: a term needs the EMA teacher, but method.teacher "
                               "is off")
        return self.teacher

    def require_saacl(self) -> SaaclState:
        """SAACL's allocator and queue; :class:`RuntimeError` when ``method.saacl`` is off."""
        if self.saacl is None:
            raise RuntimeError(f"method {self.cfg.method.name!r}: SAACL's state is asked for, but method.saacl is off")
        return self.saacl

    def require_banks(self) -> IsdBanks:
        """ISD's memory banks; :class:`RuntimeError` when ``method.pretrain`` is off."""
        if self.banks is None:
            raise RuntimeError(f"method {self.cfg.method.name!r}: ISD's banks are asked for, but method.pretrain "
                               "is off")
        return self.banks

    def layout(self, x: Tensor) -> Tensor:
        """``x`` in the networks' memory format (``runtime.channels_last``; a no-op otherwise)."""
        return x.contiguous(memory_format=self.memory_format)

    @property
    def generators(self) -> dict[str, torch.Generator]:
        return {"batch": self.gen_batch, "aug": self.gen_aug, "loss": self.gen_loss, "cpu": self.gen_cpu}

    def new_optimizer(self, phase: str) -> torch.optim.Optimizer:
        """A fresh SGD for ``phase`` (Nesterov momentum in fine-tuning when ``train.nesterov_finetune``)."""
        t = self.cfg.train
        nesterov = t.nesterov_finetune and phase == "finetune"
        return torch.optim.SGD(
            self.student.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, nesterov=nesterov
        )

    def phase_at(self, iteration: int) -> str | None:
        """Phase of the iteration with global index ``iteration`` (None after the last)."""
        for phase, start, n in phase_bounds(self.cfg):
            if start <= iteration < start + n:
                return phase
        return None

    # ------------------------------------------------------------------ checkpoint form

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint (every rank takes part: the RNG states of all ranks are gathered)."""
        rngs = _gather_objects(capture_rng(self.generators), self.info)
        return {
            "format": FORMAT_VERSION,
            "iteration": self.iteration,
            "phase": self.phase_of_optimizer,
            "config": json.dumps(self.cfg.to_dict(), sort_keys=True),
            "config_hash": self.hash,
            "student": self.student.state_dict(),
            "teacher": self.teacher.state_dict() if self.teacher is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "allocator": self.saacl.allocator.state_dict() if self.saacl is not None else None,
            "queue": self.saacl.queue.state_dict() if self.saacl is not None else None,
            "bank_g": self.banks.global_bank.state_dict() if self.banks is not None else None,
            "bank_l": self.banks.local_bank.state_dict() if self.banks is not None else None,
            "rng": rngs,
            "world_size": self.info.world_size,
            "best": {
                "score": self.best_score if math.isfinite(self.best_score) else None,
                "iteration": self.best_iteration,
                "summary": json.dumps(self.best_summary) if self.best_summary is not None else None,
            },
            "timing": {"seconds": dict(self.phase_seconds), "iters": dict(self.phase_done_iters)},
        }

    def best_state_dict(self) -> dict[str, Any]:
        """The ``best.pt`` checkpoint: weights, config and iteration only."""
        return {
            "format": FORMAT_VERSION,
            "iteration": self.iteration,
            "config": json.dumps(self.cfg.to_dict(), sort_keys=True),
            "config_hash": self.hash,
            "student": self.student.state_dict(),
            "teacher": self.teacher.state_dict() if self.teacher is not None else None,
            "kind": "best",
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (raises :class:`CheckpointError` for another world size)."""
        self.student.load_state_dict(state["student"])
        if self.teacher is not None:
            self.teacher.load_state_dict(state["teacher"])
        self.iteration = int(state["iteration"])
        phase = state.get("phase")
        self.phase_of_optimizer = None  # the loop starts a fresh optimiser unless the checkpoint's is resumed
        if phase is not None and state.get("optimizer") is not None and self.phase_at(self.iteration) == phase:
            self.optimizer = self.new_optimizer(phase)
            self.optimizer.load_state_dict(state["optimizer"])
            self.phase_of_optimizer = phase
        if self.saacl is not None:
            self.saacl.allocator.load_state_dict(state["allocator"])
            self.saacl.queue.load_state_dict(state["queue"])
        if self.banks is not None:
            self.banks.global_bank.load_state_dict(state["bank_g"])
            self.banks.local_bank.load_state_dict(state["bank_l"])
        rngs = state["rng"]
        if len(rngs) != self.info.world_size:
            raise CheckpointError(
                f"checkpoint was written by {len(rngs)} process(es); this run has {self.info.world_size}"
            )
        # the RNG states must be CPU tensors: a checkpoint read with map_location=cuda holds CUDA copies
        restore_rng(tensors_to(rngs[self.info.rank], "cpu"), self.generators)
        best = state.get("best") or {}
        score = best.get("score")
        self.best_score = float(score) if score is not None else -math.inf
        self.best_iteration = best.get("iteration")
        self.best_summary = json.loads(best["summary"]) if best.get("summary") else None
        timing = state.get("timing") or {}
        self.phase_seconds.update(timing.get("seconds", {}))
        self.phase_done_iters.update(timing.get("iters", {}))


def _gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    if not info.enabled:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out
