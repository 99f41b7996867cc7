"""BatchNorm's running statistics: re-estimating them from images, and what that changes on a split.

A network is scored in eval mode: every BatchNorm layer normalises with the running mean and
variance it kept during training (an exponential average, momentum 0.1: mostly the last few dozen
training batches, seen by weights that were still moving), not with the statistics of the images
in front of it. When those training batches do not look like the images scored, a network can
segment well in train mode and badly in eval mode. :func:`check_batchnorm` tells the two apart on a
checkpoint: it scores the split as stored, then again after :func:`reestimate_batchnorm` has replaced
the running statistics by the average over unlabelled training images (no labels, no gradient, the
weights untouched), and once more over batches composed as the run's fine-tuning forward composes
them (labelled and unlabelled images in one forward or in two, or labelled only), without their
augmentation, first with dropout off and then on. A large gain from the unlabelled images says the
running statistics, not the weights, are what fails; the training-composed batches say whether the
batches' composition reproduces the failure, and the same batches with dropout on whether dropout
does: in train mode dropout changes the variance of what the layers after it see, so statistics
recorded with it on do not describe the network scored with it off (the "variance shift" of Li et
al., CVPR 2019). It is a diagnostic: the numbers a table reports stay the stored checkpoint's.

Only BatchNorm layers switch to train mode while re-estimating, unless asked; dropout stays off
(``torch.optim.swa_utils.update_bn`` puts the whole network in train mode, dropout included,
which records the statistics of a network that is never scored).

``actionpp evaluate RUN --data shared --split val --reestimate-bn 400`` prints the three; a grid's
``batchnorm_check`` block has ``replicate --publish`` do it for every run (:mod:`actionpp.replicate.batchnorm`).
Taught in notebooks/06_replication_report.ipynb.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["FORMAT", "batchnorm_layers", "reestimate_batchnorm", "draw_batches", "training_batches",
           "check_batchnorm"]

FORMAT = 3  # 3 adds `training_dropout`; 2 had no dropout way; 1 had `mixed` instead of `training`


def batchnorm_layers(net: nn.Module) -> list[_BatchNorm]:
    """Every BatchNorm layer of ``net`` that tracks running statistics, in module order."""
    return [m for m in net.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def reestimate_batchnorm(net: nn.Module, batches: Iterable[Tensor], dropout: bool = False) -> int:
    """Replace every BatchNorm layer's running mean and variance by their average over ``batches``.

    Each layer's statistics are reset, then every batch goes through ``net`` with the BatchNorm layers
    in train mode and no gradient; every other module stays in eval mode (no dropout) unless ``dropout``,
    which puts the whole network in train mode, as a training forward runs it. With ``momentum=None`` a
    layer's running mean is the plain average of the batch means, its running variance the average of
    the unbiased batch variances, as ``torch.nn.BatchNorm`` defines them, and ``num_batches_tracked`` the
    number of batches. Afterwards every module's train / eval mode and every layer's momentum are as
    before. Returns the number of images seen.

    Raises ``ValueError`` (the statistics unchanged) for a network without BatchNorm, no batch, or a
    batch of one image (its statistics would be one image's, not a batch's).
    """
    layers = batchnorm_layers(net)
    if not layers:
        raise ValueError(f"{type(net).__name__} has no BatchNorm layer with running statistics to re-estimate")
    saved = [{k: v.clone() for k, v in m.state_dict().items()} for m in layers]
    momenta = [m.momentum for m in layers]
    modes = [(m, m.training) for m in net.modules()]
    seen = 0
    try:
        net.train(dropout)
        for m in layers:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches
            m.train()
        with torch.no_grad():
            for x in batches:
                if x.shape[0] < 2:
                    raise ValueError(f"a batch of {x.shape[0]} image(s): a batch's statistics need at least 2")
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
        for module, mode in modes:
            module.training = mode
    return seen


def draw_batches(parts: Sequence[tuple[Tensor | list[Tensor], int]], batches: int, seed: int,
                 crop: Sequence[int] | None = None) -> Iterator[Tensor]:
    """``batches`` batches, each the concatenation of ``k`` images of every ``(images, k)`` in ``parts``.

    ``images``: ``(N, C, H, W)`` (2D) or a list of ``(C, X, Y, Z)`` volumes (3D: each image a random ``crop``
    of a drawn volume). Every part is drawn as seeded permutations one after the other (every image once
    before any twice; a batch that straddles two permutations may hold one image twice); no augmentation.
    Raises ``ValueError`` for an empty part, no batch, or batches of fewer than 2 images.
    """
    from actionpp import augment as aug

    if batches < 1:
        raise ValueError(f"batches must be at least 1, got {batches}")
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


def training_batches(cfg: Any, x_l: Tensor | list[Tensor], x_u: Tensor | list[Tensor], images: int,
                     seed: int) -> tuple[Iterator[Tensor], str]:
    """BatchNorm batches composed as the run's fine-tuning forward composes them, about ``images`` images in all,
    and a description: ``B_l`` labelled and ``B_u`` unlabelled images in one forward (``train.finetune_forward:
    joint``), the two in separate forwards (``separate``: a labelled batch, then an unlabelled one), or
    ``B_l`` labelled alone for a method whose fine-tuning reads no unlabelled image (supervised)."""
    b_l, b_u = cfg.train.batch_labelled, cfg.train.batch_unlabelled
    crop = tuple(cfg.data.crop)
    if not cfg.method.finetune_unlabelled:
        return draw_batches([(x_l, b_l)], max(images // b_l, 1), seed, crop), f"{b_l} labelled images per batch"
    n = max(images // (b_l + b_u), 1)
    if cfg.train.finetune_forward != "separate":
        return (draw_batches([(x_l, b_l), (x_u, b_u)], n, seed, crop),
                f"{b_l} labelled + {b_u} unlabelled images in one batch")

    def alternate() -> Iterator[Tensor]:
        for both in draw_batches([(x_l, b_l), (x_u, b_u)], n, seed, crop):
            yield both[:b_l]
            yield both[b_l:]
    return alternate(), f"{b_l} labelled, then {b_u} unlabelled images, in two batches"


def check_batchnorm(checkpoint: str | Path, split: str = "val", which: str = "last", weights: str = "student",
                    images: int = 400, seed: int = 0, device: str | torch.device = "cpu",
                    data: str | None = None) -> dict[str, Any]:
    """Score ``checkpoint`` on ``split`` as stored and with its BatchNorm statistics re-estimated three ways.

    ``unlabelled``: from ``images`` unlabelled training images of the run's own data (``data``: another root)
    in batches of ``B = train.batch_labelled + train.batch_unlabelled``; ``training``: from about as many
    images in batches composed as the run's fine-tuning forward composes them (:func:`training_batches`);
    ``training_dropout``: the same batches with the network's dropout on, as in a training forward. All
    drawn with ``seed``, without augmentation, dropout off but in the last; the checkpoint file is not
    changed. Returns JSON-safe data::

        {"format": 3, "checkpoint", "checkpoint_mtime_ns", "iteration", "note", "split", "weights", "images",
         "batch", "seed", "data", "training_batches": "...", "stored": SUMMARY, "unlabelled": SUMMARY,
         "training": SUMMARY, "training_dropout": SUMMARY}

    with SUMMARY as :func:`actionpp.evaluate.summarise_result` (``dice``, ``dice_per_class``, ``empty``, ...)
    and ``checkpoint_mtime_ns`` read before the checkpoint is. Errors of
    :func:`actionpp.evaluate.evaluate_run` (no checkpoint, a split the data lack) and of
    :func:`reestimate_batchnorm` propagate.
    """
    from actionpp.checkpoint import checkpoint_choice
    from actionpp.evaluate import evaluate, evaluate_run, summarise_result
    from actionpp.train.data import load_training_data

    path, note = checkpoint_choice(checkpoint, which)
    mtime = path.stat().st_mtime_ns  # before reading it: a file replaced meanwhile is not recorded as this one
    ev = evaluate_run(path, data, split=split, which=which, device=device, weights=weights)
    cfg = ev.config if data is None else ev.config.replace({"data.root": str(ev.root)})
    dev = next(ev.network.parameters()).device
    train = load_training_data(cfg, dev, with_val=False).train
    b = cfg.train.batch_labelled + cfg.train.batch_unlabelled
    n_unl = max(images // b, 1)
    composed, described = training_batches(cfg, train.x_l, train.x_u, images, seed)
    out: dict[str, Any] = {
        "format": FORMAT, "checkpoint": str(path), "checkpoint_mtime_ns": mtime, "iteration": ev.iteration,
        "note": note, "split": split, "weights": weights, "images": n_unl * b, "batch": b, "seed": seed,
        "data": str(ev.root), "training_batches": described, "stored": ev.summary,
    }
    composed_again, _ = training_batches(cfg, train.x_l, train.x_u, images, seed)  # the same batches
    for name, batches, dropout in (
            ("unlabelled", draw_batches([(train.x_u, b)], n_unl, seed, tuple(cfg.data.crop)), False),
            ("training", composed, False),
            ("training_dropout", composed_again, True)):
        # dropout's masks come from torch's global generators: seeded here, the caller's left as they were
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(seed)
            reestimate_batchnorm(ev.network, batches, dropout=dropout)
        with torch.no_grad():
            again = evaluate(ev.network, ev.volumes, dataset=cfg.data.dataset, size=cfg.data.size,
                             patch=cfg.data.crop, num_classes=cfg.data.num_classes, device=dev, progress=False,
                             split=split)
        out[name] = summarise_result(again, cfg.data.dataset)
    return out
