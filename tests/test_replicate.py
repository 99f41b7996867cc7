"""Batch replication (actionpp.replicate, `actionpp replicate`) on tiny throwaway notebooks.

The notebooks are built with nbformat in tmp_path: their last cell writes metrics computed
from their parameters (so aggregated numbers are known by hand), and FAIL=True raises.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import yaml

from actionpp import replicate as rp
from actionpp.cli import main as cli_main

PARAMS = '''METHOD: str = "supervised"  # which method
LABELLED_PATIENTS: int = 3  # labelled patients
SEED: int = 0  # seed
FAIL: bool = False  # raise on purpose
OUT_DIR: str = "out"  # where metrics.json goes'''

BODY = '''from actionpp.notebook import write_metrics
if FAIL:
    raise RuntimeError(f"deliberate failure for seed {SEED}")
dice = {"RV": 0.80 + 0.04 * SEED, "Myo": 0.70, "LV": 0.90 - 0.10 * SEED}
write_metrics(OUT_DIR, {
    "dataset": "acdc", "method": METHOD, "labelled_patients": LABELLED_PATIENTS, "seed": SEED,
    "classes": ["RV", "Myo", "LV"], "dice": dice,
    "jaccard": {k: v / (2 - v) for k, v in dice.items()},
    "hd95": {"RV": [2.0, 4.0, 9.0][SEED], "Myo": 1.0, "LV": 1.0},
    "asd": {"RV": 0.5, "Myo": 0.5, "LV": 0.5},
    "protocol": {"split": "phantom 70/10/20", "iterations": 8, "model_selection": "best on val",
                 "empty_mask_policy": "missed structure: Dice 0, HD95 nan", "distance_units": "voxels"},
})'''


def _write_notebook(folder: Path, stem: str = "fake_train") -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# fake training"),
        nbformat.v4.new_code_cell(PARAMS, metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(BODY),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = folder / f"{stem}.ipynb"
    nbformat.write(nb, path)
    return path


def _grid(tmp_path: Path, axes: dict, **extra) -> Path:
    _write_notebook(tmp_path)
    g = {"name": "t", "notebooks": ["fake_train"], "axes": axes, **extra}
    p = tmp_path / "grid.yaml"
    p.write_text(yaml.safe_dump(g, sort_keys=False))
    return p


def _fake_executor(notebook: Path, output: Path, params: dict) -> None:
    """In-process stand-in for papermill: same metrics as BODY, no kernel."""
    if params.get("FAIL"):
        raise RuntimeError("deliberate")
    output.write_text("{}")
    seed = params["SEED"]
    out = Path(params["OUT_DIR"])
    one = {"RV": 0.5}
    (out / "metrics.json").write_text(json.dumps({
        "dataset": "acdc", "seed": seed, "classes": ["RV"], "dice": one, "jaccard": one, "hd95": {"RV": 2.0},
        "asd": {"RV": 1.0}, "protocol": {"split": "fake"},
    }))


# --------------------------------------------------------------------------- expansion


def test_grid_expansion_order_ids_and_parameters(tmp_path: Path) -> None:
    profile = tmp_path / "params" / "smoke"
    profile.mkdir(parents=True)
    (profile / "fake_train.yaml").write_text("LABELLED_PATIENTS: 1\nSEED: 5\n")
    g = rp.load_grid(
        _grid(
            tmp_path,
            {"SEED": [0, 1], "METHOD": ["supervised", "actionpp"], "LABELLED_PATIENTS": [3, 7]},
            profile="smoke",
            parameters={"FAIL": False},
        )
    )
    runs = rp.expand(g)
    assert len(runs) == 8
    # product in YAML order (SEED slowest), ids in canonical order method, lab, seed
    assert [r.run_id for r in runs[:3]] == [
        "method=supervised_lab=3_seed=0",
        "method=supervised_lab=7_seed=0",
        "method=actionpp_lab=3_seed=0",
    ]
    r = runs[2]
    # axis values beat the profile; the grid's fixed parameters are present
    assert dict(r.parameters[0]) == {"LABELLED_PATIENTS": 3, "SEED": 0, "FAIL": False, "METHOD": "actionpp"}
    assert dict(r.axes) == {"SEED": 0, "METHOD": "actionpp", "LABELLED_PATIENTS": 3}
    # the shard key is the position in the id-sorted grid
    assert sorted(runs, key=lambda x: x.index) == sorted(runs, key=lambda x: x.run_id)
    # deterministic: a second expansion is identical
    assert [(x.run_id, x.index) for x in rp.expand(g)] == [(x.run_id, x.index) for x in runs]


def test_run_ids_do_not_depend_on_yaml_order(tmp_path: Path) -> None:
    a = rp.expand(rp.load_grid(_grid(tmp_path, {"METHOD": ["a", "b"], "SEED": [0, 1], "LR": [0.1]})))
    b = rp.expand(rp.load_grid(_grid(tmp_path, {"LR": [0.1], "SEED": [1, 0], "METHOD": ["b", "a"]})))
    assert {r.run_id: r.index for r in a} == {r.run_id: r.index for r in b}
    assert "method=a_lr=0.1_seed=1" in {r.run_id for r in a}


def test_variants_are_an_axis_with_their_parameters(tmp_path: Path) -> None:
    g = rp.load_grid(
        _grid(
            tmp_path,
            {"SEED": [0]},
            variants=[{"name": "ats_only", "METHOD": "x", "FAIL": False}, {"name": "both", "METHOD": "y"}],
        )
    )
    runs = rp.expand(g)
    assert [r.run_id for r in runs] == ["variant=ats_only_seed=0", "variant=both_seed=0"]
    assert runs[1].parameters[0]["METHOD"] == "y"


@pytest.mark.parametrize(
    "bad, needle",
    [
        ({"notebooks": ["fake_train"], "axes": {"SEED": []}}, "SEED"),
        ({"notebooks": ["fake_train"], "axes": {"SEED": [0]}, "axis": {}}, "unknown key"),
        ({"notebooks": ["missing_nb"], "axes": {}}, "missing_nb"),
        ({"notebooks": ["fake_train"], "axes": {"SEED": [[1, 2]]}}, "not a scalar"),
        ({"notebooks": ["fake_train"], "axes": {"SEED": [0]}, "profile": "nope"}, "nope"),
    ],
)
def test_bad_grids_name_the_problem(tmp_path: Path, bad: dict, needle: str) -> None:
    _write_notebook(tmp_path)
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(bad))
    with pytest.raises(rp.GridError, match=needle):
        rp.expand(rp.load_grid(p))


# --------------------------------------------------------------------------- shards


@pytest.mark.parametrize("n", [1, 2, 3, 5, 13])
def test_shards_partition_the_grid(tmp_path: Path, n: int) -> None:
    runs = rp.expand(rp.load_grid(_grid(tmp_path, {"METHOD": ["a", "b", "c"], "SEED": [0, 1, 2, 3]})))
    parts = [rp.shard(runs, i, n) for i in range(n)]
    ids = [r.run_id for p in parts for r in p]
    assert len(ids) == len(set(ids)) == 12  # disjoint and complete
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1  # balanced
    assert rp.parse_shard("2/5") == (2, 5)
    for bad in ("5/5", "x", "1/0", "-1/3"):
        with pytest.raises(ValueError, match="shard"):
            rp.parse_shard(bad)


# --------------------------------------------------------------------------- execution


def test_failed_run_is_reported_others_finish_and_rerun_skips(tmp_path: Path, capsys) -> None:
    """Real papermill on throwaway notebooks, two at a time (process pool): two of four runs raise."""
    grid = _grid(tmp_path, {"SEED": [0, 1]}, variants=[{"name": "ok", "FAIL": False}, {"name": "bad", "FAIL": True}])
    out = tmp_path / "out"
    rc = cli_main(["replicate", str(grid), "--out", str(out), "--jobs", "2"])
    printed = capsys.readouterr().out
    assert rc == 1
    ok0, ok1 = out / "variant=ok_seed=0", out / "variant=ok_seed=1"
    bad0 = out / "variant=bad_seed=0"
    for d in (ok0, ok1):
        assert (d / "done").is_file() and (d / "metrics.json").is_file() and (d / "fake_train.ipynb").is_file()
        assert not (d / "failed.json").exists()
    assert not (bad0 / "done").exists() and not (bad0 / "metrics.json").exists()
    failed = json.loads((bad0 / "failed.json").read_text())
    assert "deliberate failure for seed 0" in failed["error"]
    # times are UTC with their offset, so runs finished on machines in other time zones order correctly
    from datetime import datetime, timedelta

    for when in (json.loads((ok0 / "done").read_text())["finished"], failed["time"]):
        assert datetime.fromisoformat(when).utcoffset() == timedelta(0), when
    assert failed["notebook"] == str(bad0 / "fake_train.ipynb")
    executed = nbformat.read(bad0 / "fake_train.ipynb", as_version=4)
    assert any(o.get("output_type") == "error" for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert "FAILED variant=bad_seed=0" in printed and "deliberate failure for seed 0" in printed
    assert str(bad0 / "fake_train.ipynb") in printed
    # the results table holds only finished runs (the two seeds of "ok")
    csv_text = (out / "results.csv").read_text()
    assert csv_text.count("\n") == 2 and ",ok," in csv_text

    # re-run: finished runs are not executed again (their notebooks keep their mtime), the failed one is
    mtimes = {d: (d / "fake_train.ipynb").stat().st_mtime_ns for d in (ok0, ok1)}
    calls: list[str] = []

    def spy(nb: Path, output: Path, params: dict) -> None:
        calls.append(Path(params["OUT_DIR"]).name)
        _fake_executor(nb, output, params)

    runs = rp.expand(rp.load_grid(grid))
    outcomes = rp.run_grid(runs, out, executor=spy, log=None)
    assert {o.run_id: o.status for o in outcomes} == {
        "variant=ok_seed=0": "skipped",
        "variant=ok_seed=1": "skipped",
        "variant=bad_seed=0": "failed",
        "variant=bad_seed=1": "failed",
    }
    assert sorted(calls) == ["variant=bad_seed=0", "variant=bad_seed=1"]
    assert {d: (d / "fake_train.ipynb").stat().st_mtime_ns for d in (ok0, ok1)} == mtimes


def test_interrupted_run_is_rerun_and_keeps_its_checkpoint(tmp_path: Path) -> None:
    runs = rp.expand(rp.load_grid(_grid(tmp_path, {"SEED": [0, 1]})))
    out = tmp_path / "out"
    assert rp.run_status(runs[0], out) == "pending"
    rp.run_grid(runs[:1], out, executor=_fake_executor, log=None)
    assert rp.run_status(runs[0], out) == "done"
    # an interrupted attempt: metrics.json and a checkpoint, but no done marker
    d1 = runs[1].run_dir(out)
    (d1 / "run").mkdir(parents=True)
    (d1 / "run" / "last.pt").write_text("checkpoint")
    (d1 / "metrics.json").write_text("{}")
    assert rp.run_status(runs[1], out) == "partial"
    assert [r.run_id for r in rp.collect(out, runs)] == [runs[0].run_id]  # partial run is not a result
    outcomes = rp.run_grid(runs, out, executor=_fake_executor, log=None)
    assert [o.status for o in outcomes] == ["skipped", "done"]
    assert (d1 / "run" / "last.pt").read_text() == "checkpoint"  # the engine's resume point survives
    assert json.loads((d1 / "metrics.json").read_text())["seed"] == 1


def test_finished_run_with_other_parameters_is_never_overwritten(tmp_path: Path) -> None:
    grid = _grid(tmp_path, {"SEED": [0]}, parameters={"LABELLED_PATIENTS": 3})
    out = tmp_path / "out"
    rp.run_grid(rp.expand(rp.load_grid(grid)), out, executor=_fake_executor, log=None)
    before = (out / "seed=0" / "metrics.json").read_text()
    grid2 = _grid(tmp_path, {"SEED": [0]}, parameters={"LABELLED_PATIENTS": 7})
    runs2 = rp.expand(rp.load_grid(grid2))
    assert rp.run_status(runs2[0], out) == "stale"
    [o] = rp.run_grid(runs2, out, executor=_fake_executor, log=None)
    assert o.status == "stale" and "different parameters" in (o.error or "")
    assert (out / "seed=0" / "metrics.json").read_text() == before


# --------------------------------------------------------------------------- results


def _record(seed: int, method: str = "actionpp", lab: int = 3, rv: float = 0.8, hd: float = 2.0) -> rp.RunRecord:
    metrics = {
        "dataset": "acdc",
        "classes": ["RV", "LV"],
        "dice": {"RV": rv, "LV": 0.9},
        "jaccard": {"RV": 0.5, "LV": 0.5},
        "hd95": {"RV": hd, "LV": 1.0},
        "asd": {"RV": 1.0, "LV": 1.0},
        "protocol": {"iterations": 100, "distance_units": "voxels"},
    }
    axes = {"METHOD": method, "LABELLED_PATIENTS": lab, "SEED": seed}
    return rp.RunRecord(rp.make_run_id(axes), axes, metrics, Path("."))


def test_aggregation_mean_and_sample_std_by_hand() -> None:
    recs = [
        _record(0, rv=0.80, hd=2.0), _record(1, rv=0.84, hd=4.0), _record(2, rv=0.88, hd=9.0),
        _record(0, "supervised", rv=0.5),
    ]
    rows = rp.aggregate(recs)
    assert [(r.method, r.labelled, len(r.seeds)) for r in rows] == [("actionpp", 3, 3), ("supervised", 3, 1)]
    st = rows[0].stats
    # RV Dice 80, 84, 88 %: mean 84, sample std sqrt((16 + 0 + 16) / 2) = 4
    assert st["dice_RV"][0] == pytest.approx(84.0) and st["dice_RV"][1] == pytest.approx(4.0)
    # mean over classes per run: (80+90)/2, (84+90)/2, (88+90)/2 = 85, 87, 89 -> mean 87, std 2
    assert st["dice_mean"] == pytest.approx((87.0, 2.0))
    # HD95 RV 2, 4, 9 voxels: mean 5, std sqrt((9 + 1 + 16) / 2) = sqrt(13)
    assert st["hd95_RV"] == pytest.approx((5.0, math.sqrt(13)))
    # one seed: value, no std
    assert rows[1].stats["dice_RV"][0] == pytest.approx(50.0) and math.isnan(rows[1].stats["dice_RV"][1])
    # the paper's numbers sit beside ours
    assert rows[0].paper == {"dice": 88.5, "asd": 0.723, "dice_per_class": {"RV": 86.9, "Myo": 86.8, "LV": 91.9}}
    assert rows[1].paper == {"dice": 51.7, "asd": None}
    md = rp.results_markdown(rows)
    assert "| acdc | actionpp | 3 | 3 | 87.0 ± 2.0 |" in md
    assert "84.0 ± 4.0 [86.9]" in md
    assert "iterations: 100" in md and "distance units (HD95, ASD): voxels" in md
    lines = rp.results_csv(rows).splitlines()
    header = lines[0].split(",")
    first = dict(zip(header, lines[1].split(",")))
    assert first["dice_RV_mean"] == "84" and first["dice_RV_std"] == "4" and first["paper_dice"] == "88.5"
    assert first["seeds"] == "0 1 2" and first["n"] == "3"


def test_protocol_mismatch_within_a_group_is_shown() -> None:
    a, b = _record(0), _record(1)
    b.metrics["protocol"]["iterations"] = 200  # type: ignore[index]
    [row] = rp.aggregate([a, b])
    assert row.protocol["iterations"] == "100 | 200"


def test_dry_run_lists_runs_and_runs_nothing(tmp_path: Path, capsys) -> None:
    grid = _grid(tmp_path, {"SEED": [0, 1, 2]})
    out = tmp_path / "out"
    assert cli_main(["replicate", str(grid), "--out", str(out), "--dry-run", "--shard", "1/2"]) == 0
    text = capsys.readouterr().out
    assert "seed=1" in text and "seed=0" not in text and "seed=2" not in text and "pending" in text
    assert not any(out.glob("*/done"))
    assert cli_main(["replicate", str(tmp_path / "nope.yaml")]) == 2


# --------------------------------------------------------------------------- end to end


@pytest.mark.notebooks
@pytest.mark.slow
def test_tiny_grid_end_to_end_on_04_train(tmp_path: Path) -> None:
    """`actionpp replicate notebooks/grids/tiny.yaml` with the smoke profile: real training.

    ~60 s on 2 cores, hence slow; the default suite still replicates tiny.yaml end to end
    through the smoke run of notebooks/06_replication_report.ipynb (tests/test_notebooks.py).
    """
    from actionpp.paths import repo_root

    grid = repo_root() / "notebooks" / "grids" / "tiny.yaml"
    if not (repo_root() / "notebooks" / "04_train.ipynb").is_file():
        pytest.fail("notebooks/04_train.ipynb is missing")
    out = tmp_path / "tiny"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    assert cli_main(["replicate", str(grid), "--out", str(out)]) == 0
    runs = rp.expand(rp.load_grid(grid))
    assert all(rp.run_status(r, out) == "done" for r in runs)
    rows = rp.aggregate(rp.collect(out, runs))
    assert len(rows) == len({tuple(sorted((k, str(v)) for k, v in r.axes.items() if k != "SEED")) for r in runs})
    for row in rows:
        assert 0.0 <= row.stats["dice_mean"][0] <= 100.0
    md = (out / "results.md").read_text()
    assert "model selection" in md and "iterations" in md


# --------------------------------------------------------------------------- shipped grids


@pytest.mark.parametrize("name, n_runs", [("acdc_paper", 24), ("la_ablation", 15), ("phantom_small", 12), ("tiny", 2),
                                           ("acdc_lite", 20), ("acdc_lite_power", 73),
                                           ("acdc_lite_power_official", 24), ("acdc_lite_power_official_7", 16)])
def test_shipped_grids_expand_and_pass_the_strict_parameter_check(name: str, n_runs: int) -> None:
    """Every run of every grid in notebooks/grids/ would start: parameters known and well typed."""
    from actionpp.notebook import check_parameters, parameters_of
    from actionpp.paths import repo_root

    grid = rp.load_grid(repo_root() / "notebooks" / "grids" / f"{name}.yaml")
    runs = rp.expand(grid)
    assert len(runs) == n_runs
    declared = {s.path: parameters_of(s.path) for s in grid.notebooks}
    for r in runs:
        for i, (step, params) in enumerate(zip(r.notebooks, r.parameters)):
            p = {k: v for k, v in params.items() if i == 0 or k in declared[step.path]}
            check_parameters(step.path, {**p, "OUT_DIR": "x"}, declared[step.path])
    if name == "la_ablation":
        by_id = {r.run_id: r.parameters[0] for r in runs}
        ra = by_id["variant=random_assign_seed=1"]
        assert (ra["ASSIGNMENT"], ra["SAACL"], ra["ATS"], ra["LABELLED_PATIENTS"]) == ("random", "on", "on", 8)
        assert rp.paper_row("la", 8, "random_assign") == {"dice": 88.0, "asd": None}


def test_the_official_modes_grid_repeats_the_powered_grids_official_networks_runs_and_pairs_by_seed() -> None:
    """acdc_lite_power_official (ACTION and ACTION++ at 3 labelled patients, both official network modes) gives
    notebook 04 exactly the parameters of the powered grid's official_networks variants at seeds 0 and 1, so its
    runs of those seeds repeat them; and it plans 8 pairs, the powered grid's plan at 3 labelled patients."""
    from actionpp.paths import repo_root
    from actionpp.replicate.paired import grid_design, planned_pairs

    grids = repo_root() / "notebooks" / "grids"
    power = rp.expand(rp.load_grid(grids / "acdc_lite_power.yaml"))
    official = rp.expand(rp.load_grid(grids / "acdc_lite_power_official.yaml"))
    variant = {"official_networks_action": "action", "official_networks": "actionpp"}
    repeated = {(variant[r.axes["VARIANT"]], r.axes["SEED"]): dict(r.parameters[0]) for r in power
                if r.axes.get("VARIANT") in variant}
    assert sorted(repeated) == [("action", 0), ("action", 1), ("actionpp", 0), ("actionpp", 1)]
    mine = {(r.axes["METHOD"], r.axes["SEED"]): dict(r.parameters[0]) for r in official}
    for key, params in repeated.items():
        assert mine[key] == params
    assert {p["OVERRIDES"] == ["train.teacher_mode=train", "train.finetune_forward=separate"] and
            p["LABELLED_PATIENTS"] == 3 for p in mine.values()} == {True}
    assert planned_pairs(grid_design(official)) == {3: 8} == {3: planned_pairs(grid_design(power))[3]}
    # the new seeds first, ACTION then ACTION++ in each; the repeats of seeds 0 and 1; supervised at every seed last
    seeds = (2, 3, 4, 5, 6, 7, 0, 1)
    assert [(r.axes["SEED"], r.axes["METHOD"]) for r in official] == [
        (s, m) for s in seeds for m in ("action", "actionpp")] + [(s, "supervised") for s in seeds]


def test_the_7_patient_official_modes_grid_is_the_powered_grids_7_patient_pairs_under_both_official_modes() -> None:
    """acdc_lite_power_official_7 gives notebook 04, run for run, the parameters of the powered grid's ACTION and
    ACTION++ runs at 7 labelled patients and seeds 0-7 plus exactly the two official modes of the 3-patient
    official grid, so the two 7-patient answers differ in those settings alone; 8 pairs, seeds in rounds."""
    from actionpp.paths import repo_root
    from actionpp.replicate.paired import grid_design, planned_pairs

    grids = repo_root() / "notebooks" / "grids"
    power = rp.expand(rp.load_grid(grids / "acdc_lite_power.yaml"))
    official = rp.expand(rp.load_grid(grids / "acdc_lite_power_official.yaml"))
    modes = {tuple(r.parameters[0]["OVERRIDES"]) for r in official}
    assert modes == {("train.teacher_mode=train", "train.finetune_forward=separate")}
    seven = rp.expand(rp.load_grid(grids / "acdc_lite_power_official_7.yaml"))
    pairs = ("action", "actionpp")
    profile = {(r.axes["METHOD"], r.axes["SEED"]): r for r in power
               if "VARIANT" not in r.axes and r.axes["LABELLED_PATIENTS"] == 7 and r.axes["METHOD"] in pairs}
    assert len(profile) == 16 and all("OVERRIDES" not in p.parameters[0] for p in profile.values())
    for r in seven:
        same = profile[r.axes["METHOD"], r.axes["SEED"]]
        assert dict(r.parameters[0]) == {**same.parameters[0], "OVERRIDES": list(*modes)}
        assert (r.notebooks, r.score) == (same.notebooks, same.score)  # same notebook, scored the same way
    checks = {rp.load_grid(grids / f"{g}.yaml").batchnorm for g in ("acdc_lite_power", "acdc_lite_power_official_7")}
    assert len(checks) == 1 and None not in checks  # the same BatchNorm check at publish
    assert planned_pairs(grid_design(seven)) == {7: 8}
    assert [(r.axes["SEED"], r.axes["METHOD"]) for r in seven] == [(s, m) for s in range(8) for m in pairs]


def test_the_powered_grid_runs_seeds_in_rounds_and_its_7_patient_pairs_before_its_3_patient_seeds_3_to_7() -> None:
    """acdc_lite_power's order (the grid file's comments): seeds 0-2 of every method at every budget in rounds;
    from seed 3 on, every 7-patient main run before any 3-patient one (reordered on 2026-12-07: same runs), each
    seed round complete before the next; the plan is 8 pairs at 7 and at 3 labelled patients, 3 at 1."""
    from actionpp.paths import repo_root
    from actionpp.replicate.paired import grid_design, planned_pairs

    runs = rp.expand(rp.load_grid(repo_root() / "notebooks" / "grids" / "acdc_lite_power.yaml"))
    # the 73 runs and their parameters as planned before the reordering (ids and parameters; not the order)
    assert rp.grid_fingerprint(runs) == "eda9a53df9d13c45"
    assert planned_pairs(grid_design(runs)) == {7: 8, 3: 8, 1: 3}
    main = [(r.axes["SEED"], r.axes["LABELLED_PATIENTS"], r.axes["METHOD"]) for r in runs if "VARIANT" not in r.axes]
    assert [s for s, _, _ in main[:36]] == [0] * 12 + [1] * 12 + [2] * 12
    later = main[36:]
    seven = [(s, m) for s, b, m in later if b == 7]
    assert later[:len(seven)] == [(s, 7, m) for s, m in seven] and {b for _, b, _ in later[len(seven):]} == {3}
    every, pair = ["supervised", "mean_teacher", "action", "actionpp"], ["action", "actionpp"]
    rounds = [(s, m) for s in (3, 4) for m in every] + [(s, m) for s in (5, 6, 7) for m in pair]
    assert seven == rounds and [(s, m) for s, _, m in later[len(seven):]] == rounds
    assert main[:36] == [(s, b, m) for s in (0, 1, 2) for b in (7, 3, 1) for m in every]
    # the diagnostics: the 4-run official_networks block after seed 2; the five others between the 7-patient
    # rounds and the 3-patient ones
    where = {r.run_id: k for k, r in enumerate(runs)}
    order = [r.run_id for r in runs]
    assert [order[k] for k in range(36, 40)] == [f"variant={v}_lab=3_seed={s}" for v in (
        "official_networks_action", "official_networks") for s in (0, 1)]
    last7, first3 = where["method=actionpp_lab=7_seed=7"], where["method=supervised_lab=3_seed=3"]
    assert order[last7 + 1:first3] == ["variant=official_teacher_lab=3_seed=0", "variant=separate_forward_lab=3_seed=0",
                                       "variant=official_teacher_lab=7_seed=0", "variant=separate_forward_lab=7_seed=0",
                                       "variant=official_recipe_lab=7_seed=0"]


# --------------------------------------------------------------------------- publishing


def _fake_training_dir(run_dir: Path, seed: int, pretrain: int, seconds: float | None = None,
                       starts: int = 1) -> None:
    """What notebook 04's training loop leaves in OUT_DIR/run (config, log, run record, summary);
    ``seconds``: the loop's training time over all attempts (absent: not recorded); ``starts``: how
    many attempts the run record lists."""
    train = run_dir / "run"
    train.mkdir(parents=True, exist_ok=True)
    (train / "config.yaml").write_text(yaml.safe_dump({"method": {"pretrain": pretrain > 0},
                                                       "train": {"pretrain_iters": pretrain}}))
    vals = [(pretrain + 100, 0.4 + 0.1 * seed), (pretrain + 200, 0.6 + 0.1 * seed)]
    lines = [{"kind": "train", "iteration": 10, "loss/total": 1.0}]
    lines += [{"kind": "val", "iteration": it, "dice": d, "dice_per_class": {"RV": d}} for it, d in vals]
    (train / "log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    (train / "run.json").write_text(json.dumps({"environment": {"git_commit": "abc123", "torch": "2.13.0+cpu"},
                                                "starts": [{"from_iteration": 100 * i,
                                                            # a resumed run: each start on its own commit
                                                            **({"git_commit": f"{i + 1}" * 9} if starts > 1 else {})}
                                                           for i in range(starts)]}))
    (train / "metrics.json").write_text(json.dumps({
        "best": {"dice": vals[1][1], "dice_per_class": {"RV": vals[1][1]}}, "best_iteration": vals[1][0],
        "its_per_s": {"finetune": 2.5}, **({} if seconds is None else {"seconds": seconds}),
    }))


def test_publish_copies_the_runs_small_files_and_writes_tables_curves_and_readme(tmp_path: Path) -> None:
    from actionpp.replicate.logs import best_records, validation_curves
    from actionpp.replicate.publish import publish

    grid = rp.load_grid(_grid(tmp_path, {"SEED": [0, 1]}))
    runs = rp.expand(grid)
    out = tmp_path / "out"
    rp.run_grid(runs, out, executor=_fake_executor, log=None)
    for r in runs:
        # seed 0 was stopped and resumed: 600 s of training in all, its last notebook attempt far shorter
        _fake_training_dir(r.run_dir(out), r.axes["SEED"], pretrain=50,
                           seconds=600.0 if r.axes["SEED"] == 0 else None, starts=2 if r.axes["SEED"] == 0 else 1)
        (r.run_dir(out) / "run" / "last.pt").write_text("a checkpoint is never published")
    # (embedding samples need a real checkpoint: tests/test_replicate_score.py publishes one)
    dest = publish(out, runs, grid, tmp_path / "results" / "t", command="actionpp replicate grid.yaml",
                   embeddings=False)
    for r in runs:
        d = dest / r.run_id
        assert {p.name for p in d.iterdir()} == {"done", "metrics.json", "run"}
        assert {p.name for p in (d / "run").iterdir()} == {"config.yaml", "log.jsonl", "run.json", "metrics.json"}
        assert (d / "run" / "log.jsonl").read_bytes() == (r.run_dir(out) / "run" / "log.jsonl").read_bytes()
    # the published folder reads back like the grid folder it came from
    records = rp.collect(dest)
    assert [r.run_id for r in records] == sorted(r.run_id for r in runs)
    # validation curves are counted in fine-tuning iterations (pre-training of 50 subtracted)
    assert [row["finetune_iteration"] for row in validation_curves(records[0])] == [100, 200]
    # best-checkpoint table: Dice 0.6 and 0.7 for seeds 0 and 1 -> 65.0 +- 7.07 (sample std) in %
    best = rp.aggregate(best_records(records))
    mean, std = best[0].stats["dice_mean"]
    assert mean == pytest.approx(65.0) and std == pytest.approx(100 * 0.1 / 2**0.5)
    assert "optimistic" in (dest / "results_best.md").read_text()
    readme = (dest / "README.md").read_text()
    assert "`abc123` (2 runs)" in readme and "finished runs: 2 of 2" in readme
    assert "actionpp replicate grid.yaml" in readme
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[1:] for line in readme.splitlines()
            if line.startswith("| seed=")}
    assert rows["seed=0"][0] == "10.0 (resumed)"  # the loop's 600 s, not the last attempt's marker
    assert rows["seed=1"][0] == "0.0"  # no loop time recorded: the marker's (a fraction of a second here)
    # which code trained which run: every start's commit (short), or the run's one commit of older records
    assert rows["seed=0"][2] == "1111111, 2222222" and rows["seed=1"][2] == "abc123"
    # a run started on code that recorded no commit per start, resumed on code that does: the newer commit
    # did not train all of it, and the README does not credit it alone
    record = out / "seed=1" / "run" / "run.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "starts": [
        {"from_iteration": 0}, {"from_iteration": 100, "git_commit": "3" * 40}]}))
    dest = publish(out, runs, grid, tmp_path / "results" / "t", command="actionpp replicate grid.yaml",
                   embeddings=False)
    again = [line.split(" | ") for line in (dest / "README.md").read_text().splitlines() if line.startswith("| seed=1")]
    assert again[0][3] == "not recorded, 3333333"
    # the CPU of each start (runs on different CPUs are not bit-identical): older starts recorded none
    assert rows["seed=0"][3] == "not recorded" and again[0][4] == "not recorded"
    record.write_text(json.dumps({**json.loads(record.read_text()), "starts": [
        {"from_iteration": 0, "cpu": "AMD EPYC"}, {"from_iteration": 100, "cpu": "Intel(R) Xeon(R) Gold"}]}))
    dest = publish(out, runs, grid, tmp_path / "results" / "t", command="actionpp replicate grid.yaml",
                   embeddings=False)
    cpus = [line.split(" | ") for line in (dest / "README.md").read_text().splitlines() if line.startswith("| seed=1")]
    assert cpus[0][4] == "AMD EPYC, Intel(R) Xeon(R) Gold"
    assert "training time of all runs added up: 0.17 h" in readme
    assert (dest / "val_dice.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (dest / "results.csv").read_text().count("\n") == 2


# --------------------------------------------------------------------------- one process per run directory


def test_a_run_another_process_is_running_is_left_alone_and_reported_busy(tmp_path: Path, capsys) -> None:
    import fcntl

    grid = _grid(tmp_path, {"SEED": [0, 1]})
    runs = rp.expand(rp.load_grid(grid))
    out = tmp_path / "out"
    held = runs[0].run_dir(out)
    held.mkdir(parents=True)
    calls: list[str] = []

    def spy(nb: Path, output: Path, params: dict) -> None:
        calls.append(Path(params["OUT_DIR"]).name)
        _fake_executor(nb, output, params)

    with open(held / ".lock", "a") as fh:  # what a second runner's worker holds while it executes the run
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        outcomes = rp.run_grid(runs, out, executor=spy, log=None)
        assert [o.status for o in outcomes] == ["busy", "done"]
        assert calls == [runs[1].run_id]  # the held run was not executed, not even started
        assert str(held / ".lock") in (outcomes[0].error or "") and "left alone" in outcomes[0].error
        assert not (held / "done").exists() and not (held / "failed.json").exists()
        assert f"BUSY {runs[0].run_id}: another process is running it" in rp.summary(outcomes)
    # the holder gone, the run executes; the CLI says busy with exit code 1 while it is held
    assert [o.status for o in rp.run_grid(runs, out, executor=spy, log=None)] == ["done", "skipped"]
    shutil.rmtree(out)
    held.mkdir(parents=True)
    with open(held / ".lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert cli_main(["replicate", str(grid), "--out", str(out)]) == 1
    assert "another process is running it" in capsys.readouterr().out


SLEEPY = '''import pathlib, time
p = pathlib.Path(OUT_DIR)
p.mkdir(parents=True, exist_ok=True)
(p / "started").write_text("")
time.sleep(60)
(p / "ended").write_text("")'''


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited (nobody in this container may reap it)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux's")
def test_a_killed_runner_takes_its_pool_workers_with_it(tmp_path: Path) -> None:
    """SIGKILL of `actionpp replicate --jobs 2` mid-grid: its two workers end within seconds instead of
    training on (and starting the runs queued to them), and their run locks are free for a re-run."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('SEED: int = 0  # seed\nOUT_DIR: str = "out"  # output',
                                          metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(SLEEPY)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "sleepy.ipynb")
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"name": "sleepy", "notebooks": ["sleepy"], "axes": {"SEED": [0, 1, 2, 3]}}))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "actionpp.cli", "replicate", str(grid), "--out", str(out),
                             "--jobs", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(list(out.glob("*/started"))) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "the two first runs never started"
            time.sleep(0.5)
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
                cmd = (stat.parent / "cmdline").read_bytes()
            except (OSError, ValueError, IndexError):
                continue
            if ppid == proc.pid and b"spawn_main" in cmd:
                workers.append(int(stat.parent.name))
        assert len(workers) == 2, workers
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 20
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(w) for w in workers), "the pool workers outlived the killed runner"
        time.sleep(2)
        assert len(list(out.glob("*/started"))) == 2 and not list(out.glob("*/ended"))
        import fcntl

        for lock in out.glob("*/.lock"):  # nobody holds them: a re-run may resume those runs
            with open(lock, "a") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        for pid in [proc.pid, *workers]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_republishing_a_narrowed_grid_removes_the_runs_it_no_longer_has(tmp_path: Path) -> None:
    """Every reader of a published folder counts its run folders: a run dropped from the grid must not linger."""
    from actionpp.replicate.publish import publish

    grid = rp.load_grid(_grid(tmp_path, {"SEED": [0, 1]}))
    runs = rp.expand(grid)
    out = tmp_path / "out"
    rp.run_grid(runs, out, executor=_fake_executor, log=None)
    dest = publish(out, runs, grid, tmp_path / "results" / "t", embeddings=False)
    assert sorted(p.parent.name for p in dest.glob("*/done")) == ["seed=0", "seed=1"]
    (dest / "notes.txt").write_text("a reader's note beside the runs")  # not a run folder: left alone
    publish(out, [r for r in runs if r.axes["SEED"] == 0], grid, dest, embeddings=False)
    assert sorted(p.parent.name for p in dest.glob("*/done")) == ["seed=0"]
    assert (dest / "notes.txt").read_text() == "a reader's note beside the runs"


def test_a_failed_rerun_of_a_finished_run_keeps_its_result(tmp_path: Path) -> None:
    """--force (or a broken run re-scored) that fails must not lose the result the grid had."""
    grid = rp.load_grid(_grid(tmp_path, {"SEED": [0]}))
    (run,) = rp.expand(grid)
    out = tmp_path / "out"
    rp.run_grid([run], out, executor=_fake_executor, log=None)
    rd = run.run_dir(out)
    before = {n: (rd / n).read_bytes() for n in ("done", "metrics.json")}

    def failing(notebook: Path, output: Path, params: dict) -> None:
        raise RuntimeError("the engine refused the run folder")

    (o,) = rp.run_grid([run], out, executor=failing, force=True, log=None)
    assert o.status == "failed" and "refused" in (o.error or "")
    assert {n: (rd / n).read_bytes() for n in ("done", "metrics.json")} == before
    assert rp.run_status(run, out) == "done"


def test_markdown_section_cuts_at_the_heading_and_nests_it():
    """The docs and notebook 06 quote a runner file from one '## ' heading on: that heading becomes '#### ',
    later headings and the text before stay as they were / are left out; a missing heading gives None."""
    text = "# Title\n\nintro\n\n## Where the update comes from, per budget\n\nline one\n\n## Next\n\nmore\n"
    assert rp.markdown_section(text, "## Where the update comes from") == (
        "#### Where the update comes from, per budget\n\nline one\n\n## Next\n\nmore")
    assert rp.markdown_section("## Where x\nbody", "## Where", level=3) == "### Where x\nbody"
    assert rp.markdown_section(text, "## Absent") is None
    assert rp.markdown_section("intro ## Where x", "## Where") is None  # only at the start of a line
    with pytest.raises(ValueError, match="'## ' heading"):
        rp.markdown_section(text, "Where")


def test_grid_variants_gathers_the_blocks_and_refuses_one_name_defined_twice(tmp_path: Path):
    """The publisher names what each variant changes from the grid: variants of every block, by name."""
    _write_notebook(tmp_path)
    g = {"name": "t", "notebooks": ["fake_train"], "blocks": [
        {"axes": {"SEED": [0]}, "variants": [{"name": "a", "METHOD": "x", "LR": 0.1}]},
        {"axes": {"SEED": [1]}, "variants": [{"name": "a", "METHOD": "x", "LR": 0.1}, {"name": "b", "LR": 0.2}]}]}
    p = tmp_path / "grid.yaml"
    p.write_text(yaml.safe_dump(g, sort_keys=False))
    assert rp.grid_variants(rp.load_grid(p)) == {"a": {"METHOD": "x", "LR": 0.1}, "b": {"LR": 0.2}}
    g["blocks"][1]["variants"][0]["LR"] = 0.3
    p.write_text(yaml.safe_dump(g, sort_keys=False))
    with pytest.raises(rp.GridError, match="variant 'a' is defined twice, differently"):
        rp.grid_variants(rp.load_grid(p))
