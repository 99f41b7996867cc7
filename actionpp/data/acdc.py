"""ACDC in the SSL4MIS layout, and conversion of the raw ACDC NIfTI release into it.

Layout (``root``)::

    train_slices.list            one training slice per line: patientNNN_frameMM_slice_K
    train.list, val.list         frames (patientNNN_frameMM); test.list optional
    data/slices/<slice>.h5       image float32 (H, W) in [0, 1], label uint8 (H, W)
    data/<frame>.h5              image float32 (S, H, W), label uint8 (S, H, W)

Labels: 0 background, 1 RV, 2 Myo, 3 LV. Phantom volumes carry a ``spacing``
attribute (mm, order S, H, W); the real SSL4MIS files do not.

Taught in notebooks/00_data_tour.ipynb.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from actionpp.data.core import DataError, Volume, read_h5_pair, read_h5_volume, read_list

__all__ = [
    "NUM_CLASSES",
    "CLASS_NAMES",
    "ACDCDataset",
    "patient_of",
    "frame_of",
    "first_patients",
    "prepare_acdc",
    "to_unit_range",
]

NUM_CLASSES = 4
CLASS_NAMES = ("background", "RV", "Myo", "LV")
SPLITS = ("train", "val", "test")


def patient_of(name: str) -> str:
    """``patient012_frame01_slice_3`` or ``patient012_frame01`` -> ``patient012``."""
    return name.split("_", 1)[0]


def frame_of(slice_name: str) -> str:
    """``patient012_frame01_slice_3`` -> ``patient012_frame01``."""
    return slice_name.rsplit("_slice_", 1)[0]


def first_patients(names: list[str], n_patients: int | None) -> int:
    """Number of leading ``names`` that cover the first ``n_patients`` distinct patients.

    This is how SSL4MIS defines the labelled subset: the first 68 lines of the real
    ``train_slices.list`` are 3 patients and the first 136 are 7. ``None`` means all names.
    Raises ``ValueError`` if fewer than ``n_patients`` patients are present or ``n_patients < 0``.
    """
    if n_patients is None:
        return len(names)
    if n_patients < 0:
        raise ValueError(f"labelled patients must be >= 0, got {n_patients}")
    seen: list[str] = []
    for i, name in enumerate(names):
        p = patient_of(name)
        if p not in seen:
            if len(seen) == n_patients:
                return i
            seen.append(p)
    if len(seen) < n_patients:
        raise ValueError(f"asked for {n_patients} labelled patients but the list holds only {len(seen)}")
    return len(names)


class ACDCDataset:
    """Reader of one SSL4MIS-layout ACDC folder (real data or phantom).

    Lists are read lazily; ``read_slice`` / ``read_volume`` validate what they read and raise
    :class:`DataError` naming the file.
    """

    num_classes = NUM_CLASSES
    kind = "acdc"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: ACDC folder missing")
        self._lists: dict[str, list[str]] = {}

    def __repr__(self) -> str:
        return f"ACDCDataset({str(self.root)!r})"

    # lists ------------------------------------------------------------------
    def _list(self, name: str) -> list[str]:
        if name not in self._lists:
            self._lists[name] = read_list(self.root / name)
        return self._lists[name]

    @property
    def train_slices(self) -> list[str]:
        """Training slice names in file order (the order defines the labelled subset)."""
        return self._list("train_slices.list")

    def has_split(self, split: str) -> bool:
        return (self.root / f"{split}.list").is_file()

    def volumes(self, split: str) -> list[str]:
        """Frame names of ``split`` (``"train"``, ``"val"`` or ``"test"``) from ``<split>.list``."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return self._list(f"{split}.list")

    # files ------------------------------------------------------------------
    def slice_path(self, name: str) -> Path:
        return self.root / "data" / "slices" / f"{name}.h5"

    def volume_path(self, frame: str) -> Path:
        return self.root / "data" / f"{frame}.h5"

    def read_slice(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(image float32 (H, W), label uint8 (H, W))`` of one training slice."""
        image, label, _ = read_h5_pair(self.slice_path(name), NUM_CLASSES)
        if image.ndim != 2:
            raise DataError(f"{self.slice_path(name)}: expected a 2D slice, got shape {image.shape}")
        return image, label

    def read_volume(self, frame: str) -> Volume:
        """One frame as a :class:`Volume` with ``image`` ``(S, H, W)``."""
        return read_h5_volume(self.volume_path(frame), frame, NUM_CLASSES, "S, H, W")


# --------------------------------------------------------------------------------------
# raw ACDC (NIfTI) -> SSL4MIS layout
# --------------------------------------------------------------------------------------

_FRAME_RE = re.compile(r"^(patient\d{3})_frame(\d{2})\.nii(\.gz)?$")


def to_unit_range(volume: np.ndarray) -> np.ndarray:
    """Per-volume min-max scaling to [0, 1] exactly as SSL4MIS does it.

    The division happens in float64 and the result is cast to float32, so integer MR
    intensities become ``float32(k / n)`` with ``n = max - min``. A constant volume maps to 0.
    """
    v = np.asarray(volume, dtype=np.float64)
    lo, hi = v.min(), v.max()
    if hi == lo:
        return np.zeros(v.shape, dtype=np.float32)
    return ((v - lo) / (hi - lo)).astype(np.float32)


def _read_nifti(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """NIfTI -> ``(array (S, H, W), spacing (S, H, W) mm)``; nibabel's (X, Y, Z) is transposed."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
        zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    except Exception as exc:
        raise DataError(f"{path}: unreadable NIfTI file ({type(exc).__name__}: {exc})") from exc
    if data.ndim != 3:
        raise DataError(f"{path}: expected a 3D NIfTI volume, got shape {data.shape}")
    return np.ascontiguousarray(np.transpose(data, (2, 1, 0))), (zooms[2], zooms[1], zooms[0])


def _standard_split() -> dict[str, list[str]]:
    from actionpp.paths import splits_dir

    d = splits_dir()
    return {s: read_list(d / f"acdc_{s}_patients.txt") for s in SPLITS}


def prepare_acdc(raw: str | Path, out: str | Path, *, overwrite: bool = False) -> dict[str, Any]:
    """Convert the raw ACDC release (NIfTI) to the SSL4MIS layout under ``out``.

    ``raw`` holds ``patientNNN/patientNNN_frameMM.nii.gz`` with ``..._gt.nii.gz`` next to it
    (other files such as ``_4d`` and ``Info.cfg`` are ignored). Preprocessing as SSL4MIS:
    per-volume min-max to [0, 1] (float32), labels as uint8, no resampling. Every frame is
    written as ``data/<frame>.h5``; frames of training patients are also cut into
    ``data/slices/<frame>_slice_K.h5``.

    The split comes from ``raw/{train,val,test}.list`` when present (patients or frames;
    the phantom writes these), else from the committed standard split in ``data/splits``.
    ``train_slices.list`` follows ``data/splits/acdc_train_slices.list`` for the slices it names
    (so the real release reproduces the community list) and appends any other slice in
    patient/frame/slice order. Written atomically: into ``out.tmp-*`` and then renamed.

    Returns a summary dict (patients, frames, slices per split, seconds). Raises
    :class:`DataError` for missing ground truth, shape mismatches or an empty ``raw``.
    """
    import h5py

    t0 = time.perf_counter()
    raw, out = Path(raw), Path(out)
    if not raw.is_dir():
        raise DataError(f"{raw}: raw ACDC folder missing")
    frames: dict[str, list[Path]] = {}
    for pdir in sorted(p for p in raw.iterdir() if p.is_dir() and p.name.startswith("patient")):
        for f in sorted(pdir.iterdir()):
            m = _FRAME_RE.match(f.name)
            if m:
                frames.setdefault(m.group(1), []).append(f)
    if not frames:
        raise DataError(f"{raw}: no patientNNN/patientNNN_frameMM.nii.gz files found")
    if out.exists() and not overwrite:
        raise DataError(f"{out}: output folder exists (pass overwrite=True / --overwrite)")

    # split
    split_src = "data/splits (standard ACDC split)"
    if all((raw / f"{s}.list").is_file() for s in ("train", "val")):
        split = {s: sorted({patient_of(n) for n in read_list(raw / f"{s}.list", allow_empty=True)})
                 if (raw / f"{s}.list").is_file() else [] for s in SPLITS}
        split_src = f"{raw}/{{train,val,test}}.list"
    else:
        split = _standard_split()
    where = {p: s for s, ps in split.items() for p in ps}
    unknown = sorted(set(frames) - set(where))
    if unknown:
        raise DataError(f"{raw}: patients {unknown[:5]} are in no split ({split_src})")

    tmp = out.parent / f"{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "data" / "slices").mkdir(parents=True)
    lists: dict[str, list[str]] = {s: [] for s in SPLITS}
    slices: list[str] = []
    n_written = 0
    try:
        for patient in sorted(frames):
            for fpath in frames[patient]:
                frame = fpath.name.split(".nii")[0]
                gt = fpath.with_name(f"{frame}_gt" + fpath.name[len(frame):])
                if not gt.is_file():
                    raise DataError(f"{gt}: ground truth missing for {fpath}")
                img, spacing = _read_nifti(fpath)
                lab, _ = _read_nifti(gt)
                if img.shape != lab.shape:
                    raise DataError(f"{gt}: label shape {lab.shape} != image shape {img.shape} of {fpath}")
                lab_i = np.rint(lab).astype(np.int64) if not np.issubdtype(lab.dtype, np.integer) else lab
                if lab_i.min() < 0 or lab_i.max() >= NUM_CLASSES:
                    raise DataError(f"{gt}: label values outside 0..{NUM_CLASSES - 1}")
                image = to_unit_range(img)
                label = lab_i.astype(np.uint8)
                with h5py.File(tmp / "data" / f"{frame}.h5", "w") as h:
                    h.create_dataset("image", data=image, compression="gzip")
                    h.create_dataset("label", data=label, compression="gzip")
                n_written += 1
                s = where[patient]
                lists[s].append(frame)
                if s == "train":
                    for k in range(image.shape[0]):
                        name = f"{frame}_slice_{k}"
                        with h5py.File(tmp / "data" / "slices" / f"{name}.h5", "w") as h:
                            h.create_dataset("image", data=image[k], compression="gzip")
                            h.create_dataset("label", data=label[k], compression="gzip")
                        slices.append(name)
        order = _slice_order(raw)
        rank = {n: i for i, n in enumerate(order)}
        known = sorted((n for n in slices if n in rank), key=rank.__getitem__)
        rest = [n for n in slices if n not in rank]
        for s in SPLITS:
            (tmp / f"{s}.list").write_text("".join(f"{f}\n" for f in lists[s]))
        (tmp / "train_slices.list").write_text("".join(f"{n}\n" for n in known + rest))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {
        "raw": str(raw),
        "out": str(out),
        "split_from": split_src,
        "patients": {s: len({patient_of(f) for f in lists[s]}) for s in SPLITS},
        "frames": {s: len(lists[s]) for s in SPLITS},
        "train_slices": len(slices),
        "slices_in_standard_order": len(known),
        "volumes_written": n_written,
        "preprocessing": "per-volume min-max to [0, 1] in float64, stored float32; labels uint8; no resampling",
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _slice_order(raw: Path) -> list[str]:
    """Preferred train-slice order: ``raw/train_slices.list`` if present, else the committed one."""
    if (raw / "train_slices.list").is_file():
        return read_list(raw / "train_slices.list", allow_empty=True)
    from actionpp.paths import splits_dir

    p = splits_dir() / "acdc_train_slices.list"
    return read_list(p, allow_empty=True) if p.is_file() else []
