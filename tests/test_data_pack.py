"""Pack codec and round trip; training tensors from folder and pack."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from actionpp.data import DataError, open_dataset
from actionpp.data.acdc import ACDCDataset, first_patients
from actionpp.data.pack import decode_unit, encode_unit, find_denominator, load_pack, pack_dataset
from actionpp.data.tensors import load_acdc_training, load_la_training, load_volumes, resize_nearest


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


@pytest.mark.parametrize("n", [1, 7, 248, 1023, 4031])  # real ACDC volumes have n in 188..4031
def test_codec_is_exact_for_k_over_n(n: int) -> None:
    k = np.random.default_rng(n).integers(0, n + 1, size=(13, 17))
    k.flat[0], k.flat[1] = 0, n  # min-max scaled: 0 and 1 present
    x = (k.astype(np.float64) / n).astype(np.float32)  # what SSL4MIS stores
    enc, m, blob = encode_unit(x)
    assert enc == "u16" and n % m == 0  # m may be a divisor of n if every k shares a factor
    np.testing.assert_array_equal(_bits(decode_unit(enc, m, blob, x.shape)), _bits(x))


def test_codec_falls_back_to_float32_and_stays_exact() -> None:
    k = np.random.default_rng(1).integers(0, 65536, size=(13, 17))
    big = (k / 65535).astype(np.float32)  # n beyond float32's resolution of k/n: exact either way
    enc, m, blob = encode_unit(big)
    np.testing.assert_array_equal(_bits(decode_unit(enc, m, blob, big.shape)), _bits(big))
    x = np.random.default_rng(0).normal(size=(9, 11)).astype(np.float32)  # z-scored, negative
    assert find_denominator(x) is None
    enc, m, blob = encode_unit(x)
    assert enc == "f32"
    np.testing.assert_array_equal(_bits(decode_unit(enc, m, blob, x.shape)), _bits(x))
    y = np.array([[0.0, 1.0 / 3.0, 0.1234567]], np.float32)  # not k/n for any small n: exact or fallback
    enc, m, blob = encode_unit(y)
    np.testing.assert_array_equal(_bits(decode_unit(enc, m, blob, y.shape)), _bits(y))


def test_acdc_pack_round_trip_bit_exact(phantom_acdc: Path, tmp_path: Path) -> None:
    out = tmp_path / "a.pack"
    s = pack_dataset(phantom_acdc, out)
    ds, pk = ACDCDataset(phantom_acdc), load_pack(out)
    assert s["encodings"]["f32"] == 0  # phantom intensities are k/n, like SSL4MIS
    assert pk.train_slices == ds.train_slices
    for n in ds.train_slices:
        for a, b in zip(ds.read_slice(n), pk.read_slice(n)):
            np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))
    for split in ("val", "test"):
        assert pk.volumes(split) == ds.volumes(split)
        for f in ds.volumes(split):
            va, vb = ds.read_volume(f), pk.read_volume(f)
            np.testing.assert_array_equal(_bits(va.image), _bits(vb.image))
            np.testing.assert_array_equal(va.label, vb.label)
            assert va.spacing == vb.spacing
    raw_bytes = sum(p.stat().st_size for p in (phantom_acdc / "data").rglob("*.h5"))
    assert out.stat().st_size < raw_bytes  # smaller than the gzip HDF5 files


def test_la_pack_round_trip(phantom_la: Path, tmp_path: Path) -> None:
    out = tmp_path / "la.pack"
    pack_dataset(phantom_la, out)
    a, b = load_volumes(phantom_la, "train"), load_volumes(out, "train")
    assert [v.name for v in a] == [v.name for v in b]
    for va, vb in zip(a, b):
        np.testing.assert_array_equal(_bits(va.image), _bits(vb.image))
        np.testing.assert_array_equal(va.label, vb.label)


def test_resize_nearest_hand_values() -> None:
    a = np.arange(4).reshape(2, 2)
    np.testing.assert_array_equal(resize_nearest(a, 4), [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])
    np.testing.assert_array_equal(resize_nearest(np.arange(16).reshape(4, 4), 2), [[0, 3], [12, 15]])
    lab = np.array([[0, 3], [1, 2]], np.uint8)
    assert set(np.unique(resize_nearest(lab, 7))) == {0, 1, 2, 3}  # no new label values


def test_first_patients_counts() -> None:
    names = [
        "p1_frame01_slice_0",
        "p1_frame02_slice_0",
        "p2_frame01_slice_0",
        "p3_frame01_slice_0",
        "p3_frame01_slice_1",
    ]
    assert [first_patients(names, k) for k in (0, 1, 2, 3, None)] == [0, 2, 3, 5, 5]
    with pytest.raises(ValueError, match="only 3"):
        first_patients(names, 4)


def test_load_acdc_training_folder_equals_pack(phantom_acdc: Path, tmp_path: Path) -> None:
    t = load_acdc_training(phantom_acdc, 2, 64, "cpu")
    names = ACDCDataset(phantom_acdc).train_slices
    k = first_patients(names, 2)
    assert t.x_l.shape == (k, 1, 64, 64) and t.y_l.shape == (k, 64, 64) and t.x_u.shape == (len(names) - k, 1, 64, 64)
    assert t.x_l.dtype == torch.float32 and t.y_l.dtype == torch.int64
    assert len({n.split("_")[0] for n in t.names_l}) == 2 and t.names_l + t.names_u == names
    assert set(torch.unique(t.y_l).tolist()) <= {0, 1, 2, 3}
    img, lab = ACDCDataset(phantom_acdc).read_slice(names[0])
    np.testing.assert_array_equal(t.x_l[0, 0].numpy(), resize_nearest(img, 64))
    np.testing.assert_array_equal(t.y_l[0].numpy(), resize_nearest(lab, 64))
    out = tmp_path / "a.pack"
    pack_dataset(phantom_acdc, out)
    tp = load_acdc_training(out, 2, 64, torch.device("cpu"))
    for a, b in ((t.x_l, tp.x_l), (t.y_l, tp.y_l), (t.x_u, tp.x_u)):
        assert torch.equal(a, b)
    all_l = load_acdc_training(phantom_acdc, None, 32)
    assert all_l.x_u.shape[0] == 0 and all_l.x_l.shape[0] == len(names)


def test_load_la_training(phantom_la: Path) -> None:
    tv = load_la_training(phantom_la, 1, "cpu")
    ids = open_dataset(phantom_la).volumes("train")
    assert tv.names_l == ids[:1] and tv.names_u == ids[1:] and len(ids) == 2
    assert tv.x_l[0].ndim == 4 and tv.x_l[0].shape[0] == 1 and tv.y_l[0].shape == tv.x_l[0].shape[1:]
    assert tv.y_l[0].dtype == torch.int64 and len(tv.x_u) == 1
    with pytest.raises(ValueError, match="labelled must be"):
        load_la_training(phantom_la, 99)
    with pytest.raises(DataError, match="expected an ACDC"):
        load_acdc_training(phantom_la, 1, 32)


@pytest.mark.parametrize("shape", [(224, 154), (154, 224), (256, 256), (13, 9), (300, 512)])
@pytest.mark.parametrize("size", [64, 128, 256])
def test_resize_nearest_equals_scipy_zoom_order0(shape: tuple[int, int], size: int) -> None:
    from scipy.ndimage import zoom

    a = np.random.default_rng(0).random(shape).astype(np.float32)
    np.testing.assert_array_equal(resize_nearest(a, size), zoom(a, (size / shape[0], size / shape[1]), order=0))
