"""The ownership rule (actionpp/atomic.py, issue 16): a command writes only into files and folders it
created, replaces one of its own only when asked, and refuses anything else before the first byte.

The helpers' table first (what is allowed, what is refused and what the message names), then the cases
where a command must keep working on what it (or an earlier version of it) wrote: a run folder written
before markers existed resumes, a grid folder and a published folder of an earlier version are
recognised, and each --overwrite replaces what the command wrote. The refusals themselves are rows of
tests/test_bad_inputs_*.py.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest
import yaml

from actionpp.atomic import (
    OwnershipError,
    check_file,
    check_folder,
    claim_folder,
    marker_path,
    record_files,
    remove_stale_temporaries,
    written_unchanged,
)
from actionpp.cli import main

# ----------------------------------------------------------------------------- the helpers


def _nothing(d: Path) -> None:
    pass


def _empty(d: Path) -> None:
    d.mkdir()


def _own(d: Path) -> None:
    claim_folder(d, "x")


def _other(d: Path) -> None:
    claim_folder(d, "y")


def _foreign(d: Path) -> None:
    d.mkdir()
    (d / "notes.txt").write_text("mine")


def _a_file(d: Path) -> None:
    d.write_text("a file")


def _legacy(d: Path) -> None:
    d.mkdir()
    (d / "old.x").write_text("written by x before markers existed")


FOLDERS: list[tuple[str, Callable[[Path], None], str | None]] = [
    ("missing", _nothing, None),
    ("empty", _empty, None),
    ("own-marker", _own, None),
    ("recognised-legacy", _legacy, None),
    ("other-command", _other, "it was written by actionpp y, not by actionpp x"),
    ("foreign", _foreign, "actionpp x did not create it (no .actionpp-x.json marker) and it holds files it did "
                          "not write (notes.txt)"),
    ("a-file", _a_file, "exists and is not a folder"),
]


@pytest.mark.parametrize("name, make, refusal", FOLDERS, ids=[f[0] for f in FOLDERS])
def test_folder_rule(tmp_path: Path, name: str, make: Callable[[Path], None], refusal: str | None) -> None:
    d = tmp_path / "d"
    make(d)

    def recognise(p: Path) -> bool:
        return (p / "old.x").is_file()

    if refusal is None:
        assert claim_folder(d, "x", recognise=recognise) == d
        assert json.loads(marker_path(d, "x").read_text())["written_by"] == "actionpp x"
    else:
        before = sorted(p.name for p in tmp_path.rglob("*"))
        with pytest.raises(OwnershipError) as exc:
            claim_folder(d, "x", recognise=recognise)
        assert str(exc.value).startswith(f"{d}: ") and refusal in str(exc.value), str(exc.value)
        assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written


def test_a_folder_of_the_same_command_can_still_be_refused_by_what_its_marker_says(tmp_path: Path) -> None:
    claim_folder(tmp_path / "pub", "publish", info={"grid": "a"})
    with pytest.raises(OwnershipError, match="holds grid a"):
        check_folder(tmp_path / "pub", "publish",
                     same=lambda m: None if m.get("grid") == "b" else f"holds grid {m.get('grid')}")


def test_file_rule_and_the_manifest(tmp_path: Path) -> None:
    claim_folder(tmp_path, "x")
    f = tmp_path / "out.txt"
    check_file(f, overwrite=False, ours=lambda p: False, what="an x file")  # new: fine
    f.write_text("written by x")
    record_files(tmp_path, "x", [f])

    def ours(p: Path) -> bool:
        return written_unchanged(tmp_path, "x", p)

    with pytest.raises(OwnershipError, match=r"out.txt: exists, an x file \(pass --overwrite to replace it\)"):
        check_file(f, overwrite=False, ours=ours, what="an x file")
    check_file(f, overwrite=True, ours=ours, what="an x file")  # its own, asked: fine
    f.write_text("edited by the user since")
    with pytest.raises(OwnershipError, match="out.txt: refusing to replace this file: it is not an x file"):
        check_file(f, overwrite=True, ours=ours, what="an x file")
    (tmp_path / "sub").mkdir()
    with pytest.raises(OwnershipError, match="sub: is a folder, not an x file"):
        check_file(tmp_path / "sub", overwrite=True, ours=ours, what="an x file")
    (tmp_path / "link").symlink_to(f)
    with pytest.raises(OwnershipError, match="link: is a symbolic link"):
        check_file(tmp_path / "link", overwrite=True, ours=lambda p: True, what="an x file")


def test_only_the_named_targets_temporaries_are_removed(tmp_path: Path) -> None:
    for name in (".last.pt.ab12cd34.tmp", ".best.pt.zz99yy88.tmp", ".notes.txt.ab12cd34.tmp", "last.pt.tmp"):
        (tmp_path / name).write_bytes(b"x")
    gone = remove_stale_temporaries(tmp_path, ("last.pt", "best.pt"))
    assert sorted(p.name for p in gone) == [".best.pt.zz99yy88.tmp", ".last.pt.ab12cd34.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".notes.txt.ab12cd34.tmp", "last.pt.tmp"]


# ----------------------------------------------------------------------------- what a command keeps working on

SMOKE = ["--set", "runtime.device=cpu", "--set", "train.finetune_iters=2", "--set", "data.labelled=1",
         "--set", "method.name=supervised", "--no-progress"]


def test_a_run_folder_written_before_markers_resumes_and_gets_its_marker(phantom_acdc: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    argv = ["train", "phantom_smoke", "--set", f"data.root={phantom_acdc}", "--run-dir", str(run), *SMOKE]
    assert main(argv) == 0
    first = json.loads((run / "metrics.json").read_text())
    marker_path(run, "train").unlink()  # as today's engine leaves a run folder
    (run / ".lock").unlink()
    (run / "metrics.json").unlink()  # killed before the end: resumed from last.pt
    assert main([*argv, "--resume"]) == 0
    again = json.loads((run / "metrics.json").read_text())
    assert again["final"] == first["final"] and marker_path(run, "train").is_file()
    starts = json.loads((run / "run.json").read_text())["starts"]
    assert len(starts) == 2


def test_a_grid_folder_of_an_earlier_version_is_recognised_and_republished(tmp_path: Path, capsys) -> None:
    from actionpp import replicate as rp
    from actionpp.replicate.publish import OWNER as PUBLISH

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('SEED: int = 0  # seed\nOUT_DIR: str = "out"  # out',
                                          metadata={"tags": ["parameters"]})]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "t.ipynb")
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(yaml.safe_dump({"name": "t", "notebooks": ["t"], "axes": {"SEED": [0, 1]}}))
    grid = rp.load_grid(grid_file)
    out = tmp_path / "out"

    def executor(notebook: Path, output: Path, params: dict) -> None:
        output.write_text("{}")
        one = {"RV": 0.5}
        (Path(params["OUT_DIR"]) / "metrics.json").write_text(json.dumps({
            "dataset": "acdc", "seed": params["SEED"], "classes": ["RV"], "dice": one, "jaccard": one,
            "hd95": {"RV": 2.0}, "asd": {"RV": 1.0}, "protocol": {"split": "fake"}}))

    rp.run_grid(rp.expand(grid), out, executor=executor, log=None)  # the library: no marker, as before
    rp.write_results(out, rp.collect(out), title="t: results")
    pub = tmp_path / "results" / "t"
    argv = ["replicate", str(grid_file), "--out", str(out), "--report-only", "--publish", str(pub)]
    assert main(argv) == 0, capsys.readouterr().err
    assert marker_path(out, "replicate").is_file() and marker_path(pub, PUBLISH).is_file()
    assert main(argv) == 0  # re-publishing into its own folder
    # a published folder of an earlier version (its README, no marker) is this grid's: published again
    marker_path(pub, PUBLISH).unlink()
    assert main(argv) == 0 and marker_path(pub, PUBLISH).is_file()
    # another grid is never published into it
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"name": "u", "notebooks": ["t"], "axes": {"SEED": [0, 1]}}))
    capsys.readouterr()
    assert main(["replicate", str(other), "--out", str(out), "--report-only", "--publish", str(pub)]) == 2
    assert "holds the published results of grid 't', not 'u'" in capsys.readouterr().err
    # --docs: a new Markdown file, then its own section replaced and the rest kept
    docs = tmp_path / "results.md"
    assert main([*argv, "--docs", str(docs)]) == 0
    docs.write_text("# Results\n\nMy introduction.\n\n" + docs.read_text().split("\n", 3)[3])
    assert main([*argv, "--docs", str(docs)]) == 0
    text = docs.read_text()
    assert text.startswith("# Results\n\nMy introduction.") and text.count("<!-- grid:t:start -->") == 1


def test_each_overwrite_replaces_only_what_the_command_wrote(phantom_acdc: Path, tmp_path: Path, capsys) -> None:
    from actionpp.lab import export_student

    # lab export: an unchanged file of the earlier export is replaced with --overwrite
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION",
                                          metadata={"tags": ["solution"]})]
    nbformat.write(nb, tmp_path / "01_x.ipynb")
    student = tmp_path / "student"
    export_student([tmp_path / "01_x.ipynb"], student)
    written = (student / "01_x.ipynb").read_bytes()
    export_student([tmp_path / "01_x.ipynb"], student, overwrite=True)
    assert (student / "01_x.ipynb").read_bytes() == written
    # centers: its own centres file, asked
    out = tmp_path / "c.pt"
    argv = ["centers", "--classes", "4", "--dim", "8", "--method", "simplex", "--out", str(out)]
    assert main(argv) == 0 and main([*argv, "--overwrite"]) == 0
    # evaluate: its own predictions, asked
    run = tmp_path / "run"
    assert main(["train", "phantom_smoke", "--set", f"data.root={phantom_acdc}", "--run-dir", str(run), *SMOKE]) == 0
    ev = ["evaluate", str(run), "--data", str(phantom_acdc), "--device", "cpu", "--save-predictions",
          str(tmp_path / "pred")]
    assert main(ev) == 0 and main([*ev, "--overwrite"]) == 0
    listed = json.loads(marker_path(tmp_path / "pred", "evaluate").read_text())["files"]
    assert sorted(listed) == sorted(p.name for p in (tmp_path / "pred").glob("*_pred.nii.gz")) and listed
    # a run that does not validate has no best.pt: --which best says it scored last.pt
    shutil.copytree(run, tmp_path / "noval")
    (tmp_path / "noval" / "best.pt").unlink()
    cfg = yaml.safe_load((tmp_path / "noval" / "config.yaml").read_text())
    cfg["data"]["val_split"] = "none"
    (tmp_path / "noval" / "config.yaml").write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "noval"), "--data", str(phantom_acdc), "--device", "cpu",
                 "--which", "best"]) == 0
    assert "holds no best.pt (the run does not validate: data.val_split none); scored last.pt" in \
        capsys.readouterr().err


def test_notebook_run_replaces_its_own_executed_copy_when_asked(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("SEED: int = 0  # seed", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("x = SEED + 1")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "n.ipynb")
    out = tmp_path / "o.ipynb"
    argv = ["notebook", "run", str(tmp_path / "n.ipynb"), "--out", str(out), "--html"]
    assert main(argv) == 0
    assert main([*argv, "--overwrite", "-p", "SEED=2"]) == 0
    assert "'SEED': 2" in json.dumps(nbformat.read(out, as_version=4).metadata["papermill"]["parameters"]).replace(
        '"', "'")
