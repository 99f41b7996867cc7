"""The evaluation protocol end to end with fake models: perfect, empty and JSON / NIfTI outputs."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from actionpp.evaluate import EvalResult, evaluate, save_nifti


@dataclass
class Vol:  # the attributes of actionpp.data.Volume
    name: str
    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, ...] | None = None


class LabelEcho(nn.Module):
    """Predicts the input intensity as a label (so an image equal to its label is segmented perfectly)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.k = num_classes
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lab = x[:, 0].round().long().clamp(0, self.k - 1)
        return 10.0 * torch.movedim(nn.functional.one_hot(lab, self.k), -1, 1).float() + self.dummy


class Background(LabelEcho):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(torch.zeros_like(x))


def _acdc_volume(name: str, shape=(3, 40, 36)) -> Vol:
    lab = np.zeros(shape, np.uint8)
    lab[:, 8:20, 6:18] = 1
    lab[:, 10:16, 22:30] = 2
    lab[:, 24:34, 10:26] = 3
    return Vol(name, lab.astype(np.float32), lab, (10.0, 1.5, 1.5))


def test_acdc_perfect_model_scores_perfectly_and_records_the_protocol():
    vols = [_acdc_volume("p1"), _acdc_volume("p2", (2, 33, 45))]
    res = evaluate(LabelEcho(4), vols, dataset="acdc", size=64, progress=False, split="val.list")
    assert isinstance(res, EvalResult) and len(res.per_volume) == 2
    assert res.mean_dice == 1.0
    for c in (1, 2, 3):
        assert res.summary["per_class"][c]["dice"] == 1.0 and res.summary["per_class"][c]["hd95_mm"] == 0.0
    assert res.summary["empty"] == {"both_empty": 0, "missed": 0, "spurious": 0}
    p = res.protocol
    assert p["split"] == "val.list" and p["num_classes"] == 4 and p["empty_policy"] == "penalty"
    assert "64 x 64" in p["inference"]["resize"] and "voxels" in p["distance_units"]
    assert res.per_volume[1]["shape"] == [2, 33, 45]


def test_acdc_background_model_misses_every_structure():
    vol = _acdc_volume("p1")
    res = evaluate(Background(4), [vol], dataset="acdc", size=32, progress=False)
    diag = math.sqrt(2**2 + 39**2 + 35**2)  # (3, 40, 36) -> sqrt(sum (n - 1)^2)
    assert res.summary["empty"] == {"both_empty": 0, "missed": 3, "spurious": 0}
    assert res.mean_dice == 0.0
    assert res.summary["mean"]["hd95_vox"] == pytest.approx(diag)
    ssl = evaluate(Background(4), [vol], dataset="acdc", size=32, progress=False, policy="ssl4mis")
    assert ssl.summary["mean"]["hd95_vox"] == 0.0  # SSL4MIS's "best possible" HD95 for a missed structure


def test_la_sliding_window_evaluation_and_json_and_nifti(tmp_path):
    lab = np.zeros((20, 18, 10), np.uint8)
    lab[5:14, 4:12, 2:8] = 1
    vol = Vol("case0", lab.astype(np.float32), lab, (0.625, 0.625, 0.625))
    res = evaluate(LabelEcho(2), [vol], dataset="la", patch=(16, 16, 8), stride=(4, 4, 2), progress=False,
                   save_predictions_dir=tmp_path)
    assert res.mean_dice == 1.0 and res.summary["per_class"][1]["asd_vox"] == 0.0
    assert res.protocol["inference"]["patch"] == [16, 16, 8]
    data = json.loads(res.to_json(tmp_path / "eval.json"))
    assert data["per_volume"][0]["metrics"]["1"]["dice"] == 1.0
    assert json.loads((tmp_path / "eval.json").read_text()) == data
    img = nib.load(str(tmp_path / "case0_pred.nii.gz"))
    np.testing.assert_array_equal(np.asarray(img.dataobj), lab)
    assert img.header.get_zooms() == (0.625, 0.625, 0.625)


def test_json_writes_nan_as_null():
    vol = _acdc_volume("p1")
    vol.spacing = None
    res = evaluate(LabelEcho(4), [vol], dataset="acdc", size=48, progress=False)
    def reject(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name}")

    data = json.loads(res.to_json(), parse_constant=reject)  # strict JSON: no NaN / Infinity
    assert data["summary"]["mean"]["hd95_mm"] is None  # no spacing: mm distances unknown


def test_bad_arguments_raise():
    vol = _acdc_volume("p1")
    with pytest.raises(ValueError, match="dataset"):
        evaluate(LabelEcho(4), [vol], dataset="brats", progress=False)
    with pytest.raises(ValueError, match="no volumes"):
        evaluate(LabelEcho(4), [], progress=False)
    bad = Vol("bad", np.zeros((2, 16, 16), np.float32), np.zeros((2, 16, 15), np.uint8))
    with pytest.raises(ValueError, match="bad"):
        evaluate(LabelEcho(4), [bad], progress=False)
    with pytest.raises(ValueError, match="spacing"):
        save_nifti(np.zeros((2, 2, 2), np.uint8), "x.nii.gz", (1.0, 1.0))


@pytest.mark.realdata
def test_real_la_volume_with_a_fake_model(la_root):
    path = la_root / "2018LA_Seg_Training Set" / "UPT6DX9IQY9JAZ7HJKA7" / "mri_norm2.h5"
    with h5py.File(path, "r") as f:
        label = f["label"][:]
    # image = label: the echo model then segments the real atrium perfectly through 45 windows
    vol = Vol("UPT6DX9IQY9JAZ7HJKA7", label.astype(np.float32), label, (0.625,) * 3)
    res = evaluate(LabelEcho(2), [vol], dataset="la", progress=False, batch_size=5)
    assert res.mean_dice == 1.0 and res.summary["mean"]["hd95_vox"] == 0.0
    assert res.per_volume[0]["shape"] == [175, 132, 88]
