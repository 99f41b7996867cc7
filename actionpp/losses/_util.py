"""Small shared helpers of the loss modules (not public API)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
from torch.autograd.function import once_differentiable


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
        vals = sorted(set(bad.tolist()))
        shown = vals[:10] + (["..."] if len(vals) > 10 else [])
        raise ValueError(f"{name} must be in [0, {num_classes}), got out-of-range value(s) {shown}")


def check_2d(x: torch.Tensor, name: str, dim: int | None = None) -> None:
    if x.ndim != 2 or (dim is not None and x.shape[1] != dim):
        want = f"(N, {dim})" if dim is not None else "(N, d)"
        raise ValueError(f"{name} must be {want}, got shape {tuple(x.shape)}")


class _LogSumExpAgainst(torch.autograd.Function):
    """``logsumexp(a @ b.T, dim=1)`` with the gradient for ``a`` only, in row chunks (see below)."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, b: torch.Tensor, chunk: int) -> torch.Tensor:
        lse = a.new_empty(a.shape[0])  # N
        grad_dir = a.new_empty(a.shape) if ctx.needs_input_grad[0] else None  # N x d: softmax(a b^T) @ b
        for s in range(0, a.shape[0], chunk):
            logits = a[s:s + chunk] @ b.T  # n x Q
            top = logits.amax(dim=1, keepdim=True)  # n x 1
            logits.sub_(top).exp_()  # in place: exp(logit - max)
            z = logits.sum(dim=1, keepdim=True)  # n x 1
            lse[s:s + chunk] = (top + z.log()).squeeze(1)
            if grad_dir is not None:
                grad_dir[s:s + chunk] = (logits / z) @ b  # n x d, d lse_i / d a_i
        ctx.save_for_backward(grad_dir)
        return lse

    @staticmethod
    @once_differentiable  # the backward is not itself differentiable: a double backward errors, never silently wrong
    def backward(ctx: Any, grad_lse: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        (grad_dir,) = ctx.saved_tensors
        return (grad_lse[:, None] * grad_dir if grad_dir is not None else None), None, None


def logsumexp_against(a: torch.Tensor, b: torch.Tensor, chunk_elements: int = 1 << 22) -> torch.Tensor:
    """``torch.logsumexp(a @ b.T, dim=1)`` for ``a`` (N, d) and ``b`` (Q, d), Q >= 1: shape (N,).

    When ``b`` needs no gradient (SAACL's queue: detached teacher embeddings), the N x Q
    similarities are never held whole: rows of ``a`` go in chunks of about ``chunk_elements``
    entries, and the gradient for ``a`` (the softmax-weighted mean of ``b``) is formed in the same
    pass, so the backward is one multiplication. Otherwise the plain autograd expression.
    """
    if b.requires_grad or b.shape[0] == 0:
        return torch.logsumexp(a @ b.T, dim=1)
    chunk = max(1, chunk_elements // max(b.shape[0], 1))
    apply = cast(Callable[..., torch.Tensor], _LogSumExpAgainst.apply)  # torch types Function.apply loosely
    return apply(a, b, chunk)
