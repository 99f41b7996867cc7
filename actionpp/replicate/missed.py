"""How often a run loses a class altogether: structures missed per class, per method and budget (issue 18).

A Dice averaged over volumes hides how it fails. A run that segments every right ventricle a little worse and
a run that finds no right ventricle at all on a quarter of the patients can have the same mean; the paper's
argument is about the second kind of failure (a tail class collapsing). ``scores.json``
(:mod:`actionpp.replicate.score`) counts, per class, the volumes whose ground truth holds the class and whose
prediction holds none of it (``missed``). :func:`missed_rows` sums those counts up per method (or ablation
variant) and budget, and :func:`missed_markdown` writes the table that
:func:`actionpp.replicate.analysis.write_paired` puts into ``paired.md``, under the noise table.

The counts exist only in entries scored by this package from commit ``0108a5b`` (2026-12-07) on: a run scored
by earlier code has none, even one scored the same day. A row says how many of its group's runs carry them, a run
without them is left out of its group's numbers, never read as zero, and the groups with none are named under
the table.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from actionpp.replicate.paired import NAMES, ScoredRun, method_order

__all__ = ["missed_rows", "missed_markdown"]


def _counts(run: ScoredRun, split: str, weights: str) -> tuple[Mapping[str, int], int | None] | None:
    """The run's per-class missed counts on ``split`` and its number of volumes (None when not recorded); None
    when it has no counts."""
    entry = run.scores.get(split, {}).get(weights)
    if not isinstance(entry, Mapping) or not isinstance(entry.get("missed"), Mapping):
        return None
    n = entry.get("n_volumes")
    return {str(c): int(v) for c, v in entry["missed"].items()}, (int(n) if isinstance(n, int) else None)


def missed_rows(runs: Sequence[ScoredRun], split: str = "test", weights: str = "student") -> list[dict[str, Any]]:
    """Per budget (largest first) and method or variant: structures missed per run on ``split``.

    Each row: ``labelled``, ``arm`` (the method, or the variant's name), ``method`` (the arm's method),
    ``split`` and ``weights`` (as asked), ``runs`` (of the arm at that budget), ``counted`` (those whose entry
    has per-class counts), ``volumes`` (the split's volumes, as the counted runs give it: one number, or several
    joined by " or "; "?" when none records it), and ``classes``: class -> ``{"mean", "min", "max", "runs",
    "runs_missing"}``, the missed structures per counted run that has the class (mean, smallest, largest), how
    many runs that is, and how many of them missed the class on at least one volume. Rows with no counted run
    keep ``classes`` empty.
    """
    arms: dict[tuple[int, str], list[ScoredRun]] = {}
    for r in runs:
        arms.setdefault((r.labelled, r.variant or r.method), []).append(r)
    out = []
    for (labelled, arm) in sorted(arms, key=lambda k: (-k[0], method_order(k[1]))):
        group = arms[(labelled, arm)]
        counted = [c for c in (_counts(r, split, weights) for r in group) if c is not None]
        classes: dict[str, dict[str, float | int]] = {}
        for cls in dict.fromkeys(c for counts, _ in counted for c in counts):
            vals = [counts[cls] for counts, _ in counted if cls in counts]
            classes[cls] = {"mean": statistics.fmean(vals), "min": min(vals), "max": max(vals), "runs": len(vals),
                            "runs_missing": sum(v > 0 for v in vals)}
        volumes = " or ".join(str(n) for n in sorted({n for _, n in counted if n is not None})) or "?"
        out.append({"labelled": labelled, "arm": arm, "method": group[0].method, "split": split, "weights": weights,
                    "runs": len(group), "counted": len(counted), "volumes": volumes, "classes": classes})
    return out


def _arm_name(row: Mapping[str, Any]) -> str:
    """A method's display name; a variant with its method's beside it (``official_networks (ACTION++)``)."""
    method = NAMES.get(row["method"], row["method"])
    return method if row["arm"] == row["method"] else f"{row['arm']} ({method})"


def missed_markdown(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The table of :func:`missed_rows` with its heading, one sentence on what it counts and a line naming the
    groups without counts (markdown lines); no lines when no run carries counts."""
    if not any(r["counted"] for r in rows):
        return []
    split, weights = rows[0]["split"], rows[0]["weights"]
    classes = list(dict.fromkeys(c for r in rows for c in r["classes"]))
    lines = [f"### Structures missed per class ({split} split, {weights})", "",
             "A structure is missed when the ground truth of a volume holds the class and the prediction holds none "
             "of it (`scores.json` `missed`). Per run: the mean number of volumes it missed the class on, the "
             "smallest and largest run in parentheses, then how many runs missed it at least once. Runs whose "
             "scores were written before per-class counts were recorded are left out: `counted` says how many of "
             "the runs carry them.", "",
             "| labelled | method / variant | counted | volumes | " + " | ".join(classes) + " |",
             "| ---: | --- | ---: | ---: | " + " | ".join("---" for _ in classes) + " |"]
    for r in rows:
        if not r["counted"]:
            continue
        cells = []
        for c in classes:
            s = r["classes"].get(c)
            cells.append("-" if s is None else
                         f"{s['mean']:.1f} ({s['min']:g}-{s['max']:g}), {s['runs_missing']} of {s['runs']}")
        lines.append(f"| {r['labelled']} | {_arm_name(r)} | {r['counted']} of {r['runs']} | {r['volumes']} | "
                     + " | ".join(cells) + " |")
    without = [f"{_arm_name(r)} at {r['labelled']} labelled ({r['runs']} run{'s' if r['runs'] != 1 else ''})"
               for r in rows if not r["counted"]]
    if without:
        lines += ["", "No per-class counts (scored before they were recorded): " + "; ".join(without) + "."]
    return lines
