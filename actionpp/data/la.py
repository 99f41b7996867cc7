"""Left atrium (2018 Atrial Segmentation Challenge) in the UA-MT layout.

Layout (``root``)::

    train.list, test.list                        one id per line (real split: 80 / 20)
    2018LA_Seg_Training Set/<id>/mri_norm2.h5    image float32 (X, Y, Z) z-scored, label uint8 {0, 1}

The labelled subsets of the 5 % / 10 % settings are the first 4 / 8 ids of ``train.list``.
A folder may hold only some of the listed ids (the shared real subset holds 5 of 100):
:meth:`LADataset.available` says which.

Taught in notebooks/00_data_tour.ipynb.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np

from actionpp.data.core import DataError, Volume, read_h5_volume, read_list

__all__ = ["LA_FOLDER", "NUM_CLASSES", "CLASS_NAMES", "LADataset", "read_nifti_pair"]

LA_FOLDER = "2018LA_Seg_Training Set"
CLASS_NAMES = ("background", "LA")
NUM_CLASSES = len(CLASS_NAMES)
SPLITS = ("train", "test")


class LADataset:
    """Reader of one UA-MT-layout LA folder (real data or phantom)."""

    num_classes = NUM_CLASSES
    kind = "la"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not (self.root / LA_FOLDER).is_dir():
            raise DataError(f"{self.root}: LA folder missing '{LA_FOLDER}/'")
        self._lists: dict[str, list[str]] = {}

    def __repr__(self) -> str:
        return f"LADataset({str(self.root)!r})"

    def has_split(self, split: str) -> bool:
        return (self.root / f"{split}.list").is_file()

    def volumes(self, split: str) -> list[str]:
        """Ids of ``split`` (``"train"`` or ``"test"``) in list order."""
        if split not in SPLITS:
            raise ValueError(f"LA split must be one of {SPLITS}, got {split!r}")
        if split not in self._lists:
            self._lists[split] = read_list(self.root / f"{split}.list", root=self.root, entry_path=self.path)
        return self._lists[split]

    def path(self, case: str) -> Path:
        return self.root / LA_FOLDER / case / "mri_norm2.h5"

    volume_path = path  # the name ACDCDataset gives it (data.check names a missing file by it)

    def available(self, split: str) -> list[str]:
        """Ids of ``split`` whose file exists, in list order."""
        return [c for c in self.volumes(split) if self.path(c).is_file()]

    def read_volume(self, case: str) -> Volume:
        """One case as a :class:`Volume` with ``image`` ``(X, Y, Z)`` float32 and ``label`` uint8."""
        return read_h5_volume(self.path(case), case, NUM_CLASSES, "X, Y, Z")


def read_nifti_pair(image_path: str | Path, label_path: str | Path, name: str | None = None) -> Volume:
    """An (image, label) NIfTI pair as a :class:`Volume` in nibabel's (X, Y, Z) order with the header spacing.

    The LA phantom writes ``nifti/<id>_image.nii.gz`` / ``<id>_label.nii.gz``; the arrays equal the
    UA-MT ``mri_norm2.h5`` ones. Raises :class:`DataError` naming the file on any problem.
    """
    import nibabel as nib

    from actionpp.data.core import validate_pair

    arrays = []
    spacing: tuple[float, ...] = ()
    for p in (Path(image_path), Path(label_path)):
        if not p.is_file():
            raise DataError(f"{p}: file missing")
        try:
            img = cast("nib.spatialimages.SpatialImage", nib.load(str(p)))  # NIfTI: a spatial image
            arrays.append(np.asanyarray(img.dataobj))
            spacing = tuple(float(z) for z in img.header.get_zooms()[:3])
        except Exception as exc:
            raise DataError(f"{p}: unreadable NIfTI file ({type(exc).__name__}: {exc})") from exc
    image, label = arrays
    if np.issubdtype(label.dtype, np.floating):
        label = np.rint(label).astype(np.int64)
    validate_pair(image, label, NUM_CLASSES, str(label_path))
    return Volume(
        name or Path(image_path).name.split("_image")[0], image.astype(np.float32), label.astype(np.uint8), spacing
    )
