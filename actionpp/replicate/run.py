"""Executing a grid: each run's notebooks into its run directory, resumable, failures reported.

A run directory ``OUT/<run_id>/`` holds the executed notebooks, the first notebook's
``metrics.json``, a ``done`` marker written atomically once every notebook succeeded
(with the run's parameters, so a finished run with other parameters is never
overwritten) and ``failed.json`` after a failed attempt. A run is finished only when
its marker matches *and* its ``metrics.json`` passes :func:`actionpp.report.check_run_metrics`;
anything else is executed again (the training engine resumes from its own checkpoint
inside the run directory, or returns its finished result at once).

One process at a time works in a run directory: :func:`execute_run` holds an advisory lock
(``flock`` on ``OUT/<run_id>/.lock``) while it executes, and a second runner pointed at the same
``--out`` reports the run as ``busy`` and leaves it alone instead of training into it too. The
kernel releases the lock when its holder dies, however it dies. The pool processes of ``--jobs N``
end with the runner (Linux: ``PR_SET_PDEATHSIG``), so a runner killed with SIGKILL or SIGTERM does
not leave its workers training the runs they had queued.

Taught in notebooks/06_replication_report.ipynb.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import multiprocessing as mp
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actionpp.atomic import (
    atomic_write_bytes,
    atomic_write_text,
    check_folder,
    claim_folder,
    remove_stale_temporaries,
    utc_now,
)
from actionpp.replicate.batchnorm import BATCHNORM
from actionpp.replicate.grid import Run, substitute
from actionpp.replicate.score import SCORES, ScoresError, read_scores, score_run
from actionpp.report import RunMetricsError, read_run_metrics

__all__ = [
    "DONE",
    "FAILED",
    "METRICS",
    "OWNER",
    "check_out",
    "claim_out",
    "check_run_parameters",
    "RunOutcome",
    "Executor",
    "run_status",
    "run_state",
    "execute_run",
    "run_lock",
    "run_grid",
    "visible_gpus",
    "summary",
]

DONE = "done"
FAILED = "failed.json"
METRICS = "metrics.json"
LOCK = ".lock"
OWNER = "replicate"  # the grid folder's marker: OUT/.actionpp-replicate.json (actionpp.atomic)
_RUN_FILES = (DONE, FAILED, METRICS, LOCK, SCORES)  # what marks a sub-folder as one of the runner's run folders


# --------------------------------------------------------------------------- the grid folder (OUT)


def _grid_folder(out: Path) -> bool:
    """Whether ``out`` (without the marker) is a grid folder an earlier version of the runner wrote: nothing
    in it but run folders (each holding a ``done`` / ``failed.json`` / ``.lock`` / ``metrics.json``), the
    tables written beside them, and ``slurm/`` (the cluster submission's records); one run folder at least."""
    seen = False
    for entry in out.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            if entry.name == "slurm" or any((entry / f).is_file() for f in _RUN_FILES):
                seen = True
                continue
            return False
        if entry.name in ("results.csv", "results.md") and _own_table(entry):
            continue
        if entry.name in ("paired.csv", "paired.md", "paired.png"):  # actionpp.replicate.paired's, beside them
            continue
        return False
    return seen


def _own_table(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as fh:
            first = fh.readline()
    except (OSError, UnicodeDecodeError):
        return False
    return first.startswith("dataset,data,") if path.suffix == ".csv" else first.startswith("# ") and "results" in first


def check_out(out: Path) -> None:
    """Refuse (:class:`~actionpp.atomic.OwnershipError` naming it) an ``--out`` folder the runner did not
    create: the ownership rule of :mod:`actionpp.atomic` (a grid folder of an earlier version is recognised)."""
    check_folder(out, OWNER, recognise=_grid_folder)


def claim_out(out: Path, grid_name: str) -> Path:
    """:func:`check_out`, then create ``out`` with the runner's marker (recording the grid that created it)."""
    return claim_folder(out, OWNER, recognise=_grid_folder, info={"grid": grid_name})


def check_run_parameters(runs: Sequence[Run]) -> None:
    """Every notebook of every run gets parameters its notebook declares, of the declared types: checked
    before any run starts (and in a dry run), as the strict execution would check them run by run.
    :class:`~actionpp.replicate.grid.GridError` naming the run and the parameter."""
    from actionpp.notebook import ParameterError, check_parameters, parameters_of
    from actionpp.replicate.grid import GridError

    declared: dict[Path, Any] = {}
    for run in runs:
        mapping = {"run_dir": "/run_dir", "out": "/out"}
        for i, (step, params) in enumerate(zip(run.notebooks, run.parameters)):
            if step.path not in declared:
                try:
                    declared[step.path] = parameters_of(step.path)
                except ParameterError as exc:
                    raise GridError(str(exc)) from None
                except ValueError as exc:  # papermill: no kernel name in the notebook, ...
                    raise GridError(f"{step.path}: its parameters cannot be read ({exc})") from None
            p = substitute(dict(params), mapping)
            p["OUT_DIR"] = "/out_dir"
            if i > 0:
                p = {k: v for k, v in p.items() if k in declared[step.path]}
            try:
                check_parameters(step.path, p, declared[step.path])
            except ParameterError as exc:
                raise GridError(f"run {run.run_id}: {exc}") from None



def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x, default=str))


def _marker_params(run: Run) -> list[dict[str, Any]]:
    return [_jsonable(p) for p in run.parameters]


def run_status(run: Run, out: Path) -> str:
    """``"done"`` (finished, same parameters, valid ``metrics.json``), ``"stale"`` (finished with
    other parameters), ``"broken"`` (marked done but its ``metrics.json`` is missing, unreadable or
    incomplete: run again), ``"failed"`` (last attempt failed), ``"partial"`` (started, not
    finished) or ``"pending"``."""
    return run_state(run, out)[0]


def run_state(run: Run, out: Path) -> tuple[str, str | None]:
    """``(status, problem)``: :func:`run_status` and, for ``broken``, what is wrong with which file."""
    rd = run.run_dir(out)
    marker = rd / DONE
    if marker.is_file():
        try:
            data = json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError):
            return "partial", None
        if data.get("parameters") != _marker_params(run):
            return "stale", None
        try:
            read_run_metrics(rd / METRICS)
        except RunMetricsError as exc:
            return "broken", str(exc)
        if run.score is not None:
            try:
                read_scores(rd / SCORES, run.score)
            except ScoresError as exc:
                return "broken", str(exc)
        return "done", None
    if (rd / FAILED).is_file():
        return "failed", None
    if rd.exists():
        return "partial", None
    return "pending", None


@dataclass
class RunOutcome:
    """What happened to one run: ``status`` is ``done``, ``skipped``, ``failed``, ``stale`` or ``busy``
    (another process holds the run directory's lock)."""

    run_id: str
    status: str
    seconds: float = 0.0
    error: str | None = None
    notebook: str | None = None  # the executed notebook that failed (holds the traceback)


Executor = Callable[[Path, Path, dict[str, Any]], Any]


def _declared_parameters(notebook: Path) -> set[str]:
    from actionpp.notebook import parameters_of

    return set(parameters_of(notebook))


def _default_executor(notebook: Path, output: Path, parameters: dict[str, Any]) -> Any:
    """Strict execution through :func:`actionpp.notebook.execute` (the profile is already merged)."""
    from actionpp.notebook import execute

    return execute(notebook, output, parameters, None)


def _describe_error(exc: BaseException) -> str:
    ename = getattr(exc, "ename", None)
    evalue = getattr(exc, "evalue", None)
    if ename:
        return f"{ename}: {evalue}"
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0] if msg else ''}".strip()


def execute_run(run: Run, out: Path, executor: Executor | None = None, force: bool = False) -> RunOutcome:
    """Execute every notebook of ``run`` into ``OUT/<run_id>/``; never raises for a notebook error.

    Skips a run whose ``done`` marker matches its parameters (unless ``force``); refuses (status
    ``stale``) a run directory holding a finished run with *other* parameters, so finished results
    are never overwritten. On success writes ``done`` atomically and removes ``failed.json``; on
    failure writes ``failed.json`` with the error and the executed notebook's path. A stale
    ``metrics.json`` from an interrupted attempt is removed before executing again, so a
    ``metrics.json`` without ``done`` is never mistaken for a result; everything else (the
    engine's checkpoints) stays, so training resumes.
    """
    out = Path(out).resolve()
    executor = executor or _default_executor
    status = run_status(run, out)
    if status == "done" and not force:
        return RunOutcome(run.run_id, "skipped")
    rd = run.run_dir(out)
    if status == "stale" and not force:
        return RunOutcome(
            run.run_id,
            "stale",
            error=f"{rd} holds a finished run with different parameters; move it away or use another --out",
        )
    rd.mkdir(parents=True, exist_ok=True)
    with run_lock(rd) as held:
        if not held:
            return RunOutcome(run.run_id, "busy",
                              error=f"another process is running it (it holds {rd / LOCK}); left alone")
        if run_status(run, out) == "done" and not force:  # finished by that other process meanwhile
            return RunOutcome(run.run_id, "skipped")
        return _execute_locked(run, out, rd, executor)


@contextlib.contextmanager
def run_lock(rd: Path) -> Any:
    """Yields True while this process holds ``rd/.lock`` exclusively, False if another one does.
    Without ``fcntl`` (Windows) there is no lock and it yields True."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Linux / macOS
        yield True
        return
    with open(rd / LOCK, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _execute_locked(run: Run, out: Path, rd: Path, executor: Executor) -> RunOutcome:
    from actionpp.replicate.restore import RESTORED, set_aside

    if (rd / RESTORED).is_file():  # a copy from the published folder, without checkpoints: it trains from nothing
        aside = set_aside(rd, out)
        print(f"{run.run_id}: restored from a publish (no checkpoint); moved to {aside}, training it again",
              file=sys.stderr, flush=True)
    remove_stale_temporaries(rd, (DONE, FAILED, METRICS, SCORES, BATCHNORM))  # left by killed atomic writes
    # the earlier attempt's result files go, so that a metrics.json without done is never mistaken for a result;
    # kept in memory and put back if this attempt fails, so a failed re-run (--force, a broken run re-scored)
    # never loses a result the grid had
    previous = {name: (rd / name).read_bytes() for name in (DONE, METRICS, SCORES) if (rd / name).is_file()}
    for name in (DONE, METRICS, SCORES):
        (rd / name).unlink(missing_ok=True)
    outcome = _attempt(run, out, rd, executor)
    if outcome.status == "failed" and previous:
        for name, data in previous.items():
            atomic_write_bytes(rd / name, data)
    return outcome


def _attempt(run: Run, out: Path, rd: Path, executor: Executor) -> RunOutcome:
    t0 = time.perf_counter()
    mapping = {"run_dir": str(rd), "out": str(out)}
    for i, (step, params) in enumerate(zip(run.notebooks, run.parameters)):
        nb_out = run.notebook_out_dir(out, i)
        nb_out.mkdir(parents=True, exist_ok=True)
        if i > 0:
            (nb_out / METRICS).unlink(missing_ok=True)
        p = substitute(dict(params), mapping)
        p["OUT_DIR"] = str(nb_out)
        output = rd / f"{step.stem}.ipynb"
        try:
            if i > 0:
                declared = _declared_parameters(step.path)
                p = {k: v for k, v in p.items() if k in declared}
            executor(step.path, output, p)
            if not (nb_out / METRICS).is_file():
                raise RuntimeError(f"{step.path.name} finished without writing {nb_out / METRICS}")
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed run is reported, the grid goes on
            err = _describe_error(exc)
            info: dict[str, Any] = {
                "run_id": run.run_id,
                "notebook": str(output),
                "error": err,
                "traceback": "".join(traceback.format_exception(exc))[-8000:],
                "time": utc_now(),
            }
            atomic_write_text(rd / FAILED, json.dumps(info, indent=2))
            return RunOutcome(run.run_id, "failed", time.perf_counter() - t0, err, str(output))
    if run.score is not None:
        try:
            score_run(rd, run.score)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - a run that cannot be scored is a failed run
            err = f"scoring {run.score.to_dict()}: {_describe_error(exc)}"
            info = {"run_id": run.run_id, "notebook": None, "error": err,
                    "traceback": "".join(traceback.format_exception(exc))[-8000:],
                    "time": utc_now()}
            atomic_write_text(rd / FAILED, json.dumps(info, indent=2))
            return RunOutcome(run.run_id, "failed", time.perf_counter() - t0, err, None)
    seconds = time.perf_counter() - t0
    marker = {
        "run_id": run.run_id,
        "axes": _jsonable(dict(run.axes)),
        "notebooks": [str(s.path) for s in run.notebooks],
        "parameters": _marker_params(run),
        "seconds": round(seconds, 3),
        "finished": utc_now(),
    }
    atomic_write_text(rd / DONE, json.dumps(marker, indent=2))
    (rd / FAILED).unlink(missing_ok=True)
    return RunOutcome(run.run_id, "done", seconds)


# Worker side of --jobs N: each pool process takes one device slot for its whole life.
_SLOT_ENV: dict[str, str] = {}


def _init_worker(slots: Any, gpus: list[str], threads: int, parent: int | None = None) -> None:
    _die_with_parent(parent)
    slot = slots.get()
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    os.environ.setdefault("MKL_NUM_THREADS", str(threads))


def _die_with_parent(parent: int | None) -> None:
    """Linux: SIGTERM this process when the runner that started it dies (its papermill kernel then
    sees its own parent gone and shuts down). Elsewhere nothing: a killed runner's workers finish
    the runs already handed to them, and the run locks keep a second runner out of those."""
    if parent is None or not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # pragma: no cover - no prctl in this libc
        return
    if os.getppid() != parent:  # the runner died before the line above took effect
        os._exit(1)


def _worker(run: Run, out: str, force: bool) -> RunOutcome:
    return execute_run(run, Path(out), force=force)


def visible_gpus() -> list[str]:
    """GPU ids a job may be pinned to: ``CUDA_VISIBLE_DEVICES`` if set, else torch's count."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001
        return []


def run_grid(
    runs: Sequence[Run],
    out: str | Path,
    jobs: int = 1,
    executor: Executor | None = None,
    force: bool = False,
    log: Callable[[str], None] | None = print,
) -> list[RunOutcome]:
    """Execute ``runs`` (skipping finished ones), ``jobs`` at a time; outcomes in ``runs`` order.

    ``jobs == 1`` runs in this process (with ``executor``, the strict papermill execution by
    default). ``jobs > 1`` uses a pool of ``jobs`` spawned processes; when GPUs are visible,
    pool process k is pinned to GPU ``k mod #gpus`` through ``CUDA_VISIBLE_DEVICES``, and on a
    CPU each process gets ``OMP_NUM_THREADS = cores // jobs`` (unless already set). A custom
    ``executor`` requires ``jobs == 1`` (it cannot be sent to another process reliably).
    """
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    say = log or (lambda s: None)
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    outcomes: dict[str, RunOutcome] = {}
    total = len(runs)

    def report(k: int, o: RunOutcome) -> None:
        tail = f" {o.seconds:.1f} s" if o.status == "done" else ""
        extra = f": {o.error}" if o.error else ""
        say(f"[{k}/{total}] {o.run_id}: {o.status}{tail}{extra}")

    if jobs == 1:
        for k, r in enumerate(runs, 1):
            o = execute_run(r, out, executor, force)
            outcomes[r.run_id] = o
            report(k, o)
    else:
        if executor is not None:
            raise ValueError("a custom executor runs only with jobs=1")
        ctx = mp.get_context("spawn")
        slots = ctx.Queue()
        for s in range(jobs):
            slots.put(s)
        threads = max(1, (os.cpu_count() or 1) // jobs)
        pool = cf.ProcessPoolExecutor(
            jobs, mp_context=ctx, initializer=_init_worker, initargs=(slots, visible_gpus(), threads, os.getpid())
        )
        try:
            futs = {pool.submit(_worker, r, str(out), force): r for r in runs}
            for k, fut in enumerate(cf.as_completed(futs), 1):
                r = futs[fut]
                try:
                    o = fut.result()
                except Exception as exc:  # noqa: BLE001 - a crashed worker is one failed run
                    o = RunOutcome(r.run_id, "failed", error=_describe_error(exc), notebook=str(r.run_dir(out)))
                outcomes[r.run_id] = o
                report(k, o)
        except BaseException:
            # Ctrl-C or an error here: drop the queued runs instead of letting the pool finish them
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
    return [outcomes[r.run_id] for r in runs]


def summary(outcomes: Sequence[RunOutcome]) -> str:
    """Counts and the failures (error + executed notebook), for the end of a CLI run."""
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    lines = [", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "no runs"]
    for o in outcomes:
        if o.status in ("failed", "stale", "busy"):
            head = "BUSY" if o.status == "busy" else "FAILED"
            lines.append(f"{head} {o.run_id}: {o.error}" + (f"\n    notebook: {o.notebook}" if o.notebook else ""))
    return "\n".join(lines)
