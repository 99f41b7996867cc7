"""Bad inputs to ``actionpp train | evaluate | notebook run | replicate``: one table of cases.

Each case builds its bad input in ``tmp_path`` from sources made once for the module (a 5-patient
ACDC phantom, a 2-case LA phantom, a 2-iteration supervised checkpoint, a tiny notebook and grid),
runs the console entry in-process and expects an exit code and a fragment of stderr (the CLI's
one-line ``error: ...``, never a traceback). A second test hashes every file under ``tmp_path``
before and after each failing case: a refused command leaves its inputs byte-for-byte unchanged.
Exit codes (actionpp/cli.py): 1 the data or a run failed, 2 bad usage or configuration.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest
import yaml

from actionpp.cli import main

SMOKE = ["--set", "runtime.device=cpu", "--set", "train.finetune_iters=2", "--set", "data.labelled=1",
         "--set", "method.name=supervised", "--no-progress"]


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from actionpp.data.phantom import generate_acdc_phantom, generate_la_phantom

    base = tmp_path_factory.mktemp("bad_cli_sources")
    acdc, la = base / "acdc", base / "la"
    generate_acdc_phantom(acdc, patients=5, seed=0)
    generate_la_phantom(la, patients=2, seed=0)
    run = base / "run"
    assert main(["train", "phantom_smoke", "--set", f"data.root={acdc}", "--run-dir", str(run), *SMOKE]) == 0
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell('SEED: int = 0  # seed\nOUT_DIR: str = "out"  # where metrics.json goes',
                                  metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(
            "from actionpp.notebook import write_metrics\n"
            "one = {'RV': 0.5}\n"
            "write_metrics(OUT_DIR, {'dataset': 'acdc', 'seed': SEED, 'classes': ['RV'], 'dice': one, "
            "'jaccard': one, 'hd95': {'RV': 2.0}, 'asd': {'RV': 1.0}, 'protocol': {'split': 'fake'}})"
        ),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    grid_dir = base / "grid"
    grid_dir.mkdir()
    nbformat.write(nb, grid_dir / "tiny.ipynb")
    (grid_dir / "grid.yaml").write_text(yaml.safe_dump({"name": "tiny", "notebooks": ["tiny"],
                                                        "axes": {"SEED": [0]}}))
    return {"acdc": acdc, "la": la, "run": run, "grid": grid_dir}


class Env:
    """Copies of the module's sources in one test's ``tmp_path``, made on first use."""

    def __init__(self, tmp: Path, src: dict[str, Path]) -> None:
        self.tmp, self.src = tmp, src

    def get(self, key: str) -> Path:
        dst = self.tmp / key
        if not dst.exists():
            shutil.copytree(self.src[key], dst)
        return dst


@dataclass
class Case:
    id: str
    build: Callable[[Env], list[str]]  # builds the bad input, returns argv
    code: int
    message: str  # a fragment of stderr
    forbidden: list[str] = field(default_factory=lambda: ["Traceback", "weights_only"])


def _empty_config(e: Env) -> list[str]:
    (e.tmp / "empty.yaml").write_text("# nothing here\n")
    return ["train", str(e.tmp / "empty.yaml")]


def _truncated_h5(e: Env) -> list[str]:
    ds = e.get("acdc")
    first = (ds / "train_slices.list").read_text().split()[0]
    path = ds / "data" / "slices" / f"{first}.h5"
    path.write_bytes(path.read_bytes()[:200])
    return ["train", "phantom_smoke", "--set", f"data.root={ds}", "--run-dir", str(e.tmp / "r"), *SMOKE]


def _label_seven(e: Env) -> list[str]:
    import h5py
    import numpy as np

    ds = e.get("acdc")
    first = (ds / "train_slices.list").read_text().split()[0]
    with h5py.File(ds / "data" / "slices" / f"{first}.h5", "r+") as f:
        lab = f["label"][()]
        lab[0, 0] = 7
        del f["label"]
        f["label"] = lab.astype(np.uint8)
    return ["train", "phantom_smoke", "--set", f"data.root={ds}", "--run-dir", str(e.tmp / "r"), *SMOKE]


def _la_to_acdc_profile(e: Env) -> list[str]:
    return ["train", "phantom_smoke", "--set", f"data.root={e.get('la')}", "--run-dir", str(e.tmp / "r"), *SMOKE]


def _other_config_run_dir(e: Env) -> list[str]:
    run = e.get("run")
    return ["train", "phantom_smoke", "--set", f"data.root={e.get('acdc')}", "--run-dir", str(run), *SMOKE,
            "--set", "train.lr=0.02"]


def _checkpoint_on_la(e: Env) -> list[str]:
    return ["evaluate", str(e.get("run")), "--data", str(e.get("la")), "--split", "test", "--device", "cpu"]


def _no_test_split(e: Env) -> list[str]:
    ds = e.get("acdc")
    (ds / "test.list").unlink()
    return ["evaluate", str(e.get("run")), "--data", str(ds), "--split", "test", "--device", "cpu"]


def _partial_split(e: Env) -> list[str]:
    ds = e.get("acdc")
    first = (ds / "val.list").read_text().split()[0]
    (ds / "data" / f"{first}.h5").unlink()
    return ["evaluate", str(e.get("run")), "--data", str(ds), "--split", "val", "--device", "cpu"]


def _empty_pt(e: Env) -> list[str]:
    (e.tmp / "empty.pt").write_bytes(b"")
    return ["evaluate", str(e.tmp / "empty.pt"), "--data", str(e.get("acdc")), "--device", "cpu"]


def _garbage_pt(e: Env) -> list[str]:
    (e.tmp / "garbage.pt").write_bytes(b"this is not a checkpoint\n" * 20)
    return ["evaluate", str(e.tmp / "garbage.pt"), "--data", str(e.get("acdc")), "--device", "cpu"]


def _grid_name_escapes(e: Env) -> list[str]:
    g = e.get("grid")
    (g / "evil.yaml").write_text(yaml.safe_dump({"name": "../../evil", "notebooks": ["tiny"], "axes": {"SEED": [0]}}))
    return ["replicate", str(g / "evil.yaml"), "--dry-run"]


def _broken_metrics(content: str) -> Callable[[Env], list[str]]:
    def build(e: Env) -> list[str]:
        g = e.get("grid")
        out = e.tmp / "out"
        assert main(["replicate", str(g / "grid.yaml"), "--out", str(out)]) == 0
        (out / "seed=0" / "metrics.json").write_text(content)
        return ["replicate", str(g / "grid.yaml"), "--out", str(out), "--report-only"]
    return build


CASES = [
    Case("train-data-root-missing", lambda e: ["train", "phantom_smoke", "--set", "data.root=/nonexistent/acdc",
                                               "--run-dir", str(e.tmp / "r"), *SMOKE], 1, "does not exist"),
    Case("train-empty-config", _empty_config, 2, "the file is empty"),
    Case("train-unknown-key", lambda e: ["train", "phantom_smoke", "--set", "train.lrr=1"], 2,
         "unknown key train.lrr"),
    Case("train-truncated-h5", _truncated_h5, 1, "unreadable HDF5 file"),
    Case("train-label-7", _label_seven, 1, "7"),
    Case("train-la-data-acdc-profile", _la_to_acdc_profile, 1, "expected an ACDC dataset, found la"),
    Case("train-other-config-run-dir", _other_config_run_dir, 2, "holds a finished run of config"),
    Case("evaluate-checkpoint-on-la", _checkpoint_on_la, 1, "holds la data (2 classes)"),
    Case("evaluate-no-test-split", _no_test_split, 1, "has no test.list"),
    Case("evaluate-partial-split", _partial_split, 1, "score the present ones with --partial"),
    Case("evaluate-empty-pt", _empty_pt, 2, "the file is empty (0 bytes)"),
    Case("evaluate-garbage-pt", _garbage_pt, 2, "not a PyTorch checkpoint"),
    Case("notebook-missing", lambda e: ["notebook", "run", str(e.tmp / "nosuch.ipynb")], 2, "no such notebook"),
    Case("notebook-unknown-parameter", lambda e: ["notebook", "run", str(e.get("grid") / "tiny.ipynb"), "-p",
                                                  "SEEDS=1", "--out", str(e.tmp / "o.ipynb")], 2, "SEEDS"),
    Case("notebook-mistyped-parameter", lambda e: ["notebook", "run", str(e.get("grid") / "tiny.ipynb"), "-p",
                                                   "SEED=x", "--out", str(e.tmp / "o.ipynb")], 2, "SEED"),
    Case("replicate-missing-grid", lambda e: ["replicate", str(e.tmp / "nope.yaml")], 2, "does not exist"),
    Case("replicate-grid-name-escapes", _grid_name_escapes, 2, "must be a plain folder name"),
    Case("replicate-empty-metrics", _broken_metrics("{}"), 1, "left out of the tables"),
    Case("replicate-truncated-metrics", _broken_metrics('{"dataset": "acdc", "dice": {"R'), 1, "not valid JSON"),
]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(argv)
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_exit_code_and_one_line_message(case: Case, tmp_path: Path, sources, capsys) -> None:
    argv = case.build(Env(tmp_path, sources))
    rc, err = _run(argv, capsys)
    assert rc == case.code, err
    assert case.message in err, err
    for word in case.forbidden:
        assert word not in err, err
    error_lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert error_lines or "left out of the tables" in err, err


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", [c for c in CASES if not c.id.startswith("replicate-") or "grid" in c.id],
                         ids=lambda c: c.id)
def test_failing_command_leaves_its_inputs_unchanged(case: Case, tmp_path: Path, sources, capsys) -> None:
    argv = case.build(Env(tmp_path, sources))
    before = _snapshot(tmp_path)
    _run(argv, capsys)
    after = _snapshot(tmp_path)
    changed = sorted(k for k in before if after.get(k) != before[k])
    assert not changed, f"{case.id} changed or deleted {changed}"


def test_partial_evaluation_scores_the_present_volumes_and_names_the_rest(tmp_path: Path, sources, capsys) -> None:
    e = Env(tmp_path, sources)
    argv = _partial_split(e) + ["--partial", "--json"]
    rc = main(argv)
    out = capsys.readouterr()
    report = json.loads(out.out)
    assert rc == 0 and len(report["missing"]) == 1 and report["volumes"] == 1
    assert f"warning: partial val split: 1 listed volume(s) absent and not scored: {report['missing'][0]}" in out.err


def test_retraining_a_finished_run_says_nothing_was_trained(tmp_path: Path, sources, capsys) -> None:
    run = Env(tmp_path, sources).get("run")
    rc = main(["train", "phantom_smoke", "--set", f"data.root={sources['acdc']}", "--run-dir", str(run), *SMOKE])
    err = capsys.readouterr().err
    assert rc == 0 and "already holds this finished run" in err and "nothing was trained" in err


def test_broken_metrics_are_rerun_not_aggregated(tmp_path: Path, sources, capsys) -> None:
    g = Env(tmp_path, sources).get("grid")
    out = tmp_path / "out"
    assert main(["replicate", str(g / "grid.yaml"), "--out", str(out)]) == 0
    (out / "seed=0" / "metrics.json").write_text("{}")
    capsys.readouterr()
    assert main(["replicate", str(g / "grid.yaml"), "--out", str(out), "--dry-run"]) == 0
    shown = capsys.readouterr().out
    assert "broken" in shown and "will run again" in shown and "missing 'dataset'" in shown
    assert main(["replicate", str(g / "grid.yaml"), "--out", str(out)]) == 0  # runs it again
    assert json.loads((out / "seed=0" / "metrics.json").read_text())["dataset"] == "acdc"
    assert (out / "results.csv").read_text().count("\n") == 2  # header + the one run


def test_debug_flag_prints_the_traceback(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty.yaml").write_text("")
    assert main(["--debug", "train", str(tmp_path / "empty.yaml")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("error: ")
