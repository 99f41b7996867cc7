"""The first cell of every lab notebook installs the package where it is missing (Colab, Binder, a new
environment) and does nothing where ``actionpp`` imports; binder/ installs the CPU build of torch and the
project's ``lab`` extra.

The fresh-environment test builds a virtual environment without ``actionpp``: it sees this environment's
dependencies (every distribution but ``actionpp``, through a filtered folder of links, so pip downloads
nothing but the build backend into its isolated build) and runs the notebooks' first cell from
``notebooks/``, as Jupyter would.
The cell finds the checkout, installs it with ``pip`` (``[lab]``), and ``actionpp`` then imports from the
new environment; run a second time, the cell installs nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import nbformat
import pytest

from actionpp.paths import repo_root

NOTEBOOK_DIR = repo_root() / "notebooks"
OWN = ["00_data_tour", "01_class_centers", "02_temperature_schedule", "03_contrastive_losses", "04_train",
       "05_embeddings", "06_replication_report", "07_beyond_medical"]

#: the first code cell of every lab notebook, word for word (copy it into a new notebook)
INSTALL_CELL = '''\
# Colab, Binder or a new environment: install the lab when `actionpp` is missing; nothing happens when it imports.
# It installs from the checkout this notebook sits in (or a clone in ./actionpp), or from ACTIONPP_SOURCE
# (a pip requirement); torch, when missing, as its CPU build (notebooks/README.md, "For instructors").
import importlib.util, os, pathlib, subprocess, sys

if importlib.util.find_spec("actionpp") is None:
    _here = pathlib.Path.cwd().resolve()
    _checkout = next((p for p in (_here, *_here.parents, _here / "actionpp")
                      if (p / "pyproject.toml").is_file() and (p / "actionpp" / "__init__.py").is_file()), None)
    _source = os.environ.get("ACTIONPP_SOURCE") or (f"{_checkout}[lab]" if _checkout else "")
    if not _source:
        raise RuntimeError("actionpp is not installed and no checkout was found: clone the repository and open "
                           "the notebook there, or set ACTIONPP_SOURCE to a pip requirement")
    if importlib.util.find_spec("torch") is None:  # the CPU wheel: the default one on Linux is the multi-GB CUDA build
        subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", "torch",
                               "--index-url", "https://download.pytorch.org/whl/cpu"])
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", _source])
    importlib.invalidate_caches()'''


def _first_code_cell(stem: str) -> str:
    nb = nbformat.read(NOTEBOOK_DIR / f"{stem}.ipynb", as_version=4)
    return next(c.source for c in nb.cells if c.cell_type == "code")


@pytest.mark.parametrize("stem", OWN)
def test_the_first_code_cell_is_the_install_cell(stem):
    assert _first_code_cell(stem) == INSTALL_CELL


def test_every_notebook_that_has_an_install_cell_has_this_one():
    for path in sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb")):
        first = _first_code_cell(path.stem)
        if "ACTIONPP_SOURCE" in first:
            assert first == INSTALL_CELL, f"{path.name}: its install cell differs from the lab's"


def _run_cell(python: str, env: dict[str, str], record: Path) -> subprocess.CompletedProcess[str]:
    """Run the install cell with ``python`` from notebooks/, recording every pip call it makes into ``record``."""
    script = record.with_suffix(".py")
    script.write_text(textwrap.dedent(f"""
        import subprocess, sys
        real = subprocess.check_call
        def recording(args, *a, **k):
            with open({str(record)!r}, "a") as f:
                f.write(" ".join(map(str, args)) + "\\n")
            return real(args, *a, **k)
        subprocess.check_call = recording
    """) + INSTALL_CELL + "\nimport actionpp\nprint(actionpp.__file__)\n")
    return subprocess.run([python, str(script)], cwd=NOTEBOOK_DIR, env=env, capture_output=True, text=True,
                          timeout=600)


def test_the_install_cell_does_nothing_where_actionpp_imports(tmp_path):
    record = tmp_path / "pip_calls.txt"
    out = _run_cell(sys.executable, {**os.environ}, record)
    assert out.returncode == 0, out.stderr
    assert not record.exists(), f"the cell ran pip although actionpp imports: {record.read_text()}"


def _dependencies_without_actionpp(folder: Path) -> Path:
    """A folder of links to every entry of this environment's site-packages except actionpp's own."""
    folder.mkdir()
    for site in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        for entry in Path(site).iterdir():
            name = entry.name.lower()
            if name.startswith(("actionpp", "__editable__", "_actionpp")) or name.endswith(".pth"):
                continue
            if not (folder / entry.name).exists():
                (folder / entry.name).symlink_to(entry)
    return folder


@pytest.mark.extended  # a fresh venv and a pip install: CI runs it after the default suite
@pytest.mark.timeout(900)
def test_the_install_cell_installs_the_lab_in_a_fresh_environment(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    deps = _dependencies_without_actionpp(tmp_path / "deps")
    Path(site, "dependencies.pth").write_text(f"{deps}\n")  # a path line: its own .pth files stay unread
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1")  # pip fetches only the build backend (setuptools, wheel)
    missing = subprocess.run([python, "-c", "import importlib.util as u; print(u.find_spec('actionpp') is None, "
                              "u.find_spec('torch') is not None)"], cwd=NOTEBOOK_DIR, env=env,
                             capture_output=True, text=True)
    assert missing.stdout.split() == ["True", "True"], missing  # no actionpp there, its dependencies are

    record = tmp_path / "pip_calls.txt"
    build = repo_root() / "build"  # pip builds the checkout in place; leave no build/ that was not there
    built_here = not build.exists()
    try:
        first = _run_cell(python, env, record)
    finally:
        if built_here and build.exists():
            shutil.rmtree(build, ignore_errors=True)
    assert first.returncode == 0, first.stdout + first.stderr
    calls = record.read_text().splitlines()
    assert len(calls) == 1 and "-m pip install" in calls[0] and calls[0].endswith(f"{repo_root()}[lab]"), calls
    assert first.stdout.strip().splitlines()[-1].startswith(str(venv)), first.stdout  # imported from the new venv

    record.unlink()
    again = _run_cell(python, env, record)
    assert again.returncode == 0 and not record.exists(), again.stderr


def test_binder_installs_the_cpu_build_of_torch_and_the_lab_extra():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    lines = [ln.strip() for ln in (repo_root() / "binder" / "requirements.txt").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines
    torch = [ln for ln in lines if ln.startswith("torch")]
    assert torch and all("+cpu" in ln for ln in torch), torch
    assert ".[lab]" in lines
    extras = tomllib.loads((repo_root() / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "lab" in extras
    assert (repo_root() / "binder" / "runtime.txt").read_text().strip().startswith("python-3.")
