"""Where things live: the repository, its committed split files, and the shared real data.

The real ACDC / LA data never live in this repository. Tests and notebooks look
for them in ``$ACTIONPP_SHARED/data`` or, by default, in ``../shared/data`` next
to the repository, and skip (tests) or fall back to the phantom (notebooks) when
they are absent.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["repo_root", "splits_dir", "shared_root", "shared_data", "runs_dir"]


def repo_root() -> Path:
    """The repository root (the folder holding ``pyproject.toml``)."""
    return Path(__file__).resolve().parents[1]


def splits_dir() -> Path:
    """Committed split files (``data/splits``): patient lists and labelled subsets."""
    return repo_root() / "data" / "splits"


def runs_dir() -> Path:
    """Default parent folder of run directories (ignored by git)."""
    return Path(os.environ.get("ACTIONPP_RUNS", repo_root() / "runs"))


def shared_root() -> Path:
    """Folder holding the shared real data: ``$ACTIONPP_SHARED`` or ``<repo>/../shared``."""
    env = os.environ.get("ACTIONPP_SHARED")
    return Path(env) if env else repo_root().parent / "shared"


def shared_data(name: str) -> Path | None:
    """``shared_root()/data/<name>`` if it exists (``"acdc"`` or ``"la"``), else ``None``."""
    p = shared_root() / "data" / name
    return p if p.is_dir() else None
