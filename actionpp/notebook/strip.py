"""Notebooks are stored without outputs: checking and stripping them (the ``parameters`` tags are kept).

Taught in notebooks/README.md.
"""

from __future__ import annotations

import os
from pathlib import Path

from actionpp.atomic import atomic_write_text

__all__ = ["stripped_problems", "is_stripped", "strip_outputs"]



_VOLATILE_CELL_METADATA = ("execution", "papermill", "collapsed", "scrolled", "ExecuteTime")
_VOLATILE_NB_METADATA = ("papermill", "widgets", "signature")


def stripped_problems(path: str | os.PathLike[str]) -> list[str]:
    """Why a stored notebook is not clean: outputs, execution counts, run metadata,
    or a number of ``parameters``-tagged cells other than one. Empty list = clean."""
    import nbformat

    nb = nbformat.read(Path(path), as_version=4)
    problems: list[str] = []
    n_param = 0
    for i, cell in enumerate(nb.cells):
        tags = cell.get("metadata", {}).get("tags", [])
        n_param += "parameters" in tags
        if "injected-parameters" in tags:
            problems.append(f"cell {i} is a papermill injected-parameters cell")
        if cell.cell_type == "code":
            if cell.get("outputs"):
                problems.append(f"cell {i} has {len(cell.outputs)} output(s)")
            if cell.get("execution_count") is not None:
                problems.append(f"cell {i} has execution_count {cell.execution_count}")
        for key in _VOLATILE_CELL_METADATA:
            if key in cell.get("metadata", {}):
                problems.append(f"cell {i} has run metadata {key!r}")
    for key in _VOLATILE_NB_METADATA:
        if key in nb.metadata:
            problems.append(f"notebook metadata holds run data {key!r}")
    if n_param != 1:
        problems.append(f"{n_param} cells are tagged 'parameters' (expected exactly 1)")
    return problems


def is_stripped(path: str | os.PathLike[str]) -> bool:
    """True when :func:`stripped_problems` finds nothing."""
    return not stripped_problems(path)


def strip_outputs(path: str | os.PathLike[str]) -> Path:
    """Remove outputs, execution counts, papermill's injected cell and run metadata in place.

    Cell tags (``parameters`` in particular), sources and ids are kept. Returns the path.
    """
    import nbformat

    p = Path(path)
    nb = nbformat.read(p, as_version=4)
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        for key in _VOLATILE_CELL_METADATA:
            cell.metadata.pop(key, None)
    for key in _VOLATILE_NB_METADATA:
        nb.metadata.pop(key, None)
    text = nbformat.writes(nb)
    atomic_write_text(p, text if text.endswith("\n") else text + "\n")
    return p
