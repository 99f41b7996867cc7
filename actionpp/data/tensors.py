"""The training set as tensors on the training device, and the validation volumes.

Everything is loaded once into memory (and onto ``device``): the training loop then
indexes tensors instead of running a DataLoader. Accepts a dataset folder or a pack.

Taught in notebooks/04_train.ipynb.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from actionpp.config import ConfigError
from actionpp.data.core import DataError, Volume
from actionpp.data.roots import open_dataset

__all__ = ["TrainTensors", "TrainVolumes", "resize_nearest", "load_acdc_training", "load_la_training", "load_volumes"]


@dataclass
class TrainTensors:
    """2D training set.

    ``x_l (N,1,S,S) float32``, ``y_l (N,S,S) int64``, ``x_u (M,1,S,S) float32`` on one device;
    ``names_l`` / ``names_u`` are the slice names in ``train_slices.list`` order.
    """

    x_l: torch.Tensor
    y_l: torch.Tensor
    x_u: torch.Tensor
    names_l: list[str] = field(default_factory=list)
    names_u: list[str] = field(default_factory=list)

    @property
    def device(self) -> torch.device:
        return self.x_l.device


@dataclass
class TrainVolumes:
    """3D training set: lists of tensors (volumes differ in size).

    ``x_l[i] (1,X,Y,Z) float32``, ``y_l[i] (X,Y,Z) int64``, ``x_u[j] (1,X,Y,Z) float32``.
    """

    x_l: list[torch.Tensor]
    y_l: list[torch.Tensor]
    x_u: list[torch.Tensor]
    names_l: list[str] = field(default_factory=list)
    names_u: list[str] = field(default_factory=list)


@functools.lru_cache(maxsize=256)
def _nearest_index(h: int, w: int, size: int) -> np.ndarray:
    """Flat source index of every output pixel of an order-0 ``scipy.ndimage.zoom`` (H, W) -> (size, size).

    Zooming the index image itself with order 0 returns, at each output pixel, the index of the
    source pixel that scipy picks; caching it per shape makes every later resize a gather.
    """
    from scipy.ndimage import zoom

    idx = np.arange(h * w, dtype=np.float64).reshape(h, w)
    out = zoom(idx, (size / h, size / w), order=0)
    return np.rint(out).astype(np.int64)


def resize_nearest(a: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of a 2D array to ``(size, size)``, dtype kept.

    Identical to ``scipy.ndimage.zoom(a, (size / H, size / W), order=0)``, the resize SSL4MIS uses
    for both image and label (no new label values can appear), but computed as a cached gather.
    """
    if a.ndim != 2:
        raise ValueError(f"resize_nearest expects a 2D array, got shape {a.shape}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    h, w = a.shape
    if (h, w) == (size, size):
        return a.copy()
    return a.ravel()[_nearest_index(h, w, size)]


def _stack(ds: object, names: list[str], size: int, device: torch.device | str,
           labels: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    xs = np.empty((len(names), 1, size, size), np.float32)
    ys = np.empty((len(names), size, size), np.uint8) if labels else None
    for i, n in enumerate(names):
        img, lab = ds.read_slice(n)  # type: ignore[attr-defined]
        xs[i, 0] = resize_nearest(img, size)
        if ys is not None:
            ys[i] = resize_nearest(lab, size)
    y = torch.from_numpy(ys).to(device=device, dtype=torch.int64) if ys is not None else None
    return torch.from_numpy(xs).to(device), y


def load_acdc_training(
    root: str | Path, labelled_patients: int | None, size: int, device: torch.device | str = "cpu"
) -> TrainTensors:
    """All ACDC training slices, nearest-resized to ``size x size``, split into labelled / unlabelled.

    The labelled slices are the first lines of ``train_slices.list`` that cover
    ``labelled_patients`` patients (3 -> 68 lines, 7 -> 136 on real ACDC); the rest are unlabelled
    (``x_u`` has ``M = 0`` rows when ``labelled_patients`` is ``None``, i.e. all labelled).
    ``root`` is an ACDC folder or an ACDC pack. More labelled patients than the list holds raise
    :class:`~actionpp.config.ConfigError` naming ``data.labelled``.
    """
    from actionpp.data.acdc import first_patients

    ds = open_dataset(root)
    if ds.kind != "acdc":
        raise DataError(f"{root}: expected an ACDC dataset, found {ds.kind}")
    names = ds.train_slices
    try:
        k = first_patients(names, labelled_patients)
    except ValueError as exc:  # more labelled patients than the data hold: a configuration problem
        raise ConfigError(f"data.labelled: {exc} ({root}/train_slices.list)") from None
    x_l, y_l = _stack(ds, names[:k], size, device, labels=True)
    x_u, _ = _stack(ds, names[k:], size, device, labels=False)
    assert y_l is not None
    return TrainTensors(x_l, y_l, x_u, names[:k], names[k:])


def load_la_training(root: str | Path, labelled: int, device: torch.device | str = "cpu") -> TrainVolumes:
    """LA training volumes: the first ``labelled`` ids of ``train.list`` labelled, the other available ids not.

    Raises :class:`DataError` if one of the first ``labelled`` ids is absent (the labelled subset
    must be the standard one) and :class:`~actionpp.config.ConfigError` (``data.labelled``) for ``labelled``
    < 0 or > len(train.list).
    """
    ds = open_dataset(root)
    if ds.kind != "la":
        raise DataError(f"{root}: expected an LA dataset, found {ds.kind}")
    ids = ds.volumes("train")
    if not 0 <= labelled <= len(ids):
        raise ConfigError(f"data.labelled: labelled must be in 0..{len(ids)} (the cases of {root}/train.list), "
                          f"got {labelled}")
    present = set(ds.available("train"))
    absent = [c for c in ids[:labelled] if c not in present]
    if absent:
        raise DataError(f"{root}: labelled LA case(s) {absent} listed in train.list but absent")
    names_l = ids[:labelled]
    names_u = [c for c in ids[labelled:] if c in present]

    def load(names: list[str], with_labels: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        xs, ys = [], []
        for c in names:
            v = ds.read_volume(c)
            xs.append(torch.from_numpy(v.image[None].astype(np.float32)).to(device))
            if with_labels:
                ys.append(torch.from_numpy(v.label.astype(np.int64)).to(device))
        return xs, ys

    x_l, y_l = load(names_l, True)
    x_u, _ = load(names_u, False)
    return TrainVolumes(x_l, y_l, x_u, list(names_l), names_u)


def load_volumes(root: str | Path, split: str) -> list[Volume]:
    """Volumes of ``split`` (ACDC ``val`` / ``test``; LA ``train`` / ``test``) as numpy :class:`Volume` s.

    For LA only the available ids are returned (a partial copy holds only some).
    """
    ds = open_dataset(root)
    names = ds.available(split) if ds.kind == "la" else ds.volumes(split)
    return [ds.read_volume(n) for n in names]
