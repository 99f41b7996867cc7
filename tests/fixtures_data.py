"""Session fixtures with small phantoms, for every engineer's tests.

Import them in ``tests/conftest.py`` with ``from fixtures_data import *  # noqa: F401,F403``
(tests/ is on sys.path under pytest's default rootdir import mode),
or per test module with ``from fixtures_data import phantom_acdc  # noqa: F401``.

- ``phantom_acdc``: 6-patient cardiac phantom (4 train / 1 val / 1 test; SSL4MIS layout, with the
  raw NIfTI layout under ``raw/``), generated once per session into a temporary folder.
- ``phantom_la``: 3-case LA phantom (2 train / 1 test; UA-MT layout, NIfTI pairs under ``nifti/``).

Both live at fixed names under the session's base temp folder, so a module that imports the
fixtures again reuses the generated folder (``ensure_phantom`` returns a complete folder at once).
"""

from __future__ import annotations

from pathlib import Path

import pytest


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
