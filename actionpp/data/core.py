"""Shared pieces of the data layer: the error class, :class:`Volume`, safe HDF5 and list reading.

Every reader funnels through :func:`read_h5_pair` and :func:`read_list`, so that a
missing, truncated or malformed file always surfaces as a :class:`DataError`
whose message starts with the offending path.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DataError", "Volume", "read_h5_pair", "read_h5_volume", "read_list", "validate_pair", "is_within",
]


class DataError(ValueError):
    """A data problem (missing / unreadable file, missing key, bad shape, bad values, empty list).

    The message always names the file and the problem, e.g.
    ``"/data/slices/p1_slice_3.h5: label values {7} outside the classes 0..3"``.
    """


@dataclass
class Volume:
    """One 3D case.

    Attributes:
        name: frame name (``patient012_frame01``) or LA id.
        image: float32, ACDC ``(S, H, W)`` (slices first, as SSL4MIS stores it) or LA ``(X, Y, Z)``.
        label: uint8, same shape as ``image``.
        spacing: voxel size in mm in the same axis order as the arrays, or ``None`` when the
            file does not record it (the real SSL4MIS / UA-MT files do not).
    """

    name: str
    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, ...] | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.image.shape)


def is_within(path: str | Path, folder: str | Path, *, follow_links: bool = True) -> bool:
    """Whether ``path`` is ``folder`` itself or lies below it.

    Compared on the absolute paths with ``..`` collapsed (links kept as written) and, with
    ``follow_links``, also on the fully resolved paths: true if either says so.
    """
    pairs = [(os.path.abspath(path), os.path.abspath(folder))]
    if follow_links:
        pairs.append((str(Path(path).resolve()), str(Path(folder).resolve())))
    return any(os.path.commonpath([p, f]) == f for p, f in pairs)


def read_list(path: Path, *, allow_empty: bool = False, root: str | Path | None = None,
              entry_path: Callable[[str], Path] | None = None) -> list[str]:
    """Non-empty stripped lines of a ``.list`` file; :class:`DataError` if missing or empty.

    With ``root``, every entry must name something inside that dataset folder: ``entry_path(name)``
    (default ``root / name``) is the file a reader would open for it, and an absolute entry or one
    whose path leaves ``root`` (``../../elsewhere``) raises :class:`DataError` naming the list file
    and the 1-based line number. The test is on the path as written (``..`` collapsed, links not
    followed), so a dataset whose ``data/`` is a link to other storage still reads. With ``root``
    also: an entry listed twice (it would be trained on or scored twice), one whose file is a folder,
    a loop of symbolic links or a name too long for the file system raise :class:`DataError` naming
    the list and the line (an absent file is left to the reader: ``--partial`` tolerates it).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: list file missing")
    try:
        lines = [ln.strip() for ln in path.read_text().splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: unreadable list file ({exc})") from exc
    names = [ln for ln in lines if ln]
    if not names and not allow_empty:
        raise DataError(f"{path}: list is empty")
    if root is not None:
        first: dict[str, int] = {}
        for lineno, name in enumerate(lines, 1):
            if not name:
                continue
            if name in first:
                raise DataError(f"{path}:{lineno}: entry {name!r} repeats line {first[name]} (each volume or slice "
                                "is listed once; a repeat would be counted twice)")
            first[name] = lineno
            target = entry_path(name) if entry_path is not None else Path(root) / name
            if os.path.isabs(name) or not is_within(target, root, follow_links=False):
                raise DataError(f"{path}:{lineno}: entry {name!r} points outside the dataset folder {root}")
            _check_entry_file(path, lineno, name, target)
    return names


def _check_entry_file(path: Path, lineno: int, name: str, target: Path) -> None:
    """The file a list entry names: absent is fine here; a folder, a link loop or an unusable name is not."""
    where = f"{path}:{lineno}: entry {name!r}"
    if any(len(part.encode()) > 255 for part in target.parts):
        raise DataError(f"{where}: the file name is too long for the file system ({target.name[:40]}...)")
    try:
        st = os.stat(target)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return
        reason = {errno.ELOOP: "a loop of symbolic links", errno.ENAMETOOLONG: "a path too long for the file system"}
        raise DataError(f"{where}: {target} cannot be opened ({reason.get(exc.errno or 0, exc.strerror or exc)})"
                        ) from None
    if stat.S_ISDIR(st.st_mode):
        raise DataError(f"{where}: {target} is a folder, not a file")


def validate_pair(image: np.ndarray, label: np.ndarray, num_classes: int, where: str) -> None:
    """Raise :class:`DataError` naming ``where`` unless image/label are a consistent pair.

    Checks: same shape, 2 or 3 dimensions, finite intensities, label values in ``0..num_classes-1``.
    """
    if image.shape != label.shape:
        raise DataError(f"{where}: image shape {tuple(image.shape)} != label shape {tuple(label.shape)}")
    if image.ndim not in (2, 3):
        raise DataError(f"{where}: expected a 2D or 3D image, got shape {tuple(image.shape)}")
    if image.size == 0:
        raise DataError(f"{where}: empty image of shape {tuple(image.shape)}")
    if not np.issubdtype(image.dtype, np.floating) and not np.issubdtype(image.dtype, np.integer):
        raise DataError(f"{where}: image dtype {image.dtype} is not numeric")
    if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        bad = int((~np.isfinite(image)).sum())
        raise DataError(f"{where}: {bad} NaN or infinite intensities")
    if not np.issubdtype(label.dtype, np.integer):
        raise DataError(f"{where}: label dtype {label.dtype} is not an integer type")
    lo, hi = int(label.min()), int(label.max())
    if lo < 0 or hi >= num_classes:
        vals = sorted(int(v) for v in np.unique(label) if v < 0 or v >= num_classes)
        raise DataError(f"{where}: label values {set(vals)} outside the classes 0..{num_classes - 1}")


def read_h5_pair(
    path: Path, num_classes: int, *, validate: bool = True
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read ``image`` (as float32) and ``label`` (as uint8) and the file attributes from one HDF5 file.

    Raises :class:`DataError` naming ``path`` for a missing or unreadable file, a missing key,
    and (with ``validate``) any problem :func:`validate_pair` detects.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file missing")
    try:
        with h5py.File(path, "r") as f:
            for key in ("image", "label"):
                if key not in f:
                    raise DataError(f"{path}: missing key '{key}' (has {sorted(f.keys())})")
            image = f["image"][()]
            label = f["label"][()]
            attrs = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in f.attrs.items()}
    except DataError:
        raise
    except Exception as exc:  # h5py raises OSError / KeyError / RuntimeError for damaged files
        raise DataError(f"{path}: unreadable HDF5 file ({type(exc).__name__}: {exc})") from exc
    if validate:
        validate_pair(image, label, num_classes, str(path))
    image = np.asarray(image, dtype=np.float32)
    if np.issubdtype(label.dtype, np.integer) and label.dtype != np.uint8 and label.size:
        label = label.astype(np.uint8)
    return image, label, attrs


def spacing_from_attrs(attrs: dict[str, Any]) -> tuple[float, ...] | None:
    """The ``spacing`` attribute as a float tuple, or ``None`` when absent."""
    sp = attrs.get("spacing")
    if sp is None:
        return None
    return tuple(float(s) for s in np.atleast_1d(sp))


def read_h5_volume(path: Path, name: str, num_classes: int, axes: str) -> Volume:
    """One 3D HDF5 image/label pair as a :class:`Volume` named ``name``, spacing from its attributes.

    ``axes`` only words the error (``"S, H, W"``, ``"X, Y, Z"``): a non-3D image raises
    :class:`DataError` naming ``path``.
    """
    image, label, attrs = read_h5_pair(path, num_classes)
    if image.ndim != 3:
        raise DataError(f"{path}: expected a 3D volume ({axes}), got shape {image.shape}")
    return Volume(name, image, label, spacing_from_attrs(attrs))
