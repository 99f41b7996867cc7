"""Dice, Jaccard, HD95 and ASD per class per 3D volume, with an explicit empty-mask policy.

Definitions (those of medpy, through which SSL4MIS and UA-MT -- and so ACTION,
ACTION++ and the papers that compare with them -- compute their numbers):

- surface of a mask = its voxels that have a 6-connected (2D: 4-connected)
  neighbour outside it (``mask & ~binary_erosion(mask)``; the array border counts
  as outside);
- ``d(A -> B)`` = for every surface voxel of A, the Euclidean distance to the
  nearest surface voxel of B (in voxels, or in mm when a spacing is given);
- ``hd95`` = the 95th percentile (linear interpolation) of the *pooled* distances
  ``d(pred -> gt)`` and ``d(gt -> pred)`` (medpy ``hd95``). MONAI's
  ``compute_hausdorff_distance(percentile=95)`` instead takes the larger of the two
  directed 95th percentiles, which is >= the pooled value; we use MONAI only for
  the surfaces and distances and pool like medpy;
- ``asd`` = the mean of ``d(pred -> gt)`` (medpy ``asd(pred, gt)``, what the
  SSL4MIS and UA-MT test scripts call): directed, not the symmetric ASSD;
- ``dice`` = 2|P & G| / (|P| + |G|), ``jaccard`` = |P & G| / |P | G|.

Distances are reported in voxels (``*_vox``: the field's convention, every
published ACDC / LA number) and in mm (``*_mm``: NaN when no spacing is known).

Empty-mask policy (``policy="penalty"``, the default), per (volume, class):

| ground truth | prediction | dice, jaccard | hd95, asd |
| --- | --- | --- | --- |
| empty | empty | 1 (correct absence) | 0 |
| empty | non-empty ("spurious") | 0 | the volume diagonal |
| non-empty | empty ("missed") | 0 | the volume diagonal |

The diagonal ``sqrt(sum(((n_i - 1) * s_i)^2))`` is the largest distance two
voxels of the volume can have: a missed or invented structure scores worse than
any prediction that finds it, every pair enters the means (no NaN), and
``summarise`` counts each kind. This is the BraTS convention (a fixed worst-case
value), with the volume's own diagonal instead of a constant.

How it differs: SSL4MIS scores an empty prediction ``dice = 0, hd95 = 0``
whatever the ground truth -- a missed structure gets the *best* possible HD95 --
and its test script lets medpy raise on an empty mask; medpy raises
``RuntimeError`` whenever either mask is empty (and gives Dice 0 for two empty
masks). ``policy="ssl4mis"`` reproduces SSL4MIS for apples-to-apples
comparisons (empty prediction: all four metrics 0; empty ground truth with a
prediction: dice 0, distances NaN where medpy would raise), and ``policy="nan"``
gives NaN distances for either one-sided case (excluded from the means, still
counted) with the table's first row unchanged.

Taught in notebooks/04_train.ipynb.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = [
    "POLICIES",
    "METRIC_KEYS",
    "dice_jaccard",
    "surface_distances",
    "volume_metrics",
    "summarise",
    "mean_std",
    "time_backends",
]

POLICIES = ("penalty", "nan", "ssl4mis")
METRIC_KEYS = ("dice", "jaccard", "hd95_vox", "asd_vox", "hd95_mm", "asd_mm")


# ---------------------------------------------------------------- overlap


def dice_jaccard(pred_mask: np.ndarray, gt_mask: np.ndarray) -> tuple[float, float]:
    """Dice and Jaccard of two boolean masks; both empty -> ``(1.0, 1.0)``."""
    p = np.asarray(pred_mask, dtype=bool)
    g = np.asarray(gt_mask, dtype=bool)
    inter = int(np.count_nonzero(p & g))
    sp, sg = int(np.count_nonzero(p)), int(np.count_nonzero(g))
    if sp + sg == 0:
        return 1.0, 1.0
    return 2.0 * inter / (sp + sg), inter / (sp + sg - inter)


# ---------------------------------------------------------------- surface distances


def _crop_box(a: np.ndarray, b: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of ``a | b`` grown by one voxel (clipped to the array)."""
    idx = np.nonzero(a | b)
    return tuple(slice(max(int(i.min()) - 1, 0), min(int(i.max()) + 2, n)) for i, n in zip(idx, a.shape))


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask)  # cross-shaped structure, border counts as outside


def _distances_scipy(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Own implementation: Euclidean distance transform of each surface's complement (medpy's method).

    Cropped to the union's bounding box plus one voxel, which changes nothing:
    every surface voxel lies inside it, and the erosion sees the same neighbours.
    """
    box = _crop_box(pred, gt)
    p, g = _surface(pred[box]), _surface(gt[box])
    d_pg = ndimage.distance_transform_edt(~g, sampling=spacing)[p]
    d_gp = ndimage.distance_transform_edt(~p, sampling=spacing)[g]
    return d_pg.astype(np.float64), d_gp.astype(np.float64)


def _distances_monai(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None
) -> tuple[np.ndarray, np.ndarray]:
    """MONAI's surfaces (same erosion) and nearest-surface distances (KD-tree on CPU)."""
    import torch
    from monai.metrics.utils import get_edge_surface_distance

    with warnings.catch_warnings():  # MONAI 1.5+ warns about its own internal use of a deprecated argument
        warnings.simplefilter("ignore", FutureWarning)
        _, dists, _ = get_edge_surface_distance(
            torch.from_numpy(np.ascontiguousarray(pred)),
            torch.from_numpy(np.ascontiguousarray(gt)),
            spacing=None if spacing is None else list(spacing),
            symmetric=True,
            warn_empty=False,
        )
    d_pg, d_gp = dists  # type: ignore[misc]
    return np.asarray(d_pg, dtype=np.float64), np.asarray(d_gp, dtype=np.float64)


def surface_distances(
    pred_mask: np.ndarray,
    gt_mask: np.ndarray,
    spacing: Sequence[float] | None = None,
    backend: str = "monai",
) -> tuple[np.ndarray, np.ndarray]:
    """``(d(pred -> gt), d(gt -> pred))``: distances from each surface voxel to the other surface.

    Both masks must be non-empty boolean arrays of the same shape (2D or 3D).
    ``backend``: ``"monai"`` (KD-tree, the default) or ``"scipy"`` (distance
    transform); they agree to float precision (tests/test_metrics.py).
    """
    p = np.asarray(pred_mask, dtype=bool)
    g = np.asarray(gt_mask, dtype=bool)
    if p.shape != g.shape:
        raise ValueError(f"pred {p.shape} and gt {g.shape} differ in shape")
    if not p.any() or not g.any():
        raise ValueError("surface distances need two non-empty masks (see the empty-mask policy)")
    if backend == "monai":
        return _distances_monai(p, g, spacing)
    if backend == "scipy":
        return _distances_scipy(p, g, spacing)
    raise ValueError(f"backend must be 'monai' or 'scipy', got {backend!r}")


def _hd95_asd(d_pg: np.ndarray, d_gp: np.ndarray) -> tuple[float, float]:
    return float(np.percentile(np.concatenate([d_pg, d_gp]), 95)), float(d_pg.mean())


# ---------------------------------------------------------------- per volume


def _check_spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...] | None:
    if spacing is None:
        return None
    sp = tuple(float(s) for s in spacing)
    if len(sp) != ndim or any(not math.isfinite(s) or s <= 0 for s in sp):
        raise ValueError(f"spacing must be {ndim} positive numbers, got {tuple(spacing)}")
    return sp


def volume_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    num_classes: int,
    spacing: Sequence[float] | None = None,
    policy: str = "penalty",
    backend: str = "monai",
) -> dict[int, dict[str, Any]]:
    """Metrics of every foreground class ``1 .. num_classes - 1`` of one volume.

    ``pred``, ``gt``: integer label arrays of the same shape, 2D or 3D (an ACDC
    frame is its stack of slices ``(S, H, W)``; metrics are computed on the 3D
    stack, as SSL4MIS does). ``spacing``: voxel size in mm, same axis order.
    Returns ``{c: {dice, jaccard, hd95_vox, asd_vox, hd95_mm, asd_mm, pred_empty,
    gt_empty}}`` with floats and bools; see the module docstring for the policies.
    """
    p = np.asarray(pred)
    g = np.asarray(gt)
    if p.shape != g.shape:
        raise ValueError(f"pred {p.shape} and gt {g.shape} differ in shape")
    if p.ndim not in (2, 3):
        raise ValueError(f"volume_metrics expects a 2D or 3D label array, got shape {p.shape}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background + 1), got {num_classes}")
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    for what, a in (("pred", p), ("gt", g)):
        if not np.issubdtype(a.dtype, np.integer) and a.dtype != bool:
            raise ValueError(f"{what} must be an integer label array, got dtype {a.dtype}")
        if a.size and (int(a.min()) < 0 or int(a.max()) >= num_classes):
            raise ValueError(f"{what} labels span [{int(a.min())}, {int(a.max())}], outside [0, {num_classes - 1}]")
    sp = _check_spacing(spacing, p.ndim)
    diag_vox = math.sqrt(sum((n - 1) ** 2 for n in p.shape))
    diag_mm = math.sqrt(sum(((n - 1) * s) ** 2 for n, s in zip(p.shape, sp))) if sp else math.nan
    isotropic = sp is not None and len(set(sp)) == 1

    out: dict[int, dict[str, Any]] = {}
    for c in range(1, num_classes):
        pm, gm = p == c, g == c
        pe, ge = not pm.any(), not gm.any()
        dice, jac = dice_jaccard(pm, gm)
        r: dict[str, Any] = {"dice": dice, "jaccard": jac}
        if not pe and not ge:
            d_pg, d_gp = surface_distances(pm, gm, None, backend)
            r["hd95_vox"], r["asd_vox"] = _hd95_asd(d_pg, d_gp)
            if sp is None:
                r["hd95_mm"] = r["asd_mm"] = math.nan
            elif isotropic:  # distances scale exactly
                r["hd95_mm"], r["asd_mm"] = r["hd95_vox"] * sp[0], r["asd_vox"] * sp[0]
            else:
                r["hd95_mm"], r["asd_mm"] = _hd95_asd(*surface_distances(pm, gm, sp, backend))
        elif policy == "ssl4mis":
            if pe:  # SSL4MIS: an empty prediction scores 0 on everything
                r.update(dice=0.0, jaccard=0.0, hd95_vox=0.0, asd_vox=0.0, hd95_mm=0.0, asd_mm=0.0)
            else:  # empty gt, non-empty pred: medpy would raise
                r.update(hd95_vox=math.nan, asd_vox=math.nan, hd95_mm=math.nan, asd_mm=math.nan)
        elif pe and ge:
            r.update(hd95_vox=0.0, asd_vox=0.0, hd95_mm=0.0 if sp else math.nan, asd_mm=0.0 if sp else math.nan)
        elif policy == "penalty":
            r.update(hd95_vox=diag_vox, asd_vox=diag_vox, hd95_mm=diag_mm, asd_mm=diag_mm)
        else:  # "nan"
            r.update(hd95_vox=math.nan, asd_vox=math.nan, hd95_mm=math.nan, asd_mm=math.nan)
        r["pred_empty"], r["gt_empty"] = pe, ge
        out[c] = r
    return out


# ---------------------------------------------------------------- summary


def mean_std(values: Iterable[float | None], ddof: int = 0) -> tuple[float, float, int]:
    """``(mean, standard deviation, n)`` of the finite values (None, NaN and inf are left out).

    ``ddof``: 0 for the spread of a population (over the volumes of one evaluation), 1 for
    the sample standard deviation (over seeds, the field's "mean +- std of 3 runs"). The
    standard deviation is NaN when fewer than ``ddof + 1`` values remain; everything is NaN
    (n = 0) when none does.
    """
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan, 0
    std = float(v.std(ddof=ddof)) if v.size > ddof else math.nan
    return float(v.mean()), std, int(v.size)


def summarise(per_volume: Sequence[Mapping[Any, Any]]) -> dict[str, Any]:
    """Means over volumes of ``volume_metrics`` outputs.

    ``per_volume``: a list of ``volume_metrics`` results (``{class: metrics}``), or
    of dicts holding one under the key ``"metrics"`` (``EvalResult.per_volume``).
    Returns ``{"n_volumes", "per_class": {c: {metric: mean, metric + "_std": std,
    metric + "_n": values used}}, "mean": {...}, "empty": {...}}``. ``mean`` holds,
    per metric, the mean over classes of the class means (the field's "average"
    column) and ``_std`` the standard deviation (ddof 0) over volumes of each
    volume's class-averaged value. NaN values (policies "nan" / "ssl4mis") are
    left out of means and counted in ``_n``. ``empty`` counts (volume, class)
    pairs: ``both_empty``, ``missed`` (gt non-empty, prediction empty),
    ``spurious`` (gt empty, prediction non-empty); ``empty_per_class`` the same
    counts per class (``empty`` is their sum).
    """
    vols = [v["metrics"] if "metrics" in v else v for v in per_volume]
    if not vols:
        raise ValueError("summarise needs at least one volume")
    classes = sorted({c for v in vols for c in v})
    per_class: dict[Any, dict[str, float]] = {}
    for c in classes:
        rows = [v[c] for v in vols if c in v]
        stats: dict[str, float] = {}
        for k in METRIC_KEYS:
            m, s, n = mean_std(r[k] for r in rows)
            stats[k], stats[k + "_std"], stats[k + "_n"] = m, s, n
        per_class[c] = stats
    overall: dict[str, float] = {}
    for k in METRIC_KEYS:
        class_means = [per_class[c][k] for c in classes if math.isfinite(per_class[c][k])]
        overall[k] = float(np.mean(class_means)) if class_means else math.nan
        vol_means = []
        for v in vols:
            vals = [v[c][k] for c in v if math.isfinite(v[c][k])]
            if vals:
                vol_means.append(float(np.mean(vals)))
        overall[k + "_std"] = float(np.std(vol_means)) if vol_means else math.nan
    empty_per_class = {c: {"both_empty": 0, "missed": 0, "spurious": 0} for c in classes}
    for v in vols:
        for c, r in v.items():
            if r["pred_empty"] and r["gt_empty"]:
                empty_per_class[c]["both_empty"] += 1
            elif r["pred_empty"]:
                empty_per_class[c]["missed"] += 1
            elif r["gt_empty"]:
                empty_per_class[c]["spurious"] += 1
    empty = {k: sum(e[k] for e in empty_per_class.values()) for k in ("both_empty", "missed", "spurious")}
    return {"n_volumes": len(vols), "per_class": per_class, "mean": overall, "empty": empty,
            "empty_per_class": empty_per_class}


def time_backends(pred: np.ndarray, gt: np.ndarray, repeats: int = 3) -> dict[str, float]:
    """Median seconds of ``surface_distances`` per backend on one mask pair (for benchmarks)."""
    out = {}
    for backend in ("monai", "scipy"):
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            surface_distances(pred, gt, None, backend)
            ts.append(time.perf_counter() - t0)
        out[backend] = float(np.median(ts))
    return out
