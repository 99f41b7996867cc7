"""Atomic file writes: a temporary file in the same folder, flushed to disk, then ``os.replace``-d.

Why: a run killed at any moment (Ctrl-C, out of memory, a cluster pre-emption) must never
leave a half-written checkpoint, log, marker or pack that looks complete. Writing to a
temporary file next to the target and renaming it over the target (atomic on POSIX and
Windows within one file system) means a reader sees either the old file or the new one,
never a torn one; on error the temporary file is removed, so nothing stray is left behind.

Folder swaps (building a whole folder beside the target and renaming it) are a different
pattern and are not handled here.

This module also holds the one ownership rule every writing command follows (the section at the
end, :func:`check_folder`, :func:`claim_folder`, :func:`check_file`): a command writes only into
files and folders it created, and replaces one of its own only when asked.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_path", "atomic_write_bytes", "atomic_write_text", "atomic_write_json",
    "OwnershipError", "WriteError", "MARKER_PREFIX", "marker_path", "folder_markers", "read_marker", "check_folder",
    "claim_folder", "check_file", "file_digest", "record_files", "written_unchanged", "remove_stale_temporaries",
    "utc_now",
]


@contextmanager
def atomic_path(path: str | os.PathLike[str], *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; on success move it onto ``path``.

    Create the parent folder if needed. The caller writes the new content to the yielded
    path (open it, ``torch.save`` to it, ...). When the ``with`` block ends normally the
    file is flushed to disk (``fsync=True``), given the permissions a plain ``open`` would
    give, and ``os.replace``-d over ``path``. If the block raises (any ``BaseException``,
    KeyboardInterrupt included), the temporary file is removed, ``path`` is left untouched
    and the exception propagates; an ``OSError`` (disk full, no permission) comes out as a
    :class:`WriteError` naming ``path``.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise _write_error(target, exc) from exc
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        _umask_mode(tmp)
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, WriteError):
            raise
        raise _write_error(target, exc) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_error(target: Path, exc: OSError) -> WriteError:
    """``exc`` as a :class:`WriteError` naming ``target`` (the errno kept)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    err = WriteError(f"{target}: cannot write the file ({reason}); the previous version, if any, is kept")
    err.errno = exc.errno
    return err


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


# =========================================================================== the ownership rule
#
# One rule for every command that writes: it writes only into files and folders it created, and it
# replaces one of its own only when asked (--overwrite / --force, or re-running the same command for
# the same thing: resuming a run, re-tabulating a grid, re-publishing it). Anything else is refused
# before the first byte is written, with an OwnershipError naming the path (actionpp.cli: exit 2).
#
# A folder is a command's own when it carries the command's marker ``.actionpp-<command>.json``
# (written when the command creates the folder or finds it empty; prepare-acdc's
# ``.actionpp-prepare-acdc.json`` is one of them), or when the command recognises in it the files an
# earlier version of itself wrote without a marker (``recognise``: a run folder's run.json, a grid
# folder's run folders); such a folder gets its marker then. A file is a command's own when it is
# in a folder of its own under a name the command writes, or when its content says so (a pack's
# magic bytes, an executed notebook's metadata, a centres file); a marker may also list the files
# the command wrote with their SHA-256 (``record_files``): a listed file edited since is not its own.

MARKER_PREFIX = ".actionpp-"


class OwnershipError(ValueError):
    """A command refused to write: the path holds something it did not write, or one of its own that it
    was not asked to replace. The message names the path; nothing was written."""


class WriteError(OSError):
    """Writing a file failed (disk full, no permission, ...); the message names the file. The previous
    file, if any, is left as it was."""


def marker_path(folder: str | os.PathLike[str], command: str) -> Path:
    """``folder/.actionpp-<command>.json``: the marker of a folder ``command`` created."""
    return Path(folder) / f"{MARKER_PREFIX}{command}.json"


def folder_markers(folder: str | os.PathLike[str]) -> list[str]:
    """The commands whose marker ``folder`` holds (``[]`` for none or no folder)."""
    p = Path(folder)
    if not p.is_dir():
        return []
    return sorted(m.name[len(MARKER_PREFIX):-len(".json")] for m in p.glob(f"{MARKER_PREFIX}*.json") if m.is_file())


def read_marker(folder: str | os.PathLike[str], command: str) -> dict[str, Any]:
    """The content of ``command``'s marker in ``folder`` (``{}`` when absent or unreadable)."""
    try:
        data = json.loads(marker_path(folder, command).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _listing(folder: Path, limit: int = 4) -> str:
    names = sorted(p.name for p in folder.iterdir())
    shown = ", ".join(names[:limit]) + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")
    return shown


def check_folder(
    folder: str | os.PathLike[str],
    command: str,
    *,
    recognise: Callable[[Path], bool] | None = None,
    same: Callable[[dict[str, Any]], str | None] | None = None,
) -> None:
    """Refuse (:class:`OwnershipError` naming ``folder``) unless ``command`` may write into ``folder``.

    Allowed: a missing folder (it will be created), an empty one, one holding ``command``'s marker, or
    one in which ``recognise(folder)`` finds what an earlier version of ``command`` wrote there. Refused:
    a file, a folder of another command (its marker), any other folder with something in it.
    ``same(marker content)``: for a folder of ``command``'s own, a reason to refuse it anyway (another
    grid's folder) or None. Reads only; :func:`claim_folder` then writes the marker.
    """
    p = Path(folder)
    if not p.exists():
        if p.is_symlink():
            raise OwnershipError(f"{p}: is a broken symbolic link; choose another folder")
        return
    if not p.is_dir():
        raise OwnershipError(f"{p}: exists and is not a folder; choose another folder")
    try:
        markers = folder_markers(p)
        empty = not any(p.iterdir())
    except OSError as exc:
        raise OwnershipError(f"{p}: cannot be read ({exc.strerror or exc})") from exc
    if command in markers:
        reason = same(read_marker(p, command)) if same is not None else None
        if reason:
            raise OwnershipError(f"{p}: {reason}; choose another folder")
        return
    if markers:
        raise OwnershipError(
            f"{p}: refusing to write into this folder: it was written by actionpp {markers[0]}, not by actionpp "
            f"{command} (its {MARKER_PREFIX}{markers[0]}.json marker); choose another folder"
        )
    if empty or (recognise is not None and recognise(p)):
        return
    raise OwnershipError(
        f"{p}: refusing to write into this folder: actionpp {command} did not create it (no "
        f"{marker_path(p, command).name} marker) and it holds files it did not write ({_listing(p)}); "
        "choose a new or empty folder"
    )


def claim_folder(
    folder: str | os.PathLike[str],
    command: str,
    *,
    recognise: Callable[[Path], bool] | None = None,
    same: Callable[[dict[str, Any]], str | None] | None = None,
    info: dict[str, Any] | None = None,
) -> Path:
    """:func:`check_folder`, then create ``folder`` (parents too) and write ``command``'s marker into it
    when it has none (``info``: what else the marker records, e.g. the grid's name). Returns ``folder``."""
    p = Path(folder)
    check_folder(p, command, recognise=recognise, same=same)
    marker = marker_path(p, command)
    if not marker.is_file():
        p.mkdir(parents=True, exist_ok=True)
        atomic_write_json(marker, {"written_by": f"actionpp {command}", "created": utc_now(), **(info or {})},
                          indent=1)
    return p


def check_file(
    path: str | os.PathLike[str],
    *,
    overwrite: bool,
    ours: Callable[[Path], bool],
    what: str,
    flag: str = "--overwrite",
) -> None:
    """Refuse (:class:`OwnershipError` naming ``path``) to write the file ``path`` unless it is new, or it
    is ``what`` (``ours(path)``: a file the command wrote; ``what`` with its article, "a pack written by
    actionpp data pack") and ``overwrite`` was asked for."""
    p = Path(path)
    if p.is_symlink():
        raise OwnershipError(f"{p}: is a symbolic link, not {what}; refusing to replace it")
    if not p.exists():
        return
    if p.is_dir():
        raise OwnershipError(f"{p}: is a folder, not {what}; refusing to replace it")
    if not ours(p):
        raise OwnershipError(f"{p}: refusing to replace this file: it is not {what}; choose another path")
    if not overwrite:
        raise OwnershipError(f"{p}: exists, {what} (pass {flag} to replace it)")


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (hex)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def record_files(folder: str | os.PathLike[str], command: str, paths: Iterable[str | os.PathLike[str]]) -> None:
    """Add ``paths`` (inside ``folder``) with their SHA-256 to ``command``'s marker in ``folder``."""
    p = Path(folder)
    data = read_marker(p, command) or {"written_by": f"actionpp {command}", "created": utc_now()}
    files = dict(data.get("files") or {})
    for f in paths:
        files[Path(f).relative_to(p).as_posix()] = file_digest(f)
    data["files"] = files
    atomic_write_json(marker_path(p, command), data, indent=1)


def written_unchanged(folder: str | os.PathLike[str], command: str, path: str | os.PathLike[str]) -> bool:
    """Whether ``command``'s marker in ``folder`` lists ``path`` with the SHA-256 it has now."""
    p, f = Path(folder), Path(path)
    want = (read_marker(p, command).get("files") or {}).get(f.relative_to(p).as_posix())
    return bool(want) and f.is_file() and not f.is_symlink() and file_digest(f) == want


def remove_stale_temporaries(folder: str | os.PathLike[str], names: Iterable[str]) -> list[Path]:
    """Remove the temporary files :func:`atomic_path` left in ``folder`` for the targets ``names`` (a
    process killed while writing leaves ``.<name>.XXXXXXXX.tmp``). Call it only while no other process
    writes there (under the folder's lock). Returns what was removed."""
    import re

    p = Path(folder)
    pattern = re.compile(r"\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.tmp")
    wanted = set(names)
    gone = []
    for f in p.glob(".*.tmp") if p.is_dir() else []:
        m = pattern.fullmatch(f.name)
        if m and m.group("name") in wanted and f.is_file() and not f.is_symlink():
            f.unlink(missing_ok=True)
            gone.append(f)
    return gone


def utc_now() -> str:
    """The time now in UTC, ISO 8601 to the second with its offset (``2026-12-07T16:03:55+00:00``): every time
    a run, a marker or a published folder records, so runs trained on machines in other time zones (a SLURM
    cluster's nodes, a laptop) order correctly. Code before ``e68b161`` wrote the ``done`` and ``failed.json``
    times, a run's starts in ``run.json``, the SLURM record and a published README's date as the machine's clock
    without an offset (UTC on the machine that trained the published grids); ownership markers always had it."""
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")
