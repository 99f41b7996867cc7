"""One grid's runs beside another grid's runs of the same method, budget and seed (actionpp.replicate.across),
worked by hand; the grid key that asks for it, and the section the publisher writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from actionpp.replicate import GridError, load_grid
from actionpp.replicate.across import across_markdown, across_rows, across_section
from actionpp.replicate.analysis import write_paired
from actionpp.replicate.paired import ScoredRun


def _run(method: str, seed: int, test: float, val: float | None = None, labelled: int = 7,
         variant: str | None = None, which: str = "last") -> ScoredRun:
    scores = {"test": {"student": {"dice_mean": test}}}
    if val is not None:
        scores["val"] = {"student": {"dice_mean": val}}
    return ScoredRun(f"{variant or method}_{labelled}_{seed}", method, variant, labelled, seed, scores, which=which)


def test_differences_are_paired_by_method_budget_and_seed_and_make_no_call():
    mine = [_run("actionpp", s, t) for s, t in enumerate([0.80, 0.82, 0.81])]
    mine += [_run("action", 0, 0.70), _run("supervised", 0, 0.60)]  # supervised: not in the other grid
    mine += [_run("actionpp", 0, 0.99, variant="official_teacher")]  # a variant: left out
    theirs = [_run("actionpp", s, t) for s, t in enumerate([0.78, 0.79, 0.80, 0.50])]  # seed 3: only theirs
    theirs += [_run("actionpp", 0, 0.10, variant="separate_forward")]  # the other grid's variant: left out too
    theirs += [_run("mean_teacher", 5, 0.6)]  # no seed shared with this grid's mean teacher: no row
    mine += [_run("mean_teacher", 0, 0.6)]
    theirs += [_run("action", 0, 0.72, labelled=3), _run("action", 0, 0.71), _run("supervised", 0, 0.6, labelled=3)]
    rows = across_rows(mine, theirs, splits=("test",))
    assert [(r.a, r.labelled, r.cls) for r in rows] == [("actionpp", 7, "mean"), ("action", 7, "mean")]
    pp, a = rows
    # ACTION++: d = 2, 3, 1 points over seeds 0-2 (seed 3 has no partner): mean 2, sd 1, t(2) = 4.303:
    # 2 +- 4.303 / sqrt 3 = 2 +- 2.484
    assert pp.seeds == (0, 1, 2) and (pp.ahead, pp.behind) == (3, 0)
    assert (pp.paired.mean, pp.paired.lo, pp.paired.hi) == pytest.approx((2.0, -0.484, 4.484), abs=1e-3)
    assert (pp.mean_a, pp.mean_b) == pytest.approx((81.0, 79.0))
    # ACTION: one seed at 7 labelled patients (the 3-patient run has no partner here): -1 point, no interval
    assert a.paired.n == 1 and a.paired.mean == pytest.approx(-1.0) and (a.ahead, a.behind) == (0, 1)

    md = "\n".join(across_markdown(rows, "grid_b", "grid_a"))
    assert md.startswith("### Beside `grid_a`: the same method, budget and seed (a description, no call)")
    assert "- ACTION++ at 7 labelled patients: +2.0 [-0.5, +4.5] on test (higher on 3 of 3 seeds; mean Dice " \
           "81.0 against 79.0)." in md
    assert "| ACTION | 7 | test | mean | 1 | -1.0 | [-inf, +inf] | 0 / 1 | 70.0 | 71.0 |" in md
    assert "ahead" not in md and "behind" not in md  # a description: not the verdicts' words
    assert across_markdown([], "grid_b", "grid_a") == []


def test_grids_scoring_different_checkpoints_or_classes_are_refused_naming_the_side():
    with pytest.raises(ValueError, match="different checkpoints"):
        across_rows([_run("action", 0, 0.7)], [_run("action", 0, 0.7, which="best")])
    mine = [ScoredRun("a", "action", None, 7, 0, {"test": {"student": {"dice_mean": 0.7}}}, classes=("RV", "Myo"))]
    theirs = [ScoredRun("a", "action", None, 7, 0, {"test": {"student": {"dice_mean": 0.6}}}, classes=("BG", "RV"))]
    with pytest.raises(ValueError, match="different classes"):
        across_rows(mine, theirs)
    twice = [theirs[0], ScoredRun("b", "action", None, 7, 0, {"test": {"student": {"dice_mean": 0.5}}})]
    with pytest.raises(ValueError, match="^the other grid's runs: runs a and b are both action"):
        across_rows([_run("action", 0, 0.7)], twice)


def test_the_grid_key_names_a_grid_and_needs_scores(tmp_path: Path):
    (tmp_path / "nb.ipynb").write_text("{}")
    base = {"notebooks": ["nb"], "axes": {"SEED": [0]}}
    score = {"run": "run", "which": "last", "splits": ["test"], "weights": ["student"]}
    assert load_grid({**base, "score": score, "describe_against": "acdc_lite_power"},
                     base=tmp_path).describe_against == "acdc_lite_power"
    assert load_grid({**base, "score": score}, base=tmp_path).describe_against is None
    with pytest.raises(GridError, match="describe_against must name another grid"):
        load_grid({**base, "score": score, "describe_against": "../elsewhere"}, base=tmp_path)
    with pytest.raises(GridError, match="needs a 'score' block"):
        load_grid({**base, "describe_against": "acdc_lite_power"}, base=tmp_path)
    with pytest.raises(GridError, match="names this grid itself"):
        load_grid({**base, "name": "g", "score": score, "describe_against": "g"}, base=tmp_path)


def _write(out: Path, method: str, seed: int, test: float) -> None:
    rid = f"method={method}_lab=7_seed={seed}"
    (out / rid / "run").mkdir(parents=True)
    (out / rid / "done").write_text(json.dumps({"run_id": rid, "parameters": [],
                                                "axes": {"METHOD": method, "LABELLED_PATIENTS": 7, "SEED": seed}}))
    one = {"RV": test, "Myo": test, "LV": test}
    (out / rid / "metrics.json").write_text(json.dumps({"dataset": "acdc", "classes": ["RV", "Myo", "LV"],
                                                        "dice": one, "jaccard": one, "hd95": one, "asd": one,
                                                        "protocol": {}}))
    entry = {"dice_mean": test, "dice": one, "n_volumes": 40}
    (out / rid / "scores.json").write_text(json.dumps({"format": 1, "which": "last", "classes": ["RV", "Myo", "LV"],
                                                       "scores": {"test": {"student": entry}}}))


def test_paired_md_sets_the_runs_beside_the_other_grids_folder_or_says_why_not(tmp_path: Path):
    for seed, (b, a) in enumerate([(0.75, 0.70), (0.74, 0.71)]):
        _write(tmp_path / "new", "action", seed, b)
        _write(tmp_path / "old", "action", seed, a)
    _write(tmp_path / "old", "action", 2, 0.72)
    (tmp_path / "old" / "method=action_lab=7_seed=2" / "scores.json").write_text("{trunc")  # unreadable
    md = write_paired(tmp_path / "new", tmp_path / "pub" / "new", against=("new", "old", tmp_path / "old"))["markdown"]
    # d = 5 and 3 points: mean 4, sd 1.414, t(1) = 12.706: 4 +- 12.706
    assert "- ACTION at 7 labelled patients: +4.0 [-8.7, +16.7] on test (higher on 2 of 2 seeds; mean Dice " \
           "74.5 against 70.5)." in md
    assert "d = this grid's run (`new`) - `old`'s run of the same method, budget and seed, Dice points of the " \
           "last checkpoint's student" in md
    # the other grid's unreadable run is named (with the grid's name, not this machine's path), not dropped
    left = md.split("Left out of `old` (unreadable): ")[1]
    assert "method=action_lab=7_seed=2" in left and "unreadable" in left and str(tmp_path) not in left
    missing = write_paired(tmp_path / "new", tmp_path / "pub" / "new", against=("new", "gone", tmp_path / "gone"))
    assert "Not read: no published folder `gone` beside this one." in missing["markdown"]
    assert across_section([], "new", "gone", tmp_path / "gone")[-1].startswith("Not read:")
