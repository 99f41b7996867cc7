"""Supervised segmentation loss: 0.5 (cross-entropy + soft Dice), as in SSL4MIS.

Taught in notebooks/03_contrastive_losses.ipynb.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._util import check_labels

__all__ = ["supervised_loss", "dice_loss", "check_segmentation_inputs"]


def check_segmentation_inputs(logits: torch.Tensor, target: torch.Tensor) -> None:
    """``logits`` (B, C, *spatial) float, ``target`` (B, *spatial) integer in [0, C); else ValueError."""
    if logits.ndim < 3:
        raise ValueError(f"logits must be (B, C, *spatial), got shape {tuple(logits.shape)}")
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}: "
            f"expected {tuple(logits.shape[:1] + logits.shape[2:])}"
        )
    check_labels(target, logits.shape[1], "target")


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """Soft Dice loss over all classes (background included), SSL4MIS ``DiceLoss(softmax=True)``.

    p = softmax(logits, dim=1), g = one_hot(target); per class c, over the whole batch:
    dice_c = 1 - (2 sum p_c g_c + smooth) / (sum p_c^2 + sum g_c^2 + smooth);
    returns the mean of dice_c over the C classes. A class absent from target and
    never predicted gives ~0; absent from target but predicted gives ~1.
    """
    check_segmentation_inputs(logits, target)
    c = logits.shape[1]
    p = torch.softmax(logits, dim=1)  # B x C x *
    g = F.one_hot(target.long(), c).movedim(-1, 1).to(p.dtype)  # B x C x *
    dims = [0] + list(range(2, p.ndim))
    inter = (p * g).sum(dim=dims)  # C
    z = (p * p).sum(dim=dims)  # C
    y = (g * g).sum(dim=dims)  # C
    return (1.0 - (2.0 * inter + smooth) / (z + y + smooth)).mean()


def supervised_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """0.5 * (cross-entropy + soft Dice): ``logits`` (B, C, *spatial), ``target`` (B, *spatial) long.

    Cross-entropy is the mean over all pixels; Dice is :func:`dice_loss`. Labels outside
    [0, C) raise ``ValueError`` naming the bad values. Returns a scalar.
    """
    check_segmentation_inputs(logits, target)
    ce = F.cross_entropy(logits, target.long())
    return 0.5 * (ce + dice_loss(logits, target))
