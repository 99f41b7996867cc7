"""Every bad input raises DataError naming the offending file (corrupted copies of a phantom in tmp_path)."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from actionpp.data import DataError
from actionpp.data.acdc import ACDCDataset
from actionpp.data.check import check_dataset, verify_manifest, write_manifest
from actionpp.data.la import LA_FOLDER, LADataset
from actionpp.data.pack import load_pack, pack_dataset
from actionpp.data.tensors import load_acdc_training


@pytest.fixture()
def acdc_copy(phantom_acdc: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "acdc"
    shutil.copytree(phantom_acdc, dst, ignore=shutil.ignore_patterns("raw"))
    return dst


def _first_slice(root: Path) -> Path:
    name = ACDCDataset(root).train_slices[0]
    return root / "data" / "slices" / f"{name}.h5"


def _rewrite(
    path: Path, image: np.ndarray | None = None, label: np.ndarray | None = None, drop: str | None = None
) -> None:
    with h5py.File(path, "r") as f:
        arrays = {k: f[k][()] for k in f}
    if image is not None:
        arrays["image"] = image
    if label is not None:
        arrays["label"] = label
    if drop:
        del arrays[drop]
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)


def _assert_names(path: Path, root: Path, match: str) -> None:
    with pytest.raises(DataError, match=match) as exc:
        check_dataset(root)
    assert str(path) in str(exc.value)


def test_clean_phantom_passes(acdc_copy: Path) -> None:
    s = check_dataset(acdc_copy)
    assert s["lists"]["train_slices"] == s["train_slices"]["count"] > 0
    assert s["volumes"]["val"]["count"] == 2 and s["volumes"]["test"]["count"] == 2
    assert s["train_slices"]["value_range"] == [0.0, 1.0]
    assert abs(sum(s["train_slices"]["class_share"]) - 1) < 1e-4


def test_truncated_h5(acdc_copy: Path) -> None:
    p = _first_slice(acdc_copy)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 3])
    _assert_names(p, acdc_copy, "unreadable HDF5")
    with pytest.raises(DataError, match=str(p)):
        ACDCDataset(acdc_copy).read_slice(p.stem)


def test_missing_key(acdc_copy: Path) -> None:
    p = _first_slice(acdc_copy)
    _rewrite(p, drop="label")
    _assert_names(p, acdc_copy, "missing key 'label'")


def test_shape_mismatch(acdc_copy: Path) -> None:
    p = _first_slice(acdc_copy)
    with h5py.File(p, "r") as f:
        lab = f["label"][()]
    _rewrite(p, label=lab[:-1])
    _assert_names(p, acdc_copy, "shape")


def test_label_outside_classes(acdc_copy: Path) -> None:
    frame = ACDCDataset(acdc_copy).volumes("val")[0]
    p = acdc_copy / "data" / f"{frame}.h5"
    with h5py.File(p, "r") as f:
        lab = f["label"][()]
    lab[0, 0, 0] = 7
    _rewrite(p, label=lab)
    _assert_names(p, acdc_copy, r"label values \{7\}")


def test_nan_image(acdc_copy: Path) -> None:
    p = _first_slice(acdc_copy)
    with h5py.File(p, "r") as f:
        img = f["image"][()]
    img[3, 4] = np.nan
    _rewrite(p, image=img)
    _assert_names(p, acdc_copy, "NaN or infinite")


def test_empty_list(acdc_copy: Path) -> None:
    (acdc_copy / "val.list").write_text("\n")
    _assert_names(acdc_copy / "val.list", acdc_copy, "list is empty")


def test_missing_file(acdc_copy: Path) -> None:
    p = _first_slice(acdc_copy)
    p.unlink()
    _assert_names(p, acdc_copy, "file missing")
    with pytest.raises(DataError, match="file missing"):
        load_acdc_training(acdc_copy, 1, 64, "cpu")


def test_all_problems_reported_at_once(acdc_copy: Path) -> None:
    ds = ACDCDataset(acdc_copy)
    a, b = (acdc_copy / "data" / "slices" / f"{n}.h5" for n in ds.train_slices[:2])
    a.unlink()
    _rewrite(b, drop="image")
    with pytest.raises(DataError, match="2 problem") as exc:
        check_dataset(acdc_copy)
    assert str(a) in str(exc.value) and str(b) in str(exc.value)


def test_tampered_and_truncated_pack(acdc_copy: Path, tmp_path: Path) -> None:
    p = tmp_path / "x.pack"
    pack_dataset(acdc_copy, p)
    data = bytearray(p.read_bytes())
    data[-100] ^= 0xFF
    bad = tmp_path / "tampered.pack"
    bad.write_bytes(bytes(data))
    with pytest.raises(DataError, match=f"{bad}.*SHA-256"):
        load_pack(bad)
    short = tmp_path / "short.pack"
    short.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(DataError, match=f"{short}.*truncated"):
        load_pack(short)
    notpack = tmp_path / "not.pack"
    notpack.write_bytes(b"hello world, not a pack")
    with pytest.raises(DataError, match="not an actionpp pack"):
        load_pack(notpack)


def test_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a dataset"):
        check_dataset(tmp_path)
    with pytest.raises(DataError, match="no such dataset"):
        check_dataset(tmp_path / "nope")


def test_la_missing_case_strict_and_partial(phantom_la: Path, tmp_path: Path) -> None:
    dst = tmp_path / "la"
    shutil.copytree(phantom_la, dst)
    case = LADataset(dst).volumes("train")[-1]
    shutil.rmtree(dst / LA_FOLDER / case)
    with pytest.raises(DataError, match=case):
        check_dataset(dst)
    s = check_dataset(dst, partial=True)
    assert s["missing"]["count"] == 1 and s["volumes"]["train"]["count"] == 1


def test_manifest_detects_changed_and_missing_files(acdc_copy: Path) -> None:
    m = write_manifest(acdc_copy)
    n_files = len(m.read_text().splitlines())
    assert verify_manifest(m) == n_files
    p = _first_slice(acdc_copy)
    p.write_bytes(p.read_bytes() + b"\0")
    with pytest.raises(DataError, match=f"{p}: SHA-256 does not match"):
        verify_manifest(m)
    p.unlink()
    with pytest.raises(DataError, match=f"{p}: listed in SHA256SUMS but missing"):
        verify_manifest(m)
