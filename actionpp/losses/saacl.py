"""SAACL: supervised adaptive anatomical contrastive loss (ACTION++ section 2.2).

For anchor pixel embeddings v_i (student) with label y_i, the candidates of
anchor i are its own teacher view t_i, every queue entry q_1..q_Q (past teacher
embeddings with labels) and the K class centres psi_1..psi_K (row c = centre
assigned to class c). With the softmax over all candidates at temperature tau,

    log p_i(u) = v_i . u / tau - log sum_{w in candidates_i} exp(v_i . w / tau)

and P_i = {t_i} + {q_j : label(q_j) = y_i} (the same-class teacher embeddings),
nu_i = psi_{y_i} (the matched centre), the loss is the mean over anchors of one
of two forms, chosen by ``centre_term``:

- ``"averaged"`` (the official code, TSC.py): the matched centre is one more
  positive, inside the average over positives and counted in its size:

      loss_i = -(1 / (|P_i| + 1)) [ sum_{p in P_i} log p_i(p) + lambda_a log p_i(nu_i) ]

- ``"separate"``: the centre term is weighted by lambda_a outside that average:

      loss_i = -(1 / |P_i|) sum_{p in P_i} log p_i(p)  -  lambda_a log p_i(nu_i)

Why the two differ so much: with a full, class-balanced queue of 12 288 entries
an anchor has ~3 000 same-class positives, so under ``"averaged"`` the centre
term weighs lambda_a / |P_i| ~ 1e-4 and the fixed centres barely act (SAACL is
then supervised pixel contrast with a queue); under ``"separate"`` they keep the
weight lambda_a whatever the queue holds. :func:`centre_gradient_share`
measures the share of the anchors' gradient that the centre term drives.

All embeddings (anchors, teacher views, queue, centres) are L2-normalised
inside, so dot products are cosines.

Taught in notebooks/03_contrastive_losses.ipynb.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from ._util import check_2d, check_labels, grad_zero, logsumexp_against

__all__ = ["saacl_loss", "centre_gradient_share", "CENTRE_TERMS", "CentreTerm"]

CentreTerm = Literal["averaged", "separate"]
"""The two forms of the centre term (the config's ``saacl.centre_term``)."""
CENTRE_TERMS: tuple[CentreTerm, ...] = ("averaged", "separate")


def saacl_loss(
    anchors: torch.Tensor,
    anchor_labels: torch.Tensor,
    teacher_view: torch.Tensor,
    queue: torch.Tensor | None,
    queue_labels: torch.Tensor | None,
    class_centres: torch.Tensor | None,
    tau: float,
    lambda_a: float,
    include_centres_as_candidates: bool = True,
    centre_term: CentreTerm = "averaged",
) -> torch.Tensor:
    """The SAACL loss (see the module docstring); returns a scalar.

    Shapes: ``anchors`` (N, d) student embeddings; ``anchor_labels`` (N,) long;
    ``teacher_view`` (N, d) the teacher's embedding of the same pixels; ``queue``
    (Q, d) and ``queue_labels`` (Q,) (Q may be 0, or both None); ``class_centres``
    (K, d) with row c the centre assigned to class c (``CentreAllocator.class_centres()``)
    or None. ``tau`` > 0; ``lambda_a`` >= 0. ``centre_term``: ``"averaged"`` (official:
    the centre counts as one of the positives, also when ``lambda_a = 0``) or
    ``"separate"`` (see the module docstring).

    - ``lambda_a = 0`` and ``class_centres=None``: plain supervised pixel contrast
      (the ACTION-like ablation).
    - ``include_centres_as_candidates=False``: the centres are not candidates (not
      negatives of anyone); the centre term of anchor i then uses the softmax over
      the other candidates plus nu_i only.
    - Degenerate cases: N = 0 gives a grad-carrying 0; an empty queue leaves only the
      teacher view (and the centres) as candidates; a single class present is fine
      (the own teacher view is always a positive, so |P_i| >= 1 and nothing is NaN).
    Teacher views and queue are used as given: pass detached tensors (the teacher
    runs without gradient).
    """
    check_2d(anchors, "anchors")
    n, d = anchors.shape
    check_2d(teacher_view, "teacher_view", d)
    if teacher_view.shape[0] != n:
        raise ValueError(f"teacher_view must have the {n} rows of anchors, got shape {tuple(teacher_view.shape)}")
    if anchor_labels.shape != (n,):
        raise ValueError(f"anchor_labels must be ({n},), got shape {tuple(anchor_labels.shape)}")
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    if lambda_a < 0:
        raise ValueError(f"lambda_a must be >= 0, got {lambda_a}")
    if centre_term not in CENTRE_TERMS:
        raise ValueError(f"centre_term must be one of {', '.join(CENTRE_TERMS)}, got {centre_term!r}")
    if queue is None:
        queue = anchors.new_zeros(0, d)
        queue_labels = anchor_labels.new_zeros(0)
    check_2d(queue, "queue", d)
    if queue_labels is None or queue_labels.shape != (queue.shape[0],):
        raise ValueError(
            f"queue_labels must be ({queue.shape[0]},), got "
            f"{None if queue_labels is None else tuple(queue_labels.shape)}"
        )
    if anchor_labels.numel() and int(anchor_labels.min()) < 0:
        raise ValueError(f"anchor_labels must be >= 0, got {sorted(set(anchor_labels[anchor_labels < 0].tolist()))}")
    if queue_labels.numel() and int(queue_labels.min()) < 0:
        raise ValueError(f"queue_labels must be >= 0, got {sorted(set(queue_labels[queue_labels < 0].tolist()))}")
    if class_centres is not None:
        check_2d(class_centres, "class_centres", d)
        check_labels(anchor_labels, class_centres.shape[0], "anchor_labels")
    elif lambda_a > 0:
        raise ValueError("lambda_a > 0 needs class_centres")
    if n == 0:
        return grad_zero(anchors, teacher_view)

    dev = anchors.device
    v = F.normalize(anchors, dim=1)  # N x d
    t = F.normalize(teacher_view.to(v), dim=1)  # N x d
    q = F.normalize(queue.to(v), dim=1)  # Q x d
    qlab = queue_labels.to(dev)
    lab = anchor_labels.to(dev)

    vs = v / tau  # N x d, the temperature folded into the anchors (no N x Q division)
    own = (vs * t).sum(dim=1)  # N, logit of the own teacher view
    lse_parts = [own, logsumexp_against(vs, q)]  # N each: log sum_j exp(v.q_j / tau) (-inf for an empty queue)
    if class_centres is not None:
        c = F.normalize(class_centres.to(v), dim=1)  # K x d
        to_centres = vs @ c.T  # N x K
        own_centre = to_centres.gather(1, lab.long().unsqueeze(1)).squeeze(1)  # N
        if include_centres_as_candidates:
            lse_parts.append(torch.logsumexp(to_centres, dim=1))
    # log of the softmax denominator over all candidates, without an N x (1 + Q + K) concatenation
    log_z = torch.logsumexp(torch.stack(lse_parts), dim=0)  # N

    # same-label queue entries, without an N x Q mask: sum_{q: label y} v.q = v . (sum of those q)
    n_lab = int(max(int(lab.max()), int(qlab.max()) if qlab.numel() else 0)) + 1
    q_sum = torch.zeros(n_lab, d, dtype=v.dtype, device=dev).index_add_(0, qlab.long(), q)  # L x d
    q_cnt = torch.bincount(qlab.long(), minlength=n_lab).to(v.dtype)  # L
    n_same = q_cnt[lab.long()]  # N, same-label queue entries per anchor
    pos_logits = (vs * q_sum[lab.long()]).sum(dim=1)  # N, sum of v.q/tau over P_i's queue part
    pos_sum = own - log_z + pos_logits - n_same * log_z  # N, sum over P_i of log softmax
    n_pos = 1.0 + n_same  # N, |P_i| >= 1 (the own teacher view is always a positive)
    if class_centres is None:
        return -(pos_sum / n_pos).mean()
    if include_centres_as_candidates:
        log_p_centre = own_centre - log_z  # N
    else:
        log_p_centre = own_centre - torch.logaddexp(log_z, own_centre)  # N
    if centre_term == "averaged":  # the centre is one more positive: |P_i| + 1
        return -((pos_sum + lambda_a * log_p_centre) / (n_pos + 1.0)).mean()
    return -(pos_sum / n_pos + lambda_a * log_p_centre).mean()


def centre_gradient_share(
    anchors: torch.Tensor,
    anchor_labels: torch.Tensor,
    teacher_view: torch.Tensor,
    queue: torch.Tensor | None,
    queue_labels: torch.Tensor | None,
    class_centres: torch.Tensor,
    tau: float,
    lambda_a: float,
    centre_term: CentreTerm = "averaged",
) -> float:
    """Share of the SAACL gradient on the anchors that the centre term drives, in [0, 1].

    Both forms of the loss are affine in ``lambda_a`` (the denominator of
    ``"averaged"`` does not depend on it), so the centre term's gradient is
    g_c = g(lambda_a) - g(0) and the rest's is g_r = g(0). The result is
    ``||g_c|| / (||g_c|| + ||g_r||)`` (Frobenius norms over all anchors): 0 when the
    centres do not act, 0.5 when they pull as hard as the positives and negatives
    together, 0 for a zero gradient. Arguments as :func:`saacl_loss`; nothing is
    accumulated into ``anchors.grad``.
    """
    a = anchors.detach().requires_grad_(True)
    full = saacl_loss(
        a,
        anchor_labels,
        teacher_view,
        queue,
        queue_labels,
        class_centres,
        tau=tau,
        lambda_a=lambda_a,
        centre_term=centre_term,
    )
    (g_full,) = torch.autograd.grad(full, a)
    a0 = anchors.detach().requires_grad_(True)
    rest = saacl_loss(
        a0,
        anchor_labels,
        teacher_view,
        queue,
        queue_labels,
        class_centres,
        tau=tau,
        lambda_a=0.0,
        centre_term=centre_term,
    )
    (g_rest,) = torch.autograd.grad(rest, a0)
    n_centre, n_rest = float((g_full - g_rest).norm()), float(g_rest.norm())
    return n_centre / (n_centre + n_rest) if n_centre + n_rest > 0 else 0.0
