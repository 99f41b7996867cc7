"""Paired comparisons over seeds (actionpp.replicate.paired): intervals, pairing, calls, noise, files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from scipy import stats

from actionpp.replicate.analysis import looks_figure, write_paired
from actionpp.replicate.noise import compare_spreads, equal_spread_test, noise_rows, noise_summary, pooled_sd
from actionpp.replicate.paired import (
    ScoredRun,
    collect_scored,
    describe_variants,
    grid_design,
    looks,
    paired_interval,
    paired_rows,
    planned_pairs,
    variant_rows,
    variant_sentences,
    verdicts,
    welch_interval,
)


def test_paired_interval_by_hand():
    iv = paired_interval([1.0, 2.0, 3.0])  # mean 2, sd 1, n 3: 2 +- t_{0.975, 2} / sqrt(3)
    half = 4.302652729911275 / math.sqrt(3)  # t_{0.975, 2} = 4.3027 (tables)
    assert (iv.mean, iv.sd, iv.n, iv.df) == (2.0, 1.0, 3, 2)
    assert iv.lo == pytest.approx(2 - half, abs=1e-9) and iv.hi == pytest.approx(2 + half, abs=1e-9)
    assert not iv.excludes_zero  # -0.48 .. 4.48
    assert paired_interval([1.0, 1.2, 0.8, 1.1]).excludes_zero
    one = paired_interval([5.0])
    assert one.mean == 5.0 and one.lo == -math.inf and one.hi == math.inf  # one seed: no interval
    assert paired_interval([]).n == 0


def test_welch_interval_by_hand():
    # a: mean 2, variance 1; b: mean 6, variance 4; se^2 = 1/3 + 4/3 = 5/3;
    # df = (5/3)^2 / ((1/3)^2 / 2 + (4/3)^2 / 2) = (25/9) / (17/18) = 50/17
    iv = welch_interval([1.0, 2.0, 3.0], [4.0, 6.0, 8.0])
    assert iv.mean == -4.0 and iv.df == pytest.approx(50 / 17)
    half = stats.t.ppf(0.975, 50 / 17) * math.sqrt(5 / 3)
    assert (iv.lo, iv.hi) == (pytest.approx(-4 - half), pytest.approx(-4 + half))


def _run(method: str, seed: int, test: float, val: float, labelled: int = 7, curve=(), teacher=None, rv=None,
         variant=None) -> ScoredRun:
    def entry(mean: float) -> dict:
        return {"dice_mean": mean, "dice": {"RV": mean if rv is None else rv, "Myo": mean, "LV": mean}}

    return ScoredRun(f"{method}_{labelled}_{seed}", method, variant, labelled, seed,
                     {"test": {"student": entry(test), "teacher": entry(test if teacher is None else teacher)},
                      "val": {"student": entry(val)}}, tuple(curve), ("RV", "Myo", "LV"))


def test_pairs_are_the_shared_seeds_and_the_unpaired_interval_uses_every_run():
    runs = [
        _run("actionpp", 0, 0.80, 0.75), _run("actionpp", 1, 0.82, 0.76), _run("actionpp", 2, 0.78, 0.74),
        _run("action", 0, 0.79, 0.70), _run("action", 1, 0.80, 0.71), _run("action", 2, 0.79, 0.70),
        _run("action", 3, 0.50, 0.50),  # no ACTION++ seed 3: not a pair, but one of ACTION's runs
        _run("actionpp", 0, 0.10, 0.10, variant="no_ats"),  # an ablation: never in the main comparison
    ]
    rows = paired_rows(runs)
    test = next(r for r in rows if (r.a, r.b, r.split, r.cls) == ("actionpp", "action", "test", "mean"))
    assert test.seeds == (0, 1, 2) and test.paired.n == 3
    assert test.paired.mean == pytest.approx((1 + 2 - 1) / 3)  # d = +1, +2, -1 Dice points
    assert (test.ahead, test.behind) == (2, 1) and test.call == "not distinguishable"
    # the unpaired interval of the same three seeds (what pairing buys): ACTION's unpaired seed 3 is not in it
    assert test.unpaired.n == 6 and test.unpaired.mean == pytest.approx(test.paired.mean)
    val = next(r for r in rows if (r.a, r.b, r.split, r.cls) == ("actionpp", "action", "val", "mean"))
    # d = 5, 5, 4 on val: mean 14/3, sd 1/sqrt(3), half-width 4.303 / 3 = 1.43: excludes 0
    assert val.paired.mean == pytest.approx(14 / 3) and val.call == "ahead"
    assert {r.cls for r in rows} == {"mean", "RV", "Myo", "LV"}
    assert not [r for r in rows if r.b == "supervised"]  # no supervised run: no such comparison
    (sentence,) = verdicts(rows)
    assert sentence.startswith("ACTION++ is not distinguishable from ACTION at 7 labelled patients: d = +0.7")
    assert "ACTION++ ahead on 2 of 3" in sentence and "on val d = +4.7" in sentence and "call: ahead" in sentence


def test_noise_rows_teacher_and_the_mid_run_dip_by_hand():
    runs = [_run("action", 0, 0.70, 0.7, curve=(0.5, 0.6, 0.7, 0.8), teacher=0.72),
            _run("action", 1, 0.74, 0.7, curve=(0.9, 0.6, 0.9), teacher=0.73)]
    (row,) = noise_rows(runs)
    assert row["n"] == 2 and row["test_student"] == pytest.approx(72.0) and row["test_teacher"] == pytest.approx(72.5)
    assert row["sd_test_student"] == pytest.approx(math.sqrt(8.0))  # 70, 74: sample std 2 sqrt 2
    assert row["sd_test_teacher"] == pytest.approx(math.sqrt(0.5))  # 72, 73
    # last vs mean of the last three: seed 0: 0.8 vs 0.7 -> 10 points; seed 1: 0.9 vs 0.8 -> 10 points
    assert row["dip"] == pytest.approx(10.0)
    assert row["sd_val_last"] == pytest.approx(math.sqrt(50.0))  # 80, 90


def test_pooled_sd_by_hand():
    sd, df = pooled_sd([[70.0, 74.0], [60.0, 66.0, 63.0], [50.0]])  # s^2 = 8 (df 1), 9 (df 2); one value: no df
    assert df == 3 and sd == pytest.approx(math.sqrt((8 + 2 * 9) / 3))
    assert pooled_sd([[1.0], [2.0]]) == (pytest.approx(math.nan, nan_ok=True), 0)


def test_equal_spread_test_by_hand():
    # student 70, 74 | 60, 66, 63 and teacher 72, 73 | 60, 63, 63, centred per group: student -2, 2 | -3, 3, 0,
    # teacher -0.5, 0.5 | -2, 1, 1; u = x + y = -2.5, 2.5, -5, 4, 1 and v = x - y = -1.5, 1.5, -1, 2, -1:
    # sum uv = 19.5 (= 26 - 6.5, the difference of the sums of squares), sum u^2 = 54.5, sum v^2 = 10.5
    r, p, df = equal_spread_test([[70, 74], [60, 66, 63]], [[72, 73], [60, 63, 63]])
    assert df == 5 - 2 - 1 and r == pytest.approx(19.5 / math.sqrt(54.5 * 10.5))
    assert p == pytest.approx(1 - r)  # t with 2 df: P(|T| > r sqrt(2 / (1 - r^2))) = 1 - |r|
    r2, p2, _ = equal_spread_test([[72, 73], [60, 63, 63]], [[70, 74], [60, 66, 63]])
    assert r2 == pytest.approx(-r) and p2 == pytest.approx(p)  # the other way round: the sign flips
    # proportional spreads, x = 3 y around each mean: u = 4y, v = 2y, r = 1: p = 0
    assert equal_spread_test([[3, 9, 6], [0, 3]], [[1, 3, 2], [0, 1]])[:2] == (pytest.approx(1.0), 0.0)
    assert math.isnan(equal_spread_test([[1, 2]], [[1, 2]])[1])  # one group of two: df 0
    assert math.isnan(equal_spread_test([[1, 2, 3], [4, 6]], [[1, 2, 3], [4, 6]])[1])  # identical: v is 0


def test_noise_summary_compares_teacher_and_student_on_the_same_runs():
    runs = [_run("action", 0, 0.70, 0.7, curve=(0.5, 0.6, 0.7, 0.8), teacher=0.72),
            _run("action", 1, 0.74, 0.7, curve=(0.9, 0.6, 0.9), teacher=0.73),
            _run("actionpp", 0, 0.60, 0.6, teacher=0.60), _run("actionpp", 1, 0.66, 0.6, teacher=0.63),
            _run("actionpp", 2, 0.63, 0.6, teacher=0.63)]
    # supervised has no teacher: its runs are in neither side of the teacher comparison
    runs += [ScoredRun(f"supervised_7_{s}", "supervised", None, 7, s, {"test": {"student": {"dice_mean": v}}})
             for s, v in ((0, 0.40), (1, 0.90))]
    teacher, mean3, primary = noise_summary(runs)
    # student 70, 74 (s^2 8) and 60, 66, 63 (s^2 9): pooled (8 + 18) / 3; teacher 72, 73 (0.5) and 60, 63, 63 (3):
    # pooled (0.5 + 6) / 3; the ratio of the sds is sqrt(6.5 / 26) = 0.5 exactly
    assert "5 runs scored both ways in 2 method x budget groups" in teacher and "3 degrees of freedom" in teacher
    t_sd, s_sd = math.sqrt(6.5 / 3), math.sqrt(26 / 3)
    assert f"sd {t_sd:.2f} Dice points for the teacher, {s_sd:.2f} for the student" in teacher
    assert "the teacher is 50 % less noisy than the student" in teacher
    # Pitman-Morgan on these runs: 2 degrees of freedom, p = 1 - |r| with r = 19.5 / sqrt(54.5 * 10.5) (above)
    assert f"2 degrees of freedom) gives p = {1 - 19.5 / math.sqrt(54.5 * 10.5):.2f}: a difference this large is " \
           "well within what equal spreads give" in teacher
    # teacher - student per run: +2, -1, 0, -3, 0
    assert "the teacher scores -0.40 points against the student (range -3.00 to +2.00)" in teacher
    # only ACTION's runs have three validations: last 80, 90 and three-point means 70, 80: the same spread
    assert "2 runs in 1 group, 1 degree of freedom" in mean3 and "sd 7.07 against 7.07" in mean3
    assert "too few runs, or no spread, for a test of equal spread" in mean3  # 2 runs in 1 group: df 0
    assert "the three-point mean is as noisy as the last validation" in mean3 and "10.00 points" in mean3
    # teachers' d per seed: 60 - 72, 63 - 73 = -12, -10: mean -11 +- t_{0.975, 1} (12.706) * sqrt(2) / sqrt(2)
    assert primary.startswith("ACTION++ - ACTION at 7 labelled patients scored with the EMA teachers instead: "
                              "d = -11.0 [-23.7, +1.7] (2 pairs, width 25.4 against the student's 25.4")
    assert "the rule's number is the student's" in primary


def test_noise_summary_says_when_there_is_nothing_to_pool():
    teacher, mean3 = noise_summary([_run("action", 0, 0.70, 0.7), _run("actionpp", 0, 0.71, 0.7)])
    assert "no method and budget has two runs scored both ways yet" in teacher
    assert "no method and budget has two runs with three validations yet" in mean3


def _write_run(out: Path, rid: str, axes: dict, test: float, scores: bool = True, finished: str | None = None) -> None:
    rd = out / rid
    (rd / "run").mkdir(parents=True)
    marker = {"run_id": rid, "axes": axes, "parameters": []} | ({"finished": finished} if finished else {})
    (rd / "done").write_text(json.dumps(marker))
    one = {"RV": test, "Myo": test, "LV": test}
    (rd / "metrics.json").write_text(json.dumps({"dataset": "acdc", "classes": ["RV", "Myo", "LV"], "dice": one,
                                                 "jaccard": one, "hd95": one, "asd": one, "protocol": {}}))
    (rd / "run" / "log.jsonl").write_text(json.dumps({"kind": "val", "dice": test}) + "\n")
    if scores:
        entry = {"dice_mean": test, "dice": one}
        (rd / "scores.json").write_text(json.dumps({"format": 1, "which": "last", "classes": ["RV", "Myo", "LV"],
                                                    "scores": {"test": {"student": entry}, "val": {"student": entry}}}))


def test_write_paired_reads_a_grid_folder_and_writes_tables_and_figure(tmp_path: Path):
    out = tmp_path / "grid"
    for seed, (a, b) in enumerate([(0.80, 0.78), (0.81, 0.78), (0.79, 0.78)]):
        _write_run(out, f"method=actionpp_lab=3_seed={seed}", {"METHOD": "actionpp", "LABELLED_PATIENTS": 3,
                                                                "SEED": seed}, a)
        _write_run(out, f"method=action_lab=3_seed={seed}", {"METHOD": "action", "LABELLED_PATIENTS": 3,
                                                              "SEED": seed}, b)
    _write_run(out, "method=action_lab=3_seed=9", {"METHOD": "action", "LABELLED_PATIENTS": 3, "SEED": 9}, 0.1,
               scores=False)
    problems: list[str] = []
    assert len(collect_scored(out, problems)) == 6
    assert problems and "seed=9" in problems[0] and "scores.json: missing" in problems[0]
    res = write_paired(out, tmp_path / "pub")
    assert res["runs"] == 6 and sorted(res["files"]) == ["paired.csv", "paired.md", "paired.png"]
    # d = 2, 3, 1 points: mean 2, sd 1, interval 2 +- 2.48: not distinguishable at n = 3
    assert res["verdicts"][0].startswith("ACTION++ is not distinguishable from ACTION at 3 labelled patients: d = +2.0")
    csv_lines = (tmp_path / "pub" / "paired.csv").read_text().splitlines()
    assert csv_lines[0].startswith("comparison,role,labelled,split,class,n_pairs")
    assert any(line.startswith("actionpp - action,primary,3,test,mean,3,0 1 2,2.0000,1.0000") for line in csv_lines)
    assert (tmp_path / "pub" / "paired.png").read_bytes()[:4] == b"\x89PNG"
    # these runs carry no teacher scores: the noise question is answered in words, under the noise table
    md = (tmp_path / "pub" / "paired.md").read_text()
    assert "**Less noisy estimates?**" in md and res["noise_summary"][0] in md
    assert "no method and budget has two runs scored both ways yet" in res["noise_summary"][0]
    assert write_paired(tmp_path / "empty", tmp_path / "none")["files"] == []
    assert not (tmp_path / "none").exists()


def test_a_zero_width_interval_is_never_a_call_and_ambiguous_runs_are_refused():
    assert not paired_interval([0.4, 0.4]).excludes_zero  # no spread: no estimate of the noise, no call
    runs = [_run("actionpp", 0, 0.8, 0.8), _run("action", 0, 0.7, 0.7), _run("action", 0, 0.6, 0.6)]
    with pytest.raises(ValueError, match="both action at 7 labelled patients, seed 0"):
        paired_rows(runs)
    best = ScoredRun("b", "action", None, 7, 1, {"test": {"student": {"dice_mean": 0.5, "dice": {}}}}, which="best")
    with pytest.raises(ValueError, match="different checkpoints"):
        paired_rows([_run("actionpp", 0, 0.8, 0.8), best])


def test_write_paired_reads_only_the_runs_it_is_given(tmp_path: Path):
    out = tmp_path / "grid"
    for seed in (0, 1, 2):
        _write_run(out, f"method=actionpp_lab=3_seed={seed}", {"METHOD": "actionpp", "LABELLED_PATIENTS": 3,
                                                                "SEED": seed}, 0.8)
        _write_run(out, f"method=action_lab=3_seed={seed}", {"METHOD": "action", "LABELLED_PATIENTS": 3,
                                                              "SEED": seed}, 0.7 if seed < 2 else 0.95)
    only = [f"method={m}_lab=3_seed={s}" for m in ("actionpp", "action") for s in (0, 1)]
    res = write_paired(out, tmp_path / "pub", only=only)
    assert res["runs"] == 4 and "d = +10.0" in res["verdicts"][0]  # seed 2 (the run dropped from the grid) is out


def test_a_verdict_before_the_planned_pairs_are_in_says_it_is_interim():
    runs = [_run("actionpp", 0, 0.80, 0.75), _run("action", 0, 0.79, 0.70), _run("actionpp", 1, 0.82, 0.76),
            _run("action", 1, 0.80, 0.71), _run("actionpp", 0, 0.5, 0.5, labelled=3),
            _run("action", 0, 0.4, 0.4, labelled=3)]
    rows = paired_rows(runs)
    seven, three = verdicts(rows, planned={7: 8, 3: 1})
    # 7 patients: d = +1, +2 -> 2 of the 8 planned pairs; 3 patients: its one planned pair is in
    assert seven.endswith("Interim: 2 of the 8 planned pairs; the call is provisional until all are in.")
    # where the difference sits: each method's mean Dice over the paired seeds (test: 50 and 40 points)
    assert "(test, 1 paired seed, ACTION++ ahead on 1 of 1; mean Dice ACTION++ 50.0, ACTION 40.0)." in three
    assert "Interim" not in three
    assert "; mean Dice ACTION++ 81.0, ACTION 79.5)" in seven  # (80 + 82) / 2, (79 + 80) / 2
    assert not any("Interim" in v for v in verdicts(rows))  # no plan given: nothing said
    design = [("actionpp", None, 7, s) for s in range(8)] + [("action", None, 7, s) for s in range(8)]
    design += [("actionpp", None, 3, 0), ("action", None, 3, 0), ("action", None, 3, 1)]
    design += [("actionpp", "official_recipe", 7, 8), ("supervised", None, 7, 0)]
    assert planned_pairs(design) == {7: 8, 3: 1}


def test_grid_design_reads_the_first_notebook_and_leaves_out_runs_of_unknown_budget():
    from types import SimpleNamespace as NS

    runs = [NS(axes={"METHOD": "actionpp"}, parameters=({"METHOD": "actionpp", "LABELLED_PATIENTS": 7, "SEED": 3},)),
            NS(axes={"VARIANT": "no_ats"}, parameters=({"METHOD": "actionpp", "LABELLED_PATIENTS": 7, "SEED": 0},)),
            NS(axes={}, parameters=({"METHOD": "action", "SEED": 1},)),  # no budget parameter: left out
            NS(axes={}, parameters=())]
    assert grid_design(runs) == [("actionpp", None, 7, 3), ("actionpp", "no_ats", 7, 0)]


def test_less_noisy_words_every_case():
    assert compare_spreads("A", 1.0, 2.0, "B") == "A is 50 % less noisy than B"
    assert compare_spreads("A", 3.0, 2.0, "B") == "A is 50 % more noisy than B"
    assert compare_spreads("A", 1.996, 2.0, "B") == "A is as noisy as B"  # 0.2 %: would print as "0 % less"
    assert compare_spreads("A", 0.0, 0.0, "B") == "A is as noisy as B"
    assert compare_spreads("A", 1.0, 0.0, "B") == "A is noisier than B (sd 0)"
    assert compare_spreads("A", math.nan, 1.0, "B") == "A cannot be compared with B"


def test_grid_design_refuses_values_that_are_not_a_budget():
    from types import SimpleNamespace as NS

    runs = [NS(axes={}, parameters=({"METHOD": "action", "LABELLED_PATIENTS": None, "SEED": 0},)),
            NS(axes={}, parameters=({"METHOD": None, "LABELLED_PATIENTS": 3, "SEED": 0},)),
            NS(axes={}, parameters=({"METHOD": "action", "LABELLED_PATIENTS": 3, "SEED": 1},))]
    assert grid_design(runs) == [("action", None, 3, 1)]


def test_a_nan_validation_is_not_part_of_the_curve(tmp_path: Path):
    out = tmp_path / "grid"
    _write_run(out, "method=action_lab=3_seed=0", {"METHOD": "action", "LABELLED_PATIENTS": 3, "SEED": 0}, 0.5)
    entries = [{"kind": "val", "dice": 0.5}, {"kind": "val", "dice": float("nan")}, {"kind": "train", "dice": 0.9},
               {"kind": "val", "dice": 0.7}]
    (out / "method=action_lab=3_seed=0" / "run" / "log.jsonl").write_text("\n".join(json.dumps(e) for e in entries))
    (run,) = collect_scored(out)
    assert run.val_curve == (0.5, 0.7)


def test_a_variant_is_paired_with_its_own_methods_runs_of_the_same_seeds():
    """variant - method at the variant's budget over the seeds both have; main comparisons leave variants out."""
    runs = [_run("actionpp", s, t, v, labelled=3) for s, t, v in ((0, 0.50, 0.40), (1, 0.60, 0.45), (2, 0.9, 0.9))]
    runs += [_run("actionpp", 0, 0.70, 0.75), _run("action", 0, 0.72, 0.74)]
    runs += [_run("actionpp", 0, 0.52, 0.50, labelled=3, variant="official_networks"),
             _run("actionpp", 1, 0.61, 0.60, labelled=3, variant="official_networks"),
             _run("actionpp", 0, 0.69, 0.70, variant="no_ats"),
             _run("mean_teacher", 0, 0.5, 0.5, variant="orphan")]  # no mean teacher run to pair with: left out
    rows = variant_rows(runs)
    mean = {(r.a, r.labelled, r.split): r for r in rows if r.cls == "mean"}
    assert list(mean) == [("no_ats", 7, "val"), ("no_ats", 7, "test"),
                          ("official_networks", 3, "val"), ("official_networks", 3, "test")]
    val = mean[("official_networks", 3, "val")]  # d = 10, 15 (seed 2 has no variant run): 12.5 +- t_1 * 3.54 / 1.41
    half = 12.706204736174694 * math.sqrt(12.5) / math.sqrt(2)
    assert (val.b, val.seeds, val.paired.mean, val.ahead) == ("actionpp", (0, 1), pytest.approx(12.5), 2)
    assert (val.paired.lo, val.paired.hi) == (pytest.approx(12.5 - half), pytest.approx(12.5 + half))
    assert val.call == "not distinguishable"
    assert mean[("official_networks", 3, "test")].paired.mean == pytest.approx(1.5)
    one = mean[("no_ats", 7, "val")]
    assert one.paired.mean == pytest.approx(-5.0) and one.paired.n == 1
    assert all(r.role == "variant" for r in rows) and not [r for r in paired_rows(runs) if r.role == "variant"]
    described = describe_variants({
        "official_networks": {"METHOD": "actionpp", "OVERRIDES": ["train.teacher_mode=train",
                                                                  "train.finetune_forward=separate"]},
        "no_ats": {"METHOD": "actionpp", "ATS": "off"}})
    said = variant_sentences(rows, described)
    assert said[0] == "no_ats (ACTION++ with ATS=off) against ACTION++ at 7 labelled patients: d = -5.0 Dice points " \
                      "on val (1 seed: no interval); d = -1.0 Dice points on test (1 seed: no interval)."
    assert said[1].startswith("official_networks (ACTION++ with train.teacher_mode=train, "
                              "train.finetune_forward=separate) against ACTION++ at 3 labelled patients: d = +12.5 "
                              f"Dice points [{12.5 - half:+.1f}, {12.5 + half:+.1f}] on val (2 paired seeds, "
                              "the variant ahead on 2 of 2; call: not distinguishable); d = +1.5 Dice points [")


def test_the_published_analysis_names_each_variant_and_what_it_changes(tmp_path: Path):
    out = tmp_path / "grid"
    for seed in (0, 1):
        _write_run(out, f"method=actionpp_lab=3_seed={seed}", {"METHOD": "actionpp", "LABELLED_PATIENTS": 3,
                                                                "SEED": seed}, 0.4)
        _write_run(out, f"variant=official_networks_lab=3_seed={seed}",
                   {"VARIANT": "official_networks", "LABELLED_PATIENTS": 3, "SEED": seed}, 0.5 + 0.1 * seed)
        metrics = json.loads((out / f"variant=official_networks_lab=3_seed={seed}" / "metrics.json").read_text())
        metrics["method"] = "actionpp"  # what 04_train writes; the variant's axes do not name the method
        (out / f"variant=official_networks_lab=3_seed={seed}" / "metrics.json").write_text(json.dumps(metrics))
    res = write_paired(out, tmp_path / "pub", described={"official_networks": "train.teacher_mode=train"})
    md = (tmp_path / "pub" / "paired.md").read_text()
    assert "### Ablation variants beside their method" in md
    assert ("- official_networks (ACTION++ with train.teacher_mode=train) against ACTION++ at 3 labelled patients: "
            "d = +15.0 Dice points [") in md  # d = 10, 20 on val
    assert "| official_networks | ACTION++ | 3 | val | 2 | +15.0 |" in md
    assert [r.a for r in res["variants"]][:1] == ["official_networks"] and res["verdicts"] == []
    csv_text = (tmp_path / "pub" / "paired.csv").read_text()
    assert "official_networks - actionpp,variant,3,val,mean,2,0 1,15.0000" in csv_text


def test_variant_sentences_say_what_is_missing_and_bad_variant_runs_are_named():
    """No shared seed on val: said, not '1 seed'; no val score: test alone; two runs of one variant and seed,
    or a variant scoring another checkpoint: refused with the run ids, and the main analysis still written."""
    base = [_run("actionpp", 0, 0.70, 0.75), _run("actionpp", 1, 0.71, 0.74)]
    v = ScoredRun("v0", "actionpp", "x", 7, 0, {"test": {"student": {"dice_mean": 0.72, "dice": {}}}})
    said = variant_sentences(variant_rows([*base, v]))
    assert said == ["x against ACTION++ at 7 labelled patients: no val score; d = +2.0 Dice points on test "
                    "(1 seed: no interval)."]
    def one(rid: str, variant: str | None, seed: int, split: str) -> ScoredRun:
        return ScoredRun(rid, "actionpp", variant, 7, seed, {split: {"student": {"dice_mean": 0.5, "dice": {}}}})

    # the variant has val on seed 0, its method on seed 1 only: both have val scores, no seed in common
    skewed = [one("y0", "y", 0, "val"), one("y1", "y", 1, "test"), one("b0", None, 0, "test"),
              one("b1", None, 1, "val")]
    assert variant_sentences(variant_rows(skewed)) == [
        "y against ACTION++ at 7 labelled patients: no seed scored on val for both; no seed scored on test for both."]
    twice = ScoredRun("v0b", "actionpp", "x", 7, 0, {"test": {"student": {"dice_mean": 0.6, "dice": {}}}})
    with pytest.raises(ValueError, match="v0 and v0b are both variant x at 7 labelled patients, seed 0"):
        variant_rows([*base, v, twice])
    best = ScoredRun("vb", "actionpp", "z", 7, 1, {"val": {"student": {"dice_mean": 0.6, "dice": {}}}}, which="best")
    with pytest.raises(ValueError, match=r"variant z at 7 labelled patients: vb \(best\) score another checkpoint"):
        variant_rows([*base, best])


def test_a_variant_that_cannot_be_read_does_not_cost_the_main_analysis(tmp_path: Path):
    out = tmp_path / "grid"
    for seed in (0, 1):
        for method, dice in (("actionpp", 0.8), ("action", 0.7)):
            _write_run(out, f"method={method}_lab=3_seed={seed}", {"METHOD": method, "LABELLED_PATIENTS": 3,
                                                                    "SEED": seed}, dice)
    for name in ("variant=v_lab=3_seed=0", "variant=v_lab=3_seed=0_again"):
        _write_run(out, name, {"VARIANT": "v", "LABELLED_PATIENTS": 3, "SEED": 0, "OTHER": name}, 0.5)
        metrics = json.loads((out / name / "metrics.json").read_text())
        (out / name / "metrics.json").write_text(json.dumps({**metrics, "method": "actionpp"}))
    res = write_paired(out, tmp_path / "pub")
    md = (tmp_path / "pub" / "paired.md").read_text()
    assert res["verdicts"][0].startswith("ACTION++ is not distinguishable from ACTION at 3 labelled patients: d = +10")
    assert "### Ablation variants beside their method\n\nNot read: runs variant=v_lab=3_seed=0 and " \
           "variant=v_lab=3_seed=0_again are both variant v" in md and res["variants"] == []


def test_each_look_is_the_interval_of_the_pairs_finished_by_then(tmp_path: Path):
    """How an interim call moved: the primary interval after each pair, in the order the pairs finished."""
    out = tmp_path / "grid"
    # d = +2, +1, +3 points for seeds 0, 1, 2; a pair is in when its later run finished: seed 2 at 09:00 (its
    # ACTION++ run), seed 1 at 12:00 (ACTION++), seed 0 at 13:00 (its ACTION run). By ACTION++'s times alone
    # the order would be 2, 0, 1; by ACTION's alone 1, 2, 0
    plan = {0: (0.52, "10:00", 0.50, "13:00"), 1: (0.51, "12:00", 0.50, "06:00"), 2: (0.53, "09:00", 0.50, "07:00")}
    for seed, (a, fa, b, fb) in plan.items():
        for m, dice, fin in (("actionpp", a, fa), ("action", b, fb)):
            # seed 0's ACTION run writes today's format (UTC with its offset), the others the older one without
            offset = "+00:00" if (seed, m) == (0, "action") else ""
            _write_run(out, f"method={m}_lab=7_seed={seed}", {"METHOD": m, "LABELLED_PATIENTS": 7, "SEED": seed},
                       dice, finished=f"2026-12-07T{fin}:00{offset}")
    steps = looks(collect_scored(out))[7]
    assert [(seed, iv.n) for seed, iv in steps] == [(1, 2), (0, 3)]  # the first look needs two pairs
    two, three = steps[0][1], steps[1][1]
    # pairs {2, 1}: d = 3, 1: mean 2, sd 1.4142, t(1) = 12.706: 2 +- 12.706 * 1.4142 / sqrt 2 = 2 +- 12.706
    assert (two.mean, two.lo, two.hi) == pytest.approx((2.0, -10.706, 14.706), abs=1e-3)
    # all three: d = 3, 2, 1: mean 2, sd 1, t(2) = 4.303: 2 +- 2.484
    assert (three.mean, three.lo, three.hi) == pytest.approx((2.0, -0.484, 4.484), abs=1e-3)
    md = write_paired(out, tmp_path / "pub", planned={7: 8})["markdown"]
    assert "**The primary call at each look**" in md
    assert "| 7 | 2 of 8 | 1 | +2.0 | [-10.7, +14.7] | not distinguishable |" in md
    assert "| 7 | 3 of 8 | 0 | +2.0 | [-0.5, +4.5] | not distinguishable |" in md
    # a run without a finish time counts as the earliest: seed 1's pair now comes first, then seeds 2 and 0
    assert looks_figure(looks(collect_scored(out)), {7: 8})[:4] == b"\x89PNG"
    assert looks_figure({}) is None  # nothing paired yet: no figure
    for m in ("action", "actionpp"):
        marker = out / f"method={m}_lab=7_seed=1" / "done"
        marker.write_text(json.dumps({k: v for k, v in json.loads(marker.read_text()).items() if k != "finished"}))
    assert [seed for seed, _ in looks(collect_scored(out))[7]] == [2, 0]
    # two runs of one method, budget and seed: refused, as the paired table refuses them
    extra = ScoredRun("x", "action", None, 7, 0, {"test": {"student": {"dice_mean": 0.4}}})
    with pytest.raises(ValueError, match="both action at 7 labelled patients, seed 0"):
        looks([*collect_scored(out), extra])
