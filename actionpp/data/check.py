"""Validate a dataset (a registered layout: ACDC SSL4MIS, LA UA-MT, ...; or a pack) and summarise it.

:func:`check_dataset` reads every listed file once and collects every problem; if any,
it raises one :class:`DataError` whose message lists them, each starting with the file
(a single problem is the one line that names its file).
Problems: missing or unreadable file, missing key, image/label shape mismatch, label values
outside the classes, NaN / infinite intensities, empty or missing list, a list entry that
points outside the dataset folder (``../..`` or an absolute path; named with its line number).

:func:`verify_manifest` checks a ``SHA256SUMS`` file (the format ``sha256sum`` writes).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np

from actionpp.data.core import DataError
from actionpp.data.roots import open_dataset
from actionpp.data.spec import SliceReader, dataset_spec

__all__ = ["check_dataset", "verify_manifest", "write_manifest"]

T = TypeVar("T")


class _Stats:
    """Running shape / dtype / range / class-count summary of one group of arrays."""

    def __init__(self, num_classes: int) -> None:
        self.count = 0
        self.shapes: list[tuple[int, ...]] = []
        self.dtypes: set[str] = set()
        self.lo, self.hi = np.inf, -np.inf
        self.classes = np.zeros(num_classes, dtype=np.int64)

    def add(self, image: np.ndarray, label: np.ndarray, dtype: str) -> None:
        self.count += 1
        self.shapes.append(tuple(int(s) for s in image.shape))
        self.dtypes.add(dtype)
        self.lo, self.hi = min(self.lo, float(image.min())), max(self.hi, float(image.max()))
        self.classes += np.bincount(label.ravel(), minlength=len(self.classes))[: len(self.classes)]

    def summary(self) -> dict[str, Any]:
        if not self.count:
            return {"count": 0}
        shp = np.array(self.shapes)
        tot = max(int(self.classes.sum()), 1)
        return {
            "count": self.count,
            "shape_min": shp.min(0).tolist(),
            "shape_max": shp.max(0).tolist(),
            "image_dtype": sorted(self.dtypes),
            "value_range": [round(self.lo, 6), round(self.hi, 6)],
            "class_share": [round(float(c) / tot, 5) for c in self.classes],
        }


def check_dataset(root: str | Path, *, partial: bool = False) -> dict[str, Any]:
    """Validate ``root`` (dataset folder or pack) and return a JSON-able summary.

    What is checked is the dataset's spec: its split lists (the required ones must exist), its training
    slices (a 2D dataset) and the labelled subsets of its standard settings. ``partial=True`` tolerates
    listed volume files that are absent (the shared real LA subset holds 5 of 100 ids) and reports them
    under ``missing``; training slices must always exist.
    Raises :class:`DataError` listing every problem found (each line names its file).
    """
    t0 = time.perf_counter()
    root = Path(root)
    ds = open_dataset(root)
    spec = dataset_spec(ds.kind)
    errors: list[str] = []
    missing: list[str] = []
    out: dict[str, Any] = {"root": str(root), "kind": ds.kind, "num_classes": ds.num_classes,
                           "layout": "pack" if root.is_file() else spec.layout}

    def read(fn: Callable[..., T], *args: Any) -> T | None:
        try:
            return fn(*args)
        except DataError as exc:
            errors.append(str(exc))
            return None

    def where(name: str) -> str:
        """How a missing volume is named: its file in a folder, its name in a pack."""
        path = getattr(ds, "volume_path", None)
        return str(path(name)) if path is not None and not root.is_file() else name

    lists: dict[str, int] = {}
    if spec.training == "slices":
        sr = cast(SliceReader, ds)
        names = read(lambda: sr.train_slices)
        st = _Stats(ds.num_classes)
        if names is not None:
            lists["train_slices"] = len(names)
            seen = set()
            for name in names:
                if name in seen:
                    errors.append(f"{root}/train_slices.list: duplicate name {name}")
                seen.add(name)
                pair = read(sr.read_slice, name)
                if pair is not None:
                    st.add(pair[0], pair[1], str(pair[0].dtype))
            units = spec.units(names)
            out[f"train_{spec.labelled_unit}"] = units
            out["labelled"] = {}
            for k in spec.standard_labelled:
                if units >= k:
                    m = len(spec.split_labelled(sr, k)[0])
                    out["labelled"][f"{k}_{spec.labelled_unit}"] = {"labelled_slices": m,
                                                                     "unlabelled_slices": len(names) - m}
        out["train_slices"] = st.summary()
    volumes: dict[str, Any] = {}
    for split in spec.splits:
        if not ds.has_split(split):
            if split in spec.required_splits:
                errors.append(f"{root}/{split}.list: list file missing")
            continue
        frames = read(ds.volumes, split)
        if frames is None:
            continue
        lists[split] = len(frames)
        if spec.training == "slices" and split == "train":
            continue  # the training frames are read as slices
        absent = set(frames) - set(ds.available(split)) if partial else set()
        st = _Stats(ds.num_classes)
        for name in frames:
            if name in absent:
                missing.append(where(name))
                continue
            v = read(ds.read_volume, name)
            if v is not None:
                st.add(v.image, v.label, str(v.image.dtype))
        volumes[split] = st.summary()
    out["lists"] = lists
    out["volumes"] = volumes
    if spec.training == "volumes" and "train" in lists:
        out["labelled"] = {f"{k}_{spec.labelled_unit}": {"labelled": k, "unlabelled": max(lists["train"] - k, 0)}
                           for k in spec.standard_labelled}
    if missing:
        out["missing"] = {"count": len(missing), "first": missing[:3]}
    out["seconds"] = round(time.perf_counter() - t0, 2)
    if errors:
        hint = ""
        if not partial and any(e.endswith(": file missing") for e in errors):
            hint = "(a partial copy of the data? check it with partial=True / --partial)"
        if len(errors) == 1:  # one problem: one line, naming its file
            raise DataError(errors[0] + (f" {hint}" if hint else ""))
        more = f"\n... and {len(errors) - 20} more" if len(errors) > 20 else ""
        more += f"\n{hint}" if hint else ""
        raise DataError(f"{len(errors)} problem(s) in {root}:\n" + "\n".join(errors[:20]) + more)
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_manifest(manifest: str | Path) -> int:
    """Verify every ``<sha256>  <relative path>`` line of a SHA256SUMS file (paths relative to its folder).

    Returns the number of files verified. Raises :class:`DataError` naming each missing or
    mismatching file, and for a malformed or empty manifest.
    """
    manifest = Path(manifest)
    if not manifest.is_file():
        raise DataError(f"{manifest}: checksum manifest missing")
    base = manifest.parent
    bad: list[str] = []
    n = 0
    for i, line in enumerate(manifest.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(None, 1)
        if len(parts) != 2 or len(parts[0]) != 64:
            raise DataError(f"{manifest}:{i}: malformed line {line[:60]!r}")
        digest, rel = parts[0].lower(), parts[1].lstrip("*")
        path = base / rel
        if not path.is_file():
            bad.append(f"{path}: listed in {manifest.name} but missing")
        elif _sha256(path) != digest:
            bad.append(f"{path}: SHA-256 does not match {manifest.name}")
        n += 1
    if n == 0:
        raise DataError(f"{manifest}: empty checksum manifest")
    if bad:
        raise DataError(f"{len(bad)} checksum problem(s):\n" + "\n".join(bad[:20]))
    return n


def write_manifest(root: str | Path, name: str = "SHA256SUMS") -> Path:
    """Write ``root/SHA256SUMS`` over every file below ``root`` (``sha256sum -c`` compatible)."""
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != name)
    lines = [f"{_sha256(p)}  ./{p.relative_to(root).as_posix()}" for p in files]
    out = root / name
    out.write_text("\n".join(lines) + "\n")
    return out
