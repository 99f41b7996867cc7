"""The powered grid's analysis files: ``paired.csv``, ``paired.md`` and ``paired.png`` (issue 18).

:func:`write_paired` reads a grid's scored runs (:func:`actionpp.replicate.paired.collect_scored`) and
writes what a reader of ``docs/results.md`` sees: the verdict sentences and the table of paired
comparisons (:mod:`actionpp.replicate.paired`), the ablation variants beside their own method, the noise
table and its sentences (:mod:`actionpp.replicate.noise`), and the figure, one point and 95 % interval per
comparison, budget, split and class. Under the noise table, how often each method lost each class
(:mod:`actionpp.replicate.missed`) and, for a grid that names another, its runs beside that grid's
(:mod:`actionpp.replicate.across`). The publisher (:mod:`actionpp.replicate.publish`) calls it for a
scored grid; notebook 06 draws the same figure with :func:`paired_figure`.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from actionpp.atomic import atomic_write_bytes, atomic_write_text
from actionpp.replicate.across import across_section
from actionpp.replicate.missed import missed_markdown, missed_rows
from actionpp.replicate.noise import noise_rows, noise_summary
from actionpp.replicate.paired import (
    LEVEL,
    NAMES,
    Interval,
    PairedRow,
    ScoredRun,
    collect_scored,
    looks,
    paired_rows,
    variant_rows,
    variant_sentences,
    verdicts,
)
from actionpp.replicate.paired import fmt_points as _fmt

__all__ = ["paired_csv", "paired_markdown", "paired_figure", "looks_figure", "write_paired"]


_CSV_FIELDS = ["comparison", "role", "labelled", "split", "class", "n_pairs", "seeds", "d_mean", "d_sd", "ci_lo",
               "ci_hi", "ahead", "behind", "call", "unpaired_diff", "unpaired_lo", "unpaired_hi", "unpaired_df",
               "mean_a", "mean_b"]


def paired_csv(rows: Sequence[PairedRow]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=_CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({
            "comparison": f"{r.a} - {r.b}", "role": r.role, "labelled": r.labelled, "split": r.split,
            "class": r.cls, "n_pairs": r.paired.n, "seeds": " ".join(map(str, r.seeds)),
            "d_mean": f"{r.paired.mean:.4f}", "d_sd": f"{r.paired.sd:.4f}", "ci_lo": f"{r.paired.lo:.4f}",
            "ci_hi": f"{r.paired.hi:.4f}", "ahead": r.ahead, "behind": r.behind, "call": r.call,
            "unpaired_diff": f"{r.unpaired.mean:.4f}", "unpaired_lo": f"{r.unpaired.lo:.4f}",
            "unpaired_hi": f"{r.unpaired.hi:.4f}", "unpaired_df": f"{r.unpaired.df:.2f}",
            "mean_a": f"{r.mean_a:.4f}", "mean_b": f"{r.mean_b:.4f}",
        })
    return buf.getvalue()


def _n_volumes(runs: Sequence[ScoredRun], split: str) -> str:
    ns = sorted({int(r.scores.get(split, {}).get("student", {}).get("n_volumes", 0)) for r in runs} - {0})
    return " or ".join(map(str, ns)) or "?"


def paired_markdown(rows: Sequence[PairedRow], noise: Sequence[Mapping[str, Any]], runs: Sequence[ScoredRun],
                    summary: Sequence[str] = (), planned: Mapping[int, int] | None = None,
                    variants: Sequence[PairedRow] = (), described: Mapping[str, str] | None = None,
                    variant_problem: str = "",
                    steps: Mapping[int, Sequence[tuple[int, Interval]]] | None = None,
                    missed: Sequence[Mapping[str, Any]] = (), across: Sequence[str] = ()) -> str:
    """``paired.md``: the verdicts and the table of ``rows`` (:func:`paired_rows`), the ablation variants
    beside their method (``variants``: :func:`variant_rows`; ``described``: variant -> its changes;
    ``variant_problem``: why they could not be read, said in their place), and the noise table with its
    sentences. ``steps``: the primary interval after each pair (:func:`~actionpp.replicate.paired.looks`), a
    table under the verdicts. ``missed``: :func:`~actionpp.replicate.missed.missed_rows`, a table after the noise
    table; ``across``: the lines of :func:`~actionpp.replicate.across.across_markdown`, last."""
    n_runs = len(runs)
    which = " / ".join(sorted({r.which for r in runs})) or "last"
    lines = [
        "### Paired differences (runner-written: `actionpp.replicate.paired`)",
        "",
        f"{n_runs} scored runs. Dice points (x 100) of the {which} checkpoint's student; d = A - B per seed, the mean "
        f"with its {int(LEVEL * 100)} % t interval over the paired seeds, the sign count (A ahead / behind), and "
        "beside it the unpaired (Welch) interval of the same seeds (what the pairing buys). **Primary**: "
        f"ACTION++ - ACTION, mean over classes, test split ({_n_volumes(runs, 'test')} volumes); the call is "
        "*ahead* / *behind* only when the interval excludes 0.",
        "",
        "**Verdicts** (the decision rule above, applied):",
        "",
    ]
    lines += [f"- {v}" for v in verdicts(rows, planned)] or ["- no budget has both methods scored yet"]
    lines += _looks_table(steps or {}, planned or {})
    lines += ["", "| comparison | labelled | split | class | pairs | d | 95 % CI (paired) | ahead / behind | call | "
              "unpaired d [95 % CI] | narrower |",
              "| --- | ---: | --- | --- | ---: | ---: | --- | --- | --- | --- | --- |"]
    for r in rows:
        narrower = "paired" if r.paired.width < r.unpaired.width else "unpaired"
        if not (math.isfinite(r.paired.width) and math.isfinite(r.unpaired.width)):
            narrower = "-"
        name = f"{NAMES.get(r.a, r.a)} - {NAMES.get(r.b, r.b)}"
        lines.append(
            f"| {name} | {r.labelled} | {r.split} | {r.cls} | {r.paired.n} | {_fmt(r.paired.mean, True)} | "
            f"[{_fmt(r.paired.lo, True)}, {_fmt(r.paired.hi, True)}] | {r.ahead} / {r.behind} | {r.call} | "
            f"{_fmt(r.unpaired.mean, True)} [{_fmt(r.unpaired.lo, True)}, {_fmt(r.unpaired.hi, True)}] | {narrower} |"
        )
    if variant_problem:
        lines += ["", "### Ablation variants beside their method", "", f"Not read: {variant_problem}."]
    if variants:
        lines += ["", "### Ablation variants beside their method (paired by seed; diagnostics, read on val)", "",
                  "Each variant changes one method's settings; d = variant - its method, per seed, over the seeds "
                  "both have, mean over classes (per class in `paired.csv`). Variants are outside the primary "
                  "comparison, and no choice is made on test.", ""]
        lines += [f"- {x}" for x in variant_sentences(variants, described)]
        lines += ["", "| variant | method | labelled | split | pairs | d | 95 % CI (paired) | ahead / behind | call |",
                  "| --- | --- | ---: | --- | ---: | ---: | --- | --- | --- |"]
        for r in variants:
            if r.cls == "mean":
                lines.append(
                    f"| {r.a} | {NAMES.get(r.b, r.b)} | {r.labelled} | {r.split} | {r.paired.n} | "
                    f"{_fmt(r.paired.mean, True)} | [{_fmt(r.paired.lo, True)}, {_fmt(r.paired.hi, True)}] | "
                    f"{r.ahead} / {r.behind} | {r.call} |")
    lines += [
        "", "### Noise of the estimates (sample std over seeds, Dice points)", "",
        "| labelled | method | runs | test, student | test, EMA teacher | sd student | sd teacher | sd last val | "
        "sd mean of last 3 val | mean dip (last - mean of 3) |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n in noise:
        lines.append(
            f"| {n['labelled']} | {NAMES.get(n['method'], n['method'])} | {n['n']} | {_fmt(n['test_student'])} | "
            f"{_fmt(n['test_teacher'])} | {_fmt(n['sd_test_student'])} | {_fmt(n['sd_test_teacher'])} | "
            f"{_fmt(n['sd_val_last'])} | {_fmt(n['sd_val_mean3'])} | {_fmt(n['dip'])} |"
        )
    if summary:
        lines += ["", "**Less noisy estimates?** (the decision rule's noise question, pooled over the groups above)",
                  ""]
        lines += [f"- {x}" for x in summary]
    table = missed_markdown(missed)
    if table:
        lines += ["", *table]
    if across:
        lines += ["", *across]
    return "\n".join(lines) + "\n"


def _looks_table(steps: Mapping[int, Sequence[tuple[int, Interval]]], planned: Mapping[int, int]) -> list[str]:
    """The primary call after each pair, per budget: how an interim verdict moved as the seeds arrived."""
    if not steps:
        return []
    lines = ["", "**The primary call at each look** (ACTION++ - ACTION, test, mean over classes; the pairs in the "
             "order they finished, the later run of each pair deciding; a verdict published between two pairs is the "
             "line of the pairs in by then, and only the call at a budget's planned pairs answers its question):", "",
             "| labelled | pairs | seed added | d | 95 % CI (paired) | call |",
             "| ---: | ---: | ---: | ---: | --- | --- |"]
    for lab, s in steps.items():
        for seed, iv in s:
            planned_note = f" of {planned[lab]}" if planned.get(lab) else ""
            call = ("not distinguishable" if not iv.excludes_zero else "ahead" if iv.mean > 0 else "behind")
            lines.append(f"| {lab} | {iv.n}{planned_note} | {seed} | {_fmt(iv.mean, True)} | [{_fmt(iv.lo, True)}, "
                         f"{_fmt(iv.hi, True)}] | {call} |")
    return lines


def _png(fig: Any) -> bytes:
    """A finished matplotlib figure as PNG bytes (110 dpi, tight layout); the figure is closed."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def paired_figure(rows: Sequence[PairedRow]) -> bytes | None:
    """PNG: per comparison a panel; per budget and class the paired mean (test, filled; val, open) and 95 % interval."""
    shown = [r for r in rows if r.role in ("primary", "secondary") and r.paired.n >= 2]
    if not shown:
        return None  # no interval to draw yet (one seed a side)
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    pairs = list(dict.fromkeys((r.a, r.b) for r in shown))
    budgets = sorted({r.labelled for r in shown}, reverse=True)
    classes = list(dict.fromkeys(r.cls for r in shown))
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.2 * len(pairs), 3.6), squeeze=False, sharey=False)
    colours = plt.get_cmap("tab10")
    for ax, (a, b) in zip(axes[0], pairs):
        for bi, lab in enumerate(budgets):
            for split, style in (("test", "o"), ("val", "s")):
                xs, ys, lo, hi, ns = [], [], [], [], set()
                for ci, cls in enumerate(classes):
                    r = next((x for x in shown if (x.a, x.b, x.labelled, x.split, x.cls) == (a, b, lab, split, cls)),
                             None)
                    if r is None or r.paired.n < 2:
                        continue
                    xs.append(ci + (bi - (len(budgets) - 1) / 2) * 0.22 + (0.06 if split == "val" else -0.06))
                    ys.append(r.paired.mean)
                    ns.add(r.paired.n)
                    lo.append(r.paired.mean - r.paired.lo)
                    hi.append(r.paired.hi - r.paired.mean)
                if xs:
                    ax.errorbar(xs, ys, yerr=[lo, hi], fmt=style, color=colours(bi), capsize=3, ms=5,
                                mfc=colours(bi) if split == "test" else "white",
                                label=f"{lab} labelled, {split} ({'/'.join(map(str, sorted(ns)))} pairs)")
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(range(len(classes)), classes)
        ax.set_title(f"{NAMES.get(a, a)} - {NAMES.get(b, b)}", fontsize=10)
        ax.set_ylabel("paired difference, Dice points")
    axes[0][0].legend(fontsize=7, loc="best")
    fig.suptitle("per-seed paired differences: mean and 95 % t interval (filled: test, open: val)", fontsize=10)
    return _png(fig)


def looks_figure(steps: Mapping[int, Sequence[tuple[int, Interval]]], planned: Mapping[int, int] | None = None
                 ) -> bytes | None:
    """PNG: per budget, the primary difference and its 95 % interval after each pair (:func:`looks`), against the
    number of pairs, with the budget's planned pairs marked: how far an interim call moved as seeds arrived."""
    if not steps:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    planned = planned or {}
    fig, axes = plt.subplots(1, len(steps), figsize=(3.6 * len(steps), 3.2), squeeze=False)
    for ax, (lab, s) in zip(axes[0], steps.items()):
        ns = [iv.n for _, iv in s]
        means = [iv.mean for _, iv in s]
        finite = [(n, iv) for n, (_, iv) in zip(ns, s) if math.isfinite(iv.lo) and math.isfinite(iv.hi)]
        colours = ["C3" if iv.excludes_zero else "C0" for _, iv in s]
        ax.vlines([n for n, _ in finite], [iv.lo for _, iv in finite], [iv.hi for _, iv in finite],
                  colors=["C3" if iv.excludes_zero else "C0" for _, iv in finite], lw=1.5)
        ax.scatter(ns, means, c=colours, zorder=3, s=22)
        ax.axhline(0, color="k", lw=0.8)
        if planned.get(lab):
            ax.axvline(planned[lab], color="0.6", ls="--", lw=0.8)
            ax.set_xlim(1.5, max(planned[lab], max(ns)) + 0.5)
        # with more than three looks the last three set the scale, and the first, widest intervals run off it
        scale = finite[-3:] if len(finite) > 3 else finite
        lo = min([iv.lo for _, iv in scale] + means)
        hi = max([iv.hi for _, iv in scale] + means)
        pad = 0.25 * (hi - lo) + 0.5
        ax.set_ylim(lo - pad, hi + pad)
        cut = any(iv.lo < lo - pad or iv.hi > hi + pad for _, iv in finite)
        ax.set_title(f"{lab} labelled patient{'s' if lab != 1 else ''}" + (" (first intervals cut off)" if cut else ""),
                     fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("pairs in (dashed: planned)")
        ax.set_ylabel("ACTION++ - ACTION, Dice points")
    fig.suptitle("ACTION++ - ACTION after each pair, 95 % interval (test; red: the interval excludes 0)", fontsize=10)
    return _png(fig)


def write_paired(source: str | Path, dest: str | Path | None = None,
                 only: Iterable[str] | None = None, planned: Mapping[int, int] | None = None,
                 described: Mapping[str, str] | None = None,
                 against: tuple[str, str, str | Path] | None = None) -> dict[str, Any]:
    """Read the scored runs under ``source``, write ``paired.csv``, ``paired.md`` and ``paired.png`` into ``dest``.

    ``dest`` defaults to ``source``; ``only``: the run ids to analyse (:func:`collect_scored`); ``planned``:
    the grid's planned pairs per budget (:func:`planned_pairs`), for the verdicts' interim note; ``described``:
    variant -> what it changes (:func:`actionpp.replicate.paired.describe_variants`); ``against``: ``(this grid's
    name, the other grid's name, its folder)``, to set these runs beside that grid's scored runs
    (:func:`actionpp.replicate.across.across_section`). Returns
    ``{"runs", "rows", "variants", "verdicts", "noise_summary", "markdown", "files"}``; with no
    scored run nothing is written.
    """
    source = Path(source)
    dest = Path(dest) if dest is not None else source
    runs = collect_scored(source, only=only)
    rows = paired_rows(runs)
    try:
        variants, variant_problem = variant_rows(runs), ""
    except ValueError as exc:  # the variants cannot be read: say why, and keep the main analysis
        variants, variant_problem = [], str(exc)
    noise = noise_rows(runs)
    summary = noise_summary(runs) if runs else []
    across = across_section(runs, against[0], against[1], against[2]) if against is not None and runs else []
    md = paired_markdown(rows, noise, runs, summary, planned, variants, described, variant_problem, looks(runs),
                         missed_rows(runs), across)
    files: list[str] = []
    if runs:
        dest.mkdir(parents=True, exist_ok=True)
        atomic_write_text(dest / "paired.csv", paired_csv([*rows, *variants]))
        atomic_write_text(dest / "paired.md", md)
        files += ["paired.csv", "paired.md"]
        png = paired_figure(rows)
        if png is not None:
            atomic_write_bytes(dest / "paired.png", png)
            files.append("paired.png")
        else:
            (dest / "paired.png").unlink(missing_ok=True)  # an earlier figure of this function no longer holds
    return {"runs": len(runs), "rows": rows, "variants": variants, "verdicts": verdicts(rows, planned),
            "noise_summary": summary,
            "markdown": md, "files": files}
