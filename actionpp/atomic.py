"""Atomic file writes: a temporary file in the same folder, flushed to disk, then ``os.replace``-d.

Why: a run killed at any moment (Ctrl-C, out of memory, a cluster pre-emption) must never
leave a half-written checkpoint, log, marker or pack that looks complete. Writing to a
temporary file next to the target and renaming it over the target (atomic on POSIX and
Windows within one file system) means a reader sees either the old file or the new one,
never a torn one; on error the temporary file is removed, so nothing stray is left behind.

Folder swaps (building a whole folder beside the target and renaming it) are a different
pattern and are not handled here.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "atomic_write_json"]


@contextmanager
def atomic_path(path: str | os.PathLike[str], *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; on success move it onto ``path``.

    Create the parent folder if needed. The caller writes the new content to the yielded
    path (open it, ``torch.save`` to it, ...). When the ``with`` block ends normally the
    file is flushed to disk (``fsync=True``), given the permissions a plain ``open`` would
    give, and ``os.replace``-d over ``path``. If the block raises (any ``BaseException``,
    KeyboardInterrupt included), the temporary file is removed, ``path`` is left untouched
    and the exception propagates.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        _umask_mode(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`); return ``path`` as a Path."""
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(
    path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8", fsync: bool = True
) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`); return ``path`` as a Path."""
    with atomic_path(path, fsync=fsync) as tmp:
        with open(tmp, "w", encoding=encoding) as fh:
            fh.write(text)
    return Path(path)


def atomic_write_json(
    path: str | os.PathLike[str], obj: Any, *, trailing_newline: bool = True, fsync: bool = True, **json_kwargs: Any
) -> Path:
    """Write ``json.dumps(obj, **json_kwargs)`` (plus a newline) to ``path`` atomically."""
    text = json.dumps(obj, **json_kwargs)
    return atomic_write_text(path, text + "\n" if trailing_newline else text, fsync=fsync)


def _umask_mode(path: Path) -> None:
    """Give a ``mkstemp`` file (mode 0600) the permissions a plain ``open`` would have."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)
