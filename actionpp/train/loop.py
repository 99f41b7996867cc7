"""The one training loop: a method is configuration.

``train(config)`` runs, in one loop, every method of the project
(``supervised``, ``mean_teacher``, ``action``, ``actionpp`` and the ablations): the
method name only switches loss terms and phases on and off
(:data:`actionpp.config.METHOD_PRESETS`).

Phases (each skippable, each with its own SGD and poly decay, as the two official
scripts have; the teacher, queue and banks carry over):

1. **pre-training** (ACTION / ACTION++): :func:`actionpp.train.steps.pretrain_step`;
2. **fine-tuning**: :func:`actionpp.train.steps.finetune_step`.

What happens where: :mod:`actionpp.train.batches` (batches and augmentation),
:mod:`actionpp.train.steps` (one iteration), :mod:`actionpp.train.objective` (the terms,
their weights and temperatures), :mod:`actionpp.train.state` (what is checkpointed),
this module (phases, logging, validation and model selection, the run directory).

Choices and deviations (each can be checked in the code):

- **Data and speed** (method.md section 9): the training set lives on the device
  (``actionpp.data.tensors``); batches are index tensors drawn from a seeded CPU
  generator; augmentation is batched on the device (``actionpp.augment``); the
  representation head is evaluated only at sampled pixels
  (``RepresentationHead.forward_at``); bf16 autocast on CUDA, optional ``torch.compile``;
  loss terms are accumulated as tensors and read (``.item()``) only every
  ``runtime.log_every`` iterations.
- **AnCo prototypes** come from the sampled pixels (``anco.pixels_per_class`` per class
  and batch, labelled ground truth + unlabelled pseudo-labels with teacher confidence
  >= ``anco.weak_threshold``), not from every valid pixel as in ReCo.
- **SAACL anchors**: up to ``saacl.anchors_per_class`` ground-truth pixels per class
  present in the labelled batch; the allocator is updated every iteration with the
  student's anchor embeddings (detached) before the loss reads the centres.
- **SAACL teacher view** (deviation from the official 2D script): the positive "own
  view" of an anchor is the teacher's *representation head* at that pixel (the EMA of
  the student's head, as the official 3D script does); the official 2D script compares
  with the teacher's raw concatenated decoder features (496 channels, which is why its
  head is 496-dimensional). Ours lets ``model.rep_dim`` be the paper's 128.
- **Temperatures** (:func:`actionpp.train.objective.temperature_schedules`): with ATS
  every contrastive temperature is scheduled, the fine-tuning ones (AnCo; SAACL with its
  own low end ``saacl.tau_min``, or fixed at ``saacl.fixed_tau``) over fine-tuning
  iterations and ISD's ``tau_s`` / ``tau_t`` over pre-training iterations.
- **ISD memory banks** hold ``pretrain.memory_bank`` images: the global bank one
  embedding per image, the local bank every window of each of those images.
- **Mean teacher** (SSL4MIS): MSE between student and teacher softmax on the unlabelled
  batch, teacher input noise N(0, 0.1^2) clipped to +-0.2, weight ``loss.consistency *
  exp(-5 (1 - t)^2)`` with ``t = it / loss.consistency_rampup`` in fine-tuning iterations
  (SSL4MIS ramps over its whole 30 k-iteration run; the profiles ramp over the first 20 %).
- **The log** (``log.jsonl``, one ``train`` line every ``runtime.log_every`` iterations): ``loss/<term>``
  are means over the iterations since the previous line; ``lr`` and the temperatures (``tau``: AnCo,
  ``tau_saacl``, ``tau_s``, ``tau_t``) are the values at the logged iteration, side by side. Logs
  written before this rule hold the temperatures' window mean under the same keys: a reader reads
  both alike (a schedule moves little over one window; at ``log_every: 1`` they are equal).
- **Loss diagnostics**: at log iterations each weighted term's gradient on the backbone
  (``grad/<term>``, ``share/<term>``) and the centre term's share of the SAACL anchor
  gradient under both ``saacl.centre_term`` forms go to the log (``runtime.grad_norms``).
- **Distributed**: parameters stay identical through DDP's gradient averaging; each rank
  keeps its own SAACL queue, allocator means and memory banks (rank 0's are
  checkpointed), and rank 0's BatchNorm statistics are broadcast before every checkpoint
  so that every rank continues from what was saved.

Safety: atomic checkpoints that resume bit-exactly (``actionpp.checkpoint``), non-finite
losses stop the run with :class:`TrainingDiverged`, validation on ``data.val_split`` (never
the test split) keeps ``best.pt`` and ``last.pt``. The run directory is the engine's own
(the ownership rule of ``actionpp.atomic``: its ``.actionpp-train.json`` marker, or the files
an earlier version wrote) and one process at a time trains in it (``flock`` on ``.lock``).

Why one module of this length: about a sixth of it is the docstring above, the list of
choices and deviations a replication must be able to read in one place; the code is the
phase loop, the run directory (its owner and lock) and the end of a run, which share one state.

Taught in notebooks/04_train.ipynb.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from actionpp.atomic import (
    OwnershipError,
    atomic_write_json,
    atomic_write_text,
    check_folder,
    claim_folder,
    marker_path,
    remove_stale_temporaries,
    utc_now,
)
from actionpp.checkpoint import check_compatible, load_checkpoint, save_checkpoint
from actionpp.config import Config, config_hash, dump_yaml, load_config, safe_yaml
from actionpp.distributed import DistInfo, barrier, broadcast_object, cleanup, init_distributed
from actionpp.runlog import RunFileError, RunLogger, environment_info, read_json_file, read_jsonl
from actionpp.train.batches import BatchSource
from actionpp.train.data import load_training_data
from actionpp.train.objective import Objective
from actionpp.train.state import PHASES, TrainerState, phase_bounds
from actionpp.train.steps import finetune_step, pretrain_step
from actionpp.train.validation import validate_and_select

__all__ = [
    "TrainingDiverged",
    "RunDirError",
    "RunResult",
    "Hooks",
    "train",
    "prepare",
    "deterministic",
    "default_run_dir",
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
    ``its_per_s``: iterations per second per phase of *this* process's training time;
    ``cached``: the run directory already held this finished run (nothing was trained).
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
    def from_summary(cls, d: Mapping[str, Any], run_dir: Path) -> RunResult:
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


@dataclass(frozen=True)
class Hooks:
    """Optional callbacks into a run, called on every rank with the :class:`TrainerState`.

    ``before_step``: before each iteration (``state.iteration`` = iterations done so far);
    ``after_run``: once training and the final validation are done, before :func:`train`
    returns. For instrumentation (recording every rank's weights, injecting a fault in a
    test); a hook that changes the state changes the run.
    """

    before_step: Callable[[TrainerState], None] | None = None
    after_run: Callable[[TrainerState], None] | None = None


def poly_lr(base_lr: float, it: int, max_it: int, power: float = 0.9) -> float:
    """``base_lr * (1 - it / max_it) ** power`` (it = 0 .. max_it - 1); 0 for it >= max_it."""
    if max_it <= 0 or it >= max_it:
        return 0.0
    return float(base_lr * (1.0 - it / max_it) ** power)


def default_run_dir(cfg: Config) -> Path:
    """``runs/<method>-<config hash>`` under :func:`actionpp.paths.runs_dir`."""
    from actionpp.paths import runs_dir

    return runs_dir() / f"{cfg.method.name}-{config_hash(cfg)}"


# =========================================================================== entry point


def train(
    config: Config | str | Path,
    run_dir: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    hooks: Hooks | None = None,
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
    - ``hooks``: optional :class:`Hooks` (not called for a cached, finished run).

    Under ``torchrun`` every process calls this; rank 0 writes the run directory.
    """
    cfg = config if isinstance(config, Config) else load_config(config)
    info, device = init_distributed(cfg.runtime.device)
    try:
        with deterministic(cfg.runtime.deterministic, warn_only=device.type == "cuda"):
            return _run(cfg, Path(run_dir) if run_dir is not None else default_run_dir(cfg), resume, progress,
                        info, device, hooks or Hooks())
    finally:
        cleanup(info)


def prepare(
    cfg: Config, device: torch.device, info: DistInfo | None = None, with_val: bool = False,
) -> tuple[TrainerState, BatchSource, Objective, list[Any]]:
    """The pieces of a run without its run directory: ``(state, batches, objective, validation volumes)``.

    For benchmarks and for stepping through a run by hand::

        st, batches, objective, _ = prepare(cfg, torch.device("cpu"))
        st.optimizer = st.new_optimizer("finetune")
        terms = actionpp.train.steps.finetune_step(st, batches, objective, phase_it=0)
    """
    info = info or DistInfo()
    data = load_training_data(cfg, device, with_val=with_val)
    st = TrainerState(cfg, info, device)
    return st, BatchSource(cfg, data, device, st.gen_batch, st.gen_aug), Objective(cfg, data.n_u), data.val


def _on_rank0(action: Callable[[], None], info: DistInfo, errors: tuple[type[Exception], ...],
              elsewhere: type[Exception]) -> None:
    """Run ``action`` on rank 0 alone and share its outcome: rank 0 re-raises its own error (one of ``errors``),
    every other rank raises ``elsewhere`` with the same message, and otherwise all ranks go on together. The
    run folder is checked and claimed this way: other ranks would race rank 0's claim of a new folder (its
    marker's temporary file, then ``.lock``)."""
    error = None
    if info.is_main:
        try:
            action()
        except errors as exc:
            error = exc
    shared = broadcast_object(None if error is None else str(error), info)
    if error is not None:
        raise error
    if shared is not None:
        raise elsewhere(shared)


@dataclass
class _Run:
    """A run in progress: its state, data, objective, run directory and logger."""

    st: TrainerState
    batches: BatchSource
    objective: Objective
    val: list[Any]
    run_dir: Path
    logger: RunLogger
    progress: bool
    hooks: Hooks


def _run(cfg: Config, run_dir: Path, resume: bool, progress: bool, info: DistInfo, device: torch.device,
         hooks: Hooks) -> RunResult:
    h = config_hash(cfg)
    # everything is checked before the first byte is written: the folder is the engine's (or new), it holds
    # no other config's run, and a checkpoint in it is resumed only when asked and only of this config
    _on_rank0(lambda: check_folder(run_dir, OWNER, recognise=_engine_folder()), info, (OwnershipError,),
              OwnershipError)
    cached = _finished(run_dir, h, info)
    if cached is not None:
        return cached
    last = run_dir / "last.pt"
    state, seen = _load_last(last, cfg, resume, device)
    with _RunFolder(run_dir, info) as folder:
        # under the lock: another process may have finished or advanced the run since the checks above
        if folder.finished_meanwhile():
            cached = _finished(run_dir, h, info)
            assert cached is not None
            return cached
        if _stat(last) != seen:
            state, seen = _load_last(last, cfg, resume, device)
        st, batches, objective, val = prepare(cfg, device, info, with_val=info.is_main)  # validation only on rank 0
        resumed_from = None
        if state is not None:
            st.load_state_dict(state)
            st.last_checkpoint = last
            resumed_from = st.iteration
            del state
        folder.started = True
        logger = RunLogger(run_dir, enabled=info.is_main, tensorboard=cfg.runtime.tensorboard)
        if info.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            if resumed_from is not None or (run_dir / "log.jsonl").is_file():
                # a resumed run drops the lines a killed attempt wrote after its checkpoint; an attempt
                # killed before its first checkpoint leaves lines that a fresh start would duplicate
                logger.close()
                _truncate_log(run_dir / "log.jsonl", resumed_from or 0)
                logger = RunLogger(run_dir, enabled=True, tensorboard=cfg.runtime.tensorboard)
            atomic_write_text(run_dir / "config.yaml", dump_yaml(cfg))
            _record_start(run_dir, st, cfg, device, info, resumed_from)
        run = _Run(st, batches, objective, val, run_dir, logger, progress and cfg.runtime.progress and info.is_main,
                   hooks)
        try:
            _loop(run)
            result = _finish(run)
            if hooks.after_run is not None:
                hooks.after_run(st)
            return result
        finally:
            logger.close()


# =========================================================================== the run folder: owner and lock

OWNER = "train"  # the run folder's marker: .actionpp-train.json (actionpp.atomic)
LOCK = ".lock"  # flock-ed while a process trains in the folder (as the replicate runner's run folders)
_ENGINE_FILES = ("config.yaml", "run.json", "log.jsonl", "last.pt", "best.pt", "metrics.json")


def _engine_folder() -> Callable[[Path], bool]:
    """Whether a folder without the marker is a run folder an earlier version of the engine wrote: it holds
    ``run.json`` or ``metrics.json`` (a lone ``config.yaml`` or ``log.jsonl`` may be the user's own copy of a
    profile or a log), and each engine file it holds is what the engine writes (``run.json`` and
    ``metrics.json`` its records, ``config.yaml`` a config, ``log.jsonl`` its log, a torn last line included).
    A user's own ``config.yaml``, ``run.json`` or ``log.jsonl`` there makes it not a run folder."""

    def record(keys: tuple[str, ...]) -> Callable[[Path], bool]:
        def ok(f: Path) -> bool:
            try:
                data = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return False
            return isinstance(data, dict) and all(k in data for k in keys)

        return ok

    def config(f: Path) -> bool:
        try:
            data = safe_yaml(f.read_text(encoding="utf-8"), str(f))
        except (OSError, ValueError):
            return False
        return isinstance(data, dict) and bool(data) and set(data) <= {fl.name for fl in dataclasses.fields(Config)}

    def log(f: Path) -> bool:
        try:
            lines = f.read_bytes().decode("utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            return False
        for k, line in enumerate(lines):
            try:
                e = json.loads(line)
            except ValueError:
                if k == len(lines) - 1 and line.startswith('{"kind": '):  # the engine's line, torn by a kill
                    continue
                return False
            if not (isinstance(e, dict) and "kind" in e and isinstance(e.get("iteration"), int)):
                return False
        return True

    checks: dict[str, Callable[[Path], bool]] = {
        "run.json": record(("config_hash", "starts")), "metrics.json": record(("config_hash", "iterations")),
        "config.yaml": config, "log.jsonl": log,
    }

    def recognise(d: Path) -> bool:
        present = [(d / name, ok) for name, ok in checks.items() if (d / name).is_file()]
        records = (d / "run.json").is_file() or (d / "metrics.json").is_file()
        return records and all(ok(f) for f, ok in present)

    return recognise


def _finished(run_dir: Path, h: str, info: DistInfo) -> RunResult | None:
    """The stored result of a finished run of config ``h`` in ``run_dir``; None when unfinished;
    :class:`RunDirError` for another config's finished run."""
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        return None
    stored = read_json_file(metrics_path, "the run's summary")
    if not isinstance(stored, dict) or not isinstance(stored.get("config_hash"), str):
        raise RunFileError(f"{metrics_path}: the run's summary is damaged: not the JSON object train writes "
                           "(no config_hash)")
    if stored.get("config_hash") != h:
        raise RunDirError(
            f"{run_dir} holds a finished run of config {stored.get('config_hash')}, not {h}; use another run_dir"
        )
    try:
        res = RunResult.from_summary(stored, run_dir)
    except (KeyError, TypeError, ValueError) as exc:
        raise RunFileError(f"{metrics_path}: the run's summary is damaged ({type(exc).__name__}: {exc})") from None
    res.is_main = info.is_main
    return res


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _load_last(last: Path, cfg: Config, resume: bool, device: torch.device
               ) -> tuple[dict[str, Any] | None, tuple[int, int, int] | None]:
    """``last.pt`` (checked against ``cfg``) and its stat, or None when there is none; :class:`RunDirError`
    when there is one and ``resume`` is false."""
    seen = _stat(last)
    if not last.is_file():
        return None, seen
    if not resume:
        raise RunDirError(f"{last.parent} already holds a checkpoint ({last}); resume it or use another run directory")
    state = load_checkpoint(last, map_location=device)
    check_compatible(state, cfg, last)
    return state, seen


class _RunFolder:
    """The run folder held for one training process: claimed (the marker; a folder the engine wrote
    before markers existed gets one) and locked with ``flock`` on ``.lock`` by rank 0, the decision
    shared with the other ranks. A second process on the same folder gets :class:`RunDirError` before
    it writes anything; the kernel releases the lock however its holder ends. Leftovers of a killed
    attempt (the temporary files of an interrupted atomic write) are removed once the lock is held.
    A folder this attempt created and left before training started (bad data, say) is removed again."""

    def __init__(self, run_dir: Path, info: DistInfo) -> None:
        self.run_dir, self.info = run_dir, info
        self.created = not run_dir.exists()
        self.started = False
        self._fh: Any = None

    def __enter__(self) -> _RunFolder:
        _on_rank0(self._acquire, self.info, (RunDirError, OwnershipError, OSError), RunDirError)
        return self

    def _acquire(self) -> None:
        claim_folder(self.run_dir, OWNER, recognise=_engine_folder())
        self._fh = open(self.run_dir / LOCK, "a")  # noqa: SIM115 - held until __exit__
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not on Linux / macOS: no lock
            return
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.close()
            self._fh = None
            raise RunDirError(
                f"{self.run_dir}: another process is training in this run folder (it holds "
                f"{self.run_dir / LOCK}); nothing was started: wait for it, or use another --run-dir"
            ) from None
        remove_stale_temporaries(self.run_dir, _ENGINE_FILES)

    def finished_meanwhile(self) -> bool:
        done = (self.run_dir / "metrics.json").is_file() if self.info.is_main else False
        return bool(broadcast_object(done, self.info))

    def __exit__(self, *exc: Any) -> None:
        if self._fh is None:
            return
        if exc[0] is not None and self.created and not self.started:
            # nothing of the run was written: leave no folder behind (only our marker and lock are in it)
            for name in (LOCK, marker_path(self.run_dir, OWNER).name):
                (self.run_dir / name).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.run_dir.rmdir()
        self._fh.close()  # releases the lock
        self._fh = None


def _record_start(run_dir: Path, st: TrainerState, cfg: Config, device: torch.device, info: DistInfo,
                  resumed_from: int | None) -> None:
    run_json = run_dir / "run.json"
    previous = read_json_file(run_json, "the run record") if run_json.is_file() else {}
    if not isinstance(previous, dict) or not isinstance(previous.get("starts", []), list):
        raise RunFileError(f"{run_json}: the run record is damaged: not the JSON object train writes")
    env = environment_info()
    # each start records its commit: a run resumed after a code change says which code trained which part
    starts = list(previous.get("starts", [])) + [
        {"time": utc_now(), "from_iteration": resumed_from or 0,
         "git_commit": env.get("git_commit"), "cpu": env.get("cpu")}
    ]
    atomic_write_json(run_json, {
        "config_hash": st.hash,
        "method": cfg.method.name,
        "environment": env,
        "device": str(device),
        "world_size": info.world_size,
        "argv": list(sys.argv),
        "starts": starts,
    }, indent=2, sort_keys=False)


# =========================================================================== the loop


def _loop(run: _Run) -> None:
    st, cfg = run.st, run.st.cfg
    pbar = None
    if run.progress:
        from tqdm.auto import tqdm

        pbar = tqdm(total=cfg.total_iters, initial=st.iteration, desc=cfg.method.name, dynamic_ncols=True)
    try:
        for phase, start, n in phase_bounds(cfg):
            if st.iteration < start + n:
                _run_phase(run, phase, start, n, pbar)
    finally:
        if pbar is not None:
            pbar.close()


class _PhaseClock:
    """The training time of one phase, without validation and checkpoint writing (``its_per_s``)."""

    def __init__(self, st: TrainerState, phase: str) -> None:
        self.st, self.phase = st, phase
        self.mark = time.perf_counter()
        self.steps = 0  # steps since the mark

    def book(self) -> float:
        """Add the time and steps since the mark to the phase's totals; returns seconds per step."""
        now = time.perf_counter()
        self.st.phase_seconds[self.phase] += now - self.mark
        self.st.phase_done_iters[self.phase] += self.steps
        per_step = (now - self.mark) / max(self.steps, 1)
        self.mark, self.steps = now, 0
        return per_step

    def restart(self) -> None:
        """A new mark (after validation or a checkpoint, which are not training time)."""
        self.mark = time.perf_counter()


def _run_phase(run: _Run, phase: str, start: int, n: int, pbar: Any) -> None:
    st, cfg = run.st, run.st.cfg
    rt = cfg.runtime
    end = start + n
    total = cfg.total_iters
    if st.phase_of_optimizer != phase:  # a fresh SGD per phase, unless the checkpoint's is resumed
        st.optimizer = st.new_optimizer(phase)
        st.phase_of_optimizer = phase
    st.student.train()
    step = pretrain_step if phase == "pretrain" else finetune_step
    names: list[str] | None = None  # the loss terms (total included), accumulated over a log window
    taus: list[str] = []  # the temperatures: logged at the iteration, like the lr
    acc: Tensor | None = None  # running sums of the loss terms since the last log
    acc_n = 0
    first_bad = torch.full((), -1, dtype=torch.long, device=st.device)
    bad_terms: Tensor | None = None
    clock = _PhaseClock(st, phase)

    def check() -> None:  # the host read of the divergence flag, at log / checkpoint time only
        k = int(first_bad.item())
        if k >= 0 and names is not None and bad_terms is not None:
            raise TrainingDiverged(k, phase, dict(zip(names, bad_terms.tolist())), st.last_checkpoint)

    while st.iteration < end:
        if run.hooks.before_step is not None:
            run.hooks.before_step(st)
        it = st.iteration
        pit = it - start
        lr = poly_lr(cfg.train.lr, pit, n, cfg.train.poly_power)
        for g in st.optimizer.param_groups:
            g["lr"] = lr
        done = it + 1
        at_end = done == end
        log_now = done % rt.log_every == 0 or at_end
        diagnostics: dict[str, Any] | None = {} if rt.grad_norms and log_now else None
        terms = step(st, run.batches, run.objective, pit, diagnostics)
        st.iteration = done
        clock.steps += 1
        if names is None:
            names = [k for k in terms if not k.startswith("tau")]
            taus = [k for k in terms if k.startswith("tau")]
        vec = torch.stack([terms[k].float().to(st.device) for k in names])  # (T,)
        acc = vec if acc is None else acc + vec
        acc_n += 1
        newly_bad = (~torch.isfinite(terms["total"])) & (first_bad < 0)
        first_bad = torch.where(newly_bad, torch.full_like(first_bad, done), first_bad)
        bad_terms = vec if bad_terms is None else torch.where(newly_bad, vec, bad_terms)
        if pbar is not None:
            pbar.update(1)
        if log_now:
            means = (acc / acc_n).tolist()  # the one host read per log interval
            step_s = clock.book()
            check()
            entry: dict[str, Any] = {"kind": "train", "phase": phase, "iteration": done, "lr": lr}
            entry.update({f"loss/{k}": v for k, v in zip(names, means)})  # means over the log window
            entry.update({k: float(terms[k]) for k in taus})  # the temperature at this iteration
            entry.update(diagnostics or {})
            if st.saacl is not None and phase == "finetune":
                entry["assignment"] = [int(a) for a in st.saacl.allocator.assignment.tolist()]
            entry["step_s"] = step_s
            run.logger.log(entry)
            if pbar is not None:
                pbar.set_postfix(loss=f"{entry.get('loss/total', float('nan')):.4f}", phase=phase)
            acc, acc_n = None, 0
        do_ckpt = (rt.checkpoint_every and done % rt.checkpoint_every == 0) or at_end
        do_val = cfg.eval.every and done % cfg.eval.every == 0 and done != total
        if do_ckpt or do_val:
            clock.book()
            check()  # never checkpoint or select a diverged model
            if do_val and st.info.is_main:
                validate_and_select(st, run.val, run.run_dir, run.logger, done)
            if do_ckpt:
                _save(st, run.run_dir)
            barrier(st.info)
            clock.restart()


# =========================================================================== checkpoints and the end


def _sync_buffers(st: TrainerState) -> None:
    """Rank 0's BatchNorm statistics to every rank (DDP syncs parameters, each rank's BN sees its own batch)."""
    if not st.info.enabled:
        return
    import torch.distributed as dist

    modules: list[nn.Module] = [st.student] + ([st.teacher] if st.teacher is not None else [])
    for mod in modules:
        for buf in mod.buffers():
            dist.broadcast(buf, src=0)


def _save(st: TrainerState, run_dir: Path) -> None:
    _sync_buffers(st)  # so a checkpoint holds the state every rank continues from
    state = st.state_dict()  # every rank takes part (RNG states are gathered)
    if st.info.is_main:
        st.last_checkpoint = save_checkpoint(run_dir / "last.pt", state)


def _finish(run: _Run) -> RunResult:
    st, cfg = run.st, run.st.cfg
    final = None
    if st.info.is_main:
        final = validate_and_select(st, run.val, run.run_dir, run.logger, st.iteration, final=True)
    _save(st, run.run_dir)  # last.pt now also records the best score
    barrier(st.info)
    its = {
        p: st.phase_done_iters[p] / st.phase_seconds[p]
        for p in PHASES
        if st.phase_done_iters[p] > 0 and st.phase_seconds[p] > 0
    }
    best_pt = run.run_dir / "best.pt"
    selected = "best" if cfg.eval.select == "best" and best_pt.is_file() else "last"
    result = RunResult(
        run_dir=run.run_dir,
        config_hash=st.hash,
        method=cfg.method.name,
        iterations=st.iteration,
        final=final,
        best=st.best_summary,
        best_iteration=st.best_iteration,
        selected=selected,
        checkpoint=best_pt if selected == "best" else run.run_dir / "last.pt",
        seconds=sum(st.phase_seconds.values()),
        its_per_s=its,
        is_main=st.info.is_main,
    )
    if st.info.is_main:
        atomic_write_json(run.run_dir / "metrics.json", result.summary(), indent=2, sort_keys=False)
    return result


# =========================================================================== small helpers


def _truncate_log(path: Path, iteration: int) -> None:
    """Drop log lines written after ``iteration`` by a killed run (they will be written again), and the
    final validation's line: it is logged after the last checkpoint, so a run without ``metrics.json``
    (killed during the final ``best.pt`` or ``metrics.json`` write) logs it again when it finishes."""
    if not path.is_file():
        return

    def keep(e: dict[str, Any]) -> bool:
        it = e.get("iteration", 0)
        return isinstance(it, int) and it <= iteration and not (e.get("kind") == "val" and e.get("final"))

    kept = [e for e in read_jsonl(path) if keep(e)]
    atomic_write_text(path, "".join(json.dumps(e) + "\n" for e in kept))


@contextlib.contextmanager
def deterministic(on: bool, warn_only: bool = False) -> Iterator[None]:
    """``torch.use_deterministic_algorithms(True)`` for the run when ``on``.

    ``warn_only`` (set on CUDA): some ops of a step have no deterministic CUDA kernel and would raise
    there (the torch docs' list; for the 2D U-Net the backward of its bilinear up-sampling and the NLL
    inside cross-entropy, tests/test_cpu_paths.py). They warn instead and stay nondeterministic; every
    other op is made deterministic. On the CPU nothing raises, so runs there stay bit-reproducible.
    """
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=warn_only)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)
