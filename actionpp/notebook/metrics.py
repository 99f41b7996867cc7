"""The metrics file every notebook's last cell writes (``<OUT_DIR>/metrics.json``), and reading it back.

Taught in notebooks/README.md (every notebook is run through this package).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from actionpp.atomic import atomic_write_text

__all__ = ["write_metrics", "read_metrics", "METRICS_FILE"]

METRICS_FILE = "metrics.json"
_NOTES_KEY = "_notes"




def _plain(value: Any, path: tuple[Any, ...], notes: list[dict[str, Any]]) -> Any:
    """Convert to JSON-ready Python; non-finite floats become None, recorded in ``notes``."""
    try:  # torch without importing it when unused
        import torch

        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            value = value.item() if value.dim() == 0 else value.tolist()
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    try:
        import numpy as np

        if isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, np.generic):
            value = value.item()
    except ImportError:  # pragma: no cover
        pass
    where = "/".join(map(str, path)) or "top level"
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        notes.append({"path": list(path), "value": "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")})
        return None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"metrics key {k!r} under {where} is not a string")
            if not path and k == _NOTES_KEY:
                raise ValueError(f"metrics key {_NOTES_KEY!r} is reserved")
            out[k] = _plain(v, path + (k,), notes)
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v, path + (i,), notes) for i, v in enumerate(value)]
    raise TypeError(f"metrics value at {where!r} has type {type(value).__name__}, which JSON cannot hold")


def write_metrics(out_dir: str | os.PathLike[str], metrics: Mapping[str, Any]) -> Path:
    """Write ``metrics`` to ``<out_dir>/metrics.json`` atomically (temp file + ``os.replace``).

    numpy / torch scalars and arrays become Python numbers and lists, paths strings,
    tuples lists. NaN and +-inf become ``null`` (strict JSON); the file then holds a
    top-level ``"_notes"`` entry listing each such value's key path and what it was
    (``{"path": ["a", "b", 0], "value": "nan"}``) so that :func:`read_metrics` restores
    them. Keys must be strings; ``"_notes"`` is reserved at the top level. ``out_dir`` is
    created if missing. Nothing is written when a value cannot be converted. Returns the
    file's path.
    """
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a mapping, got {type(metrics).__name__}")
    notes: list[dict[str, Any]] = []
    data = _plain(metrics, (), notes)
    if notes:
        data[_NOTES_KEY] = {"non_finite_written_as_null": notes}
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / METRICS_FILE
    atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")
    return path


def read_metrics(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``<out_dir>/metrics.json`` (or the file itself if given); NaN / inf restored."""
    path = Path(out_dir)
    if path.is_dir():
        path = path / METRICS_FILE
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    notes = data.pop(_NOTES_KEY, {}).get("non_finite_written_as_null", [])
    for note in notes:
        *parents, last = note["path"]
        node: Any = data
        for part in parents:
            node = node[part]
        node[last] = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}[note["value"]]
    return data
