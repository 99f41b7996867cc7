"""Session fixtures with small phantoms, for every engineer's tests.

Import them in ``tests/conftest.py`` with ``from fixtures_data import *  # noqa: F401,F403``
(tests/ is on sys.path under pytest's default rootdir import mode),
or per test module with ``from fixtures_data import phantom_acdc  # noqa: F401``.

- ``phantom_acdc``: 6-patient cardiac phantom (4 train / 1 val / 1 test; SSL4MIS layout, with the
  raw NIfTI layout under ``raw/``), generated once per session into a temporary folder.
- ``phantom_la``: 3-case LA phantom (2 train / 1 test; UA-MT layout, NIfTI pairs under ``nifti/``).

Both live at fixed names under the session's base temp folder, so a module that imports the
fixtures again reuses the generated folder (``ensure_phantom`` returns a complete folder at once).

- ``tree_snapshot(root)``: every entry below ``root`` (files by SHA-256, folders, links by target), for the
  bad-input tables' "nothing changed, deleted or left behind" checks.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest


def tree_snapshot(root: Path) -> dict[str, str]:
    """Every entry below ``root``: files by SHA-256, folders, links by target."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = f"link -> {os.readlink(p)}"
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="session")
def phantom_acdc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from actionpp.data.phantom import ensure_phantom

    return ensure_phantom(
        "acdc", "acdc", patients=6, seed=0, root=tmp_path_factory.getbasetemp() / "phantom_acdc6", nifti=True
    )


@pytest.fixture(scope="session")
def phantom_la(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from actionpp.data.phantom import ensure_phantom

    return ensure_phantom("la", patients=3, seed=0, root=tmp_path_factory.getbasetemp() / "phantom_la3", nifti=True)
