"""The numbers ``docs/results.md`` quotes from notebook 07's run are the runner's.

The section "Beyond medical images" was written from ``results/beyond_medical/metrics.json`` (the
``metrics.json`` notebook 07 wrote, copied unchanged). These tests read both and fail when a table cell or a
number of the verdict prose is not what that file holds: a re-run that changes the numbers, or an edit of
the prose, has to bring the other along.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "results.md"
METRICS = ROOT / "results" / "beyond_medical" / "metrics.json"
HEADING = "## Beyond medical images"
RATIOS = ("10", "50", "100")
# the arms' names in the docs tables, in the order of metrics.json's "methods"
ARMS = {
    "cross-entropy": "ce",
    "logit adjustment (balanced softmax)": "logit_adjusted",
    "SupCon, fixed tau 0.1": "supcon",
    "SupCon + ATS": "supcon_ats",
    "SupCon + centres (averaged)": "centres_averaged",
    "SupCon + centres (separate)": "centres_separate",
    "centres (separate) + ATS (ACTION++)": "actionpp",
}


def _section() -> str:
    text = DOC.read_text()
    start = text.index(HEADING)
    end = text.find("\n## ", start + len(HEADING))
    return text[start:end if end >= 0 else len(text)]


def _table(section: str, header_start: str) -> dict[str, list[str]]:
    """The rows of the Markdown table whose header line starts with ``header_start``: arm -> cells."""
    lines = section.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith(header_start))
    rows: dict[str, list[str]] = {}
    for line in lines[i + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


@pytest.fixture(scope="module")
def metrics() -> dict:
    return json.loads(METRICS.read_text())


def test_the_mean_and_std_table_is_the_runners(metrics: dict) -> None:
    rows = _table(_section(), "| arm | balanced acc, ratio 10")
    assert set(rows) == set(ARMS), "every arm of the run, and no other, is a row"
    for arm, cells in rows.items():
        method = ARMS[arm]
        want = []
        for key in ("balanced_accuracy", "tail_recall"):
            for r in RATIOS:
                s = metrics["summary"][r][method][key]
                want.append(f"{s['mean']:.3f} ± {s['std']:.3f}")
        assert cells == want, arm


def test_the_paired_difference_table_is_the_runners(metrics: dict) -> None:
    rows = _table(_section(), "| arm minus SupCon |")
    assert set(rows) == set(ARMS) - {"SupCon, fixed tau 0.1"}
    for arm, cells in rows.items():
        method = ARMS[arm]
        want = []
        for key, fmt in (("tail_recall", "+.3f"), ("tail_min_angle_deg", "+.1f")):
            for r in RATIOS:
                s = metrics["summary"][r][method][key]
                want.append(f"{s['diff']:{fmt}} ± {s['se']:{fmt[1:]}} [{s['lo']:{fmt}}, {s['hi']:{fmt}}]")
        assert cells == want, arm


def test_every_signed_number_of_the_verdict_prose_is_in_the_runners_verdict(metrics: dict) -> None:
    """The bullets under "What the verdict lines of that run say" quote differences and interval ends:
    each of them (a signed number) stands in the verdict lines the notebook printed or, for the angles
    quoted to one decimal, in the summary at that precision."""
    section = _section()
    start = section.index("What the verdict lines of that run say")
    prose = section[start:section.index("**Limits.**")]
    printed = " ".join(metrics["verdict"] + metrics["verdict_representation"] + metrics["verdict_geometry"])
    known = set(re.findall(r"[+-]\d+\.\d+", printed))
    for r in RATIOS:
        for method in metrics["summary"][r].values():
            for s in method.values():
                if isinstance(s, dict) and s.get("diff") is not None:
                    known |= {f"{s[k]:+.1f}" for k in ("diff", "lo", "hi")}
    quoted = re.findall(r"(?<![\w.])[+-]\d+\.\d+", prose)
    assert quoted, "the prose quotes the run's differences"
    missing = [q for q in quoted if q not in known]
    assert not missing, f"numbers in docs/results.md's verdict prose that the run did not print: {missing}"


def test_the_run_carries_its_parameters_and_log(metrics: dict) -> None:
    """Provenance beside the numbers: the parameters the run used are the lab profile's and those metrics.json
    records, and its log shows it trained every arm x ratio x seed."""
    import yaml

    folder = METRICS.parent
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    lab = yaml.safe_load((ROOT / "notebooks" / "params" / "lab" / "07_beyond_medical.yaml").read_text())
    assert cfg["notebook"] == "notebooks/07_beyond_medical.ipynb" and cfg["parameters"] == lab
    for key, value in metrics["config"].items():
        if key.upper() in cfg["parameters"]:
            assert cfg["parameters"][key.upper()] == value, key
    log = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    n = len(lab["METHODS"]) * len(lab["RATIOS"]) * len(lab["SEEDS"])
    assert n == metrics["n_runs"] and any(e["text"].startswith(f"{n} trainings in ") for e in log)
