"""Result tables of a grid: collect the finished runs, aggregate over seeds, write CSV and Markdown.

Taught in notebooks/06_replication_report.ipynb.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actionpp.atomic import atomic_write_text
from actionpp.metrics import mean_std
from actionpp.replicate.grid import SHORT_NAMES, GridError, Run, id_keys
from actionpp.replicate.run import DONE, METRICS, run_state
from actionpp.report import RunMetricsError, read_run_metrics

__all__ = [
    "PAPER_RESULTS",
    "PAPER_SOURCE",
    "METRIC_NAMES",
    "paper_row",
    "RunRecord",
    "ResultRow",
    "collect",
    "aggregate",
    "results_csv",
    "results_markdown",
    "write_results",
    "markdown_section",
]

METRIC_NAMES: tuple[str, ...] = ("dice", "jaccard", "hd95", "asd")
_PERCENT = {"dice": True, "jaccard": True, "hd95": False, "asd": False}
_LABEL = {"dice": "Dice", "jaccard": "Jaccard", "hd95": "HD95", "asd": "ASD"}


#: Reported results of ACTION++ (You et al., MICCAI 2023, arXiv 2304.02689) and the baselines
#: in its tables, as summarised in docs method.md section 7 (shared/docs/method.md). Keys are
#: ``(dataset, labelled_patients, name)``; ``name`` is a METHOD value or, for the LA ablation, a
#: VARIANT name of ``notebooks/grids/la_ablation.yaml``. Dice in %, ASD in voxels; ``None`` = not
#: reported. ``dice_per_class`` follows the dataset's foreground class order (ACDC: RV, Myo, LV).
PAPER_SOURCE = (
    "You et al., ACTION++, MICCAI 2023 (arXiv 2304.02689): ACDC / LA comparison tables and the "
    "LA 8-labelled ablation, as summarised in docs/method.md section 7"
)
PAPER_RESULTS: dict[tuple[str, int, str], dict[str, Any]] = {
    ("acdc", 3, "action"): {"dice": 87.5, "asd": 1.12},
    ("acdc", 3, "actionpp"): {"dice": 88.5, "asd": 0.723, "dice_per_class": {"RV": 86.9, "Myo": 86.8, "LV": 91.9}},
    ("acdc", 7, "action"): {"dice": 89.7, "asd": 0.736},
    ("acdc", 7, "actionpp"): {"dice": 90.4, "asd": 0.592, "dice_per_class": {"RV": 90.5, "Myo": 87.5, "LV": 93.1}},
    ("acdc", 3, "supervised"): {"dice": 51.7, "asd": None},
    ("acdc", 7, "supervised"): {"dice": 79.5, "asd": None},
    ("acdc", 70, "supervised"): {"dice": 91.5, "asd": None},
    ("acdc", 3, "mean_teacher"): {"dice": 58.3, "asd": None},
    ("acdc", 7, "mean_teacher"): {"dice": 80.1, "asd": None},
    ("la", 4, "action"): {"dice": 86.6, "asd": 2.24},
    ("la", 4, "actionpp"): {"dice": 87.8, "asd": 2.09},
    ("la", 8, "action"): {"dice": 88.7, "asd": 2.10},
    ("la", 8, "actionpp"): {"dice": 89.9, "asd": 1.74},
    # Ablation, LA 8 labelled (fine-tuning stage).
    ("la", 8, "no_saacl_no_ats"): {"dice": 89.0, "asd": None},
    ("la", 8, "ats_only"): {"dice": 89.3, "asd": None},
    ("la", 8, "saacl_only"): {"dice": 89.5, "asd": None},
    ("la", 8, "saacl_ats"): {"dice": 89.9, "asd": None},
    ("la", 8, "random_assign"): {"dice": 88.0, "asd": None},
}


def paper_row(dataset: str | None, labelled: Any, name: str | None) -> dict[str, Any] | None:
    """The paper's entry for ``(dataset, labelled, name)`` or ``None`` when it reports none."""
    if dataset is None or name is None:
        return None
    try:
        key = (str(dataset).lower(), int(labelled), str(name))
    except (TypeError, ValueError):
        return None
    return PAPER_RESULTS.get(key)




@dataclass(frozen=True)
class RunRecord:
    """A finished run read back from disk: its id, axis values and first-notebook metrics."""

    run_id: str
    axes: Mapping[str, Any]
    metrics: Mapping[str, Any]
    path: Path
    finished: str = ""  # the ``done`` marker's finish time (ISO, UTC; no offset before e68b161); "" if none


def collect(out: str | Path, runs: Sequence[Run] | None = None, problems: list[str] | None = None) -> list[RunRecord]:
    """Finished runs under ``out`` (a ``done`` marker and a valid ``metrics.json``).

    With ``runs`` only those runs are read (a grid's runs, in grid order); without, every
    sub-folder of ``out`` holding a ``done`` marker, sorted by run id. Runs without a marker
    (failed, interrupted, pending) are left out; so is a run whose ``metrics.json`` is
    missing, unreadable or incomplete (:func:`actionpp.report.read_run_metrics`): it is never
    aggregated, and when ``problems`` (a list) is given its path and problem are appended.
    With ``runs``, a run finished with other parameters than the grid's (``stale``: the grid was
    edited since, :func:`actionpp.replicate.run.run_state`) is left out and reported the same way,
    and so is a run whose scores (the grid's ``score`` block) are missing or broken: the tables
    hold exactly the runs ``--dry-run`` calls ``done``.
    """
    out = Path(out)
    dirs: list[Path]
    if runs is not None:
        dirs = [r.run_dir(out) for r in runs]
    else:
        dirs = sorted(p.parent for p in out.glob(f"*/{DONE}"))
    records = []
    for k, d in enumerate(dirs):
        marker, mfile = d / DONE, d / METRICS
        if not marker.is_file():
            continue
        if runs is not None:
            status, problem = run_state(runs[k], out)
            if status == "stale":
                if problems is not None:
                    problems.append(f"{d}: finished with other parameters than the grid's (stale: the grid was "
                                    "edited since; --force runs it again with the grid's)")
                continue
            if status == "broken" and problem and not problem.startswith(str(mfile)):
                if problems is not None:
                    problems.append(problem)
                continue
        try:
            m = json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise GridError(f"{marker}: unreadable done marker: {e}") from e
        try:
            metrics = read_run_metrics(mfile)
        except RunMetricsError as exc:
            if problems is not None:
                problems.append(str(exc))
            continue
        fin = m.get("finished")
        records.append(RunRecord(str(m.get("run_id", d.name)), dict(m.get("axes") or {}), metrics, d,
                                 fin if isinstance(fin, str) else ""))
    return records


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1) over seeds; NaN std with one seed."""
    m, s, _ = mean_std(values, ddof=1)
    return m, s


def _metric_of(metrics: Mapping[str, Any], name: str, cls: str | None) -> float | None:
    block = metrics.get(name)
    if cls is None:
        v = metrics.get(f"{name}_mean")
        if v is None and isinstance(block, Mapping) and block:
            vals = [float(x) for x in block.values() if x is not None]
            v = statistics.fmean(vals) if vals else None
        return None if v is None else float(v)
    if isinstance(block, Mapping) and block.get(cls) is not None:
        return float(block[cls])
    return None


@dataclass
class ResultRow:
    """One group of runs (same axis values except SEED) aggregated over seeds."""

    group: dict[str, Any]  # axis values except SEED
    dataset: str | None  # "acdc", "la" (the label set)
    data: str | None  # where the images came from: "phantom", "shared" or a folder name
    method: str | None
    labelled: Any
    seeds: list[Any]
    classes: list[str]
    stats: dict[str, tuple[float, float]]  # "dice_mean" / "dice_RV" ... -> (mean, std); % for Dice / Jaccard
    paper: dict[str, Any] | None
    protocol: dict[str, Any]


def aggregate(records: Sequence[RunRecord]) -> list[ResultRow]:
    """Group finished runs by every axis except ``SEED`` and take mean / sample std over seeds.

    Dice and Jaccard become % (x 100); HD95 and ASD stay in the runs' distance unit. The mean
    over classes of one run is its ``<metric>_mean`` if given, else the mean of its per-class
    values; the row's ``<metric>_mean`` is then the mean over seeds of those. Groups keep the
    order in which they first appear. Protocol entries that differ between the runs of a group
    are joined with " | " so a mixed batch cannot hide.
    """
    groups: dict[str, list[RunRecord]] = {}
    keys: dict[str, dict[str, Any]] = {}
    for r in records:
        g = {k: v for k, v in r.axes.items() if k != "SEED"}
        key = json.dumps(g, sort_keys=True, default=str)
        groups.setdefault(key, []).append(r)
        keys[key] = g
    rows = []
    for key, recs in groups.items():
        first = recs[0].metrics
        classes = list(first.get("classes") or [])
        if not classes and isinstance(first.get("dice"), Mapping):
            classes = list(first["dice"])
        stats: dict[str, tuple[float, float]] = {}
        for name in METRIC_NAMES:
            scale = 100.0 if _PERCENT[name] else 1.0
            for cls in [None, *classes]:
                vals = [_metric_of(r.metrics, name, cls) for r in recs]
                vals2 = [v * scale for v in vals if v is not None]
                stats[f"{name}_{cls or 'mean'}"] = _mean_std(vals2)
        protocol: dict[str, Any] = {}
        for r in recs:
            for k, v in (r.metrics.get("protocol") or {}).items():
                sv = str(v)
                if k not in protocol:
                    protocol[k] = sv
                elif sv not in str(protocol[k]).split(" | "):
                    protocol[k] = f"{protocol[k]} | {sv}"
        g = dict(keys[key])
        if "METHOD" not in g and first.get("method"):  # e.g. an ablation block whose variants set the method
            g = {"METHOD": first["method"], **g}
        dataset = first.get("dataset") or next(
            (r.metrics.get("dataset") for r in recs if r.metrics.get("dataset")), None
        )
        method = g.get("METHOD", first.get("method"))
        labelled = g.get("LABELLED_PATIENTS", first.get("labelled_patients"))
        paper_name = g.get("VARIANT", method)
        rows.append(
            ResultRow(
                group=g,
                dataset=dataset,
                data=None if first.get("data") is None else str(first.get("data")),
                method=None if method is None else str(method),
                labelled=labelled,
                seeds=[r.axes.get("SEED", r.metrics.get("seed")) for r in recs],
                classes=classes,
                stats=stats,
                paper=paper_row(dataset, labelled, None if paper_name is None else str(paper_name)),
                protocol=protocol,
            )
        )
    return rows


def _cell(mean: float, std: float, digits: int) -> str:
    if math.isnan(mean):
        return "-"
    if math.isnan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _group_columns(rows: Sequence[ResultRow]) -> list[str]:
    names: list[str] = []
    for r in rows:
        for k in r.group:
            if k not in names:
                names.append(k)
    return id_keys(names)


def _all_classes(rows: Sequence[ResultRow]) -> list[str]:
    out: list[str] = []
    for r in rows:
        for c in r.classes:
            if c not in out:
                out.append(c)
    return out


def results_csv(rows: Sequence[ResultRow]) -> str:
    """The table as CSV: group columns, n, seeds, then ``<metric>_<class|mean>_{mean,std}`` and
    ``paper_dice``, ``paper_asd``, ``paper_dice_<class>``; Dice / Jaccard in %, empty = n/a."""
    gcols = _group_columns(rows)
    classes = _all_classes(rows)
    stat_cols = [f"{m}_{c}" for m in METRIC_NAMES for c in ["mean", *classes]]
    header = ["dataset", "data", *gcols, "n", "seeds"]
    for s in stat_cols:
        header += [f"{s}_mean", f"{s}_std"]
    header += ["paper_dice", "paper_asd", *[f"paper_dice_{c}" for c in classes]]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        line: list[Any] = [
            r.dataset or "",
            r.data or "",
            *[r.group.get(k, "") for k in gcols],
            len(r.seeds),
            " ".join(map(str, r.seeds)),
        ]
        for s in stat_cols:
            m, sd = r.stats.get(s, (math.nan, math.nan))
            line += ["" if math.isnan(m) else f"{m:.6g}", "" if math.isnan(sd) else f"{sd:.6g}"]
        p = r.paper or {}
        pc = p.get("dice_per_class") or {}
        line += [
            p.get("dice", "") if p.get("dice") is not None else "",
            p.get("asd", "") if p.get("asd") is not None else "",
        ]
        line += [pc.get(c, "") for c in classes]
        w.writerow(line)
    return buf.getvalue()


_PROTOCOL_LABELS = (
    ("split", "split"),
    ("eval_split", "evaluated on"),
    ("labelled_slices", "labelled slices / volumes"),
    ("iterations", "iterations"),
    ("model_selection", "model selection"),
    ("empty_mask_policy", "empty-mask policy"),
    ("distance_units", "distance units (HD95, ASD)"),
)


def _ds(r: ResultRow) -> str:
    return f"{r.dataset or '-'} ({r.data})" if r.data else (r.dataset or "-")


def results_markdown(rows: Sequence[ResultRow], title: str = "Results") -> str:
    """Paper-style Markdown: a main table (Dice / Jaccard / HD95 / ASD mean +- std, paper Dice and
    ASD beside), a per-class table, the protocol of the runs, and the paper source."""
    gcols = _group_columns(rows)
    classes = _all_classes(rows)
    lines = [f"# {title}", ""]
    if not rows:
        return "\n".join(lines + ["No finished runs.", ""])
    short = [SHORT_NAMES.get(k, k.lower()) for k in gcols]
    head = ["dataset", *short, "n", "Dice %", "Jaccard %", "HD95", "ASD", "paper Dice %", "paper ASD"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        p = r.paper or {}
        cells = [_ds(r), *[str(r.group.get(k, "-")) for k in gcols], str(len(r.seeds))]
        cells += [_cell(*r.stats[f"{m}_mean"], 1 if _PERCENT[m] else 2) for m in METRIC_NAMES]
        cells += [
            str(p["dice"]) if p.get("dice") is not None else "-",
            str(p["asd"]) if p.get("asd") is not None else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if classes:
        lines += ["", "Per class (mean ± std over seeds; paper Dice in brackets where reported):", ""]
        head2 = ["dataset", *short]
        for m in METRIC_NAMES:
            head2 += [f"{_LABEL[m]} {c}" for c in classes]
        lines += ["| " + " | ".join(head2) + " |", "|" + "---|" * len(head2)]
        for r in rows:
            pc = (r.paper or {}).get("dice_per_class") or {}
            cells = [_ds(r), *[str(r.group.get(k, "-")) for k in gcols]]
            for m in METRIC_NAMES:
                for c in classes:
                    txt = _cell(*r.stats.get(f"{m}_{c}", (math.nan, math.nan)), 1 if _PERCENT[m] else 2)
                    if m == "dice" and c in pc:
                        txt += f" [{pc[c]}]"
                    cells.append(txt)
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Protocol (read from the runs' metrics.json):", ""]
    proto: dict[str, str] = {}
    for r in rows:
        for k, v in r.protocol.items():
            if k not in proto:
                proto[k] = v
            elif v not in proto[k].split(" | "):
                proto[k] = f"{proto[k]} | {v}"
    known = dict(_PROTOCOL_LABELS)
    for k in [*known, *sorted(set(proto) - set(known))]:
        if k in proto:
            lines.append(f"- {known.get(k, k)}: {proto[k]}")
    missing = [known[k] for k in known if k not in proto]
    if missing:
        lines.append(f"- not stated by the runs: {', '.join(missing)}")
    lines += [
        "- mean ± sample standard deviation (ddof = 1) over seeds; one seed shows the value alone",
        "",
        f"Paper numbers: {PAPER_SOURCE}. They come from longer training on real data; a phantom or "
        "lab-sized run is not expected to match them.",
        "",
    ]
    return "\n".join(lines)


def write_results(out: str | Path, records: Sequence[RunRecord], title: str = "Results") -> tuple[Path, Path]:
    """Aggregate ``records`` and write ``OUT/results.csv`` and ``OUT/results.md`` atomically."""
    out = Path(out)
    rows = aggregate(records)
    csv_path, md_path = out / "results.csv", out / "results.md"
    atomic_write_text(csv_path, results_csv(rows))
    atomic_write_text(md_path, results_markdown(rows, title))
    return csv_path, md_path


def markdown_section(text: str, heading: str, level: int = 4) -> str | None:
    """``text`` from the first line that starts with ``heading`` (a ``## `` heading, or the start of one) to
    the end of ``text``, stripped; that heading is demoted to ``level`` (3 to 6) so it nests in a larger page,
    later headings are kept as they are. None when no line starts with ``heading``."""
    if not heading.startswith("## "):
        raise ValueError(f"markdown_section cuts at a '## ' heading, not {heading!r}")
    if not 3 <= level <= 6:
        raise ValueError(f"a section nested under '## ' takes a heading level from 3 to 6, not {level}")
    at = 0 if text.startswith(heading) else text.find("\n" + heading)
    if at < 0:
        return None
    return "#" * level + " " + text[at:].strip()[len("## "):]
