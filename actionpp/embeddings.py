"""Pixel embeddings of validation images and their head-versus-tail geometry.

Why one module of this length: extraction, the geometry numbers (alignment, uniformity,
nearest-centre accuracy, angles) and the 2D maps are the three steps of one study, used
together by notebook 05.

Taught in notebooks/05_embeddings.ipynb.

ACTION++ argues that a supervised pixel-contrastive loss lets the head class
(background, ~96 % of ACDC pixels) dominate the embedding space, and that fixed,
uniformly spread class centres give tail classes (RV, Myo, LV) their own room.
This module measures that claim on a trained model:

- :func:`extract` runs the student on 2D slices and reads the representation head
  at sampled pixels only (``RepresentationHead.forward_at``, identical to the dense
  head there), L2-normalised. Two samplings: ``"balanced"`` (up to ``per_class``
  pixels of every class, uniformly among that class's pixels) and ``"natural"``
  (``total`` pixels uniformly among all pixels, so classes appear at their data
  frequency: mostly background).
- :func:`alignment` (mean cosine of each embedding to its own normalised class mean;
  1 = the class collapsed onto one direction), :func:`uniformity` (Wang and Isola's
  ``log mean_{i != j} exp(-2 ||u_i - u_j||^2)``: 0 for one point repeated, -8 for two
  antipodal points, -4K/(K-1) for a regular K-simplex; lower = more spread),
  :func:`nearest_centre_accuracy` (classify each embedding by its nearest class
  centre, through the allocator's assignment when the model has centres, else by the
  nearest normalised class mean) and :func:`mean_angles` (degrees between normalised
  class means: 180 for antipodal means, 90 for orthogonal ones).
- :func:`geometry` gathers these per class with the class frequency, so a table
  reads head (most frequent) against tail (rarest); :func:`seed_difference` puts a standard
  error next to a difference between two methods' per-seed numbers.
- :func:`umap_2d` fits one UMAP on the embeddings *and* the centres together, so both
  land in the same 2D map (:func:`pca_2d` does the same linearly, in milliseconds, for
  smoke runs: UMAP's numba compilation alone costs ~30 s per process on a 2-core CPU);
  :func:`plot_map` draws either.

Shapes: embeddings ``(N, d)`` float32 rows of unit norm; labels ``(N,)`` int64 in
``[0, K)``; centres ``(K, d)`` unit rows, row c = the centre of class c (already
permuted by the assignment: ``CentreAllocator.class_centres()``).
Degenerate cases: a class with no sampled pixel gets NaN in every per-class number
(its mean is undefined) and is skipped by the angle and accuracy computations;
uniformity of fewer than two points is NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from actionpp import sampling as sampling_
from actionpp.data.spec import dataset_spec
from actionpp.metrics import mean_std
from actionpp.models.backbone import Backbone
from actionpp.models.heads import RepresentationHead

if TYPE_CHECKING:  # pragma: no cover - typing only
    from actionpp.config import Config

__all__ = [
    "Embeddings",
    "RunModel",
    "load_run",
    "validation_slices",
    "sample_positions",
    "extract",
    "class_means",
    "alignment",
    "uniformity",
    "nearest_centre_accuracy",
    "mean_angles",
    "geometry",
    "seed_difference",
    "seed_verdict",
    "umap_2d",
    "pca_2d",
    "map_2d",
    "plot_map",
    "SAMPLE_FILE",
    "embedding_sample",
    "write_embedding_sample",
    "read_embedding_sample",
]

SAMPLINGS = ("balanced", "natural")


@dataclass
class Embeddings:
    """L2-normalised pixel embeddings with their labels and where they came from.

    ``vectors (N, d)`` float32 on the CPU, unit rows; ``labels (N,)`` int64;
    ``index (N, 3)`` int64 rows ``(slice, y, x)`` into the images given to :func:`extract`;
    ``sampling``: ``"balanced"`` or ``"natural"``; ``num_classes``: K (background included);
    ``pixel_counts (K,)``: how many pixels of each class the images held (natural frequency).
    """

    vectors: Tensor
    labels: Tensor
    index: Tensor
    sampling: str
    num_classes: int
    pixel_counts: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or self.labels.shape != (self.vectors.shape[0],):
            raise ValueError(
                f"vectors must be (N, d) and labels (N,), got {tuple(self.vectors.shape)} and "
                f"{tuple(self.labels.shape)}"
            )

    @property
    def frequencies(self) -> Tensor:
        """Share of each class among all pixels of the images ``(K,)`` float64 (sums to 1)."""
        c = self.pixel_counts.to(torch.float64)
        return c / c.sum().clamp_min(1)


# ---------------------------------------------------------------------------------------------
# Loading a trained run
# ---------------------------------------------------------------------------------------------


@dataclass
class RunModel:
    """What :func:`extract` needs from a run: backbone, representation head, class centres.

    ``net``: the 2D backbone in eval mode; ``head``: the student's representation head;
    ``centres``: ``(K, d)`` row c = the centre assigned to class c at the end of training
    (``None`` when the method has no SAACL allocator); ``assignment``: ``(K,)`` or ``None``;
    ``config``: the run's :class:`actionpp.config.Config`; ``checkpoint``: the weights' file.
    """

    net: Backbone
    head: RepresentationHead
    centres: Tensor | None
    assignment: Tensor | None
    config: Config
    checkpoint: str


def load_run(run_dir: str | Path, which: str = "auto", device: str | torch.device = "cpu") -> RunModel:
    """Load the student backbone *and* its representation head from a training run directory.

    ``which``: ``"best"``, ``"last"`` or ``"auto"`` (the run's ``eval.select``), read by
    :func:`actionpp.models.segmodel.load_segmodel` (which :func:`~actionpp.models.segmodel.load_model`
    reads too, for the backbone only). The centres and their assignment come from ``last.pt``
    (``best.pt`` stores no allocator; the centres are fixed and the assignment is the one at the end
    of training). Raises :class:`actionpp.checkpoint.CheckpointError` naming the folder when it holds no
    checkpoint.
    """
    from actionpp.checkpoint import CheckpointError, load_checkpoint
    from actionpp.models.segmodel import load_segmodel

    rd = Path(run_dir)
    if not rd.is_dir():
        raise CheckpointError(f"run directory {rd} does not exist")
    loaded = load_segmodel(rd, which, device)
    last: Mapping[str, Any] = (
        loaded.state
        if loaded.checkpoint.name == "last.pt"
        else (load_checkpoint(rd / "last.pt", map_location="cpu") if (rd / "last.pt").is_file() else {})
    )
    centres = assignment = None
    alloc = last.get("allocator")
    if alloc is not None:
        assignment = alloc["assignment"].long().cpu()
        centres = F.normalize(alloc["centres"].float().cpu(), dim=1)[assignment]
    return RunModel(loaded.model.net, loaded.model.rep, centres, assignment, loaded.config, str(loaded.checkpoint))


def validation_slices(config: Config, split: str = "val", max_volumes: int | None = None) -> tuple[Tensor, Tensor]:
    """The slices of ``split`` as the model sees them: ``images (S, 1, size, size)`` float32 and
    ``labels (S, size, size)`` int64, nearest-resized to ``config.data.size`` (a 2D dataset: ACDC).

    The data folder comes from ``config.data.root`` (``"phantom"``, ``"shared"`` or a path).
    ``max_volumes`` keeps the first volumes only.
    """
    from actionpp.data.roots import resolve_data_root
    from actionpp.data.tensors import load_volumes, resize_nearest

    if dataset_spec(config.data.dataset).spatial_dims != 2:
        raise ValueError(f"validation_slices supports 2D datasets only, got dataset {config.data.dataset!r}")
    root = resolve_data_root(config.data.root, config)
    vols = load_volumes(root, split)
    if max_volumes is not None:
        vols = vols[:max_volumes]
    if not vols:
        raise ValueError(f"{root}: split {split!r} has no volumes")
    size = config.data.size
    imgs = [resize_nearest(sl, size) for v in vols for sl in v.image]
    labs = [resize_nearest(sl, size) for v in vols for sl in v.label]
    images = torch.from_numpy(np.stack(imgs).astype(np.float32))[:, None]
    labels = torch.from_numpy(np.stack(labs).astype(np.int64))
    return images, labels


# ---------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------


def sample_positions(
    labels: Tensor,
    num_classes: int,
    sampling: str = "balanced",
    per_class: int = 500,
    total: int = 2000,
    seed: int = 0,
) -> Tensor:
    """Pixel positions ``(M, 3)`` int64 rows ``(slice, y, x)`` drawn from ``labels (S, H, W)``.

    (Not :func:`actionpp.sampling.sample_pixels`, which it calls: that one draws the training's
    ``(idx, labels)`` from a batch; this one the positions of a study's two samplings.)

    ``"balanced"``: for every class, ``min(per_class, #pixels of that class)`` pixels without
    replacement, uniformly among that class's pixels (classes in order 0..K-1). ``"natural"``:
    ``min(total, S*H*W)`` pixels without replacement, uniformly among all pixels (both drawn by
    :mod:`actionpp.sampling`, the sampler training uses). Seeded by
    ``seed`` (a CPU generator), so the same labels and seed give the same pixels.
    """
    if labels.ndim != 3:
        raise ValueError(f"labels must be (S, H, W), got shape {tuple(labels.shape)}")
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    if per_class < 1 or total < 1:
        raise ValueError(f"per_class and total must be >= 1, got {per_class}, {total}")
    flat = labels.reshape(-1).to("cpu", torch.long)
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), found {int(flat.min())}..{int(flat.max())}")
    g = torch.Generator().manual_seed(seed)
    lab_cpu = labels.to("cpu", torch.long)
    if sampling == "natural":
        return sampling_.sample_natural(lab_cpu, total, g)
    idx, _ = sampling_.sample_pixels(lab_cpu, num_classes, per_class, g)
    return idx


@torch.no_grad()
def extract(
    model: Backbone,
    head: RepresentationHead,
    images: Tensor,
    labels: Tensor,
    num_classes: int,
    sampling: str = "balanced",
    per_class: int = 500,
    total: int = 2000,
    seed: int = 0,
    batch: int = 16,
) -> Embeddings:
    """Representation-head embeddings of ``images (S, 1, H, W)`` at pixels sampled from ``labels (S, H, W)``.

    ``model`` is a 2D backbone with ``forward_features(x) -> (logits, Features)``; ``head`` a
    :class:`actionpp.models.RepresentationHead` reading the last ``len(head.in_channels_list)``
    decoder maps (all of them for the official 2D head). Only the sampled pixels are computed
    (``head.forward_at``), in slice batches of ``batch``, on the model's device; both modules are
    put in eval mode for the call and restored after. Returns unit-norm rows on the CPU in the
    order of :func:`sample_positions`. 3D backbones are not supported (ValueError).
    """
    if (
        images.ndim != 4
        or labels.ndim != 3
        or images.shape[0] != labels.shape[0]
        or images.shape[2:] != labels.shape[1:]
    ):
        raise ValueError(
            f"images must be (S, 1, H, W) and labels (S, H, W) of the same S, H, W; got {tuple(images.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if getattr(head, "spatial_dims", 2) != 2:
        raise ValueError("extract supports 2D models only (the head has spatial_dims=3)")
    idx = sample_positions(labels, num_classes, sampling, per_class, total, seed)
    counts = torch.bincount(labels.reshape(-1).to("cpu", torch.long), minlength=num_classes)
    device = next(model.parameters()).device
    n_maps = len(head.in_channels_list)
    was = (model.training, head.training)
    model.eval()
    head.eval()
    out = torch.empty(idx.shape[0], head.dim)
    try:
        for s0 in range(0, images.shape[0], batch):
            s1 = min(s0 + batch, images.shape[0])
            sel = torch.nonzero((idx[:, 0] >= s0) & (idx[:, 0] < s1)).reshape(-1)
            if sel.numel() == 0:
                continue
            x = images[s0:s1].to(device=device, dtype=torch.float32)
            _, feats = model.forward_features(x)
            maps = feats.decoder[-n_maps:]
            p = idx[sel].to(device)
            emb = head.forward_at(maps, tuple(x.shape[2:]), p[:, 0] - s0, p[:, 1], p[:, 2])  # (n, d)
            out[sel] = emb.float().cpu()
    finally:
        model.train(was[0])
        head.train(was[1])
    vectors = F.normalize(out, dim=1)
    lab = labels.to("cpu", torch.long)[idx[:, 0], idx[:, 1], idx[:, 2]]
    return Embeddings(vectors, lab, idx, sampling, num_classes, counts)


# ---------------------------------------------------------------------------------------------
# A published sample of a run's embeddings (what notebook 05 reads without a checkpoint)
# ---------------------------------------------------------------------------------------------

SAMPLE_FILE = "embeddings.npz"
SAMPLE_FORMAT = 1


@torch.no_grad()
def embedding_sample(
    run_dir: str | Any,
    split: str = "val",
    per_class: int = 250,
    total: int = 1000,
    seed: int = 0,
    which: str = "last",
    device: str | torch.device = "cpu",
) -> dict[str, np.ndarray]:
    """A small, self-contained sample of a 2D run's pixel embeddings on ``split`` (the published ``embeddings.npz``).

    For both samplings (``balanced``: up to ``per_class`` pixels of every class; ``natural``: ``total``
    pixels uniformly; :func:`sample_positions`, seeded by ``seed``), at the same pixels:
    ``<sampling>_head (N, d)`` the representation head's output, L2-normalised; ``<sampling>_features
    (N, C)`` the decoder features the segmentation head reads (the last decoder map), as they are;
    ``<sampling>_labels (N,)`` the ground truth and ``<sampling>_pred (N,)`` the network's prediction.
    Also ``centres (K, d)`` (row c: the centre assigned to class c; empty without SAACL),
    ``assignment (K,)`` (empty without), ``class_pixels (K,)`` every pixel of the split by class, and
    ``meta``: a JSON string (method, seed, labelled patients, split, sampling, checkpoint, format).
    Vectors are float16 (a run's sample is ~0.6 MB); labels int8.
    """
    import json

    rm = load_run(run_dir, which, device)
    cfg = rm.config
    k = cfg.data.num_classes
    images, labels = validation_slices(cfg, split)
    dev = next(rm.net.parameters()).device
    out: dict[str, np.ndarray] = {}
    for sampling in SAMPLINGS:
        idx = sample_positions(labels, k, sampling, per_class, total, seed)
        head = torch.empty(idx.shape[0], rm.head.dim)
        feats: Tensor | None = None
        pred = torch.empty(idx.shape[0], dtype=torch.long)
        for s0 in range(0, images.shape[0], 16):
            sel = torch.nonzero((idx[:, 0] >= s0) & (idx[:, 0] < s0 + 16)).reshape(-1)
            if sel.numel() == 0:
                continue
            x = images[s0:s0 + 16].to(dev)
            logits, f = rm.net.forward_features(x)
            p = idx[sel].to(dev)
            maps = f.decoder[-len(rm.head.in_channels_list):]
            head[sel] = rm.head.forward_at(maps, tuple(x.shape[2:]), p[:, 0] - s0, p[:, 1], p[:, 2]).float().cpu()
            last = f.decoder[-1][p[:, 0] - s0, :, p[:, 1], p[:, 2]].float().cpu()  # (n, C)
            if feats is None:
                feats = torch.empty(idx.shape[0], last.shape[1])
            feats[sel] = last
            pred[sel] = logits.argmax(1)[p[:, 0] - s0, p[:, 1], p[:, 2]].cpu()
        lab = labels[idx[:, 0], idx[:, 1], idx[:, 2]]
        out[f"{sampling}_head"] = F.normalize(head, dim=1).numpy().astype(np.float16)
        out[f"{sampling}_features"] = (feats if feats is not None else torch.empty(0, 0)).numpy().astype(np.float16)
        out[f"{sampling}_labels"] = lab.numpy().astype(np.int8)
        out[f"{sampling}_pred"] = pred.numpy().astype(np.int8)
    empty = np.zeros((0,), dtype=np.float16)
    out["centres"] = rm.centres.numpy().astype(np.float16) if rm.centres is not None else empty
    out["assignment"] = rm.assignment.numpy().astype(np.int8) if rm.assignment is not None else empty.astype(np.int8)
    out["class_pixels"] = torch.bincount(labels.reshape(-1), minlength=k).numpy().astype(np.int64)
    meta = {"format": SAMPLE_FORMAT, "method": cfg.method.name, "seed": cfg.runtime.seed,
            "labelled_patients": cfg.data.labelled, "split": split, "per_class": per_class, "total": total,
            "sampling_seed": seed, "checkpoint": Path(rm.checkpoint).name, "dataset": cfg.data.dataset}
    out["meta"] = np.array(json.dumps(meta))
    return out


def write_embedding_sample(run_dir: str | Any, path: str | Any, **kwargs: Any) -> Any:
    """:func:`embedding_sample` of ``run_dir`` saved (compressed, atomically) to ``path``; returns the path."""
    import io

    from actionpp.atomic import atomic_write_bytes

    buf = io.BytesIO()
    np.savez_compressed(buf, **embedding_sample(run_dir, **kwargs))  # type: ignore[arg-type]
    return atomic_write_bytes(Path(path), buf.getvalue())


def read_embedding_sample(path: str | Any) -> dict[str, Any]:
    """A published ``embeddings.npz`` as numpy arrays (float32 vectors) plus ``meta`` as a dict.

    Raises ``ValueError`` naming the file when it is unreadable or of another format.
    """
    import json

    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        meta = json.loads(str(data.pop("meta")))
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"{p}: not a readable embedding sample ({type(exc).__name__}: {exc})") from None
    if meta.get("format") != SAMPLE_FORMAT:
        raise ValueError(f"{p}: embedding sample format {meta.get('format')!r}, expected {SAMPLE_FORMAT}")
    out: dict[str, Any] = {k: (v.astype(np.float32) if v.dtype == np.float16 else v) for k, v in data.items()}
    out["meta"] = meta
    return out


# ---------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------


def _check(emb: Tensor, labels: Tensor, num_classes: int) -> None:
    if emb.ndim != 2 or labels.shape != (emb.shape[0],):
        raise ValueError(f"embeddings must be (N, d) and labels (N,), got {tuple(emb.shape)} and {tuple(labels.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes})")


def class_means(emb: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Normalised class means ``(K, d)`` of unit embeddings; a class without samples -> NaN row."""
    _check(emb, labels, num_classes)
    sums = torch.zeros(num_classes, emb.shape[1], dtype=torch.float64).index_add_(0, labels, emb.double())
    n = torch.bincount(labels, minlength=num_classes)
    means = F.normalize(sums, dim=1)
    means[n == 0] = float("nan")
    return means


def alignment(emb: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Per class mean cosine of unit embeddings to their own normalised class mean ``(K,)`` float64.

    1 when every embedding of the class points the same way; NaN for a class without samples.
    """
    mu = class_means(emb, labels, num_classes)
    cos = (emb.double() * mu[labels]).sum(1)  # (N,)
    sums = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, labels, cos)
    n = torch.bincount(labels, minlength=num_classes).double()
    return sums / n  # 0/0 -> NaN for empty classes


def uniformity(emb: Tensor, t: float = 2.0, max_points: int | None = 4000, seed: int = 0) -> float:
    """``log mean_{i != j} exp(-t ||u_i - u_j||^2)`` over distinct pairs of unit rows (t = 2).

    More than ``max_points`` rows are subsampled (seeded) to bound the O(N^2) cost. Computed with
    logsumexp in float64. Fewer than two rows -> NaN.
    """
    if emb.ndim != 2:
        raise ValueError(f"embeddings must be (N, d), got {tuple(emb.shape)}")
    x = emb.double()
    if max_points is not None and x.shape[0] > max_points:
        g = torch.Generator().manual_seed(seed)
        x = x[torch.randperm(x.shape[0], generator=g)[:max_points]]
    n = x.shape[0]
    if n < 2:
        return float("nan")
    sq = torch.cdist(x, x).pow(2)  # (n, n)
    off = ~torch.eye(n, dtype=torch.bool)
    vals = -t * sq[off]
    return float(torch.logsumexp(vals, 0) - math.log(vals.numel()))


def nearest_centre_accuracy(
    emb: Tensor,
    labels: Tensor,
    centres: Tensor,
) -> tuple[float, Tensor]:
    """Classify each unit embedding by its most similar centre; ``(overall accuracy, per class (K,))``.

    ``centres (K, d)``: row c is class c's centre (for ACTION++, ``CentreAllocator.class_centres()``,
    i.e. ``psi[assignment[c]]``; otherwise normalised class means). Rows with NaN (a class never
    seen) never win. Per-class accuracy is recall, NaN for a class without samples.
    """
    k = centres.shape[0]
    _check(emb, labels, k)
    c = centres.double()
    sim = emb.double() @ c.T  # (N, K)
    sim[:, torch.isnan(c).any(1)] = -float("inf")
    pred = sim.argmax(1)
    hit = (pred == labels).double()
    per = torch.zeros(k, dtype=torch.float64).index_add_(0, labels, hit) / torch.bincount(labels, minlength=k).double()
    return (float(hit.mean()) if hit.numel() else float("nan")), per


def mean_angles(means: Tensor) -> Tensor:
    """Angles in degrees ``(K, K)`` between the rows of ``means`` (normalised inside); NaN rows give NaN."""
    m = F.normalize(means.double(), dim=1)
    cos = (m @ m.T).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.arccos(cos))


def geometry(
    emb: Embeddings | Tensor,
    labels: Tensor | None = None,
    num_classes: int | None = None,
    centres: Tensor | None = None,
    class_names: Sequence[str] | None = None,
    frequencies: Tensor | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Head-versus-tail numbers of one set of embeddings, as plain Python (metrics.json ready).

    Returns ``{"per_class": {name: {frequency, alignment, uniformity, accuracy, min_angle_deg}},
    "uniformity": float, "accuracy": float, "accuracy_by": "centres" | "class means",
    "angles_deg": K x K list, "head": name, "tail": name}``. ``frequency`` is the class's share
    of all pixels (from ``Embeddings.pixel_counts`` or ``frequencies``); ``head`` is the most and
    ``tail`` the least frequent class (by sampled labels when no frequency is known);
    ``min_angle_deg`` the smallest angle from the class mean to another class mean. Accuracy uses
    ``centres`` when given (ACTION++), else the normalised class means (nearest class mean).
    """
    if isinstance(emb, Embeddings):
        vectors, labels, num_classes = emb.vectors, emb.labels, emb.num_classes
        if frequencies is None and emb.pixel_counts.numel():
            frequencies = emb.frequencies
    else:
        vectors = emb
    if labels is None or num_classes is None:
        raise ValueError("geometry needs labels and num_classes with a plain tensor of embeddings")
    _check(vectors, labels, num_classes)
    names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"class_names has {len(names)} entries for {num_classes} classes")
    if frequencies is None:
        frequencies = torch.bincount(labels, minlength=num_classes).double() / max(1, labels.numel())
    means = class_means(vectors, labels, num_classes)
    align = alignment(vectors, labels, num_classes)
    ref = centres if centres is not None else means
    acc, per_acc = nearest_centre_accuracy(vectors, labels, ref)
    ang = mean_angles(means)
    per: dict[str, dict[str, float]] = {}
    for c, name in enumerate(names):
        others = [ang[c, j].item() for j in range(num_classes) if j != c and not math.isnan(ang[c, j].item())]
        per[name] = {
            "frequency": float(frequencies[c]),
            "alignment": float(align[c]),
            "uniformity": uniformity(vectors[labels == c], seed=seed),
            "accuracy": float(per_acc[c]),
            "min_angle_deg": min(others) if others else float("nan"),
        }
    order = sorted(range(num_classes), key=lambda c: float(frequencies[c]))
    return {
        "per_class": per,
        "uniformity": uniformity(vectors, seed=seed),
        "accuracy": acc,
        "accuracy_by": "centres" if centres is not None else "class means",
        "angles_deg": ang.tolist(),
        "head": names[order[-1]],
        "tail": names[order[0]],
    }


def seed_difference(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """``b - a`` for two methods' per-seed values: the difference of the means and its standard error.

    Returns ``{"difference": mean(b) - mean(a), "se": sqrt(s_a^2 / n_a + s_b^2 / n_b), "n_a", "n_b"}``
    with the sample variances (``ddof=1``, as the "mean +- std over seeds" of the tables); non-finite
    values are left out, and ``se`` is NaN when a side has fewer than two values. A difference of
    more than about two standard errors is unlikely to be seed noise alone; with three seeds a
    side the standard error is itself a rough estimate, so read it as a scale, not a test.
    """
    ma, sa, na = mean_std(a, ddof=1)  # finite values only; std NaN below two values
    mb, sb, nb = mean_std(b, ddof=1)
    se = math.sqrt(sa**2 / na + sb**2 / nb) if na >= 2 and nb >= 2 else math.nan
    return {"difference": mb - ma, "se": se, "n_a": na, "n_b": nb}


def seed_verdict(
    values: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    a: str,
    b: str,
    cls: str,
    higher: Mapping[str, bool],
    labels: Mapping[str, str] | None = None,
    seeds: tuple[Sequence[int], Sequence[int]] | None = None,
) -> list[str]:
    """Sentences comparing methods ``a`` and ``b`` on one class, metric by metric, unpaired over seeds.

    ``values[metric]`` holds ``(a's per-seed values, b's per-seed values)``; each metric's ``b - a`` and its
    standard error come from :func:`seed_difference` (finite values only). ``higher[metric]`` is True where a
    larger value means better separated (accuracies, smallest angle, Dice: such a difference is "ahead"),
    False where the metric has no better direction (alignment, uniformity: "higher" / "lower"). A difference
    counts when it exceeds twice its standard error; a side with fewer than two finite values, or no spread on
    either side (standard error 0), is said to be no comparison instead. The last sentence sums up the
    metrics with a direction; ``seeds`` (a's, b's) are named in it. Metrics without a finite difference
    (e.g. centre accuracy for a method without centres) are left out.
    """
    labels = labels or {}
    lines: list[str] = []
    ahead = {a: 0, b: 0}
    counted = 0
    for metric, (va, vb) in values.items():
        d = seed_difference(va, vb)
        diff, se, n_a, n_b = d["difference"], d["se"], int(d["n_a"]), int(d["n_b"])
        if not math.isfinite(diff):
            continue
        has_se = bool(min(n_a, n_b) >= 2 and math.isfinite(se) and se > 0)
        big = bool(has_se and abs(diff) > 2 * se and abs(diff) > 1e-9)
        if min(n_a, n_b) < 2:
            word = (f"no standard error ({a}: {n_a} value(s), {b}: {n_b}; "
                    f"{'one draw' if max(n_a, n_b) == 1 else 'fewer than two on a side'}): not a comparison")
        elif not has_se:
            word = "no spread over the seeds on either side (standard error 0): not a comparison"
        elif higher.get(metric, False):
            winner = b if diff > 0 else a
            word = f"{winner} ahead by more than 2 standard errors" if big else "within 2 standard errors (seed noise)"
            if big:
                ahead[winner] += 1
        else:
            word = (f"{b} {'higher' if diff > 0 else 'lower'} by more than 2 standard errors" if big
                    else "within 2 standard errors (seed noise)")
        counted += int(has_se and higher.get(metric, False))
        spread = f" +- {se:.3f}" if has_se else ""
        mean_a, mean_b = mean_std(va)[0], mean_std(vb)[0]
        lines.append(f"{cls} (tail), {labels.get(metric, metric)}: {a} {mean_a:.3f}, {b} {mean_b:.3f}; "
                     f"{b} - {a} = {diff:+.3f}{spread}: {word}")
    named = f"seeds {list(seeds[0])} and {list(seeds[1])}" if seeds is not None else f"the seeds of {a} and {b}"
    if counted:
        lines.append(f"In short: of {counted} tail numbers where higher means better separated (accuracies, smallest "
                     f"angle, Dice), {b} is ahead beyond 2 standard errors on {ahead[b]} and {a} on {ahead[a]} "
                     f"({named}).")
    else:
        lines.append(f"In short: no tail number has a standard error here ({named}), so nothing is called ahead; "
                     "add seeds to SEEDS for a spread, or read part 1 (the published seeds).")
    return lines


# ---------------------------------------------------------------------------------------------
# Maps
# ---------------------------------------------------------------------------------------------


def umap_2d(
    emb: Tensor,
    centres: Tensor | None = None,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """One cosine-metric UMAP fitted on ``emb (N, d)`` and ``centres (K, d)`` stacked together.

    Returns ``(points (N, 2), centres (K, 2) or None)``: the centres are placed by the same fit,
    so distances to them in the map mean what they mean for the embeddings. ``n_neighbors`` is
    capped at N + K - 1. Seeded (single-threaded UMAP, reproducible).
    """
    import umap  # heavy import (numba): only here

    x = emb.detach().double().cpu().numpy()
    k = 0
    if centres is not None:
        c = F.normalize(centres.detach().double().cpu(), dim=1).numpy()
        x = np.concatenate([x, c], axis=0)
        k = c.shape[0]
    if x.shape[0] < 4:
        raise ValueError(f"UMAP needs at least 4 points, got {x.shape[0]}")
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=min(n_neighbors, x.shape[0] - 1),
        min_dist=min_dist,
        metric="cosine",
        random_state=seed,
        n_jobs=1,
    )
    y = reducer.fit_transform(x)
    return (y[:-k], y[-k:]) if k else (y, None)


def pca_2d(emb: Tensor, centres: Tensor | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """The first two principal components of ``emb`` and ``centres`` stacked (same contract as
    :func:`umap_2d`). Deterministic up to the sign of each axis, which is fixed so that the
    largest-magnitude loading of each component is positive."""
    x = emb.detach().double().cpu()
    k = 0
    if centres is not None:
        c = F.normalize(centres.detach().double().cpu(), dim=1)
        x = torch.cat([x, c], 0)
        k = c.shape[0]
    if x.shape[0] < 2:
        raise ValueError(f"PCA needs at least 2 points, got {x.shape[0]}")
    xc = x - x.mean(0, keepdim=True)
    _, _, vh = torch.linalg.svd(xc, full_matrices=False)
    comps = vh[:2]  # (2, d)
    sign = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True)))
    comps = comps * sign
    y = (xc @ comps.T).numpy()
    if y.shape[1] < 2:  # d == 1
        y = np.concatenate([y, np.zeros((y.shape[0], 2 - y.shape[1]))], axis=1)
    return (y[:-k], y[-k:]) if k else (y, None)


def map_2d(
    emb: Tensor, centres: Tensor | None = None, method: str = "umap", seed: int = 0
) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`umap_2d` (``method="umap"``) or :func:`pca_2d` (``"pca"``)."""
    if method == "umap":
        return umap_2d(emb, centres, seed=seed)
    if method == "pca":
        return pca_2d(emb, centres)
    raise ValueError(f"map method must be 'umap' or 'pca', got {method!r}")


def plot_map(
    ax: Any,
    points: np.ndarray,
    labels: Tensor | np.ndarray,
    centres_2d: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    title: str = "",
    colors: Mapping[int, Any] | None = None,
) -> None:
    """Scatter a 2D map on a matplotlib axis: one colour per class, centres as black-edged stars."""
    import matplotlib.pyplot as plt

    lab = np.asarray(labels)
    k = int(lab.max()) + 1 if lab.size else 0
    if centres_2d is not None:
        k = max(k, centres_2d.shape[0])
    names = list(class_names) if class_names is not None else [str(c) for c in range(k)]
    cmap = plt.get_cmap("tab10")
    for c in range(k):
        col = (colors or {}).get(c, cmap(c % 10))
        m = lab == c
        if m.any():
            ax.scatter(points[m, 0], points[m, 1], s=3, alpha=0.5, color=col, label=names[c], rasterized=True)
        if centres_2d is not None and c < centres_2d.shape[0]:
            ax.scatter(*centres_2d[c], marker="*", s=250, color=col, edgecolors="black", linewidths=1.2, zorder=5)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
