"""The training model bundle: a backbone plus every head a method uses, and loading it back.

:class:`SegModel` is what the student (and, as an EMA copy, the teacher) is during
training. It computes no loss: ``forward`` returns the logits, the decoder features
and, when asked, the representation head's embeddings at given pixels and the ISD
projections. The objective (``actionpp.train.objective``) turns those into losses.

Why the embeddings come out of ``forward``: every parameter a loss touches must run
inside DistributedDataParallel's forward for its gradient to be averaged across
ranks. The caller draws the pixel coordinates first (``actionpp.sampling``) and
passes them in; the head is evaluated only there (``RepresentationHead.forward_at``).

:func:`load_segmodel` reads a checkpoint back as a :class:`SegModel`; :func:`load_model` returns its bare
backbone for inference.

Taught in notebooks/04_train.ipynb.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from actionpp.config import Config
from actionpp.models.backbone import Backbone, Features
from actionpp.models.heads import GlobalHead, LocalHead, ProjectionMLP, RepresentationHead
from actionpp.models.unet import UNet2D
from actionpp.models.vnet import VNet3D
from actionpp.sampling import embed_at

__all__ = ["PixelQuery", "SegOutput", "SegModel", "LoadedModel", "load_segmodel", "load_model"]


@dataclass(frozen=True)
class PixelQuery:
    """Pixels at which to read the representation head: ``idx (N, 1 + nd)`` rows ``(b, ...)``.

    ``rows``: read the decoder maps of the first ``rows`` images only (the labelled part of
    a labelled + unlabelled batch); None = all images.
    """

    idx: Tensor
    rows: int | None = None


@dataclass
class SegOutput:
    """What :meth:`SegModel.forward` returns.

    ``logits (B, K, *spatial)``; ``features`` (bottleneck and decoder maps);
    ``embeddings``: name -> ``(N, rep_dim)`` head outputs at the queried pixels (not
    normalised); ``isd_global (B, proj_dim)`` and ``isd_local (B * P, proj_dim)``: the
    student's ISD predictions (projection, then predictor) when asked, else None.
    """

    logits: Tensor
    features: Features
    embeddings: dict[str, Tensor] = field(default_factory=dict)
    isd_global: Tensor | None = None
    isd_local: Tensor | None = None


class SegModel(nn.Module):
    """Backbone + every head the methods use, as one module (student; the EMA teacher is a copy).

    - ``net``: ``UNet2D`` (ACDC) or ``VNet3D`` (LA); inference uses only ``net``;
    - ``rep``: pixel representation head (SAACL and AnCo): every decoder map (bottleneck
      included) up-sampled to the output size and concatenated, then a 3x3 (3D: 3x3x3)
      and a 1x1 (1x1x1) convolution to ``model.rep_dim``, as the official 2D and 3D heads;
    - ``g_head`` / ``g_pred``: ISD global projection (pooled bottleneck) and student predictor;
    - ``l_head`` / ``l_pred``: ISD local projection (pooled windows of the last decoder map) and predictor.
    """

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        k = cfg.data.num_classes
        self.net: Backbone
        if cfg.model.arch == "unet2d":
            self.net = UNet2D(cfg.model.in_channels, k)
            self.spatial_dims = 2
        else:
            self.net = VNet3D(cfg.model.in_channels, k)
            self.spatial_dims = 3
        ch = list(self.net.feature_channels)  # coarse -> fine
        self.rep = RepresentationHead(ch, dim=cfg.model.rep_dim, kernel_size=3, spatial_dims=self.spatial_dims)
        h, d = cfg.model.proj_hidden, cfg.model.proj_dim
        self.g_head = GlobalHead(ch[0], h, d)
        self.g_pred = ProjectionMLP(d, h, d)
        self.l_head = LocalHead(ch[-1], window=cfg.pretrain.patch, stride=cfg.pretrain.stride, hidden=h, out_dim=d)
        self.l_pred = ProjectionMLP(d, h, d)

    def rep_maps(self, features: Features) -> list[Tensor]:
        """The decoder maps the representation head reads."""
        return list(features.decoder)

    def embed(self, features: Features, size: tuple[int, ...], query: PixelQuery) -> Tensor:
        """The representation head at ``query``'s pixels, from ``features`` of an output of ``size``."""
        maps = self.rep_maps(features)
        if query.rows is not None:
            maps = [f[: query.rows] for f in maps]
        return embed_at(self.rep, maps, size, query.idx)

    def forward(
        self, x: Tensor, embed: Mapping[str, PixelQuery] | None = None, isd: bool = False, split: int | None = None,
    ) -> SegOutput:
        """Logits and features of ``x``; the head at each query of ``embed``; the ISD predictions if ``isd``.

        ``split``: run the backbone on ``x[:split]`` and ``x[split:]`` separately (two BatchNorm
        batches, as the official fine-tuning scripts do with the labelled and the unlabelled batch)
        and concatenate the outputs; None = one forward of the whole batch.
        """
        if split is None or split <= 0 or split >= x.shape[0]:
            logits, features = self.net.forward_features(x)
        else:
            la, fa = self.net.forward_features(x[:split])
            lb, fb = self.net.forward_features(x[split:])
            logits = torch.cat([la, lb])
            features = Features(torch.cat([fa.bottleneck, fb.bottleneck]),
                                [torch.cat([a, b]) for a, b in zip(fa.decoder, fb.decoder)])
        out = SegOutput(logits, features)
        size = tuple(logits.shape[2:])
        queries = dict(embed or {})
        if len(queries) > 1:
            # one head call for every query: the coarse maps are projected once (RepresentationHead.forward_at);
            # a query's ``rows`` only says its pixels lie in the first rows images, which the full maps hold too
            idx = torch.cat([q.idx for q in queries.values()])
            emb = embed_at(self.rep, self.rep_maps(features), size, idx)
            for name, part in zip(queries, emb.split([q.idx.shape[0] for q in queries.values()])):
                out.embeddings[name] = part
        else:
            for name, query in queries.items():
                out.embeddings[name] = self.embed(features, size, query)
        if isd:
            out.isd_global = self.g_pred(self.g_head(features.bottleneck))
            out.isd_local = self.l_pred(self.l_head(features.decoder[-1]).flatten(0, 1))
        return out


@dataclass
class LoadedModel:
    """A checkpoint read back as a :class:`SegModel` (eval mode): the model, its run's config, the file
    it came from and the checkpoint itself (what else it holds: the allocator, the iteration, ...)."""

    model: SegModel
    config: Config
    checkpoint: Path
    state: Mapping[str, Any]


def load_segmodel(
    run_dir_or_checkpoint: str | Path,
    which: str = "best",
    device: str | torch.device = "cpu",
    weights: str = "student",
    heads: bool = True,
) -> LoadedModel:
    """A checkpoint's :class:`SegModel` in eval mode on ``device`` (the one loader of trained weights).

    ``which``: ``best`` (falls back to ``last.pt`` when the run did not validate), ``last`` or ``auto``
    (the run's ``eval.select``), for a run directory. ``weights``: ``student`` or ``teacher`` (the EMA
    teacher of the same checkpoint). ``heads``: also load the heads (the representation head the
    embeddings read); False loads the backbone only (inference: the heads keep their initial weights).
    Raises :class:`~actionpp.checkpoint.CheckpointError` naming the file for a missing teacher or weights
    that do not fit this version's model.
    """
    from actionpp.checkpoint import CheckpointError, find_checkpoint, load_checkpoint
    from actionpp.config import stored_config
    from actionpp.distributed import resolve_device

    path = find_checkpoint(run_dir_or_checkpoint, which)
    state = load_checkpoint(path, map_location="cpu")
    cfg = stored_config(json.loads(state["config"]))
    if weights == "student":
        prefix, full = "", state["student"]
    elif weights == "teacher":
        if state.get("teacher") is None:
            raise CheckpointError(f"{path}: method {cfg.method.name!r} has no teacher")
        prefix, full = "model.", state["teacher"]
    else:
        raise ValueError(f"weights must be 'student' or 'teacher', got {weights!r}")
    model = SegModel(cfg)
    own = {k[len(prefix):]: v for k, v in full.items() if k.startswith(prefix)}
    try:
        if heads:
            model.load_state_dict(own)
        else:  # only the backbone: the heads are not needed (nor loaded) for inference
            model.net.load_state_dict({k[len("net."):]: v for k, v in own.items() if k.startswith("net.")})
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: the {weights} network does not match this version's model: {exc}") from exc
    dev = resolve_device(str(device)) if isinstance(device, str) else device
    return LoadedModel(model.to(dev).eval(), cfg, path, state)


def load_model(
    run_dir_or_checkpoint: str | Path,
    which: str = "best",
    device: str | torch.device = "cpu",
    weights: str = "student",
) -> tuple[nn.Module, Config]:
    """``(network in eval mode, config)`` from a run directory or a checkpoint file.

    ``which``: ``best`` (falls back to ``last.pt`` when the run did not validate),
    ``last`` or ``auto`` (the run's ``eval.select``). ``weights``: ``student`` (what is
    evaluated) or ``teacher``. The network is the bare backbone (``UNet2D`` / ``VNet3D``):
    the contrastive heads are dropped at inference. ``device``: a torch device or
    ``"auto"`` / ``"cpu"`` / ``"cuda[:N]"`` (default the CPU). :func:`load_segmodel` keeps the heads.
    """
    loaded = load_segmodel(run_dir_or_checkpoint, which, device, weights, heads=False)
    return loaded.model.net, loaded.config
