"""actionpp.notebook: strict parameters, failure reporting, metrics file, stripped storage.

Every notebook here is a throwaway built with nbformat in tmp_path, so these tests
do not depend on the real notebooks (tests/test_notebooks.py covers those).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from actionpp import notebook as nbx

PARAMS = '''from typing import Optional
SEED: int = 0  # seed of everything
LR: float = 0.5  # a float parameter
NAME: str = "phantom"  # a string
FLAG: bool = False  # a switch
SIZES: list[int] = [1, 2]  # a list of ints
ROOT: Optional[str] = None  # None allowed
OUT_DIR: str = "out"  # where metrics.json goes
'''

BODY = '''from actionpp.notebook import write_metrics
write_metrics(OUT_DIR, {"seed": SEED, "lr": LR, "lr_type": type(LR).__name__, "name": NAME,
                        "flag": FLAG, "sizes": SIZES, "root": ROOT})
print("body ran")
'''


def _make(path: Path, params: str = PARAMS, body: str = BODY, extra: list[str] | None = None) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    nb.metadata["language_info"] = {"name": "python"}
    cells = [nbformat.v4.new_markdown_cell("# throwaway")]
    pc = nbformat.v4.new_code_cell(params)
    pc.metadata["tags"] = ["parameters"]
    cells.append(pc)
    cells.append(nbformat.v4.new_code_cell(body))
    cells += [nbformat.v4.new_code_cell(s) for s in (extra or [])]
    nb.cells = cells
    nbformat.write(nb, path)
    return path


# ---------------------------------------------------------------------------
# Declared parameters (no kernel needed)
# ---------------------------------------------------------------------------


def test_parameters_of_reads_types_defaults_and_help(tmp_path):
    params = nbx.parameters_of(_make(tmp_path / "nb.ipynb"))
    assert list(params) == ["SEED", "LR", "NAME", "FLAG", "SIZES", "ROOT", "OUT_DIR"]
    assert params["SEED"] == ("int", 0, "seed of everything")
    assert params["LR"].type_name == "float" and params["LR"].default == 0.5
    assert params["NAME"].default == "phantom"  # the value, not the source text '"phantom"'
    assert params["SIZES"] == ("list[int]", [1, 2], "a list of ints")
    assert params["ROOT"].type_name == "Optional[str]" and params["ROOT"].default is None


@pytest.mark.parametrize(
    "line, why",
    [
        ('NAME: str = "a=b"  # an equals sign in a string', "'=' in a value"),
        ("ROOT: str | None = None  # papermill drops 'T | None'", "pipe annotation"),
    ],
)
def test_parameters_papermill_would_silently_drop_are_an_error(tmp_path, line, why):
    nb = _make(tmp_path / "nb.ipynb", params="SEED: int = 0  # seed\n" + line + "\n")
    with pytest.raises(nbx.ParameterError, match=r"cannot parse the declaration of \['(NAME|ROOT)'\]"):
        nbx.parameters_of(nb)


def test_non_literal_default_is_an_error(tmp_path):
    nb = _make(tmp_path / "nb.ipynb", params="SEED: int = 0  # seed\nSIZE: int = 2 ** 7  # derived\n")
    with pytest.raises(nbx.ParameterError, match="SIZE.*not a literal"):
        nbx.parameters_of(nb)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"SEEDS": 1}, r"unknown parameter\(s\) \['SEEDS'\]"),
        ({"SEED": "1"}, r"'SEED' expects int, got '1' \(str\)"),
        ({"SEED": True}, r"'SEED' expects int, got True \(bool\)"),
        ({"SEED": 1.5}, r"'SEED' expects int, got 1.5 \(float\)"),
        ({"LR": "1e-3"}, r"'LR' expects float.*YAML reads exponent numbers"),
        ({"NAME": None}, r"'NAME' expects str, got None"),
        ({"SIZES": [1, "2"]}, r"'SIZES' expects list\[int\]"),
        ({"FLAG": 1}, r"'FLAG' expects bool, got 1 \(int\)"),
    ],
)
def test_bad_parameters_are_rejected_before_execution(tmp_path, params, match):
    nb = _make(tmp_path / "nb.ipynb")
    out = tmp_path / "out.ipynb"
    with pytest.raises(nbx.ParameterError, match=match) as info:
        nbx.execute(nb, out, params)
    assert str(nb) in str(info.value)  # the message names the notebook
    assert not out.exists()  # nothing ran, nothing written


@pytest.mark.parametrize(
    "params",
    [{"LR": 1}, {"ROOT": None}, {"ROOT": "/data"}, {"SIZES": []}, {"SIZES": (3, 4)}, {}],
)
def test_compatible_values_pass_the_check(tmp_path, params):
    nb = _make(tmp_path / "nb.ipynb")
    assert nbx.check_parameters(nb, params) == params


def test_unknown_kernel_is_a_clear_error(tmp_path):
    nb = _make(tmp_path / "nb.ipynb")
    with pytest.raises(ValueError, match="no Jupyter kernel named 'no-such-kernel'"):
        nbx.execute(nb, tmp_path / "out.ipynb", kernel_name="no-such-kernel")


def test_profile_file_is_loaded_next_to_the_notebook(tmp_path):
    nb = _make(tmp_path / "nb.ipynb")
    prof = tmp_path / "params" / "smoke" / "nb.yaml"
    prof.parent.mkdir(parents=True)
    prof.write_text("SEED: 3\nLR: 1.0e-3\n")
    assert nbx.profile_path(nb, "smoke") == prof
    assert nbx.load_profile(nb, "smoke") == {"SEED": 3, "LR": 0.001}
    with pytest.raises(nbx.ParameterError, match=r"no parameter profile 'paper'.*profiles present: \['smoke'\]"):
        nbx.load_profile(nb, "paper")
    prof.write_text("- SEED\n")
    with pytest.raises(nbx.ParameterError, match="must be a mapping"):
        nbx.load_profile(nb, "smoke")


def test_profile_with_unknown_key_fails_before_execution(tmp_path):
    nb = _make(tmp_path / "nb.ipynb")
    prof = tmp_path / "params" / "smoke" / "nb.yaml"
    prof.parent.mkdir(parents=True)
    prof.write_text("SEED: 3\nEPOCHS: 2\n")
    with pytest.raises(nbx.ParameterError, match=r"unknown parameter\(s\) \['EPOCHS'\]"):
        nbx.execute(nb, tmp_path / "out.ipynb", profile="smoke")
    assert not (tmp_path / "out.ipynb").exists()


# ---------------------------------------------------------------------------
# Execution (one kernel each)
# ---------------------------------------------------------------------------


@pytest.mark.notebooks
def test_execute_merges_profile_and_overrides_and_int_is_accepted_for_float(tmp_path):
    nb = _make(tmp_path / "nb.ipynb")
    prof = tmp_path / "params" / "smoke" / "nb.yaml"
    prof.parent.mkdir(parents=True)
    prof.write_text("SEED: 3\nNAME: from-profile\nLR: 2\n")
    out_dir = tmp_path / "metrics"
    out = nbx.execute(nb, tmp_path / "run" / "out.ipynb", {"NAME": "explicit", "OUT_DIR": str(out_dir)},
                      profile="smoke")
    assert out.is_file()
    m = nbx.read_metrics(out_dir)
    # profile value kept, explicit value wins over the profile, defaults otherwise
    assert m == {"seed": 3, "lr": 2, "lr_type": "int", "name": "explicit", "flag": False,
                 "sizes": [1, 2], "root": None}
    executed = nbformat.read(out, as_version=4)
    assert not nbx.is_stripped(out)  # an executed copy has outputs
    assert any("body ran" in o.get("text", "") for c in executed.cells if c.cell_type == "code"
               for o in c.outputs)
    # stripping the executed copy gives back a clean notebook with its parameters tag
    nbx.strip_outputs(out)
    assert nbx.stripped_problems(out) == []
    stripped = nbformat.read(out, as_version=4)
    assert [c.source for c in stripped.cells] == [c.source for c in nbformat.read(nb, as_version=4).cells]
    # HTML export of an executed notebook
    out2 = nbx.execute(nb, tmp_path / "run2.ipynb", {"OUT_DIR": str(out_dir)})
    html = nbx.export_html(out2, tmp_path / "html" / "run2.html")
    text = html.read_text()
    assert text.lstrip().lower().startswith("<!doctype html") and "body ran" in text


@pytest.mark.notebooks
def test_failing_cell_raises_notebook_failed_and_keeps_partial_output(tmp_path):
    nb = _make(
        tmp_path / "nb.ipynb",
        body='print("before the failure")\n',
        extra=['raise ValueError(f"bad seed {SEED}")', 'print("never runs")'],
    )
    out = tmp_path / "partial.ipynb"
    out.write_text("a previous run's copy")  # must not survive as if it were this run's
    with pytest.raises(nbx.NotebookFailed) as info:
        nbx.execute(nb, out, {"SEED": 7})
    err = info.value
    assert err.ename == "ValueError" and err.evalue == "bad seed 7"
    assert err.output == out and out.is_file()
    # the index points into the source notebook, not into papermill's output (which
    # gains an injected-parameters cell and an error banner)
    assert err.cell_index == 3
    assert "raise ValueError" in nbformat.read(nb, as_version=4).cells[err.cell_index].source
    executed = nbformat.read(out, as_version=4)
    failed = [c for c in executed.cells if c.cell_type == "code"
              and any(o.get("output_type") == "error" for o in c.outputs)]
    assert len(failed) == 1 and "raise ValueError" in failed[0].source
    texts = ["".join(o.get("text", "") for o in c.get("outputs", [])) for c in executed.cells]
    assert any("before the failure" in t for t in texts)  # cells before the failure ran
    assert not any("never runs" in t for t in texts)  # cells after it did not
    assert "partially executed notebook" in str(err) and str(out) in str(err)


# ---------------------------------------------------------------------------
# Metrics file
# ---------------------------------------------------------------------------


def test_metrics_round_trip_converts_scalars_and_restores_non_finite(tmp_path):
    metrics = {
        "n": np.int64(4),
        "share": np.float32(0.25),
        "loss": torch.tensor(1.5),
        "vec": torch.tensor([1.0, 2.0]),
        "arr": np.arange(3),
        "nested": {"nan": float("nan"), "ok": True, "list": [1.0, float("inf"), np.float64(-np.inf)]},
        "path": tmp_path,
    }
    path = nbx.write_metrics(tmp_path / "new" / "dir", metrics)
    assert path == tmp_path / "new" / "dir" / "metrics.json"
    raw = json.loads(path.read_text())  # strict JSON: no NaN tokens
    assert raw["nested"]["nan"] is None and raw["nested"]["list"] == [1.0, None, None]
    assert raw["_notes"] == {"non_finite_written_as_null": [
        {"path": ["nested", "nan"], "value": "nan"},
        {"path": ["nested", "list", 1], "value": "inf"},
        {"path": ["nested", "list", 2], "value": "-inf"}]}
    back = nbx.read_metrics(path.parent)
    assert back["n"] == 4 and isinstance(back["n"], int)
    assert back["share"] == 0.25 and back["loss"] == 1.5
    assert back["vec"] == [1.0, 2.0] and back["arr"] == [0, 1, 2]
    assert math.isnan(back["nested"]["nan"]) and back["nested"]["ok"] is True
    assert back["nested"]["list"][1] == math.inf and back["nested"]["list"][2] == -math.inf
    assert back["path"] == str(tmp_path)
    assert "_notes" not in back


def test_metrics_write_is_atomic(tmp_path, monkeypatch):
    nbx.write_metrics(tmp_path, {"dice": 0.5})
    # an unserialisable value fails before anything touches the existing file
    with pytest.raises(TypeError, match="'bad'.*object"):
        nbx.write_metrics(tmp_path, {"dice": 0.9, "bad": object()})
    assert nbx.read_metrics(tmp_path) == {"dice": 0.5}
    # a failure while writing (here: disk full simulated via os.replace) leaves no temp file
    def boom(src, dst):
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(os, "replace", boom)
        with pytest.raises(OSError, match="disk full"):
            nbx.write_metrics(tmp_path, {"dice": 0.9})
    assert nbx.read_metrics(tmp_path) == {"dice": 0.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_metrics_keys_must_be_strings_and_notes_is_reserved(tmp_path):
    with pytest.raises(TypeError, match="not a string"):
        nbx.write_metrics(tmp_path, {1: 0.5})
    with pytest.raises(ValueError, match="'_notes' is reserved"):
        nbx.write_metrics(tmp_path, {"_notes": 0.5})
    # dots are fine in keys (tau_0.1), also next to a restored NaN
    nbx.write_metrics(tmp_path, {"tau_0.1": {"a.b": float("nan")}})
    assert math.isnan(nbx.read_metrics(tmp_path)["tau_0.1"]["a.b"])


# ---------------------------------------------------------------------------
# Stripped storage
# ---------------------------------------------------------------------------


def test_stripped_problems_names_each_problem(tmp_path):
    path = _make(tmp_path / "nb.ipynb")
    assert nbx.is_stripped(path)
    nb = nbformat.read(path, as_version=4)
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", text="hi")]
    nb.cells[2].execution_count = 3
    nb.cells[0].metadata["tags"] = ["parameters"]  # a second parameters cell
    nb.metadata["papermill"] = {"parameters": {}}
    nbformat.write(nb, path)
    problems = nbx.stripped_problems(path)
    assert "cell 2 has 1 output(s)" in problems
    assert "cell 2 has execution_count 3" in problems
    assert "2 cells are tagged 'parameters' (expected exactly 1)" in problems
    assert "notebook metadata holds run data 'papermill'" in problems
    nbx.strip_outputs(path)
    assert nbx.stripped_problems(path) == ["2 cells are tagged 'parameters' (expected exactly 1)"]


def test_output_dir_is_relative_to_the_repository(tmp_path):
    from actionpp.paths import repo_root

    assert nbx.output_dir(tmp_path / "a") == tmp_path / "a" and (tmp_path / "a").is_dir()
    rel = Path("runs") / "test_notebook_infra_output_dir"
    try:
        assert nbx.output_dir(rel) == repo_root() / rel
    finally:
        (repo_root() / rel).rmdir()


def test_setup_seeds_and_rejects_missing_devices():
    dev = nbx.setup(3, "cpu")
    assert dev == torch.device("cpu")
    a = torch.rand(3)
    nbx.setup(3, "cpu")
    torch.testing.assert_close(torch.rand(3), a)  # same seed, same numbers
    with pytest.raises(ValueError, match="DEVICE='banana'"):
        nbx.setup(0, "banana")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"DEVICE='cuda'.*is_available\(\) is False"):
            nbx.setup(0, "cuda")
    with pytest.raises(ValueError, match="SEED must be a non-negative int"):
        nbx.setup(-1, "cpu")


def test_cli_check_strip_and_strict_run(tmp_path, capsys):
    from actionpp.cli import main

    nb = _make(tmp_path / "nb.ipynb")
    assert main(["notebook", "check", str(nb)]) == 0
    dirty = nbformat.read(nb, as_version=4)
    dirty.cells[2].outputs = [nbformat.v4.new_output("stream", text="hi")]
    nbformat.write(dirty, tmp_path / "dirty.ipynb")
    assert main(["notebook", "check", str(nb), str(tmp_path / "dirty.ipynb")]) == 1
    assert "dirty.ipynb: cell 2 has 1 output(s)" in capsys.readouterr().err
    assert main(["notebook", "strip", str(tmp_path / "dirty.ipynb")]) == 0
    assert nbx.is_stripped(tmp_path / "dirty.ipynb")
    # values are YAML: 'x' is a string, so SEED (int) is refused before anything runs (exit 2)
    out = tmp_path / "out.ipynb"
    assert main(["notebook", "run", str(nb), "--out", str(out), "-p", "SEED=x"]) == 2
    assert "'SEED' expects int, got 'x'" in capsys.readouterr().err and not out.exists()
    assert main(["notebook", "run", str(nb), "--out", str(out), "-p", "SEED"]) == 2
