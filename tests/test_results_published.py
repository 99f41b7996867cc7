"""The committed ACDC-lite results (results/acdc_lite, written by ``actionpp replicate --publish``) are
consistent, and notebook 06 renders them (its default)."""

from __future__ import annotations

import json

import pytest
import yaml

from actionpp.config import config_hash, stored_config
from actionpp.paths import repo_root
from actionpp.report import read_run_metrics

RESULTS = repo_root() / "results" / "acdc_lite"
RUNS = sorted(p.parent for p in RESULTS.glob("*/done"))


def test_published_runs_exist_and_their_files_belong_together():
    assert RUNS, f"no published run under {RESULTS}"
    assert (RESULTS / "README.md").is_file() and (RESULTS / "results.csv").is_file()
    header = (RESULTS / "results.csv").read_text().splitlines()[0].split(",")
    assert {"METHOD", "n", "dice_mean_mean", "dice_mean_std", "dice_RV_mean", "dice_LV_mean"} <= set(header)
    for run in RUNS:
        metrics = read_run_metrics(run / "metrics.json")
        cfg = stored_config(yaml.safe_load((run / "run" / "config.yaml").read_text()))
        # the config.yaml is the one the run trained with: its hash is the one the run recorded
        assert config_hash(cfg) == metrics["config_hash"] == json.loads((run / "run" / "metrics.json").read_text())[
            "config_hash"]
        assert cfg.data.root == "shared" and cfg.data.size == 128 and cfg.data.labelled == 7  # ACDC-lite
        env = json.loads((run / "run" / "run.json").read_text())["environment"]
        assert len(env["git_commit"] or "") == 40  # every run records the commit it trained on
        val = [json.loads(line) for line in (run / "run" / "log.jsonl").read_text().splitlines()
               if '"kind": "val"' in line]
        assert val and val[-1]["dice"] == pytest.approx(metrics["dice_mean"], abs=1e-9)  # last = what is reported


@pytest.mark.notebooks
def test_notebook_06_renders_the_committed_results(tmp_path):
    from actionpp.notebook import execute, read_metrics

    out = tmp_path / "06"
    execute(repo_root() / "notebooks" / "06_replication_report.ipynb", tmp_path / "06.ipynb",
            {"OUT_DIR": str(out)}, profile="lab")
    m = read_metrics(out)
    assert m["n_runs"] == len(RUNS) and not m["failed"]
