"""Test-time inference: slice-wise 2D (SSL4MIS, ACDC) and sliding-window 3D (UA-MT, LA).

- ``predict_slices``: each slice ``(H, W)`` is resized to ``size x size`` with
  ``scipy.ndimage.zoom(order=0)`` (nearest neighbour, exactly SSL4MIS's call),
  the batch of slices goes through the model, the softmax argmax is resized back
  with the same nearest-neighbour zoom, and the slices are stacked ``(S, H, W)``.
  One deliberate difference: ``mode="nearest"`` instead of zoom's default
  ``"constant"``, which can blank the last row / column (see ``_zoom_to``).
- ``sliding_window``: UA-MT's ``test_single_case``: zero-pad each axis to at least
  the patch size (split evenly, the extra voxel after), place windows at
  ``min(i * stride, size - patch)`` for ``i = 0 .. ceil((size - patch) / stride)``
  (so the last window touches the far border), average the softmax of every
  window covering a voxel, argmax, crop the padding off. Windows go through the
  model ``batch_size`` at a time.

Window counts of the real LA volumes with patch 112 x 112 x 80 and strides
18 / 18 / 4: ``count_windows((183, 140, 88))`` = 5 x 3 x 3 = 45, (199, 143, 88)
-> 6 x 3 x 3 = 54, (212, 141, 88) -> 7 x 3 x 3 = 63, (180, 135, 88) -> 5 x 3 x 3
= 45, (175, 132, 88) -> 5 x 3 x 3 = 45; a V-Net forward costs the same for
each, so a test volume is 45-63 V-Net forwards.

Both functions put the model in eval mode, run without gradients, take the
device from the model's parameters when ``device`` is None, and restore the
model's training flag afterwards (the official ACTION++ 3D test script never
calls ``eval()``, so its BatchNorm normalises with window statistics and its
dropout stays on; method.md section 8). Taught in notebooks/04_train.ipynb.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor, nn

__all__ = ["predict_slices", "sliding_window", "window_starts", "count_windows", "model_device"]


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter (or buffer); CPU for a module without either."""
    for p in model.parameters():
        return p.device
    for buf in model.buffers():
        return buf.device
    return torch.device("cpu")


def _as_numpy(image: np.ndarray | Tensor, name: str, ndim: int) -> np.ndarray:
    a = image.detach().cpu().numpy() if isinstance(image, Tensor) else np.asarray(image)
    if a.ndim != ndim:
        raise ValueError(f"{name} expects a {ndim}D image, got shape {a.shape}")
    if any(s == 0 for s in a.shape):
        raise ValueError(f"{name} got an empty image of shape {a.shape}")
    return a.astype(np.float32, copy=False)


def _zoom_to(a: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour ``scipy.ndimage.zoom`` of a 2D array to ``shape`` (SSL4MIS's call, edge-safe).

    SSL4MIS keeps zoom's default ``mode="constant"``: when float rounding puts the
    last output row / column a hair beyond the input, it is filled with 0
    (background) instead of the edge value; e.g. 50 -> 64 -> 50 columns blanks
    column 49. ``mode="nearest"`` clamps instead and changes nothing else.
    """
    out = ndimage.zoom(a, (shape[0] / a.shape[0], shape[1] / a.shape[1]), order=0, mode="nearest")
    if out.shape != tuple(shape):  # zoom rounds the output shape; never observed, but be explicit
        raise RuntimeError(f"zoom produced {out.shape}, expected {tuple(shape)}")
    return out


@torch.no_grad()
def predict_slices(
    model: nn.Module,
    image: np.ndarray | Tensor,
    size: int = 256,
    batch_size: int = 16,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Slice-wise prediction of a stack ``image (S, H, W)`` -> labels ``(S, H, W) uint8``.

    ``model`` maps ``(B, 1, size, size)`` to logits ``(B, K, size, size)``.
    """
    img = _as_numpy(image, "predict_slices", 3)
    if size < 1 or batch_size < 1:
        raise ValueError(f"size and batch_size must be >= 1, got {size}, {batch_size}")
    dev = torch.device(device) if device is not None else model_device(model)
    was_training = model.training
    model.eval()
    try:
        s, h, w = img.shape
        small = np.stack([_zoom_to(sl, (size, size)) for sl in img])  # (S, size, size)
        labels = np.empty((s, size, size), dtype=np.uint8)
        for i in range(0, s, batch_size):
            x = torch.from_numpy(small[i : i + batch_size]).to(dev)[:, None]  # (b, 1, size, size)
            logits = model(x)  # (b, K, size, size)
            if logits.ndim != 4 or logits.shape[0] != x.shape[0] or logits.shape[2:] != x.shape[2:]:
                raise ValueError(f"model returned {tuple(logits.shape)} for input {tuple(x.shape)}")
            labels[i : i + batch_size] = torch.softmax(logits.float(), dim=1).argmax(dim=1).cpu().numpy()
        return np.stack([_zoom_to(lab, (h, w)) for lab in labels]).astype(np.uint8)
    finally:
        model.train(was_training)


def window_starts(size: int, patch: int, stride: int) -> list[int]:
    """Start indices along one (already padded, ``size >= patch``) axis, UA-MT's rule.

    ``[min(i * stride, size - patch) for i in range(ceil((size - patch) / stride) + 1)]``.
    """
    if size < patch:
        raise ValueError(f"axis of size {size} is smaller than the patch {patch}: pad first")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    n = math.ceil((size - patch) / stride) + 1
    return [min(i * stride, size - patch) for i in range(n)]


def count_windows(
    shape: Sequence[int], patch: Sequence[int] = (112, 112, 80), stride: Sequence[int] = (18, 18, 4)
) -> int:
    """Number of sliding windows over a volume of ``shape`` (after padding to the patch)."""
    return math.prod(len(window_starts(max(s, p), p, st)) for s, p, st in zip(shape, patch, stride))


@torch.no_grad()
def sliding_window(
    model: nn.Module,
    image: np.ndarray | Tensor,
    patch: Sequence[int] = (112, 112, 80),
    stride: Sequence[int] = (18, 18, 4),
    num_classes: int = 2,
    device: torch.device | str | None = None,
    batch_size: int = 4,
) -> tuple[np.ndarray, np.ndarray]:
    """UA-MT sliding-window inference of ``image (X, Y, Z)``.

    Returns ``(pred (X, Y, Z) uint8, probs (num_classes, X, Y, Z) float32)``, the
    averaged softmax cropped back to the input. ``model`` maps
    ``(B, 1, *patch)`` to logits ``(B, num_classes, *patch)``.
    """
    img = _as_numpy(image, "sliding_window", 3)
    patch = tuple(int(p) for p in patch)
    stride = tuple(int(s) for s in stride)
    if len(patch) != 3 or len(stride) != 3 or min(patch) < 1 or min(stride) < 1:
        raise ValueError(f"patch and stride need 3 positive entries, got {patch} and {stride}")
    if batch_size < 1 or num_classes < 1:
        raise ValueError(f"batch_size and num_classes must be >= 1, got {batch_size}, {num_classes}")
    dev = torch.device(device) if device is not None else model_device(model)
    pads = [(max(p - s, 0) // 2, max(p - s, 0) - max(p - s, 0) // 2) for s, p in zip(img.shape, patch)]
    padded = np.pad(img, pads, mode="constant", constant_values=0) if any(sum(p) for p in pads) else img
    vol = torch.from_numpy(np.ascontiguousarray(padded)).to(dev)  # (X', Y', Z')
    corners = [
        (x, y, z)
        for x in window_starts(vol.shape[0], patch[0], stride[0])
        for y in window_starts(vol.shape[1], patch[1], stride[1])
        for z in window_starts(vol.shape[2], patch[2], stride[2])
    ]
    score = torch.zeros((num_classes, *vol.shape), dtype=torch.float32, device=dev)
    count = torch.zeros(vol.shape, dtype=torch.float32, device=dev)
    px, py, pz = patch
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(corners), batch_size):
            chunk = corners[i : i + batch_size]
            x = torch.stack([vol[a : a + px, b : b + py, c : c + pz] for a, b, c in chunk])[:, None]
            logits = model(x)  # (b, K, px, py, pz)
            if tuple(logits.shape) != (len(chunk), num_classes, px, py, pz):
                raise ValueError(
                    f"model returned {tuple(logits.shape)} for windows {tuple(x.shape)}; "
                    f"expected {num_classes} classes"
                )
            probs = torch.softmax(logits.float(), dim=1)
            for (a, b, c), p in zip(chunk, probs):
                score[:, a : a + px, b : b + py, c : c + pz] += p
                count[a : a + px, b : b + py, c : c + pz] += 1
    finally:
        model.train(was_training)
    score /= count[None]  # every voxel is covered: the last window touches each far border
    crop = tuple(slice(lo, lo + s) for (lo, _), s in zip(pads, img.shape))
    index = (slice(None), *crop)  # every class, the unpadded volume
    probs_out = score[index]
    pred = probs_out.argmax(dim=0).to(torch.uint8)
    return pred.cpu().numpy(), probs_out.cpu().numpy()
