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

import json
import os
import re
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import numpy as np

from actionpp.atomic import utc_now
from actionpp.data.core import DataError, Volume, is_within, read_h5_pair, read_h5_volume, read_list

__all__ = [
    "NUM_CLASSES",
    "CLASS_NAMES",
    "PREPARE_MARKER",
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
PREPARE_MARKER = ".actionpp-prepare-acdc.json"  # written into every folder prepare_acdc writes


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
            to_path = self.slice_path if name == "train_slices.list" else self.volume_path
            self._lists[name] = read_list(self.root / name, root=self.root, entry_path=to_path)
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

    def available(self, split: str) -> list[str]:
        """Frames of ``split`` whose volume file exists, in list order."""
        return [f for f in self.volumes(split) if self.volume_path(f).is_file()]

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
    scaled: np.ndarray = ((v - lo) / (hi - lo)).astype(np.float32)
    return scaled


def _read_nifti(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """NIfTI -> ``(array (S, H, W), spacing (S, H, W) mm)``; nibabel's (X, Y, Z) is transposed."""
    import nibabel as nib

    try:
        img = cast("nib.spatialimages.SpatialImage", nib.load(str(path)))  # NIfTI: a spatial image
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
    patient/frame/slice order. Written atomically: into a temporary folder beside ``out``
    (``.<out>.tmp-*``) and then renamed; the folder carries a marker file, ``PREPARE_MARKER``
    (source path and time).

    ``out`` must lie outside ``raw``: the same folder, one inside it or one above it is refused
    (compared on the paths as written and resolved). An existing ``out`` is replaced only with
    ``overwrite`` and only if it carries the marker (a folder this function wrote); the old folder
    is moved aside, the new one renamed in, and only then the old one removed.

    Returns a summary dict (patients, frames, slices per split, seconds). Raises
    :class:`DataError` for missing ground truth, shape mismatches, an empty ``raw`` or a refused
    ``out``; then nothing on disk has changed.
    """
    import h5py

    t0 = time.perf_counter()
    raw, out = Path(raw), Path(out)
    if not raw.is_dir():
        raise DataError(f"{raw}: raw ACDC folder missing")
    _check_output(raw, out, overwrite)
    frames: dict[str, list[Path]] = {}
    for pdir in sorted(p for p in raw.iterdir() if p.is_dir() and p.name.startswith("patient")):
        for f in sorted(pdir.iterdir()):
            m = _FRAME_RE.match(f.name)
            if m:
                frames.setdefault(m.group(1), []).append(f)
    if not frames:
        raise DataError(f"{raw}: no patientNNN/patientNNN_frameMM.nii.gz files found")

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

    new_parent = next((a for a in reversed(out.parent.absolute().parents) if not a.exists()), None)
    if new_parent is None and not out.parent.exists():
        new_parent = out.parent.absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    lists: dict[str, list[str]] = {s: [] for s in SPLITS}
    slices: list[str] = []
    n_written = 0
    try:
        _umask_mode(tmp)
        (tmp / "data" / "slices").mkdir(parents=True)
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
        (tmp / PREPARE_MARKER).write_text(json.dumps({
            "written_by": "actionpp data prepare-acdc", "source": str(raw.resolve()),
            "time": utc_now(),
        }, indent=1) + "\n")
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if new_parent is not None:  # folders created for ``out`` only: remove them again if empty
            for d in [out.parent.absolute(), *out.parent.absolute().parents]:
                try:
                    d.rmdir()
                except OSError:
                    break
                if d == new_parent:
                    break
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


def _check_output(raw: Path, out: Path, overwrite: bool) -> None:
    """Refuse an ``out`` that overlaps ``raw``, is a link or a file, or is a folder prepare_acdc did not write."""
    for o, r in ((out, raw), (out.resolve(), raw.resolve())):
        if os.path.abspath(o) == os.path.abspath(r):
            rel = "is the raw folder"
        elif is_within(o, r, follow_links=False):
            rel = "is inside the raw folder"
        elif is_within(r, o, follow_links=False):
            rel = "contains the raw folder"
        else:
            continue
        raise DataError(f"{out}: output folder {rel} {raw}; choose an output folder outside it")
    if out.is_symlink():
        raise DataError(f"{out}: is a symbolic link; give a real folder (or a new name) as the output folder")
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is a file, not a folder; choose another output folder")
    if out.exists():
        if not overwrite:
            raise DataError(f"{out}: output folder exists (pass --overwrite to replace a folder written by "
                            f"prepare-acdc)")
        if not (out / PREPARE_MARKER).is_file():
            raise DataError(
                f"{out}: refusing to replace this folder: it was not written by prepare-acdc "
                f"(no {PREPARE_MARKER} marker in it); remove it yourself or choose another output folder"
            )


def _swap_in(tmp: Path, out: Path) -> None:
    """Rename the finished folder ``tmp`` to ``out``; an old ``out`` is moved aside first and removed last."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = out.parent / f".{out.name}.old-{secrets.token_hex(4)}"
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _umask_mode(folder: Path) -> None:
    """Give a ``mkdtemp`` folder (mode 0700) the permissions a plain ``mkdir`` would give."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(folder, 0o777 & ~mask)


def _slice_order(raw: Path) -> list[str]:
    """Preferred train-slice order: ``raw/train_slices.list`` if present, else the committed one."""
    if (raw / "train_slices.list").is_file():
        return read_list(raw / "train_slices.list", allow_empty=True)
    from actionpp.paths import splits_dir

    p = splits_dir() / "acdc_train_slices.list"
    return read_list(p, allow_empty=True) if p.is_file() else []
