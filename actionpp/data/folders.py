"""Opening a dataset folder: the layout of a registered dataset (ACDC: SSL4MIS, LA: UA-MT, ...), detected from
its files by each :class:`~actionpp.data.spec.DatasetSpec`'s ``detect``.

Taught in notebooks/00_data_tour.ipynb.
"""

from __future__ import annotations

from pathlib import Path

from actionpp.data.core import DataError
from actionpp.data.spec import DatasetReader, dataset_specs, spec_of_folder

__all__ = ["open_folder"]


def open_folder(root: str | Path) -> DatasetReader:
    """The reader of the registered dataset whose layout ``root`` holds (ACDC: an :class:`ACDCDataset` when
    ``train_slices.list`` or ``data/slices/`` is present; LA: an :class:`LADataset`).

    Raises :class:`DataError` naming the folder when it is missing or holds no known layout.
    """
    p = Path(root)
    if not p.is_dir():
        raise DataError(f"{p}: no such dataset folder or pack file")
    spec = spec_of_folder(p)
    if spec is None:
        raise DataError(f"{p}: not a dataset: expected " + " or ".join(s.signature for s in dataset_specs()))
    return spec.open(p)
