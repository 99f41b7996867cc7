"""The training data of a run: its dataset's training set on the device, and the validation volumes.

What the training set is (2D slices stacked on the device, or 3D volumes as a list) and which images
are labelled is the dataset's :class:`~actionpp.data.spec.DatasetSpec`; this module only loads it once
per process and names the setting when the data cannot satisfy it.

Taught in notebooks/04_train.ipynb.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from actionpp.config import Config, ConfigError
from actionpp.data.core import DataError, Volume
from actionpp.data.roots import resolve_data_root
from actionpp.data.spec import LabelledError, TrainSet, TrainTensors, dataset_spec

__all__ = ["TrainingData", "load_training_data"]


@dataclass
class TrainingData:
    """``train``: the labelled and unlabelled training images; ``val``: validation volumes (numpy); ``root``.

    2D (:class:`~actionpp.data.spec.TrainTensors`): ``x_l (N_l, 1, S, S)``, ``y_l (N_l, S, S)``,
    ``x_u (N_u, 1, S, S)`` tensors on the device; 3D (:class:`~actionpp.data.spec.TrainVolumes`): lists
    of per-volume tensors (cropped per batch).
    """

    train: TrainSet
    val: list[Volume]
    root: Path

    @property
    def spatial_dims(self) -> int:
        """2 for stacked slices, 3 for volumes."""
        return 2 if isinstance(self.train, TrainTensors) else 3

    @property
    def n_l(self) -> int:
        """Labelled training images."""
        return len(self.train.x_l)

    @property
    def n_u(self) -> int:
        """Unlabelled training images."""
        return len(self.train.x_u)


_CACHE: dict[tuple[object, ...], TrainingData] = {}


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
    from actionpp.data.tensors import load_volumes

    spec = dataset_spec(cfg.data.dataset)
    try:
        train = spec.load_training(root, cfg.data.labelled, cfg.data.size, device)
    except LabelledError as exc:  # the data hold fewer labelled images than data.labelled asks: a setting
        raise ConfigError(str(exc)) from None
    if len(train.x_l) == 0:
        raise DataError(f"{root}: no labelled training images (data.labelled={cfg.data.labelled})")
    val: list[Volume] = []
    if with_val and cfg.data.val_split != "none":
        val = load_volumes(root, cfg.data.val_split)
        if cfg.data.val_max_volumes is not None:
            val = val[: cfg.data.val_max_volumes]
    return TrainingData(train, val, root)
