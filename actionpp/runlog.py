"""Run-directory bookkeeping: JSONL log, optional TensorBoard, run.json, atomic JSON.

Named ``runlog`` (not ``logging``) so it never shadows the standard library.
Only rank 0 writes; other ranks get a logger whose methods do nothing.

Taught in notebooks/04_train.ipynb.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from actionpp.atomic import atomic_write_json

__all__ = ["RunLogger", "RunFileError", "write_json_atomic", "read_jsonl", "read_json_file", "environment_info",
           "cpu_model"]


class RunFileError(ValueError):
    """A file of a run folder (``metrics.json``, ``run.json``, ``log.jsonl``, ``config.yaml``) cannot be read
    as what the run wrote (truncated, not UTF-8, edited); the message names the file (actionpp.cli: exit 1)."""


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON through a temporary file and ``os.replace``."""
    return atomic_write_json(path, obj, indent=2, sort_keys=False, default=_json_default)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Every complete line of a JSONL log (a torn last line from a killed run is skipped).

    The log is ASCII JSON (``json.dumps``): a line that is not UTF-8 text was not written by the run,
    and raises :class:`RunFileError` naming the file and the line.
    """
    out: list[dict[str, Any]] = []
    p = Path(path)
    if not p.is_file():
        return out
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise RunFileError(f"{p}: cannot be read ({exc.strerror or exc})") from exc
    for lineno, blob in enumerate(raw.splitlines(), 1):
        try:
            line = blob.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise RunFileError(
                f"{p}:{lineno}: not UTF-8 text; this is not the log the run wrote (a JSON object per line): "
                "restore it, or move it away to start the log again"
            ) from None
        if not line:
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            out.append(entry)
    return out


def read_json_file(path: str | Path, what: str = "file") -> Any:
    """A JSON file of a run folder; :class:`RunFileError` naming it when it is unreadable, not UTF-8 or
    not valid JSON (``what`` says what it is, e.g. "the run's summary")."""
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
        return json.loads(text)
    except OSError as exc:
        raise RunFileError(f"{p}: cannot be read ({exc.strerror or exc})") from exc
    except (UnicodeDecodeError, ValueError) as exc:
        detail = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else f"not valid JSON ({exc})"
        raise RunFileError(f"{p}: {what} is damaged: {detail} (truncated or edited?)") from None


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[1]
    try:
        res = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if res.returncode != 0:
        return None
    commit = res.stdout.strip()
    try:
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        dirty = ""
    return commit + ("-dirty" if dirty else "")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, e.g. "AMD EPYC" or "Intel(R) Xeon(R) ..."), else what
    :mod:`platform` knows: runs on different CPUs are not bit-identical, so every run records it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def environment_info() -> dict[str, Any]:
    """Versions (python, torch, numpy, actionpp), platform, CPU model and git commit (None outside a checkout)."""
    import numpy
    import torch

    import actionpp

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "actionpp": actionpp.__version__,
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "git_commit": _git_commit(),
    }


class RunLogger:
    """Append-only ``log.jsonl`` plus optional TensorBoard scalars.

    Each :meth:`log` call writes one JSON object per line and flushes, so the
    log survives a SIGKILL up to the last complete line. ``enabled=False`` (ranks
    other than 0) makes every method a no-op. TensorBoard is imported lazily; when
    it is not installed a warning is issued once and only the JSONL log is kept.
    """

    def __init__(self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self._fh = None
        self._tb = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.run_dir / "log.jsonl", "a", buffering=1)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

                self._tb = SummaryWriter(str(self.run_dir / "tb"))
            except Exception as exc:  # noqa: BLE001 - ImportError or a broken install
                warnings.warn(f"TensorBoard requested but unavailable ({exc}); logging to log.jsonl only", stacklevel=2)

    def log(self, entry: Mapping[str, Any]) -> None:
        """Write one entry (must hold ``kind`` and ``iteration``); numbers also go to TensorBoard."""
        if not self.enabled or self._fh is None:
            return
        self._fh.write(json.dumps(dict(entry), default=_json_default) + "\n")
        if self._tb is not None:
            step = int(entry.get("iteration", 0))
            prefix = str(entry.get("kind", "train"))
            for key, value in _flatten(entry).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "iteration":
                    self._tb.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "/"))
        else:
            out[key] = v
    return out

