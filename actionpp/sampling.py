"""Pixel sampling: the one sampler behind training, the embedding studies and the notebooks.

The contrastive losses read the representation head at a few hundred pixels per
class, never densely (``RepresentationHead.forward_at``, method.md section 9). This
module draws those pixels and reads tensors at them:

- :func:`sample_pixels`: up to ``per_class`` pixels of each class, uniformly among the
  valid pixels of that class (all of them when a class has fewer), from a seeded
  generator on the labels' device;
- :func:`sample_natural`: ``total`` pixels uniformly among all pixels (the class
  shares of the data, for embedding maps);
- :func:`embed_at`: the head's embeddings at sampled coordinates;
- :func:`gather_pixels`: a dense ``(B, C, *spatial)`` tensor read at sampled coordinates.

Coordinates are rows ``(b, y, x)`` (3D: ``(b, x, y, z)``) of a LongTensor ``(N, 1 + nd)``.

Taught in notebooks/03_contrastive_losses.ipynb (anchors) and notebooks/05_embeddings.ipynb.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor

__all__ = ["sample_pixels", "sample_natural", "embed_at", "gather_pixels", "PixelHead"]


class PixelHead(Protocol):
    """What :func:`embed_at` needs of a head (``actionpp.models.RepresentationHead``)."""

    def forward_at(
        self, decoder_maps: Sequence[Tensor], out_size: Sequence[int], b: Tensor, ys: Tensor, xs: Tensor,
        zs: Tensor | None = None,
    ) -> Tensor: ...


def sample_pixels(
    labels: Tensor,
    num_classes: int,
    per_class: int,
    generator: torch.Generator | None = None,
    valid: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Up to ``per_class`` uniformly drawn valid pixels of each class.

    ``labels`` ``(B, *spatial)`` (or ``(N,)``) integer class maps; ``valid`` a bool mask of
    the same shape (None = every pixel). Returns ``(idx (M, labels.ndim) long, lab (M,))``:
    the coordinates of the picks and their classes, class-major (class 0's picks first).
    Classes with fewer valid pixels give all of them; absent classes give none.

    One uniform score per pixel from ``generator`` (on the labels' device), the
    ``per_class`` smallest scores per class win: a uniform subset without replacement,
    batched over classes, with one host read (the number of picks) to size the result.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    if valid is None:
        valid = torch.ones_like(labels, dtype=torch.bool)
    if valid.shape != labels.shape:
        raise ValueError(f"valid must have the labels' shape {tuple(labels.shape)}, got {tuple(valid.shape)}")
    flat_lab = labels.reshape(-1)  # (n,)
    flat_valid = valid.reshape(-1)  # (n,)
    n = flat_lab.numel()
    classes = torch.arange(num_classes, device=labels.device)
    if n == 0:
        return torch.zeros(0, labels.ndim, dtype=torch.long, device=labels.device), classes[:0]
    member = flat_valid[None, :] & (flat_lab[None, :] == classes[:, None])  # (K, n)
    scores = torch.rand(n, generator=generator, device=labels.device)  # one uniform score per pixel
    scores = torch.where(member, scores[None, :], torch.full_like(scores, 2.0)[None, :])  # (K, n), 2 = not a member
    vals, order = torch.topk(scores, min(per_class, n), dim=1, largest=False)  # (K, k): a uniform subset per class
    keep = vals < 2.0  # (K, k)
    flat_idx = order[keep]  # (M,), class-major; the one host read of this function
    lab = classes[:, None].expand_as(order)[keep]  # (M,)
    coords = torch.stack(torch.unravel_index(flat_idx, labels.shape), dim=1)  # (M, labels.ndim)
    return coords, lab


def sample_natural(labels: Tensor, total: int, generator: torch.Generator | None = None) -> Tensor:
    """``min(total, labels.numel())`` coordinates ``(M, labels.ndim)`` drawn uniformly without replacement."""
    if total < 1:
        raise ValueError(f"total must be >= 1, got {total}")
    k = min(total, labels.numel())
    chosen = torch.randperm(labels.numel(), generator=generator, device=labels.device)[:k]
    return torch.stack(torch.unravel_index(chosen, labels.shape), dim=1)


def embed_at(head: PixelHead, maps: Sequence[Tensor], size: tuple[int, ...], idx: Tensor) -> Tensor:
    """Head embeddings at pixel coordinates ``idx (N, 1 + nd)`` -> ``(N, dim)``."""
    cols = [idx[:, i] for i in range(idx.shape[1])]
    if len(cols) == 3:
        return head.forward_at(maps, size, cols[0], cols[1], cols[2])
    return head.forward_at(maps, size, cols[0], cols[1], cols[2], cols[3])


def gather_pixels(dense: Tensor, idx: Tensor) -> Tensor:
    """``dense (B, C, *spatial)`` at ``idx (N, 1 + nd)`` -> ``(N, C)``."""
    moved = dense.movedim(1, -1)  # (B, *spatial, C)
    return moved[tuple(idx[:, i] for i in range(idx.shape[1]))]
