"""Anatomical contrast (ReCo style, as used by ACTION and ACTION++ fine-tuning).

Operates on already-sampled valid pixels (the engine evaluates the representation
head only there). For every class c present among the pixels:

- prototype r_c = normalised mean of its embeddings (no gradient);
- hard queries: up to ``num_queries`` of its pixels whose confidence is below
  ``strong_threshold``, drawn uniformly without replacement (ReCo draws exactly
  ``num_queries`` with replacement; we take at most the available ones);
- for each query, ``num_negatives`` negative pixels: the negative's class is drawn
  from the other present classes with probabilities softmax(r_c . r_k / tau)
  (ReCo's scheme: classes confusable with c are sampled more), then a uniform
  pixel of that class (with replacement; no gradient);
- InfoNCE with the prototype as the positive: CE([q.r_c, q.n_1..q.n_M] / tau, 0)
  on cosine similarities, mean over the queries.

The loss is the sum of the class terms divided by the number of classes present
(as ReCo); a class with no hard pixel contributes nothing but still counts in the
denominator (ReCo does the same). Fewer than two classes present, or no pixel,
gives a grad-carrying 0.

Taught in notebooks/03_contrastive_losses.ipynb.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ._util import check_2d, grad_zero

__all__ = ["anatomical_contrast_loss", "valid_mask", "negative_similarities"]


class _NegativeSimilarities(torch.autograd.Function):
    """``(queries @ pixels.T).gather(1, idx)``: each query's similarity to its own sampled negatives.

    Forward: one product with every pixel, then the gather (the same numbers as materialising the
    nq x M x d negatives, without the copy). Backward, for the queries only (the pixels are detached):
    the gradient-weighted sum of each query's negatives, one fused gather (``embedding_bag``), instead
    of a dense nq x N gradient and a second product with every pixel.
    """

    @staticmethod
    def forward(ctx: Any, queries: torch.Tensor, pixels: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(pixels, idx)
        return (queries @ pixels.T).gather(1, idx)  # nq x M

    @staticmethod
    @once_differentiable  # the backward is not itself differentiable: a double backward errors, never silently wrong
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        pixels, idx = ctx.saved_tensors
        return F.embedding_bag(idx, pixels, per_sample_weights=grad.to(pixels.dtype), mode="sum"), None, None


def negative_similarities(queries: torch.Tensor, pixels: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``(queries @ pixels.T).gather(1, idx)`` (nq x M) with a gradient for ``queries`` only.

    ``queries`` (nq, d), ``pixels`` (N, d) treated as constants (pass them detached: the anatomical
    contrast's negatives carry no gradient), ``idx`` (nq, M) long: each query's negatives.
    """
    apply = cast(Callable[..., torch.Tensor], _NegativeSimilarities.apply)  # torch types Function.apply loosely
    return apply(queries, pixels.detach(), idx)


def valid_mask(
    labels: torch.Tensor,
    teacher_confidence: torch.Tensor | None = None,
    threshold: float = 0.7,
    ignore_index: int | None = None,
) -> torch.Tensor:
    """Bool mask (same shape as ``labels``) of pixels that may enter the anatomical contrast.

    Labelled pixels (``teacher_confidence=None``): every pixel whose label is not
    ``ignore_index``. Unlabelled pixels (pseudo-labels): the teacher's confidence in
    its argmax is >= ``threshold`` (ACTION: 0.7) and the label is not ``ignore_index``.
    """
    mask = torch.ones_like(labels, dtype=torch.bool)
    if ignore_index is not None:
        mask &= labels != ignore_index
    if teacher_confidence is not None:
        if teacher_confidence.shape != labels.shape:
            raise ValueError(
                f"teacher_confidence shape {tuple(teacher_confidence.shape)} != labels shape {tuple(labels.shape)}"
            )
        mask &= teacher_confidence >= threshold
    return mask


def anatomical_contrast_loss(
    emb: torch.Tensor,
    labels: torch.Tensor,
    confidence: torch.Tensor,
    tau: float,
    num_queries: int = 256,
    num_negatives: int = 512,
    strong_threshold: float = 0.97,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """ReCo-style anatomical contrast on sampled valid pixels (see the module docstring).

    ``emb`` (N, d) student embeddings (normalised inside); ``labels`` (N,) class
    (ground truth or teacher pseudo-label) of each pixel; ``confidence`` (N,) the
    student's predicted probability of ``labels[i]`` at pixel i (hard = below
    ``strong_threshold``). ``generator``: a CPU ``torch.Generator`` for the draws
    (None = global RNG). Returns a scalar; gradients flow through the queries only.
    """
    check_2d(emb, "emb")
    n, d = emb.shape
    if labels.shape != (n,) or confidence.shape != (n,):
        raise ValueError(
            f"labels and confidence must be ({n},), got {tuple(labels.shape)} and {tuple(confidence.shape)}"
        )
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    if num_queries < 1 or num_negatives < 1:
        raise ValueError(f"num_queries and num_negatives must be >= 1, got {num_queries}, {num_negatives}")
    if n == 0:
        return grad_zero(emb)
    dev = emb.device
    v = F.normalize(emb, dim=1)  # N x d
    classes = torch.unique(labels)  # C_p, sorted
    n_cls = classes.numel()
    if n_cls < 2:
        return grad_zero(emb)

    # group pixels by class: order = pixel indices sorted by class; class k occupies
    # order[offsets[k] : offsets[k] + counts[k]]
    order = torch.argsort(labels, stable=True)  # N
    counts = torch.stack([(labels == c).sum() for c in classes])  # C_p
    offsets = torch.cumsum(counts, 0) - counts  # C_p
    with torch.no_grad():
        sums = torch.zeros(n_cls, d, dtype=v.dtype, device=dev)
        sums.index_add_(0, torch.searchsorted(classes, labels), v.detach())
        protos = F.normalize(sums, dim=1)  # C_p x d
        proto_sim = protos @ protos.T / tau  # C_p x C_p

    total = v.new_zeros(())
    hard_all = confidence < strong_threshold  # N
    for k in range(n_cls):  # loop over classes present (<= K)
        members = order[offsets[k] : offsets[k] + counts[k]]  # n_k
        hard = members[hard_all[members]]  # h_k
        if hard.numel() == 0:
            continue  # no hard query: the class adds nothing (still counted below)
        if hard.numel() > num_queries:
            pick = torch.randperm(hard.numel(), generator=generator)[:num_queries].to(dev)
            hard = hard[pick]
        nq = hard.numel()
        with torch.no_grad():
            others = torch.cat([torch.arange(k), torch.arange(k + 1, n_cls)]).to(dev)  # C_p - 1
            probs = torch.softmax(proto_sim[k, others], dim=0)  # C_p - 1
            draw = torch.multinomial(probs.cpu(), nq * num_negatives, replacement=True, generator=generator)
            neg_cls = others[draw.to(dev)]  # nq*M, index into classes
            u = torch.rand(nq * num_negatives, generator=generator, dtype=torch.float64).to(dev)
            within = torch.minimum((u * counts[neg_cls]).long(), counts[neg_cls] - 1)  # nq*M
            neg_idx = order[offsets[neg_cls] + within].view(nq, num_negatives)  # nq x M
        qv = v[hard]  # nq x d
        l_pos = qv @ protos[k].unsqueeze(1)  # nq x 1
        l_neg = negative_similarities(qv, v.detach(), neg_idx)  # nq x M
        logits = torch.cat([l_pos, l_neg], dim=1) / tau  # nq x (1 + M)
        total = total + (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()
    loss: torch.Tensor = total / n_cls + grad_zero(emb)
    return loss
