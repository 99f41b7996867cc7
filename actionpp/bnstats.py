"""BatchNorm's running statistics: re-estimating them from images, and what that changes on a split.

A network is scored in eval mode: every BatchNorm layer normalises with the running mean and
variance it accumulated over the training batches, not with the statistics of the images in
front of it. When those training batches do not look like the images scored (few labelled
patients the network has memorised, strong augmentations in the same forward), a network can
segment well in train mode and badly in eval mode. :func:`check_batchnorm` tells the two apart on
a checkpoint: it scores the split as stored, then again after :func:`reestimate_batchnorm` has
replaced the running statistics by the average over unlabelled training images (no labels, no
gradient, the weights untouched), and once more with batches mixed as in fine-tuning (labelled
and unlabelled images). A large gain from the unlabelled images says the running statistics, not
the weights, are what fails; the mixed batches say whether the training batches' composition is
why. It is a diagnostic: the numbers a table reports stay the stored checkpoint's.

Only BatchNorm layers switch to train mode while re-estimating; dropout stays off
(``torch.optim.swa_utils.update_bn`` puts the whole network in train mode, dropout included,
which would make the statistics those of a network that is never scored).

``actionpp evaluate RUN --data shared --split val --reestimate-bn 400`` prints both; a grid's
``batchnorm_check`` block has the runner do it for every run (:mod:`actionpp.replicate.batchnorm`).
Taught in notebooks/06_replication_report.ipynb.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["FORMAT", "batchnorm_layers", "reestimate_batchnorm", "draw_batches", "check_batchnorm"]

FORMAT = 1


def batchnorm_layers(net: nn.Module) -> list[_BatchNorm]:
    """Every BatchNorm layer of ``net`` that tracks running statistics, in module order."""
    return [m for m in net.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def reestimate_batchnorm(net: nn.Module, batches: Iterable[Tensor]) -> int:
    """Replace every BatchNorm layer's running mean and variance by their average over ``batches``.

    Each layer's statistics are reset, then every batch goes through ``net`` with the BatchNorm layers
    in train mode (the rest in eval mode: no dropout) and no gradient; with ``momentum=None`` a layer's
    running mean is the plain average of the batch means, its running variance the average of the
    unbiased batch variances, as ``torch.nn.BatchNorm`` defines them. Afterwards the layers' momenta
    and the network's train / eval mode are as before. Returns the number of images seen.

    Raises ``ValueError`` (the network's statistics unchanged) for a network without BatchNorm, no
    batch, or a batch of one image (train-mode BatchNorm needs more than one value per channel).
    """
    layers = batchnorm_layers(net)
    if not layers:
        raise ValueError(f"{type(net).__name__} has no BatchNorm layer with running statistics to re-estimate")
    saved = [{k: v.clone() for k, v in m.state_dict().items()} for m in layers]
    momenta = [m.momentum for m in layers]
    was_training = net.training
    seen = 0
    try:
        net.eval()
        for m in layers:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches
            m.train()
        with torch.no_grad():
            for x in batches:
                if x.shape[0] < 2:
                    raise ValueError(f"a batch of {x.shape[0]} image(s): train-mode BatchNorm needs at least 2")
                net(x)
                seen += int(x.shape[0])
        if seen == 0:
            raise ValueError("no batch to re-estimate the BatchNorm statistics from")
    except BaseException:
        for m, state in zip(layers, saved, strict=True):
            m.load_state_dict(state)
        raise
    finally:
        for m, momentum in zip(layers, momenta, strict=True):
            m.momentum = momentum
        net.train(was_training)
    return seen


def draw_batches(parts: Sequence[tuple[Tensor | list[Tensor], int]], batches: int, seed: int,
                 crop: Sequence[int] | None = None) -> Iterator[Tensor]:
    """``batches`` batches, each the concatenation of ``k`` images of every ``(images, k)`` in ``parts``.

    ``images``: ``(N, C, H, W)`` (2D) or a list of ``(C, X, Y, Z)`` volumes (3D: each image a random ``crop``
    of a drawn volume). Every part is drawn without repetition while it lasts (a seeded permutation), then
    again; no augmentation. Raises ``ValueError`` for an empty part or batches of fewer than 2 images.
    """
    from actionpp import augment as aug

    gen = torch.Generator().manual_seed(seed)
    if sum(k for _, k in parts) < 2 or any(k < 1 for _, k in parts):
        raise ValueError(f"a batch needs at least 2 images and every part at least 1, got {[k for _, k in parts]}")
    orders = []
    for images, k in parts:
        n = len(images)
        if n == 0:
            raise ValueError("no images to draw a batch from (e.g. no unlabelled training images: every "
                             "training image is labelled)")
        need = batches * k
        orders.append(torch.cat([torch.randperm(n, generator=gen) for _ in range(-(-need // n))])[:need])
    for b in range(batches):
        xs = []
        for (images, k), order in zip(parts, orders, strict=True):
            idx = order[b * k:(b + 1) * k].tolist()
            if isinstance(images, Tensor):
                xs.append(images[torch.tensor(idx, device=images.device)])
            else:
                if crop is None:
                    raise ValueError("3D training volumes need a crop size")
                xs.append(aug.random_crop([images[j] for j in idx], None, crop, gen)[0])
        yield torch.cat(xs)


def check_batchnorm(checkpoint: str | Path, split: str = "val", which: str = "last", weights: str = "student",
                    images: int = 400, seed: int = 0, device: str | torch.device = "cpu",
                    data: str | None = None) -> dict[str, Any]:
    """Score ``checkpoint`` on ``split`` as stored and with its BatchNorm statistics re-estimated two ways.

    ``unlabelled``: from ``images`` unlabelled training images of the run's own data (``data``: another root)
    in batches of the run's fine-tuning batch size ``B = train.batch_labelled + train.batch_unlabelled``;
    ``mixed``: as many batches, each ``train.batch_labelled`` labelled and ``train.batch_unlabelled``
    unlabelled images, the composition of a fine-tuning batch without its augmentation. When ``mixed``
    fails as the stored statistics do and ``unlabelled`` does not, the labelled images in the training
    batches are what the stored statistics describe. Both drawn with ``seed``; the checkpoint file is not
    changed. Returns JSON-safe data::

        {"format": 1, "checkpoint", "iteration", "split", "weights", "images", "batch", "batches", "seed",
         "source": "...", "stored": SUMMARY, "unlabelled": SUMMARY, "mixed": SUMMARY}

    with SUMMARY as :func:`actionpp.evaluate.summarise_result` (``dice``, ``dice_per_class``, ``empty``, ...).
    Errors of :func:`actionpp.evaluate.evaluate_run` (no checkpoint, a split the data lack) and of
    :func:`reestimate_batchnorm` propagate.
    """
    from actionpp.checkpoint import checkpoint_choice, load_checkpoint
    from actionpp.evaluate import evaluate, evaluate_run, summarise_result
    from actionpp.train.data import load_training_data

    path, _ = checkpoint_choice(checkpoint, which)
    state = load_checkpoint(path, map_location="cpu")
    iteration = state.get("iteration")
    del state
    ev = evaluate_run(path, data, split=split, which=which, device=device, weights=weights)
    cfg = ev.config if data is None else ev.config.replace({"data.root": str(ev.root)})
    dev = next(ev.network.parameters()).device
    train = load_training_data(cfg, dev, with_val=False).train
    b_l, b_u = cfg.train.batch_labelled, cfg.train.batch_unlabelled
    n_batches = max(images // (b_l + b_u), 1)
    crop = tuple(cfg.data.crop)
    out: dict[str, Any] = {
        "format": FORMAT, "checkpoint": str(path), "iteration": iteration, "split": split, "weights": weights,
        "images": n_batches * (b_l + b_u), "batch": b_l + b_u, "batches": n_batches, "seed": seed,
        "source": f"training images of {ev.root}, no augmentation, BatchNorm in train mode, no dropout",
        "stored": ev.summary,
    }
    for name, parts in (("unlabelled", [(train.x_u, b_l + b_u)]), ("mixed", [(train.x_l, b_l), (train.x_u, b_u)])):
        reestimate_batchnorm(ev.network, draw_batches(parts, n_batches, seed, crop))
        with torch.no_grad():
            again = evaluate(ev.network, ev.volumes, dataset=cfg.data.dataset, size=cfg.data.size,
                             patch=cfg.data.crop, num_classes=cfg.data.num_classes, device=dev, progress=False,
                             split=split)
        out[name] = summarise_result(again, cfg.data.dataset)
    return out
