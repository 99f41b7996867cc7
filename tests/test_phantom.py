"""The synthetic phantoms: determinism, class shares, anatomy, ED/ES, layouts, caching."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import numpy as np
import pytest

from actionpp.data.acdc import ACDCDataset, prepare_acdc
from actionpp.data.la import LADataset, read_nifti_pair
from actionpp.data.phantom import PHANTOM_VERSION as ph_version
from actionpp.data.phantom import acdc_patient, ensure_phantom, generate_acdc_phantom, la_case

RV, MYO, LV = 1, 2, 3


@functools.cache
def _shares(preset: str, n: int = 20, seed: int = 0) -> np.ndarray:
    counts = np.zeros(4, np.int64)
    for i in range(1, n + 1):
        for _, lab in acdc_patient(seed, i, preset)["frames"].values():
            counts += np.bincount(lab.ravel(), minlength=4)
    return counts / counts.sum()


def test_same_seed_identical_different_seed_differs() -> None:
    a, b, c = acdc_patient(0, 1), acdc_patient(0, 1), acdc_patient(1, 1)
    for ph in ("ED", "ES"):
        np.testing.assert_array_equal(a["frames"][ph][0], b["frames"][ph][0])
        np.testing.assert_array_equal(a["frames"][ph][1], b["frames"][ph][1])
    assert a["frames"]["ED"][0].shape != c["frames"]["ED"][0].shape or not np.array_equal(
        a["frames"]["ED"][0], c["frames"]["ED"][0])
    la1, la2, la3 = la_case(0, 1), la_case(0, 1), la_case(1, 1)
    np.testing.assert_array_equal(la1["image"], la2["image"])
    assert la1["id"] == la2["id"] != la3["id"]


def test_written_phantom_is_deterministic(tmp_path: Path) -> None:
    generate_acdc_phantom(tmp_path / "a", patients=3, seed=5)
    generate_acdc_phantom(tmp_path / "b", patients=3, seed=5)
    da, db = ACDCDataset(tmp_path / "a"), ACDCDataset(tmp_path / "b")
    assert da.train_slices == db.train_slices
    for n in da.train_slices:
        for x, y in zip(da.read_slice(n), db.read_slice(n)):
            np.testing.assert_array_equal(x, y)
    assert da.volumes("val") == db.volumes("val")


def test_default_preset_class_shares_near_real_acdc() -> None:
    # Real ACDC: bg 96.2 %, RV 1.18, Myo 1.33, LV 1.29. Patient size is lognormal (sd 0.12 in radius,
    # ~0.25 in area), so the mean share over 20 patients has ~6-8 % relative spread; +-30 % is ~4 sd.
    s = _shares("acdc")
    assert 0.955 <= s[0] <= 0.970, s
    for c in (RV, MYO, LV):
        assert 0.0088 <= s[c] <= 0.0163, (c, s)


def test_longtail_preset_has_a_clearly_rarer_rv() -> None:
    s = _shares("longtail")
    assert s[RV] < 0.5 * min(s[MYO], s[LV]), s
    assert 0.0015 < s[RV] < 0.006, s
    d = _shares("acdc")
    np.testing.assert_allclose(s[[MYO, LV]], d[[MYO, LV]])  # only the RV changes


def _neighbours(mask: np.ndarray) -> list[np.ndarray]:
    p = np.pad(mask, 1)
    return [p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:]]


@pytest.mark.parametrize("index", range(1, 9))
def test_anatomy_ring_encloses_lv_and_rv_touches_septum(index: int) -> None:
    case = acdc_patient(3, index)
    for phase in ("ED", "ES"):
        lab = case["frames"][phase][1]
        S = lab.shape[0]
        rv_slices = 0
        for k in range(S):
            sl = lab[k]
            lv = sl == LV
            if lv.any():
                padded = np.pad(sl, 1)
                ys, xs = np.nonzero(lv)
                for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                    nb = padded[ys + 1 + dy, xs + 1 + dx]
                    assert np.isin(nb, (LV, MYO)).all(), (phase, k, "LV touches something other than LV/Myo")
            rv = sl == RV
            if rv.any():
                rv_slices += 1
                touches = np.zeros_like(rv)
                for nb in _neighbours(sl == MYO):
                    touches |= nb
                assert (rv & touches).any(), (phase, k, "RV does not touch the myocardium")
        # RV is present at the base and absent in the apical slice
        assert (lab[0] == RV).any() and not (lab[S - 1] == RV).any()
        assert 0 < rv_slices < S


@pytest.mark.parametrize("index", range(1, 9))
def test_es_cavities_smaller_wall_thicker(index: int) -> None:
    case = acdc_patient(0, index)
    ed, es = case["frames"]["ED"][1], case["frames"]["ES"][1]
    assert (es == LV).sum() < 0.8 * (ed == LV).sum()
    assert (es == RV).sum() < (ed == RV).sum()
    # mean wall thickness ~ Myo area / epicardial perimeter grows: compare Myo / sqrt(LV+Myo) on the base slice
    t_ed = (ed[0] == MYO).sum() / np.sqrt(((ed[0] == MYO) | (ed[0] == LV)).sum())
    t_es = (es[0] == MYO).sum() / np.sqrt(((es[0] == MYO) | (es[0] == LV)).sum())
    assert t_es > t_ed


def test_confounders_share_blood_pool_intensity(phantom_acdc: Path) -> None:
    """Unlabelled pixels as bright as the LV blood pool exist (aorta, fat): intensity alone cannot segment."""
    ds = ACDCDataset(phantom_acdc)
    v = ds.read_volume(ds.volumes("val")[0])
    lv_median = np.median(v.image[v.label == LV])
    bright_bg = ((v.label == 0) & (v.image >= lv_median)).sum()
    assert bright_bg > 0.2 * (v.label == LV).sum()
    assert 0.0 == v.image.min() and v.image.max() == 1.0


def test_layout_lists_split_and_spacing(phantom_acdc: Path) -> None:
    ds = ACDCDataset(phantom_acdc)
    pats = {s: {f.split("_")[0] for f in ds.volumes(s)} for s in ("train", "val", "test")}
    assert [len(pats[s]) for s in ("train", "val", "test")] == [4, 1, 1]
    assert not (pats["train"] & pats["val"]) and not (pats["train"] & pats["test"])
    assert len(ds.volumes("val")) == 2  # ED + ES
    v = ds.read_volume(ds.volumes("val")[0])
    assert v.spacing is not None and len(v.spacing) == 3 and v.spacing[0] in (5.0, 6.5, 8.0, 10.0)
    assert 6 <= v.image.shape[0] <= 12 and all(128 <= s <= 192 for s in v.image.shape[1:])
    # slices are grouped by patient in train_slices.list (the labelled subset = first patients)
    order = [n.split("_")[0] for n in ds.train_slices]
    firsts = [p for i, p in enumerate(order) if i == 0 or order[i - 1] != p]
    assert len(firsts) == len(set(firsts)) == 4


def test_nifti_layout_converts_back_identically(phantom_acdc: Path, tmp_path: Path) -> None:
    summary = prepare_acdc(phantom_acdc / "raw", tmp_path / "conv")
    assert summary["patients"] == {"train": 4, "val": 1, "test": 1}
    a, b = ACDCDataset(phantom_acdc), ACDCDataset(tmp_path / "conv")
    assert a.train_slices == b.train_slices
    for s in ("train", "val", "test"):
        assert sorted(a.volumes(s)) == sorted(b.volumes(s))
    for n in a.train_slices:
        for x, y in zip(a.read_slice(n), b.read_slice(n)):
            np.testing.assert_array_equal(x, y)
    for f in a.volumes("val") + a.volumes("test"):
        va, vb = a.read_volume(f), b.read_volume(f)
        np.testing.assert_array_equal(va.image, vb.image)
        np.testing.assert_array_equal(va.label, vb.label)


def test_ensure_phantom_caches_and_leaves_nothing_half_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "ph"
    p = ensure_phantom("acdc", patients=3, seed=2, root=root)
    assert p == root and (root / "train_slices.list").is_file()
    stamp = os.stat(root / "train_slices.list").st_mtime_ns
    assert ensure_phantom("acdc", patients=3, seed=2, root=root) == root
    assert os.stat(root / "train_slices.list").st_mtime_ns == stamp
    # a folder from an older generator version is regenerated in place
    info = root / "phantom.json"
    info.write_text(info.read_text().replace(f'"version": {ph_version}', '"version": -1'))
    assert ensure_phantom("acdc", patients=3, seed=2, root=root) == root
    assert os.stat(root / "train_slices.list").st_mtime_ns != stamp
    assert json.loads(info.read_text())["version"] == ph_version

    import actionpp.data.phantom as ph

    def boom(out: Path, **kw: object) -> None:
        Path(out).mkdir(parents=True)
        (Path(out) / "half.h5").write_bytes(b"x")
        raise KeyboardInterrupt

    monkeypatch.setattr(ph, "generate_acdc_phantom", boom)
    with pytest.raises(KeyboardInterrupt):
        ensure_phantom("acdc", patients=3, seed=9, root=tmp_path / "killed")
    assert list(tmp_path.iterdir()) == [root]


def test_la_phantom(phantom_la: Path) -> None:
    ds = LADataset(phantom_la)
    assert len(ds.volumes("train")) == 2 and len(ds.volumes("test")) == 1
    for c in ds.volumes("train") + ds.volumes("test"):
        v = ds.read_volume(c)
        X, Y, Z = v.image.shape
        assert 112 <= X <= 144 and 112 <= Y <= 128 and Z in (80, 88)
        assert set(np.unique(v.label)) == {0, 1}
        assert abs(float(v.image.mean())) < 1e-3 and abs(float(v.image.std()) - 1) < 1e-3  # z-scored
        assert 0.04 < v.label.mean() < 0.14
        assert v.spacing == (0.625, 0.625, 0.625)
    case = ds.volumes("test")[0]
    nv = read_nifti_pair(phantom_la / "nifti" / f"{case}_image.nii.gz", phantom_la / "nifti" / f"{case}_label.nii.gz")
    hv = ds.read_volume(case)
    assert nv.name == case and nv.spacing == hv.spacing
    np.testing.assert_array_equal(nv.image, hv.image)
    np.testing.assert_array_equal(nv.label, hv.label)
