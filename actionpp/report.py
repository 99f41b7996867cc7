"""The ``metrics.json`` of one training run: written by notebooks/04_train.ipynb, read by the tables.

:func:`run_metrics` builds it from the run's config, its :class:`actionpp.train.RunResult`
and an evaluation of the selected checkpoint; :func:`check_run_metrics` validates one read
back (the replication runner re-runs a run whose file is missing, unreadable or
incomplete, and never aggregates it).

Taught in notebooks/04_train.ipynb and notebooks/06_replication_report.ipynb.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only: the report is read without importing training
    from actionpp.config import Config
    from actionpp.evaluate import EvalResult
    from actionpp.train import RunResult

__all__ = ["run_metrics", "check_run_metrics", "read_run_metrics", "RunMetricsError", "REQUIRED_KEYS"]


_POLICY_TEXT = {
    "penalty": (
        "missed or spurious structure: Dice 0, HD95 / ASD = the volume diagonal; both empty: Dice 1, distances 0"
    ),
    "nan": "missed or spurious structure: Dice 0, distances NaN (left out of the means, counted); both empty: Dice 1",
    "ssl4mis": "as SSL4MIS: empty prediction scores 0 on all four metrics (a missed structure gets HD95 0)",
}


def run_metrics(cfg: Config, result: RunResult, evaluation: EvalResult, eval_split: str,
                data_root: str | Path) -> dict[str, Any]:
    """The ``metrics.json`` of one training run, in the schema the results tables read.

    ``cfg``: the run's :class:`actionpp.config.Config`; ``result``: the engine's :class:`~actionpp.train.RunResult`;
    ``evaluation``: an :class:`actionpp.evaluate.EvalResult` of the selected checkpoint on
    ``eval_split``; ``data_root``: the resolved dataset folder (for the split description, in the
    words of the dataset's spec, ``DatasetSpec.describe``). Per-class numbers are means over the
    evaluated volumes (Dice / Jaccard in [0, 1], HD95 / ASD in voxels; ``hd95_mm`` / ``asd_mm`` in mm,
    NaN without spacing); ``*_mean`` are the means over classes. ``protocol`` states how every number
    was obtained.
    """
    from actionpp.data.roots import open_dataset
    from actionpp.data.spec import dataset_spec

    dataset = cfg.data.dataset
    spec = dataset_spec(dataset)
    names = spec.foreground
    summ = evaluation.summary
    per_class = summ["per_class"]
    cls_keys = sorted(per_class, key=lambda c: int(c) if str(c).isdigit() else str(c))
    classes = [str(names.get(int(c), c)) if str(c).isdigit() else str(c) for c in cls_keys]

    def block(key: str) -> dict[str, float]:
        return {n: float(per_class[c][key]) for n, c in zip(classes, cls_keys)}

    described, n_labelled, labelled_txt = spec.describe(open_dataset(data_root), cfg.data)
    split = f"{cfg.data.root} ({Path(data_root).name}): {described}"
    pre, fine = cfg.pretrain_iters, cfg.finetune_iters
    val_every = f"every {cfg.eval.every} iterations" if cfg.eval.every else "at the end"
    protocol = {
        "split": split,
        "eval_split": f"{eval_split} ({summ['n_volumes']} volumes)",
        "labelled_slices": labelled_txt,
        "iterations": f"{pre} pre-training + {fine} fine-tuning" if pre else f"{fine} (no pre-training)",
        "model_selection": f"{result.selected} checkpoint (validation Dice on {cfg.data.val_split}, {val_every})",
        "empty_mask_policy": _POLICY_TEXT.get(
            evaluation.protocol.get("empty_policy", ""), str(evaluation.protocol.get("empty_policy"))
        ),
        "distance_units": "voxels (HD95, ASD); *_mm columns in mm",
        "input": (
            f"slices resized to {cfg.data.size} x {cfg.data.size} (nearest), metrics on the 3D volume"
            if spec.evaluation == "slice-wise"
            else f"sliding window {list(cfg.data.crop)}"
        ),
    }
    mean = summ["mean"]
    best = result.best or {}
    return {
        "dataset": dataset,
        "data": cfg.data.root if cfg.data.root in ("phantom", "shared") else Path(data_root).name,
        "method": cfg.method.name,
        "switches": {k: bool(v) for k, v in vars(cfg.method).items() if isinstance(v, bool)},
        "assignment": cfg.saacl.assignment,
        "labelled_patients": cfg.data.labelled,
        "labelled_slices": n_labelled,
        "seed": cfg.runtime.seed,
        "config_hash": result.config_hash,
        "classes": classes,
        "dice": block("dice"),
        "jaccard": block("jaccard"),
        "hd95": block("hd95_vox"),
        "asd": block("asd_vox"),
        "hd95_mm": block("hd95_mm"),
        "asd_mm": block("asd_mm"),
        "dice_mean": float(mean["dice"]),
        "jaccard_mean": float(mean["jaccard"]),
        "hd95_mean": float(mean["hd95_vox"]),
        "asd_mean": float(mean["asd_vox"]),
        "empty": dict(summ.get("empty", {})),
        "val_best_dice": best.get("dice"),
        "val_best_iteration": result.best_iteration,
        "val_best": result.best,  # validation summary of the best checkpoint (selection split; optimistic)
        "val_last": result.final,  # validation summary of the last checkpoint
        "iterations": result.iterations,
        "train_seconds": result.seconds,
        "its_per_s": dict(result.its_per_s),
        "reused_finished_run": bool(result.cached),
        "protocol": protocol,
    }


# ---------------------------------------------------------------------------------------------
# Reading one back
# ---------------------------------------------------------------------------------------------

#: Keys every run's ``metrics.json`` must hold for the results tables (and their types).
REQUIRED_KEYS: dict[str, type | tuple[type, ...]] = {
    "dataset": str,
    "classes": list,
    "dice": dict,
    "jaccard": dict,
    "hd95": dict,
    "asd": dict,
    "protocol": dict,
}


class RunMetricsError(ValueError):
    """A run's ``metrics.json`` is missing, unreadable or incomplete; the message names the file."""


def check_run_metrics(data: Any) -> list[str]:
    """Problems that keep ``data`` (a parsed ``metrics.json``) out of the tables; empty when it is fine.

    Every :data:`REQUIRED_KEYS` entry present with its type, at least one class, and a finite
    number (or null) for every class in each of ``dice``, ``jaccard``, ``hd95``, ``asd``;
    Dice and Jaccard within [0, 1].
    """
    if not isinstance(data, Mapping):
        return [f"top level is {type(data).__name__}, not a mapping"]
    problems = []
    for key, tp in REQUIRED_KEYS.items():
        if key not in data:
            problems.append(f"missing {key!r}")
        elif not isinstance(data[key], tp) or isinstance(data[key], bool):
            problems.append(f"{key!r} is {type(data[key]).__name__}")
    if problems:
        return problems
    classes = data["classes"]
    if not classes:
        problems.append("'classes' is empty")
    for block in ("dice", "jaccard", "hd95", "asd"):
        for c in classes:
            v = data[block].get(str(c))
            if v is None:
                if str(c) not in data[block]:
                    problems.append(f"{block!r} has no value for class {c!r}")
                continue
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(float(v)):
                problems.append(f"{block}[{c!r}] = {v!r} is not a finite number")
            elif block in ("dice", "jaccard") and not 0.0 <= float(v) <= 1.0:
                problems.append(f"{block}[{c!r}] = {v!r} is outside [0, 1]")
    return problems


def read_run_metrics(path: str | Path) -> dict[str, Any]:
    """Read and validate a run's ``metrics.json``; :class:`RunMetricsError` names the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise RunMetricsError(f"{path}: missing")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise RunMetricsError(f"{path}: unreadable ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise RunMetricsError(f"{path}: not valid JSON (truncated?): {exc.msg} at line {exc.lineno}") from exc
    problems = check_run_metrics(data)
    if problems:
        raise RunMetricsError(f"{path}: " + "; ".join(problems))
    return data
