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


def _partial(rd: Path, pretrain: bool, last: int, every: int = 500) -> None:
    """A stopped run: pre-training 500 (when it has one) and fine-tuning 2000 iterations on the loop's one
    counter (fine-tuning logs 550, 600, ... after 500 of pre-training), logged every 50 up to ``last``."""
    (rd / "run").mkdir(parents=True, exist_ok=True)
    cfg = {"method": {"pretrain": pretrain, "finetune": True}, "train": {"pretrain_iters": 500, "finetune_iters": 2000},
           "runtime": {"checkpoint_every": every}}
    (rd / "run" / "config.yaml").write_text(yaml.safe_dump(cfg))
    start = 500 if pretrain else 0
    rows = [{"kind": "train", "phase": "pretrain" if it <= start else "finetune", "iteration": it}
            for it in range(50, last + 1, 50)]
    (rd / "run" / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")


def test_trained_fraction_counts_only_what_a_resume_keeps(tmp_path: Path) -> None:
    assert trained_fraction(tmp_path / "nothing") == 0.0
    # pre-training and fine-tuning on one counter, 2500 in all; logged to 1700: the checkpoint at 1500 is kept
    _partial(tmp_path / "a", True, 1700)
    assert trained_fraction(tmp_path / "a") == pytest.approx(1500 / 2500)
    _partial(tmp_path / "a2", True, 2100)  # past 2000 (the fine-tuning length alone): 2000 of 2500, not all
    assert trained_fraction(tmp_path / "a2") == pytest.approx(2000 / 2500)
    # pre-training at 400: no checkpoint yet, a resume starts from 0
    _partial(tmp_path / "b", True, 400)
    assert trained_fraction(tmp_path / "b") == 0.0
    # no pre-training phase (mean teacher): 1000 of 2000
    _partial(tmp_path / "c", False, 1000)
    assert trained_fraction(tmp_path / "c") == pytest.approx(0.5)
    # checkpoints only at phase ends: logged to 2100, the end of pre-training (500) is what a resume keeps
    _partial(tmp_path / "d", True, 2100, every=0)
    assert trained_fraction(tmp_path / "d") == pytest.approx(500 / 2500)
    _partial(tmp_path / "e", False, 1999, every=0)  # and without pre-training, nothing
    assert trained_fraction(tmp_path / "e") == 0.0


def test_estimate_by_hand(tmp_path: Path) -> None:
    runs = rp.expand(rp.load_grid(_grid(tmp_path, {"METHOD": ["supervised", "action"], "SEED": [0, 1, 2]})))
    out = tmp_path / "out"
    by = {(r.parameters[0]["METHOD"], r.parameters[0]["SEED"]): r for r in runs}
    finished = [by["supervised", 0], by["supervised", 1], by["action", 0]]  # 600 s, 1200 s, 3000 s
    rp.run_grid(finished, out, executor=_finish, log=None)
    # ACTION seed 1 stopped at iteration 1700 of 2500: 60 % behind the checkpoint at 1500
    _partial(by["action", 1].run_dir(out), True, 1700)
    est = estimate(runs, out, jobs=2)
    assert (est.total, est.done, est.to_go, est.partial) == (6, 3, 3, 1)
    assert est.minutes == {"supervised": pytest.approx(15.0), "action": pytest.approx(50.0)}  # medians 900 s, 3000 s
    # supervised seed 2: 900 s; ACTION seed 1: 40 % of 3000 s; ACTION seed 2: 3000 s
    assert est.seconds == pytest.approx(900 + 1200 + 3000)
    text = est.text()
    assert text.startswith("estimate: 3 of 6 runs to go (1 partly trained): about 1.4 h of training")
    # wall time at 2 jobs: not 5100 / 2 s, since ACTION seed 2 alone takes 3000 s (a run is not split): 0.83 h
    assert "supervised 15, action 50" in text and "at 2 at a time about 0.8 h of wall time" in text
    assert estimate(runs, out, jobs=1).text().count("about 1.4 h") == 2  # one job: wall time = training time
    assert run_kind(by["action", 2]) == "action"


def test_estimate_names_runs_it_cannot_time(tmp_path: Path) -> None:
    runs = rp.expand(rp.load_grid(_grid(tmp_path, {"METHOD": ["supervised", "action"], "SEED": [0]})))
    out = tmp_path / "out"
    assert "none has finished" in estimate(runs, out).text()
    rp.run_grid([r for r in runs if r.parameters[0]["METHOD"] == "supervised"], out, executor=_finish, log=None)
    est = estimate(runs, out)
    assert est.seconds == 0 and est.unknown == [r.run_id for r in runs if r.parameters[0]["METHOD"] == "action"]
    # every run to go is of an untimed kind: no "about 0.0 h of training", which would read as "nearly done"
    assert est.text() == ("estimate: 1 of 2 runs to go; no finished run of their kind to time them by yet: "
                          "method=action_seed=0")
    _partial(next(r for r in runs if r.run_id == "method=action_seed=0").run_dir(out), pretrain=True, last=1000)
    assert estimate(runs, out).text().startswith("estimate: 1 of 2 runs to go (1 partly trained); no finished run")
    rp.run_grid(runs, out, executor=_finish, log=None)
    assert estimate(runs, out).text() == "estimate: all 2 runs finished, nothing to go"


def test_estimate_says_how_many_runs_its_hours_cover(tmp_path: Path) -> None:
    runs = rp.expand(rp.load_grid(_grid(tmp_path, {"METHOD": ["supervised", "action"], "SEED": [0, 1]})))
    out = tmp_path / "out"
    rp.run_grid([r for r in runs if r.run_id == "method=supervised_seed=0"], out, executor=_finish, log=None)
    # to go: supervised seed 1 (timed by supervised seed 0's 600 s = 0.17 h), ACTION seeds 0 and 1 (not timed)
    text = estimate(runs, out).text()
    assert text.startswith("estimate: 3 of 4 runs to go: about 0.2 h of training for the 1 run it can time (")
    assert text.endswith("not counted, no finished run of their kind yet: method=action_seed=0, method=action_seed=1")


def test_dry_run_prints_the_estimate(tmp_path: Path, capsys) -> None:
    grid = _grid(tmp_path, {"SEED": [0, 1]})
    assert cli_main(["replicate", str(grid), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    assert "estimate: 2 of 2 runs to go; none has finished" in capsys.readouterr().out


def test_estimate_follows_the_machine_that_trained_last(tmp_path: Path) -> None:
    """A grid spanning sessions on machines of different speed: each kind's median is over its RECENT (3)
    latest runs by their last recorded start, so the estimate follows the machine still training."""
    from actionpp.replicate.eta import RECENT

    assert RECENT == 3
    runs = rp.expand(rp.load_grid(_grid(tmp_path, {"METHOD": ["supervised"], "SEED": [0, 1, 2, 3, 4, 5]})))
    out = tmp_path / "out"
    rp.run_grid(runs[:5], out, executor=_finish, log=None)  # seeds 0-4: 600, 1200, 1800, 2400, 3000 s
    # last starts: seed 3 not recorded (the oldest); seed 4 on day 1; seed 0 on day 2; seed 2 on day 3; seed 1
    # started twice, first on the day before day 1 and last on day 4
    starts = {0: ["2026-01-02T00:00:00"], 1: ["2025-12-31T00:00:00", "2026-01-04T00:00:00"],
              2: ["2026-01-03T00:00:00"], 4: ["2026-01-01T00:00:00"]}
    for seed, times in starts.items():
        (runs[seed].run_dir(out) / "run" / "run.json").write_text(
            json.dumps({"starts": [{"time": t, "from_iteration": 0} for t in times]}))
    est = estimate(runs, out)
    # the latest three are seeds 1 (day 4), 2 (day 3) and 0 (day 2): median of 1200, 1800, 600 s = 1200 s;
    # all five would give 1800 s, and ordering by the first start (seed 1 the day before day 1) seeds 2, 0, 4: 1800 s
    assert est.minutes == {"supervised": pytest.approx(20.0)}
    assert est.seconds == pytest.approx(1200)
    assert "median minutes of each kind's 3 most recently trained runs: supervised 20" in est.text()
    # a torn run.json is a run with no recorded start: seed 1 drops to the oldest, seeds 2, 0, 4 remain
    (runs[1].run_dir(out) / "run" / "run.json").write_text("{not json")
    assert estimate(runs, out).minutes == {"supervised": pytest.approx(1800 / 60)}  # 1800, 600, 3000 s
