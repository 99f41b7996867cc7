"""One writer for ``docs/benchmarks.md``: each ``bench/`` script owns a marked section.

A section lies between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``; re-running a
benchmark replaces its own section (or appends it) and leaves every other one untouched; the file
is replaced atomically.
"""

from __future__ import annotations

import re
from pathlib import Path

from actionpp.atomic import atomic_write_text

__all__ = ["markers", "write_section"]

HEADER = "# Benchmarks\n\nEach section is written by its own script in `bench/`; re-run it to refresh.\n"


def markers(name: str) -> tuple[str, str]:
    """The start and end comments of section ``name``."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def write_section(path: Path, name: str, body: str) -> None:
    """Replace (or append) section ``name`` of the Markdown file ``path`` with ``body``."""
    start, end = markers(name)
    block = f"{start}\n{body.rstrip()}\n{end}"
    text = path.read_text() if path.is_file() else HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)  # a benchmark killed mid-write leaves the old file, never half of it
