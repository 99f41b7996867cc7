"""Opening a dataset folder: the ACDC (SSL4MIS) or LA (UA-MT) layout, detected from its files.

Taught in notebooks/00_data_tour.ipynb.
"""

from __future__ import annotations

from pathlib import Path

from actionpp.data.acdc import ACDCDataset
from actionpp.data.core import DataError
from actionpp.data.la import LA_FOLDER, LADataset

__all__ = ["open_folder"]


def open_folder(root: str | Path) -> ACDCDataset | LADataset:
    """An :class:`ACDCDataset` (``train_slices.list`` or ``data/slices/`` present) or a :class:`LADataset`.

    Raises :class:`DataError` naming the folder when it is missing or holds neither layout.
    """
    p = Path(root)
    if not p.is_dir():
        raise DataError(f"{p}: no such dataset folder or pack file")
    if (p / "train_slices.list").exists() or (p / "data" / "slices").is_dir():
        return ACDCDataset(p)
    if (p / LA_FOLDER).is_dir():
        return LADataset(p)
    raise DataError(
        f"{p}: not a dataset: expected train_slices.list (ACDC, SSL4MIS layout) or "
        f"'{LA_FOLDER}/' (LA, UA-MT layout)"
    )
