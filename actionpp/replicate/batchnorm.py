"""A grid's BatchNorm check: every finished run scored with re-estimated BatchNorm statistics (a diagnostic).

A grid asks for it with a ``batchnorm_check`` block (it needs a ``score`` block: the check reads the
checkpoint the runner scores)::

    batchnorm_check:
      split: val        # val (default) or train; never test: a diagnostic may suggest a change of protocol
      images: 400       # training images per re-estimation
      seed: 0

When the grid is tabulated or published, each finished run without a current ``batchnorm.json``
gets one (:func:`actionpp.bnstats.check_batchnorm`, written atomically into the run folder; about a
minute per ACDC-lite run on one CPU thread), and ``batchnorm.md`` sets, per method and budget, the
split's Dice as stored beside the Dice with the statistics re-estimated from unlabelled images and
from batches mixed as in fine-tuning, with one runner-written line per budget. The primary numbers
are untouched: they stay the stored checkpoint's.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actionpp.atomic import atomic_write_text
from actionpp.replicate.score import ScoreSpec

if TYPE_CHECKING:  # grid.py parses the block: this module imports nothing that imports the grid at load time
    from actionpp.replicate.tables import RunRecord

__all__ = ["BATCHNORM", "BatchNormSpec", "parse_batchnorm_spec", "check_run", "checks_for", "read_checks",
           "batchnorm_markdown", "batchnorm_frame_rows"]

BATCHNORM = "batchnorm.json"
_WAYS = (("stored", "as stored"), ("unlabelled", "unlabelled"), ("mixed", "mixed"))


@dataclass(frozen=True)
class BatchNormSpec:
    """What the check does (see the module docstring)."""

    split: str = "val"
    images: int = 400
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "images": self.images, "seed": self.seed}


def parse_batchnorm_spec(raw: Any, where: str) -> BatchNormSpec:
    """A grid's ``batchnorm_check`` block; anything malformed raises ValueError naming ``where`` and the key."""
    if raw is True:
        return BatchNormSpec()
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: 'batchnorm_check' must be a mapping with keys split, images, seed")
    unknown = sorted(set(raw) - {"split", "images", "seed"})
    if unknown:
        raise ValueError(f"{where}: batchnorm_check: unknown key(s) {unknown}; allowed: split, images, seed")
    split = raw.get("split", "val")
    if split == "test":
        raise ValueError(f"{where}: batchnorm_check.split: test is never used for a choice, and a diagnostic "
                         "may suggest one (a change of protocol): use val")
    if split not in ("val", "train"):
        raise ValueError(f"{where}: batchnorm_check.split must be val or train, got {split!r}")
    images, seed = raw.get("images", 400), raw.get("seed", 0)
    if isinstance(images, bool) or not isinstance(images, int) or images < 2:
        raise ValueError(f"{where}: batchnorm_check.images must be an integer >= 2, got {images!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"{where}: batchnorm_check.seed must be an integer >= 0, got {seed!r}")
    return BatchNormSpec(split, images, seed)


def _current(path: Path, spec: BatchNormSpec, checkpoint: Path) -> dict[str, Any] | None:
    """The run's ``batchnorm.json`` when it holds this check of this checkpoint file (else None)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("spec") != spec.to_dict() or data.get("checkpoint") != str(checkpoint):
        return None
    if data.get("checkpoint_mtime_ns") != checkpoint.stat().st_mtime_ns:
        return None
    if not all(isinstance(data.get(k), dict) for k, _ in _WAYS):
        return None
    return data


def check_run(folder: str | Path, score: ScoreSpec, spec: BatchNormSpec, device: str = "cpu") -> dict[str, Any]:
    """``folder/batchnorm.json`` for the checkpoint the runner scores (``score.run``, ``score.which``): read
    back when it is this check of that checkpoint file, otherwise computed and written (atomically)."""
    from actionpp.bnstats import check_batchnorm
    from actionpp.checkpoint import find_checkpoint

    folder = Path(folder)
    ckpt = find_checkpoint(folder / score.run, score.which)
    done = _current(folder / BATCHNORM, spec, ckpt)
    if done is not None:
        return done
    result = check_batchnorm(ckpt, split=spec.split, which=score.which, images=spec.images, seed=spec.seed,
                             device=device)
    out = {**result, "spec": spec.to_dict(), "checkpoint_mtime_ns": ckpt.stat().st_mtime_ns}
    atomic_write_text(folder / BATCHNORM, json.dumps(out, indent=1))
    return out


def _budget(labelled: int) -> str:
    return f"{labelled} labelled patient{'s' if labelled != 1 else ''}" if labelled >= 0 else "budget unknown"


def batchnorm_markdown(checks: Sequence[tuple[RunRecord, Mapping[str, Any]]]) -> str:
    """Markdown: per run and per method and budget, the split's mean Dice (and structures missed) as stored and
    with the statistics re-estimated; per budget one line with each method's change from the unlabelled images."""
    from actionpp.replicate.logs import method_and_budget
    from actionpp.replicate.paired import NAMES

    if not checks:
        return "# BatchNorm statistics: stored against re-estimated\n\nNo run checked yet.\n"
    first = checks[0][1]
    split, images, batch = first.get("split"), first.get("images"), first.get("batch")
    lines = [
        "# BatchNorm statistics: stored against re-estimated",
        "",
        f"A diagnostic, on the {split} split, of the checkpoint the runner scores (student). Each run is scored "
        "with BatchNorm's running statistics as trained (`as stored`: what every table reports), then with them "
        f"re-estimated from {images} unlabelled training images in batches of {batch} (`unlabelled`), then "
        f"from as many images in batches mixed as in fine-tuning, labelled and unlabelled (`mixed`); no "
        "augmentation, no gradient, the weights as trained (`actionpp.bnstats`). A large gain from `unlabelled` "
        "says the stored statistics, not the weights, are what fails on unseen patients; `mixed` near `as "
        "stored` says the labelled images in the training batches are what those statistics describe. Dice in "
        "%, mean over the split's volumes; `missed`: structures (volume x class) predicted empty where the "
        "label has them. Never used for a choice; the primary numbers stay the stored checkpoint's.",
        "",
        "| run | Dice as stored | Dice unlabelled | Dice mixed | missed as stored | missed unlabelled | missed mixed |",
        "|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    for record, c in checks:
        groups.setdefault(method_and_budget(record), []).append(c)
        dice = [f"{100 * c[k]['dice']:.1f}" for k, _ in _WAYS]
        missed = [str(c[k]["empty"]["missed"]) for k, _ in _WAYS]
        lines.append(f"| {record.run_id} | " + " | ".join(dice + missed) + " |")

    def mean(cs: Sequence[Mapping[str, Any]], key: str) -> float:
        return statistics.fmean(100 * c[key]["dice"] for c in cs)

    lines += ["", "## Per method and budget", "", "Mean Dice % over the runs (seeds); the change from `as stored` "
              "to `unlabelled` with its smallest and largest run in brackets.", "",
              "| method | labelled | runs | as stored | unlabelled | mixed | change (unlabelled) |",
              "|---|---|---|---|---|---|---|"]
    for (method, labelled), cs in sorted(groups.items(), key=lambda kv: (-kv[0][1], kv[0][0])):
        gains = [100 * (c["unlabelled"]["dice"] - c["stored"]["dice"]) for c in cs]
        budget = str(labelled) if labelled >= 0 else "?"
        change = f"{statistics.fmean(gains):+.1f} [{min(gains):+.1f}, {max(gains):+.1f}]"
        lines.append(f"| {method} | {budget} | {len(cs)} | {mean(cs, 'stored'):.1f} | {mean(cs, 'unlabelled'):.1f} | "
                     f"{mean(cs, 'mixed'):.1f} | {change} |")

    said = []
    for labelled in sorted({lab for _, lab in groups}, reverse=True):
        parts = []
        for (method, lab), cs in groups.items():
            if lab != labelled:
                continue
            gains = [100 * (c["unlabelled"]["dice"] - c["stored"]["dice"]) for c in cs]
            up, n = sum(g > 0 for g in gains), len(cs)
            parts.append(f"{NAMES.get(method, method)} {mean(cs, 'stored'):.1f} -> {mean(cs, 'unlabelled'):.1f} "
                         f"({statistics.fmean(gains):+.1f}, higher in {up} of {n} run{'s' if n != 1 else ''}"
                         f"; mixed {mean(cs, 'mixed'):.1f})")
        said.append(f"- {_budget(labelled)}: " + "; ".join(parts) + ".")
    lines += ["", "## What re-estimating the statistics changes, per budget", "",
              f"{split} Dice %, as stored -> with the statistics re-estimated from unlabelled training images (mean "
              "change over the runs, how many runs it raised; the mixed batches' Dice).", "", *said]
    return "\n".join(lines) + "\n"


def checks_for(records: Sequence[RunRecord], score: ScoreSpec, spec: BatchNormSpec, device: str = "cpu",
               progress: bool = True) -> list[tuple[RunRecord, dict[str, Any]]]:
    """:func:`check_run` for every record whose run folder holds the scored run (``score.run``), in order."""
    from tqdm.auto import tqdm

    todo = [r for r in records if (r.path / score.run).is_dir()]
    out = []
    for r in tqdm(todo, desc="BatchNorm check", disable=not progress, leave=False):
        out.append((r, check_run(r.path, score, spec, device)))
    return out


def read_checks(records: Sequence[RunRecord]) -> list[tuple[RunRecord, dict[str, Any]]]:
    """The ``batchnorm.json`` of every record that has one (a grid or published folder), in order; never computes.
    A file that is unreadable or lacks a score is left out (what notebook 06 reads)."""
    out = []
    for r in records:
        try:
            data = json.loads((r.path / BATCHNORM).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and all(isinstance(data.get(k), dict) for k, _ in _WAYS):
            out.append((r, data))
    return out


def batchnorm_frame_rows(checks: Sequence[tuple[RunRecord, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """One row per run and way (``as stored``, ``unlabelled``, ``mixed``): method, labelled, seed, Dice % and
    structures missed, for a table or a plot."""
    from actionpp.replicate.logs import method_and_budget

    rows = []
    for r, c in checks:
        method, labelled = method_and_budget(r)
        for key, label in _WAYS:
            rows.append({"method": method, "labelled": labelled, "seed": r.axes.get("SEED", r.metrics.get("seed")),
                         "statistics": label, "dice": 100 * float(c[key]["dice"]),
                         "missed": int(c[key]["empty"]["missed"])})
    return rows

