"""The training objective: which terms a method switches on, their weights, ramp-ups and temperatures.

Pre-training (ACTION / ACTION++)::

    total = pretrain.sup * sup + pretrain.global_weight * isd_global + pretrain.local_weight * isd_local

Fine-tuning (each term only when its ``method.*`` switch is on)::

    total = loss.sup * sup + loss.unsup * unsup + loss.consistency * ramp(t) * consistency
            + loss.anco * anco + loss.saacl * saacl

with ``sup`` = 0.5 (CE + Dice) on the labelled batch, ``unsup`` the confidence-weighted
pseudo-label CE, ``consistency`` the mean-teacher MSE (ramped up by
``sigmoid_rampup(t, loss.consistency_rampup)``), ``anco`` the anatomical contrast and
``saacl`` the SAACL loss. The terms are computed in float32 from the model's outputs
(:class:`actionpp.models.segmodel.SegOutput`); the losses themselves live in
:mod:`actionpp.losses`.

Temperatures (:func:`temperature_schedules`): with ATS every contrastive temperature
is scheduled, as method.md section 4 says.

Taught in notebooks/04_train.ipynb.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from actionpp import losses as L
from actionpp.allocation import CentreAllocator
from actionpp.config import Config
from actionpp.losses.consistency import consistency_loss, sigmoid_rampup
from actionpp.models.segmodel import SegOutput
from actionpp.sampling import gather_pixels
from actionpp.temperature import Schedule, make_schedule

__all__ = [
    "temperature_schedules",
    "Objective",
    "UnlabelledTargets",
    "SaaclBatch",
    "weighted_total",
]


def temperature_schedules(cfg: Config, n_unlabelled: int) -> dict[str, Schedule]:
    """The temperature schedule of every contrastive term, keyed ``anco``, ``saacl``, ``isd_s``, ``isd_t``.

    Without ATS (``method.ats`` off) every term keeps its fixed value: AnCo and SAACL
    ``temperature.fixed_tau`` (SAACL: ``saacl.fixed_tau`` when set), ISD ``pretrain.tau_s`` /
    ``tau_t``. With ATS (method.md section 4: ATS applies to every contrastive temperature):

    - fine-tuning (counted in fine-tuning iterations): AnCo follows ``temperature`` (kind,
      ``tau_min`` .. ``tau_max``, ``period``; None = one cycle over fine-tuning); SAACL the same
      cosine with its own low end ``saacl.tau_min`` (official 2D: 0.07), or the fixed
      ``saacl.fixed_tau`` (official 3D: 0.07);
    - pre-training (counted in pre-training iterations): ``tau_s`` and ``tau_t`` each follow the
      same kind of cosine from ``pretrain.tau_max`` (official: 1.0) down to their configured
      value, period ``pretrain.period`` (None = one cycle over pre-training), as the official
      ``train_*_pretrain++.py`` scripts do. A ``step`` schedule is defined in fine-tuning
      iterations only: pre-training then keeps ISD's fixed temperatures.

    ``n_unlabelled``: unlabelled training images, for the per-epoch kind's epoch length
    (``temperature.epoch_iters`` when set).
    """
    t, m = cfg.temperature, cfg.method
    saacl_fixed = cfg.saacl.fixed_tau
    if not m.ats or t.kind == "constant":
        fixed = make_schedule("constant", tau=t.fixed_tau)
        return {
            "anco": fixed,
            "saacl": make_schedule("constant", tau=saacl_fixed) if saacl_fixed is not None else fixed,
            "isd_s": make_schedule("constant", tau=cfg.pretrain.tau_s),
            "isd_t": make_schedule("constant", tau=cfg.pretrain.tau_t),
        }
    epoch = t.epoch_iters or max(n_unlabelled // max(cfg.train.batch_unlabelled, 1), 1)

    def cosine(tau_min: float, tau_max: float, period: float | None, iters: int) -> Schedule:
        iters = max(iters, 1)
        if t.kind == "cosine":
            return make_schedule("cosine", tau_min=tau_min, tau_max=tau_max, period=period or iters)
        return make_schedule("cosine_epoch", tau_min=tau_min, tau_max=tau_max,
                             period=period or max(iters / epoch, 1e-9), iters_per_epoch=epoch)

    p = cfg.pretrain
    if t.kind == "step":
        anco = saacl = make_schedule("step", milestones=t.step_milestones, values=t.step_values)
        isd_s, isd_t = make_schedule("constant", tau=p.tau_s), make_schedule("constant", tau=p.tau_t)
    else:
        anco = cosine(t.tau_min, t.tau_max, t.period, cfg.finetune_iters)
        saacl = cosine(cfg.saacl.tau_min or t.tau_min, t.tau_max, t.period, cfg.finetune_iters)
        isd_s = cosine(p.tau_s, p.tau_max, p.period, cfg.pretrain_iters)
        isd_t = cosine(p.tau_t, p.tau_max, p.period, cfg.pretrain_iters)
    if saacl_fixed is not None:
        saacl = make_schedule("constant", tau=saacl_fixed)
    return {"anco": anco, "saacl": saacl, "isd_s": isd_s, "isd_t": isd_t}


def weighted_total(terms: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
    """``sum_k weights[k] * terms[k]`` in the terms' order (a fixed order: the same float sum every run)."""
    total: Tensor | None = None
    for name, term in terms.items():
        part = weights[name] * term
        total = part if total is None else total + part
    assert total is not None, "an objective has at least the supervised term"
    return total


@dataclass
class UnlabelledTargets:
    """The teacher's view of the unlabelled batch, mixed like the student's input.

    ``probs (B_u, K, ...)`` softmax; ``confidence`` / ``labels`` ``(B_u, ...)`` its max and argmax.
    """

    probs: Tensor
    confidence: Tensor
    labels: Tensor


@dataclass
class SaaclBatch:
    """SAACL's anchors: labels ``(N,)`` and the teacher's (normalised) embeddings ``(N, d)`` of the same pixels."""

    labels: Tensor
    teacher: Tensor


class Objective:
    """The loss terms of one run, their weights and temperatures (see the module docstring)."""

    def __init__(self, cfg: Config, n_unlabelled: int) -> None:
        self.cfg = cfg
        self.schedules = temperature_schedules(cfg, n_unlabelled)

    # ------------------------------------------------------------------ weights and temperatures

    def tau(self, term: str, phase_iteration: int) -> float:
        """Temperature of ``term`` (``anco``, ``saacl``, ``isd_s``, ``isd_t``) at a phase iteration."""
        return float(self.schedules[term](phase_iteration))

    def pretrain_weights(self) -> dict[str, float]:
        p = self.cfg.pretrain
        return {"sup": p.sup, "isd_global": p.global_weight, "isd_local": p.local_weight}

    def finetune_weights(self, phase_iteration: int) -> dict[str, float]:
        lw = self.cfg.loss
        return {
            "sup": lw.sup,
            "unsup": lw.unsup,
            "consistency": lw.consistency * sigmoid_rampup(phase_iteration, lw.consistency_rampup),
            "anco": lw.anco,
            "saacl": lw.saacl,
        }

    # ------------------------------------------------------------------ terms

    def pretrain_terms(
        self, out: SegOutput, y_l: Tensor, teacher_global: Tensor, teacher_local: Tensor, bank_global: Tensor,
        bank_local: Tensor, tau_s: float, tau_t: float,
    ) -> dict[str, Tensor]:
        """Supervised loss on the labelled rows, ISD global and local distillation against the banks."""
        assert out.isd_global is not None and out.isd_local is not None
        b_l = y_l.shape[0]
        return {
            "sup": L.supervised_loss(out.logits[:b_l].float(), y_l),
            "isd_global": L.isd_loss(out.isd_global.float(), teacher_global, bank_global, tau_s=tau_s, tau_t=tau_t),
            "isd_local": L.isd_loss(out.isd_local.float(), teacher_local, bank_local, tau_s=tau_s, tau_t=tau_t),
        }

    def finetune_terms(
        self,
        out: SegOutput,
        y_l: Tensor,
        unlabelled: UnlabelledTargets | None,
        anco_labels: Tensor | None,
        anco_idx: Tensor | None,
        saacl: SaaclBatch | None,
        allocator: CentreAllocator | None,
        queue: L.FeatureQueue | None,
        tau_anco: float,
        tau_saacl: float,
        generator_cpu: torch.Generator,
        diagnostics: dict[str, Any] | None = None,
    ) -> dict[str, Tensor]:
        """Every switched-on fine-tuning term, in the order of the module docstring.

        The allocator is updated with the student's anchor embeddings (detached) before SAACL
        reads the centres. With ``diagnostics`` (a dict), the share of the SAACL anchor gradient
        that the centre term drives under both ``saacl.centre_term`` forms and the mean number of
        positives per anchor are written into it.
        """
        cfg, m = self.cfg, self.cfg.method
        logits = out.logits.float()
        b_l = y_l.shape[0]
        terms: dict[str, Tensor] = {"sup": L.supervised_loss(logits[:b_l], y_l)}
        if unlabelled is not None:
            s_logits_u = logits[b_l:]
            if m.unsup:
                terms["unsup"] = L.pseudo_label_loss(s_logits_u, unlabelled.probs, threshold=cfg.loss.unsup_threshold)
            if m.consistency:
                terms["consistency"] = consistency_loss(s_logits_u, unlabelled.probs)
        if m.anco:
            assert anco_labels is not None and anco_idx is not None
            probs = torch.softmax(logits.detach(), dim=1)
            p_own = gather_pixels(probs, anco_idx).gather(1, anco_labels[:, None])[:, 0]  # (N,)
            terms["anco"] = L.anatomical_contrast_loss(
                out.embeddings["anco"].float(), anco_labels, p_own, tau=tau_anco,
                num_queries=cfg.anco.queries_per_class, num_negatives=cfg.anco.negatives,
                strong_threshold=cfg.anco.strong_threshold, generator=generator_cpu,
            )
        if m.saacl:
            assert saacl is not None and allocator is not None and queue is not None
            s_emb = F.normalize(out.embeddings["saacl"].float(), dim=1)
            allocator.update(s_emb.detach(), saacl.labels)
            q_emb, q_lab = queue.embeddings, queue.labels
            centres = allocator.class_centres()
            terms["saacl"] = L.saacl_loss(
                s_emb, saacl.labels, saacl.teacher, q_emb, q_lab, centres, tau=tau_saacl,
                lambda_a=cfg.saacl.lambda_a, centre_term=cfg.saacl.centre_term,
            )
            if diagnostics is not None:
                for form in L.CENTRE_TERMS:
                    diagnostics[f"centre_share/{form}"] = L.centre_gradient_share(
                        s_emb.detach(), saacl.labels, saacl.teacher, q_emb, q_lab, centres, tau=tau_saacl,
                        lambda_a=cfg.saacl.lambda_a, centre_term=form,
                    )
                lab = saacl.labels
                same = (q_lab[None, :] == lab[:, None]).sum(1).float() if q_lab.numel() else lab.new_zeros(lab.shape)
                diagnostics["saacl/positives"] = float(1.0 + same.float().mean())
        return terms
