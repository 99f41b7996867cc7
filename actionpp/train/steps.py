"""One training iteration of each phase, read top to bottom:

    batch -> augment -> teacher -> pixels -> student -> objective -> optimiser -> queues and EMA

:func:`pretrain_step` (ACTION / ACTION++ pre-training) and :func:`finetune_step`
(every method's fine-tuning) return the detached loss terms (``total`` included) and the
temperatures used; with ``diagnose`` (log iterations) they also measure each weighted
term's gradient on the backbone (:func:`gradient_shares`) into ``diagnostics``.

Choices (each visible below):

- the teacher sees the weak view; the student the strong one (pre-training: photometric;
  fine-tuning: CutMix / ClassMix + jitter + blur of the unlabelled batch, the teacher's
  targets mixed alike); mean teacher (SSL4MIS): the student sees the clean unlabelled
  batch and the teacher the same batch plus clipped Gaussian noise;
- the pixel coordinates are drawn before the student's forward and passed into it, so
  the representation head runs inside DistributedDataParallel's forward;
- SAACL's teacher view is the teacher's representation head at the anchors' pixels of
  the same (weak) labelled view; the queue is pushed after the update.

Taught in notebooks/04_train.ipynb.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from actionpp.losses.anatomical import valid_mask
from actionpp.losses.consistency import teacher_input_noise
from actionpp.models.segmodel import PixelQuery, SegOutput
from actionpp.sampling import embed_at, sample_pixels
from actionpp.train.batches import BatchSource
from actionpp.train.objective import Objective, SaaclBatch, UnlabelledTargets, weighted_total
from actionpp.train.state import TrainerState

__all__ = ["pretrain_step", "finetune_step", "gradient_shares", "autocast"]


def autocast(device: torch.device, mode: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast when ``runtime.amp`` is ``bf16``, or ``auto`` on CUDA; else nothing."""
    use = (mode == "bf16") or (mode == "auto" and device.type == "cuda")
    if not use:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def pretrain_step(
    st: TrainerState, batches: BatchSource, objective: Objective, phase_it: int,
    diagnostics: dict[str, Any] | None = None,
) -> dict[str, Tensor]:
    """Supervised + ISD global + local distillation (one iteration)."""
    cfg = st.cfg
    assert st.teacher is not None and st.bank_g is not None and st.bank_l is not None
    tau_s, tau_t = objective.tau("isd_s", phase_it), objective.tau("isd_t", phase_it)
    # batch and augmentation: the weak view of labelled + unlabelled images, and its photometric strong view
    x_l, y_l = batches.labelled()
    x_u = batches.unlabelled()
    x_weak = st.layout(torch.cat([x_l, x_u]))  # (B_l + B_u, C, ...)
    x_strong = st.layout(batches.photometric(x_weak))
    # teacher: ISD projections of the weak view
    with torch.no_grad(), autocast(st.device, cfg.runtime.amp):
        _, t_feat = st.teacher.model.net.forward_features(x_weak)
        t_g = st.teacher.model.g_head(t_feat.bottleneck).float()  # (B, d)
        t_l = st.teacher.model.l_head(t_feat.decoder[-1]).float().flatten(0, 1)  # (B*P, d)
    bank_g, bank_l = st.bank_g.embeddings, st.bank_l.embeddings  # (n <= size, d), oldest first
    # student and objective
    with autocast(st.device, cfg.runtime.amp):
        out: SegOutput = st.ddp(x_strong, isd=True)
    terms = objective.pretrain_terms(out, y_l, t_g, t_l, bank_g, bank_l, tau_s, tau_t)
    weights = objective.pretrain_weights()
    total = weighted_total(terms, weights)
    if diagnostics is not None:
        diagnostics.update(gradient_shares(st, terms, weights))
    _optimise(st, total)
    st.bank_g.push(t_g)
    st.bank_l.push(t_l)
    st.teacher.update(st.student, cfg.train.ema_momentum)
    result = {k: v.detach() for k, v in terms.items()}
    result["total"] = total.detach()
    result["tau_s"] = torch.tensor(tau_s)
    result["tau_t"] = torch.tensor(tau_t)
    return result


def finetune_step(
    st: TrainerState, batches: BatchSource, objective: Objective, phase_it: int,
    diagnostics: dict[str, Any] | None = None,
) -> dict[str, Tensor]:
    """One fine-tuning iteration with every switched-on term."""
    cfg = st.cfg
    m = cfg.method
    k = cfg.data.num_classes
    tau_anco, tau_saacl = objective.tau("anco", phase_it), objective.tau("saacl", phase_it)

    # ---- batch
    x_l, y_l = batches.labelled()
    b_l = x_l.shape[0]
    uses_unlab = m.unsup or m.consistency or m.anco
    x_u = batches.unlabelled() if uses_unlab else None

    # ---- teacher (weak view; mean teacher: with input noise) and the student's view of the unlabelled batch
    x_u_student: Tensor | None = None
    targets: UnlabelledTargets | None = None
    t_maps_l: list[Tensor] | None = None
    if uses_unlab or m.saacl:
        assert st.teacher is not None
        with torch.no_grad(), autocast(st.device, cfg.runtime.amp):
            if m.consistency and x_u is not None:
                t_in = [x_u + teacher_input_noise(x_u, cfg.loss.consistency_noise, st.gen_aug)]
            else:
                t_in = [x_u] if x_u is not None else []
            if m.saacl:
                t_in = [x_l] + t_in
            t_logits, t_feat = st.teacher.model.net.forward_features(st.layout(torch.cat(t_in)))
            t_logits = t_logits.float()
            off = b_l if m.saacl else 0
            if m.saacl:
                t_maps_l = [f[:b_l] for f in st.teacher.model.rep_maps(t_feat)]
            if x_u is not None:
                t_prob_u = torch.softmax(t_logits[off:], dim=1)  # (B_u, K, ...)
                t_conf_u, t_label_u = t_prob_u.max(dim=1)  # (B_u, ...)
        if x_u is not None:
            if m.consistency:
                x_u_student = x_u  # SSL4MIS mean teacher: the student sees the clean unlabelled batch
            else:
                # strong view: CutMix / ClassMix of the weak view (teacher targets mixed alike), jitter, blur
                x_u_student, t_prob_u = batches.mix(x_u, t_prob_u, t_label_u)
                t_conf_u, t_label_u = t_prob_u.max(dim=1)
                x_u_student = batches.photometric(x_u_student)
            targets = UnlabelledTargets(t_prob_u, t_conf_u, t_label_u)
    x_in = st.layout(torch.cat([x_l, x_u_student]) if x_u_student is not None else x_l)
    size = tuple(x_in.shape[2:])

    # ---- pixels: AnCo candidates (labelled ground truth + confident pseudo-labels), SAACL anchors (ground truth)
    queries: dict[str, PixelQuery] = {}
    anco_idx = anco_lab = None
    if m.anco:
        labels, valid = y_l, valid_mask(y_l)
        if targets is not None:
            labels = torch.cat([y_l, targets.labels])
            valid = torch.cat([valid, valid_mask(targets.labels, targets.confidence, cfg.anco.weak_threshold)])
        anco_idx, anco_lab = sample_pixels(labels, k, cfg.anco.pixels_per_class, st.gen_loss, valid)
        queries["anco"] = PixelQuery(anco_idx)
    saacl: SaaclBatch | None = None
    if m.saacl:
        assert st.teacher is not None and t_maps_l is not None
        s_idx, s_lab = sample_pixels(y_l, k, cfg.saacl.anchors_per_class, st.gen_loss)
        queries["saacl"] = PixelQuery(s_idx, rows=b_l)

    # ---- student
    with autocast(st.device, cfg.runtime.amp):
        split = b_l if cfg.train.finetune_forward == "separate" and x_u_student is not None else None
        out: SegOutput = st.ddp(x_in, embed=queries, split=split)
    if m.saacl:
        assert st.teacher is not None and t_maps_l is not None
        # under the same autocast as the student's head: with bf16 the teacher's maps are bf16 (a no-op in fp32)
        with torch.no_grad(), autocast(st.device, cfg.runtime.amp):
            t_emb = F.normalize(embed_at(st.teacher.model.rep, t_maps_l, size, s_idx).float(), dim=1)
        saacl = SaaclBatch(s_lab, t_emb)

    # ---- objective and update
    terms = objective.finetune_terms(
        out, y_l, targets if x_u_student is not None else None, anco_lab, anco_idx, saacl, st.allocator, st.queue,
        tau_anco, tau_saacl, st.gen_cpu, diagnostics,
    )
    weights = objective.finetune_weights(phase_it)
    total = weighted_total(terms, weights)
    if diagnostics is not None:
        diagnostics.update(gradient_shares(st, terms, weights))
    _optimise(st, total)
    if saacl is not None and st.queue is not None:
        st.queue.push(saacl.teacher, saacl.labels)
    if st.teacher is not None:
        st.teacher.update(st.student, cfg.train.ema_momentum)
    result = {k: v.detach() for k, v in terms.items()}
    result["total"] = total.detach()
    if m.anco:
        result["tau"] = torch.tensor(tau_anco)
    if m.saacl:
        result["tau_saacl"] = torch.tensor(tau_saacl)
    return result


def _optimise(st: TrainerState, total: Tensor) -> None:
    assert st.optimizer is not None
    st.optimizer.zero_grad(set_to_none=True)
    total.backward()
    st.optimizer.step()


def gradient_shares(st: TrainerState, terms: Mapping[str, Tensor], weights: Mapping[str, float]) -> dict[str, float]:
    """Each weighted term's gradient on the backbone (``net``), before the update.

    Returns ``grad/<term>`` = ||w_k dL_k/dtheta|| and ``share/<term>`` = (w_k g_k . g) / ||g||^2
    with g = sum_k w_k g_k the update direction (the shares sum to 1; a negative share pulls
    against the update). One extra backward per term, at log iterations only; no random
    numbers are drawn, so the run's trajectory is unchanged. Empty under
    DistributedDataParallel (its reducer hooks expect exactly one backward per step).
    """
    if st.info.enabled:
        return {}
    params = [p for p in st.student.net.parameters() if p.requires_grad]
    flats: dict[str, Tensor] = {}
    for name, term in terms.items():
        w = float(weights.get(name, 0.0))
        if w == 0.0 or not term.requires_grad:
            continue
        grads = torch.autograd.grad(w * term, params, retain_graph=True, allow_unused=True)
        flats[name] = torch.cat([
            (g if g is not None else torch.zeros_like(p)).reshape(-1).float() for g, p in zip(grads, params)
        ])
    if not flats:
        return {}
    g_total = torch.stack(list(flats.values())).sum(0)
    denom = float(g_total.pow(2).sum())
    out: dict[str, float] = {}
    for name, g in flats.items():
        out[f"grad/{name}"] = float(g.norm())
        out[f"share/{name}"] = float(g @ g_total) / denom if denom > 0 else 0.0
    return out
