"""The training set as tensors on the training device, and the validation volumes.

Everything is loaded once into memory (and onto ``device``): the training loop then
indexes tensors instead of running a DataLoader. Accepts a dataset folder or a pack.
The two shapes a training set takes, whatever the dataset: :func:`load_slice_training`
(2D: every training slice resized and stacked, :class:`TrainTensors`) and
:func:`load_volume_training` (3D: one tensor per volume, :class:`TrainVolumes`); which
images are labelled is the dataset's own rule (``DatasetSpec.split_labelled``).

Taught in notebooks/04_train.ipynb.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import cast

import numpy as np
import torch

from actionpp.data.core import DataError, Volume
from actionpp.data.roots import open_dataset
from actionpp.data.spec import DatasetReader, DatasetSpec, SliceReader, TrainTensors, TrainVolumes, dataset_spec

__all__ = [
    "TrainTensors", "TrainVolumes", "resize_nearest", "load_slice_training", "load_volume_training",
    "load_acdc_training", "load_la_training", "load_volumes",
]


@functools.lru_cache(maxsize=256)
def _nearest_index(h: int, w: int, size: int) -> np.ndarray:
    """Flat source index of every output pixel of an order-0 ``scipy.ndimage.zoom`` (H, W) -> (size, size).

    Zooming the index image itself with order 0 returns, at each output pixel, the index of the
    source pixel that scipy picks; caching it per shape makes every later resize a gather.
    """
    from scipy.ndimage import zoom

    idx = np.arange(h * w, dtype=np.float64).reshape(h, w)
    out = zoom(idx, (size / h, size / w), order=0)
    flat: np.ndarray = np.rint(out).astype(np.int64)
    return flat


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
    out: np.ndarray = a.copy() if (h, w) == (size, size) else a.ravel()[_nearest_index(h, w, size)]
    return out


def _stack(ds: SliceReader, names: list[str], size: int, device: torch.device | str,
           labels: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    xs = np.empty((len(names), 1, size, size), np.float32)
    ys = np.empty((len(names), size, size), np.uint8) if labels else None
    for i, n in enumerate(names):
        img, lab = ds.read_slice(n)
        xs[i, 0] = resize_nearest(img, size)
        if ys is not None:
            ys[i] = resize_nearest(lab, size)
    y = torch.from_numpy(ys).to(device=device, dtype=torch.int64) if ys is not None else None
    return torch.from_numpy(xs).to(device), y


def _open_as(root: str | Path, spec: DatasetSpec) -> DatasetReader:
    """The dataset at ``root``; :class:`DataError` when it holds another dataset than ``spec``'s."""
    ds: DatasetReader = open_dataset(root)
    if ds.kind != spec.name:
        raise DataError(f"{root}: expected {spec.article_title} dataset, found {ds.kind}")
    return ds


def load_slice_training(
    root: str | Path, labelled: int | None, size: int, device: torch.device | str = "cpu", *, dataset: str,
) -> TrainTensors:
    """Every training slice of a 2D ``dataset`` (``train_slices``), nearest-resized to ``size x size``.

    The labelled ones are the dataset's rule (``DatasetSpec.split_labelled``: ACDC, the first lines of
    ``train_slices.list`` that cover ``labelled`` patients), the rest unlabelled (``x_u`` has ``M = 0``
    rows when ``labelled`` is ``None``, i.e. all labelled). ``root`` is a folder or a pack of that dataset.
    More labelled units than the data hold raise :class:`~actionpp.data.spec.LabelledError` naming
    ``data.labelled``.
    """
    spec = dataset_spec(dataset)
    ds = _open_as(root, spec)
    names_l, names_u = spec.split_labelled(ds, labelled)
    sr = cast(SliceReader, ds)  # spec.training == "slices": a slice reader
    x_l, y_l = _stack(sr, names_l, size, device, labels=True)
    x_u, _ = _stack(sr, names_u, size, device, labels=False)
    assert y_l is not None
    return TrainTensors(x_l, y_l, x_u, names_l, names_u)


def load_volume_training(
    root: str | Path, labelled: int | None, size: int = 0, device: torch.device | str = "cpu", *, dataset: str,
) -> TrainVolumes:
    """The training volumes of a 3D ``dataset`` (its ``train`` split), labelled as the dataset's rule says
    (LA: the first ``labelled`` ids of ``train.list``, the other available ids unlabelled). ``size`` is unused
    (3D batches are cropped to ``data.crop``)."""
    spec = dataset_spec(dataset)
    ds = _open_as(root, spec)
    names_l, names_u = spec.split_labelled(ds, labelled)

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
    return TrainVolumes(x_l, y_l, x_u, list(names_l), list(names_u))


def load_acdc_training(
    root: str | Path, labelled_patients: int | None, size: int, device: torch.device | str = "cpu"
) -> TrainTensors:
    """All ACDC training slices, nearest-resized to ``size x size``, split into labelled / unlabelled.

    The labelled slices are the first lines of ``train_slices.list`` that cover
    ``labelled_patients`` patients (3 -> 68 lines, 7 -> 136 on real ACDC); the rest are unlabelled
    (``x_u`` has ``M = 0`` rows when ``labelled_patients`` is ``None``, i.e. all labelled).
    ``root`` is an ACDC folder or an ACDC pack. More labelled patients than the list holds raise
    :class:`~actionpp.data.spec.LabelledError` naming ``data.labelled``.
    """
    return load_slice_training(root, labelled_patients, size, device, dataset="acdc")


def load_la_training(root: str | Path, labelled: int, device: torch.device | str = "cpu") -> TrainVolumes:
    """LA training volumes: the first ``labelled`` ids of ``train.list`` labelled, the other available ids not.

    Raises :class:`DataError` if one of the first ``labelled`` ids is absent (the labelled subset
    must be the standard one) and :class:`~actionpp.data.spec.LabelledError` (``data.labelled``) for
    ``labelled`` < 0 or > len(train.list).
    """
    return load_volume_training(root, labelled, 0, device, dataset="la")


def load_volumes(root: str | Path, split: str) -> list[Volume]:
    """Volumes of ``split`` as numpy :class:`Volume` s (the split lists the dataset's spec names).

    Of a dataset whose copies may be partial (``DatasetSpec.partial_copies``: LA) only the available
    volumes are returned; otherwise a listed volume that is absent is an error.
    """
    ds: DatasetReader = open_dataset(root)
    names = ds.available(split) if dataset_spec(ds.kind).partial_copies else ds.volumes(split)
    return [ds.read_volume(n) for n in names]
