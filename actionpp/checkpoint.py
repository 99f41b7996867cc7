"""Atomic, exactly-resumable checkpoints that load with ``torch.load(weights_only=True)``.

A checkpoint is a plain dict of tensors, primitives, lists and dicts (nothing
pickled as an object): model / optimiser state dicts, queues and memory banks,
the allocation state, every RNG state as a tensor, the iteration, and the run
configuration as a JSON string with its hash. Writing goes to a temporary file
in the same folder, is flushed to disk, then ``os.replace``-d over the target,
so a run killed at any moment leaves either the old or the new checkpoint, never
half of one.

Taught in notebooks/04_train.ipynb.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from actionpp.atomic import WriteError, atomic_path
from actionpp.config import Config, config_hash, diff_dicts

__all__ = [
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "check_compatible",
    "capture_rng",
    "restore_rng",
    "find_checkpoint",
    "checkpoint_choice",
    "tensors_to",
    "FORMAT_VERSION",
]

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A missing, unreadable or incompatible checkpoint; the message names the file."""


# --------------------------------------------------------------------------- write / read


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file in the same folder, fsync, ``os.replace``).

    ``state`` must hold only what ``torch.load(weights_only=True)`` accepts: tensors,
    numbers, strings, None, and lists / tuples / dicts of those.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            with open(tmp, "wb") as fh:
                torch.save(dict(state), fh)
        except (OSError, RuntimeError) as exc:  # torch reports a full disk as either
            if isinstance(exc, WriteError):
                raise
            reason = (exc.strerror if isinstance(exc, OSError) else None) or " ".join(str(exc).split())[:200]
            err = WriteError(f"checkpoint {path}: cannot be written ({reason}); the previous checkpoint, if any, "
                             "is kept")
            err.errno = getattr(exc, "errno", None)
            raise err from exc
    return path


def _unreadable_reason(exc: BaseException) -> str:
    """One line saying why ``torch.load(weights_only=True)`` failed, without torch's advice to load unsafely."""
    import re

    text = str(exc)
    m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if m:
        return (f"it holds a pickled Python object ({m.group(1)}) that a safe (tensors-only) load refuses; "
                "actionpp checkpoints hold only tensors and plain values")
    if isinstance(exc, EOFError):
        detail = "the file ends early (truncated?)"
    else:
        m = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\s*\n|$)", text, re.S)
        detail = m.group(1) if m else ("" if "weights_only" in text.lower() else text)
        detail = " ".join(detail.split())
        if "weights_only" in detail.lower():  # never pass on the hint to turn the safe load off
            detail = ""
        if len(detail) > 200:
            detail = detail[:200] + "..."
        detail = type(exc).__name__ + (f": {detail}" if detail else "")
    return f"not a PyTorch checkpoint, or the file is corrupt ({detail})"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: no code runs).

    Raises :class:`CheckpointError` naming the file: missing, empty (0 bytes), not a checkpoint or
    corrupt, holding pickled objects, not an actionpp checkpoint, or of another format version.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} cannot be read: the file is empty (0 bytes)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling problem is a bad file
        raise CheckpointError(f"checkpoint {path} cannot be read: {_unreadable_reason(exc)}") from exc
    if not isinstance(state, dict) or "config" not in state or "iteration" not in state:
        raise CheckpointError(f"checkpoint {path} is not an actionpp checkpoint (no 'config' / 'iteration')")
    if state.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format {state.get('format')!r}; this version reads {FORMAT_VERSION}"
        )
    return state


def check_compatible(state: Mapping[str, Any], cfg: Config, path: str | Path) -> None:
    """Refuse a checkpoint written under another configuration.

    Raises :class:`CheckpointError` naming the checkpoint, both config hashes and the differing keys.
    """
    stored_hash = state.get("config_hash")
    current = config_hash(cfg)
    if stored_hash == current:
        return
    try:
        stored = json.loads(state["config"])
    except (TypeError, ValueError):
        stored = {}
    diffs = diff_dicts(stored, cfg.to_dict())
    listing = "; ".join(diffs[:12]) + (f"; ... ({len(diffs) - 12} more)" if len(diffs) > 12 else "")
    # keys added after the checkpoint was written: its run had their old behaviour, which an override restores
    from actionpp.config import HASH_OMITTED_WHEN

    older = [f"--set {key}={json.dumps(legacy) if not isinstance(legacy, str) else legacy}"
             for key, legacy in HASH_OMITTED_WHEN.items()
             if key.split(".")[1] not in (stored.get(key.split(".")[0]) or {}) and
             getattr(getattr(cfg, key.split(".")[0]), key.split(".")[1]) != legacy]
    hint = (f" The checkpoint predates {len(older)} setting(s) whose default changed since: resume it with "
            f"{' '.join(older)}." if older and stored else "")
    raise CheckpointError(
        f"checkpoint {path} was written by config {stored_hash}, but this run's config is {current}: "
        f"differing keys (checkpoint != current): {listing or 'unknown'}.{hint} "
        "Use another run directory, or resume with the checkpoint's own config.yaml."
    )


# --------------------------------------------------------------------------- RNG states


def capture_rng(generators: Mapping[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Every RNG state as tensors / primitives: torch CPU, all CUDA devices, numpy, python, named generators."""
    py_version, py_state, py_gauss = random.getstate()
    np_state: tuple[Any, ...] = tuple(np.random.get_state())
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "cuda": [s for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
        "numpy": {
            "kind": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {
            "version": int(py_version),
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss": py_gauss,
        },
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }
    return out


def tensors_to(obj: Any, device: str | torch.device) -> Any:
    """``obj`` with every tensor inside (dicts, lists, tuples) moved to ``device``; other values as they are.

    RNG states must be CPU tensors when restored, but a checkpoint read with ``map_location="cuda"``
    holds CUDA copies of them.
    """
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, Mapping):
        return {k: tensors_to(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(tensors_to(v, device) for v in obj)
    return obj


def restore_rng(state: Mapping[str, Any], generators: Mapping[str, torch.Generator] | None = None) -> None:
    """Inverse of :func:`capture_rng`; CUDA states are restored only when the device count matches."""
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
    for name, g in (generators or {}).items():
        if name not in state["generators"]:
            raise CheckpointError(f"checkpoint has no state for generator {name!r} (has {sorted(state['generators'])})")
        g.set_state(state["generators"][name].cpu())


# --------------------------------------------------------------------------- finding a run's checkpoint


def find_checkpoint(run_dir_or_checkpoint: str | Path, which: str = "auto") -> Path:
    """The checkpoint file of a run directory (or the file itself): :func:`checkpoint_choice` without its note."""
    return checkpoint_choice(run_dir_or_checkpoint, which)[0]


def checkpoint_choice(run_dir_or_checkpoint: str | Path, which: str = "auto") -> tuple[Path, str | None]:
    """The checkpoint file of a run directory (or the file itself), and a note when it is not the one asked for.

    ``which``: ``"best"`` (``best.pt``), ``"last"``, or ``"auto"`` (the run's ``eval.select`` from its
    ``config.yaml``, ``last`` when there is none). A run that does not validate (``data.val_split: none``,
    LA) has no ``best.pt``: ``best`` then gives ``last.pt`` and says so in the note. A run that validates
    but holds no ``best.pt`` (unfinished, or the file was removed) is refused rather than silently scored
    at its last checkpoint. Raises :class:`CheckpointError` naming the folder when it holds no such
    checkpoint, ``ValueError`` for another ``which``.
    """
    p = Path(run_dir_or_checkpoint)
    if p.is_file():
        return p, None
    if which not in ("best", "last", "auto"):
        raise ValueError(f"which must be 'best', 'last' or 'auto', got {which!r}")
    if not p.is_dir():
        raise CheckpointError(f"{p} is neither a checkpoint file nor a run directory")
    stored = _stored_config(p / "config.yaml")
    if which == "auto":
        which = str((stored.get("eval") or {}).get("select", "last"))
    path = p / f"{which}.pt"
    note = None
    if which == "best" and not path.is_file() and (p / "last.pt").is_file():
        split = (stored.get("data") or {}).get("val_split", "val")
        if stored and split not in (None, "none"):
            raise CheckpointError(
                f"{p} holds no best.pt although the run validates on its {split} split (unfinished, or best.pt "
                "was removed?); score its last checkpoint with --which last"
            )
        path = p / "last.pt"
        note = f"{p} holds no best.pt (the run does not validate: data.val_split none); scored last.pt"
    if not path.is_file():
        raise CheckpointError(f"{p} holds no {which}.pt (is the run finished?)")
    return path, note


def _stored_config(path: Path) -> dict[str, Any]:
    """A run folder's ``config.yaml`` as a dict (``{}`` when absent); a damaged one names the file."""
    if not path.is_file():
        return {}
    import yaml

    from actionpp.runlog import RunFileError

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise RunFileError(f"{path}: the run's config cannot be read ({' '.join(str(exc).split())[:200]})") from None
    if raw is not None and not isinstance(raw, dict):
        raise RunFileError(f"{path}: the run's config is damaged: not a mapping")
    return raw or {}
