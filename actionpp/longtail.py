"""Beyond medical images: fixed class centres and the ATS cosine on long-tailed handwritten digits.

The paper measures its two long-tail devices, fixed class centres spread uniformly on the sphere
(with the Hungarian allocation of classes to centres) and the cosine temperature schedule (ATS),
only on cardiac MR and left-atrium segmentation. This module asks the same question of a plain
image-classification problem that ships with scikit-learn (no download): the 1,797 handwritten
digits (8 x 8 pixels, 10 classes), subsampled to an exponential long tail.

Data. :func:`longtail_counts` gives the training count of the class of frequency rank r (0 = head):

    n_r = max(1, round(n_max * ratio ** (-r / (K - 1))))        (round half up)

so n_0 = n_max and n_{K-1} = n_max / ratio (the imbalance ratio, as CIFAR-LT, Cao et al. 2019).
:func:`longtail_split` holds out a balanced test set (``test_per_class`` images of every digit),
draws which digit gets which rank from the seed (so no digit is always the tail) and keeps the first
n_r of the remaining images of the digit of rank r. Labels inside a split are ranks, not digits.

Methods (:data:`METHODS`), one :class:`Encoder` each (an MLP: 64 pixels -> hidden -> hidden ->
``dim``-d feature z, a linear classifier on z) trained with the same budget (:class:`StudyConfig`):

- ``ce``: cross-entropy on the classifier only;
- ``logit_adjusted``: the logit-adjusted cross-entropy (Menon et al. 2021), which at ``tau = 1`` is
  the balanced softmax (Ren et al. 2020): :func:`logit_adjusted_loss`, the practitioner's baseline;
- ``supcon``: cross-entropy + supervised contrast on normalised z at a fixed temperature;
- ``supcon_ats``: the same with the ATS cosine (``actionpp.temperature.Cosine``, one cycle per run);
- ``centres_averaged`` / ``centres_separate``: supervised contrast + SAACL's centre term (fixed
  simplex centres, ``actionpp.centers.simplex_centers``; Hungarian allocation,
  ``actionpp.allocation.CentreAllocator``) in its two forms, at the fixed temperature;
- ``actionpp``: centres + ATS, the ACTION++ recipe (centre form ``StudyConfig.actionpp_centre_term``).

The contrastive term is ``actionpp.losses.saacl_loss`` as ACTION++ trains it: anchors are the
student's embeddings of an augmented view (:func:`shift_augment`), each anchor's own positive is an
EMA teacher's embedding of another view (``actionpp.models.ema.EMATeacher``), the other candidates
are a FIFO queue of past teacher embeddings with their labels (``actionpp.losses.FeatureQueue``),
as in MoCo-style supervised contrast (TSC, Li et al. 2022, where ACTION++'s centres come from).
With no centres this is SupCon (Khosla et al. 2020) against a queue; it is an auxiliary term next
to the cross-entropy, weighted by ``contrast_weight``, as SAACL sits next to the supervised loss.

Measures (:func:`evaluate`): per-class recall on the balanced test set indexed by frequency rank,
the head / middle / tail group means (:func:`class_groups`), the balanced accuracy, and the
geometry of the normalised test features as the lab measures it (``actionpp.embeddings``:
alignment, uniformity, the smallest angle between class means, and the tail's smallest angle).
:func:`run_study` trains every (ratio, method, seed), :func:`summarise` gives mean, sample std
and the difference to a reference with its paired standard error (:func:`paired_difference`: the
methods share each seed's split and initial weights), and :func:`verdict` turns those numbers
into sentences, so the notebook prints its answer instead of typing it.

Degenerate cases: a tail count rounds to at least one image; an empty group (``head + tail``
covering every class) is an error; the paired difference of fewer than two seeds has a NaN
standard error and the verdict then says "not enough seeds".

Why one module of this length: data, model, the training loop of this study, its metrics and the
verdict are one experiment, used together by one notebook and its tests.

Taught in notebooks/07_beyond_medical.ipynb.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from actionpp import embeddings as E
from actionpp.allocation import CentreAllocator
from actionpp.centers import simplex_centers
from actionpp.losses import FeatureQueue, saacl_loss
from actionpp.metrics import mean_std
from actionpp.models.ema import EMATeacher
from actionpp.temperature import Constant, Cosine

__all__ = [
    "Method",
    "METHODS",
    "StudyConfig",
    "LongTailSplit",
    "Encoder",
    "Trained",
    "COMPARISONS",
    "load_digits",
    "longtail_counts",
    "longtail_split",
    "shifted_copies",
    "shift_augment",
    "logit_adjusted_loss",
    "train_method",
    "class_groups",
    "evaluate",
    "paired_difference",
    "run_study",
    "summarise",
    "verdict",
    "MEASURE_NAMES",
    "MIN_SEEDS",
    "RECALL_MEASURES",
    "SUMMARY_KEYS",
]

# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def load_digits() -> tuple[Tensor, Tensor]:
    """scikit-learn's handwritten digits: ``images (1797, 64)`` float32 in [0, 1], ``labels (1797,)`` int64.

    The 8 x 8 images of the UCI optical-digits set, 16 grey levels (divided by 16 here), ~180 per
    digit; shipped inside scikit-learn, so nothing is downloaded.
    """
    try:
        from sklearn.datasets import load_digits as _sk_digits
    except ImportError as exc:  # pragma: no cover - scikit-learn comes with the notebooks extra
        raise ImportError("notebook 07 needs scikit-learn: pip install -e '.[notebooks]'") from exc
    d = _sk_digits()
    images = torch.from_numpy(np.asarray(d.data, dtype=np.float32) / 16.0)
    labels = torch.from_numpy(np.asarray(d.target, dtype=np.int64))
    return images, labels


def longtail_counts(n_max: int, num_classes: int, ratio: float) -> list[int]:
    """Training images per class of an exponential long tail, head first.

    ``n_r = max(1, floor(n_max * ratio ** (-r / (K - 1)) + 0.5))`` for ranks r = 0..K-1: the head
    keeps ``n_max``, the rarest class ``n_max / ratio`` (rounded half up, at least one image).
    E.g. ``longtail_counts(100, 3, 100) == [100, 10, 1]``. ``ratio >= 1``; ``num_classes >= 2``.
    """
    if isinstance(n_max, bool) or not isinstance(n_max, (int, np.integer)) or n_max < 1:
        raise ValueError(f"n_max must be an integer >= 1, got {n_max!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if not (isinstance(ratio, (int, float, np.floating, np.integer)) and math.isfinite(ratio) and ratio >= 1):
        raise ValueError(f"ratio must be a finite number >= 1, got {ratio!r}")
    k = int(num_classes)
    return [max(1, math.floor(n_max * float(ratio) ** (-r / (k - 1)) + 0.5)) for r in range(k)]


@dataclass
class LongTailSplit:
    """A long-tailed training set and a balanced test set; labels are frequency ranks (0 = head).

    ``x_train (N, 64)``, ``y_train (N,)``, ``x_test (M, 64)``, ``y_test (M,)``; ``counts[r]``: the
    training images of rank r; ``class_order[r]``: the digit of rank r; ``ratio``, ``seed``.
    """

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    counts: list[int]
    class_order: list[int]
    ratio: float
    seed: int

    @property
    def num_classes(self) -> int:
        return len(self.counts)

    def to(self, device: torch.device | str) -> LongTailSplit:
        """A copy with the four tensors on ``device``."""
        return LongTailSplit(self.x_train.to(device), self.y_train.to(device), self.x_test.to(device),
                             self.y_test.to(device), list(self.counts), list(self.class_order), self.ratio, self.seed)


def longtail_split(
    images: Tensor,
    labels: Tensor,
    ratio: float,
    n_max: int,
    test_per_class: int,
    seed: int,
) -> LongTailSplit:
    """Hold out ``test_per_class`` images of every class, then keep a long tail of the rest.

    ``images (N, D)``, ``labels (N,)`` in [0, K). Seeded (a CPU generator): the test images of each
    class, which class gets which frequency rank (a random permutation) and which training images
    are kept. Raises ``ValueError`` naming the class that has too few images for
    ``test_per_class + n_max``.
    """
    if images.ndim != 2 or labels.shape != (images.shape[0],):
        raise ValueError(f"images must be (N, D) and labels (N,), got {tuple(images.shape)} and {tuple(labels.shape)}")
    if test_per_class < 1:
        raise ValueError(f"test_per_class must be >= 1, got {test_per_class}")
    lab = labels.to("cpu", torch.long)
    k = int(lab.max()) + 1 if lab.numel() else 0
    if k < 2:
        raise ValueError(f"need at least two classes, got labels with maximum {k - 1}")
    counts = longtail_counts(n_max, k, ratio)
    g = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(k, generator=g).tolist()  # rank -> class
    train_idx: list[Tensor] = []
    train_lab: list[Tensor] = []
    test_idx: list[Tensor] = []
    test_lab: list[Tensor] = []
    for c in range(k):  # draw in class order, so the generator's stream does not depend on the ranks
        idx = torch.nonzero(lab == c).reshape(-1)
        need = test_per_class + n_max
        if idx.numel() < need:
            raise ValueError(f"class {c} has {idx.numel()} images; test_per_class + n_max = {need} are needed")
        idx = idx[torch.randperm(idx.numel(), generator=g)]
        rank = order.index(c)
        test_idx.append(idx[:test_per_class])
        test_lab.append(torch.full((test_per_class,), rank, dtype=torch.long))
        keep = idx[test_per_class: test_per_class + counts[rank]]
        train_idx.append(keep)
        train_lab.append(torch.full((keep.numel(),), rank, dtype=torch.long))
    tr, te = torch.cat(train_idx), torch.cat(test_idx)
    dev = images.device
    return LongTailSplit(images[tr.to(dev)], torch.cat(train_lab).to(dev), images[te.to(dev)],
                         torch.cat(test_lab).to(dev), counts, order, float(ratio), int(seed))


def shifted_copies(x: Tensor, max_shift: int = 1, side: int = 8) -> Tensor:
    """Every shift of flattened ``side x side`` images ``x (N, side*side)`` by up to ``max_shift`` pixels in
    each direction, zeros coming in: ``(N, S, side*side)`` with ``S = (2 max_shift + 1) ** 2``.

    Index ``s = (dy + max_shift) * (2 max_shift + 1) + (dx + max_shift)`` holds the image moved ``dy``
    rows down and ``dx`` columns right; the middle index is the image itself. Built once per
    training set, so a random view is one gather (:func:`shift_augment`).
    """
    if x.ndim != 2 or x.shape[1] != side * side:
        raise ValueError(f"x must be (N, {side * side}) flattened {side} x {side} images, got {tuple(x.shape)}")
    if max_shift < 0:
        raise ValueError(f"max_shift must be >= 0, got {max_shift}")
    n, s = x.shape[0], max_shift
    img = F.pad(x.reshape(n, side, side), (s, s, s, s))  # N x (side + 2s) x (side + 2s)
    # the image moved by (dy, dx) reads the padded image at offset (s - dy, s - dx)
    views = [img[:, s - dy: s - dy + side, s - dx: s - dx + side] for dy in range(-s, s + 1) for dx in range(-s, s + 1)]
    return torch.stack(views, 1).reshape(n, len(views), side * side)


def shift_augment(copies: Tensor, idx: Tensor, generator: torch.Generator, noise: float = 0.05) -> Tensor:
    """A random view of the images ``idx (B,)``: a uniformly drawn shift from ``copies (N, S, D)``
    (:func:`shifted_copies`) plus Gaussian pixel noise of std ``noise``; ``(B, D)``.

    ``generator`` is a CPU generator (draws are made on the CPU and moved to ``copies.device``).
    """
    if copies.ndim != 3:
        raise ValueError(f"copies must be (N, S, D) from shifted_copies, got {tuple(copies.shape)}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    b = idx.shape[0]
    pick = torch.randint(0, copies.shape[1], (b,), generator=generator).to(copies.device)
    out = copies[idx.to(copies.device), pick]  # B x D
    if noise > 0:
        out = out + noise * torch.randn(out.shape, generator=generator).to(copies.device)
    return out


# ---------------------------------------------------------------------------------------------
# Model and losses
# ---------------------------------------------------------------------------------------------


class Encoder(nn.Module):
    """A small MLP: ``x (B, in_dim)`` -> feature ``z (B, dim)`` -> ``logits (B, K)`` by a linear classifier.

    ``forward`` returns ``(z, logits)``; the contrastive losses see ``normalize(z)``, the classifier
    the raw z. ``dim`` must be >= K - 1 for the fixed simplex centres to fit.
    """

    def __init__(self, in_dim: int = 64, hidden: int = 128, dim: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        if min(in_dim, hidden, dim) < 1 or num_classes < 2:
            raise ValueError(f"Encoder needs positive sizes and >= 2 classes, got in_dim={in_dim}, hidden={hidden}, "
                             f"dim={dim}, num_classes={num_classes}")
        self.body = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                  nn.Linear(hidden, dim))
        self.classifier = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = self.body(x)  # B x dim
        return z, self.classifier(z)  # B x K


def logit_adjusted_loss(logits: Tensor, labels: Tensor, class_counts: Tensor | Sequence[float],
                        tau: float = 1.0) -> Tensor:
    """The logit-adjusted cross-entropy (Menon et al. 2021): ``CE(logits + tau * log(prior), labels)``.

    ``logits (N, K)``, ``labels (N,)`` int in [0, K), ``class_counts (K,)`` training counts (> 0),
    ``prior = counts / sum(counts)``. ``tau = 1`` is the balanced softmax (Ren et al. 2020);
    ``tau = 0`` plain cross-entropy. Adding the same constant to every logit of a row does not
    change the softmax, so ``log(counts)`` gives the same loss as ``log(prior)``. At test time the
    plain logits are used (the adjustment only shapes training). Mean over the N rows.
    """
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"logits must be (N, K) and labels (N,), got {tuple(logits.shape)} and {tuple(labels.shape)}")
    counts = torch.as_tensor(class_counts, dtype=logits.dtype, device=logits.device)
    if counts.shape != (logits.shape[1],):
        raise ValueError(f"class_counts must have one entry per class ({logits.shape[1]}), got shape "
                         f"{tuple(counts.shape)}")
    if bool((counts <= 0).any()):
        raise ValueError(f"class_counts must be > 0, got {counts.tolist()}")
    log_prior = torch.log(counts / counts.sum())  # K
    return F.cross_entropy(logits + tau * log_prior, labels.to(logits.device).long())


# ---------------------------------------------------------------------------------------------
# Methods and the training loop of this study
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    """One arm of the study: which loss terms, which temperature, which centre term."""

    name: str
    contrastive: bool = False
    ats: bool = False
    centres: bool = False
    centre_term: str = "averaged"
    logit_adjusted: bool = False
    label: str = ""


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("ce", label="cross-entropy"),
        Method("logit_adjusted", logit_adjusted=True, label="logit adjustment (balanced softmax)"),
        Method("supcon", contrastive=True, label="SupCon, fixed tau"),
        Method("supcon_ats", contrastive=True, ats=True, label="SupCon + ATS"),
        Method("centres_averaged", contrastive=True, centres=True, centre_term="averaged",
               label="SupCon + centres (averaged)"),
        Method("centres_separate", contrastive=True, centres=True, centre_term="separate",
               label="SupCon + centres (separate)"),
        Method("actionpp", contrastive=True, ats=True, centres=True, label="centres + ATS (ACTION++)"),
    )
}

#: (what is asked, reference method, method): the questions :func:`verdict` answers.
COMPARISONS: tuple[tuple[str, str, str], ...] = (
    ("does ATS help SupCon?", "supcon", "supcon_ats"),
    ("do the centres (averaged) help SupCon?", "supcon", "centres_averaged"),
    ("do the centres (separate) help SupCon?", "supcon", "centres_separate"),
    ("does the ACTION++ recipe (centres + ATS) help SupCon?", "supcon", "actionpp"),
    ("does ATS help on top of the centres?", "centres_separate", "actionpp"),
    ("does SupCon help cross-entropy?", "ce", "supcon"),
    ("does logit adjustment beat the ACTION++ recipe?", "actionpp", "logit_adjusted"),
)


@dataclass(frozen=True)
class StudyConfig:
    """The shared budget and settings of every method (each value explained in notebook 07)."""

    iterations: int = 300
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    hidden: int = 128
    dim: int = 32
    contrast_weight: float = 0.5
    fixed_tau: float = 0.1
    tau_min: float = 0.1
    tau_max: float = 1.0
    lambda_a: float = 0.2
    actionpp_centre_term: str = "separate"
    queue_size: int = 512
    allocator_momentum: float = 0.1
    ema_momentum: float = 0.0
    adjust_tau: float = 1.0
    max_shift: int = 1
    noise: float = 0.05

    def __post_init__(self) -> None:
        for name in ("iterations", "batch_size", "hidden", "dim", "queue_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("lr", "fixed_tau", "tau_min", "tau_max"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.tau_min > self.tau_max:
            raise ValueError(f"tau_min must be <= tau_max, got {self.tau_min} > {self.tau_max}")
        for name in ("weight_decay", "contrast_weight", "lambda_a", "adjust_tau", "noise"):
            if float(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.actionpp_centre_term not in ("averaged", "separate"):
            raise ValueError(
                f"actionpp_centre_term must be 'averaged' or 'separate', got {self.actionpp_centre_term!r}")
        if not 0.0 < self.allocator_momentum <= 1.0 or not 0.0 <= self.ema_momentum <= 1.0:
            raise ValueError(f"allocator_momentum must be in (0, 1] and ema_momentum in [0, 1], got "
                             f"{self.allocator_momentum}, {self.ema_momentum}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Trained:
    """A trained arm: the student ``encoder`` (eval mode), its ``allocator`` (centre methods, else None),
    the temperature per iteration ``taus`` (empty without contrast), the last loss and the seconds."""

    encoder: Encoder
    allocator: CentreAllocator | None
    taus: list[float] = field(default_factory=list)
    final_loss: float = math.nan
    seconds: float = 0.0


def _method(method: Method | str) -> Method:
    if isinstance(method, Method):
        return method
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return METHODS[method]


def train_method(method: Method | str, split: LongTailSplit, config: StudyConfig, seed: int) -> Trained:
    """Train one :class:`Encoder` on ``split`` with ``method`` for ``config.iterations`` steps.

    Every method draws the same initial weights (``torch.manual_seed(seed)``) and the same
    batches (uniform over the training images, with replacement, from a CPU generator seeded
    with ``seed``), so two methods at one seed differ only by their loss. AdamW. Each step:

    - ``ce`` / ``logit_adjusted``: the (adjusted) cross-entropy of the student's logits on view 1;
    - contrastive methods add ``contrast_weight * saacl_loss(normalize(z_1), y, t_2, queue, ...)``
      with ``t_2`` the EMA teacher's normalised feature of view 2, the queue's past teacher
      features, and (centre methods) ``allocator.class_centres()`` after the allocator's update
      with the batch (as ``actionpp.train`` does); then the teacher's features join the queue and
      the teacher takes an EMA step. The temperature is ``fixed_tau`` or the ATS cosine from
      ``tau_max`` down to ``tau_min`` and back over the run (period = iterations, the paper's).

    The device is the split's. Returns :class:`Trained` with the encoder in eval mode.
    """
    m = _method(method)
    cfg = config
    dev = split.x_train.device
    k = split.num_classes
    if m.centres and cfg.dim < k - 1:
        raise ValueError(f"a simplex of {k} centres needs dim >= {k - 1}, got dim={cfg.dim}")
    t0 = time.perf_counter()
    torch.manual_seed(int(seed))
    enc = Encoder(split.x_train.shape[1], cfg.hidden, cfg.dim, k).to(dev)
    gen = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.AdamW(enc.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
    counts = torch.as_tensor(split.counts, dtype=torch.float32, device=dev)
    # momentum 0: the teacher is the student itself (no copy kept); > 0: an EMA copy, as ACTION++
    teacher = EMATeacher(enc) if m.contrastive and cfg.ema_momentum > 0 else None
    queue = FeatureQueue(cfg.queue_size, cfg.dim, device=dev) if m.contrastive else None
    allocator = None
    if m.centres:
        allocator = CentreAllocator(simplex_centers(k, cfg.dim, seed=int(seed)).to(dev), cfg.allocator_momentum)
    centre_term = cfg.actionpp_centre_term if m.name == "actionpp" else m.centre_term
    schedule: Constant | Cosine = (Cosine(cfg.tau_min, cfg.tau_max, cfg.iterations) if m.ats
                                   else Constant(cfg.fixed_tau))
    n = split.x_train.shape[0]
    copies = shifted_copies(split.x_train, cfg.max_shift)  # N x S x D, every shift of every training image
    taus: list[float] = []
    loss = torch.zeros(())
    enc.train()
    for it in range(cfg.iterations):
        idx = torch.randint(0, n, (cfg.batch_size,), generator=gen).to(dev)
        y = split.y_train[idx]
        v1 = shift_augment(copies, idx, gen, cfg.noise)
        z, logits = enc(v1)
        if m.logit_adjusted:
            loss = logit_adjusted_loss(logits, y, counts, cfg.adjust_tau)
        else:
            loss = F.cross_entropy(logits, y)
        if m.contrastive:
            assert queue is not None
            v2 = shift_augment(copies, idx, gen, cfg.noise)
            with torch.no_grad():
                t_emb = F.normalize((teacher(v2) if teacher is not None else enc(v2))[0], dim=1)  # B x dim
            s_emb = F.normalize(z, dim=1)  # B x dim
            centres = None
            if allocator is not None:
                allocator.update(s_emb.detach(), y)
                centres = allocator.class_centres()  # K x dim, row c = the centre of class c
            tau = schedule(it)
            taus.append(tau)
            contrast = saacl_loss(s_emb, y, t_emb, queue.embeddings, queue.labels, centres, tau=tau,
                                  lambda_a=cfg.lambda_a if centres is not None else 0.0, centre_term=centre_term)
            loss = loss + cfg.contrast_weight * contrast
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if m.contrastive:
            assert queue is not None
            queue.push(t_emb, y)
            if teacher is not None:
                teacher.update(enc, cfg.ema_momentum)
    enc.eval()
    return Trained(enc, allocator, taus, float(loss.detach()), time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


def class_groups(num_classes: int, head: int, tail: int) -> dict[str, list[int]]:
    """Frequency ranks of the head (the ``head`` most frequent), the tail (the ``tail`` rarest) and
    the middle (the rest): ``class_groups(10, 3, 3) == {"head": [0, 1, 2], "middle": [3, 4, 5, 6],
    "tail": [7, 8, 9]}``. Each group must be non-empty."""
    if head < 1 or tail < 1 or head + tail >= num_classes:
        raise ValueError(f"need head >= 1, tail >= 1 and head + tail < num_classes={num_classes} (a non-empty "
                         f"middle), got head={head}, tail={tail}")
    return {"head": list(range(head)), "middle": list(range(head, num_classes - tail)),
            "tail": list(range(num_classes - tail, num_classes))}


@torch.no_grad()
def evaluate(trained: Trained | nn.Module, split: LongTailSplit, head: int = 3, tail: int = 3) -> dict[str, Any]:
    """Test-set numbers of one trained encoder; classes are frequency ranks (0 = head).

    Returns ``{"recall": [K per rank], "balanced_accuracy", "head_recall", "middle_recall",
    "tail_recall" (group means of the per-rank recall), "ncm_balanced_accuracy", "ncm_tail_recall" (the
    same read by the nearest normalised class mean of the clean training features, without the
    classifier: what the representation alone separates), "alignment" (mean over classes of
    ``embeddings.alignment``), "tail_alignment", "uniformity" (``embeddings.uniformity`` of all test
    features), "min_angle_deg" (smallest angle between two class means), "tail_min_angle_deg" (mean
    over tail classes of the smallest angle from its mean to another)}``. Predictions are the
    classifier's argmax; the geometry uses the normalised features z of the clean test images.
    """
    enc = trained.encoder if isinstance(trained, Trained) else trained  # any module returning (z, logits)
    k = split.num_classes
    groups = class_groups(k, head, tail)
    was = enc.training
    enc.eval()
    z, logits = enc(split.x_test)
    y = split.y_test.long()
    pred = logits.argmax(1)
    hits = torch.zeros(k, dtype=torch.float64, device=y.device).index_add_(0, y, (pred == y).double())
    recall = (hits / torch.bincount(y, minlength=k).double()).cpu()  # K, NaN for a class absent from the test set
    emb = F.normalize(z.float(), dim=1).cpu()
    lab = y.cpu()
    align = E.alignment(emb, lab, k)
    ang = E.mean_angles(E.class_means(emb, lab, k))  # K x K degrees
    off = ang + torch.diag(torch.full((k,), float("inf"), dtype=ang.dtype))
    nearest = off.min(1).values  # K, smallest angle from each class mean to another
    out: dict[str, Any] = {"recall": recall.tolist(), "balanced_accuracy": float(recall.mean())}
    for g, ranks in groups.items():
        out[f"{g}_recall"] = float(recall[ranks].mean())
    # the representation read without the classifier: nearest normalised class mean of the training features
    z_train, _ = enc(split.x_train)
    train_means = E.class_means(F.normalize(z_train.float(), dim=1).cpu(), split.y_train.long().cpu(), k)  # K x d
    _, ncm = E.nearest_centre_accuracy(emb, lab, train_means)  # (K,) recall per rank
    out["ncm_balanced_accuracy"] = float(ncm.mean())
    out["ncm_tail_recall"] = float(ncm[groups["tail"]].mean())
    out["alignment"] = float(align.mean())
    out["tail_alignment"] = float(align[groups["tail"]].mean())
    out["uniformity"] = E.uniformity(emb, seed=split.seed)
    out["min_angle_deg"] = float(nearest.min())
    out["tail_min_angle_deg"] = float(nearest[groups["tail"]].mean())
    enc.train(was)
    return out


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """``b - a`` over seeds, paired: mean of the per-seed differences, its standard error and a 95 % interval.

    ``a[i]`` and ``b[i]`` come from the same seed (here: the same split and initial weights).
    ``se = std(d, ddof=1) / sqrt(n)``, the interval is ``mean +- t_{0.975, n-1} * se`` (Student's t).
    Pairs with a non-finite side are left out; fewer than two pairs give NaN ``se`` and interval.
    Returns ``{"difference", "se", "lo", "hi", "n"}``.
    """
    if len(a) != len(b):
        raise ValueError(f"paired values need the same length, got {len(a)} and {len(b)}")
    d = [float(y) - float(x) for x, y in zip(a, b) if math.isfinite(float(x)) and math.isfinite(float(y))]
    mean, std, n = mean_std(d, ddof=1)
    if n < 2:
        return {"difference": mean, "se": math.nan, "lo": math.nan, "hi": math.nan, "n": n}
    from scipy.stats import t as student_t

    se = std / math.sqrt(n)
    half = float(student_t.ppf(0.975, n - 1)) * se
    return {"difference": mean, "se": se, "lo": mean - half, "hi": mean + half, "n": n}


def run_study(
    methods: Iterable[str],
    ratios: Iterable[float],
    seeds: Iterable[int],
    config: StudyConfig,
    n_max: int,
    test_per_class: int,
    head: int = 3,
    tail: int = 3,
    device: torch.device | str = "cpu",
    data: tuple[Tensor, Tensor] | None = None,
    log: Callable[[str], None] | None = print,
) -> list[dict[str, Any]]:
    """Train and evaluate every (ratio, seed, method); one row each: ``{"method", "ratio", "seed",
    "seconds", "final_loss", **evaluate(...)}``. ``data`` defaults to :func:`load_digits`. ``log``
    gets one line per (ratio, seed)."""
    ms = [_method(m).name for m in methods]
    if len(set(ms)) != len(ms):
        raise ValueError(f"methods repeat: {ms}")
    images, labels = data if data is not None else load_digits()
    rows: list[dict[str, Any]] = []
    for ratio in ratios:
        for seed in seeds:
            split = longtail_split(images, labels, ratio, n_max, test_per_class, seed).to(device)
            t0 = time.perf_counter()
            for name in ms:
                tr = train_method(name, split, config, seed)
                rows.append({"method": name, "ratio": float(ratio), "seed": int(seed), "seconds": tr.seconds,
                             "final_loss": tr.final_loss, **evaluate(tr, split, head, tail)})
            if log is not None:
                log(f"ratio {ratio:g}, seed {seed}: {len(ms)} methods in {time.perf_counter() - t0:.1f} s "
                    f"(train counts {split.counts})")
    return rows


#: The per-run numbers :func:`summarise` aggregates by default.
SUMMARY_KEYS = ("balanced_accuracy", "head_recall", "middle_recall", "tail_recall", "ncm_balanced_accuracy",
                "ncm_tail_recall", "alignment", "tail_alignment", "uniformity", "min_angle_deg", "tail_min_angle_deg")


def summarise(rows: Sequence[Mapping[str, Any]], reference: str = "supcon",
              keys: Sequence[str] = SUMMARY_KEYS) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """``{ratio (str): {method: {key: {"mean", "std" (sample), "n", "diff", "se", "lo", "hi"}}}}``.

    ``diff`` / ``se`` / ``lo`` / ``hi``: :func:`paired_difference` of the method minus
    ``reference`` over the seeds both have (NaN for the reference itself, or when it is absent).
    The per-rank recall is summarised too, under ``"recall_by_rank"``: ``{"mean": [K], "std": [K]}``.
    """
    out: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    ratios = sorted({float(r["ratio"]) for r in rows})
    for ratio in ratios:
        at = [r for r in rows if float(r["ratio"]) == ratio]
        methods = list(dict.fromkeys(r["method"] for r in at))
        by = {m: {int(r["seed"]): r for r in at if r["method"] == m} for m in methods}
        table: dict[str, dict[str, dict[str, Any]]] = {}
        for m in methods:
            entry: dict[str, dict[str, Any]] = {}
            for key in keys:
                mean, std, n = mean_std([r[key] for r in by[m].values()], ddof=1)
                diff = {"difference": math.nan, "se": math.nan, "lo": math.nan, "hi": math.nan}
                if reference in by and m != reference:
                    common = sorted(set(by[m]) & set(by[reference]))
                    diff = paired_difference([by[reference][s][key] for s in common], [by[m][s][key] for s in common])
                entry[key] = {"mean": mean, "std": std, "n": n, "diff": diff["difference"], "se": diff["se"],
                              "lo": diff["lo"], "hi": diff["hi"]}
            rec = np.asarray([r["recall"] for r in by[m].values()], dtype=np.float64)  # seeds x K
            entry["recall_by_rank"] = {
                "mean": rec.mean(0).tolist(),
                "std": (rec.std(0, ddof=1) if rec.shape[0] > 1 else np.full(rec.shape[1], np.nan)).tolist(),
            }
            table[m] = entry
        out[f"{ratio:g}"] = table
    return out


#: How :func:`verdict` names each measure.
MEASURE_NAMES = {"balanced_accuracy": "balanced accuracy", "head_recall": "head", "middle_recall": "middle",
                 "tail_recall": "tail", "ncm_balanced_accuracy": "nearest-mean balanced accuracy",
                 "ncm_tail_recall": "nearest-mean tail", "alignment": "alignment", "tail_alignment": "tail alignment",
                 "uniformity": "uniformity", "min_angle_deg": "smallest angle",
                 "tail_min_angle_deg": "tail's smallest angle"}

#: The measures of the answer: the classifier's recall, overall and per group.
RECALL_MEASURES = ("balanced_accuracy", "tail_recall", "middle_recall", "head_recall")


#: The fewest paired seeds :func:`verdict` calls a difference on (two seeds give one degree of freedom,
#: and two equal differences a zero-width interval).
MIN_SEEDS = 3


def _call(diff: Mapping[str, float], words: tuple[str, str]) -> str:
    lo, hi = diff.get("lo", math.nan), diff.get("hi", math.nan)
    if diff.get("n", 0) < MIN_SEEDS or not (math.isfinite(lo) and math.isfinite(hi)):
        return "not enough seeds"
    if lo > 0:
        return words[0]
    if hi < 0:
        return words[1]
    return "no measurable difference"


def verdict(
    rows: Sequence[Mapping[str, Any]],
    comparisons: Sequence[tuple[str, str, str]] = COMPARISONS,
    measures: Sequence[str] = RECALL_MEASURES,
    words: tuple[str, str] = ("helps", "hurts"),
) -> dict[str, Any]:
    """The answer, from the numbers: for each comparison (question, reference, method) and imbalance
    ratio, the paired difference (method - reference) of each of ``measures``, called ``words[0]``
    ("helps") when its 95 % interval lies above 0, ``words[1]`` ("hurts") below, else "no measurable
    difference" (for geometry, where larger is not better, pass ``words=("larger", "smaller")``);
    with fewer than :data:`MIN_SEEDS` paired seeds, "not enough seeds".

    Returns ``{"lines": [str], "calls": {question: {ratio: {measure: call}}}}``: per comparison one
    summary line (where it came out ``words[0]`` or ``words[1]``), then one line per ratio with every
    difference and its interval. A comparison whose methods were not both run is skipped.
    """
    methods = {str(r["method"]) for r in rows}
    ratios = sorted({float(r["ratio"]) for r in rows})
    lines: list[str] = []
    calls: dict[str, dict[str, dict[str, str]]] = {}
    for question, ref, m in comparisons:
        if ref not in methods or m not in methods:
            continue
        calls[question] = {}
        parts = []
        for ratio in ratios:
            at = [r for r in rows if float(r["ratio"]) == ratio]
            a = {int(r["seed"]): r for r in at if r["method"] == ref}
            b = {int(r["seed"]): r for r in at if r["method"] == m}
            common = sorted(set(a) & set(b))
            per: dict[str, str] = {}
            bits = []
            for key in measures:
                d = paired_difference([a[s][key] for s in common], [b[s][key] for s in common])
                per[key] = _call(d, words)
                name = MEASURE_NAMES.get(key, key)
                bits.append(f"{name} {d['difference']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}] {per[key]}")
            calls[question][f"{ratio:g}"] = per
            parts.append(f"  ratio {ratio:g} (n={len(common)} seeds): " + "; ".join(bits))
        found = []
        for word in words:
            where = [f"{MEASURE_NAMES.get(k, k)} at ratio {r}" for r, per in calls[question].items()
                     for k, c in per.items() if c == word]
            if where:
                found.append(f"{word}: " + ", ".join(where))
        if found:
            answer = "; ".join(found)
        elif any(c == "not enough seeds" for per in calls[question].values() for c in per.values()):
            answer = f"not enough seeds to tell (a call needs at least {MIN_SEEDS} paired seeds)"
        else:
            answer = "no measurable difference at any ratio, for any measure"
        lines.append(f"{question} ({m} - {ref}) -> {answer}")
        lines += parts
    return {"lines": lines, "calls": calls}
