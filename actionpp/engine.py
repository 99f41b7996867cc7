"""The one training loop: a method is configuration.

``train(config)`` runs, in one loop, every method of the project
(``supervised``, ``mean_teacher``, ``action``, ``actionpp`` and the ablations):
the method name only switches loss terms and phases on and off
(:data:`actionpp.config.METHOD_PRESETS`).

Phases (each skippable, each with its own SGD and poly decay, as the two
official scripts have):

1. **pre-training** (ACTION / ACTION++): supervised loss on labelled images +
   ISD global and local distillation: student (photometric strong view) and EMA
   teacher (weak view) embed the pooled bottleneck (global) and pooled windows of
   the last decoder map (local); ``isd_loss`` compares their similarity
   distributions to a memory bank of recent teacher embeddings.
2. **fine-tuning**: supervised 0.5 (CE + Dice) on labelled images; for the
   unlabelled batch the teacher predicts on the weak view, the student sees the
   CutMix / ClassMix + jitter + blur view with the teacher's targets mixed the
   same way; then pseudo-label CE, mean-teacher consistency, anatomical contrast
   (AnCo, ReCo style) and SAACL as switched on.

Speed decisions (method.md section 9):

- the training set lives on the device (``actionpp.data.tensors``); batches are
  index tensors drawn from a seeded CPU ``torch.Generator``; augmentation is
  batched on the device (``actionpp.augment``);
- the representation head is evaluated only at the sampled pixels
  (``RepresentationHead.forward_at``), never densely. **Deviation:** AnCo
  prototypes (class means) are computed from the sampled pixels of the batch,
  where ReCo averages every valid pixel;
- bf16 autocast on CUDA, optional ``torch.compile``; loss terms are accumulated
  as tensors and read (``.item()``) only every ``runtime.log_every`` iterations.

Choices and deviations (each can be checked in the code below):

- **AnCo prototypes** come from the sampled pixels (``anco.pixels_per_class`` per class
  and batch, labelled ground truth + unlabelled pseudo-labels with teacher
  confidence >= ``anco.weak_threshold``), not from every valid pixel as in ReCo.
- **SAACL anchors**: up to ``saacl.anchors_per_class`` ground-truth pixels per class
  present in the labelled batch; the teacher embeds the same pixels of the same
  (weakly augmented) view; the queue is pushed after the loss; the allocator is
  updated every iteration with the student's anchor embeddings (detached) before
  the loss reads the centres.
- **Mean teacher** (SSL4MIS): MSE between student and teacher softmax on the
  unlabelled batch, teacher input noise N(0, 0.1^2) clipped to +-0.2, weight
  ``loss.consistency * exp(-5 (1 - t)^2)`` with ``t = it / loss.consistency_rampup``
  counted in fine-tuning iterations (SSL4MIS counts "epochs" of 150 iterations over
  200 of them, i.e. 30 k iterations, its whole run; the profiles ramp over the first
  20 % of fine-tuning). The consistency variant, not the pseudo-label one.
- **Teacher**: ``models.EMATeacher`` (eval mode, BN statistics copied from the student).
- **Temperatures** (:func:`temperature_schedules`): with ATS every contrastive
  temperature is scheduled, the fine-tuning ones (AnCo; SAACL with its own low end
  ``saacl.tau_min``, or fixed at ``saacl.fixed_tau``) over fine-tuning iterations and
  ISD's ``tau_s`` / ``tau_t`` over pre-training iterations, each from ``pretrain.tau_max``
  down to its configured value, as the official pre-training script does.
- **ISD memory banks** hold ``pretrain.memory_bank`` images: the global bank one
  embedding per image, the local bank every window of each of those images.
- **SAACL teacher view** (deviation from the official 2D script): the positive "own
  view" of an anchor is the teacher's *representation head* at that pixel (the EMA of
  the student's head, as the official 3D script does); the official 2D script compares
  with the teacher's raw concatenated decoder features (496 channels, which is why its
  head is 496-dimensional). Ours lets ``model.rep_dim`` be the paper's 128.
- **Loss diagnostics**: at log iterations each weighted term's gradient on the
  backbone (``grad/<term>``, ``share/<term>``) and the centre term's share of the SAACL
  anchor gradient under both ``saacl.centre_term`` forms go to the log
  (``runtime.grad_norms``).
- **Phases**: each starts a fresh SGD with its own poly decay; the teacher, queue and
  banks carry over.
- **Distributed**: parameters stay identical through DDP's gradient averaging; each rank
  keeps its own SAACL queue, allocator means and memory banks (rank 0's are
  checkpointed), and rank 0's BatchNorm statistics are broadcast before every
  checkpoint so that every rank continues from what was saved.

Safety: atomic checkpoints that resume bit-exactly (``actionpp.checkpoint``),
non-finite losses stop the run with :class:`TrainingDiverged`, validation on
``data.val_split`` (never the test split) keeps ``best.pt`` and ``last.pt``.

Taught in notebooks/04_train.ipynb.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from actionpp import augment as aug
from actionpp.atomic import atomic_write_text
from actionpp.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    capture_rng,
    check_compatible,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from actionpp.config import Config, config_hash, dump_yaml, load_config
from actionpp.distributed import RANK_SEED_OFFSET, DistInfo, barrier, cleanup, init_distributed, resolve_device
from actionpp.runlog import RunLogger, environment_info, read_jsonl, write_json_atomic

__all__ = [
    "TrainingDiverged",
    "RunDirError",
    "RunResult",
    "SegModel",
    "train",
    "load_model",
    "default_run_dir",
    "evaluate_checkpoint",
    "resolve_data_root",
    "sigmoid_rampup",
    "poly_lr",
]


# =========================================================================== errors and results


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; names the iteration, every loss term and the last good checkpoint."""

    def __init__(self, iteration: int, phase: str, terms: Mapping[str, float], last_checkpoint: Path | None) -> None:
        self.iteration = iteration
        self.phase = phase
        self.terms = dict(terms)
        self.last_checkpoint = last_checkpoint
        shown = ", ".join(f"{k}={v:.6g}" for k, v in self.terms.items())
        where = str(last_checkpoint) if last_checkpoint is not None else "none (no checkpoint written yet)"
        super().__init__(
            f"training diverged at iteration {iteration} ({phase}): non-finite loss; terms: {shown}; "
            f"last good checkpoint: {where}"
        )


class RunDirError(ValueError):
    """The run directory holds another run (or a run that must be resumed explicitly)."""


@dataclass
class RunResult:
    """What :func:`train` returns (and stores as ``metrics.json``).

    ``final`` / ``best``: validation summaries (mean Dice etc.; None without validation);
    ``its_per_s``: iterations per second per phase of *this* process's training time.
    """

    run_dir: Path
    config_hash: str
    method: str
    iterations: int
    final: dict[str, Any] | None
    best: dict[str, Any] | None
    best_iteration: int | None
    selected: str
    checkpoint: Path | None
    seconds: float
    its_per_s: dict[str, float] = field(default_factory=dict)
    cached: bool = False
    is_main: bool = True

    def summary(self) -> dict[str, Any]:
        """JSON-ready dict (the content of ``metrics.json``)."""
        return {
            "run_dir": str(self.run_dir),
            "config_hash": self.config_hash,
            "method": self.method,
            "iterations": self.iterations,
            "final": self.final,
            "best": self.best,
            "best_iteration": self.best_iteration,
            "selected": self.selected,
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "seconds": self.seconds,
            "its_per_s": self.its_per_s,
        }

    @classmethod
    def from_summary(cls, d: Mapping[str, Any], run_dir: Path) -> "RunResult":
        return cls(
            run_dir=run_dir,
            config_hash=d["config_hash"],
            method=d["method"],
            iterations=int(d["iterations"]),
            final=d.get("final"),
            best=d.get("best"),
            best_iteration=d.get("best_iteration"),
            selected=d.get("selected", "last"),
            checkpoint=Path(d["checkpoint"]) if d.get("checkpoint") else None,
            seconds=float(d.get("seconds", 0.0)),
            its_per_s=dict(d.get("its_per_s", {})),
            cached=True,
        )


# =========================================================================== small schedules


def poly_lr(base_lr: float, it: int, max_it: int, power: float = 0.9) -> float:
    """``base_lr * (1 - it / max_it) ** power`` (it = 0 .. max_it - 1); 0 for it >= max_it."""
    if max_it <= 0 or it >= max_it:
        return 0.0
    return base_lr * (1.0 - it / max_it) ** power


def sigmoid_rampup(it: int, length: int) -> float:
    """SSL4MIS / Laine & Aila ramp-up ``exp(-5 (1 - t)^2)``, t = clip(it / length, 0, 1); 1 when length is 0."""
    if length <= 0:
        return 1.0
    t = min(max(it / length, 0.0), 1.0)
    return float(math.exp(-5.0 * (1.0 - t) ** 2))


# =========================================================================== the model bundle


class SegModel(nn.Module):
    """Backbone + every head the methods use, as one module (student; the EMA teacher is a copy).

    - ``net``: ``UNet2D`` (ACDC) or ``VNet3D`` (LA); inference uses only ``net``;
    - ``rep``: pixel representation head (SAACL and AnCo): every decoder map (bottleneck
      included) up-sampled to the output size and concatenated, then a 3x3 (3D: 3x3x3)
      and a 1x1 (1x1x1) convolution to ``model.rep_dim``, as the official 2D and 3D heads;
    - ``g_head`` / ``g_pred``: ISD global projection (pooled bottleneck) and student predictor;
    - ``l_head`` / ``l_pred``: ISD local projection (pooled windows of the last decoder map) and predictor.

    ``forward(x, fn)``: ``fn(self, logits, features)`` runs inside the forward, so
    under DistributedDataParallel every head used by ``fn`` is part of one forward pass.
    """

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        from actionpp.models import GlobalHead, LocalHead, ProjectionMLP, RepresentationHead, UNet2D, VNet3D

        k = cfg.data.num_classes
        if cfg.model.arch == "unet2d":
            self.net: nn.Module = UNet2D(cfg.model.in_channels, k)
            self.spatial_dims = 2
        else:
            self.net = VNet3D(cfg.model.in_channels, k)
            self.spatial_dims = 3
        ch = list(self.net.feature_channels)  # type: ignore[attr-defined]  # coarse -> fine
        self.rep = RepresentationHead(ch, dim=cfg.model.rep_dim, kernel_size=3, spatial_dims=self.spatial_dims)
        h, d = cfg.model.proj_hidden, cfg.model.proj_dim
        self.g_head = GlobalHead(ch[0], h, d)
        self.g_pred = ProjectionMLP(d, h, d)
        self.l_head = LocalHead(ch[-1], window=cfg.pretrain.patch, stride=cfg.pretrain.stride, hidden=h, out_dim=d)
        self.l_pred = ProjectionMLP(d, h, d)

    def rep_maps(self, features: Any) -> list[Tensor]:
        """The decoder maps the representation head reads."""
        return list(features.decoder)

    def forward(self, x: Tensor, fn: Callable[..., Any] | None = None) -> Any:
        logits, features = self.net.forward_features(x)  # type: ignore[operator]
        if fn is None:
            return logits, features
        return fn(self, logits, features)


# =========================================================================== data


def resolve_data_root(root: str, cfg: Config | None = None, dataset: str | None = None) -> Path:
    """``"phantom"`` -> the generated phantom folder; ``"shared"`` -> ``../shared/data/<dataset>``; else the path."""
    dataset = dataset or (cfg.data.dataset if cfg is not None else "acdc")
    if root == "phantom":
        from actionpp.data.phantom import ensure_phantom

        if cfg is not None:
            return Path(
                ensure_phantom(
                    kind=dataset, preset=cfg.data.phantom_preset if dataset == "acdc" else "acdc",
                    patients=cfg.data.phantom_patients, seed=cfg.data.phantom_seed,
                )
            )
        return Path(ensure_phantom(kind=dataset))
    if root == "shared":
        from actionpp.paths import shared_data, shared_root

        p = shared_data(dataset)
        if p is None:
            raise ValueError(
                f"data.root=shared but {shared_root() / 'data' / dataset} does not exist "
                "(set ACTIONPP_SHARED, or use data.root=phantom)"
            )
        return p
    p = Path(root).expanduser()
    if not p.exists():
        raise ValueError(f"data.root={root!r}: {p} does not exist")
    return p


@dataclass
class _Data:
    """Training tensors on the device (2D) or volume lists (3D) and the validation volumes (numpy)."""

    x_l: Any
    y_l: Any
    x_u: Any
    val: list[Any]
    root: Path

    @property
    def n_l(self) -> int:
        return len(self.x_l)

    @property
    def n_u(self) -> int:
        return len(self.x_u)


_DATA_CACHE: dict[tuple[Any, ...], _Data] = {}


def _load_data(cfg: Config, device: torch.device, with_val: bool) -> _Data:
    """Load (or reuse: the last data set stays cached in the process, e.g. for a notebook's runs) the data."""
    root = resolve_data_root(cfg.data.root, cfg)
    d = cfg.data
    key = (str(root), d.dataset, d.labelled, d.size, str(device), with_val, d.val_split, d.val_max_volumes)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()  # keep one data set only (it may live on the GPU)
        _DATA_CACHE[key] = _read_data(cfg, root, device, with_val)
    return _DATA_CACHE[key]


def _read_data(cfg: Config, root: Path, device: torch.device, with_val: bool) -> _Data:
    from actionpp.data import tensors

    if cfg.data.dataset == "acdc":
        t = tensors.load_acdc_training(root, cfg.data.labelled, cfg.data.size, device)
        x_l, y_l, x_u = t.x_l, t.y_l, t.x_u
    else:
        labelled = cfg.data.labelled
        if labelled is None:  # all labelled
            from actionpp.data.core import open_dataset

            labelled = len(open_dataset(root).volumes("train"))
        v = tensors.load_la_training(root, labelled, device)
        x_l, y_l, x_u = v.x_l, v.y_l, v.x_u
    if len(x_l) == 0:
        raise ValueError(f"{root}: no labelled training images (data.labelled={cfg.data.labelled})")
    val: list[Any] = []
    if with_val and cfg.data.val_split != "none":
        val = tensors.load_volumes(root, cfg.data.val_split)
        if cfg.data.val_max_volumes is not None:
            val = val[: cfg.data.val_max_volumes]
    return _Data(x_l, y_l, x_u, val, root)


# =========================================================================== trainer


_PHASES = ("pretrain", "finetune")


def windows_per_image(cfg: Config) -> int:
    """Local ISD windows per training image (2D: ((size - patch) // stride + 1)^2; 3D: per crop axis)."""
    p = cfg.pretrain
    spatial = (cfg.data.size, cfg.data.size) if cfg.model.arch == "unet2d" else tuple(cfg.data.crop)
    n = 1
    for extent in spatial:
        n *= (extent - p.patch) // p.stride + 1
    return n


def temperature_schedules(cfg: Config, n_unlabelled: int) -> dict[str, Any]:
    """The temperature schedule of every contrastive term, keyed ``anco``, ``saacl``, ``isd_s``, ``isd_t``.

    Without ATS (``method.ats`` off) every term keeps its fixed value: AnCo and SAACL
    ``temperature.fixed_tau`` (SAACL: ``saacl.fixed_tau`` when set), ISD ``pretrain.tau_s`` /
    ``tau_t``. With ATS (method.md section 4: ATS applies to every contrastive temperature):

    - fine-tuning (counted in fine-tuning iterations): AnCo follows ``temperature`` (kind,
      ``tau_min`` .. ``tau_max``, ``period``; None = one cycle over fine-tuning); SAACL the same
      cosine with its own low end ``saacl.tau_min`` (official 2D: 0.07), or the fixed
      ``saacl.fixed_tau`` (official 3D: 0.07);
    - pre-training (counted in pre-training iterations): ``tau_s`` and ``tau_t`` each follow the
      same kind of cosine from ``pretrain.tau_max`` (official: 1.0) down to their configured
      value, period ``pretrain.period`` (None = one cycle over pre-training), as the official
      ``train_*_pretrain++.py`` scripts do.

    ``n_unlabelled``: unlabelled training images, for the per-epoch kind's epoch length
    (``temperature.epoch_iters`` when set).
    """
    from actionpp.temperature import make_schedule

    t, m = cfg.temperature, cfg.method
    saacl_fixed = cfg.saacl.fixed_tau
    if not m.ats or t.kind == "constant":
        fixed = make_schedule("constant", tau=t.fixed_tau)
        return {
            "anco": fixed,
            "saacl": make_schedule("constant", tau=saacl_fixed) if saacl_fixed is not None else fixed,
            "isd_s": make_schedule("constant", tau=cfg.pretrain.tau_s),
            "isd_t": make_schedule("constant", tau=cfg.pretrain.tau_t),
        }
    epoch = t.epoch_iters or max(n_unlabelled // max(cfg.train.batch_unlabelled, 1), 1)

    def cosine(tau_min: float, tau_max: float, period: float | None, iters: int) -> Any:
        iters = max(iters, 1)
        if t.kind == "cosine":
            return make_schedule("cosine", tau_min=tau_min, tau_max=tau_max, period=period or iters)
        if t.kind == "cosine_epoch":
            return make_schedule("cosine_epoch", tau_min=tau_min, tau_max=tau_max,
                                 period=period or max(iters / epoch, 1e-9), iters_per_epoch=epoch)
        raise AssertionError(t.kind)  # pragma: no cover - step is handled below

    if t.kind == "step":
        anco = make_schedule("step", milestones=t.step_milestones, values=t.step_values)
        saacl = anco
    else:
        anco = cosine(t.tau_min, t.tau_max, t.period, cfg.finetune_iters)
        saacl = cosine(cfg.saacl.tau_min or t.tau_min, t.tau_max, t.period, cfg.finetune_iters)
    if saacl_fixed is not None:
        saacl = make_schedule("constant", tau=saacl_fixed)
    p = cfg.pretrain
    if t.kind == "step":  # a step schedule is defined in fine-tuning iterations: pre-training stays fixed
        isd_s, isd_t = make_schedule("constant", tau=p.tau_s), make_schedule("constant", tau=p.tau_t)
    else:
        isd_s = cosine(p.tau_s, p.tau_max, p.period, cfg.pretrain_iters)
        isd_t = cosine(p.tau_t, p.tau_max, p.period, cfg.pretrain_iters)
    return {"anco": anco, "saacl": saacl, "isd_s": isd_s, "isd_t": isd_t}


def _autocast(device: torch.device, mode: str) -> contextlib.AbstractContextManager[Any]:
    use = (mode == "bf16") or (mode == "auto" and device.type == "cuda")
    if not use:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


class _Trainer:
    """All mutable state of a run, and the two step functions."""

    def __init__(self, cfg: Config, run_dir: Path, info: DistInfo, device: torch.device, progress: bool) -> None:
        from actionpp.models import EMATeacher

        self.cfg = cfg
        self.run_dir = run_dir
        self.info = info
        self.device = device
        self.progress = progress and cfg.runtime.progress and info.is_main
        self.hash = config_hash(cfg)
        seed = cfg.runtime.seed
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        import random

        random.seed(seed)

        # ---- data (validation volumes only on rank 0)
        self.data = _load_data(cfg, device, with_val=info.is_main)
        self.spatial_dims = 2 if cfg.model.arch == "unet2d" else 3
        # ---- generators: batch sampling on the CPU (rank-offset), augmentation on the data's device
        self.gen_batch = torch.Generator(device="cpu")
        self.gen_batch.manual_seed(seed + RANK_SEED_OFFSET * info.rank)
        self.gen_aug = torch.Generator(device=device)
        self.gen_aug.manual_seed(seed + 1 + RANK_SEED_OFFSET * info.rank)
        self.gen_loss = torch.Generator(device=device)  # pixel / anchor / negative sampling
        self.gen_loss.manual_seed(seed + 2 + RANK_SEED_OFFSET * info.rank)
        self.gen_cpu = torch.Generator(device="cpu")  # for the loss functions that draw on the CPU (AnCo)
        self.gen_cpu.manual_seed(seed + 3 + RANK_SEED_OFFSET * info.rank)

        # ---- models
        torch.manual_seed(seed)  # identical initial weights on every rank
        self.student = SegModel(cfg).to(device)
        self.teacher: EMATeacher | None = EMATeacher(self.student).to(device) if cfg.method.teacher else None
        self.ddp: nn.Module = self.student
        if info.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.ddp = DDP(
                self.student,
                device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=True,
            )
        if cfg.runtime.compile:
            # compile the bound method, not the module: state_dict keys stay unchanged
            self.student.net.forward_features = torch.compile(self.student.net.forward_features)  # type: ignore[method-assign]

        # ---- method state: centres, allocator, queue, memory banks, temperature schedule
        self.allocator = None
        self.queue = None
        if cfg.method.saacl:
            from actionpp.allocation import CentreAllocator
            from actionpp.centers import make_centers
            from actionpp.losses import FeatureQueue

            centres = make_centers(cfg.data.num_classes, cfg.model.rep_dim, method=cfg.saacl.centre_method, seed=seed)
            self.allocator = CentreAllocator(
                centres.vectors.to(device), momentum=cfg.saacl.allocator_momentum, mode=cfg.saacl.assignment, seed=seed
            )
            self.queue = FeatureQueue(cfg.saacl.queue_size, cfg.model.rep_dim, device=device)
        self.bank_g = self.bank_l = None
        if cfg.method.pretrain:
            from actionpp.losses import MemoryBank

            # the banks hold memory_bank *images*: one global embedding each, and all its local windows
            self.bank_g = MemoryBank(cfg.pretrain.memory_bank, cfg.model.proj_dim, device=device)
            self.bank_l = MemoryBank(cfg.pretrain.memory_bank * windows_per_image(cfg), cfg.model.proj_dim, device=device)
        self.schedules = temperature_schedules(cfg, self.data.n_u)

        # ---- optimiser (re-created at each phase start) and counters
        self.iteration = 0  # completed iterations over both phases
        self.phase_of_optimizer: str | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.best_score = -math.inf
        self.best_iteration: int | None = None
        self.best_summary: dict[str, Any] | None = None
        self.phase_seconds = {p: 0.0 for p in _PHASES}
        self.phase_done_iters = {p: 0 for p in _PHASES}
        self.last_checkpoint: Path | None = None
        self.diagnostics: dict[str, float] = {}  # filled at log iterations (gradient shares), logged, cleared

    # ------------------------------------------------------------------ schedules

    def phase_bounds(self) -> list[tuple[str, int, int]]:
        """``(phase, first global iteration, number of iterations)`` for the phases that run."""
        out = []
        start = 0
        for phase, n in (("pretrain", self.cfg.pretrain_iters), ("finetune", self.cfg.finetune_iters)):
            if n > 0:
                out.append((phase, start, n))
                start += n
        return out

    def _new_optimizer(self, phase: str) -> torch.optim.Optimizer:
        t = self.cfg.train
        nesterov = t.nesterov_finetune and phase == "finetune"
        return torch.optim.SGD(
            self.student.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, nesterov=nesterov
        )

    # ------------------------------------------------------------------ batches

    def _draw(self, n: int, k: int) -> Tensor:
        """``k`` distinct indices in ``[0, n)`` (with repetition when k > n), from the batch generator."""
        if n == 0:
            raise ValueError("cannot draw a batch from an empty set (no unlabelled images?)")
        if k <= n:
            idx = torch.randperm(n, generator=self.gen_batch)[:k]
        else:
            idx = torch.randint(n, (k,), generator=self.gen_batch)
        return idx

    def _labelled_batch(self) -> tuple[Tensor, Tensor]:
        cfg = self.cfg
        idx = self._draw(self.data.n_l, cfg.train.batch_labelled)
        if self.spatial_dims == 2:
            i = idx.to(self.device)
            x, y = self.data.x_l[i], self.data.y_l[i]
        else:
            xs = [self.data.x_l[j] for j in idx.tolist()]
            ys = [self.data.y_l[j] for j in idx.tolist()]
            x, y = aug.random_crop(xs, ys, cfg.data.crop, self.gen_aug)
        return self._weak(x, y)

    def _unlabelled_batch(self) -> Tensor:
        cfg = self.cfg
        idx = self._draw(self.data.n_u, cfg.train.batch_unlabelled)
        if self.spatial_dims == 2:
            x = self.data.x_u[idx.to(self.device)]
        else:
            x, _ = aug.random_crop([self.data.x_u[j] for j in idx.tolist()], None, cfg.data.crop, self.gen_aug)
        return self._weak(x, None)[0]

    def _weak(self, x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor | None]:
        a = self.cfg.augment
        if not (a.labelled_flip or a.labelled_rotate):
            return x, y
        plane = (0, 1) if self.spatial_dims == 3 else None
        return aug.weak_augment(
            x, y, self.gen_aug,
            flip_prob=0.5 if a.labelled_flip else 0.0,
            rotate_prob=0.5 if a.labelled_rotate else 0.0,
            plane=plane,
        )

    def _photometric(self, x: Tensor) -> Tensor:
        a = self.cfg.augment
        if a.jitter and a.blur:
            return aug.strong_augment(x, self.gen_aug)
        if a.jitter:
            return aug.colour_jitter(x, self.gen_aug)
        if a.blur:
            return aug.gaussian_blur(x, self.gen_aug)
        return x

    # ------------------------------------------------------------------ steps

    def pretrain_step(self, it: int, phase_it: int, diagnose: bool = False) -> dict[str, Tensor]:
        """Supervised + ISD global + local distillation. Returns detached loss terms (incl. ``total``).

        With ``diagnose`` (log iterations) each weighted term's gradient on the backbone is
        measured into ``self.diagnostics`` before the update (see :meth:`_grad_diagnostics`).
        """
        from actionpp.losses import isd_loss, supervised_loss

        cfg = self.cfg
        p = cfg.pretrain
        tau_s = float(self.schedules["isd_s"](phase_it))
        tau_t = float(self.schedules["isd_t"](phase_it))
        assert self.teacher is not None and self.bank_g is not None and self.bank_l is not None
        x_l, y_l = self._labelled_batch()
        x_u = self._unlabelled_batch()
        x_weak = torch.cat([x_l, x_u])  # (B_l + B_u, C, ...)
        x_strong = self._photometric(x_weak)
        b_l = x_l.shape[0]
        with torch.no_grad(), _autocast(self.device, cfg.runtime.amp):
            _, t_feat = self.teacher.model.net.forward_features(x_weak)
            t_g = self.teacher.model.g_head(t_feat.bottleneck).float()  # (B, d)
            t_l = self.teacher.model.l_head(t_feat.decoder[-1]).float().flatten(0, 1)  # (B*P, d)
        bank_g, bank_l = self.bank_g.embeddings, self.bank_l.embeddings  # (n <= size, d), oldest first

        def fn(m: SegModel, logits: Tensor, feat: Any) -> dict[str, Tensor]:
            s_g = m.g_pred(m.g_head(feat.bottleneck)).float()
            s_l = m.l_pred(m.l_head(feat.decoder[-1]).flatten(0, 1)).float()
            out = {
                "sup": supervised_loss(logits[:b_l].float(), y_l),
                "isd_global": isd_loss(s_g, t_g, bank_g, tau_s=tau_s, tau_t=tau_t),
                "isd_local": isd_loss(s_l, t_l, bank_l, tau_s=tau_s, tau_t=tau_t),
            }
            return out

        with _autocast(self.device, cfg.runtime.amp):
            terms = self.ddp(x_strong, fn)
        weights = {"sup": p.sup, "isd_global": p.global_weight, "isd_local": p.local_weight}
        total = weights["sup"] * terms["sup"] + weights["isd_global"] * terms["isd_global"] \
            + weights["isd_local"] * terms["isd_local"]
        if diagnose:
            self._grad_diagnostics(terms, weights)
        self._backward_step(total)
        self.bank_g.push(t_g)
        self.bank_l.push(t_l)
        if self.teacher is not None:
            self.teacher.update(self.student, cfg.train.ema_momentum)
        out = {k: v.detach() for k, v in terms.items()}
        out["total"] = total.detach()
        out["tau_s"] = torch.tensor(tau_s)
        out["tau_t"] = torch.tensor(tau_t)
        return out

    def finetune_step(self, it: int, phase_it: int, diagnose: bool = False) -> dict[str, Tensor]:
        """One fine-tuning iteration (every switched-on term). Returns detached loss terms (incl. ``total``).

        With ``diagnose`` (log iterations): each weighted term's gradient on the backbone, and
        the share of the SAACL anchor gradient that its centre term drives under both
        ``saacl.centre_term`` forms, go to ``self.diagnostics``.
        """
        from actionpp import losses as L

        cfg = self.cfg
        m = cfg.method
        K = cfg.data.num_classes
        x_l, y_l = self._labelled_batch()
        b_l = x_l.shape[0]
        uses_unlab = m.unsup or m.consistency or m.anco
        tau = float(self.schedules["anco"](phase_it))
        tau_saacl = float(self.schedules["saacl"](phase_it))
        extras: dict[str, Tensor] = {}

        x_u = x_u_student = None
        t_prob_u = t_conf_u = t_label_u = None
        t_feat_l = None
        if uses_unlab or m.saacl:
            x_u = self._unlabelled_batch() if uses_unlab else None
            assert self.teacher is not None
            with torch.no_grad(), _autocast(self.device, cfg.runtime.amp):
                if m.consistency and x_u is not None:
                    noise = torch.clamp(
                        torch.randn(x_u.shape, generator=self.gen_aug, device=x_u.device) * cfg.loss.consistency_noise,
                        -2 * cfg.loss.consistency_noise, 2 * cfg.loss.consistency_noise,
                    )
                    t_in = [x_u + noise]
                else:
                    t_in = [x_u] if x_u is not None else []
                if m.saacl:
                    t_in = [x_l] + t_in
                t_logits, t_feat = self.teacher.model.net.forward_features(torch.cat(t_in))
                t_logits = t_logits.float()
                off = b_l if m.saacl else 0
                if m.saacl:
                    t_feat_l = [f[:b_l] for f in self.teacher.model.rep_maps(t_feat)]
                if x_u is not None:
                    t_prob_u = torch.softmax(t_logits[off:], dim=1)  # (B_u, K, ...)
                    t_conf_u, t_label_u = t_prob_u.max(dim=1)  # (B_u, ...)
            if x_u is not None:
                if m.consistency:
                    x_u_student = x_u  # SSL4MIS mean teacher: the student sees the clean unlabelled batch
                else:
                    # strong view: CutMix / ClassMix of the weak view (teacher targets mixed alike), jitter, blur
                    x_u_student, t_prob_u = self._mix(x_u, t_prob_u, t_label_u)
                    t_conf_u, t_label_u = t_prob_u.max(dim=1)
                    x_u_student = self._photometric(x_u_student)
        x_in = torch.cat([x_l, x_u_student]) if x_u_student is not None else x_l
        gen = self.gen_loss
        allocator = self.allocator
        queue = self.queue

        def fn(model: SegModel, logits: Tensor, feat: Any) -> dict[str, Tensor]:
            logits = logits.float()
            out: dict[str, Tensor] = {"sup": L.supervised_loss(logits[:b_l], y_l)}
            if x_u_student is not None:
                s_logits_u = logits[b_l:]
                if m.unsup:
                    out["unsup"] = L.pseudo_label_loss(s_logits_u, t_prob_u, threshold=cfg.loss.unsup_threshold)
                if m.consistency:
                    out["consistency"] = F.mse_loss(torch.softmax(s_logits_u, 1), t_prob_u)
            maps = model.rep_maps(feat)
            size = tuple(logits.shape[2:])
            if m.anco:
                probs = torch.softmax(logits.detach(), dim=1)
                labels = y_l
                valid = torch.ones_like(y_l, dtype=torch.bool)
                if x_u_student is not None:
                    labels = torch.cat([y_l, t_label_u])
                    valid = torch.cat([valid, t_conf_u >= cfg.anco.weak_threshold])
                idx, lab = _sample_pixels(labels, valid, K, cfg.anco.pixels_per_class, gen)
                emb = _embed_at(model.rep, maps, size, idx)  # (N, D)
                p_own = _gather_pixels(probs, idx).gather(1, lab[:, None])[:, 0]  # (N,)
                out["anco"] = L.anatomical_contrast_loss(
                    emb.float(), lab, p_own, tau=tau, num_queries=cfg.anco.queries_per_class,
                    num_negatives=cfg.anco.negatives, strong_threshold=cfg.anco.strong_threshold,
                    generator=self.gen_cpu,
                )
            if m.saacl:
                assert allocator is not None and queue is not None and t_feat_l is not None
                # anchors: up to anchors_per_class ground-truth pixels per class present (method.md 3)
                idx, lab = _sample_pixels(y_l, torch.ones_like(y_l, dtype=torch.bool), K, cfg.saacl.anchors_per_class, gen)
                s_emb = F.normalize(_embed_at(model.rep, [f[:b_l] for f in maps], size, idx).float(), dim=1)
                with torch.no_grad():
                    t_emb = F.normalize(_embed_at(self.teacher.model.rep, t_feat_l, size, idx).float(), dim=1)
                allocator.update(s_emb.detach(), lab)
                q_emb, q_lab = queue.embeddings, queue.labels
                centres = allocator.class_centres()
                out["saacl"] = L.saacl_loss(
                    s_emb, lab, t_emb, q_emb, q_lab, centres, tau=tau_saacl, lambda_a=cfg.saacl.lambda_a,
                    centre_term=cfg.saacl.centre_term,
                )
                if diagnose:
                    for form in L.CENTRE_TERMS:
                        self.diagnostics[f"centre_share/{form}"] = L.centre_gradient_share(
                            s_emb.detach(), lab, t_emb, q_emb, q_lab, centres, tau=tau_saacl,
                            lambda_a=cfg.saacl.lambda_a, centre_term=form,
                        )
                    same = (q_lab[None, :] == lab[:, None]).sum(1).float() if q_lab.numel() else lab.new_zeros(lab.shape)
                    self.diagnostics["saacl/positives"] = float(1.0 + same.float().mean())
                extras["queue_push"] = (t_emb, lab)  # type: ignore[assignment]
            return out

        with _autocast(self.device, cfg.runtime.amp):
            terms = self.ddp(x_in, fn)
        lw = cfg.loss
        weights = {
            "sup": lw.sup, "unsup": lw.unsup,
            "consistency": lw.consistency * sigmoid_rampup(phase_it, lw.consistency_rampup),
            "anco": lw.anco, "saacl": lw.saacl,
        }
        total = weights["sup"] * terms["sup"]
        for name in ("unsup", "consistency", "anco", "saacl"):
            if name in terms:
                total = total + weights[name] * terms[name]
        if diagnose:
            self._grad_diagnostics(terms, weights)
        self._backward_step(total)
        if "queue_push" in extras and self.queue is not None:
            t_emb, lab = extras["queue_push"]  # type: ignore[misc]
            self.queue.push(t_emb, lab)
        if self.teacher is not None:
            self.teacher.update(self.student, cfg.train.ema_momentum)
        out = {k: v.detach() for k, v in terms.items()}
        out["total"] = total.detach()
        if m.anco:
            out["tau"] = torch.tensor(tau)
        if m.saacl:
            out["tau_saacl"] = torch.tensor(tau_saacl)
        return out

    def _grad_diagnostics(self, terms: Mapping[str, Tensor], weights: Mapping[str, float]) -> None:
        """Each weighted term's gradient on the backbone (``net``), before the update.

        Into ``self.diagnostics``: ``grad/<term>`` = ||w_k dL_k/dtheta|| and ``share/<term>`` =
        (w_k g_k . g) / ||g||^2 with g = sum_k w_k g_k the update direction (the shares sum to 1;
        a negative share pulls against the update). One extra backward per term, at log
        iterations only; no random numbers are drawn, so the run's trajectory is unchanged.
        Skipped under DistributedDataParallel (its reducer hooks expect exactly one backward).
        """
        if self.info.enabled:
            return
        params = [p for p in self.student.net.parameters() if p.requires_grad]
        flats: dict[str, Tensor] = {}
        for name, term in terms.items():
            w = float(weights.get(name, 0.0))
            if w == 0.0 or not term.requires_grad:
                continue
            grads = torch.autograd.grad(w * term, params, retain_graph=True, allow_unused=True)
            flats[name] = torch.cat([
                (g if g is not None else torch.zeros_like(p)).reshape(-1).float() for g, p in zip(grads, params)
            ])
        if not flats:
            return
        g_total = torch.stack(list(flats.values())).sum(0)
        denom = float(g_total.pow(2).sum())
        for name, g in flats.items():
            self.diagnostics[f"grad/{name}"] = float(g.norm())
            self.diagnostics[f"share/{name}"] = float(g @ g_total) / denom if denom > 0 else 0.0

    def _mix(self, x: Tensor, probs: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """CutMix / ClassMix ``x (B, C, ...)``; the teacher probabilities ``(B, K, ...)`` are mixed alike."""
        mode = self.cfg.augment.mix
        if mode == "none":
            return x, probs
        if mode == "cutmix":
            mixed, mask, perm = aug.cutmix(x, self.gen_aug)
        else:
            mixed, mask, perm = aug.classmix(x, labels, self.gen_aug, num_classes=self.cfg.data.num_classes)
        return mixed, aug.mix_targets(probs, mask, perm)

    def _backward_step(self, total: Tensor) -> None:
        assert self.optimizer is not None
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        gens = {"batch": self.gen_batch, "aug": self.gen_aug, "loss": self.gen_loss, "cpu": self.gen_cpu}
        rng = capture_rng(gens)
        rngs = _gather_objects(rng, self.info)
        return {
            "format": FORMAT_VERSION,
            "iteration": self.iteration,
            "phase": self.phase_of_optimizer,
            "config": json.dumps(self.cfg.to_dict(), sort_keys=True),
            "config_hash": self.hash,
            "student": self.student.state_dict(),
            "teacher": self.teacher.state_dict() if self.teacher is not None else None,
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "allocator": self.allocator.state_dict() if self.allocator is not None else None,
            "queue": self.queue.state_dict() if self.queue is not None else None,
            "bank_g": self.bank_g.state_dict() if self.bank_g is not None else None,
            "bank_l": self.bank_l.state_dict() if self.bank_l is not None else None,
            "rng": rngs,
            "world_size": self.info.world_size,
            "best": {
                "score": self.best_score if math.isfinite(self.best_score) else None,
                "iteration": self.best_iteration,
                "summary": json.dumps(self.best_summary) if self.best_summary is not None else None,
            },
            "timing": {"seconds": dict(self.phase_seconds), "iters": dict(self.phase_done_iters)},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.student.load_state_dict(state["student"])
        if self.teacher is not None:
            self.teacher.load_state_dict(state["teacher"])
        self.iteration = int(state["iteration"])
        phase = state.get("phase")
        self.phase_of_optimizer = None
        self.optimizer = None
        if phase is not None and state.get("optimizer") is not None and self._phase_at(self.iteration) == phase:
            self.optimizer = self._new_optimizer(phase)
            self.optimizer.load_state_dict(state["optimizer"])
            self.phase_of_optimizer = phase
        if self.allocator is not None:
            self.allocator.load_state_dict(state["allocator"])
        if self.queue is not None:
            self.queue.load_state_dict(state["queue"])
        if self.bank_g is not None:
            self.bank_g.load_state_dict(state["bank_g"])
            self.bank_l.load_state_dict(state["bank_l"])  # type: ignore[union-attr]
        rngs = state["rng"]
        if len(rngs) != self.info.world_size:
            raise CheckpointError(
                f"checkpoint was written by {len(rngs)} process(es); this run has {self.info.world_size}"
            )
        restore_rng(
            rngs[self.info.rank],
            {"batch": self.gen_batch, "aug": self.gen_aug, "loss": self.gen_loss, "cpu": self.gen_cpu},
        )
        best = state.get("best") or {}
        self.best_score = best.get("score") if best.get("score") is not None else -math.inf
        self.best_iteration = best.get("iteration")
        self.best_summary = json.loads(best["summary"]) if best.get("summary") else None
        timing = state.get("timing") or {}
        self.phase_seconds.update(timing.get("seconds", {}))
        self.phase_done_iters.update(timing.get("iters", {}))

    def _phase_at(self, iteration: int) -> str | None:
        """Phase of the iteration with global index ``iteration`` (None after the last)."""
        for phase, start, n in self.phase_bounds():
            if start <= iteration < start + n:
                return phase
        return None


def _gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    if not info.enabled:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


# =========================================================================== pixel sampling


def _sample_pixels(
    labels: Tensor, valid: Tensor, num_classes: int, per_class: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Up to ``per_class`` uniformly drawn valid pixels of each class.

    ``labels (B, *spatial)`` long, ``valid (B, *spatial)`` bool -> ``(idx (N, 1 + n_spatial) long, lab (N,))``
    where idx rows are ``(b, y, x[, z])``. Classes with fewer valid pixels give all of them;
    absent classes give none. One host read (the number of valid picks) sizes the result.
    """
    flat_lab = labels.reshape(-1)  # (n,)
    flat_valid = valid.reshape(-1)  # (n,)
    n = flat_lab.numel()
    classes = torch.arange(num_classes, device=labels.device)
    member = flat_valid[None, :] & (flat_lab[None, :] == classes[:, None])  # (K, n)
    scores = torch.rand(n, generator=generator, device=labels.device)  # one uniform score per pixel
    scores = torch.where(member, scores[None, :], torch.full_like(scores, 2.0)[None, :])  # (K, n), 2 = not a member
    vals, order = torch.topk(scores, min(per_class, n), dim=1, largest=False)  # (K, k): a uniform subset per class
    keep = vals < 2.0  # (K, k)
    flat_idx = order[keep]  # (N,), class-major; the one host read of this function
    lab = classes[:, None].expand_as(order)[keep]  # (N,)
    coords = torch.stack(torch.unravel_index(flat_idx, labels.shape), dim=1)  # (N, 1 + n_spatial)
    return coords, lab


def _embed_at(head: nn.Module, maps: list[Tensor], size: tuple[int, ...], idx: Tensor) -> Tensor:
    """Head embeddings at pixel coordinates ``idx (N, 1 + n_spatial)`` -> ``(N, dim)``."""
    cols = [idx[:, i] for i in range(idx.shape[1])]
    if len(cols) == 3:
        return head.forward_at(maps, size, cols[0], cols[1], cols[2])  # type: ignore[operator]
    return head.forward_at(maps, size, cols[0], cols[1], cols[2], cols[3])  # type: ignore[operator]


def _gather_pixels(dense: Tensor, idx: Tensor) -> Tensor:
    """``dense (B, C, *spatial)`` at ``idx (N, 1 + n_spatial)`` -> ``(N, C)``."""
    moved = dense.movedim(1, -1)  # (B, *spatial, C)
    return moved[tuple(idx[:, i] for i in range(idx.shape[1]))]


# =========================================================================== validation


def _val_summary(result: Any, dataset: str) -> dict[str, Any]:
    """Compact JSON-safe summary of an ``EvalResult``: mean metrics and per-class Dice."""
    from actionpp.evaluate import CLASS_NAMES

    names = CLASS_NAMES.get(dataset, {})
    s = result.summary
    out: dict[str, Any] = {}
    for key in ("dice", "jaccard", "hd95_vox", "asd_vox", "hd95_mm", "asd_mm"):
        v = s["mean"].get(key)
        out[key] = float(v) if v is not None and math.isfinite(v) else None
    out["dice_per_class"] = {
        str(names.get(int(c), c)) if str(c).isdigit() else str(c): float(st["dice"])
        for c, st in s["per_class"].items()
    }
    out["empty"] = dict(s.get("empty", {}))
    out["n_volumes"] = int(s.get("n_volumes", len(result.per_volume)))
    return out


def _validate(tr: _Trainer) -> dict[str, Any] | None:
    """Evaluate the student on the validation volumes (rank 0); restores train mode."""
    if not tr.data.val:
        return None
    from actionpp.evaluate import evaluate

    cfg = tr.cfg
    net = tr.student.net
    was = net.training
    net.eval()
    try:
        with torch.no_grad(), _autocast(tr.device, cfg.runtime.amp):
            res = evaluate(
                _FloatLogits(net), tr.data.val, dataset=cfg.data.dataset, size=cfg.data.size, patch=cfg.data.crop,
                num_classes=cfg.data.num_classes, device=tr.device, progress=False, split=cfg.data.val_split,
                batch_size=cfg.eval.batch,
            )
    finally:
        net.train(was)
    return _val_summary(res, cfg.data.dataset)


class _FloatLogits(nn.Module):
    """Wraps a network so its logits come back in float32 (bf16 autocast would hand bf16 to numpy)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).float()


# =========================================================================== the loop


def default_run_dir(cfg: Config) -> Path:
    """``runs/<method>-<config hash>`` under :func:`actionpp.paths.runs_dir`."""
    from actionpp.paths import runs_dir

    return runs_dir() / f"{cfg.method.name}-{config_hash(cfg)}"


def _truncate_log(path: Path, iteration: int) -> None:
    """Drop log lines written after ``iteration`` by a killed run (they will be written again)."""
    if not path.is_file():
        return
    kept = [e for e in read_jsonl(path) if int(e.get("iteration", 0)) <= iteration]
    atomic_write_text(path, "".join(json.dumps(e) + "\n" for e in kept))


@contextlib.contextmanager
def _deterministic(on: bool) -> Iterator[None]:
    prev = torch.are_deterministic_algorithms_enabled()
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev)


def train(
    config: Config | str | Path,
    run_dir: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
) -> RunResult:
    """Train one run of ``config`` (a :class:`Config`, a profile name or a YAML path).

    - ``run_dir``: default ``runs/<method>-<config hash>``. It ends up holding
      ``config.yaml``, ``run.json``, ``log.jsonl``, ``last.pt``, ``best.pt`` (when
      validating) and ``metrics.json``.
    - A finished run dir of the same config (``metrics.json`` present) returns the
      stored :class:`RunResult` at once (``cached=True``) without training.
    - ``resume``: continue from ``last.pt`` (refused with :class:`CheckpointError` naming
      both hashes and the differing keys if written by another config); with
      ``resume=False`` an existing checkpoint is an error (:class:`RunDirError`).
    - Raises :class:`TrainingDiverged` on a non-finite loss.

    Under ``torchrun`` every process calls this; rank 0 writes the run directory.
    """
    cfg = config if isinstance(config, Config) else load_config(config)
    info, device = init_distributed(cfg.runtime.device)
    try:
        with _deterministic(cfg.runtime.deterministic):
            return _train(cfg, Path(run_dir) if run_dir is not None else default_run_dir(cfg), resume, progress,
                          info, device)
    finally:
        cleanup(info)


def _train(cfg: Config, run_dir: Path, resume: bool, progress: bool, info: DistInfo, device: torch.device) -> RunResult:
    h = config_hash(cfg)
    metrics_path = run_dir / "metrics.json"
    if metrics_path.is_file():
        stored = json.loads(metrics_path.read_text())
        if stored.get("config_hash") == h:
            res = RunResult.from_summary(stored, run_dir)
            res.is_main = info.is_main
            return res
        raise RunDirError(
            f"{run_dir} holds a finished run of config {stored.get('config_hash')}, not {h}; use another run_dir"
        )
    last = run_dir / "last.pt"
    state = None
    if last.is_file():
        if not resume:
            raise RunDirError(f"{run_dir} already holds a checkpoint ({last}); resume it or use another run directory")
        state = load_checkpoint(last, map_location=device)
        check_compatible(state, cfg, last)
    tr = _Trainer(cfg, run_dir, info, device, progress)
    resumed_from = None
    if state is not None:
        tr.load_state_dict(state)
        tr.last_checkpoint = last
        resumed_from = tr.iteration
        del state
    logger = RunLogger(run_dir, enabled=info.is_main, tensorboard=cfg.runtime.tensorboard)
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if resumed_from is not None:
            logger.close()
            _truncate_log(run_dir / "log.jsonl", resumed_from)
            logger = RunLogger(run_dir, enabled=True, tensorboard=cfg.runtime.tensorboard)
        (run_dir / "config.yaml").write_text(dump_yaml(cfg))
        run_json = run_dir / "run.json"
        previous = json.loads(run_json.read_text()) if run_json.is_file() else {}
        starts = list(previous.get("starts", [])) + [
            {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "from_iteration": resumed_from or 0}
        ]
        write_json_atomic(run_json, {
            "config_hash": tr.hash,
            "method": cfg.method.name,
            "environment": environment_info(),
            "device": str(device),
            "world_size": info.world_size,
            "argv": list(sys.argv),
            "starts": starts,
        })
    try:
        _loop(tr, logger)
        return _finish(tr, logger)
    finally:
        logger.close()


def _sync_buffers(tr: _Trainer) -> None:
    """Rank 0's BatchNorm statistics to every rank (DDP syncs parameters, each rank's BN sees its own batch)."""
    if not tr.info.enabled:
        return
    import torch.distributed as dist

    modules = [tr.student] + ([tr.teacher] if tr.teacher is not None else [])
    for mod in modules:
        for buf in mod.buffers():
            dist.broadcast(buf, src=0)


def _save(tr: _Trainer, name: str = "last.pt") -> Path | None:
    _sync_buffers(tr)  # so a checkpoint holds the state every rank continues from
    state = tr.state_dict()  # every rank takes part (RNG states are gathered)
    if not tr.info.is_main:
        return None
    path = save_checkpoint(tr.run_dir / name, state)
    if name == "last.pt":
        tr.last_checkpoint = path
    return path


def _loop(tr: _Trainer, logger: RunLogger) -> None:
    cfg = tr.cfg
    rt = cfg.runtime
    total = cfg.total_iters
    pbar = None
    if tr.progress:
        from tqdm.auto import tqdm

        pbar = tqdm(total=total, initial=tr.iteration, desc=cfg.method.name, dynamic_ncols=True)
    try:
        for phase, start, n in tr.phase_bounds():
            end = start + n
            if tr.iteration >= end:
                continue
            if tr.phase_of_optimizer != phase or tr.optimizer is None:
                tr.optimizer = tr._new_optimizer(phase)
                tr.phase_of_optimizer = phase
            tr.student.train()
            names: list[str] | None = None
            acc: Tensor | None = None  # running sums of the loss terms since the last log
            acc_n = 0
            first_bad = torch.full((), -1, dtype=torch.long, device=tr.device)
            bad_terms: Tensor | None = None
            t_mark = time.perf_counter()
            steps_since = 0

            def check(first_bad: Tensor, bad_terms: Tensor | None) -> None:
                k = int(first_bad.item())
                if k >= 0:
                    assert names is not None and bad_terms is not None
                    vals = bad_terms.tolist()
                    raise TrainingDiverged(k, phase, dict(zip(names, vals)), tr.last_checkpoint)

            while tr.iteration < end:
                it = tr.iteration
                pit = it - start
                lr = poly_lr(cfg.train.lr, pit, n, cfg.train.poly_power)
                for g in tr.optimizer.param_groups:
                    g["lr"] = lr
                diagnose = rt.grad_norms and ((it + 1) % rt.log_every == 0 or it + 1 == end)
                if phase == "pretrain":
                    terms = tr.pretrain_step(it, pit, diagnose)
                else:
                    terms = tr.finetune_step(it, pit, diagnose)
                tr.iteration += 1
                steps_since += 1
                if names is None:
                    names = list(terms)
                vec = torch.stack([terms[k].float().to(tr.device) for k in names])  # (T,)
                acc = vec if acc is None else acc + vec
                acc_n += 1
                newly_bad = (~torch.isfinite(terms["total"])) & (first_bad < 0)
                first_bad = torch.where(newly_bad, torch.full_like(first_bad, tr.iteration), first_bad)
                bad_terms = vec if bad_terms is None else torch.where(newly_bad, vec, bad_terms)
                done = tr.iteration
                at_end = done == end
                if pbar is not None:
                    pbar.update(1)
                if done % rt.log_every == 0 or at_end:
                    assert acc is not None
                    means = (acc / acc_n).tolist()  # the one host read per log interval
                    now = time.perf_counter()
                    tr.phase_seconds[phase] += now - t_mark
                    tr.phase_done_iters[phase] += steps_since
                    step_s = (now - t_mark) / max(steps_since, 1)
                    t_mark, steps_since = now, 0
                    check(first_bad, bad_terms)
                    entry: dict[str, Any] = {"kind": "train", "phase": phase, "iteration": done, "lr": lr}
                    for k, v in zip(names, means):
                        entry[k if k.startswith("tau") else f"loss/{k}"] = v
                    entry.update(tr.diagnostics)
                    tr.diagnostics = {}
                    if tr.allocator is not None and phase == "finetune":
                        entry["assignment"] = [int(a) for a in tr.allocator.assignment.tolist()]
                    entry["step_s"] = step_s
                    logger.log(entry)
                    if pbar is not None:
                        pbar.set_postfix(loss=f"{entry.get('loss/total', float('nan')):.4f}", phase=phase)
                    acc, acc_n = None, 0
                do_ckpt = (rt.checkpoint_every and done % rt.checkpoint_every == 0) or at_end
                do_val = cfg.eval.every and done % cfg.eval.every == 0 and done != total
                if do_ckpt or do_val:
                    now = time.perf_counter()
                    tr.phase_seconds[phase] += now - t_mark
                    tr.phase_done_iters[phase] += steps_since
                    steps_since = 0
                    check(first_bad, bad_terms)  # never checkpoint or select a diverged model
                    if do_val:
                        _validate_and_select(tr, logger, done)
                    if do_ckpt:
                        _save(tr)
                    barrier(tr.info)
                    t_mark = time.perf_counter()
    finally:
        if pbar is not None:
            pbar.close()


def _validate_and_select(tr: _Trainer, logger: RunLogger, done: int) -> dict[str, Any] | None:
    summary = None
    if tr.info.is_main:
        t0 = time.perf_counter()
        summary = _validate(tr)
        if summary is not None:
            logger.log({"kind": "val", "iteration": done, **summary, "seconds": time.perf_counter() - t0})
            score = summary["dice"] if summary["dice"] is not None else -math.inf
            if score > tr.best_score:
                tr.best_score, tr.best_iteration, tr.best_summary = score, done, summary
                _save_best(tr)
    return summary


def _save_best(tr: _Trainer) -> None:
    state = {
        "format": FORMAT_VERSION,
        "iteration": tr.iteration,
        "config": json.dumps(tr.cfg.to_dict(), sort_keys=True),
        "config_hash": tr.hash,
        "student": tr.student.state_dict(),
        "teacher": tr.teacher.state_dict() if tr.teacher is not None else None,
        "kind": "best",
    }
    save_checkpoint(tr.run_dir / "best.pt", state)


def _finish(tr: _Trainer, logger: RunLogger) -> RunResult:
    cfg = tr.cfg
    final = None
    if tr.info.is_main:
        t0 = time.perf_counter()
        final = _validate(tr)
        if final is not None:
            logger.log({"kind": "val", "iteration": tr.iteration, "final": True, **final,
                        "seconds": time.perf_counter() - t0})
            score = final["dice"] if final["dice"] is not None else -math.inf
            if score > tr.best_score:
                tr.best_score, tr.best_iteration, tr.best_summary = score, tr.iteration, final
                _save_best(tr)
            _save(tr)  # last.pt now also records the best score
    else:
        _save(tr)
    barrier(tr.info)
    its = {
        p: tr.phase_done_iters[p] / tr.phase_seconds[p]
        for p in _PHASES
        if tr.phase_done_iters[p] > 0 and tr.phase_seconds[p] > 0
    }
    best_pt = tr.run_dir / "best.pt"
    selected = "best" if cfg.eval.select == "best" and best_pt.is_file() else "last"
    result = RunResult(
        run_dir=tr.run_dir,
        config_hash=tr.hash,
        method=cfg.method.name,
        iterations=tr.iteration,
        final=final,
        best=tr.best_summary,
        best_iteration=tr.best_iteration,
        selected=selected,
        checkpoint=best_pt if selected == "best" else tr.run_dir / "last.pt",
        seconds=sum(tr.phase_seconds.values()),
        its_per_s=its,
        is_main=tr.info.is_main,
    )
    if tr.info.is_main:
        write_json_atomic(tr.run_dir / "metrics.json", result.summary())
    return result


# =========================================================================== loading for notebooks / evaluation


def _checkpoint_path(run_dir_or_checkpoint: str | Path, which: str) -> Path:
    p = Path(run_dir_or_checkpoint)
    if p.is_file():
        return p
    if not p.is_dir():
        raise CheckpointError(f"{p} is neither a checkpoint file nor a run directory")
    if which == "auto":
        cfg_file = p / "config.yaml"
        select = "last"
        if cfg_file.is_file():
            import yaml

            select = (yaml.safe_load(cfg_file.read_text()) or {}).get("eval", {}).get("select", "last")
        which = select
    if which not in ("best", "last"):
        raise ValueError(f"which must be 'best', 'last' or 'auto', got {which!r}")
    path = p / f"{which}.pt"
    if which == "best" and not path.is_file():
        path = p / "last.pt"  # runs without validation have no best.pt
    if not path.is_file():
        raise CheckpointError(f"{p} holds no {which}.pt (is the run finished?)")
    return path


def load_model(
    run_dir_or_checkpoint: str | Path,
    which: str = "best",
    device: str | torch.device = "cpu",
    weights: str = "student",
) -> tuple[nn.Module, Config]:
    """``(network in eval mode, config)`` from a run directory or a checkpoint file.

    ``which``: ``best`` (falls back to ``last.pt`` when the run did not validate),
    ``last`` or ``auto`` (the run's ``eval.select``). ``weights``: ``student`` (what is
    evaluated) or ``teacher``. The network is the bare backbone (``UNet2D`` / ``VNet3D``):
    the contrastive heads are dropped at inference.
    """
    from actionpp.config import config_from_dict

    path = _checkpoint_path(run_dir_or_checkpoint, which)
    state = load_checkpoint(path, map_location="cpu")
    cfg = config_from_dict(json.loads(state["config"]), expand_method=False)
    if weights == "student":
        prefix, full = "net.", state["student"]
    elif weights == "teacher":
        if state.get("teacher") is None:
            raise CheckpointError(f"{path}: method {cfg.method.name!r} has no teacher")
        prefix, full = "model.net.", state["teacher"]
    else:
        raise ValueError(f"weights must be 'student' or 'teacher', got {weights!r}")
    net = SegModel(cfg).net  # only the backbone: the heads are not needed (nor loaded) for inference
    try:
        net.load_state_dict({k[len(prefix):]: v for k, v in full.items() if k.startswith(prefix)})
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: the {weights} network does not match this version's model: {exc}") from exc
    dev = resolve_device(str(device)) if isinstance(device, str) else device
    return net.to(dev).eval(), cfg


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: str,
    split: str = "val",
    which: str = "auto",
    device: str = "auto",
    save_predictions: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate a checkpoint on ``split`` of ``data`` (folder, pack, ``phantom`` or ``shared``).

    Returns ``{"checkpoint", "data", "split", "volumes", "summary", "result"}`` where
    ``result`` is the full ``EvalResult`` as JSON-safe data.
    """
    from actionpp.data.tensors import load_volumes
    from actionpp.evaluate import evaluate

    path = _checkpoint_path(checkpoint, which)
    dev = resolve_device(device)
    net, cfg = load_model(path, device=dev)
    root = resolve_data_root(data, cfg)
    vols = load_volumes(root, split)
    if not vols:
        raise ValueError(f"{root}: split {split!r} has no volumes")
    with torch.no_grad():
        res = evaluate(
            net, vols, dataset=cfg.data.dataset, size=cfg.data.size, patch=cfg.data.crop,
            num_classes=cfg.data.num_classes, device=dev, progress=progress, split=split,
            save_predictions_dir=save_predictions,
        )
    return {
        "checkpoint": str(path),
        "data": str(root),
        "split": split,
        "volumes": len(vols),
        "summary": _val_summary(res, cfg.data.dataset),
        "result": json.loads(res.to_json()),
    }
