"""Head versus tail from published runs (actionpp.headtail): hand-built samples whose numbers are known."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from actionpp import embeddings as E
from actionpp import headtail as H

NAMES = ["RV", "Myo", "LV"]


def _publish(root: Path, method: str, seed: int, rv_test: float, labelled: int = 7, mix_rv: bool = False) -> None:
    """A published run folder: done (axes), scores.json, embeddings.npz with 10 pixels per class.

    Features of class c are the unit vector e_c (RV mixed into background when ``mix_rv``: half of its
    pixels on e_0); the head is the same for methods that train it; ACTION++ has the centres e_c.
    """
    rd = root / f"method={method}_lab={labelled}_seed={seed}"
    rd.mkdir(parents=True)
    (rd / "done").write_text(json.dumps({"axes": {"METHOD": method, "LABELLED_PATIENTS": labelled, "SEED": seed}}))
    dice = {"RV": rv_test, "Myo": 0.8, "LV": 0.9}
    entry = {"dice_mean": sum(dice.values()) / 3, "dice": dice}
    (rd / "scores.json").write_text(json.dumps({"format": 1, "which": "last", "classes": NAMES,
                                                "scores": {"test": {"student": entry}, "val": {"student": entry}}}))
    labels = np.repeat(np.arange(4), 10).astype(np.int8)
    vec = np.eye(8, dtype=np.float16)[labels]
    if mix_rv:
        vec[10:15] = np.eye(8, dtype=np.float16)[0]
    meta = {"format": 1, "method": method, "seed": seed, "labelled_patients": labelled, "split": "val"}
    arrays = {"balanced_head": vec, "balanced_features": vec, "balanced_labels": labels, "balanced_pred": labels,
              "natural_head": vec[:4], "natural_features": vec[:4], "natural_labels": labels[:4],
              "natural_pred": labels[:4], "class_pixels": np.array([900, 10, 40, 50]),
              "centres": np.eye(8, dtype=np.float16)[:4] if method == "actionpp" else np.zeros(0, np.float16),
              "assignment": np.arange(4, dtype=np.int8) if method == "actionpp" else np.zeros(0, np.int8),
              "meta": np.array(json.dumps(meta))}
    np.savez_compressed(rd / E.SAMPLE_FILE, **arrays)


def test_load_published_filters_by_budget_and_method_and_names_broken_runs(tmp_path: Path) -> None:
    for s in (0, 1):
        _publish(tmp_path, "action", s, 0.5)
        _publish(tmp_path, "actionpp", s, 0.6)
    _publish(tmp_path, "actionpp", 0, 0.6, labelled=3)
    (tmp_path / "method=actionpp_lab=7_seed=1" / E.SAMPLE_FILE).write_bytes(b"broken")
    problems: list[str] = []
    runs = H.load_published(tmp_path, labelled=7, methods=["actionpp", "action"], problems=problems)
    assert [(r.method, r.seed) for r in runs] == [("actionpp", 0), ("action", 0), ("action", 1)]
    assert len(problems) == 1 and "seed=1" in problems[0] and "not a readable embedding sample" in problems[0]
    assert runs[0].classes == ["BG", "RV", "Myo", "LV"]


def test_run_numbers_in_both_spaces_by_hand(tmp_path: Path) -> None:
    _publish(tmp_path, "actionpp", 0, 0.6, mix_rv=True)
    _publish(tmp_path, "supervised", 0, 0.4)
    pp, sup = H.load_published(tmp_path, methods=["actionpp", "supervised"])
    n = H.run_numbers(pp)
    # 5 of the 10 RV pixels sit on the background's direction e0: the RV mean is (e0 + e1) / sqrt 2, 45 degrees
    # from the background mean e0; those 5 pixels are nearer the background mean (cos 1) than their own (cos 45)
    assert n["RV"]["features_accuracy"] == pytest.approx(0.5)
    assert n["RV"]["features_min_angle"] == pytest.approx(45.0, abs=1e-3)
    assert n["RV"]["features_alignment"] == pytest.approx(math.cos(math.radians(45)), abs=1e-3)
    assert n["RV"]["head_centre_accuracy"] == pytest.approx(0.5)  # centres e_c: the mixed half goes to BG's centre
    assert n["LV"]["features_accuracy"] == 1.0 and n["LV"]["features_min_angle"] == pytest.approx(90.0, abs=1e-3)
    assert (n["RV"]["dice_test"], n["RV"]["dice_val"]) == (0.6, 0.6)
    s = H.run_numbers(sup)
    assert math.isnan(s["RV"]["head_accuracy"]) and math.isnan(s["RV"]["head_centre_accuracy"])  # head untrained


def test_tail_comparison_pairs_by_seed_and_calls_only_beyond_the_interval(tmp_path: Path) -> None:
    for s, (a, b) in enumerate([(0.50, 0.60), (0.55, 0.70), (0.60, 0.80)]):
        _publish(tmp_path, "action", s, a)
        _publish(tmp_path, "actionpp", s, b)
    runs = H.load_published(tmp_path, methods=["action", "actionpp"])
    rows = {r.metric: r for r in H.tail_comparison(runs, "action", "actionpp", "RV")}
    dice = rows["dice_test"]
    # d = 0.10, 0.15, 0.20: mean 0.15, sd 0.05, se 0.05 / sqrt 3; half-width 4.303 * 0.0289 = 0.124
    assert dice.pairs == 3 and dice.paired.mean == pytest.approx(0.15) and dice.se == pytest.approx(0.05 / math.sqrt(3))
    assert dice.paired.lo == pytest.approx(0.15 - 4.302652729911275 * 0.05 / math.sqrt(3))
    assert (dice.a_mean, dice.b_mean) == (pytest.approx(0.55), pytest.approx(0.70))
    assert "head_centre_accuracy" not in rows  # ACTION has no centres: nothing to compare
    lines = H.verdict(list(rows.values()), "action", "actionpp", "RV")
    assert any(line.startswith("RV, test Dice: action 0.550, actionpp 0.700; actionpp - action = +0.150")
               and line.endswith("actionpp ahead (the 95 % interval excludes 0)") for line in lines)
    # identical geometry on every seed: differences 0, never called
    assert any("nearest class mean accuracy, decoder features" in line and "not distinguishable" in line
               for line in lines)
    assert lines[-1].startswith("In short, on the RV: of ")


def test_runs_of_two_budgets_are_not_paired_by_seed_by_accident(tmp_path: Path) -> None:
    _publish(tmp_path, "action", 0, 0.5, labelled=7)
    _publish(tmp_path, "action", 0, 0.4, labelled=3)
    _publish(tmp_path, "actionpp", 0, 0.6, labelled=7)
    with pytest.raises(ValueError, match="two action runs of seed 0"):
        H.tail_comparison(H.load_published(tmp_path), "action", "actionpp", "RV")
    assert H.tail_comparison(H.load_published(tmp_path, labelled=7), "action", "actionpp", "RV")
