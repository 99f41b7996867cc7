"""Slice-wise and sliding-window inference with fake models whose predictions are known."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from actionpp.inference import count_windows, predict_slices, sliding_window, window_starts


class LabelEcho(nn.Module):
    """Logits = 10 x one-hot(round(x)): the prediction is the input intensity read as a label."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.k = num_classes
        self.dummy = nn.Parameter(torch.zeros(()))  # gives the module a device
        self.seen: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(x.shape))
        lab = x[:, 0].round().long().clamp(0, self.k - 1)
        return 10.0 * torch.movedim(nn.functional.one_hot(lab, self.k), -1, 1).float() + self.dummy


class Threshold(nn.Module):
    """Voxel-wise logits ``[0, 4 x]``: P(class 1) = sigmoid(4 x), the same in every window."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))
        self.windows: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.windows += list(x[:, 0].clone())
        return torch.cat([torch.zeros_like(x), 4.0 * x], dim=1) + self.dummy


class WindowConstant(nn.Module):
    """P(class 1) = 0.1 x (window's call index): shows which windows were averaged at each voxel."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = torch.tensor([0.1 * (self.calls + i) for i in range(x.shape[0])]).view(-1, 1, 1, 1, 1)
        self.calls += x.shape[0]
        q = q.expand(-1, 1, *x.shape[2:])
        return torch.log(torch.cat([1 - q, q], dim=1).clamp_min(1e-12))


# ---------------------------------------------------------------- predict_slices


def test_predict_slices_round_trip_is_exact_when_upsampling():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 4, size=(3, 37, 50)).astype(np.float32)  # odd, non-square, smaller than 64
    model = LabelEcho().train()
    pred = predict_slices(model, image, size=64, batch_size=2)
    assert pred.dtype == np.uint8 and pred.shape == (3, 37, 50)
    # nearest zoom up then back is the identity; with zoom's default mode="constant" (SSL4MIS) the
    # 64 -> 50 zoom would blank column 49 (float rounding lands just past the edge)
    np.testing.assert_array_equal(pred, image.astype(np.uint8))
    assert model.seen == [(2, 1, 64, 64), (1, 1, 64, 64)]  # batches of 2 slices at size x size
    assert model.training  # the training flag is restored


def test_predict_slices_downsampling_follows_scipy_nearest_zoom():
    # 8 -> 4 samples columns round(o * 7/3) = 0, 2, 5, 7; 4 -> 8 maps back to round(o * 3/7) = 0,0,1,1,2,2,3,3
    image = np.tile(np.array([0, 1, 2, 3, 0, 1, 2, 3], np.float32), (1, 4, 1))  # (1, 4, 8)
    pred = predict_slices(LabelEcho(), image, size=4)
    np.testing.assert_array_equal(pred[0, 0], [0, 0, 2, 2, 1, 1, 3, 3])


def test_predict_slices_accepts_tensors_and_rejects_bad_shapes():
    image = torch.ones(2, 16, 16)
    assert predict_slices(LabelEcho(), image, size=16).sum() == 2 * 16 * 16
    with pytest.raises(ValueError, match="3D image"):
        predict_slices(LabelEcho(), np.zeros((16, 16)), size=16)


# ---------------------------------------------------------------- sliding window


@pytest.mark.parametrize(
    "size,patch,stride,starts",
    [(10, 4, 3, [0, 3, 6]), (11, 4, 3, [0, 3, 6, 7]), (4, 4, 2, [0]), (112, 112, 18, [0]),
     (183, 112, 18, [0, 18, 36, 54, 71]), (88, 80, 4, [0, 4, 8])],
)
def test_window_starts_follow_ua_mt(size, patch, stride, starts):
    assert window_starts(size, patch, stride) == starts


def test_window_counts_of_the_real_la_sizes():
    # ceil((X - 112) / 18) + 1, ceil((Y - 112) / 18) + 1, ceil((88 - 80) / 4) + 1 = 3
    assert count_windows((183, 140, 88)) == 5 * 3 * 3 == 45
    assert count_windows((199, 143, 88)) == 6 * 3 * 3 == 54
    assert count_windows((212, 141, 88)) == 7 * 3 * 3 == 63
    assert count_windows((100, 100, 60)) == 1  # padded up to one window


def test_sliding_window_pads_odd_small_volumes_and_crops_back():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(5, 6, 3)).astype(np.float32)  # smaller than the patch on every axis
    model = Threshold()
    pred, probs = sliding_window(model, image, patch=(8, 8, 4), stride=(2, 2, 2), num_classes=2)
    assert pred.shape == (5, 6, 3) and pred.dtype == np.uint8
    assert probs.shape == (2, 5, 6, 3) and probs.dtype == np.float32
    np.testing.assert_array_equal(pred, (image > 0).astype(np.uint8))
    np.testing.assert_allclose(probs[1], 1 / (1 + np.exp(-4 * image)), rtol=1e-5)
    # one window, the image padded by (1, 2), (1, 1), (0, 1) zeros
    assert len(model.windows) == 1
    np.testing.assert_array_equal(model.windows[0].numpy(), np.pad(image, [(1, 2), (1, 1), (0, 1)]))


@pytest.mark.parametrize("batch_size", [1, 3])
def test_sliding_window_averages_exactly_the_covering_windows(batch_size):
    # axis 0: size 11, patch 4, stride 3 -> windows [0,4), [3,7), [6,10), [7,11), called as 0, 1, 2, 3
    image = np.zeros((11, 4, 4), np.float32)
    pred, probs = sliding_window(WindowConstant(), image, patch=(4, 4, 4), stride=(3, 2, 2), num_classes=2,
                                 batch_size=batch_size)
    expected = [0.0, 0.0, 0.0, 0.05, 0.1, 0.1, 0.15, 0.25, 0.25, 0.25, 0.3]  # mean of 0.1 x covering calls
    np.testing.assert_allclose(probs[1, :, 0, 0], expected, atol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-6)
    assert pred.max() == 0


def test_sliding_window_rejects_a_model_with_the_wrong_class_count():
    with pytest.raises(ValueError, match="3 classes"):
        sliding_window(Threshold(), np.zeros((4, 4, 4)), patch=(4, 4, 4), stride=(2, 2, 2), num_classes=3)


@pytest.mark.realdata
def test_sliding_window_over_a_real_la_volume_at_the_real_strides(la_root):
    path = la_root / "2018LA_Seg_Training Set" / "UPT6DX9IQY9JAZ7HJKA7" / "mri_norm2.h5"  # the smallest one
    with h5py.File(path, "r") as f:
        image = f["image"][:]
    assert image.shape == (175, 132, 88)
    model = Threshold()
    pred, probs = sliding_window(model, image, num_classes=2, batch_size=5)
    assert len(model.windows) == count_windows(image.shape) == 45
    assert pred.shape == image.shape
    # a voxel-wise model gives the same probability in every window, so the average is that probability
    np.testing.assert_array_equal(pred, (image > 0).astype(np.uint8))


@pytest.mark.realdata
def test_predict_slices_on_a_real_acdc_volume_round_trips_its_label(acdc_root):
    with h5py.File(acdc_root / "data" / "patient028_frame01.h5", "r") as f:
        label = f["label"][:]
    assert label.shape == (10, 256, 224)  # 224 -> 256 -> 224 columns: nearest zoom up and back is exact
    pred = predict_slices(LabelEcho(), label.astype(np.float32), size=256, batch_size=4)
    np.testing.assert_array_equal(pred, label)
