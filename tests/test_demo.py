"""`actionpp demo`: notebook selection, going on past a failed notebook, the summary.

Runs throwaway notebooks built with nbformat (one writes metrics, one raises), so no training.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from actionpp.commands import demo


def _nb(folder: Path, stem: str, body: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell(f"# {stem}"),
        nbformat.v4.new_code_cell(
            'SEED: int = 0  # seed\nOUT_DIR: str = "out"  # where', metadata={"tags": ["parameters"]}
        ),
        nbformat.v4.new_code_cell(body),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = folder / f"{stem}.ipynb"
    nbformat.write(nb, path)
    return path


def test_select_notebooks_by_number_or_stem(tmp_path: Path) -> None:
    for stem in ("00_a", "01_b", "04_train", "10_c"):
        (tmp_path / f"{stem}.ipynb").write_text("{}")
    (tmp_path / "notes.ipynb").write_text("{}")
    names = lambda ps: [p.stem for p in ps]  # noqa: E731
    assert names(demo.select_notebooks(tmp_path, None)) == ["00_a", "01_b", "04_train", "10_c"]
    assert names(demo.select_notebooks(tmp_path, "4,0")) == ["00_a", "04_train"]
    assert names(demo.select_notebooks(tmp_path, "01_b, 10")) == ["01_b", "10_c"]
    with pytest.raises(ValueError, match="'07'"):
        demo.select_notebooks(tmp_path, "07")


def test_sequence_goes_on_past_a_failure_and_reports_it(tmp_path: Path) -> None:
    src = tmp_path / "nbs"
    src.mkdir()
    # plain json, no library import: the cell must finish well inside the short cell timeout
    # even on a loaded CI machine (the timeout is there to stop the hanging notebook below)
    ok = (
        "import json, os\nos.makedirs(OUT_DIR, exist_ok=True)\n"
        'json.dump({"score": 0.25, "seconds": 1.0}, open(os.path.join(OUT_DIR, "metrics.json"), "w"))'
    )
    nbs = [
        _nb(src, "00_first", ok),
        _nb(src, "01_broken", 'raise ValueError("broken on purpose")'),
        _nb(src, "02_last", ok),
        _nb(src, "03_hangs", "import time\ntime.sleep(60)"),
    ]
    out = tmp_path / "demo"
    rows = demo.run_sequence(nbs, out, profile="lab", html=True, log=lambda m: None, cell_timeout=5)
    assert [r["status"] for r in rows] == ["ok", "FAILED", "ok", "FAILED"]
    assert "Timeout" in rows[3]["error"], rows[3]["error"]  # the cell timeout stopped the hung notebook
    assert rows[0]["metrics"] == {"score": 0.25}  # generic key metrics leave out "seconds"
    assert "broken on purpose" in rows[1]["error"]
    for stem in ("00_first", "01_broken", "02_last"):
        assert (out / f"{stem}.ipynb").is_file() and (out / f"{stem}.html").is_file()
    assert (out / "02_last" / "metrics.json").is_file()
    md = demo.summary_markdown(rows, "lab", 3.0, out)
    assert "| 01_broken | FAILED |" in md and "score=0.25" in md


def test_key_metrics_of_the_training_notebook() -> None:
    m = {"method": "actionpp", "dice_mean": 0.8, "asd_mean": 1.5, "train_seconds": 10.0, "dice": {"RV": 0.7}}
    assert demo.key_metrics("04_train", m) == {
        "method": "actionpp",
        "dice_mean": 0.8,
        "asd_mean": 1.5,
        "train_seconds": 10.0,
    }
    emb = {"map": "pca", "runs": {"actionpp": {"tail": "RV", "per_class": {"RV": {"accuracy": 0.9}}}}}
    assert demo.key_metrics("05_embeddings", emb) == {"map": "pca", "actionpp tail acc": 0.9}


def test_embeddings_notebook_trains_its_own_comparison_not_the_run_of_04(tmp_path: Path) -> None:
    """05 compares methods over seeds (issue 12): the demo no longer hands it 04's single run."""
    src = tmp_path / "nbs"
    src.mkdir()
    write = (
        "import json, os\nos.makedirs(OUT_DIR, exist_ok=True)\n"
        'json.dump({{"seen": {0}}}, open(os.path.join(OUT_DIR, "metrics.json"), "w"))'
    )
    nbs = [_nb(src, "04_train", write.format("1"))]
    nb05 = _nb(src, "05_embeddings", write.format("RUN_DIRS"))
    import nbformat as nbf

    nb = nbf.read(nb05, as_version=4)
    nb.cells[1].source += "\nRUN_DIRS: list[str] = []  # runs to read"
    nbf.write(nb, nb05)
    out = tmp_path / "demo"
    rows = demo.run_sequence([*nbs, nb05], out, profile="lab", html=False, log=lambda m: None)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert json.loads((out / "05_embeddings" / "metrics.json").read_text())["seen"] == []


def test_background_runs_are_the_plan_of_05_and_only_when_04_runs_first(tmp_path: Path, monkeypatch) -> None:
    from actionpp.lab import runs as R
    from actionpp.paths import repo_root

    started: list = []
    monkeypatch.setattr(R, "start_background", lambda plan: started.append(plan) or None)
    nbs = [repo_root() / "notebooks" / f"{s}.ipynb" for s in ("04_train", "05_embeddings")]
    assert demo.background_runs(nbs, tmp_path, "smoke", log=lambda m: None) is None
    (plan,) = started
    # the smoke profile of 05: two methods x two seeds, in 05's own OUT_DIR/runs
    assert [(r.method, r.seed) for r in plan] == [(m, s) for m in ("supervised", "actionpp") for s in (0, 1)]
    assert all(r.run_dir.parent == tmp_path / "05_embeddings" / "runs" for r in plan)
    same = R.comparison_plan(["supervised", "actionpp"], [0, 1], "phantom_smoke", tmp_path / "05_embeddings" / "runs",
                             32, 2, 4, [], "cpu")
    assert [r.config.hash() for r in plan] == [r.config.hash() for r in same]  # 05 finds them finished
    started.clear()
    assert demo.background_runs(nbs[1:], tmp_path, "smoke", log=lambda m: None) is None  # nothing to overlap
    assert started == []
