"""A dataset is one :class:`DatasetSpec`: everything the library knows about it, in one object.

A spec says what a dataset *is* (its name, its classes, 2D or 3D, the architecture that
trains on it, how it is scored: slice-wise or with a sliding window), how its folders are
recognised and read (its reader), how its training set is split into labelled and
unlabelled images and loaded, how a report words its split, and which phantom imitates it.
The configuration (:mod:`actionpp.config`), the training data (:mod:`actionpp.train.data`),
evaluation (:mod:`actionpp.evaluate`), the run report (:mod:`actionpp.report`), the
embeddings (:mod:`actionpp.embeddings`) and the data tools (:mod:`actionpp.data.check`,
``pack``, ``roots``, ``folders``, ``phantom``) consult the spec; none of them branches on
a dataset's name.

The registry: :func:`register_dataset` adds a spec, :func:`dataset_spec` finds one by name
(``data.dataset``), :func:`dataset_specs` lists them in registration order. The two built-in
specs (ACDC, LA) are defined in :mod:`actionpp.data.datasets` and registered when the
``actionpp.data`` package is imported, before any of its modules is used. A new dataset is
its spec, its reader, its phantom and its test (``docs/architecture.md``); registering the
spec from one place (a built-in: one line in :mod:`actionpp.data.datasets`) is all the rest
of the library needs.

This module imports only :mod:`actionpp.data.core`: the configuration can consult it without
importing the readers, torch or the configuration itself.

Taught in notebooks/00_data_tour.ipynb.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from actionpp.data.core import DataError, Volume

if TYPE_CHECKING:  # pragma: no cover - typing only (torch is not imported with the configuration)
    import torch

__all__ = [
    "DatasetReader",
    "SliceReader",
    "DataSettings",
    "TrainTensors",
    "TrainVolumes",
    "TrainSet",
    "LabelledError",
    "PhantomSpec",
    "DatasetSpec",
    "register_dataset",
    "unregister_dataset",
    "dataset_spec",
    "dataset_specs",
    "dataset_names",
    "spec_of_folder",
]

Evaluation = Literal["slice-wise", "sliding-window"]


# --------------------------------------------------------------------------------------
# what a spec's functions speak: readers, settings, training sets
# --------------------------------------------------------------------------------------


class DatasetReader(Protocol):
    """One dataset folder (or pack) opened: its split lists and its volumes.

    ``kind`` is the spec's name; ``volumes(split)`` the names ``<split>.list`` holds, in order;
    ``available(split)`` those whose file is present; ``read_volume(name)`` one 3D case
    (2D datasets: the stacked slices ``(S, H, W)``, scored slice-wise).
    """

    kind: str
    num_classes: int

    def has_split(self, split: str) -> bool: ...

    def volumes(self, split: str) -> list[str]: ...

    def available(self, split: str) -> list[str]: ...

    def read_volume(self, name: str) -> Volume: ...


class SliceReader(DatasetReader, Protocol):
    """A reader of a dataset trained on 2D slices (``DatasetSpec.training == "slices"``)."""

    @property
    def train_slices(self) -> list[str]: ...

    def read_slice(self, name: str) -> tuple[np.ndarray, np.ndarray]: ...


class DataSettings(Protocol):
    """The ``data.*`` settings a spec reads (:class:`actionpp.config.DataConfig` is one)."""

    @property
    def dataset(self) -> str: ...

    @property
    def phantom_preset(self) -> str: ...

    @property
    def phantom_patients(self) -> int | None: ...

    @property
    def phantom_seed(self) -> int: ...

    @property
    def labelled(self) -> int | None: ...

    @property
    def size(self) -> int: ...


@dataclass
class TrainTensors:
    """2D training set.

    ``x_l (N,1,S,S) float32``, ``y_l (N,S,S) int64``, ``x_u (M,1,S,S) float32`` on one device;
    ``names_l`` / ``names_u`` are the slice names in the order of the training list.
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


TrainSet = TrainTensors | TrainVolumes
"""What a spec's training loader returns: stacked 2D slices or a list of 3D volumes."""


class LabelledError(DataError):
    """``data.labelled`` asks for more labelled images than the data hold (the message names the key and the
    list). The training data turn it into a :class:`~actionpp.config.ConfigError`: a setting to change."""


# --------------------------------------------------------------------------------------
# the spec
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhantomSpec:
    """The procedural phantom that imitates a dataset in its real layout (``data.root: phantom``).

    ``generate(out, *, preset, patients, seed, nifti) -> summary`` writes a new folder ``out``
    (it must write ``phantom.json`` with ``kind`` and ``version``, :func:`actionpp.data.phantom.write_info`);
    :func:`actionpp.data.phantom.ensure_phantom` caches its output under ``data/phantom/``.
    """

    generate: Callable[..., dict[str, Any]]
    default_patients: int = 20  # patients (cases) of the cached default phantom
    min_patients: int = 2  # one per split at least
    presets: tuple[str, ...] = ()  # class-share variants (``data.phantom_preset``); () = one appearance
    version: int = 1  # bump when the generator's output changes: cached phantoms are regenerated


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the library knows about one dataset (see the module docstring).

    Identity and protocol:

    - ``name``: the value of ``data.dataset`` and of a reader's ``kind``; ``title``: how prose names it;
    - ``class_names``: every class, background first (``num_classes`` is their count);
    - ``spatial_dims``: 2 (trained on slices, volumes stacked ``(S, H, W)``) or 3;
    - ``arch``: the ``model.arch`` that trains on it; ``evaluation``: ``slice-wise`` (each slice resized to
      ``data.size``) or ``sliding-window`` (``data.crop`` windows);
    - ``layout``: the folder layout and the protocol's source (``SSL4MIS``, ``UA-MT``).

    Folders: ``detect(folder)`` says whether a folder holds this layout (``signature`` says what it looks for,
    in words); ``open(folder)`` is its reader; ``splits`` the split lists it may hold, ``required_splits``
    those it must; ``partial_copies``: a copy may hold only some of the listed volumes (the rest are skipped,
    not errors).

    Training: ``training`` is ``slices`` (the reader's ``train_slices``, a :class:`SliceReader`) or ``volumes``
    (the ``train`` split); ``split_labelled(reader, labelled)`` the labelled / unlabelled names (the
    literature's rule: the first ``labelled`` units of the list), raising :class:`LabelledError`;
    ``labelled_unit`` what ``data.labelled`` counts (``patients``, ``cases``), ``units(names)`` how many of
    them ``names`` cover, ``standard_labelled`` the settings the literature reports (``data check``'s summary);
    ``load_training(root, labelled, size, device)`` the training set on the device (2D: slices resized to
    ``size``; 3D: ``size`` unused).

    Reports: ``describe(reader, settings) -> (split, labelled images, labelled in words)``, the words of
    ``metrics.json``'s protocol. ``phantom``: :class:`PhantomSpec`.
    """

    name: str
    title: str
    class_names: tuple[str, ...]
    spatial_dims: Literal[2, 3]
    arch: str
    evaluation: Evaluation
    layout: str
    signature: str
    detect: Callable[[Path], bool]
    open: Callable[[Path], DatasetReader]
    splits: tuple[str, ...]
    required_splits: tuple[str, ...]
    training: Literal["slices", "volumes"]
    labelled_unit: str
    standard_labelled: tuple[int, ...]
    split_labelled: Callable[[DatasetReader, int | None], tuple[list[str], list[str]]]
    units: Callable[[Sequence[str]], int]
    load_training: Callable[[str | Path, int | None, int, torch.device | str], TrainSet]
    describe: Callable[[DatasetReader, DataSettings], tuple[str, int, str]]
    phantom: PhantomSpec
    partial_copies: bool = False

    def __post_init__(self) -> None:
        if len(self.class_names) < 2:
            raise ValueError(f"dataset {self.name!r}: class_names must hold the background and at least one class")
        if not set(self.required_splits) <= set(self.splits):
            raise ValueError(f"dataset {self.name!r}: required_splits {self.required_splits} must be among splits "
                             f"{self.splits}")
        if self.training == "volumes" and "train" not in self.splits:
            raise ValueError(f"dataset {self.name!r}: a dataset trained on volumes reads them from a 'train' split")

    @property
    def num_classes(self) -> int:
        """Classes, background included."""
        return len(self.class_names)

    @property
    def foreground(self) -> dict[int, str]:
        """Index -> name of every class but the background (``{1: "RV", 2: "Myo", 3: "LV"}``)."""
        return {i: n for i, n in enumerate(self.class_names) if i}

    @property
    def article_title(self) -> str:
        """``an ACDC``, ``an LA``, ``a Digits``: the title with its article, as letters are spoken."""
        return f"{'an' if self.title[:1].upper() in 'AEFHILMNORSX' else 'a'} {self.title}"


# --------------------------------------------------------------------------------------
# the registry
# --------------------------------------------------------------------------------------

_REGISTRY: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec, *, replace: bool = False) -> DatasetSpec:
    """Add ``spec`` to the datasets the library knows (``data.dataset: <spec.name>``); returns it.

    A second spec of the same name is refused (``ValueError``) unless ``replace``.
    """
    if spec.name in _REGISTRY and not replace and _REGISTRY[spec.name] is not spec:
        raise ValueError(f"dataset {spec.name!r} is registered already (pass replace=True to replace it)")
    _REGISTRY[spec.name] = spec
    return spec


def unregister_dataset(name: str) -> None:
    """Remove a registered dataset (tests that register one of their own)."""
    _REGISTRY.pop(name, None)


def dataset_specs() -> list[DatasetSpec]:
    """Every registered spec, built-ins first."""
    return list(_REGISTRY.values())


def dataset_names() -> list[str]:
    """Names of the registered datasets (the values ``data.dataset`` accepts)."""
    return list(_REGISTRY)


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of dataset ``name``; ``ValueError`` naming the known ones when there is none."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(_REGISTRY)}") from None


def spec_of_folder(folder: str | Path) -> DatasetSpec | None:
    """The spec whose layout ``folder`` holds (the first that recognises it), or None."""
    p = Path(folder)
    return next((s for s in _REGISTRY.values() if s.detect(p)), None)
