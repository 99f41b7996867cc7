"""Which loss term drives the update (actionpp.replicate.logs.loss_shares), per run and per method, by hand."""

from __future__ import annotations

import json
from pathlib import Path

from actionpp.replicate.logs import loss_shares, share_windows
from actionpp.replicate.tables import RunRecord


def _record(tmp_path: Path, method: str, seed: int, early: dict, late: dict, labelled: int = 7) -> RunRecord:
    """Fine-tuning logged at iterations 0..400: the first quarter (<= 100) logs ``early``, the last (>= 300)
    ``late``, iteration 200 (in neither window) something else; one pre-training row that must not count."""
    rd = tmp_path / f"{method}_{labelled}_{seed}"
    (rd / "run").mkdir(parents=True)
    rows = [{"kind": "train", "phase": "pretrain", "iteration": 0, **{k: 9.0 for k in early}}]
    for it in (0, 100, 200, 300, 400):
        shares = early if it <= 100 else late if it >= 300 else {k: -5.0 for k in early}
        rows.append({"kind": "train", "phase": "finetune", "iteration": it, **shares})
    rows.append({"kind": "val", "iteration": 400, "dice": 0.5})
    (rd / "run" / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return RunRecord(rd.name, {"METHOD": method, "LABELLED_PATIENTS": labelled, "SEED": seed}, {}, rd)


def test_share_windows_average_the_first_and_last_quarter_of_fine_tuning(tmp_path: Path) -> None:
    r = _record(tmp_path, "action", 0, {"share/sup": 0.2, "share/anco": 0.8}, {"share/sup": 0.03, "share/anco": 0.95})
    w = share_windows(r)
    assert w["first quarter"]["share/sup"] == 0.2 and w["last quarter"]["share/anco"] == 0.95
    assert w["last quarter"]["share/saacl"] is None  # ACTION has no SAACL
    assert share_windows(RunRecord("x", {}, {}, tmp_path / "none")) == {}


def test_loss_shares_summarises_per_method_and_says_what_actionpp_adds(tmp_path: Path) -> None:
    early = {"share/sup": 0.2, "share/anco": 0.6, "share/saacl": 0.2}
    records = [
        _record(tmp_path, "actionpp", 0, early, {"share/sup": 0.05, "share/anco": 0.85, "share/saacl": 0.10}),
        _record(tmp_path, "actionpp", 1, early, {"share/sup": 0.03, "share/anco": 0.91, "share/saacl": 0.06}),
        _record(tmp_path, "action", 0, {"share/sup": 0.2, "share/anco": 0.8}, {"share/sup": 0.03, "share/anco": 0.95}),
        _record(tmp_path, "supervised", 0, {"share/sup": 1.0}, {"share/sup": 1.0}),
    ]
    md = loss_shares(records)
    # per run: the last quarter of ACTION++ seed 1, columns sup, unsup, consistency, anco, saacl, centres
    assert "| actionpp_7_1 | last quarter | 0.030 | - | - | 0.910 | 0.060 | - | - |" in md
    # per method: SAACL (0.10 + 0.06) / 2 = 0.08, runs 0.06 and 0.10
    assert ("| actionpp | 7 | 2 | last quarter | 0.040 [0.030, 0.050] | - | - | 0.880 [0.850, 0.910] | "
            "0.080 [0.060, 0.100] | - | - |") in md
    assert "| supervised | 7 | 1 | last quarter | 1.000 [1.000, 1.000] | - |" in md
    sentence = next(line for line in md.splitlines() if line.startswith("- 7 labelled patients: ACTION++"))
    # SAACL (0.10 + 0.06) / 2, AnCo (0.85 + 0.91) / 2, supervised (0.05 + 0.03) / 2; ACTION one run: no range
    assert sentence == ("- 7 labelled patients: ACTION++ (2 runs): SAACL 8 % (6-10 %), AnCo 88 % (85-91 %), the "
                        "supervised loss 4 % (3-5 %); ACTION (1 run): AnCo 95 %, the supervised loss 3 %.")
    assert "ATS, which schedules the temperatures of SAACL, AnCo and pre-training" in md

def test_loss_shares_without_actionpp_says_nothing_about_it(tmp_path: Path) -> None:
    md = loss_shares([_record(tmp_path, "supervised", 0, {"share/sup": 1.0}, {"share/sup": 1.0})])
    assert "## Per method and budget" in md and "Where the update comes from" not in md
    empty = loss_shares([])  # no run logged shares: the table's header only, no summary
    header = [x for x in md.splitlines() if x.startswith("| run")]
    assert [x for x in empty.splitlines() if x.startswith("| ")] == header
    assert "## Per method and budget" not in empty
