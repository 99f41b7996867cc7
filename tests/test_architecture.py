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
             ROOT / "notebooks" / "README.md", ROOT / "data" / "README.md", ROOT / "bench" / "README.md",
             *(ROOT / "actionpp" / "configs").glob("*.yaml")]  # a profile's comments point at the code too
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


# a branch on a dataset's name outside the dataset's own spec: `dataset == "acdc"`, `ds.kind != "la"`, ...
_NAME_BRANCH = re.compile(r"""(?:dataset|kind)["')\]]*\s*(?:==|!=|in)\s*[("']*(?:acdc|la)\b"""
                          r"""|["'](?:acdc|la)["']\s*(?:==|!=)""")
_MAY_NAME = {
    "actionpp/data/datasets.py": "the built-in specs themselves",
    "actionpp/data/acdc.py": "the ACDC reader",
    "actionpp/data/la.py": "the LA reader",
    "actionpp/data/phantom.py": "the two built-in phantoms",
}


def test_no_module_branches_on_a_dataset_name():
    """A dataset is one DatasetSpec (actionpp/data/spec.py): config, training, evaluation, the report, the
    embeddings and the data tools consult it; none of them compares a dataset's name."""
    found = []
    for m in _modules():
        if m in _MAY_NAME:
            continue
        for lineno, line in enumerate((ROOT / m).read_text().splitlines(), 1):
            if _NAME_BRANCH.search(line.split("#")[0]):
                found.append(f"{m}:{lineno}: {line.strip()}")
    assert not found, "branches on a dataset name (ask the dataset's spec instead):\n" + "\n".join(found)


def test_every_config_field_says_why_and_where_from():
    """nanoGPT style: each field of actionpp/config.py carries a one-line reason (and source) as a comment on
    its line or the line above."""
    text = (ROOT / "actionpp" / "config.py").read_text()
    lines = text.splitlines()
    silent = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ClassDef) and node.name.endswith("Config") and node.name != "Config":
            for item in node.body:
                if isinstance(item, ast.AnnAssign):
                    here, above = lines[item.lineno - 1], lines[item.lineno - 2].strip()
                    if "#" not in here and not above.startswith("#"):
                        silent.append(f"{node.name}.{ast.unparse(item.target)}")
    assert not silent, f"config fields without their reason: {silent}"
