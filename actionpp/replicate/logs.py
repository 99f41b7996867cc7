"""What a grid's training logs show: the best validation checkpoint of each run, validation Dice along
training, and which loss term drives the update.

Readers of a grid's run folders (``<run_id>/run/{config.yaml,log.jsonl,metrics.json}``, the layout
:mod:`actionpp.replicate.publish` copies, so a published folder reads the same): :func:`best_records`
(the runs at their best validation checkpoint), :func:`validation_curves` and
:func:`plot_validation_curves` (mean and range over seeds per group), :func:`loss_shares` (the
``share/<term>`` columns of the fine-tuning log as a Markdown table).

Taught in notebooks/06_replication_report.ipynb.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from actionpp.replicate.tables import RunRecord
from actionpp.runlog import read_json_file

__all__ = ["train_summary", "best_records", "validation_curves", "plot_validation_curves", "loss_shares",
           "method_and_budget", "TRAIN_DIR", "SHARES_HEADING"]

TRAIN_DIR = "run"  # the training run directory inside a grid run (04_train: OUT_DIR / "run")
SHARES_HEADING = "## Where the update comes from"  # loss_shares.md's ACTION++-beside-ACTION section


def train_summary(record: RunRecord) -> dict[str, Any]:
    """The training loop's own ``metrics.json`` of a grid run (``{}`` when it has none)."""
    p = record.path / TRAIN_DIR / "metrics.json"
    data = read_json_file(p, "the training run's summary") if p.is_file() else {}
    return data if isinstance(data, dict) else {}


def best_records(records: Sequence[RunRecord]) -> list[RunRecord]:
    """The runs at their best validation checkpoint: ``dice`` per class and ``dice_mean`` from
    ``metrics["val_best"]`` (or the training run's own ``metrics.json``); other metrics absent."""
    out = []
    for r in records:
        best = r.metrics.get("val_best") or train_summary(r).get("best")
        if not best or not best.get("dice_per_class"):
            continue
        per_class = {str(k): float(v) for k, v in best["dice_per_class"].items()}
        m = {
            "dataset": r.metrics.get("dataset"),
            "data": r.metrics.get("data"),
            "method": r.metrics.get("method"),
            "labelled_patients": r.metrics.get("labelled_patients"),
            "classes": list(r.metrics.get("classes") or per_class),
            "dice": per_class,
            "dice_mean": float(best["dice"]),
            "protocol": {
                **(r.metrics.get("protocol") or {}),
                "model_selection": "best validation checkpoint (iteration "
                                   f"{r.metrics.get('val_best_iteration', train_summary(r).get('best_iteration'))})",
            },
        }
        out.append(RunRecord(r.run_id, r.axes, m, r.path))
    return out


def validation_curves(record: RunRecord) -> list[dict[str, Any]]:
    """``[{"iteration", "finetune_iteration", "dice", "dice_per_class"}]`` from the run's training log."""
    log = record.path / TRAIN_DIR / "log.jsonl"
    if not log.is_file():
        return []
    cfg_file = record.path / TRAIN_DIR / "config.yaml"
    pre = 0
    if cfg_file.is_file():
        import yaml

        cfg = yaml.safe_load(cfg_file.read_text()) or {}
        if (cfg.get("method") or {}).get("pretrain"):
            pre = int((cfg.get("train") or {}).get("pretrain_iters", 0))
    rows = []
    for line in log.read_text().splitlines():
        try:
            e = json.loads(line)
        except json.JSONDecodeError:
            continue
        if e.get("kind") == "val" and e.get("dice") is not None:
            rows.append({"iteration": int(e["iteration"]), "finetune_iteration": int(e["iteration"]) - pre,
                         "dice": float(e["dice"]), "dice_per_class": e.get("dice_per_class") or {}})
    return rows


def _group_key(r: RunRecord) -> str:
    return ", ".join(f"{k}={v}" for k, v in r.axes.items() if k != "SEED") or r.run_id


def _curve_groups(records: Sequence[RunRecord]) -> dict[str, dict[int, list[float]]]:
    groups: dict[str, dict[int, list[float]]] = {}
    for r in records:
        for row in validation_curves(r):
            groups.setdefault(_group_key(r), {}).setdefault(row["finetune_iteration"], []).append(row["dice"])
    return groups


def _draw_curves(ax: Any, groups: dict[str, dict[int, list[float]]], title: str) -> None:
    for name, by_it in groups.items():
        its = sorted(by_it)
        mean = [statistics.fmean(by_it[i]) for i in its]
        ax.plot(its, mean, marker="o", ms=3, label=f"{name} (n={max(len(v) for v in by_it.values())})")
        ax.fill_between(its, [min(by_it[i]) for i in its], [max(by_it[i]) for i in its], alpha=0.15)
    ax.axvline(0, color="0.6", lw=0.8, ls=":")
    ax.set(xlabel="fine-tuning iteration (pre-training at negative iterations)", ylabel="validation Dice", title=title)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)


def plot_validation_curves(records: Sequence[RunRecord], path: Path, title: str) -> Path | None:
    """Mean validation Dice over seeds against fine-tuning iteration, one line per group (seed range shaded).

    Runs with a ``VARIANT`` axis (ablations) get a second panel, with the main runs of the same
    method drawn again there for reference.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main = [r for r in records if "VARIANT" not in r.axes]
    variants = [r for r in records if "VARIANT" in r.axes]
    if not _curve_groups(records):
        return None
    panels = [(main, f"{title}: methods")]
    if variants:
        methods = {r.metrics.get("method") for r in variants}
        ref = [r for r in main if r.axes.get("METHOD") in methods or r.metrics.get("method") in methods]
        panels.append((ref + variants, f"{title}: ablations (seed 0 unless n says more)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(8 * len(panels), 4.5), squeeze=False)
    for ax, (recs, t) in zip(axes[0], panels):
        _draw_curves(ax, _curve_groups(recs), t)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _finetune_log(record: RunRecord) -> list[dict[str, Any]]:
    log = record.path / TRAIN_DIR / "log.jsonl"
    rows = []
    for line in (log.read_text().splitlines() if log.is_file() else []):
        try:
            e = json.loads(line)
        except json.JSONDecodeError:
            continue
        if e.get("kind") == "train" and e.get("phase") == "finetune":
            rows.append(e)
    return rows


_SHARE_COLUMNS = ("share/sup", "share/unsup", "share/consistency", "share/anco", "share/saacl",
                  "centre_share/averaged", "centre_share/separate")


def share_windows(record: RunRecord) -> dict[str, dict[str, float | None]]:
    """A run's mean of each ``share/<term>`` and centre share over the first and the last quarter of fine-tuning
    (``{}`` when its log has no shares): ``{"first quarter": {"share/sup": ..., ...}, "last quarter": {...}}``."""
    rows = _finetune_log(record)
    if not rows or not any(k.startswith("share/") for k in rows[0]):
        return {}
    last_it = max(int(e["iteration"]) for e in rows)
    first_it = min(int(e["iteration"]) for e in rows)
    span = max(last_it - first_it, 1)
    windows = {
        "first quarter": [e for e in rows if int(e["iteration"]) <= first_it + span / 4],
        "last quarter": [e for e in rows if int(e["iteration"]) >= last_it - span / 4],
    }
    out: dict[str, dict[str, float | None]] = {}
    for wname, sel in windows.items():
        out[wname] = {}
        for key in _SHARE_COLUMNS:
            vals = [float(e[key]) for e in sel if e.get(key) is not None]
            out[wname][key] = statistics.fmean(vals) if vals else None
    return out


def method_and_budget(record: RunRecord) -> tuple[str, int]:
    """``(variant or method, labelled patients)`` of a run; -1 when its budget is unknown."""
    axes = record.axes
    method = str(axes.get("VARIANT") or axes.get("METHOD") or record.metrics.get("method") or "?")
    labelled = axes.get("LABELLED_PATIENTS", record.metrics.get("labelled_patients"))
    return method, int(labelled) if isinstance(labelled, (int, float)) else -1


def loss_shares(records: Sequence[RunRecord]) -> str:
    """Markdown: per run, mean ``share/<term>`` over the first and last quarter of fine-tuning, and
    the mean centre share of the SAACL gradient (``centre_share/averaged`` / ``separate``); then the same
    per method and budget (mean over the seeds, with the range), and per budget one line setting ACTION++'s
    shares (SAACL, AnCo under ATS, supervised) beside ACTION's (AnCo at a fixed temperature, supervised)."""
    lines = ["# Which loss term drives the update", "",
             "Share of the update on the backbone that each weighted loss term drives, (w_k g_k . g) / ||g||^2 "
             "with g the sum of the weighted gradients (the shares add up to 1; a negative share pulls against "
             "the update), read from the training logs (every `runtime.log_every` iterations) and averaged over "
             "the first and the last quarter of fine-tuning. `centre`: the centre term's share of the SAACL "
             "gradient on the anchors, ||g_c|| / (||g_c|| + ||g_rest||), under the official `averaged` form and "
             "the `separate` form, on the same embeddings (the run trains with one of them: its config says which).",
             ""]
    header = "| run | window | " + " | ".join(["sup", "unsup", "consistency", "anco", "saacl"]) + \
        " | centre (averaged) | centre (separate) |"
    lines += [header, "|" + "---|" * 9]
    per_run = {r.run_id: share_windows(r) for r in records}
    groups: dict[tuple[str, int], list[dict[str, dict[str, float | None]]]] = {}
    for r in records:
        w = per_run[r.run_id]
        if not w:
            continue
        groups.setdefault(method_and_budget(r), []).append(w)
        for wname, vals in w.items():
            cells = [f"{v:.3f}" if v is not None else "-" for v in vals.values()]
            lines.append(f"| {r.run_id} | {wname} | " + " | ".join(cells) + " |")
    if not groups:
        return "\n".join(lines) + "\n"

    Windows = list[dict[str, dict[str, float | None]]]

    def values(ws: Windows, wname: str, key: str) -> list[float]:
        return [v for w in ws if (v := w.get(wname, {}).get(key)) is not None]

    def summary(ws: Windows, wname: str, key: str) -> tuple[float, float, float] | None:
        vals = values(ws, wname, key)
        return (statistics.fmean(vals), min(vals), max(vals)) if vals else None

    lines += ["", "## Per method and budget", "",
              "Mean over the runs (seeds) of each run's window mean above, with the smallest and largest run in "
              "brackets.", "",
              "| method | labelled | runs | window | sup | unsup | consistency | anco | saacl | centre (averaged) | "
              "centre (separate) |", "|" + "---|" * 11]
    for (method, labelled), ws in groups.items():
        for wname in ("first quarter", "last quarter"):
            cells = []
            for key in _SHARE_COLUMNS:
                sm = summary(ws, wname, key)
                cells.append("-" if sm is None else f"{sm[0]:.3f} [{sm[1]:.3f}, {sm[2]:.3f}]")
            budget = str(labelled) if labelled >= 0 else "?"
            lines.append(f"| {method} | {budget} | {len(ws)} | {wname} | " + " | ".join(cells) + " |")

    def pct(ws: Windows, key: str) -> str | None:
        sm = summary(ws, "last quarter", key)
        if sm is None:
            return None
        lo, hi = f"{100 * sm[1]:.0f}", f"{100 * sm[2]:.0f}"
        return f"{100 * sm[0]:.0f} %" + (f" ({lo}-{hi} %)" if lo != hi else "")

    def runs(n: int) -> str:
        return f"{n} run{'s' if n != 1 else ''}"

    said = []
    for (method, labelled), ws in groups.items():
        saacl, anco, sup = (pct(ws, k) for k in ("share/saacl", "share/anco", "share/sup"))
        if method != "actionpp" or saacl is None or anco is None or sup is None:
            continue
        budget = f"{labelled} labelled patient{'s' if labelled != 1 else ''}" if labelled >= 0 else "budget unknown"
        line = f"- {budget}: ACTION++ ({runs(len(ws))}): SAACL {saacl}, AnCo {anco}, the supervised loss {sup}"
        other = groups.get(("action", labelled), [])
        a_anco, a_sup = pct(other, "share/anco"), pct(other, "share/sup")
        if a_anco is not None and a_sup is not None:
            line += f"; ACTION ({runs(len(other))}): AnCo {a_anco}, the supervised loss {a_sup}"
        said.append(line + ".")
    if said:
        lines += ["", f"{SHARES_HEADING}, ACTION++ beside ACTION (last quarter of fine-tuning)", "",
                  "Share of the backbone's update per loss term: the mean over the runs, the smallest and largest "
                  "run in parentheses. ACTION++ adds two things to ACTION: the SAACL loss, and ATS, which schedules "
                  "the temperatures of SAACL, AnCo and pre-training (ACTION's AnCo keeps a fixed temperature). The "
                  "two methods' AnCo shares are therefore shares of two different losses; SAACL's share is the "
                  "part of ACTION++'s update that ACTION has no term for.", "", *said]
    return "\n".join(lines) + "\n"
