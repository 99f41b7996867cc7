"""Mean-teacher consistency (SSL4MIS): the loss, the teacher's input noise and the ramp-up.

The student sees the clean unlabelled batch, the EMA teacher the same batch plus
Gaussian noise N(0, std^2) clipped to +-2 std (SSL4MIS: std 0.1); the loss is the
mean squared difference of their softmax outputs, weighted by
``weight * sigmoid_rampup(iteration, length)`` (Laine & Aila's ``exp(-5 (1 - t)^2)``).

Taught in notebooks/04_train.ipynb.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["consistency_loss", "teacher_input_noise", "sigmoid_rampup"]


def consistency_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """``mean((softmax(student_logits) - teacher_probs)^2)`` over every element.

    ``student_logits`` (B, C, *spatial); ``teacher_probs`` (B, C, *spatial) probabilities,
    used as given (pass them detached).
    """
    if student_logits.shape != teacher_probs.shape:
        raise ValueError(
            f"student_logits and teacher_probs must have the same shape, got {tuple(student_logits.shape)} "
            f"and {tuple(teacher_probs.shape)}"
        )
    return F.mse_loss(torch.softmax(student_logits, 1), teacher_probs)


def teacher_input_noise(x: torch.Tensor, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gaussian noise of ``x``'s shape with standard deviation ``std``, clipped to ``[-2 std, 2 std]``."""
    if std < 0:
        raise ValueError(f"std must be >= 0, got {std}")
    noise = torch.randn(x.shape, generator=generator, device=x.device) * std
    return torch.clamp(noise, -2 * std, 2 * std)


def sigmoid_rampup(it: int, length: int) -> float:
    """SSL4MIS / Laine & Aila ramp-up ``exp(-5 (1 - t)^2)``, t = clip(it / length, 0, 1); 1 when length is 0."""
    if length <= 0:
        return 1.0
    t = min(max(it / length, 0.0), 1.0)
    return float(math.exp(-5.0 * (1.0 - t) ** 2))
