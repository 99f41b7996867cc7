"""Scoring a finished run on more splits and weights: the runner's last step before ``done``.

A grid may ask for it with a ``score`` block::

    score:
      run: run                 # the engine's run directory inside the run folder (04_train: OUT_DIR/run)
      which: last              # the checkpoint scored: last (the primary number) or best
      splits: [val, test]      # each split of the run's own data (test is scored, never used for a choice)
      weights: [student, teacher]

After every notebook of a run succeeded, the runner scores that checkpoint on every split with
every weight set and writes ``scores.json`` into the run folder (atomically), then ``done``. A run
marked done whose ``scores.json`` is missing or lacks a requested entry is ``broken`` and runs again
(training returns its finished result at once; only the evaluation is redone).

``weights: [student, teacher]`` asks for the teacher where the method has one: a method without an
EMA teacher (supervised) gets ``"teacher": null`` and ``"has_teacher": false``, not an error.

``scores.json``::

    {"format": 1, "which": "last", "checkpoint": ".../last.pt", "iteration": 2500, "has_teacher": true,
     "data": "/abs/path/of/the/data", "classes": ["RV", "Myo", "LV"],
     "scores": {"test": {"student": ENTRY, "teacher": ENTRY}, "val": {...}}}

    ENTRY = {"n_volumes": 40, "dice_mean": 0.81, "jaccard_mean": ..., "hd95_mean": ..., "asd_mean": ...,
             "dice": {"RV": ...}, "jaccard": {...}, "hd95": {...}, "asd": {...}, "empty": {...},
             "missed": {"RV": 2, "Myo": 0, "LV": 0}, "spurious": {...},
             "volumes": [{"name": "patient101_frame01", "dice": {"RV": ..., "Myo": ..., "LV": ...}}, ...]}

Dice and Jaccard in [0, 1], HD95 / ASD in voxels, per class the mean over the split's volumes, as
``metrics.json`` (:mod:`actionpp.report`). ``empty`` counts (volume, class) pairs over all classes;
``missed`` (structure in the ground truth, none predicted) and ``spurious`` (the reverse) count them per
class, and ``volumes`` holds each volume's Dice per class (a class the volume lacks is left out). With
``volumes``, a question about single volumes (how often the RV is lost) needs no rescoring. The file is strict
JSON: a value that is not finite is stored as ``null``. Only HD95 / ASD can be NaN, under the empty-mask
policies "nan" and "ssl4mis" (:mod:`actionpp.metrics`), and then only a class mean that no volume has a finite
value for is ``null``; the runner scores with the default policy, "penalty", which gives no NaN. The last three
keys were added on 2026-12-07: entries written before lack them (the format stays 1), so a reader must treat
them as optional (:mod:`actionpp.replicate.missed` leaves such runs out of its counts).
Taught in notebooks/06_replication_report.ipynb.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actionpp.atomic import atomic_write_text

__all__ = ["SCORES", "ScoreSpec", "ScoresError", "parse_score_spec", "score_entry", "score_run", "read_scores"]

SCORES = "scores.json"
FORMAT = 1
_SPLITS = ("val", "test")
_WEIGHTS = ("student", "teacher")


class ScoresError(ValueError):
    """A ``scores.json`` is missing, unreadable or lacks what the grid asks for; the message names the file."""


@dataclass(frozen=True)
class ScoreSpec:
    """What the runner scores after a run (see the module docstring)."""

    run: str = "run"
    which: str = "last"
    splits: tuple[str, ...] = ("test",)
    weights: tuple[str, ...] = ("student",)

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run, "which": self.which, "splits": list(self.splits), "weights": list(self.weights)}


def parse_score_spec(raw: Any, where: str) -> ScoreSpec:
    """A grid's ``score`` block as a :class:`ScoreSpec`; anything malformed raises ValueError naming ``where``."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: 'score' must be a mapping with keys run, which, splits, weights")
    unknown = sorted(set(raw) - {"run", "which", "splits", "weights"})
    if unknown:
        raise ValueError(f"{where}: score: unknown key(s) {unknown}; allowed: run, which, splits, weights")
    run = raw.get("run", "run")
    if not isinstance(run, str) or not run or Path(run).is_absolute() or ".." in Path(run).parts:
        raise ValueError(f"{where}: score.run must be a folder inside the run folder, got {run!r}")
    which = raw.get("which", "last")
    if which not in ("last", "best"):
        raise ValueError(f"{where}: score.which must be last or best, got {which!r}")

    def listed(key: str, allowed: tuple[str, ...], default: tuple[str, ...]) -> tuple[str, ...]:
        vals = raw.get(key, list(default))
        vals = [vals] if isinstance(vals, str) else vals
        if not isinstance(vals, list) or not vals or any(v not in allowed for v in vals) or len(set(vals)) < len(vals):
            raise ValueError(f"{where}: score.{key} must list distinct values of {', '.join(allowed)}, got {vals!r}")
        return tuple(vals)

    return ScoreSpec(run, which, listed("splits", _SPLITS, ("test",)), listed("weights", _WEIGHTS, ("student",)))


def score_entry(result: Any, dataset: str) -> dict[str, Any]:
    """One split x weights entry of ``scores.json`` (ENTRY in the module docstring) from an
    :class:`~actionpp.evaluate.EvalResult` of ``dataset``: per-class and mean metrics, the structures missed and
    spurious per class, and each volume's Dice per class."""
    from actionpp.evaluate import class_name

    summ = result.summary
    per_class = summ["per_class"]
    keys = sorted(per_class, key=lambda c: int(c) if str(c).isdigit() else str(c))
    names = [class_name(dataset, c) for c in keys]

    def finite(v: Any) -> float | None:
        return float(v) if v is not None and math.isfinite(v) else None

    def block(key: str) -> dict[str, float | None]:
        # null, not NaN, where the policy left every volume of a class out: scores.json stays strict JSON
        return {n: finite(per_class[c][key]) for n, c in zip(names, keys)}

    def mean(key: str) -> float | None:
        return finite(summ["mean"].get(key))

    per_class_empty = summ["empty_per_class"]  # metrics.summarise: the one place that tells missed from spurious
    volumes = [{"name": str(vol.get("name", "")),
                "dice": {n: finite(vol["metrics"][c]["dice"]) for n, c in zip(names, keys) if c in vol["metrics"]}}
               for vol in result.per_volume]
    return {
        "n_volumes": int(summ.get("n_volumes", len(result.per_volume))),
        "dice_mean": mean("dice"), "jaccard_mean": mean("jaccard"),
        "hd95_mean": mean("hd95_vox"), "asd_mean": mean("asd_vox"),
        "dice": block("dice"), "jaccard": block("jaccard"), "hd95": block("hd95_vox"), "asd": block("asd_vox"),
        "empty": dict(summ.get("empty", {})),
        "missed": {n: per_class_empty[c]["missed"] for n, c in zip(names, keys)},
        "spurious": {n: per_class_empty[c]["spurious"] for n, c in zip(names, keys)}, "volumes": volumes,
    }


def score_run(run_folder: str | Path, spec: ScoreSpec, device: str = "auto") -> dict[str, Any]:
    """Score ``run_folder/spec.run``'s ``spec.which`` checkpoint on every split with every weight set.

    The data are the run's own (its ``data.root``). Writes ``run_folder/scores.json`` atomically and
    returns its content. Errors (no checkpoint, a split the data lack) raise before anything is written;
    teacher weights of a method without a teacher are recorded as absent (``None``).
    """
    import torch

    from actionpp.checkpoint import find_checkpoint, load_checkpoint
    from actionpp.evaluate import evaluate_run

    folder = Path(run_folder)
    engine = folder / spec.run
    path = find_checkpoint(engine, spec.which)
    state = load_checkpoint(path, map_location="cpu")
    iteration = state.get("iteration")
    has_teacher = state.get("teacher") is not None
    del state
    scores: dict[str, dict[str, Any]] = {}
    data_root, classes = "", []
    for split in spec.splits:
        for weights in spec.weights:
            if weights == "teacher" and not has_teacher:
                scores.setdefault(split, {})[weights] = None  # the method has no EMA teacher (supervised)
                continue
            ev = evaluate_run(path, None, split=split, which=spec.which, device=device, weights=weights)
            entry = score_entry(ev.result, ev.config.data.dataset)
            scores.setdefault(split, {})[weights] = entry
            data_root, classes = str(ev.root), list(entry["dice"])
            del ev
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    out = {"format": FORMAT, **spec.to_dict(), "checkpoint": str(path), "iteration": iteration,
           "has_teacher": has_teacher, "data": data_root, "classes": classes, "scores": scores}
    atomic_write_text(folder / SCORES, json.dumps(out, indent=1, allow_nan=False))
    return out


def read_scores(path: str | Path, spec: ScoreSpec | None = None) -> dict[str, Any]:
    """A ``scores.json``, checked: readable, this format, and (with ``spec``) every split x weights entry present."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise ScoresError(f"{p}: missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ScoresError(f"{p}: unreadable ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("scores"), dict):
        raise ScoresError(f"{p}: not a scores.json of format {FORMAT}")
    if spec is not None:
        if data.get("which") != spec.which:
            raise ScoresError(f"{p}: scores the {data.get('which')!r} checkpoint, the grid asks for {spec.which!r}")
        for split in spec.splits:
            for weights in spec.weights:
                entry = data["scores"].get(split, {}).get(weights)
                if entry is None and weights == "teacher" and data.get("has_teacher") is False:
                    continue  # a method without an EMA teacher: nothing to score, and said so
                if not isinstance(entry, dict) or not isinstance(entry.get("dice"), dict):
                    raise ScoresError(f"{p}: no {weights} score on {split}")
    return data
