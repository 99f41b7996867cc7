"""A grid's BatchNorm check: every finished run scored with re-estimated BatchNorm statistics (a diagnostic).

A grid asks for it with a ``batchnorm_check`` block (it needs a ``score`` block: the check reads the
checkpoint the runner scores; ``batchnorm_check: true`` takes the defaults, ``false`` is off)::

    batchnorm_check:
      split: val        # val (default) or train; never test: a diagnostic may suggest a change of protocol
      images: 400       # training images per re-estimation
      seed: 0

When the grid is published (``replicate --publish``), each finished run without a current
``batchnorm.json`` gets one: :func:`actionpp.bnstats.check_batchnorm`, written atomically into the
run folder under the run's lock (a run being trained is skipped and named), about a minute per
ACDC-lite run on one CPU thread, seconds on a GPU. ``batchnorm.md`` sets, per method and budget,
the split's Dice as stored beside the Dice with the statistics re-estimated from unlabelled images
and from batches composed as the run's fine-tuning batches (dropout off, then on), with one
runner-written line per budget. A run whose check fails is named there and left out; the publish goes on. The primary
numbers are untouched: they stay the stored checkpoint's.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from actionpp.atomic import atomic_write_text
from actionpp.replicate.score import ScoreSpec

if TYPE_CHECKING:  # grid.py parses the block: this module imports nothing that imports the grid at load time
    from actionpp.replicate.tables import RunRecord

__all__ = ["BATCHNORM", "BatchNormSpec", "RunBusy", "parse_batchnorm_spec", "check_run", "checks_for",
           "read_checks", "batchnorm_markdown", "batchnorm_frame_rows", "PER_BUDGET_HEADING"]

BATCHNORM = "batchnorm.json"
PER_BUDGET_HEADING = "## What re-estimating the statistics changes, per budget"  # batchnorm.md's summary lines
_WAYS = (("stored", "as stored"), ("unlabelled", "unlabelled"), ("training", "as in training"),
         ("training_dropout", "as in training, dropout on"))
_ORDER = ("supervised", "mean_teacher", "action", "actionpp")


class RunBusy(RuntimeError):
    """Another process holds the run folder's lock (it is being trained): its check waits for the next publish."""


@dataclass(frozen=True)
class BatchNormSpec:
    """What the check does (see the module docstring)."""

    split: str = "val"
    images: int = 400
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "images": self.images, "seed": self.seed}


def parse_batchnorm_spec(raw: Any, where: str) -> BatchNormSpec | None:
    """A grid's ``batchnorm_check`` block (``true``: the defaults, ``false`` / absent: None); anything malformed
    raises ValueError naming ``where`` and the key."""
    if raw is None or raw is False:
        return None
    if raw is True:
        return BatchNormSpec()
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: 'batchnorm_check' must be true, false or a mapping with keys split, images, seed")
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


def _key(folder: Path, checkpoint: Path, spec: BatchNormSpec) -> dict[str, Any]:
    """What a ``batchnorm.json`` must match to be this check of this checkpoint: the check's format and
    setting, and the checkpoint by its path inside the run folder, size and modification time (so a copied
    or moved grid folder keeps its checks, and a re-trained run gets a new one)."""
    from actionpp.bnstats import FORMAT

    st = checkpoint.stat()
    return {"format": FORMAT, "spec": spec.to_dict(), "checkpoint_in_run": checkpoint.relative_to(folder).as_posix(),
            "checkpoint_size": st.st_size, "checkpoint_mtime_ns": st.st_mtime_ns}


def _current(folder: Path, key: Mapping[str, Any]) -> dict[str, Any] | None:
    """The run's ``batchnorm.json`` when it holds the check ``key`` names (else None)."""
    try:
        data = json.loads((folder / BATCHNORM).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or any(data.get(k) != v for k, v in key.items()):
        return None
    if not all(isinstance(data.get(k), dict) for k, _ in _WAYS):
        return None
    return data


def _restored_check(folder: Path, score: ScoreSpec, spec: BatchNormSpec) -> dict[str, Any] | None:
    """The check a publish computed for a run restored from its published folder (``restored.json``,
    :mod:`actionpp.replicate.restore`; the checkpoint was not published), when it is this check's format and
    setting, of the checkpoint ``score`` names (``score.run``, and ``score.which`` unless ``auto``); else None."""
    from actionpp.bnstats import FORMAT
    from actionpp.replicate.restore import RESTORED

    if not (folder / RESTORED).is_file():
        return None
    data = _current(folder, {"format": FORMAT, "spec": spec.to_dict()})
    if data is None:
        return None
    ckpt = PurePosixPath(str(data.get("checkpoint_in_run", "")))
    if ckpt.parent != PurePosixPath(score.run) or (score.which != "auto" and ckpt.name != f"{score.which}.pt"):
        return None
    return data


def check_run(folder: str | Path, score: ScoreSpec, spec: BatchNormSpec, device: str = "auto") -> dict[str, Any]:
    """``folder/batchnorm.json`` for the checkpoint the runner scores (``score.run``, ``score.which``): read
    back when it is this check of that checkpoint file, otherwise computed and written (atomically) while
    holding the run folder's lock. A run restored from its published folder has no checkpoint: its published
    check is read back. Raises :class:`RunBusy` when another process holds it, ``CheckpointError`` when the
    folder holds neither the checkpoint nor a restored check."""
    from actionpp.atomic import remove_stale_temporaries
    from actionpp.bnstats import check_batchnorm
    from actionpp.checkpoint import CheckpointError, find_checkpoint
    from actionpp.replicate.run import run_lock

    folder = Path(folder)
    try:
        ckpt = find_checkpoint(folder / score.run, score.which)
    except CheckpointError:
        kept = _restored_check(folder, score, spec)
        if kept is not None:
            return kept
        raise
    done = _current(folder, _key(folder, ckpt, spec))
    if done is not None:
        return done
    with run_lock(folder) as held:
        if not held:
            raise RunBusy(f"{folder}: another process holds its lock (being trained); checked at a later publish")
        remove_stale_temporaries(folder, (BATCHNORM,))
        key = _key(folder, ckpt, spec)  # before the checkpoint is read: a file replaced meanwhile is not this one
        result = check_batchnorm(ckpt, split=spec.split, which=score.which, images=spec.images, seed=spec.seed,
                                 device=device)
        out = {**result, **key}
        atomic_write_text(folder / BATCHNORM, json.dumps(out, indent=1))
    return out


def checks_for(records: Sequence[RunRecord], score: ScoreSpec, spec: BatchNormSpec, device: str = "auto",
               progress: bool = True, problems: list[str] | None = None) -> list[tuple[RunRecord, dict[str, Any]]]:
    """:func:`check_run` for every record whose run folder holds the scored run (``score.run``), in order.
    A run whose check fails (or is being trained) is left out and, when ``problems`` is a list, named in it."""
    from tqdm.auto import tqdm

    todo = [r for r in records if (r.path / score.run).is_dir()]
    out = []
    for r in tqdm(todo, desc="BatchNorm check", disable=not progress, leave=False):
        try:
            out.append((r, check_run(r.path, score, spec, device)))
        except Exception as exc:  # noqa: BLE001 - one run's failure is reported, the others are checked
            if problems is not None:
                problems.append(f"{r.run_id}: {type(exc).__name__}: {exc}")
    return out


def read_checks(records: Sequence[RunRecord]) -> list[tuple[RunRecord, dict[str, Any]]]:
    """The ``batchnorm.json`` of every record that has one of this format (a grid or published folder), in
    order; never computes. A file that is unreadable, of another format or lacks a score is left out."""
    from actionpp.bnstats import FORMAT

    out = []
    for r in records:
        try:
            data = json.loads((r.path / BATCHNORM).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if (isinstance(data, dict) and data.get("format") == FORMAT
                and all(isinstance(data.get(k), dict) for k, _ in _WAYS)):
            out.append((r, data))
    return out


def _dice(check: Mapping[str, Any], key: str) -> float:
    v = check[key].get("dice")
    return 100 * float(v) if v is not None else math.nan


def _budget(labelled: int) -> str:
    return f"{labelled} labelled patient{'s' if labelled != 1 else ''}" if labelled >= 0 else "budget unknown"


def _method_order(method: str) -> tuple[int, str]:
    return (_ORDER.index(method) if method in _ORDER else len(_ORDER), method)


def batchnorm_markdown(checks: Sequence[tuple[RunRecord, Mapping[str, Any]]], problems: Sequence[str] = ()) -> str:
    """Markdown: per run and per method and budget, the split's mean Dice (and structures missed) as stored and
    with the statistics re-estimated; per budget one line with each method's change; the runs not checked."""
    from actionpp.replicate.logs import method_and_budget
    from actionpp.replicate.paired import NAMES

    title = "# BatchNorm statistics: stored against re-estimated"
    not_checked = (["", "## Not checked", "", *[f"- {p}" for p in problems]] if problems else [])
    if not checks:
        return "\n".join([title, "", "No run checked yet.", *not_checked]) + "\n"
    first = checks[0][1]
    split, images, batch = first.get("split"), first.get("images"), first.get("batch")
    lines = [
        title,
        "",
        f"A diagnostic, on the {split} split, of the checkpoint the runner scores (student). Each run is scored "
        "with BatchNorm's running statistics as trained (`as stored`: what every table reports), then with them "
        f"re-estimated from {images} unlabelled training images in batches of {batch} (`unlabelled`), then from "
        "about as many images in batches composed as the run's own fine-tuning batches (`as in training`: "
        "labelled and unlabelled images in one forward, in two, or labelled only, as its method and "
        "`train.finetune_forward` have it; per run below), then from the same batches with the network's "
        "dropout on, as a training forward runs it (`dropout on`); no augmentation, no gradient, the weights as "
        "trained (`actionpp.bnstats`). A large gain from `unlabelled` says the stored statistics, not the "
        "weights, are what fails on unseen patients; `as in training` near `unlabelled` says the composition "
        "of the batches is not why; `dropout on` near `as stored` says dropout is: in train mode it changes the "
        "variance the layers after it see, so statistics recorded with it on do not describe the network "
        "scored with it off. Dice in %, mean over the split's volumes; `missed`: structures (volume x class) "
        "predicted empty where the label has them. Never used for a choice; the primary numbers stay the "
        "stored checkpoint's.",
        "",
        "| run | Dice as stored | Dice unlabelled | Dice as in training | Dice dropout on | missed as stored | "
        "missed unlabelled | missed as in training | missed dropout on | training batches |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    for record, c in checks:
        groups.setdefault(method_and_budget(record), []).append(c)
        dice = [f"{_dice(c, k):.1f}" for k, _ in _WAYS]
        missed = [str(c[k]["empty"]["missed"]) for k, _ in _WAYS]
        lines.append(f"| {record.run_id} | " + " | ".join(dice + missed) + f" | {c.get('training_batches', '-')} |")

    def mean(cs: Sequence[Mapping[str, Any]], key: str) -> float:
        return statistics.fmean(_dice(c, key) for c in cs)

    def gains(cs: Sequence[Mapping[str, Any]]) -> list[float]:
        return [_dice(c, "unlabelled") - _dice(c, "stored") for c in cs]

    ordered = sorted(groups.items(), key=lambda kv: (-kv[0][1], _method_order(kv[0][0])))
    lines += ["", "## Per method and budget", "", "Mean Dice % over the runs (seeds); the change from `as stored` "
              "to `unlabelled` with its smallest and largest run in brackets.", "",
              "| method | labelled | runs | as stored | unlabelled | as in training | dropout on | "
              "change (unlabelled) |",
              "|---|---|---|---|---|---|---|---|"]
    for (method, labelled), cs in ordered:
        g = gains(cs)
        budget = str(labelled) if labelled >= 0 else "?"
        change = f"{statistics.fmean(g):+.1f} [{min(g):+.1f}, {max(g):+.1f}]"
        lines.append(f"| {method} | {budget} | {len(cs)} | {mean(cs, 'stored'):.1f} | {mean(cs, 'unlabelled'):.1f} | "
                     f"{mean(cs, 'training'):.1f} | {mean(cs, 'training_dropout'):.1f} | {change} |")

    said = []
    for labelled in sorted({lab for _, lab in groups}, reverse=True):
        parts = []
        for (method, lab), cs in ordered:
            if lab != labelled:
                continue
            g = gains(cs)
            up, n = sum(x > 0 for x in g), len(cs)
            parts.append(f"{NAMES.get(method, method)} {mean(cs, 'stored'):.1f} -> {mean(cs, 'unlabelled'):.1f} "
                         f"({statistics.fmean(g):+.1f}, higher in {up} of {n} run{'s' if n != 1 else ''}"
                         f"; as in training {mean(cs, 'training'):.1f}, dropout on {mean(cs, 'training_dropout'):.1f})")
        said.append(f"- {_budget(labelled)}: " + "; ".join(parts) + ".")
    lines += ["", PER_BUDGET_HEADING, "",
              f"{split} Dice %, as stored -> with the statistics re-estimated from unlabelled training images (mean "
              "change over the runs, how many runs it raised; the Dice with batches composed as in training, with "
              "dropout off and on).", "",
              *said, *not_checked]
    return "\n".join(lines) + "\n"


def batchnorm_frame_rows(checks: Sequence[tuple[RunRecord, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """One row per run and way (``as stored``, ``unlabelled``, ``as in training``, ``as in training, dropout on``):
    method, labelled, seed, Dice % and structures missed, for a table or a plot."""
    from actionpp.replicate.logs import method_and_budget

    rows = []
    for r, c in checks:
        method, labelled = method_and_budget(r)
        for key, label in _WAYS:
            rows.append({"method": method, "labelled": labelled, "seed": r.axes.get("SEED", r.metrics.get("seed")),
                         "statistics": label, "dice": _dice(c, key), "missed": int(c[key]["empty"]["missed"])})
    return rows
