"""docs/architecture.md against the code: every module it names exists, every module is named in it,
and a module over ~500 lines says at its top why it is one module."""

from __future__ import annotations

import ast
import re

from actionpp.paths import repo_root

ROOT = repo_root()
DOC = (ROOT / "docs" / "architecture.md").read_text()
LONG = 500


def _modules() -> list[str]:
    return sorted(
        str(p.relative_to(ROOT)) for p in (ROOT / "actionpp").rglob("*.py") if p.name != "__init__.py"
    )


def _named_in_doc() -> set[str]:
    named: set[str] = set()
    for ref in re.findall(r"`(actionpp/[\w/*.]+)`", DOC):
        if "*" in ref:
            named.update(str(p.relative_to(ROOT)) for p in ROOT.glob(ref))
        else:
            named.add(ref)
    return named


def test_every_module_the_doc_names_exists():
    missing = sorted(m for m in _named_in_doc() if not (ROOT / m).exists())
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"


def test_the_notebooks_and_guides_name_only_modules_that_exist():
    """The "Library:" lines of the notebooks and the guides point readers at files; after a refactor
    they went on naming ``actionpp/replicate.py`` and ``engine.py``."""
    texts = [*(ROOT / "notebooks").glob("*.ipynb"), *(ROOT / "docs").glob("*.md"), ROOT / "README.md",
             ROOT / "notebooks" / "README.md", ROOT / "data" / "README.md", ROOT / "bench" / "README.md"]
    missing = sorted({f"{t.relative_to(ROOT)}: {ref}" for t in texts
                      for ref in re.findall(r"(actionpp/[\w/]+\.py|actionpp/[\w]+/)(?![\w/])", t.read_text())
                      if not (ROOT / ref).exists()})
    assert not missing, f"references to files that do not exist: {missing}"
    stale = sorted({f"{t.relative_to(ROOT)}: {ref}" for t in texts
                    for ref in re.findall(r"`(engine\.py|replicate\.py|notebook\.py)`", t.read_text())})
    assert not stale, f"modules split by the refactor still named: {stale}"


def test_every_module_is_named_in_the_doc():
    unnamed = sorted(set(_modules()) - _named_in_doc())
    assert not unnamed, f"modules missing from docs/architecture.md: {unnamed}"


def test_long_modules_say_why_they_are_one_module():
    silent = []
    for m in _modules():
        text = (ROOT / m).read_text()
        if text.count("\n") > LONG:
            doc = ast.get_docstring(ast.parse(text)) or ""
            if "Why one module" not in doc:
                silent.append(f"{m} ({text.count(chr(10))} lines)")
    assert not silent, f"modules over {LONG} lines without a 'Why one module' paragraph: {silent}"


def test_tests_use_public_names_only():
    """Tests import public names (``from actionpp... import _x`` or ``module._x`` monkeypatching is private)."""
    offenders = []
    for p in sorted((ROOT / "tests").glob("*.py")):
        tree = ast.parse(p.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("actionpp"):
                offenders += [f"{p.name}: from {node.module} import {a.name}" for a in node.names
                              if a.name.startswith("_")]
    assert not offenders, offenders
