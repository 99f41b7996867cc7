"""How long a grid still needs (actionpp.replicate.eta): medians of its own finished runs, resumable progress."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
import yaml

from actionpp import replicate as rp
from actionpp.cli import main as cli_main
from actionpp.replicate.eta import estimate, run_kind, trained_fraction

PARAMS = '''METHOD: str = "supervised"
SEED: int = 0
OUT_DIR: str = "out"'''


def _grid(tmp_path: Path, axes: dict) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(PARAMS, metadata={"tags": ["parameters"]})]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "fake_train.ipynb")
    p = tmp_path / "grid.yaml"
    p.write_text(yaml.safe_dump({"name": "t", "notebooks": ["fake_train"], "axes": axes}, sort_keys=False))
    return p


def _finish(notebook: Path, output: Path, params: dict) -> None:
    """Stands in for papermill: a valid metrics.json, and the training loop's seconds (100 s x (seed + 1))."""
    output.write_text("{}")
    out = Path(params["OUT_DIR"])
    one = {"RV": 0.5}
    (out / "metrics.json").write_text(json.dumps({"dataset": "acdc", "classes": ["RV"], "dice": one, "jaccard": one,
                                                  "hd95": one, "asd": one, "protocol": {}}))
    seconds = {"supervised": 600.0, "action": 3000.0}[params["METHOD"]] * (params["SEED"] + 1)
    (out / "run").mkdir(exist_ok=True)
    (out / "run" / "metrics.json").write_text(json.dumps({"seconds": seconds}))


def _partial(rd: Path, pretrain: bool, log: list[tuple[str, int]], every: int = 500) -> None:
    (rd / "run").mkdir(parents=True, exist_ok=True)
    cfg = {"method": {"pretrain": pretrain, "finetune": True}, "train": {"pretrain_iters": 500, "finetune_iters": 2000},
           "runtime": {"checkpoint_every": every}}
    (rd / "run" / "config.yaml").write_text(yaml.safe_dump(cfg))
    (rd / "run" / "log.jsonl").write_text("".join(
        json.dumps({"kind": "train", "phase": p, "iteration": i}) + "\n" for p, i in log) + "not json\n")


def test_trained_fraction_counts_only_what_a_resume_keeps(tmp_path: Path) -> None:
    assert trained_fraction(tmp_path / "nothing") == 0.0
    # pre-training (500) finished, fine-tuning logged to 1200 of 2000, checkpoints every 500: (500 + 1000) / 2500
    _partial(tmp_path / "a", True, [("pretrain", 50), ("pretrain", 500), ("finetune", 1200)])
    assert trained_fraction(tmp_path / "a") == pytest.approx(0.6)
    # pre-training at 400: no checkpoint yet, a resume starts from 0
    _partial(tmp_path / "b", True, [("pretrain", 400)])
    assert trained_fraction(tmp_path / "b") == 0.0
    # no pre-training phase (mean teacher): 1000 of 2000
    _partial(tmp_path / "c", False, [("finetune", 1000)])
    assert trained_fraction(tmp_path / "c") == pytest.approx(0.5)
    # checkpoints only at phase ends: 1999 of the fine-tuning counts nothing
    _partial(tmp_path / "d", False, [("finetune", 1999)], every=0)
    assert trained_fraction(tmp_path / "d") == 0.0


def test_estimate_by_hand(tmp_path: Path) -> None:
    runs = rp.expand(rp.load_grid(_grid(tmp_path, {"METHOD": ["supervised", "action"], "SEED": [0, 1, 2]})))
    out = tmp_path / "out"
    by = {(r.parameters[0]["METHOD"], r.parameters[0]["SEED"]): r for r in runs}
    finished = [by["supervised", 0], by["supervised", 1], by["action", 0]]  # 600 s, 1200 s, 3000 s
    rp.run_grid(finished, out, executor=_finish, log=None)
    # ACTION seed 1 stopped at fine-tuning iteration 1200: 60 % behind a checkpoint
    _partial(by["action", 1].run_dir(out), True, [("pretrain", 500), ("finetune", 1200)])
    est = estimate(runs, out, jobs=2)
    assert (est.total, est.done, est.to_go, est.partial) == (6, 3, 3, 1)
    assert est.minutes == {"supervised": pytest.approx(15.0), "action": pytest.approx(50.0)}  # medians 900 s, 3000 s
    # supervised seed 2: 900 s; ACTION seed 1: 40 % of 3000 s; ACTION seed 2: 3000 s
    assert est.seconds == pytest.approx(900 + 1200 + 3000)
    text = est.text()
    assert text.startswith("estimate: 3 of 6 runs to go (1 partly trained): about 1.4 h of training")
    assert "supervised 15, action 50" in text and "at 2 at a time about 0.7 h of wall time" in text
    assert run_kind(by["action", 2]) == "action"


def test_estimate_names_runs_it_cannot_time(tmp_path: Path) -> None:
    runs = rp.expand(rp.load_grid(_grid(tmp_path, {"METHOD": ["supervised", "action"], "SEED": [0]})))
    out = tmp_path / "out"
    assert "none has finished" in estimate(runs, out).text()
    rp.run_grid([r for r in runs if r.parameters[0]["METHOD"] == "supervised"], out, executor=_finish, log=None)
    est = estimate(runs, out)
    assert est.seconds == 0 and est.unknown == [r.run_id for r in runs if r.parameters[0]["METHOD"] == "action"]
    assert "not counted, no finished run of their kind yet: method=action_seed=0" in est.text()
    rp.run_grid(runs, out, executor=_finish, log=None)
    assert estimate(runs, out).text() == "estimate: all 2 runs finished, nothing to go"


def test_dry_run_prints_the_estimate(tmp_path: Path, capsys) -> None:
    grid = _grid(tmp_path, {"SEED": [0, 1]})
    assert cli_main(["replicate", str(grid), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    assert "estimate: 2 of 2 runs to go; none has finished" in capsys.readouterr().out
