"""How often a run loses a class altogether (actionpp.replicate.missed): the per-class missed counts of
scores.json summed up per method and budget, by hand."""

from __future__ import annotations

import json
from pathlib import Path

from actionpp.replicate.analysis import write_paired
from actionpp.replicate.missed import missed_markdown, missed_rows
from actionpp.replicate.paired import ScoredRun


def _run(method: str, seed: int, missed: dict | None, labelled: int = 3, variant: str | None = None,
         n: int = 40) -> ScoredRun:
    entry: dict = {"dice_mean": 0.5, "dice": {"RV": 0.5, "Myo": 0.5, "LV": 0.5}, "n_volumes": n}
    if missed is not None:
        entry["missed"] = missed
    return ScoredRun(f"{variant or method}_{labelled}_{seed}", method, variant, labelled, seed,
                     {"test": {"student": entry}})


def test_counts_per_class_are_summed_per_method_and_budget_and_uncounted_runs_left_out():
    runs = [
        _run("action", 0, {"RV": 38, "Myo": 31, "LV": 35}),
        _run("action", 1, {"RV": 28, "Myo": 0, "LV": 27}),
        _run("action", 2, None),  # scored before the counts existed: not a run that missed nothing
        _run("actionpp", 0, {"RV": 0, "Myo": 0, "LV": 0}),
        _run("actionpp", 0, {"RV": 2, "Myo": 0, "LV": 0}, labelled=7),
        _run("actionpp", 0, {"RV": 5, "Myo": 1, "LV": 0}, labelled=7, variant="official_teacher"),
    ]
    rows = missed_rows(runs)
    # largest budget first; within it the methods in the tables' order, then the variants
    assert [(r["labelled"], r["arm"]) for r in rows] == [(7, "actionpp"), (7, "official_teacher"), (3, "actionpp"),
                                                          (3, "action")]
    action = rows[3]
    assert (action["runs"], action["counted"], action["volumes"]) == (3, 2, "40")
    # RV: 38 and 28 -> mean 33, both runs missed it; Myo: 31 and 0 -> 15.5, one run of two
    assert action["classes"]["RV"] == {"mean": 33.0, "min": 28, "max": 38, "runs": 2, "runs_missing": 2}
    assert action["classes"]["Myo"] == {"mean": 15.5, "min": 0, "max": 31, "runs": 2, "runs_missing": 1}
    assert rows[2]["classes"]["LV"] == {"mean": 0.0, "min": 0, "max": 0, "runs": 1, "runs_missing": 0}
    assert rows[1]["classes"]["RV"]["mean"] == 5.0  # the variant is its own row, not pooled with its method

    md = "\n".join(missed_markdown(rows))
    assert "| 3 | ACTION | 2 of 3 | 40 | 33.0 (28-38), 2 of 2 | 15.5 (0-31), 1 of 2 | 31.0 (27-35), 2 of 2 |" in md
    assert "| 7 | official_teacher (ACTION++) | 1 of 1 | 40 | 5.0 (5-5), 1 of 1 |" in md
    assert "### Structures missed per class (test split, student)" in md and "No per-class counts" not in md


def test_the_heading_names_split_and_weights_and_mixed_volume_counts_are_shown():
    runs = [_run("action", 0, {"RV": 1}, n=40), _run("action", 1, {"RV": 3}, n=20)]
    runs[0].scores["val"] = {"teacher": {"missed": {"RV": 2}, "n_volumes": 20}}
    md = missed_markdown(missed_rows(runs, split="val", weights="teacher"))
    assert md[0] == "### Structures missed per class (val split, teacher)"
    assert "| 3 | ACTION | 1 of 2 | 20 | 2.0 (2-2), 1 of 1 |" in md
    # two splits of different size cannot be one number: both are shown
    assert "| 3 | ACTION | 2 of 2 | 20 or 40 | 2.0 (1-3), 2 of 2 |" in missed_markdown(missed_rows(runs))


def test_no_counts_no_table_and_a_group_without_counts_gets_no_row():
    assert missed_markdown(missed_rows([_run("action", 0, None), _run("actionpp", 0, None)])) == []
    rows = missed_rows([_run("action", 0, None), _run("actionpp", 0, {"RV": 1, "Myo": 0, "LV": 0})])
    assert rows[1]["arm"] == "action" and rows[1]["counted"] == 0 and rows[1]["classes"] == {}
    lines = missed_markdown(rows)
    assert not any(line.startswith("| 3 | ACTION |") for line in lines)
    assert any(line.startswith("| 3 | ACTION++ | 1 of 1 | 40 | 1.0 (1-1), 1 of 1 |") for line in lines)
    # the group without counts is named, not dropped in silence
    assert lines[-1] == "No per-class counts (scored before they were recorded): ACTION at 3 labelled (1 run)."


def test_paired_md_carries_the_table_when_the_runs_have_counts(tmp_path: Path):
    out = tmp_path / "grid"
    for method, missed in [("action", {"RV": 4, "Myo": 0, "LV": 1}), ("actionpp", {"RV": 0, "Myo": 0, "LV": 0})]:
        rid = f"method={method}_lab=7_seed=0"
        (out / rid / "run").mkdir(parents=True)
        (out / rid / "done").write_text(json.dumps({"run_id": rid, "parameters": [],
                                                    "axes": {"METHOD": method, "LABELLED_PATIENTS": 7, "SEED": 0}}))
        one = {"RV": 0.7, "Myo": 0.7, "LV": 0.7}
        (out / rid / "metrics.json").write_text(json.dumps({"dataset": "acdc", "classes": ["RV", "Myo", "LV"],
                                                            "dice": one, "jaccard": one, "hd95": one, "asd": one,
                                                            "protocol": {}}))
        entry = {"dice_mean": 0.7, "dice": {"RV": 0.7, "Myo": 0.7, "LV": 0.7}, "n_volumes": 40, "missed": missed}
        (out / rid / "scores.json").write_text(json.dumps({"format": 1, "which": "last", "classes": ["RV", "Myo", "LV"],
                                                           "scores": {"test": {"student": entry}}}))
    md = write_paired(out, tmp_path / "pub")["markdown"]
    table = md[md.index("### Structures missed per class (test split, student)"):]
    assert "| 7 | ACTION | 1 of 1 | 40 | 4.0 (4-4), 1 of 1 | 0.0 (0-0), 0 of 1 | 1.0 (1-1), 1 of 1 |" in table
    assert "| 7 | ACTION++ | 1 of 1 | 40 | 0.0 (0-0), 0 of 1 |" in table
