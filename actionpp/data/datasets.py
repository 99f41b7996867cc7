"""The built-in datasets as :class:`~actionpp.data.spec.DatasetSpec` s: ACDC (2D, SSL4MIS) and LA (3D, UA-MT).

Each spec gathers what used to be branches on the dataset's name across the library: the
classes, the architecture, the evaluation protocol, the reader, the labelled-subset rule,
the words of the report and the phantom. Both are registered when ``actionpp.data`` is
imported (its ``__init__``); a third dataset registers its own spec the same way
(:func:`actionpp.data.spec.register_dataset`, one line here for a built-in).

Taught in notebooks/00_data_tour.ipynb.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from actionpp.data import acdc, la
from actionpp.data.spec import (
    DatasetReader,
    DatasetSpec,
    DataSettings,
    LabelledError,
    PhantomSpec,
    SliceReader,
    TrainSet,
    register_dataset,
)

if TYPE_CHECKING:  # pragma: no cover - typing only (torch is imported when the training set is loaded)
    import torch

__all__ = ["ACDC", "LA"]


# --------------------------------------------------------------------------------------
# ACDC: 2D slices, labelled subset = the first slices covering N patients (SSL4MIS)
# --------------------------------------------------------------------------------------


def _acdc_detect(folder: Path) -> bool:
    return (folder / "train_slices.list").exists() or (folder / "data" / "slices").is_dir()


def _acdc_split(reader: DatasetReader, labelled: int | None) -> tuple[list[str], list[str]]:
    names = list(cast(SliceReader, reader).train_slices)
    try:
        k = acdc.first_patients(names, labelled)
    except ValueError as exc:  # more labelled patients than the data hold: a setting to change
        raise LabelledError(f"data.labelled: {exc} ({_where(reader)}/train_slices.list)") from None
    return names[:k], names[k:]


def _acdc_units(names: Sequence[str]) -> int:
    return len({acdc.patient_of(n) for n in names})


def _acdc_training(root: str | Path, labelled: int | None, size: int, device: torch.device | str) -> TrainSet:
    from actionpp.data.tensors import load_slice_training

    return load_slice_training(root, labelled, size, device, dataset="acdc")


def _acdc_describe(reader: DatasetReader, settings: DataSettings) -> tuple[str, int, str]:
    slices = list(cast(SliceReader, reader).train_slices)
    n_labelled = acdc.first_patients(slices, settings.labelled)
    test = len(reader.volumes("test")) if reader.has_split("test") else 0
    split = (f"train {_acdc_units(slices)} patients ({len(slices)} slices), val {len(reader.volumes('val'))} volumes, "
             f"test {test} volumes")
    return split, n_labelled, f"{n_labelled} slices ({settings.labelled} patients)"


def _acdc_phantom(out: Path, **kwargs: Any) -> dict[str, Any]:
    from actionpp.data.phantom import generate_acdc_phantom

    return generate_acdc_phantom(out, **kwargs)


ACDC = register_dataset(DatasetSpec(
    name="acdc",
    title="ACDC",
    class_names=acdc.CLASS_NAMES,
    spatial_dims=2,
    arch="unet2d",
    evaluation="slice-wise",
    layout="SSL4MIS",
    signature="train_slices.list (ACDC, SSL4MIS layout)",
    detect=_acdc_detect,
    open=acdc.ACDCDataset,
    splits=("train", "val", "test"),
    required_splits=("train", "val"),
    training="slices",
    labelled_unit="patients",
    standard_labelled=(3, 7),
    split_labelled=_acdc_split,
    units=_acdc_units,
    load_training=_acdc_training,
    describe=_acdc_describe,
    phantom=PhantomSpec(_acdc_phantom, default_patients=20, min_patients=3, presets=("acdc", "longtail"), version=2),
))


# --------------------------------------------------------------------------------------
# LA: 3D volumes, labelled subset = the first N ids of train.list (UA-MT)
# --------------------------------------------------------------------------------------


def _la_detect(folder: Path) -> bool:
    return (folder / la.LA_FOLDER).is_dir()


def _la_split(reader: DatasetReader, labelled: int | None) -> tuple[list[str], list[str]]:
    ids = list(reader.volumes("train"))
    n = len(ids) if labelled is None else labelled  # None = all labelled
    if not 0 <= n <= len(ids):
        raise LabelledError(f"data.labelled: labelled must be in 0..{len(ids)} (the cases of "
                            f"{_where(reader)}/train.list), got {labelled}")
    present = set(reader.available("train"))
    absent = [c for c in ids[:n] if c not in present]
    if absent:
        from actionpp.data.core import DataError

        raise DataError(f"{_where(reader)}: labelled LA case(s) {absent} listed in train.list but absent")
    return ids[:n], [c for c in ids[n:] if c in present]


def _la_training(root: str | Path, labelled: int | None, size: int, device: torch.device | str) -> TrainSet:
    from actionpp.data.tensors import load_volume_training

    return load_volume_training(root, labelled, size, device, dataset="la")


def _la_describe(reader: DatasetReader, settings: DataSettings) -> tuple[str, int, str]:
    train = reader.volumes("train")
    n_labelled = len(train) if settings.labelled is None else min(settings.labelled, len(train))
    return f"train {len(train)} scans, test {len(reader.volumes('test'))} scans", n_labelled, f"{n_labelled} scans"


def _la_phantom(out: Path, *, preset: str = "", **kwargs: Any) -> dict[str, Any]:
    from actionpp.data.phantom import generate_la_phantom

    return generate_la_phantom(out, **kwargs)  # one appearance: no preset


LA = register_dataset(DatasetSpec(
    name="la",
    title="LA",
    class_names=la.CLASS_NAMES,
    spatial_dims=3,
    arch="vnet3d",
    evaluation="sliding-window",
    layout="UA-MT",
    signature=f"'{la.LA_FOLDER}/' (LA, UA-MT layout)",
    detect=_la_detect,
    open=la.LADataset,
    splits=("train", "test"),
    required_splits=("train", "test"),
    training="volumes",
    labelled_unit="cases",
    standard_labelled=(4, 8),
    split_labelled=_la_split,
    units=len,
    load_training=_la_training,
    describe=_la_describe,
    phantom=PhantomSpec(_la_phantom, default_patients=20, min_patients=2, version=2),
    partial_copies=True,
))


def _where(reader: DatasetReader) -> str:
    """The folder or pack a reader reads (for messages)."""
    return str(getattr(reader, "root", None) or getattr(reader, "path", ""))
