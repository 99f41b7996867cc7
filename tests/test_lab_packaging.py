"""The student install (pyproject.toml's ``lab`` extra): every package a notebook or the library imports is
installed by the core dependencies and ``lab``, and ``lab`` brings no development tool."""

from __future__ import annotations

import ast
import re
import sys
from functools import cache
from importlib import metadata
from pathlib import Path

import nbformat
import pytest

from actionpp.paths import repo_root

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
packaging_requirements = pytest.importorskip("packaging.requirements")

DEV_TOOLS = {"pytest", "pytest-timeout", "ruff", "mypy", "nbstripout", "playwright", "types-pyyaml"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _project() -> dict:
    return tomllib.loads((repo_root() / "pyproject.toml").read_text())["project"]


def _names(requirements: list[str]) -> set[str]:
    return {_norm(packaging_requirements.Requirement(r).name) for r in requirements}


@cache
def _closure(names: frozenset[str]) -> frozenset[str]:
    """``names`` and every distribution they require, transitively, as installed here (no extras)."""
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for line in requires:
            req = packaging_requirements.Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(_norm(req.name))
    return frozenset(seen)


def _imports(source: str) -> set[str]:
    """Top-level module names a piece of Python imports (notebook magics and shell lines skipped)."""
    code = "\n".join("" if ln.lstrip().startswith(("%", "!")) else ln for ln in source.splitlines())
    out = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def _third_party(modules: set[str]) -> set[str]:
    return {m for m in modules if m not in sys.stdlib_module_names and m not in ("actionpp", "__future__")}


def test_the_lab_extra_brings_no_development_tool():
    lab = _names(_project()["optional-dependencies"]["lab"])
    assert lab, "pyproject.toml has no lab extra"
    assert not lab & DEV_TOOLS, f"the student install would bring {lab & DEV_TOOLS}"


def test_the_student_install_provides_every_import_of_the_notebooks_and_the_library():
    project = _project()
    provided = _closure(frozenset(_names(project["dependencies"]) | _names(project["optional-dependencies"]["lab"])))
    modules = set()
    for path in sorted((repo_root() / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        modules |= _imports("\n".join(c.source for c in nb.cells if c.cell_type == "code"))
    for path in sorted((repo_root() / "actionpp").rglob("*.py")):
        modules |= _imports(Path(path).read_text())
    dists = metadata.packages_distributions()
    missing = {}
    for module in sorted(_third_party(modules)):
        owners = {_norm(d) for d in dists.get(module, [])}
        if not owners:
            continue  # optional at run time and not installed here (e.g. tensorboard): nothing to check against
        if not owners & provided:
            missing[module] = sorted(owners)
    optional = {"tensorboard", "torch-tb-profiler", "playwright"}  # extras the lab does not need
    missing = {m: o for m, o in missing.items() if not set(o) & optional}
    assert not missing, f"imported but not installed by the core dependencies + lab: {missing}"
