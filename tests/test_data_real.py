"""Real ACDC / LA (skip when ../shared/data is absent): counts, ranges, pack exactness and size, checksums."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from actionpp.data.acdc import ACDCDataset, first_patients, patient_of
from actionpp.data.check import check_dataset, verify_manifest
from actionpp.data.la import LADataset
from actionpp.data.pack import load_pack, pack_dataset
from actionpp.data.tensors import load_acdc_training, load_la_training
from actionpp.paths import splits_dir

pytestmark = pytest.mark.realdata


def test_acdc_counts_labelled_subsets_and_ranges(acdc_root: Path) -> None:
    s = check_dataset(acdc_root)
    # README: 70 training patients (140 frames), 10 validation patients, 20 test patients (40 frames)
    assert s["lists"] == {"train_slices": 1312, "train": 140, "val": 20, "test": 40}
    assert s["train_slices"]["count"] == 1312
    assert s["volumes"]["val"]["count"] == 20 and s["volumes"]["test"]["count"] == 40
    assert s["train_slices"]["value_range"] == [0.0, 1.0]
    assert s["volumes"]["val"]["value_range"] == [0.0, 1.0] and s["volumes"]["test"]["value_range"] == [0.0, 1.0]
    # the standard split: no patient in two of train / val / test
    ds = ACDCDataset(acdc_root)
    pats = {sp: {patient_of(f) for f in ds.volumes(sp)} for sp in ("train", "val", "test")}
    assert [len(pats[sp]) for sp in ("train", "val", "test")] == [70, 10, 20]
    assert not (pats["train"] & pats["val"]) and not (pats["train"] & pats["test"]) and not (pats["val"] & pats["test"])
    assert s["labelled"]["3_patients"]["labelled_slices"] == 68
    assert s["labelled"]["7_patients"]["labelled_slices"] == 136
    # README: background 96.2 %, RV 1.18 %, Myo 1.33 %, LV 1.29 %
    np.testing.assert_allclose(s["train_slices"]["class_share"], [0.962, 0.0118, 0.0133, 0.0129], atol=6e-4)
    names = ACDCDataset(acdc_root).train_slices
    for k, f in ((3, "acdc_labelled_3.txt"), (7, "acdc_labelled_7.txt")):
        want = (splits_dir() / f).read_text().split()
        assert list(dict.fromkeys(patient_of(n) for n in names[: first_patients(names, k)])) == want


def test_acdc_labelled_tensors(acdc_root: Path) -> None:
    t = load_acdc_training(acdc_root, 3, 32, "cpu")
    assert t.x_l.shape == (68, 1, 32, 32) and t.x_u.shape == (1244, 1, 32, 32)
    assert float(t.x_l.min()) >= 0.0 and float(t.x_l.max()) <= 1.0


@pytest.mark.extended  # about a minute (packs the whole dataset): CI runs it after the default suite
def test_acdc_pack_bit_exact_and_the_gpu_carry_under_60_mb(acdc_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "acdc.pack"
    s = pack_dataset(acdc_root, out, verify=False)  # this test compares everything itself
    assert s["slices"] == 1312 and s["volumes"] == 20 + 40
    ds, pk = ACDCDataset(acdc_root), load_pack(out)
    for n in ds.train_slices:
        a, b = ds.read_slice(n), pk.read_slice(n)
        assert np.array_equal(a[0].view(np.uint32), b[0].view(np.uint32)), n
        assert np.array_equal(a[1], b[1]), n
    for f in ds.volumes("val") + ds.volumes("test"):
        va, vb = ds.read_volume(f), pk.read_volume(f)
        assert np.array_equal(va.image.view(np.uint32), vb.image.view(np.uint32)), f
        assert np.array_equal(va.label, vb.label) and vb.spacing is None
    # the GPU carry (make gpu-carry) leaves the test split out: it must stay well inside a device call's 64 MiB
    carry = tmp_path / "carry.pack"
    s = pack_dataset(acdc_root, carry, verify=False, leave_out=["test"])
    assert s["slices"] == 1312 and s["volumes"] == 20
    assert carry.stat().st_size < 60e6, carry.stat().st_size
    pc = load_pack(carry)
    assert pc.volumes("val") == ds.volumes("val") and not pc.has_split("test")


def test_sha256_manifests(acdc_root: Path, la_root: Path) -> None:
    assert verify_manifest(acdc_root / "SHA256SUMS") == 1312 + 20 + 40 + 4  # slices, val + test volumes, 4 lists
    assert verify_manifest(la_root / "SHA256SUMS") >= 5


def test_la_volumes_match_readme(la_root: Path) -> None:
    ds = LADataset(la_root)
    assert len(ds.volumes("train")) == 80 and len(ds.volumes("test")) == 20
    present = ds.available("train") + ds.available("test")
    assert len(present) == 5
    for c in present:
        v = ds.read_volume(c)
        X, Y, Z = v.image.shape
        assert 175 <= X <= 212 and 132 <= Y <= 143 and Z == 88, v.image.shape  # README: "about 180-212"; test id is 175
        assert set(np.unique(v.label)) == {0, 1} and 0.06 <= v.label.mean() <= 0.11
        assert v.spacing is None  # z-scored before cropping, so the crop is not zero-mean
    s = check_dataset(la_root, partial=True)
    assert s["missing"]["count"] == 95
    tv = load_la_training(la_root, 4, "cpu")
    assert tv.names_l == ds.volumes("train")[:4] and tv.names_u == []
