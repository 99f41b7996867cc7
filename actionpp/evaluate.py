"""The evaluation protocol: predict every volume, score it per class, summarise, record how.

``evaluate(model, volumes, dataset="acdc")`` predicts as the dataset's spec says
(:class:`actionpp.data.spec.DatasetSpec`, ``evaluation``): ``slice-wise`` runs
``inference.predict_slices`` (ACDC: nearest resize of each slice to ``size``, back
again), ``sliding-window`` runs ``inference.sliding_window`` (LA: 112 x 112 x 80
windows, strides 18 / 18 / 4); it scores each 3D volume with
``metrics.volume_metrics`` and summarises with ``metrics.summarise``. The returned
``EvalResult.protocol`` states the split, the resize / window settings, the distance
units and the empty-mask policy, so every reported number carries its protocol.
Optionally the predictions are written as NIfTI (with the volume's spacing) for
ITK-SNAP or 3D Slicer.

Taught in notebooks/04_train.ipynb.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from actionpp.atomic import atomic_path, check_file, check_folder, claim_folder, record_files, written_unchanged
from actionpp.data.spec import DatasetSpec, dataset_names, dataset_spec
from actionpp.inference import predict_slices, sliding_window
from actionpp.metrics import POLICIES, summarise, volume_metrics

__all__ = [
    "EvalResult",
    "RunEvaluation",
    "evaluate",
    "evaluate_run",
    "evaluate_checkpoint",
    "summarise_result",
    "class_name",
    "save_nifti",
    "DATASETS",
    "CLASS_NAMES",
]

class _Registered(Mapping[str, Any]):
    """A read-only view of the registered datasets (:mod:`actionpp.data.spec`), one value per spec."""

    def __init__(self, value: Callable[[DatasetSpec], Any], what: str) -> None:
        self._value, self.__doc__ = value, what

    def __getitem__(self, name: str) -> Any:
        try:
            return self._value(dataset_spec(name))
        except ValueError:
            raise KeyError(name) from None

    def __iter__(self) -> Iterator[str]:
        return iter(dataset_names())

    def __len__(self) -> int:
        return len(dataset_names())


DATASETS: Mapping[str, int] = _Registered(lambda s: s.num_classes, "dataset -> classes (background included)")
CLASS_NAMES: Mapping[str, dict[int, str]] = _Registered(lambda s: s.foreground, "dataset -> {index: foreground name}")


def class_name(dataset: str, c: Any) -> str:
    """Name of foreground class ``c`` (an int or its string) of ``dataset``: ``("acdc", 1)`` -> ``"RV"``.

    Anything that is not a known class index of the dataset is returned as a string unchanged.
    """
    names = CLASS_NAMES.get(dataset, {})
    key = str(c)
    return names.get(int(key), key) if key.isdigit() else key


def _json_safe(obj: Any) -> Any:
    """NaN / inf -> None, numpy scalars -> Python, dict keys -> str: strict JSON."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


@dataclass
class EvalResult:
    """Outcome of ``evaluate``.

    ``per_volume``: one dict per volume, ``{"name", "shape", "metrics": {class: {...}}}``
    (``metrics.volume_metrics`` output). ``summary``: ``metrics.summarise`` output
    (``per_class``, ``mean``, ``empty`` counts, ``n_volumes``). ``protocol``: how
    the numbers were obtained.
    """

    per_volume: list[dict[str, Any]]
    summary: dict[str, Any]
    protocol: dict[str, Any] = field(default_factory=dict)

    @property
    def mean_dice(self) -> float:
        """Mean over foreground classes of the per-class mean Dice."""
        return float(self.summary["mean"]["dice"])

    def to_json(self, path: str | Path | None = None) -> str:
        """Strict JSON (NaN written as null); also written to ``path`` when given."""
        text = json.dumps(
            _json_safe({"protocol": self.protocol, "summary": self.summary, "per_volume": self.per_volume}),
            indent=2,
        )
        if path is not None:
            Path(path).write_text(text)
        return text


def save_nifti(label: np.ndarray, path: str | Path, spacing: Sequence[float] | None = None) -> Path:
    """Write a label array as NIfTI (uint8) with a diagonal affine from ``spacing`` (mm; 1 if None)."""
    import nibabel as nib

    sp = list(spacing) if spacing is not None else [1.0] * label.ndim
    if len(sp) != label.ndim:
        raise ValueError(f"spacing {tuple(sp)} does not match a label of shape {label.shape}")
    affine = np.diag([*sp, 1.0] if label.ndim == 3 else [*sp, 1.0, 1.0])
    img = nib.Nifti1Image(np.asarray(label, dtype=np.uint8), affine)
    img.header.set_zooms(tuple(float(s) for s in sp))
    path = Path(path)
    with atomic_path(path) as tmp:
        staged = tmp.with_name(tmp.name + "".join(path.suffixes))  # nibabel picks the format by the suffix
        try:
            nib.save(img, str(staged))
            os.replace(staged, tmp)
        finally:
            staged.unlink(missing_ok=True)
    return path


PREDICTIONS_OWNER = "evaluate"  # the marker of a --save-predictions folder: .actionpp-evaluate.json


def _check_predictions(out_dir: Path, names: Sequence[str], overwrite: bool) -> None:
    """Refuse, before anything is predicted, a predictions folder that ``evaluate`` did not create, and a
    prediction file in it that it did not write (or wrote but was not asked to replace: ``overwrite``)."""
    check_folder(out_dir, PREDICTIONS_OWNER)
    for name in names:
        check_file(out_dir / name, overwrite=overwrite, what="a prediction written by actionpp evaluate",
                   ours=lambda f: written_unchanged(out_dir, PREDICTIONS_OWNER, f))


def evaluate(
    model: nn.Module,
    volumes: Iterable[Any],
    dataset: str = "acdc",
    size: int = 256,
    patch: Sequence[int] = (112, 112, 80),
    stride: Sequence[int] = (18, 18, 4),
    num_classes: int | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    save_predictions_dir: str | Path | None = None,
    policy: str = "penalty",
    split: str = "unspecified",
    batch_size: int | None = None,
    overwrite: bool = False,
) -> EvalResult:
    """Predict and score every volume.

    ``volumes``: objects with ``name``, ``image``, ``label``, ``spacing``
    (``actionpp.data.Volume``): 2D datasets ``(S, H, W)`` stacks (ACDC), 3D ``(X, Y, Z)`` (LA).
    ``dataset``: a registered dataset; its spec says slice-wise or sliding window.
    ``num_classes``: default the dataset's (ACDC 4, LA 2). ``batch_size``: slices (default
    16) or windows (default 4) per forward. ``split``: a label recorded in the
    protocol (e.g. ``"val.list"``). Raises ``ValueError`` for an unknown dataset
    or policy, an image / label shape mismatch, or no volumes.

    ``save_predictions_dir``: ``<name>_pred.nii.gz`` per volume, into a folder this function created
    (its ``.actionpp-evaluate.json`` marker lists the files with their SHA-256) or an empty one; a file
    it wrote is replaced only with ``overwrite`` and only if unchanged since. Anything else raises
    :class:`~actionpp.atomic.OwnershipError` naming the path before the first volume is predicted.
    """
    from tqdm.auto import tqdm

    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {dataset!r}")
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    spec = dataset_spec(dataset)
    k = spec.num_classes if num_classes is None else int(num_classes)
    vols = list(volumes)
    if not vols:
        raise ValueError("evaluate got no volumes")
    out_dir = Path(save_predictions_dir) if save_predictions_dir is not None else None
    if out_dir is not None:
        names = [f"{vol.name}_pred.nii.gz" for vol in vols]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"volumes share a name ({dup[0]}): their predictions would overwrite each other")
        _check_predictions(out_dir, names, overwrite)
        claim_folder(out_dir, PREDICTIONS_OWNER)
    per_volume: list[dict[str, Any]] = []
    for vol in tqdm(vols, desc=f"evaluate {dataset}", disable=not progress, leave=False):
        image, label = np.asarray(vol.image), np.asarray(vol.label)
        if image.shape != label.shape or image.ndim != 3:
            raise ValueError(f"volume {vol.name}: image {image.shape} and label {label.shape} must be equal 3D shapes")
        if spec.evaluation == "slice-wise":
            pred = predict_slices(model, image, size=size, batch_size=batch_size or 16, device=device)
        else:
            pred, _ = sliding_window(
                model, image, patch=patch, stride=stride, num_classes=k, device=device, batch_size=batch_size or 4
            )
        spacing = tuple(vol.spacing) if getattr(vol, "spacing", None) is not None else None
        metrics = volume_metrics(pred, label.astype(np.int64), k, spacing=spacing, policy=policy)
        per_volume.append({"name": str(vol.name), "shape": list(image.shape), "metrics": metrics})
        if out_dir is not None:
            record_files(out_dir, PREDICTIONS_OWNER, [save_nifti(pred, out_dir / f"{vol.name}_pred.nii.gz", spacing)])
    summary = summarise(per_volume)
    inference: dict[str, Any]
    if spec.evaluation == "slice-wise":
        inference = {
            "method": f"slice-wise ({spec.layout})",
            "resize": f"each slice to {size} x {size} with scipy.ndimage.zoom order 0, prediction back with order 0",
            "metrics_on": "the stacked 3D volume",
        }
    else:
        inference = {
            "method": f"sliding window ({spec.layout})",
            "patch": list(patch),
            "stride": list(stride),
            "aggregation": "softmax averaged over windows, zero padding to the patch size",
        }
    protocol = {
        "dataset": dataset,
        "split": split,
        "n_volumes": len(vols),
        "num_classes": k,
        "class_names": spec.foreground if num_classes is None else {},
        "inference": inference,
        "distance_units": "voxels (*_vox, the field's convention) and mm (*_mm, unknown without spacing)",
        "hd95": "95th percentile of pooled pred->gt and gt->pred surface distances (medpy hd95)",
        "asd": "mean pred->gt surface distance (medpy asd, as SSL4MIS / UA-MT)",
        "empty_policy": policy,
        "model_mode": "eval (BatchNorm running statistics, no dropout)",
    }
    return EvalResult(per_volume=per_volume, summary=summary, protocol=protocol)


def summarise_result(result: EvalResult, dataset: str) -> dict[str, Any]:
    """Compact JSON-safe summary of an :class:`EvalResult`: mean metrics, per-class Dice, empty masks.

    ``{"dice", "jaccard", "hd95_vox", "asd_vox", "hd95_mm", "asd_mm", "dice_per_class": {name: ...},
    "empty": {...}, "n_volumes"}`` (None where a mean is not finite). This is what a run's
    validation log lines and ``metrics.json`` hold.
    """
    s = result.summary
    out: dict[str, Any] = {}
    for key in ("dice", "jaccard", "hd95_vox", "asd_vox", "hd95_mm", "asd_mm"):
        v = s["mean"].get(key)
        out[key] = float(v) if v is not None and math.isfinite(v) else None
    out["dice_per_class"] = {class_name(dataset, c): float(st["dice"]) for c, st in s["per_class"].items()}
    out["empty"] = dict(s.get("empty", {}))
    out["n_volumes"] = int(s.get("n_volumes", len(result.per_volume)))
    return out


@dataclass
class RunEvaluation:
    """A checkpoint scored on a split: what :func:`evaluate_run` returns.

    ``network`` (eval mode) and ``volumes`` are kept so a caller can draw predictions
    without loading them again; ``result`` is the full :class:`EvalResult`.
    """

    checkpoint: Path
    config: Any
    root: Path
    split: str
    volumes: list[Any]
    network: nn.Module
    result: EvalResult
    missing: list[str] = field(default_factory=list)  # listed volumes absent from the data (``partial`` only)
    note: str | None = None  # the checkpoint scored is not the one asked for, and why (no best.pt: last.pt)
    iteration: int | None = None  # the training iteration the checkpoint was written at

    @property
    def summary(self) -> dict[str, Any]:
        return summarise_result(self.result, self.config.data.dataset)


def evaluate_run(
    checkpoint: str | Path,
    data: str | None,
    split: str = "val",
    which: str = "auto",
    device: str | torch.device = "auto",
    save_predictions: str | Path | None = None,
    progress: bool = False,
    partial: bool = False,
    weights: str = "student",
    overwrite: bool = False,
) -> RunEvaluation:
    """Score a checkpoint (or run directory) on ``split`` of ``data`` (folder, pack, ``phantom`` or ``shared``;
    None: the run's own ``data.root``).

    ``which``: with a run directory, ``best``, ``last`` or ``auto`` (the run's ``eval.select``).
    ``weights``: ``student`` (what the tables report) or ``teacher`` (the EMA teacher of the same checkpoint).
    The protocol is the run's own (its ``data.size``, crop and class count). Refused with a
    :class:`~actionpp.data.DataError` naming the data: a dataset of another kind or class count
    than the checkpoint's, a split the data do not list, and (unless ``partial``) a split whose
    listed volumes are not all present. With ``partial`` the present ones are scored and
    ``RunEvaluation.missing`` names the others. ``save_predictions`` / ``overwrite``: see :func:`evaluate`
    (checked before the model runs). A run without ``best.pt`` asked for ``best`` is scored at ``last.pt``
    only when it does not validate, and ``RunEvaluation.note`` says so
    (:func:`actionpp.checkpoint.checkpoint_choice`).
    """
    from actionpp.checkpoint import checkpoint_choice
    from actionpp.data.core import DataError
    from actionpp.data.roots import open_dataset, resolve_data_root
    from actionpp.distributed import resolve_device
    from actionpp.models.segmodel import load_segmodel

    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, got {split!r}")
    path, note = checkpoint_choice(checkpoint, which)
    dev = resolve_device(device) if isinstance(device, str) else device
    loaded = load_segmodel(path, device=dev, weights=weights, heads=False)  # the bare backbone, as load_model
    net, cfg, iteration = loaded.model.net, loaded.config, loaded.state.get("iteration")
    del loaded  # the optimizer's state and the rest of the checkpoint are not kept
    root = resolve_data_root(cfg.data.root if data is None else data, cfg)
    ds = open_dataset(root)
    if ds.kind != cfg.data.dataset or ds.num_classes != cfg.data.num_classes:
        raise DataError(
            f"{root}: holds {ds.kind} data ({ds.num_classes} classes), but {path} was trained on "
            f"{cfg.data.dataset} ({cfg.data.num_classes} classes)"
        )
    if not ds.has_split(split):
        raise DataError(f"{root}: has no {split}.list (the {split} split is not part of this copy of the data)")
    listed = list(ds.volumes(split))
    present = list(ds.available(split))
    missing = [n for n in listed if n not in set(present)]
    if missing and not partial:
        raise DataError(
            f"{root}: {len(missing)} of the {len(listed)} volumes listed in {split}.list are absent "
            f"(first: {missing[0]}); score the present ones with --partial"
        )
    if not present:
        raise DataError(f"{root}: none of the {len(listed)} volumes listed in {split}.list is present")
    if save_predictions is not None:
        _check_predictions(Path(save_predictions), [f"{n}_pred.nii.gz" for n in present], overwrite)
    vols = [ds.read_volume(n) for n in present]
    with torch.no_grad():
        res = evaluate(
            net,
            vols,
            dataset=cfg.data.dataset,
            size=cfg.data.size,
            patch=cfg.data.crop,
            num_classes=cfg.data.num_classes,
            device=dev,
            progress=progress,
            split=split,
            save_predictions_dir=save_predictions,
            overwrite=overwrite,
        )
    return RunEvaluation(path, cfg, Path(root), split, vols, net, res, missing, note, iteration)


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: str,
    split: str = "val",
    which: str = "auto",
    device: str = "auto",
    save_predictions: str | Path | None = None,
    progress: bool = False,
    partial: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """:func:`evaluate_run` as JSON-safe data (what ``actionpp evaluate --json`` prints).

    Returns ``{"checkpoint", "note", "data", "split", "volumes", "missing", "summary", "result"}`` where
    ``result`` is the full :class:`EvalResult` as JSON-safe data, ``missing`` the listed volumes that
    were absent (only with ``partial``) and ``note`` why the checkpoint is not the one asked for (or None).
    """
    ev = evaluate_run(checkpoint, data, split, which, device, save_predictions, progress, partial,
                      overwrite=overwrite)
    return {
        "checkpoint": str(ev.checkpoint),
        "note": ev.note,
        "data": str(ev.root),
        "split": split,
        "volumes": len(ev.volumes),
        "missing": list(ev.missing),
        "summary": ev.summary,
        "result": json.loads(ev.result.to_json()),
    }
