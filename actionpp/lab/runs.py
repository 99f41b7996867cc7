"""The runs notebook 05 compares: one per (method, seed), planned once, trained several at a time.

:func:`comparison_plan` turns the notebook's parameters into :class:`PlannedRun` entries (a
validated :class:`~actionpp.config.Config` and a run directory ``<run_root>/<method>_seed<k>``);
:func:`plan_of_notebook` does the same from a parameter mapping, so ``actionpp demo`` can train
exactly the runs notebook 05 will ask for, in a background process on the core that notebook 04
leaves idle (:func:`start_background`). :func:`train_plan` trains or reuses every planned run
(``actionpp.train.train`` returns a finished run of the same configuration from disk at once),
``jobs`` at a time, each in its own process with one torch thread.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PlannedRun", "comparison_plan", "plan_of_notebook", "train_plan", "Background", "start_background"]


@dataclass(frozen=True)
class PlannedRun:
    """One run of a comparison: ``method`` (its group), ``seed``, the full ``config``, its ``run_dir``."""

    method: str
    seed: int
    config: Any
    run_dir: Path


def comparison_plan(
    methods: Sequence[str],
    seeds: Sequence[int],
    profile: str,
    run_root: str | Path,
    size: int = -1,
    pretrain_iters: int = -1,
    finetune_iters: int = -1,
    overrides: Sequence[str] = (),
    device: str = "cpu",
) -> list[PlannedRun]:
    """Every (method, seed) run of engine ``profile``, methods outer and seeds inner.

    ``size`` / ``pretrain_iters`` / ``finetune_iters`` override ``data.size`` and the two phase
    lengths (-1 keeps the profile's); ``overrides`` are further ``key=value`` settings. Raises
    :class:`~actionpp.config.ConfigError` (naming the key) for a bad setting before anything trains,
    and ValueError for an empty or repeated method or seed list.
    """
    from actionpp import config as C

    if not methods or not seeds:
        raise ValueError(f"a comparison needs methods and seeds, got {list(methods)} and {list(seeds)}")
    if len(set(methods)) != len(methods) or len(set(seeds)) != len(seeds):
        raise ValueError(f"methods and seeds must not repeat, got {list(methods)} and {list(seeds)}")
    extra = [f"runtime.device={device}", "runtime.progress=false"]
    if size >= 0:
        extra.append(f"data.size={size}")
    if pretrain_iters >= 0:
        extra.append(f"train.pretrain_iters={pretrain_iters}")
    if finetune_iters >= 0:
        extra.append(f"train.finetune_iters={finetune_iters}")
    root = Path(run_root)
    plan = []
    for m in methods:
        for s in seeds:
            cfg = C.load_config(profile, [f"method.name={m}", f"runtime.seed={int(s)}", *extra, *overrides])
            plan.append(PlannedRun(m, int(s), cfg, root / f"{m}_seed{int(s)}"))
    return plan


def plan_of_notebook(parameters: Mapping[str, Any]) -> list[PlannedRun]:
    """The runs notebook 05 trains for these parameter values (its declared names); [] when it
    reads ``RUN_DIRS`` instead, or when the mapping lacks one of the names (another notebook)."""
    from actionpp.notebook import output_dir

    names = ("METHODS", "SEEDS", "PROFILE", "SIZE", "PRETRAIN_ITERATIONS", "ITERATIONS", "OVERRIDES", "DEVICE",
             "OUT_DIR")
    if parameters.get("RUN_DIRS") or any(n not in parameters for n in names) or not parameters["METHODS"]:
        return []
    p = parameters
    return comparison_plan(p["METHODS"], p["SEEDS"], p["PROFILE"], output_dir(p["OUT_DIR"]) / "runs", p["SIZE"],
                           p["PRETRAIN_ITERATIONS"], p["ITERATIONS"], p["OVERRIDES"], p["DEVICE"])


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def _train_one(run: PlannedRun) -> dict[str, Any]:
    """Train (or reuse) one planned run; a small JSON-able summary (module level: picklable for spawn)."""
    from actionpp.train import train

    t0 = time.perf_counter()
    cpu0 = time.process_time()
    res = train(run.config, run_dir=run.run_dir, progress=False)
    return {"method": run.method, "seed": run.seed, "run_dir": str(res.run_dir), "cached": res.cached,
            "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - cpu0,
            "final": res.final, "iterations": res.iterations}


def train_plan(
    plan: Sequence[PlannedRun], jobs: int = 1, log: Callable[[str], Any] | None = print,
) -> list[dict[str, Any]]:
    """Train or reuse every run of ``plan``; return their summaries in plan order.

    ``jobs`` > 1 trains that many runs at once, each in a spawned process with one torch thread
    (on a 2-core CPU, ``jobs=2`` halves the wall time); ``jobs=1`` trains here, one after the
    other. ``log`` gets one line per run (None: quiet). A failing run raises its exception.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")

    def report(s: dict[str, Any]) -> None:
        if log is not None:
            dice = (s.get("final") or {}).get("dice", float("nan"))
            how = "reused" if s["cached"] else f"trained in {s['seconds']:.0f} s ({s['cpu_seconds']:.0f} s CPU)"
            log(f"{s['method']:>12} seed {s['seed']}: {how}, validation Dice {dice:.3f}")

    pending = [r for r in plan if not (r.run_dir / "metrics.json").is_file()]
    if jobs == 1 or len(pending) <= 1:
        out = []
        for r in plan:
            out.append(_train_one(r))
            report(out[-1])
        return out
    by_dir: dict[str, dict[str, Any]] = {}
    for r in plan:  # finished runs are read here, without a process
        if r not in pending:
            by_dir[str(r.run_dir)] = _train_one(r)
            report(by_dir[str(r.run_dir)])
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(jobs, len(pending)), mp_context=ctx, initializer=_one_thread) as pool:
        futures = {pool.submit(_train_one, r): r for r in pending}
        for fut in futures:
            s = fut.result()
            by_dir[str(futures[fut].run_dir)] = s
            report(s)
    return [by_dir[str(r.run_dir)] for r in plan]


class Background:
    """A plan being trained in a background process (:func:`start_background`)."""

    def __init__(self, plan: Sequence[PlannedRun]) -> None:
        ctx = mp.get_context("spawn")
        self.plan = list(plan)
        self.started = time.perf_counter()
        self.process = ctx.Process(target=_background_main, args=(self.plan,), daemon=True)
        self.process.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until it is done (or ``timeout`` seconds); True when every run finished cleanly."""
        self.process.join(timeout)
        if self.process.is_alive():
            return False
        return self.process.exitcode == 0

    def stop(self) -> None:
        """Terminate it (an interrupted run resumes from its ``last.pt`` when trained again)."""
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(10)


def _background_main(plan: Sequence[PlannedRun]) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _one_thread()
    train_plan(plan, jobs=1, log=None)


def start_background(plan: Sequence[PlannedRun]) -> Background | None:
    """Start training ``plan`` (one run after the other, one thread) in a spawned process; None
    when every run is already finished."""
    todo = [r for r in plan if not (r.run_dir / "metrics.json").is_file()]
    return Background(todo) if todo else None
