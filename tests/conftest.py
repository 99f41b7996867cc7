"""Shared fixtures. Real-data fixtures skip with a reason when ../shared is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# One thread per test process: the CI machine has 2 cores, and small tensors gain nothing.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

from actionpp.paths import shared_data, shared_root  # noqa: E402


def _require(name: str) -> Path:
    p = shared_data(name)
    if p is None:
        pytest.skip(
            f"real {name.upper()} data not found at {shared_root() / 'data' / name} "
            "(set ACTIONPP_SHARED to the folder holding data/{acdc,la}); users without it run on the phantom"
        )
    return p


@pytest.fixture(scope="session")
def acdc_root() -> Path:
    """Real ACDC in the SSL4MIS layout (skips when absent)."""
    return _require("acdc")


@pytest.fixture(scope="session")
def la_root() -> Path:
    """Real LA volumes in the UA-MT layout (skips when absent)."""
    return _require("la")


# Small phantom datasets (session-scoped, generated once into a tmp folder).
from fixtures_data import *  # noqa: E402,F401,F403
