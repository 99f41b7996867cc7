"""Small shared helpers of the loss modules (not public API)."""

from __future__ import annotations

import torch


def grad_zero(*tensors: torch.Tensor) -> torch.Tensor:
    """A scalar 0 connected to the autograd graph of ``tensors`` (so ``backward()`` works).

    Used as the defined value of a loss in a degenerate case (no anchor, one class,
    everything ignored): gradients are exactly zero, never NaN.
    """
    out = None
    for t in tensors:
        if t is None:
            continue
        term = t.sum() * 0.0  # the sum of an empty tensor is 0 too
        out = term if out is None else out + term
    if out is None:
        raise ValueError("grad_zero needs at least one tensor")
    return out


def check_labels(labels: torch.Tensor, num_classes: int, name: str = "labels") -> None:
    """Raise ``ValueError`` naming the bad values if ``labels`` leaves [0, num_classes)."""
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got {labels.dtype}")
    if labels.numel() == 0:
        return
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.numel():
        vals = sorted(set(bad.unique().tolist()))
        shown = vals[:10] + (["..."] if len(vals) > 10 else [])
        raise ValueError(f"{name} must be in [0, {num_classes}), got out-of-range value(s) {shown}")


def check_2d(x: torch.Tensor, name: str, dim: int | None = None) -> None:
    if x.ndim != 2 or (dim is not None and x.shape[1] != dim):
        want = f"(N, {dim})" if dim is not None else "(N, d)"
        raise ValueError(f"{name} must be {want}, got shape {tuple(x.shape)}")
