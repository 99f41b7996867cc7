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

The objective is a function of its inputs: :meth:`Objective.finetune` and
:meth:`Objective.pretrain` take one typed inputs object (:class:`FinetuneInputs`,
:class:`PretrainInputs`), resolve the temperatures of the phase iteration themselves and
return a :class:`Loss` (the terms, their weights, the total, the temperatures used and,
when asked, the diagnostics). They change no state: the centre allocator, the SAACL queue,
the memory banks and the EMA teacher are updated by the step (:mod:`actionpp.train.steps`),
which hands the objective what it reads of them (the centres after the allocator's update,
a view of the queue). The one thing drawn is AnCo's random queries and negatives, from the
generator the inputs carry.

Temperatures (:func:`temperature_schedules`): with ATS every contrastive temperature is
scheduled, as method.md section 4 says; the precedence of the SAACL settings is written there.

Taught in notebooks/04_train.ipynb.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from actionpp import losses as L
from actionpp.config import Config
from actionpp.losses.consistency import consistency_loss, sigmoid_rampup
from actionpp.models.segmodel import SegOutput
from actionpp.sampling import gather_pixels
from actionpp.temperature import Schedule, make_schedule

__all__ = [
    "temperature_schedules",
    "Objective",
    "Loss",
    "FinetuneInputs",
    "PretrainInputs",
    "UnlabelledTargets",
    "AncoPixels",
    "SaaclBatch",
    "TAU_LOG_KEYS",
    "weighted_total",
]

TAU_LOG_KEYS = {"anco": "tau", "saacl": "tau_saacl", "isd_s": "tau_s", "isd_t": "tau_t"}
"""The name of each term's temperature in the run log (``tau`` is AnCo's, the name ACTION's logs used)."""


def temperature_schedules(cfg: Config, n_unlabelled: int) -> dict[str, Schedule]:
    """The temperature schedule of every contrastive term, keyed ``anco``, ``saacl``, ``isd_s``, ``isd_t``.

    Without ATS (``method.ats`` off) every term keeps its fixed value: AnCo and SAACL
    ``temperature.fixed_tau``, ISD ``pretrain.tau_s`` / ``tau_t``. With ATS (method.md section 4:
    ATS applies to every contrastive temperature):

    - fine-tuning (counted in fine-tuning iterations): AnCo follows ``temperature`` (kind,
      ``tau_min`` .. ``tau_max``, ``period``; None = one cycle over fine-tuning); SAACL the same
      cosine with its own low end ``saacl.tau_min`` when set (official 2D: 0.07);
    - pre-training (counted in pre-training iterations): ``tau_s`` and ``tau_t`` each follow the
      same kind of cosine from ``pretrain.tau_max`` (official: 1.0) down to their configured
      value, period ``pretrain.period`` (None = one cycle over pre-training), as the official
      ``train_*_pretrain++.py`` scripts do. A ``step`` schedule is defined in fine-tuning
      iterations only: pre-training then keeps ISD's fixed temperatures.

    Precedence for SAACL (documented at :class:`actionpp.config.SaaclConfig`): ``saacl.fixed_tau``,
    when set, wins over ``method.ats`` and ``temperature.*`` (official 3D: ATS schedules AnCo while
    SAACL stays at 0.07); ``saacl.tau_min`` acts only under ATS (the config refuses it beside
    ``saacl.fixed_tau``).

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
    if total is None:
        raise ValueError("an objective has at least the supervised term")
    return total


# =========================================================================== inputs


@dataclass(frozen=True)
class UnlabelledTargets:
    """The teacher's view of the unlabelled batch, mixed like the student's input.

    ``probs (B_u, K, ...)`` softmax; ``confidence`` / ``labels`` ``(B_u, ...)`` its max and argmax.
    """

    probs: Tensor
    confidence: Tensor
    labels: Tensor


@dataclass(frozen=True)
class AncoPixels:
    """AnCo's candidate pixels: ``idx (N, 1 + nd)`` rows ``(b, ...)`` into the student's batch and their
    labels ``(N,)`` (ground truth on labelled rows, confident pseudo-labels on unlabelled rows)."""

    idx: Tensor
    labels: Tensor


@dataclass(frozen=True)
class SaaclBatch:
    """What SAACL reads: the anchors' labels ``(N,)``, the student's normalised anchor embeddings ``(N, d)``
    (with their gradient), the teacher's ``(N, d)`` of the same pixels, a view of the queue before this
    iteration's push (``queue (Q, d)``, ``queue_labels (Q,)``) and the class centres ``(K, d)`` after the
    allocator's update with these anchors (row c = the centre of class c)."""

    labels: Tensor
    student: Tensor
    teacher: Tensor
    queue: Tensor
    queue_labels: Tensor
    centres: Tensor


@dataclass(frozen=True)
class FinetuneInputs:
    """Everything the fine-tuning objective reads in one iteration.

    ``out``: the student's forward of the labelled (first ``B_l`` rows) and unlabelled rows;
    ``y_l (B_l, ...)`` the labels; ``phase_iteration`` (temperatures, ramp-up); ``unlabelled``: the
    teacher's targets (None when the method reads no unlabelled image); ``anco`` / ``saacl``: the
    sampled pixels of those terms (None when off); ``generator``: AnCo's draws (CPU); ``diagnose``:
    also compute the diagnostics (log iterations only).
    """

    out: SegOutput
    y_l: Tensor
    phase_iteration: int
    generator: torch.Generator
    unlabelled: UnlabelledTargets | None = None
    anco: AncoPixels | None = None
    saacl: SaaclBatch | None = None
    diagnose: bool = False


@dataclass(frozen=True)
class PretrainInputs:
    """Everything the pre-training objective reads: the student's forward with its ISD predictions,
    ``y_l (B_l, ...)``, the teacher's ISD projections (``teacher_global (B, d)``, ``teacher_local (B*P, d)``),
    the memory banks before this iteration's push (oldest first) and the phase iteration."""

    out: SegOutput
    y_l: Tensor
    teacher_global: Tensor
    teacher_local: Tensor
    bank_global: Tensor
    bank_local: Tensor
    phase_iteration: int


@dataclass
class Loss:
    """What the objective returns: the unweighted ``terms`` (in the module docstring's order), their
    ``weights``, ``total`` = the weighted sum, the temperatures used (``taus``, keyed by term: ``anco``,
    ``saacl``, ``isd_s``, ``isd_t``) and, when asked, ``diagnostics`` (numbers for the log)."""

    terms: dict[str, Tensor]
    weights: dict[str, float]
    total: Tensor
    taus: dict[str, float]
    diagnostics: dict[str, float] = field(default_factory=dict)


# =========================================================================== the objective


class Objective:
    """The loss terms of one run, their weights and temperatures (see the module docstring)."""

    def __init__(self, cfg: Config, n_unlabelled: int) -> None:
        self.cfg = cfg
        self.schedules = temperature_schedules(cfg, n_unlabelled)

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

    # ------------------------------------------------------------------ pre-training

    def pretrain(self, x: PretrainInputs) -> Loss:
        """Supervised loss on the labelled rows, ISD global and local distillation against the banks."""
        tau_s, tau_t = self.tau("isd_s", x.phase_iteration), self.tau("isd_t", x.phase_iteration)
        out = x.out
        if out.isd_global is None or out.isd_local is None:
            raise ValueError("pre-training reads the student's ISD predictions: run the model with isd=True")
        b_l = x.y_l.shape[0]
        terms = {
            "sup": L.supervised_loss(out.logits[:b_l].float(), x.y_l),
            "isd_global": L.isd_loss(out.isd_global.float(), x.teacher_global, x.bank_global, tau_s=tau_s, tau_t=tau_t),
            "isd_local": L.isd_loss(out.isd_local.float(), x.teacher_local, x.bank_local, tau_s=tau_s, tau_t=tau_t),
        }
        weights = self.pretrain_weights()
        return Loss(terms, weights, weighted_total(terms, weights), {"isd_s": tau_s, "isd_t": tau_t})

    # ------------------------------------------------------------------ fine-tuning

    def finetune(self, x: FinetuneInputs) -> Loss:
        """Every switched-on fine-tuning term, in the order of the module docstring.

        With ``x.diagnose`` the diagnostics hold the share of the SAACL anchor gradient that the
        centre term drives under both ``saacl.centre_term`` forms and the mean number of positives
        per anchor.
        """
        cfg, m = self.cfg, self.cfg.method
        logits = x.out.logits.float()
        b_l = x.y_l.shape[0]
        taus: dict[str, float] = {}
        diagnostics: dict[str, float] = {}
        terms: dict[str, Tensor] = {"sup": L.supervised_loss(logits[:b_l], x.y_l)}
        if x.unlabelled is not None:
            s_logits_u = logits[b_l:]
            if m.unsup:
                terms["unsup"] = L.pseudo_label_loss(s_logits_u, x.unlabelled.probs, threshold=cfg.loss.unsup_threshold)
            if m.consistency:
                terms["consistency"] = consistency_loss(s_logits_u, x.unlabelled.probs)
        if x.anco is not None:
            taus["anco"] = tau = self.tau("anco", x.phase_iteration)
            probs = torch.softmax(logits.detach(), dim=1)
            p_own = gather_pixels(probs, x.anco.idx).gather(1, x.anco.labels[:, None])[:, 0]  # (N,)
            terms["anco"] = L.anatomical_contrast_loss(
                x.out.embeddings["anco"].float(), x.anco.labels, p_own, tau=tau,
                num_queries=cfg.anco.queries_per_class, num_negatives=cfg.anco.negatives,
                strong_threshold=cfg.anco.strong_threshold, generator=x.generator,
            )
        if x.saacl is not None:
            s = x.saacl
            taus["saacl"] = tau = self.tau("saacl", x.phase_iteration)
            terms["saacl"] = L.saacl_loss(
                s.student, s.labels, s.teacher, s.queue, s.queue_labels, s.centres, tau=tau,
                lambda_a=cfg.saacl.lambda_a, centre_term=cfg.saacl.centre_term,
            )
            if x.diagnose:
                diagnostics.update(_saacl_diagnostics(s, tau, cfg.saacl.lambda_a))
        weights = self.finetune_weights(x.phase_iteration)
        weights = {k: weights[k] for k in terms}
        return Loss(terms, weights, weighted_total(terms, weights), taus, diagnostics)


def _saacl_diagnostics(s: SaaclBatch, tau: float, lambda_a: float) -> dict[str, float]:
    """The centre term's share of the anchors' gradient under both forms, and positives per anchor."""
    out = {
        f"centre_share/{form}": L.centre_gradient_share(
            s.student.detach(), s.labels, s.teacher, s.queue, s.queue_labels, s.centres, tau=tau,
            lambda_a=lambda_a, centre_term=form,
        )
        for form in L.CENTRE_TERMS
    }
    lab, q_lab = s.labels, s.queue_labels
    same = (q_lab[None, :] == lab[:, None]).sum(1).float() if q_lab.numel() else lab.new_zeros(lab.shape)
    out["saacl/positives"] = float(1.0 + same.float().mean())
    return out
