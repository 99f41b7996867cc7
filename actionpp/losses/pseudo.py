"""Unsupervised pseudo-label loss on unlabelled images (ACTION / ReCo fine-tuning).

Taught in notebooks/03_contrastive_losses.ipynb.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["pseudo_label_loss"]


def pseudo_label_loss(
    student_logits: torch.Tensor, teacher_probs: torch.Tensor, threshold: float = 0.97
) -> torch.Tensor:
    """Cross-entropy to the teacher's argmax, weighted per image by its share of confident pixels.

    ``student_logits`` (B, C, *spatial); ``teacher_probs`` (B, C, *spatial) softmax
    probabilities (treated as constants). With y = argmax_c teacher_probs and
    w_b = fraction of image b's pixels with max_c teacher_probs >= ``threshold``:

        loss = mean_{b, pixels} w_b * CE(student_logits, y)

    (ReCo averages only over pixels whose weighted loss is non-zero; with float
    losses that differs only when an image has w_b = 0.) An image with no confident
    pixel contributes 0; all images unconfident gives a grad-carrying 0.
    """
    if student_logits.ndim < 3 or student_logits.shape != teacher_probs.shape:
        raise ValueError(
            f"student_logits (B, C, *spatial) and teacher_probs must have the same shape, got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_probs.shape)}"
        )
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    with torch.no_grad():
        conf, target = teacher_probs.detach().max(dim=1)  # B x *, B x *
        weight = (conf >= threshold).flatten(1).to(student_logits.dtype).mean(dim=1)  # B
    ce = F.cross_entropy(student_logits, target, reduction="none")  # B x *
    w = weight.view(-1, *([1] * (ce.ndim - 1)))
    return (w * ce).mean()
