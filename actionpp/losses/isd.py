"""ISD-style similarity distillation (ACTION pre-training).

Student and teacher embeddings are compared with a memory bank of past teacher
embeddings; their similarity distributions over the bank are matched:

    p_t = softmax(t . b_j / tau_t),  p_s = softmax(s . b_j / tau_s),  loss = KL(p_t || p_s)

averaged over the batch (all vectors L2-normalised). A small tau_t (0.01) makes the
teacher's distribution sharper than the student's (tau_s = 0.1).

Taught in notebooks/03_contrastive_losses.ipynb.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._util import check_2d, grad_zero

__all__ = ["isd_loss"]


def isd_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    bank: torch.Tensor,
    tau_s: float = 0.1,
    tau_t: float = 0.01,
) -> torch.Tensor:
    """KL(teacher || student) of softmax similarities to ``bank``; returns a scalar.

    ``student`` (B, d), ``teacher`` (B, d), ``bank`` (M, d); all normalised inside.
    loss = mean_b sum_j p_t[b, j] (log p_t[b, j] - log p_s[b, j]) (>= 0, 0 iff the two
    distributions agree). The teacher is used as given: pass it detached. The local
    variant compares window embeddings (``actionpp.models.LocalHead``, pooled by
    ``actionpp.models.local_patches``).
    Empty bank (M = 0) or empty batch gives a grad-carrying 0. M = 1 gives exactly 0
    (both distributions are a single point mass).
    """
    check_2d(student, "student")
    b, d = student.shape
    check_2d(teacher, "teacher", d)
    check_2d(bank, "bank", d)
    if teacher.shape[0] != b:
        raise ValueError(f"teacher must have the {b} rows of student, got shape {tuple(teacher.shape)}")
    if tau_s <= 0 or tau_t <= 0:
        raise ValueError(f"tau_s and tau_t must be > 0, got {tau_s}, {tau_t}")
    if b == 0 or bank.shape[0] == 0:
        return grad_zero(student, teacher)
    s = F.normalize(student, dim=1)  # B x d
    t = F.normalize(teacher, dim=1)  # B x d
    m = F.normalize(bank.to(s), dim=1)  # M x d
    log_ps = torch.log_softmax(s @ m.T / tau_s, dim=1)  # B x M
    log_pt = torch.log_softmax(t @ m.T / tau_t, dim=1)  # B x M
    return (log_pt.exp() * (log_pt - log_ps)).sum(dim=1).mean()
