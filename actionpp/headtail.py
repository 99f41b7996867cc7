"""Head versus tail on real runs, without training: the published samples notebook 05 reads.

The replication runner publishes, for every real-data run, a small sample of its validation-pixel
embeddings (``embeddings.npz``: :func:`actionpp.embeddings.embedding_sample`) beside the run's
scores (``scores.json``: :mod:`actionpp.replicate.score`). This module reads a published grid
folder back (:func:`load_published`) and turns each run into per-class numbers
(:func:`run_numbers`) in two spaces:

- ``features``: the decoder features the segmentation head reads (the last decoder map). Every
  method has them, so this is the space in which supervised, ACTION and ACTION++ compare fairly;
- ``head``: the representation head's output, the space the contrastive losses shape (ACTION,
  ACTION++). A supervised run never trains that head: its numbers there describe a fixed random
  projection and are left out.

Per class: the test and val Dice of the last checkpoint (student), and on the class-balanced
sample the alignment, the nearest-class-mean accuracy (for ACTION++ in the head space also the
nearest-centre accuracy) and the smallest angle between class means (:mod:`actionpp.embeddings`).
:func:`tail_comparison` sets two methods side by side on one class (the tail), paired by seed as the
powered grid's analysis (:func:`actionpp.replicate.paired.paired_interval`), and :func:`verdict`
says it in sentences computed from those numbers.

Taught in notebooks/05_embeddings.ipynb.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from actionpp import embeddings as E
from actionpp.replicate.paired import Interval, paired_interval

__all__ = ["PublishedRun", "load_published", "run_numbers", "tail_comparison", "verdict", "METRICS"]

#: metric key -> (label, space, higher is better separated)
METRICS: dict[str, tuple[str, str, bool | None]] = {
    "dice_test": ("test Dice", "-", True),
    "dice_val": ("val Dice", "-", True),
    "features_accuracy": ("nearest class mean accuracy, decoder features", "features", True),
    "features_min_angle": ("smallest angle to another class mean (deg), decoder features", "features", True),
    "features_alignment": ("alignment, decoder features", "features", None),
    "head_accuracy": ("nearest class mean accuracy, representation head", "head", True),
    "head_centre_accuracy": ("nearest centre accuracy, representation head", "head", True),
    "head_min_angle": ("smallest angle to another class mean (deg), representation head", "head", True),
}
TRAINS_HEAD = ("action", "actionpp", "actionpp_finetune_only")


@dataclass(frozen=True)
class PublishedRun:
    """One published run: its axes, its embedding sample (:func:`~actionpp.embeddings.read_embedding_sample`)
    and its ``scores.json`` content."""

    run_id: str
    method: str
    labelled: int
    seed: int
    sample: dict[str, Any]
    scores: dict[str, Any]
    path: Path

    @property
    def classes(self) -> list[str]:
        return ["BG", *self.scores.get("classes", [])]


def load_published(results: str | Path, labelled: int | None = None, methods: Sequence[str] | None = None,
                   problems: list[str] | None = None) -> list[PublishedRun]:
    """The runs under ``results`` (a published grid folder) that hold ``done``, ``embeddings.npz`` and
    ``scores.json``, optionally of one label budget and some methods (ablation variants are left out).

    Sorted by method order of ``methods`` (else by name), then seed. A run folder missing one of the
    files, or holding an unreadable one, is skipped and named in ``problems`` when it is a list.
    """
    root = Path(results)
    out = []
    for done in sorted(root.glob("*/done")):
        rd = done.parent
        try:
            marker = json.loads(done.read_text())
            axes = marker.get("axes") or {}
            if axes.get("VARIANT") is not None:
                continue
            method, lab, seed = str(axes["METHOD"]), int(axes.get("LABELLED_PATIENTS", 0)), int(axes["SEED"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            if problems is not None:
                problems.append(f"{done}: unreadable marker ({type(exc).__name__})")
            continue
        if (labelled is not None and lab != labelled) or (methods is not None and method not in methods):
            continue
        try:
            sample = E.read_embedding_sample(rd / E.SAMPLE_FILE)
            scores = json.loads((rd / "scores.json").read_text())
        except (OSError, ValueError) as exc:
            if problems is not None:
                problems.append(f"{rd.name}: {exc}" if isinstance(exc, ValueError) else f"{rd.name}: {exc.strerror}: "
                                f"{getattr(exc, 'filename', '')}")
            continue
        out.append(PublishedRun(rd.name, method, lab, seed, sample, scores, rd))
    order = {m: i for i, m in enumerate(methods or sorted({r.method for r in out}))}
    return sorted(out, key=lambda r: (order.get(r.method, len(order)), r.seed))


def _space_numbers(vectors: Any, labels: Any, k: int, names: list[str], centres: Any = None) -> dict[str, dict]:
    emb = torch.nn.functional.normalize(torch.as_tensor(vectors, dtype=torch.float32), dim=1)
    lab = torch.as_tensor(labels, dtype=torch.long)
    g = E.geometry(emb, lab, k, class_names=names)
    out = {n: {"accuracy": g["per_class"][n]["accuracy"], "alignment": g["per_class"][n]["alignment"],
               "min_angle": g["per_class"][n]["min_angle_deg"]} for n in names}
    if centres is not None and len(centres):
        _, per = E.nearest_centre_accuracy(emb, lab, torch.as_tensor(centres, dtype=torch.float32))
        for c, n in enumerate(names):
            out[n]["centre_accuracy"] = float(per[c])
    return out


def run_numbers(run: PublishedRun) -> dict[str, dict[str, float]]:
    """Per class name: every :data:`METRICS` number this run has (NaN where it has none).

    Geometry on the class-balanced sample; the head space only for methods that train the head.
    """
    names = run.classes
    k = len(names)
    s = run.sample
    feats = _space_numbers(s["balanced_features"], s["balanced_labels"], k, names)
    head = (_space_numbers(s["balanced_head"], s["balanced_labels"], k, names, s["centres"])
            if run.method in TRAINS_HEAD else None)
    out: dict[str, dict[str, float]] = {}
    for n in names:
        row = {key: math.nan for key in METRICS}
        for split in ("test", "val"):
            d = run.scores.get("scores", {}).get(split, {}).get("student", {}).get("dice", {}).get(n)
            if d is not None:
                row[f"dice_{split}"] = float(d)
        row["features_accuracy"] = feats[n]["accuracy"]
        row["features_min_angle"] = feats[n]["min_angle"]
        row["features_alignment"] = feats[n]["alignment"]
        if head is not None:
            row["head_accuracy"] = head[n]["accuracy"]
            row["head_min_angle"] = head[n]["min_angle"]
            row["head_centre_accuracy"] = head[n].get("centre_accuracy", math.nan)
        out[n] = row
    return out


@dataclass(frozen=True)
class TailRow:
    """Method B minus method A on one class and metric: both sides over their seeds and the paired difference."""

    metric: str
    a_mean: float
    a_sd: float
    b_mean: float
    b_sd: float
    paired: Interval
    pairs: int

    @property
    def se(self) -> float:
        p = self.paired
        return p.sd / math.sqrt(p.n) if p.n >= 2 and math.isfinite(p.sd) else math.nan


def _mean_sd(v: list[float]) -> tuple[float, float]:
    v = [x for x in v if math.isfinite(x)]
    if not v:
        return math.nan, math.nan
    return statistics.fmean(v), (statistics.stdev(v) if len(v) >= 2 else math.nan)


def tail_comparison(runs: Sequence[PublishedRun], a: str, b: str, cls: str) -> list[TailRow]:
    """``b - a`` on class ``cls`` for every metric both methods have, paired by seed."""
    nums: dict[tuple[str, int], dict[str, float]] = {}
    for r in runs:
        if r.method in (a, b) and cls in r.classes:
            if (r.method, r.seed) in nums:
                raise ValueError(f"two {r.method} runs of seed {r.seed} (label budgets mixed?): load one budget "
                                 f"at a time (load_published(..., labelled=N)); one of them is {r.run_id}")
            nums[(r.method, r.seed)] = run_numbers(r)[cls]
    seeds_a = sorted(s for m, s in nums if m == a)
    seeds_b = sorted(s for m, s in nums if m == b)
    rows = []
    for metric in METRICS:
        va = [nums[(a, s)][metric] for s in seeds_a]
        vb = [nums[(b, s)][metric] for s in seeds_b]
        if not any(math.isfinite(x) for x in va) or not any(math.isfinite(x) for x in vb):
            continue
        shared = [s for s in seeds_a if s in seeds_b and math.isfinite(nums[(a, s)][metric])
                  and math.isfinite(nums[(b, s)][metric])]
        d = [nums[(b, s)][metric] - nums[(a, s)][metric] for s in shared]
        (ma, sa), (mb, sb) = _mean_sd(va), _mean_sd(vb)
        rows.append(TailRow(metric, ma, sa, mb, sb, paired_interval(d), len(shared)))
    return rows


def verdict(rows: Sequence[TailRow], a: str, b: str, cls: str) -> list[str]:
    """Sentences from a :func:`tail_comparison`: each metric where higher is better (Dice, separation), b - a with its
    standard error and 95 % interval, called only when the interval excludes 0; then a one-line summary."""
    lines, ahead = [], {a: 0, b: 0}
    counted = 0
    for r in rows:
        label, _, higher = METRICS[r.metric]
        if higher is None or r.pairs < 2:
            continue
        counted += 1
        iv = r.paired
        if iv.excludes_zero:
            winner = b if iv.mean > 0 else a
            ahead[winner] += 1
            word = f"{winner} ahead (the 95 % interval excludes 0)"
        else:
            word = "not distinguishable at this number of seeds"
        lines.append(f"{cls}, {label}: {a} {r.a_mean:.3f}, {b} {r.b_mean:.3f}; {b} - {a} = {iv.mean:+.3f} "
                     f"+- {r.se:.3f} (standard error), 95 % interval [{iv.lo:+.3f}, {iv.hi:+.3f}] over {r.pairs} "
                     f"paired seeds: {word}")
    if counted:
        lines.append(f"In short, on the {cls}: of {counted} numbers where higher is better (Dice, accuracy, angle), "
                     f"{b} is ahead on {ahead[b]}, {a} on {ahead[a]}, the rest not distinguishable.")
    return lines
