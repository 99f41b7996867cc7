"""Bad inputs to ``actionpp train | evaluate | notebook run | replicate | lab | centers | demo``: one table.

Each case builds its bad input in ``tmp_path`` from sources made once for the module (a 5-patient
ACDC phantom, a 2-case LA phantom, a 2-iteration supervised checkpoint, a tiny notebook and grid,
two tiny lab notebooks with a solution each), runs the console entry in-process and expects an exit
code and a fragment of stderr (the CLI's one-line ``error: ...``, never a traceback). A second test
snapshots every entry under ``tmp_path`` before and after each failing case: a refused command
(exit 2, "nothing was started") leaves its inputs byte-for-byte unchanged and writes nothing at all,
a failed one (exit 1) changes or deletes nothing it did not write. Exit codes (actionpp/cli.py): 1
the data or a run failed, 2 bad usage or configuration, or a path the command may not write
(the ownership rule of actionpp/atomic.py). Issue 16's cases are the rows after the first block.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import pytest
import yaml
from fixtures_data import tree_snapshot

from actionpp.cli import main

SMOKE = ["--set", "runtime.device=cpu", "--set", "train.finetune_iters=2", "--set", "data.labelled=1",
         "--set", "method.name=supervised", "--no-progress"]


def _lab_notebook(name: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell(f"# {name}"),
        nbformat.v4.new_code_cell("def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION",
                                  metadata={"tags": ["solution"]}),
    ]
    return nb


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
        nbformat.v4.new_code_cell('SEED: int = 0  # seed\nOUT_DIR: str = "out"  # where metrics.json goes\n'
                                  "DICE: float = 0.5  # the Dice it reports", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(
            "from actionpp.notebook import write_metrics\n"
            "one = {'RV': DICE}\n"
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
    lab = base / "lab"
    lab.mkdir()
    for name in ("01_ex", "02_ex"):
        nbformat.write(_lab_notebook(name), lab / f"{name}.ipynb")
    return {"acdc": acdc, "la": la, "run": run, "grid": grid_dir, "lab": lab}


class Env:
    """Copies of the module's sources in one test's ``tmp_path``, made on first use; ``keep`` holds what a
    case must keep alive while the command runs (an open lock), ``monkeypatch`` the test's."""

    def __init__(self, tmp: Path, src: dict[str, Path], monkeypatch: pytest.MonkeyPatch | None = None) -> None:
        self.tmp, self.src, self.monkeypatch = tmp, src, monkeypatch
        self.keep: list[Any] = []

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
    check: Callable[[Env], None] | None = None  # what must hold afterwards (leftovers)
    inputs_unchanged: bool = True  # False: the case rewrites files of the command's own (the tables)


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
    Case("replicate-empty-metrics", _broken_metrics("{}"), 1, "left out of the tables", inputs_unchanged=False),
    Case("replicate-truncated-metrics", _broken_metrics('{"dataset": "acdc", "dice": {"R'), 1, "not valid JSON",
         inputs_unchanged=False),
]




# ----------------------------------------------------------------------------- issue 16: who owns what


def _train_into(e: Env, name: str, content: str | bytes) -> list[str]:
    """A run folder holding the user's own file ``name`` (notes, a log, a record of their own)."""
    d = e.tmp / "mine"
    d.mkdir()
    (d / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    return ["train", "phantom_smoke", "--set", f"data.root={e.get('acdc')}", "--run-dir", str(d), *SMOKE]


def _unfinished_run(e: Env) -> Path:
    """The module's run as a killed attempt left it: everything but metrics.json (resumable with --resume)."""
    run = e.get("run")
    (run / "metrics.json").unlink()
    return run


def _resume_argv(e: Env, run: Path) -> list[str]:
    """Resume the module's run with its own config (its data.root is the source dataset)."""
    return ["train", "phantom_smoke", "--set", f"data.root={e.src['acdc']}", "--run-dir", str(run), *SMOKE,
            "--resume"]


def _train_locked(e: Env) -> list[str]:
    """Another process trains in the run folder: it holds the folder's flock (here: this process, through
    another open file, which the kernel treats the same)."""
    import fcntl

    run = _unfinished_run(e)
    fh = open(run / ".lock", "a")  # noqa: SIM115 - kept open while the command runs
    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    e.keep.append(fh)
    return _resume_argv(e, run)


def _train_truncated_metrics(e: Env) -> list[str]:
    run = e.get("run")
    text = (run / "metrics.json").read_text()
    (run / "metrics.json").write_text(text[: len(text) // 2])
    return ["train", "phantom_smoke", "--set", f"data.root={e.src['acdc']}", "--run-dir", str(run), *SMOKE]


def _train_log_not_utf8(e: Env) -> list[str]:
    run = _unfinished_run(e)
    with open(run / "log.jsonl", "ab") as fh:
        fh.write(b'{"kind": "note", "iteration": 1, "text": "caf\xe9"}\n')
    return _resume_argv(e, run)


def _train_disk_full(e: Env) -> list[str]:
    import errno

    import torch

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    assert e.monkeypatch is not None
    e.monkeypatch.setattr(torch, "save", full)
    return ["train", "phantom_smoke", "--set", f"data.root={e.get('acdc')}", "--run-dir", str(e.tmp / "r"), *SMOKE]


def _orphaned_temp(e: Env) -> list[str]:
    run = _unfinished_run(e)
    (run / ".last.pt.k3j9x2qa.tmp").write_bytes(b"\0" * 4096)  # what a kill inside save_checkpoint leaves
    return _resume_argv(e, run)


def _no_orphaned_temp(e: Env) -> None:
    left = sorted(p.name for p in (e.tmp / "run").glob(".*.tmp"))
    assert not left, f"temporary files left in the run folder: {left}"


def _killed_in_final_best_write(e: Env) -> list[str]:
    """Killed while the final best.pt was written: the final validation is logged, metrics.json is not."""
    return _resume_argv(e, _unfinished_run(e))


def _one_final_validation(e: Env) -> None:
    lines = [json.loads(x) for x in (e.tmp / "run" / "log.jsonl").read_text().splitlines()]
    last = max(x["iteration"] for x in lines)
    vals = [x for x in lines if x["kind"] == "val" and x["iteration"] == last]
    assert len(vals) == 1, f"{len(vals)} validation lines at the last iteration {last}"
    assert (e.tmp / "run" / "metrics.json").is_file()


def _labelled_too_many(e: Env) -> list[str]:
    return ["train", "phantom_smoke", "--set", f"data.root={e.get('acdc')}", "--run-dir", str(e.tmp / "r"),
            *SMOKE, "--set", "data.labelled=50"]


def _config_file(text: str) -> Callable[[Env], list[str]]:
    def build(e: Env) -> list[str]:
        (e.tmp / "cfg.yaml").write_text(text)
        return ["train", str(e.tmp / "cfg.yaml"), "--print-config"]

    return build


_BOMB = "base: phantom_smoke\nx: &a [lol, lol, lol]\ny: &b [*a, *a, *a]\ndata:\n  root: [*b, *b, *b]\n"
_DEEP = "base: phantom_smoke\ndata:\n  root: " + "[" * 3000 + "]" * 3000 + "\n"
_HUGE_INT = "base: phantom_smoke\ntrain:\n  lr: " + "9" * 5000 + "\n"
_LARGE = "base: phantom_smoke\n" + "# a long comment line that pads the file ....................\n" * 5000


def _notebook_out(make: Callable[[Env, Path], None], *extra: str) -> Callable[[Env], list[str]]:
    def build(e: Env) -> list[str]:
        out = e.tmp / "o.ipynb"
        make(e, out)
        return ["notebook", "run", str(e.get("grid") / "tiny.ipynb"), "--out", str(out), *_tmp_out_dir(e), *extra]

    return build


def _tmp_out_dir(e: Env) -> list[str]:
    """The tiny notebook's OUT_DIR inside the test's folder (its default, "out", is relative to the cwd)."""
    return ["-p", f"OUT_DIR={e.tmp / 'nb_out'}"]


def _user_file(e: Env, out: Path) -> None:
    out.write_text("my notes, not a notebook\n")


def _stored_notebook(e: Env, out: Path) -> None:
    shutil.copy2(e.get("lab") / "01_ex.ipynb", out)  # a stored notebook (no papermill metadata)


def _executed_before(e: Env, out: Path) -> None:
    assert main(["notebook", "run", str(e.get("grid") / "tiny.ipynb"), "--out", str(out), *_tmp_out_dir(e)]) == 0


def _html_of_mine(e: Env, out: Path) -> None:
    out.with_suffix(".html").write_text("<html><body>my page</body></html>\n")


def _lab_export(e: Env, *extra: str, edit: bool = False) -> list[str]:
    student = e.tmp / "student"
    nb = e.get("lab") / "01_ex.ipynb"
    assert main(["lab", "export", "--student", str(student), str(nb)]) == 0
    if edit:  # the student's answer
        path = student / "01_ex.ipynb"
        path.write_text(path.read_text().replace("your answer here", "my answer: return 1"))
    return ["lab", "export", "--student", str(student), str(nb), *extra]


def _lab_into_solutions(e: Env) -> list[str]:
    solutions = e.get("lab")  # a folder of solution notebooks
    (e.tmp / "src").mkdir()
    shutil.copy2(solutions / "01_ex.ipynb", e.tmp / "src" / "01_ex.ipynb")
    return ["lab", "export", "--student", str(solutions), str(e.tmp / "src" / "01_ex.ipynb")]


def _lab_multi_partial(e: Env) -> list[str]:
    lab = e.get("lab")
    (e.tmp / "src").mkdir()
    shutil.copy2(lab / "01_ex.ipynb", e.tmp / "src" / "01_ex.ipynb")
    return ["lab", "export", "--student", str(lab), str(e.tmp / "src" / "01_ex.ipynb"), str(lab / "02_ex.ipynb")]


def _finished_grid(e: Env) -> Path:
    out = e.tmp / "out"
    assert main(["replicate", str(e.get("grid") / "grid.yaml"), "--out", str(out)]) == 0
    return out


def _publish_into_dataset(e: Env) -> list[str]:
    ds = e.get("acdc")
    (ds / "README.md").write_text("# ACDC\n\nLicence: research use only; cite the challenge paper.\n")
    return ["replicate", str(e.get("grid") / "grid.yaml"), "--out", str(e.tmp / "out"), "--publish", str(ds)]


def _report_only_foreign_out(e: Env) -> list[str]:
    mine = e.tmp / "mine"
    mine.mkdir()
    (mine / "results.csv").write_text("my,own,table\n1,2,3\n")
    return ["replicate", str(e.get("grid") / "grid.yaml"), "--out", str(mine), "--report-only"]


def _docs_into(name: str, text: str) -> Callable[[Env], list[str]]:
    def build(e: Env) -> list[str]:
        out = _finished_grid(e)
        docs = e.tmp / name
        docs.write_text(text)
        return ["replicate", str(e.get("grid") / "grid.yaml"), "--out", str(out), "--report-only",
                "--publish", str(e.tmp / "pub"), "--docs", str(docs)]

    return build


def _publish_equals_out(e: Env) -> list[str]:
    out = _finished_grid(e)
    return ["replicate", str(e.get("grid") / "grid.yaml"), "--out", str(out), "--report-only", "--publish", str(out)]


def _stale_grid(e: Env) -> list[str]:
    g = e.get("grid")
    grid = g / "dice.yaml"
    grid.write_text(yaml.safe_dump({"name": "dice", "notebooks": ["tiny"], "parameters": {"DICE": 0.5},
                                    "axes": {"SEED": [0]}}))
    out = e.tmp / "out"
    assert main(["replicate", str(grid), "--out", str(out)]) == 0
    grid.write_text(yaml.safe_dump({"name": "dice", "notebooks": ["tiny"], "parameters": {"DICE": 0.9},
                                    "axes": {"SEED": [0]}}))  # edited since: the finished run is stale
    return ["replicate", str(grid), "--out", str(out), "--report-only"]


def _nothing_at(path: Path) -> None:
    assert not path.exists(), f"{path} was created by a refused command"


def _restore_then_bad_publish(e: Env) -> list[str]:
    out = _finished_grid(e)
    pub = e.tmp / "pub"
    assert main(["replicate", str(e.get("grid") / "grid.yaml"), "--out", str(out), "--report-only", "--publish",
                 str(pub)]) == 0
    return ["replicate", str(e.get("grid") / "grid.yaml"), "--out", str(e.tmp / "new"), "--restore-from", str(pub),
            "--report-only", "--publish", str(e.get("acdc"))]


def _restore_from_grid_folder(e: Env) -> list[str]:
    out = _finished_grid(e)  # the grid folder itself, not the folder it was published to
    return ["replicate", str(e.get("grid") / "grid.yaml"), "--out", str(e.tmp / "new"), "--restore-from", str(out)]


def _grid_file(axes: dict[str, list[Any]], *extra: str) -> Callable[[Env], list[str]]:
    def build(e: Env) -> list[str]:
        g = e.get("grid")
        (g / "bad.yaml").write_text(yaml.safe_dump({"name": "bad", "notebooks": ["tiny"], "axes": axes}))
        return ["replicate", str(g / "bad.yaml"), "--out", str(e.tmp / "out"), *extra]

    return build


def _val_frame(e: Env) -> str:
    return (e.get("acdc") / "val.list").read_text().split()[0]


def _predictions_of_mine(e: Env) -> list[str]:
    pred = e.tmp / "pred"
    pred.mkdir()
    (pred / f"{_val_frame(e)}_pred.nii.gz").write_bytes(b"my own segmentation, drawn by hand")
    return ["evaluate", str(e.get("run")), "--data", str(e.get("acdc")), "--device", "cpu",
            "--save-predictions", str(pred)]


def _predictions_again(e: Env) -> list[str]:
    argv = ["evaluate", str(e.get("run")), "--data", str(e.get("acdc")), "--device", "cpu",
            "--save-predictions", str(e.tmp / "pred")]
    assert main(argv) == 0
    return argv


def _val_list_duplicate(e: Env) -> list[str]:
    ds = e.get("acdc")
    lines = (ds / "val.list").read_text().splitlines()
    (ds / "val.list").write_text("\n".join(lines + lines[:1]) + "\n")
    return ["evaluate", str(e.get("run")), "--data", str(ds), "--device", "cpu"]


def _best_removed(e: Env) -> list[str]:
    run = e.get("run")
    (run / "best.pt").unlink()
    return ["evaluate", str(run), "--data", str(e.get("acdc")), "--device", "cpu", "--which", "best"]


def _centres_file(content: bytes | None) -> Callable[[Env], list[str]]:
    def build(e: Env) -> list[str]:
        argv = ["centers", "--classes", "4", "--dim", "8", "--method", "simplex", "--out", str(e.tmp / "c.npz")]
        if content is None:
            assert main(argv) == 0  # a centres file of an earlier run
        else:
            (e.tmp / "c.npz").write_bytes(content)
        return argv

    return build


def _demo_into(e: Env, *extra: str) -> list[str]:
    out = e.tmp / "notes"
    out.mkdir()
    (out / "summary.md").write_text("# my summary of the course\n")
    return ["demo", "--profile", "smoke", "--only", "00", "--no-html", "--out", str(out), *extra]


ISSUE_16 = [
    # 1. train --run-dir: a folder holding the user's own files is refused, not written into
    Case("train-run-dir-user-config", lambda e: _train_into(e, "config.yaml", "my: notes\n"), 2,
         "mine: refusing to write into this folder: actionpp train did not create it"),
    # a user's own copy of a profile (every key a config section) is still the user's: no run.json / metrics.json
    Case("train-run-dir-user-profile-copy",
         lambda e: _train_into(e, "config.yaml", "train:\n  iterations: 8\nruntime:\n  seed: 3\n"), 2,
         "mine: refusing to write into this folder: actionpp train did not create it"),
    Case("train-run-dir-user-log", lambda e: _train_into(e, "log.jsonl", "day 1: started the lab\n"), 2,
         "mine: refusing to write into this folder"),
    Case("train-run-dir-user-run-json", lambda e: _train_into(e, "run.json", '{"experiment": "mine"}\n'), 2,
         "(run.json); choose a new or empty folder"),
    Case("train-run-dir-other-command", lambda e: _train_into(e, ".actionpp-publish.json", "{}"), 2,
         "it was written by actionpp publish, not by actionpp train"),
    # 2. notebook run --out: only an executed notebook is replaced, and only with --overwrite
    Case("notebook-out-user-file", _notebook_out(_user_file), 2,
         "o.ipynb: refusing to replace this file: it is not a notebook executed by actionpp"),
    Case("notebook-out-stored-notebook", _notebook_out(_stored_notebook), 2, "refusing to replace this file"),
    Case("notebook-out-executed-no-overwrite", _notebook_out(_executed_before), 2,
         "o.ipynb: exists, a notebook executed by actionpp (papermill's metadata) (pass --overwrite"),
    Case("notebook-html-user-file", _notebook_out(_html_of_mine, "--html", "--overwrite"), 2,
         "o.html: refusing to replace this file: it is not the HTML page of an executed notebook"),
    # 3. lab export: the student's work and solution notebooks are never replaced; nothing before a refusal
    Case("lab-export-again", lambda e: _lab_export(e), 2, "01_ex.ipynb: exists, a file an earlier export wrote"),
    Case("lab-export-edited-by-student", lambda e: _lab_export(e, "--overwrite", edit=True), 2,
         "student/01_ex.ipynb: refusing to replace this file: it is not a file an earlier export wrote and "
         "nobody edited since"),
    Case("lab-export-into-solutions", _lab_into_solutions, 2, "lab: refusing to write into this folder"),
    Case("lab-export-multi-refused-before-writing", _lab_multi_partial, 2, "02_ex.ipynb would overwrite it"),
    # 4. replicate --publish / --report-only / --docs
    Case("replicate-publish-into-dataset", _publish_into_dataset, 2,
         "acdc: refusing to write into this folder: actionpp publish did not create it"),
    Case("replicate-report-only-foreign-out", _report_only_foreign_out, 2,
         "mine: refusing to write into this folder: actionpp replicate did not create it"),
    Case("replicate-docs-any-file", _docs_into("val.list", "patient001_frame01\n"), 2,
         "val.list: --docs rewrites a section of a Markdown file (.md)"),
    Case("replicate-docs-markdown-of-mine", _docs_into("notes.md", "# my notes\n"), 2,
         "notes.md: holds no section written by actionpp replicate --publish"),
    Case("replicate-docs-broken-markers", _docs_into("r.md", "<!-- grid:tiny:start -->\nmine\n"), 2,
         "the markers <!-- grid:tiny:start --> / <!-- grid:tiny:end --> are broken"),
    Case("replicate-publish-equals-out", _publish_equals_out, 2, "the publish folder is the grid folder"),
    Case("replicate-docs-without-publish", lambda e: ["replicate", str(e.get("grid") / "grid.yaml"), "--out",
                                                      str(e.tmp / "out"), "--docs", str(e.tmp / "r.md")], 2,
         "--docs writes the grid's section from the published folder: it needs --publish"),
    Case("replicate-restore-from-grid-folder", _restore_from_grid_folder, 2,
         "out: not a folder written by actionpp replicate --publish (it has no publish marker)",
         check=lambda e: _nothing_at(e.tmp / "new")),
    Case("replicate-restore-then-refused-publish", _restore_then_bad_publish, 2,
         "acdc: refusing to write into this folder: actionpp publish did not create it",
         check=lambda e: _nothing_at(e.tmp / "new")),
    Case("replicate-restore-from-with-slurm", lambda e: ["replicate", str(e.get("grid") / "grid.yaml"), "--out",
                                                         str(e.tmp / "out"), "--restore-from", str(e.tmp / "pub"),
                                                         "--slurm"], 2,
         "--restore-from copies runs on this machine: restore first"),
    # 5. evaluate --save-predictions, centers --out (data pack --overwrite: tests/test_bad_inputs_data.py)
    Case("evaluate-save-predictions-of-mine", _predictions_of_mine, 2, "pred: refusing to write into this folder"),
    Case("evaluate-save-predictions-again", _predictions_again, 2,
         "_pred.nii.gz: exists, a prediction written by actionpp evaluate (pass --overwrite"),
    Case("centers-out-user-file", _centres_file(b"my own embedding matrix"), 2,
         "c.npz: refusing to replace this file: it is not a centres file"),
    Case("centers-out-again", _centres_file(None), 2, "c.npz: exists, a centres file (actionpp centers --out) "
         "(pass --overwrite"),
    Case("demo-out-folder-of-mine", _demo_into, 2, "notes: refusing to write into this folder: actionpp demo"),
    # 6. the tables agree with --dry-run: a run finished with other parameters is left out
    Case("replicate-report-only-stale", _stale_grid, 1, "finished with other parameters than the grid's (stale",
         inputs_unchanged=False),
    # 7. one process per run folder
    Case("train-run-folder-locked", _train_locked, 2, "another process is training in this run folder"),
    # 8. lists: a repeated entry is never scored twice
    Case("evaluate-val-list-duplicate", _val_list_duplicate, 1, "val.list:3: entry"),
    # 9. every numeric setting in range, named by key; YAML in bounded time and memory
    Case("train-seed-negative", lambda e: ["train", "phantom_smoke", "--set", "runtime.seed=-1", "--print-config"],
         2, "runtime.seed: must be in [0, 4294967295], got -1"),
    Case("train-proj-dim-zero", lambda e: ["train", "phantom_smoke", "--set", "model.proj_dim=0", "--print-config"],
         2, "model.proj_dim: must be >= 1, got 0"),
    Case("train-val-max-volumes-zero", lambda e: ["train", "phantom_smoke", "--set", "data.val_max_volumes=0",
                                                  "--print-config"], 2, "data.val_max_volumes: must be >= 1"),
    Case("train-lr-infinite", lambda e: ["train", "phantom_smoke", "--set", "train.lr=.inf", "--print-config"], 2,
         "train.lr: must be a finite number"),
    Case("train-labelled-more-than-the-data", _labelled_too_many, 2, "data.labelled: asked for 50 labelled"),
    Case("config-yaml-aliases", _config_file(_BOMB), 2, "YAML aliases (*name) are not allowed"),
    Case("config-yaml-deep", _config_file(_DEEP), 2, "nested deeper than 32 levels"),
    Case("config-yaml-huge-int", _config_file(_HUGE_INT), 2, "invalid YAML value"),
    Case("config-file-too-large", _config_file(_LARGE), 2, "larger than 256 KiB"),
    # 10. exit codes: usage and configuration are 2, nothing started; failures name their file
    Case("evaluate-split-bogus", lambda e: ["evaluate", str(e.get("run")), "--data", str(e.get("acdc")),
                                            "--split", "bogus"], 2, "invalid choice: 'bogus'"),
    Case("notebook-p-malformed", lambda e: ["notebook", "run", str(e.get("grid") / "tiny.ipynb"), "-p", "SEED=[1",
                                            "--out", str(e.tmp / "o.ipynb")], 2, "-p SEED: invalid YAML"),
    Case("replicate-axis-typo", _grid_file({"SEEED": [0]}), 2, "unknown parameter(s) ['SEEED']"),
    Case("replicate-axis-typo-dry-run", _grid_file({"SEEED": [0]}, "--dry-run"), 2, "unknown parameter(s)"),
    Case("replicate-axis-mistyped", _grid_file({"SEED": ["x"]}), 2, "run seed=x: "),
    Case("demo-profile-bogus", lambda e: ["demo", "--profile", "bogus", "--only", "00", "--no-html", "--out",
                                          str(e.tmp / "demo")], 2, "--profile 'bogus': no such parameter profile"),
    Case("train-truncated-metrics", _train_truncated_metrics, 1,
         "run/metrics.json: the run's summary is damaged: not valid JSON"),
    Case("train-log-not-utf8", _train_log_not_utf8, 1, "run/log.jsonl:"),
    Case("train-disk-full-in-checkpoint", _train_disk_full, 1,
         "r/last.pt: cannot be written (No space left on device)"),
    Case("evaluate-which-best-missing", _best_removed, 2,
         "holds no best.pt although the run validates on its val split"),
    # 11. leftovers of a killed attempt
    Case("train-resume-removes-orphaned-temp", _orphaned_temp, 0, "", check=_no_orphaned_temp),
    Case("train-resume-after-kill-in-final-best-write", _killed_in_final_best_write, 0, "",
         check=_one_final_validation),
]


CASES += ISSUE_16


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse usage errors
        rc = exc.code if isinstance(exc.code, int) else 2
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_exit_code_and_one_line_message(case: Case, tmp_path: Path, sources, capsys, monkeypatch) -> None:
    e = Env(tmp_path, sources, monkeypatch)
    argv = case.build(e)
    rc, err = _run(argv, capsys)
    assert rc == case.code, err
    assert case.message in err, err
    for word in case.forbidden:
        assert word not in err, err
    if case.code != 0:
        error_lines = [line for line in err.splitlines() if line.startswith(("error: ", "actionpp: error: ",
                                                                              "usage: "))]
        assert error_lines or "left out of the tables" in err, err
    if case.check is not None:
        case.check(e)


FAILING = [c for c in CASES if c.code != 0 and c.inputs_unchanged]


@pytest.mark.parametrize("case", FAILING, ids=[c.id for c in FAILING])
def test_failing_command_leaves_its_inputs_unchanged(case: Case, tmp_path: Path, sources, capsys,
                                                     monkeypatch) -> None:
    """Exit 2 (refused, nothing started): nothing changed, deleted or added. Exit 1 (a failed run or bad data):
    nothing changed or deleted that the command did not write (a failed training keeps its run folder)."""
    e = Env(tmp_path, sources, monkeypatch)  # kept alive: it may hold what the case keeps open (a lock)
    argv = case.build(e)
    before = tree_snapshot(tmp_path)
    _run(argv, capsys)
    after = tree_snapshot(tmp_path)
    changed = sorted(k for k in before if after.get(k) != before[k])
    assert not changed, f"{case.id} changed or deleted {changed}"
    if case.code == 2:
        added = sorted(set(after) - set(before))
        assert not added, f"{case.id} was refused but wrote {added}"


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


def test_a_lost_grid_folder_is_restored_from_its_publish_and_nothing_trains_again(tmp_path: Path, sources,
                                                                                  capsys) -> None:
    """replicate --restore-from: the finished run comes back from the published folder into a new grid folder,
    where --dry-run calls it done and a run of the grid trains nothing; a second restore copies nothing."""
    g = Env(tmp_path, sources).get("grid")
    grid, out, pub, new = str(g / "grid.yaml"), tmp_path / "out", tmp_path / "pub", tmp_path / "new"
    assert main(["replicate", grid, "--out", str(out), "--publish", str(pub)]) == 0
    capsys.readouterr()
    assert main(["replicate", grid, "--out", str(new), "--restore-from", str(pub), "--dry-run"]) == 0
    assert "would restore 1 finished runs" in capsys.readouterr().out and not new.exists()
    assert main(["replicate", grid, "--out", str(new), "--restore-from", str(pub)]) == 0
    said = capsys.readouterr().out
    assert "restored 1 finished runs" in said and "seed=0: skipped" in said
    assert (new / "seed=0" / "restored.json").is_file()
    assert (new / "seed=0" / "metrics.json").read_bytes() == (out / "seed=0" / "metrics.json").read_bytes()
    assert main(["replicate", grid, "--out", str(new), "--restore-from", str(pub), "--report-only"]) == 0
    assert "restored 0 finished runs" in capsys.readouterr().out
    # run again (--force): the restored copy is set aside, the run executes from nothing and is not a restored one
    assert main(["replicate", grid, "--out", str(new), "--force"]) == 0
    assert "restored from a publish (no checkpoint); moved to" in capsys.readouterr().err
    assert (new / ".restored" / "seed=0" / "restored.json").is_file()
    assert (new / "seed=0" / "done").is_file() and not (new / "seed=0" / "restored.json").exists()


def test_debug_flag_prints_the_traceback(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty.yaml").write_text("")
    assert main(["--debug", "train", str(tmp_path / "empty.yaml")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("error: ")
