"""The training data of a run: tensors on the device (2D) or volume lists (3D), and the validation volumes.

Taught in notebooks/04_train.ipynb.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from actionpp.config import Config
from actionpp.data.core import DataError
from actionpp.data.roots import resolve_data_root

__all__ = ["TrainingData", "load_training_data"]


@dataclass
class TrainingData:
    """``x_l`` / ``y_l`` labelled images and labels, ``x_u`` unlabelled images, ``val`` volumes (numpy).

    2D: ``x_l (N_l, 1, S, S)``, ``y_l (N_l, S, S)``, ``x_u (N_u, 1, S, S)`` tensors on the
    device; 3D: lists of per-volume tensors (cropped per batch).
    """

    x_l: Any
    y_l: Any
    x_u: Any
    val: list[Any]
    root: Path

    @property
    def n_l(self) -> int:
        return len(self.x_l)

    @property
    def n_u(self) -> int:
        return len(self.x_u)


_CACHE: dict[tuple[Any, ...], TrainingData] = {}


def load_training_data(cfg: Config, device: torch.device, with_val: bool) -> TrainingData:
    """Load (or reuse: the last data set stays cached in the process, e.g. for a notebook's runs) the data."""
    root = resolve_data_root(cfg.data.root, cfg)
    d = cfg.data
    key = (str(root), d.dataset, d.labelled, d.size, str(device), with_val, d.val_split, d.val_max_volumes)
    if key not in _CACHE:
        _CACHE.clear()  # keep one data set only (it may live on the GPU)
        _CACHE[key] = _read(cfg, root, device, with_val)
    return _CACHE[key]


def _read(cfg: Config, root: Path, device: torch.device, with_val: bool) -> TrainingData:
    from actionpp.data import tensors

    x_l: Any
    y_l: Any
    x_u: Any
    if cfg.data.dataset == "acdc":
        t = tensors.load_acdc_training(root, cfg.data.labelled, cfg.data.size, device)
        x_l, y_l, x_u = t.x_l, t.y_l, t.x_u
    else:
        labelled = cfg.data.labelled
        if labelled is None:  # all labelled
            from actionpp.data.roots import open_dataset

            labelled = len(open_dataset(root).volumes("train"))
        v = tensors.load_la_training(root, labelled, device)
        x_l, y_l, x_u = v.x_l, v.y_l, v.x_u
    if len(x_l) == 0:
        raise DataError(f"{root}: no labelled training images (data.labelled={cfg.data.labelled})")
    val: list[Any] = []
    if with_val and cfg.data.val_split != "none":
        val = tensors.load_volumes(root, cfg.data.val_split)
        if cfg.data.val_max_volumes is not None:
            val = val[: cfg.data.val_max_volumes]
    return TrainingData(x_l, y_l, x_u, val, root)
