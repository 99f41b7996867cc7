"""How long a grid still needs: the training time of its own finished runs, per kind of run.

A grid of real-data runs trains for days on a CPU and for hours on a GPU; before starting (``actionpp
replicate GRID --dry-run``) and at every start, a user wants "how much is left". The estimate uses
only what the grid itself measured on the machines that trained it: the training loop's seconds in
each finished run's ``run/metrics.json`` (iterations only, over every attempt), summarised per kind
of run (its ``VARIANT`` when the grid has one, else its ``METHOD``) by the median of the kind's
:data:`RECENT` most recently trained runs (ordered by the last start that ``run/run.json`` records; all of
them when it has fewer). A grid that trains over several sessions may move between machines of different
speed, and the runs trained last are the best guess at the machine training the rest; a run with no
recorded start counts as the oldest. A run not yet
finished costs its kind's median (a variant with no finished run falls back to its method's), times
the share of its iterations not yet behind a checkpoint for a partly trained run (``run/log.jsonl``
against ``run/config.yaml``). Runs whose kind has no finished run are listed, not guessed.

Validation, scoring and notebook start-up are not in the estimate (a few minutes per run on a CPU),
and nor is the machine: timings from another machine, or with another number of runs at once,
carry over only roughly.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from actionpp.replicate.grid import Run
from actionpp.replicate.logs import TRAIN_DIR
from actionpp.runlog import RunFileError, read_jsonl

__all__ = ["Estimate", "estimate", "run_kind", "trained_fraction", "RECENT"]

#: how many of a kind's most recently trained runs its median is taken over
RECENT = 3

def run_kind(run: Run) -> str:
    """What a run's training time depends on: its ``VARIANT`` when it has one, else its ``METHOD``."""
    variant = run.axes.get("VARIANT")
    return str(variant) if variant is not None else _method(run)


def _method(run: Run) -> str:
    return str(run.parameters[0].get("METHOD", "?")) if run.parameters else "?"


def _training_seconds(rd: Path) -> float | None:
    """The training loop's seconds (every attempt's iterations) of a finished run; None when it has none."""
    try:
        v = json.loads((rd / TRAIN_DIR / "metrics.json").read_text()).get("seconds")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) and v > 0 else None


def _last_start(rd: Path) -> str:
    """When a run's last training attempt started (ISO time from ``run/run.json``); "" when not recorded."""
    try:
        starts = json.loads((rd / TRAIN_DIR / "run.json").read_text()).get("starts")
    except (OSError, json.JSONDecodeError, AttributeError):
        return ""
    times = [s.get("time") for s in starts if isinstance(s, dict)] if isinstance(starts, list) else []
    return max((t for t in times if isinstance(t, str)), default="")


def _recent_median(timed: list[tuple[str, float]]) -> float:
    """Median seconds of the :data:`RECENT` latest of ``(last start, seconds)`` pairs (ties keep grid order)."""
    latest = sorted(enumerate(timed), key=lambda it: (it[1][0], it[0]))[-RECENT:]
    return statistics.median(sec for _, (_, sec) in latest)


def trained_fraction(run_dir: Path) -> float:
    """Share of a partly trained run's iterations that a resume will not repeat, in [0, 1].

    From ``run/config.yaml`` (which phases run and for how many iterations, ``runtime.checkpoint_every``)
    and ``run/log.jsonl`` (the last logged iteration). The training loop counts iterations on one counter
    through both phases (fine-tuning continues where pre-training stopped) and writes a checkpoint at every
    multiple of ``checkpoint_every`` of that counter and at each phase's end; a resume starts from the last
    of those at or before the last logged iteration. 0 when either file is missing or unreadable.
    """
    import yaml

    rd = Path(run_dir) / TRAIN_DIR
    try:
        cfg = yaml.safe_load((rd / "config.yaml").read_text()) or {}
        log = read_jsonl(rd / "log.jsonl")  # complete lines only: a killed run's torn last line is skipped
    except (OSError, yaml.YAMLError, RunFileError):
        return 0.0
    method, train = cfg.get("method") or {}, cfg.get("train") or {}
    every = int((cfg.get("runtime") or {}).get("checkpoint_every") or 0)
    ends, total = [], 0
    for phase in ("pretrain", "finetune"):
        if method.get(phase):
            total += int(train.get(f"{phase}_iters") or 0)
            ends.append(total)  # the phase's end on the shared counter: always a checkpoint
    if total <= 0:
        return 0.0
    its = [e["iteration"] for e in log if e.get("kind") == "train" and isinstance(e.get("iteration"), int)]
    last = min(max(its, default=0), total)
    kept = max([0, *(e for e in ends if e <= last), *([last // every * every] if every > 0 else [])])
    return kept / total


@dataclass
class Estimate:
    """What is left of a grid: ``seconds`` of training for ``to_go`` runs (``partial`` of them started)."""

    total: int
    done: int
    to_go: int
    partial: int
    seconds: float
    jobs: int
    longest: float = 0.0  # seconds of the longest single run still to go (runs are not split between jobs)
    minutes: dict[str, float] = field(default_factory=dict)  # kind -> median minutes of its RECENT latest runs
    unknown: list[str] = field(default_factory=list)  # runs with no finished run of their kind to time

    def text(self) -> str:
        if self.to_go == 0:
            return f"estimate: all {self.total} runs finished, nothing to go"
        if not self.minutes:
            return (f"estimate: {self.to_go} of {self.total} runs to go; none has finished, so there is no "
                    "training time of this grid to estimate from yet")
        timed = self.to_go - len(self.unknown)
        started = f" ({self.partial} partly trained)" if self.partial else ""
        if timed == 0:  # finished runs exist, but none of a kind still to go: "about 0.0 h" would mislead
            return (f"estimate: {self.to_go} of {self.total} runs to go{started}; no finished run of their kind "
                    f"to time them by yet: {self._shown_unknown()}")
        per = ", ".join(f"{k} {m:.0f}" for k, m in self.minutes.items())
        hours = self.seconds / 3600
        wall = max(self.seconds / self.jobs, self.longest) / 3600  # one run is not shared between jobs
        covers = f" for the {timed} {'run' if timed == 1 else 'runs'} it can time" if self.unknown else ""
        out = (f"estimate: {self.to_go} of {self.total} runs to go{started}: about {hours:.1f} h of training{covers} "
               f"(median minutes of each kind's {RECENT} most recently trained runs: {per}); "
               f"at {self.jobs} at a time about {wall:.1f} h of wall time, training iterations only "
               "(validation, scoring and start-up add a few minutes per run; another machine trains at another speed)")
        if self.unknown:
            out += f"; not counted, no finished run of their kind yet: {self._shown_unknown()}"
        return out

    def _shown_unknown(self) -> str:
        more = len(self.unknown) - 3
        return ", ".join(self.unknown[:3]) + (f" and {more} more" if more > 0 else "")


def estimate(runs: Sequence[Run], out: str | Path, jobs: int = 1) -> Estimate:
    """The :class:`Estimate` for ``runs`` (a grid, or one shard of it) under the output folder ``out``."""
    from actionpp.replicate.run import run_state

    out = Path(out)
    states = {r.run_id: run_state(r, out)[0] for r in runs}
    timed: dict[str, list[tuple[str, float]]] = {}
    by_method: dict[str, list[tuple[str, float]]] = {}
    for r in runs:
        if states[r.run_id] == "done":
            s = _training_seconds(r.run_dir(out))
            if s is not None:
                when = _last_start(r.run_dir(out))
                timed.setdefault(run_kind(r), []).append((when, s))
                by_method.setdefault(_method(r), []).append((when, s))
    median = {k: _recent_median(v) for k, v in timed.items()}
    method_median = {k: _recent_median(v) for k, v in by_method.items()}
    seconds, longest, partial, unknown = 0.0, 0.0, 0, []
    to_go = [r for r in runs if states[r.run_id] != "done"]
    for r in to_go:
        each = median.get(run_kind(r), method_median.get(_method(r)))
        started = states[r.run_id] in ("partial", "failed")
        partial += int(started and r.run_dir(out).is_dir())
        if each is None:
            unknown.append(r.run_id)
            continue
        left = 1.0 - trained_fraction(r.run_dir(out)) if started else 1.0
        seconds += each * left
        longest = max(longest, each * left)
    return Estimate(total=len(runs), done=len(runs) - len(to_go), to_go=len(to_go), partial=partial,
                    seconds=seconds, jobs=max(1, int(jobs)), longest=longest,
                    minutes={k: v / 60 for k, v in median.items()}, unknown=unknown)

