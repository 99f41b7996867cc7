"""The examples in the library's docstrings run and print what they say (worked by hand where they are written)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import actionpp

MODULES = sorted(m.name for m in pkgutil.walk_packages(actionpp.__path__, "actionpp."))


def _examples(name: str) -> int:
    finder = doctest.DocTestFinder()
    return sum(len(t.examples) for t in finder.find(importlib.import_module(name)))


WITH_EXAMPLES = [n for n in MODULES if _examples(n)]


def test_the_library_has_docstring_examples():
    # paired intervals, planned pairs and the looks of the powered grid's analysis carry worked examples
    assert "actionpp.replicate.paired" in WITH_EXAMPLES


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_docstring_examples(name: str):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} docstring examples failed"
