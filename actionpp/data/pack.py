"""A lossless, compact, single-file cache of a dataset ("pack").

Why: training that keeps the whole data set on the device wants it in memory in
seconds, and copying data to a GPU machine is limited in size. The real ACDC
training set (1312 slices, gzip HDF5, 107 MB with the validation volumes) packs
into one file of about 50 MB.

Encoding (lossless, verified while writing):
- SSL4MIS intensities are ``float32(k / n)`` with integer ``k`` and one ``n`` per
  volume (per-volume min-max of integer MR values). Each slice / volume stores the
  uint16 codes ``k`` and its ``n``; decoding is ``(k / n in float64) -> float32``.
  The encoder checks that this reproduces every value bit-exactly and otherwise
  stores the raw float32 values (always so for z-scored LA volumes).
- Bytes are shuffled into planes (all low bytes, then all high bytes) and compressed
  with LZMA (preset 0) for the uint16 codes (about 3x smaller on real ACDC) or zlib for
  labels and raw float32 (noisy floats barely compress; zlib is ~10x faster than LZMA on them).
- ``n`` is recovered from the float32 values by rational approximation; float32 resolution
  makes that reliable up to ``n`` of a few thousand (real ACDC: 188..4031), beyond which the
  exactness check fails and the float32 fallback takes over: never lossy, only larger.

File format: ``b"ACTPACK1\n"``, an 8-byte little-endian header length, a JSON header
(format ``version`` 2, dataset kind, classes, lists, one entry per item with offsets,
``payload_sha256``, and last ``header_sha256``), then the payload. ``header_sha256`` is the
SHA-256 of the header re-encoded compactly (``json.dumps(..., separators=(",", ":"))``) without
that key, so every value of the header (``n``, shapes, offsets, lists, ``num_classes``) and,
through ``payload_sha256``, every payload byte is covered. :func:`load_pack` verifies both
before anything is decoded; version-1 packs (payload digest only) are refused with a request
to re-pack.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import math
import time
import zlib
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import numpy as np

from actionpp.atomic import OwnershipError, atomic_path, check_file
from actionpp.data.core import DataError, Volume, is_within
from actionpp.data.folders import open_folder
from actionpp.data.spec import SliceReader, dataset_spec

__all__ = ["MAGIC", "VERSION", "Pack", "pack_dataset", "load_pack", "read_header", "encode_unit", "decode_unit"]

MAGIC = b"ACTPACK1\n"
VERSION = 2  # 1: payload digest only; 2: header digest too
_MAX_CODE = 65535


# --------------------------------------------------------------------------------------
# codec
# --------------------------------------------------------------------------------------

def _exact(u: np.ndarray, n: int) -> bool:
    c = np.rint(u.astype(np.float64) * n)
    return bool(np.array_equal((c / n).astype(np.float32), u)) and c.min() >= 0 and c.max() <= _MAX_CODE


def find_denominator(x: np.ndarray, hint: int | None = None) -> int | None:
    """Smallest-found ``n`` (<= 65535) with ``x == float32(round(x * n) / n)`` bit-exactly, else ``None``.

    ``hint`` (the ``n`` of another slice of the same volume) is tried first. Candidates come from
    rational approximations of a spread of the distinct values, their least common multiple, and
    small multiples of it.
    """
    x = np.asarray(x)
    if x.dtype != np.float32 or x.size == 0 or not np.isfinite(x).all() or x.min() < 0:
        return None
    if hint is not None and _exact(x, hint):
        return hint
    u = np.unique(x)
    if u.size == 1 and u[0] == 0:
        return 1
    nz = u[u > 0]
    idx = np.unique(np.concatenate([np.linspace(0, nz.size - 1, min(16, nz.size)).astype(int),
                                    np.arange(min(4, nz.size)), nz.size - 1 - np.arange(min(4, nz.size))]))
    pick = nz[idx]
    tried: set[int] = set()
    for bound in (1024, 4096, 16384, _MAX_CODE):
        n = 1
        for v in pick:
            n = math.lcm(n, Fraction(float(v)).limit_denominator(bound).denominator)
            if n > _MAX_CODE:
                break
        if n > _MAX_CODE:
            continue
        for m in range(1, 17):
            cand = n * m
            if cand > _MAX_CODE:
                break
            if cand not in tried:
                tried.add(cand)
                if _exact(u, cand):
                    return cand
    return None


def _shuffle(a: np.ndarray) -> bytes:
    b = np.ascontiguousarray(a).view(np.uint8).reshape(-1, a.dtype.itemsize)
    return np.ascontiguousarray(b.T).tobytes()


def _unshuffle(buf: bytes, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    dtype = np.dtype(dtype)
    planes = np.frombuffer(buf, np.uint8).reshape(dtype.itemsize, -1)
    return np.ascontiguousarray(planes.T).view(dtype).reshape(shape)


def encode_unit(x: np.ndarray, hint: int | None = None) -> tuple[str, int, bytes]:
    """Encode a float32 array: ``("u16", n, LZMA codes)`` when exact, else ``("f32", 0, zlib float32)``."""
    n = find_denominator(x, hint)
    if n is not None:
        codes = np.rint(x.astype(np.float64) * n).astype(np.uint16)
        return "u16", n, lzma.compress(_shuffle(codes), preset=0)
    return "f32", 0, zlib.compress(_shuffle(np.asarray(x, dtype="<f4")), 6)


def decode_unit(enc: str, n: int, blob: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`encode_unit`."""
    if enc == "u16":
        codes = _unshuffle(lzma.decompress(blob), np.dtype("<u2"), shape)
        return (codes.astype(np.float64) / n).astype(np.float32)
    if enc == "f32":
        return _unshuffle(zlib.decompress(blob), np.dtype("<f4"), shape).astype(np.float32)
    raise DataError(f"unknown image encoding {enc!r}")


# --------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------

def _header_digest(header: dict[str, Any]) -> str:
    """SHA-256 of the header without its ``header_sha256`` key, compact JSON as written."""
    body = {k: v for k, v in header.items() if k != "header_sha256"}
    return hashlib.sha256(json.dumps(body, separators=(",", ":")).encode()).hexdigest()


def _is_pack(path: Path) -> bool:
    """Whether ``path`` starts with a pack's magic bytes (a file ``pack_dataset`` wrote, of any version)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def _check_output(root: Path, out: Path, overwrite: bool) -> None:
    """Refuse an ``out`` inside (or equal to) ``root``, a folder, a link, a file that is not a pack (the
    ownership rule of :mod:`actionpp.atomic`: only a file this command wrote is replaced), or an existing
    pack without ``overwrite``."""
    if is_within(out, root):
        raise DataError(f"{out}: refusing to write the pack inside the dataset {root}; choose a file outside it")
    if out.is_dir():
        raise DataError(f"{out}: is a folder, not a pack file")
    if not overwrite and out.is_file() and not out.is_symlink() and _is_pack(out):
        raise DataError(f"{out}: output file exists (pass --overwrite to replace it)")
    try:
        check_file(out, overwrite=overwrite, ours=_is_pack, what="a pack written by actionpp data pack")
    except OwnershipError as exc:
        raise DataError(str(exc)) from None


def pack_dataset(
    root: str | Path, out: str | Path, *, verify: bool = True, overwrite: bool = False,
    leave_out: Sequence[str] = (),
) -> dict[str, Any]:
    """Pack a dataset folder into one file ``out`` (written atomically).

    ACDC: every training slice of ``train_slices.list`` plus the volumes of ``val.list`` and
    (when present) ``test.list``. LA: every available volume of ``train.list`` and ``test.list``.
    With ``verify`` each encoded image is decoded again and compared bit-exactly.
    ``leave_out``: volume splits (``val``, ``test``; LA also ``train``) not packed, list and
    volumes: the pack then reads like a copy of the dataset without them (the GPU carry leaves
    out ACDC's test split to stay under its 64 MiB).

    ``out`` must not exist unless ``overwrite``, and is never inside ``root`` (not even with
    ``overwrite``: a pack must not replace a dataset file); ``overwrite`` replaces only a pack
    (a file starting with the pack magic), never another file or a link. Refusals raise
    :class:`DataError` before anything is read or written.

    Returns a summary: counts, encodings used, sizes, seconds.
    """
    t0 = time.perf_counter()
    out = Path(out)
    unknown = sorted(set(leave_out) - {"train", "val", "test"})
    if unknown:
        raise DataError(f"leave_out: unknown split(s) {', '.join(unknown)} (choose from train, val, test)")
    _check_output(Path(root), out, overwrite)
    if Path(root).is_file():
        raise DataError(f"{root}: already a pack (pack a dataset folder)")
    ds = open_folder(root)
    chunks: list[bytes] = []
    offset = 0
    items: list[dict[str, Any]] = []
    encs = {"u16": 0, "f32": 0}

    def add(blob: bytes) -> list[int]:
        nonlocal offset
        chunks.append(blob)
        offset += len(blob)
        return [offset - len(blob), len(blob)]

    def put(name: str, group: str, image: np.ndarray, label: np.ndarray, spacing: Any, hint: int | None) -> int:
        enc, n, blob = encode_unit(image, hint)
        if verify:
            back = decode_unit(enc, n, blob, image.shape)
            if not np.array_equal(back.view(np.uint32), np.ascontiguousarray(image, dtype=np.float32).view(np.uint32)):
                raise DataError(f"{name}: pack encoding is not bit-exact (internal error)")
        encs[enc] += 1
        items.append({
            "name": name, "group": group, "shape": list(image.shape), "enc": enc, "n": n,
            "img": add(blob), "lab": add(zlib.compress(np.ascontiguousarray(label, dtype=np.uint8).tobytes(), 6)),
            "spacing": list(spacing) if spacing is not None else None,
        })
        return n

    lists: dict[str, list[str]] = {}
    spec = dataset_spec(ds.kind)
    if spec.training == "slices":  # the training images are the slices; the train split's volumes are not packed
        sr = cast(SliceReader, ds)
        lists["train_slices"] = list(sr.train_slices)
        hints: dict[str, int] = {}
        for name in sr.train_slices:
            image, label = sr.read_slice(name)
            frame = name.rsplit("_slice_", 1)[0]  # ACDC: the slices of one frame share the codec's n
            n = put(name, "slice", image, label, None, hints.get(frame))
            if n:
                hints[frame] = n
        if "train" in leave_out:
            raise DataError(f"leave_out: {spec.title}'s train split is the training slices; it cannot be left out")
        for split in spec.splits:
            if ds.has_split(split) and split not in leave_out:
                lists[split] = list(ds.volumes(split))
        for split in (s for s in spec.splits if s != "train"):
            for frame in lists.get(split, []):
                v = ds.read_volume(frame)
                put(frame, "volume", v.image, v.label, v.spacing, hints.get(frame))
    else:
        for split in spec.splits:
            if ds.has_split(split) and split not in leave_out:
                lists[split] = list(ds.volumes(split))
                for case in ds.available(split):
                    v = ds.read_volume(case)
                    put(case, "volume", v.image, v.label, v.spacing, None)
    payload = b"".join(chunks)
    header: dict[str, Any] = {
        "format": "actionpp-pack", "version": VERSION, "kind": ds.kind, "num_classes": ds.num_classes,
        "source": str(Path(root).resolve()), "lists": lists, "items": items,
        "payload_bytes": len(payload), "payload_sha256": hashlib.sha256(payload).hexdigest(),
    }
    header["header_sha256"] = _header_digest(header)
    hbytes = json.dumps(header, separators=(",", ":")).encode()
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as f:
            f.write(MAGIC)
            f.write(len(hbytes).to_bytes(8, "little"))
            f.write(hbytes)
            f.write(payload)
    return {
        "out": str(out), "kind": ds.kind,
        "slices": sum(it["group"] == "slice" for it in items),
        "volumes": sum(it["group"] == "volume" for it in items),
        "encodings": encs, "bytes": out.stat().st_size,
        "megabytes": round(out.stat().st_size / 1e6, 2),
        "seconds": round(time.perf_counter() - t0, 2),
    }


# --------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------

class Pack:
    """A loaded pack; offers the dataset readers' interface.

    ACDC packs: ``train_slices``, ``read_slice(name)``, ``volumes(split)``, ``read_volume(frame)``.
    LA packs: ``volumes(split)``, ``available(split)``, ``read_volume(case)``.
    Items are decoded on first access and cached.
    """

    def __init__(self, path: Path, header: dict[str, Any], payload: bytes) -> None:
        self.path = path
        self.header = header
        self.kind: str = header["kind"]
        self.num_classes: int = int(header["num_classes"])
        self._payload = memoryview(payload)
        self._items = {(it["group"], it["name"]): it for it in header["items"]}
        self._cache: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}

    def __repr__(self) -> str:
        return f"Pack({str(self.path)!r}, kind={self.kind!r}, items={len(self._items)})"

    @property
    def train_slices(self) -> list[str]:
        if "train_slices" not in self.header["lists"]:
            raise DataError(f"{self.path}: pack holds no training slices")
        return list(self.header["lists"]["train_slices"])

    def has_split(self, split: str) -> bool:
        return split in self.header["lists"]

    def volumes(self, split: str) -> list[str]:
        if split not in self.header["lists"]:
            raise DataError(f"{self.path}: pack holds no '{split}' list (has {sorted(self.header['lists'])})")
        return list(self.header["lists"][split])

    def available(self, split: str) -> list[str]:
        return [c for c in self.volumes(split) if ("volume", c) in self._items]

    def _decode(self, group: str, name: str) -> tuple[np.ndarray, np.ndarray]:
        key = (group, name)
        if key not in self._cache:
            it = self._items.get(key)
            if it is None:
                raise DataError(f"{self.path}: no {group} named {name!r} in the pack")
            shape = tuple(it["shape"])
            o, ln = it["img"]
            image = decode_unit(it["enc"], it["n"], bytes(self._payload[o:o + ln]), shape)
            o, ln = it["lab"]
            label = np.frombuffer(zlib.decompress(self._payload[o:o + ln]), np.uint8).reshape(shape)
            self._cache[key] = (image, label)
        return self._cache[key]

    def read_slice(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(image float32 (H, W), label uint8 (H, W))``."""
        return self._decode("slice", name)

    def read_volume(self, name: str) -> Volume:
        image, label = self._decode("volume", name)
        sp = self._items[("volume", name)]["spacing"]
        return Volume(name, image, label, tuple(sp) if sp is not None else None)


def read_header(path: str | Path) -> tuple[dict[str, Any], int]:
    """The verified JSON header of a pack and the byte offset of its payload.

    Raises :class:`DataError` naming the file for a bad magic, a truncated or corrupt header,
    a header whose ``header_sha256`` does not match it, or a format version other than
    :data:`VERSION` (version 1: re-pack).
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(len(MAGIC))
            if magic != MAGIC:
                raise DataError(f"{path}: not an actionpp pack (bad magic {magic[:8]!r})")
            hlen = int.from_bytes(f.read(8), "little")
            hbytes = f.read(hlen)
    except OSError as exc:
        raise DataError(f"{path}: unreadable pack ({exc})") from exc
    if len(hbytes) != hlen:
        raise DataError(f"{path}: truncated pack header")
    try:
        header = json.loads(hbytes)
    except ValueError as exc:
        raise DataError(f"{path}: corrupt pack header ({exc})") from exc
    if not isinstance(header, dict):
        raise DataError(f"{path}: corrupt pack header (a JSON {type(header).__name__}, not an object)")
    stored = header.get("header_sha256")
    if stored is not None and stored != _header_digest(header):
        raise DataError(f"{path}: pack header SHA-256 does not match its contents (header damaged or edited); "
                        "re-pack the dataset")
    version = header.get("version")
    repack = f"(actionpp data pack ROOT {path} --overwrite)"
    if version == 1 and stored is None:
        raise DataError(f"{path}: pack format version 1 has no header checksum; re-pack the dataset with this "
                        f"version {repack}")
    if version != VERSION:
        raise DataError(
            f"{path}: pack format version {version!r} is not readable by this version (reads {VERSION}); "
            f"re-pack the dataset {repack}"
        )
    if stored is None:
        raise DataError(f"{path}: pack header has no header_sha256 (header damaged or edited); re-pack the dataset")
    return header, len(MAGIC) + 8 + hlen


def load_pack(path: str | Path) -> Pack:
    """Read a pack, verify its header SHA-256, payload size and payload SHA-256.

    Raises :class:`DataError` naming the file and the part that failed otherwise.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: pack file missing")
    header, start = read_header(path)
    with open(path, "rb") as f:
        f.seek(start)
        payload = f.read()
    if len(payload) != header.get("payload_bytes"):
        raise DataError(
            f"{path}: payload is {len(payload)} bytes, header says {header.get('payload_bytes')} (truncated?)"
        )
    digest = hashlib.sha256(payload).hexdigest()
    if digest != header.get("payload_sha256"):
        raise DataError(
            f"{path}: payload SHA-256 {digest[:12]}... does not match the header (file damaged or tampered)"
        )
    return Pack(path, header, payload)
