"""One training iteration of each phase, read top to bottom, one short stage at a time.

Fine-tuning (:func:`finetune_step`, every method)::

    batch -> teacher -> strong view -> pixels -> student -> teacher at the anchors
          -> centres (allocator update) -> objective -> optimiser -> queue and EMA

Pre-training (:func:`pretrain_step`, ACTION / ACTION++)::

    batch -> strong view -> teacher -> student -> objective -> optimiser -> banks and EMA

Each step returns the detached loss terms (``total`` included) and the temperatures used
(``tau``: AnCo, ``tau_saacl``, ``tau_s``, ``tau_t``); with ``diagnostics`` (a dict, at log
iterations) it also measures each weighted term's gradient on the backbone
(:func:`gradient_shares`) and SAACL's centre share into it.

Choices (each visible below):

- the teacher sees the weak view; the student the strong one (pre-training: photometric;
  fine-tuning: CutMix / ClassMix + jitter + blur of the unlabelled batch, the teacher's
  targets mixed alike); mean teacher (SSL4MIS): the student sees the clean unlabelled
  batch and the teacher the same batch plus clipped Gaussian noise;
- the teacher runs once on [labelled (SAACL) | unlabelled] (one BatchNorm batch when it runs
  in train mode, as the official scripts do);
- the pixel coordinates are drawn before the student's forward and passed into it, so
  the representation head runs inside DistributedDataParallel's forward;
- SAACL's teacher view is the teacher's representation head at the anchors' pixels of
  the same (weak) labelled view, read after the student's forward (the order of the global
  random draws of dropout when the teacher runs in train mode);
- the centre allocator is updated with the student's anchor embeddings *before* the objective
  reads the centres (the official order: the update is a stage of its own, ahead of the
  objective, not after the optimiser); the queue is pushed and the EMA teacher updated after
  the optimiser step.

The objective (:mod:`actionpp.train.objective`) only computes: every state change of a step
is here. Stage names (:data:`FINETUNE_STAGES`, :data:`PRETRAIN_STAGES`) are what a
:class:`StageProbe` sees (``bench/bench_train.py`` times them).

Taught in notebooks/04_train.ipynb.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from actionpp.losses.anatomical import valid_mask
from actionpp.losses.consistency import teacher_input_noise
from actionpp.models.segmodel import PixelQuery, SegOutput
from actionpp.sampling import embed_at, sample_pixels
from actionpp.train.batches import BatchSource
from actionpp.train.objective import (
    TAU_LOG_KEYS,
    AncoPixels,
    FinetuneInputs,
    Loss,
    Objective,
    PretrainInputs,
    SaaclBatch,
    UnlabelledTargets,
)
from actionpp.train.state import StageProbe, TrainerState

__all__ = [
    "pretrain_step", "finetune_step", "gradient_shares", "autocast", "StageProbe", "FINETUNE_STAGES",
    "PRETRAIN_STAGES",
]

FINETUNE_STAGES = ("batch", "teacher", "strong view", "pixels", "student", "teacher at the anchors", "centres",
                   "objective", "optimiser", "queue and EMA")
PRETRAIN_STAGES = ("batch", "strong view", "teacher", "student", "objective", "optimiser", "banks and EMA")


def autocast(device: torch.device, mode: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast when ``runtime.amp`` is ``bf16``, or ``auto`` on CUDA; else nothing."""
    use = (mode == "bf16") or (mode == "auto" and device.type == "cuda")
    if not use:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _stage(st: TrainerState, name: str) -> contextlib.AbstractContextManager[Any]:
    return st.probe(name) if st.probe is not None else contextlib.nullcontext()


# =========================================================================== pre-training


def pretrain_step(
    st: TrainerState, batches: BatchSource, objective: Objective, phase_it: int,
    diagnostics: dict[str, Any] | None = None,
) -> dict[str, Tensor]:
    """Supervised + ISD global + local distillation (one iteration)."""
    cfg = st.cfg
    teacher, banks = st.require_teacher(), st.require_banks()
    with _stage(st, "batch"):  # the weak view of labelled + unlabelled images
        x_l, y_l = batches.labelled()
        x_u = batches.unlabelled()
        x_weak = st.layout(torch.cat([x_l, x_u]))  # (B_l + B_u, C, ...)
    with _stage(st, "strong view"):  # photometric only: ISD compares the two views of the same pixels
        x_strong = st.layout(batches.photometric(x_weak))
    with _stage(st, "teacher"), torch.no_grad(), autocast(st.device, cfg.runtime.amp):  # ISD projections
        _, t_feat = teacher.model.net.forward_features(x_weak)
        t_g = teacher.model.g_head(t_feat.bottleneck).float()  # (B, d)
        t_l = teacher.model.l_head(t_feat.decoder[-1]).float().flatten(0, 1)  # (B*P, d)
    with _stage(st, "student"), autocast(st.device, cfg.runtime.amp):
        out: SegOutput = st.ddp(x_strong, isd=True)
    with _stage(st, "objective"):
        loss = objective.pretrain(PretrainInputs(
            out, y_l, t_g, t_l, banks.global_bank.embeddings, banks.local_bank.embeddings, phase_it,
        ))  # the banks before this iteration's push, oldest first
    with _stage(st, "optimiser"):
        if diagnostics is not None:
            diagnostics.update(gradient_shares(st, loss.terms, loss.weights))
        _optimise(st, loss.total)
    with _stage(st, "banks and EMA"):
        banks.global_bank.push(t_g)
        banks.local_bank.push(t_l)
        teacher.update(st.student, cfg.train.ema_momentum)
    return _result(loss)


# =========================================================================== fine-tuning


@dataclass(frozen=True)
class TeacherView:
    """The teacher's forward of one fine-tuning batch: its representation maps of the labelled rows
    (SAACL's positives are read there; empty without SAACL) and its softmax of the unlabelled rows
    ``(B_u, K, ...)`` (None when the method reads no unlabelled image)."""

    maps_l: list[Tensor]
    probs_u: Tensor | None


def finetune_step(
    st: TrainerState, batches: BatchSource, objective: Objective, phase_it: int,
    diagnostics: dict[str, Any] | None = None,
) -> dict[str, Tensor]:
    """One fine-tuning iteration with every switched-on term (the stages of the module docstring)."""
    cfg, m = st.cfg, st.cfg.method
    k = cfg.data.num_classes

    with _stage(st, "batch"):  # the weak views: a labelled batch, and an unlabelled one if the method reads it
        x_l, y_l = batches.labelled()  # (B_l, C, ...), (B_l, ...)
        x_u = batches.unlabelled() if m.finetune_unlabelled else None  # (B_u, C, ...)
    b_l = x_l.shape[0]

    with _stage(st, "teacher"):  # one forward of [labelled (SAACL) | unlabelled (mean teacher: + noise)]
        view = _teacher_view(st, x_l if m.saacl else None, x_u)

    with _stage(st, "strong view"):  # what the student sees of the unlabelled batch; the teacher's targets alike
        x_u_student, targets = _strong_view(st, batches, x_u, view.probs_u)
        x_in = st.layout(torch.cat([x_l, x_u_student]) if x_u_student is not None else x_l)

    with _stage(st, "pixels"):  # AnCo candidates (labelled + confident pseudo-labels), SAACL anchors (labelled)
        anco = _anco_pixels(st, y_l, targets) if m.anco else None
        anchors = sample_pixels(y_l, k, cfg.saacl.anchors_per_class, st.gen_loss) if m.saacl else None
        queries: dict[str, PixelQuery] = {}
        if anco is not None:
            queries["anco"] = PixelQuery(anco.idx)
        if anchors is not None:
            queries["saacl"] = PixelQuery(anchors[0], rows=b_l)

    with _stage(st, "student"), autocast(st.device, cfg.runtime.amp):
        split = b_l if cfg.train.finetune_forward == "separate" and x_u_student is not None else None
        out: SegOutput = st.ddp(x_in, embed=queries, split=split)

    with _stage(st, "teacher at the anchors"):  # SAACL's own-view positives: the teacher's head at those pixels
        t_emb = _teacher_at(st, view.maps_l, tuple(x_in.shape[2:]), anchors[0]) if anchors is not None else None

    with _stage(st, "centres"):  # the official order: the allocator moves BEFORE the objective reads the centres
        saacl = _update_centres(st, out, anchors[1], t_emb) if anchors is not None and t_emb is not None else None

    with _stage(st, "objective"):
        loss = objective.finetune(FinetuneInputs(
            out, y_l, phase_it, st.gen_cpu, unlabelled=targets, anco=anco, saacl=saacl,
            diagnose=diagnostics is not None,
        ))

    with _stage(st, "optimiser"):
        if diagnostics is not None:
            diagnostics.update(loss.diagnostics)
            diagnostics.update(gradient_shares(st, loss.terms, loss.weights))
        _optimise(st, loss.total)

    with _stage(st, "queue and EMA"):
        if saacl is not None:
            st.require_saacl().queue.push(saacl.teacher, saacl.labels)
        if st.teacher is not None:
            st.teacher.update(st.student, cfg.train.ema_momentum)
    return _result(loss)


# --------------------------------------------------------------------------- the stages of fine-tuning


def _teacher_view(st: TrainerState, x_l: Tensor | None, x_u: Tensor | None) -> TeacherView:
    """The teacher on ``[x_l | x_u]`` (either may be absent, then no forward; mean teacher: ``x_u`` plus
    clipped noise)."""
    cfg = st.cfg
    if x_l is None and x_u is None:
        return TeacherView([], None)
    teacher = st.require_teacher()
    with torch.no_grad(), autocast(st.device, cfg.runtime.amp):
        x_u_in = x_u
        if x_u is not None and cfg.method.consistency:
            x_u_in = x_u + teacher_input_noise(x_u, cfg.loss.consistency_noise, st.gen_aug)
        parts = [x for x in (x_l, x_u_in) if x is not None]
        logits, feat = teacher.model.net.forward_features(st.layout(torch.cat(parts)))
        b_l = x_l.shape[0] if x_l is not None else 0
        maps_l = [f[:b_l] for f in teacher.model.rep_maps(feat)] if x_l is not None else []
        probs_u = torch.softmax(logits.float()[b_l:], dim=1) if x_u is not None else None  # (B_u, K, ...)
    return TeacherView(maps_l, probs_u)


def _strong_view(st: TrainerState, batches: BatchSource, x_u: Tensor | None, probs: Tensor | None
                 ) -> tuple[Tensor | None, UnlabelledTargets | None]:
    """The student's unlabelled input and the teacher's targets for it (None, None without unlabelled images).

    Mean teacher (SSL4MIS): the clean unlabelled batch, the targets as they are. Otherwise CutMix /
    ClassMix of the weak view (the teacher's probabilities mixed alike), then jitter and blur.
    """
    if x_u is None or probs is None:
        return None, None
    confidence, labels = probs.max(dim=1)  # (B_u, ...)
    if st.cfg.method.consistency:
        return x_u, UnlabelledTargets(probs, confidence, labels)
    mixed, probs = batches.mix(x_u, probs, labels)
    confidence, labels = probs.max(dim=1)
    return batches.photometric(mixed), UnlabelledTargets(probs, confidence, labels)


def _anco_pixels(st: TrainerState, y_l: Tensor, targets: UnlabelledTargets | None) -> AncoPixels:
    """AnCo's candidates: every class's labelled pixels and the unlabelled ones the teacher is sure of."""
    cfg = st.cfg
    labels, valid = y_l, valid_mask(y_l)
    if targets is not None:
        labels = torch.cat([y_l, targets.labels])
        valid = torch.cat([valid, valid_mask(targets.labels, targets.confidence, cfg.anco.weak_threshold)])
    idx, lab = sample_pixels(labels, cfg.data.num_classes, cfg.anco.pixels_per_class, st.gen_loss, valid)
    return AncoPixels(idx, lab)


def _teacher_at(st: TrainerState, maps_l: list[Tensor], size: tuple[int, ...], idx: Tensor) -> Tensor:
    """The teacher's representation head at the anchors, normalised ``(N, d)``.

    After the student's forward (the order of the global random draws of dropout when the teacher runs in
    train mode), under the same autocast as the student's head: with bf16 the teacher's maps are bf16 (a
    no-op in fp32).
    """
    with torch.no_grad(), autocast(st.device, st.cfg.runtime.amp):
        return F.normalize(embed_at(st.require_teacher().model.rep, maps_l, size, idx).float(), dim=1)


def _update_centres(st: TrainerState, out: SegOutput, labels: Tensor, teacher_emb: Tensor) -> SaaclBatch:
    """Update the allocator with the student's anchor embeddings (detached); return what SAACL reads:
    the normalised anchors, the centres as the update left them, and the queue before this iteration's push."""
    state = st.require_saacl()
    student = F.normalize(out.embeddings["saacl"].float(), dim=1)  # (N, d), carries the gradient
    state.allocator.update(student.detach(), labels)
    return SaaclBatch(labels, student, teacher_emb, state.queue.embeddings, state.queue.labels,
                      state.allocator.class_centres())


# --------------------------------------------------------------------------- shared


def _result(loss: Loss) -> dict[str, Tensor]:
    """The detached terms, ``total`` and the temperatures used (under their log names)."""
    result = {k: v.detach() for k, v in loss.terms.items()}
    result["total"] = loss.total.detach()
    for term, tau in loss.taus.items():
        result[TAU_LOG_KEYS[term]] = torch.tensor(tau)
    return result


def _optimise(st: TrainerState, total: Tensor) -> None:
    st.optimizer.zero_grad(set_to_none=True)
    torch.autograd.backward(total)  # = total.backward() (the method is untyped in torch)
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
