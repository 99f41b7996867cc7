"""The committed ACDC-lite results (results/acdc_lite and results/acdc_lite_power, written by ``actionpp
replicate --publish``) are consistent, and notebook 06 renders them (its default)."""

from __future__ import annotations

import json

import pytest
import yaml

from actionpp.config import config_hash, load_config, stored_config
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


#: the scored grids of issue 18 (grid file name = results folder name)
SCORED_GRIDS = ("acdc_lite_power", "acdc_lite_power_official", "acdc_lite_power_official_7")


@pytest.mark.parametrize("name", SCORED_GRIDS)
def test_the_powered_grid_runs_carry_their_scores_and_samples_and_belong_together(name):
    """Every published run of a powered grid (issue 18): scored on val (20) and test (40 volumes) from its last
    checkpoint, the val score equal to the notebook's own last-checkpoint number, an embedding sample of its own,
    and trained with the network modes its grid file gives it (acdc_lite_power_official: both official modes)."""
    from actionpp.embeddings import read_embedding_sample
    from actionpp.replicate import expand, load_grid
    from actionpp.replicate.score import ScoreSpec, read_scores

    folder = repo_root() / "results" / name
    runs = sorted(p.parent for p in folder.glob("*/done"))
    assert runs, f"no published run under {folder}"
    planned = {r.run_id: r for r in expand(load_grid(repo_root() / "notebooks" / "grids" / f"{name}.yaml"))}
    spec = ScoreSpec(splits=("val", "test"), weights=("student", "teacher"))
    for run in runs:
        axes = json.loads((run / "done").read_text())["axes"]
        metrics = read_run_metrics(run / "metrics.json")
        sc = read_scores(run / "scores.json", spec)
        assert sc["which"] == "last" and sc["iteration"] == metrics["iterations"]
        assert sc["scores"]["val"]["student"]["n_volumes"] == 20 and sc["scores"]["test"]["student"]["n_volumes"] == 40
        # the runner's val score of the last checkpoint is the number the notebook reported (acdc_lite selects last)
        assert sc["scores"]["val"]["student"]["dice_mean"] == pytest.approx(metrics["dice_mean"], abs=1e-9)
        cfg = stored_config(yaml.safe_load((run / "run" / "config.yaml").read_text()))
        assert config_hash(cfg) == metrics["config_hash"] and cfg.data.labelled == axes["LABELLED_PATIENTS"]
        assert cfg.runtime.seed == axes["SEED"] and sc["has_teacher"] == cfg.method.teacher
        sample = read_embedding_sample(run / "embeddings.npz")
        assert sample["meta"]["seed"] == axes["SEED"] and sample["meta"]["method"] == metrics["method"]
        # the engine profile with the grid's overrides for this run, read as `actionpp train --set` reads them
        expected = load_config("acdc_lite", planned[run.name].parameters[0].get("OVERRIDES", [])).train
        assert (cfg.train.teacher_mode, cfg.train.finetune_forward) == (expected.teacher_mode,
                                                                        expected.finetune_forward)


@pytest.mark.parametrize("name", SCORED_GRIDS)
def test_the_powered_grid_batchnorm_checks_start_from_the_runners_val_score(name):
    """Each published run's BatchNorm check (the grid's batchnorm_check block) scored the checkpoint the runner
    scored: its `as stored` val Dice is the runner's val student score, on the same 20 volumes, and it used the
    grid's setting; re-estimating changed nothing but BatchNorm's statistics, so a run without BatchNorm
    layers could not appear here."""
    from actionpp.replicate import load_grid
    from actionpp.replicate.score import read_scores

    spec = load_grid(repo_root() / "notebooks" / "grids" / f"{name}.yaml").batchnorm
    assert spec is not None and spec.split == "val"
    folder = repo_root() / "results" / name
    runs = sorted(p.parent for p in folder.glob("*/batchnorm.json"))
    assert runs, f"no BatchNorm check published under {folder}"
    assert (folder / "batchnorm.md").is_file()
    for run in runs:
        bn = json.loads((run / "batchnorm.json").read_text())
        sc = read_scores(run / "scores.json")
        assert bn["spec"] == spec.to_dict() and bn["iteration"] == sc["iteration"]
        assert bn["stored"]["n_volumes"] == 20 and bn["unlabelled"]["n_volumes"] == 20
        assert bn["stored"]["dice"] == pytest.approx(sc["scores"]["val"]["student"]["dice_mean"], abs=1e-9)
        assert bn["images"] == spec.images and bn["split"] == "val"


@pytest.mark.parametrize("name", ["acdc_lite", *SCORED_GRIDS])
def test_the_docs_section_of_each_published_grid_is_what_the_runner_writes_from_its_folder(name):
    """docs/results.md's section of a published grid (between its `<!-- grid:NAME -->` markers) is, byte for
    byte, what `replicate --publish --docs` writes from results/NAME: no table or sentence of it was edited by
    hand, and it was rewritten after the folder's last publish."""
    from actionpp.benchdoc import markers
    from actionpp.replicate import load_grid
    from actionpp.replicate.publish import docs_section

    docs = repo_root() / "docs" / "results.md"
    text = docs.read_text()
    start, end = markers(f"grid:{name}")
    assert text.count(start) == 1 and text.count(end) == 1
    committed = text[text.index(start) + len(start) + 1:text.index(end) - 1]
    grid = load_grid(repo_root() / "notebooks" / "grids" / f"{name}.yaml")
    assert committed == docs_section(repo_root() / "results" / name, docs, grid, scored=grid.score is not None).rstrip()


#: the scored grids whose grid file names another grid to be set beside (describe_against)
DESCRIBED_AGAINST = ("acdc_lite_power_official_7",)


@pytest.mark.parametrize("name", DESCRIBED_AGAINST)
def test_a_grid_set_beside_another_was_published_after_that_grids_last_publish(name):
    """A grid that names another (describe_against) carries, in its paired.md, the section the runner writes from
    both published folders as they are now: republishing the other grid without this one leaves this test red."""
    from actionpp.replicate import load_grid
    from actionpp.replicate.across import across_section
    from actionpp.replicate.paired import collect_scored

    grid = load_grid(repo_root() / "notebooks" / "grids" / f"{name}.yaml")
    assert grid.describe_against == "acdc_lite_power"
    folder = repo_root() / "results" / name
    section = across_section(collect_scored(folder), grid.name, grid.describe_against,
                             folder.parent / grid.describe_against)
    assert section and not any(line.startswith("Not read:") for line in section)
    assert "\n".join(section) in (folder / "paired.md").read_text()
