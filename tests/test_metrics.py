"""Dice / Jaccard / HD95 / ASD: closed forms, an independent brute-force check, the empty-mask policies."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest

from actionpp.metrics import dice_jaccard, summarise, surface_distances, volume_metrics

BACKENDS = ["monai", "scipy"]


def _cube(shape=(30, 30, 30), lo=5, side=10) -> np.ndarray:
    a = np.zeros(shape, dtype=np.uint8)
    a[lo : lo + side, lo : lo + side, lo : lo + side] = 1
    return a


def _brute_force(pred: np.ndarray, gt: np.ndarray, spacing) -> tuple[float, float]:
    """Independent reference: surfaces by explicit 6-neighbour test, all-pairs distances."""

    def surface(m: np.ndarray) -> np.ndarray:
        padded = np.pad(m, 1)  # outside the array counts as background
        inner = np.ones_like(m, dtype=bool)
        for ax in range(m.ndim):
            for step in (-1, 1):
                inner &= np.roll(padded, step, axis=ax)[(slice(1, -1),) * m.ndim]
        return np.argwhere(m & ~inner) * np.asarray(spacing, dtype=float)

    sp, sg = surface(pred.astype(bool)), surface(gt.astype(bool))
    d = np.sqrt(((sp[:, None, :] - sg[None, :, :]) ** 2).sum(-1))
    d_pg, d_gp = d.min(axis=1), d.min(axis=0)
    return float(np.percentile(np.concatenate([d_pg, d_gp]), 95)), float(d_pg.mean())


# ---------------------------------------------------------------- closed forms


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k", [1, 2, 3])
def test_cube_shifted_by_k_voxels_has_hd95_k(backend, k):
    gt = _cube()
    pred = np.roll(gt, k, axis=0)
    r = volume_metrics(pred, gt, 2, backend=backend)[1]
    # both far faces (2 x 100 of the 976 pooled surface distances) sit at exactly k, the maximum
    assert r["hd95_vox"] == pytest.approx(k)
    assert r["dice"] == pytest.approx((10 - k) / 10)  # overlap (10-k)*100 of 1000 + 1000
    assert r["jaccard"] == pytest.approx((10 - k) / (10 + k))
    if k == 1:
        # pred surface: 488 voxels; far face (100) at distance 1, the 8 x 8 interior of the near face
        # (now inside gt, one voxel from gt's face) at 1, every other pred surface voxel lies on gt's surface
        assert r["asd_vox"] == pytest.approx(164 / 488)


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_voxels_with_anisotropic_spacing(backend):
    gt = np.zeros((4, 5, 6), np.uint8)
    pred = gt.copy()
    gt[1, 1, 1] = 1
    pred[1, 2, 2] = 1  # one voxel along y and z
    r = volume_metrics(pred, gt, 2, spacing=(1.0, 2.0, 3.0), backend=backend)[1]
    assert r["hd95_vox"] == pytest.approx(math.sqrt(2)) and r["asd_vox"] == pytest.approx(math.sqrt(2))
    assert r["hd95_mm"] == pytest.approx(math.sqrt(13)) and r["asd_mm"] == pytest.approx(math.sqrt(13))
    assert r["dice"] == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_sphere_against_itself_is_perfect(backend):
    z, y, x = np.mgrid[:25, :25, :25]
    sphere = ((z - 12) ** 2 + (y - 12) ** 2 + (x - 12) ** 2 <= 64).astype(np.uint8)
    r = volume_metrics(sphere, sphere, 2, spacing=(0.625,) * 3, backend=backend)[1]
    assert (r["dice"], r["jaccard"], r["hd95_vox"], r["asd_vox"], r["hd95_mm"], r["asd_mm"]) == (1, 1, 0, 0, 0, 0)


def test_dice_jaccard_hand_values():
    pred = np.array([1, 1, 0, 0, 0], bool)
    gt = np.array([0, 1, 1, 1, 0], bool)
    assert dice_jaccard(pred, gt) == (pytest.approx(0.4), pytest.approx(0.25))  # 2*1/(2+3), 1/4
    assert dice_jaccard(np.zeros(3, bool), np.zeros(3, bool)) == (1.0, 1.0)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (1.0, 0.5, 2.5)])
def test_backends_agree_with_brute_force_on_random_shapes(spacing):
    rng = np.random.default_rng(0)
    for _ in range(3):
        gt = np.zeros((12, 14, 10), np.uint8)
        gt[2:10, 3:11, 2:8] = 1
        pred = gt.copy()
        flip = rng.random(gt.shape) < 0.15
        pred[flip] = 1 - pred[flip]
        hd_ref, asd_ref = _brute_force(pred, gt, spacing)
        for backend in BACKENDS:
            r = volume_metrics(pred, gt, 2, spacing=spacing, backend=backend)[1]
            assert r["hd95_mm"] == pytest.approx(hd_ref, rel=1e-5)
            assert r["asd_mm"] == pytest.approx(asd_ref, rel=1e-5)


def test_asd_is_directed_pred_to_gt_and_hd95_pools_both_directions():
    gt = np.zeros((20, 20), np.uint8)
    gt[5:15, 5:15] = 1
    pred = gt.copy()
    pred[0, 0] = 1  # one stray pixel far from gt
    d_pg, d_gp = surface_distances(pred == 1, gt == 1)
    r = volume_metrics(pred, gt, 2)[1]
    assert r["asd_vox"] == pytest.approx(d_pg.mean())
    assert d_gp.max() == 0  # every gt surface pixel is also a pred surface pixel
    assert r["asd_vox"] == pytest.approx(math.sqrt(50) / 37)  # 36 gt surface pixels at 0, the stray at 5*sqrt(2)
    assert r["hd95_vox"] == pytest.approx(np.percentile(np.concatenate([d_pg, d_gp]), 95))


def test_two_dimensional_and_multiclass_labels():
    gt = np.zeros((3, 8, 8), np.uint8)
    gt[:, 1:4, 1:4] = 1
    gt[:, 5:7, 5:7] = 3
    r = volume_metrics(gt, gt, 4)
    assert set(r) == {1, 2, 3}
    assert r[1]["dice"] == 1 and r[3]["dice"] == 1
    assert r[2]["pred_empty"] and r[2]["gt_empty"] and r[2]["dice"] == 1 and r[2]["hd95_vox"] == 0
    assert volume_metrics(gt[0], gt[0], 4)[1]["hd95_vox"] == 0  # a single 2D slice works too


# ---------------------------------------------------------------- empty-mask policies

SHAPE = (5, 6, 7)
DIAG = math.sqrt(4**2 + 5**2 + 6**2)


def _pair(pred_full: bool, gt_full: bool) -> tuple[np.ndarray, np.ndarray]:
    block = np.zeros(SHAPE, np.uint8)
    block[1:3, 1:3, 1:3] = 1
    empty = np.zeros(SHAPE, np.uint8)
    return (block if pred_full else empty), (block if gt_full else empty)


@pytest.mark.parametrize(
    "policy,pred_full,gt_full,dice,dist",
    [
        ("penalty", False, False, 1.0, 0.0),
        ("penalty", True, False, 0.0, DIAG),  # spurious structure
        ("penalty", False, True, 0.0, DIAG),  # missed structure
        ("nan", False, False, 1.0, 0.0),
        ("nan", True, False, 0.0, math.nan),
        ("nan", False, True, 0.0, math.nan),
        ("ssl4mis", False, False, 0.0, 0.0),  # SSL4MIS: empty prediction -> 0, 0
        ("ssl4mis", False, True, 0.0, 0.0),  # ... a missed structure gets the best HD95
        ("ssl4mis", True, False, 0.0, math.nan),  # medpy would raise
    ],
)
def test_empty_mask_policy_table(policy, pred_full, gt_full, dice, dist):
    pred, gt = _pair(pred_full, gt_full)
    r = volume_metrics(pred, gt, 2, spacing=(2.0, 2.0, 2.0), policy=policy)[1]
    assert r["dice"] == dice and r["jaccard"] == dice
    assert r["pred_empty"] is (not pred_full) and r["gt_empty"] is (not gt_full)
    for key, scale in (("hd95_vox", 1), ("asd_vox", 1), ("hd95_mm", 2), ("asd_mm", 2)):
        if math.isnan(dist):
            assert math.isnan(r[key])
        else:
            assert r[key] == pytest.approx(dist * scale)


def test_without_spacing_mm_distances_are_nan():
    gt = _cube((12, 12, 12), 2, 5)
    r = volume_metrics(gt, gt, 2)[1]
    assert r["hd95_vox"] == 0 and math.isnan(r["hd95_mm"]) and math.isnan(r["asd_mm"])


# ---------------------------------------------------------------- summary


def test_summarise_means_std_and_empty_counts():
    def row(d, h, pe=False, ge=False):
        return {"dice": d, "jaccard": d, "hd95_vox": h, "asd_vox": h, "hd95_mm": math.nan, "asd_mm": math.nan,
                "pred_empty": pe, "gt_empty": ge}

    vols = [
        {1: row(0.8, 2.0), 2: row(0.6, math.nan, pe=True)},  # class 2 missed under the "nan" policy
        {"metrics": {1: row(0.4, 4.0), 2: row(1.0, 0.0, pe=True, ge=True)}},
    ]
    s = summarise(vols)
    assert s["n_volumes"] == 2
    assert s["per_class"][1]["dice"] == pytest.approx(0.6) and s["per_class"][1]["dice_std"] == pytest.approx(0.2)
    assert s["per_class"][2]["hd95_vox"] == 0.0 and s["per_class"][2]["hd95_vox_n"] == 1  # NaN left out
    assert s["mean"]["dice"] == pytest.approx((0.6 + 0.8) / 2)
    assert s["mean"]["dice_std"] == pytest.approx(0.0)  # both volumes average 0.7
    assert s["mean"]["hd95_vox"] == pytest.approx((3.0 + 0.0) / 2)
    assert math.isnan(s["mean"]["hd95_mm"])
    assert s["empty"] == {"both_empty": 1, "missed": 1, "spurious": 0}
    with pytest.raises(ValueError, match="at least one"):
        summarise([])


# ---------------------------------------------------------------- errors


def test_bad_inputs_raise_clear_errors():
    a = np.zeros((4, 4, 4), np.uint8)
    with pytest.raises(ValueError, match="differ in shape"):
        volume_metrics(a, a[:3], 2)
    with pytest.raises(ValueError, match="outside"):
        volume_metrics(a + 2, a, 2)
    with pytest.raises(ValueError, match="spacing"):
        volume_metrics(a, a, 2, spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match="policy"):
        volume_metrics(a, a, 2, policy="medpy")
    with pytest.raises(ValueError, match="integer"):
        volume_metrics(a.astype(np.float32), a, 2)
    with pytest.raises(ValueError, match="non-empty"):
        surface_distances(a == 1, a == 0)


# ---------------------------------------------------------------- real LA label


@pytest.mark.realdata
def test_real_la_label_against_itself_and_a_shifted_copy(la_root):
    path = la_root / "2018LA_Seg_Training Set" / "06SR5RBREL16DQ6M8LWS" / "mri_norm2.h5"
    with h5py.File(path, "r") as f:
        gt = f["label"][:]
    assert gt.shape == (183, 140, 88)
    same = volume_metrics(gt, gt, 2, spacing=(0.625,) * 3)[1]
    assert (same["dice"], same["hd95_vox"], same["asd_vox"], same["hd95_mm"]) == (1.0, 0.0, 0.0, 0.0)
    k = 3
    shifted = np.zeros_like(gt)
    shifted[k:] = gt[:-k]  # the atrium does not touch the border, so nothing falls off
    assert shifted.sum() == gt.sum()
    r = {b: volume_metrics(shifted, gt, 2, spacing=(0.625,) * 3, backend=b)[1] for b in BACKENDS}
    overlap = np.count_nonzero((shifted == 1) & (gt == 1))
    assert r["monai"]["dice"] == pytest.approx(overlap / gt.sum())
    # every surface voxel has its shifted copy on the other surface: no distance exceeds k
    d_pg, d_gp = surface_distances(shifted == 1, gt == 1)
    assert max(d_pg.max(), d_gp.max()) <= k + 1e-6
    assert 0 < r["monai"]["hd95_vox"] <= k and 0 < r["monai"]["asd_vox"] < k
    assert r["monai"]["hd95_mm"] == pytest.approx(0.625 * r["monai"]["hd95_vox"])
    for key in ("hd95_vox", "asd_vox"):
        assert r["monai"][key] == pytest.approx(r["scipy"][key], rel=1e-5)
