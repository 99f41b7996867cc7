"""One grid's runs set beside another grid's runs of the same method, budget and seed: a description (issue 18).

Two grids that train the same methods at the same budgets and seeds under different settings (the powered grid
under the ``acdc_lite`` profile's network modes, ``acdc_lite_power_official_7`` under the official scripts'
modes) answer "how much do the settings change each method?" only across grids. A grid file names the other
grid with ``describe_against: NAME``; at publish the runner reads that grid's published folder beside this one's
(``results/NAME``) and writes, per method and budget, this grid's run minus the other's, paired by seed (the same
seed gives both the same initial weights and labelled batches where the settings allow), with the 95 % t
interval and the sign count.

It is a description, not a verdict: no decision rule was fixed for it, so no call is made (a grid's own
comparison of ACTION++ with ACTION keeps its rule). Ablation variants are left out; the runs of each side are
refused as :func:`actionpp.replicate.paired.paired_rows` refuses them (one run per method, budget and seed, one
checkpoint).

:func:`across_section` is the one entry point the publisher (through
:func:`actionpp.replicate.analysis.write_paired`, into ``paired.md``) and notebook 06 share: it reads the other
grid's folder, names the runs it could not read, and says in the section's place why nothing could be set beside
(no folder, other classes, another checkpoint). Built on :mod:`actionpp.replicate.paired`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from actionpp.replicate.paired import (
    LEVEL,
    NAMES,
    PairedRow,
    ScoredRun,
    collect_scored,
    compare_by_seed,
    fmt_points,
    method_order,
    one_run_each,
)

__all__ = ["across_rows", "across_markdown", "across_section"]


def across_rows(runs: Sequence[ScoredRun], reference: Sequence[ScoredRun], splits: Sequence[str] = ("test", "val"),
                weights: str = "student", level: float = LEVEL) -> list[PairedRow]:
    """This grid's run - the reference grid's run of the same method, budget and seed, per split and class
    (``mean`` first; ``a`` and ``b`` are both the method, ``role`` is ``"across"``), for every method and budget
    with at least one seed in both grids, largest budget first, methods in
    :data:`~actionpp.replicate.paired.NAMES` order.

    Raises ValueError, naming the side, when either side's runs are refused as
    :func:`~actionpp.replicate.paired.paired_rows` refuses them, when the two sides score different checkpoints,
    or when their classes differ (a mean over other classes is another number).
    """
    sides = []
    for side, group in (("this grid", runs), ("the other grid", reference)):
        try:
            sides.append(one_run_each(group))
        except ValueError as exc:
            raise ValueError(f"{side}'s runs: {exc}") from None
    mine, theirs = sides
    whiches = sorted({r.which for r in (*mine, *theirs)})
    if len(whiches) > 1:
        raise ValueError(f"the two grids score different checkpoints ({', '.join(whiches)}): compare like with like")
    classes = next((r.classes for r in mine if r.classes), ())
    other = next((r.classes for r in theirs if r.classes), ())
    if classes and other and tuple(classes) != tuple(other):
        raise ValueError(f"the two grids score different classes ({', '.join(classes)} against {', '.join(other)}): "
                         "compare like with like")
    rows: list[PairedRow] = []
    for labelled in sorted({r.labelled for r in mine}, reverse=True):
        for method in sorted({r.method for r in mine if r.labelled == labelled}, key=method_order):
            ra = {r.seed: r for r in mine if r.labelled == labelled and r.method == method}
            rb = {r.seed: r for r in theirs if r.labelled == labelled and r.method == method}
            if set(ra) & set(rb):
                rows += [r for r in compare_by_seed(ra, rb, method, method, "across", labelled, splits, weights,
                                                    classes, level) if r.seeds]
    return rows


def across_markdown(rows: Sequence[PairedRow], this: str, reference: str, problem: str = "",
                    left_out: Sequence[str] = (), which: str = "last", weights: str = "student") -> list[str]:
    """The section of ``paired.md``: a sentence per method and budget (mean over classes, test then val) and the
    table of every split and class; ``problem``: why nothing could be set beside, said in their place;
    ``left_out``: the other grid's runs that could not be read, named under it. No lines when there is nothing
    to say."""
    head = [f"### Beside `{reference}`: the same method, budget and seed (a description, no call)", ""]
    if problem:
        return [*head, f"Not read: {problem}."]
    if not rows:
        return []
    lines = [*head,
             f"d = this grid's run (`{this}`) - `{reference}`'s run of the same method, budget and seed, Dice points "
             f"of the {which} checkpoint's {weights}, with the 95 % t interval over the seeds both grids have so far "
             "and the number of seeds on which this grid's run scores higher. It describes what the two grids' "
             "settings change for each method; no rule was fixed for it, so no call is made.", ""]
    by_key = {(r.labelled, r.a, r.split, r.cls): r for r in rows}
    for labelled, method in dict.fromkeys((r.labelled, r.a) for r in rows):
        parts = []
        for split in ("test", "val"):
            r = by_key.get((labelled, method, split, "mean"))
            if r is not None:
                parts.append(f"{fmt_points(r.paired.mean, True)} [{fmt_points(r.paired.lo, True)}, "
                             f"{fmt_points(r.paired.hi, True)}] on {split} (higher on {r.ahead} of {r.paired.n} "
                             f"seeds; mean Dice {fmt_points(r.mean_a)} against {fmt_points(r.mean_b)})")
        if parts:
            lines.append(f"- {NAMES.get(method, method)} at {labelled} labelled patient{'s' if labelled != 1 else ''}: "
                         + "; ".join(parts) + ".")
    lines += ["", "| method | labelled | split | class | seeds | d | 95 % CI | higher / lower | this grid | "
              f"{reference} |",
              "| --- | ---: | --- | --- | ---: | ---: | --- | --- | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {NAMES.get(r.a, r.a)} | {r.labelled} | {r.split} | {r.cls} | {r.paired.n} | "
                     f"{fmt_points(r.paired.mean, True)} | [{fmt_points(r.paired.lo, True)}, "
                     f"{fmt_points(r.paired.hi, True)}] | {r.ahead} / {r.behind} | {fmt_points(r.mean_a)} | "
                     f"{fmt_points(r.mean_b)} |")
    if left_out:
        lines += ["", f"Left out of `{reference}` (unreadable): " + "; ".join(left_out) + "."]
    return lines


def across_section(runs: Sequence[ScoredRun], this: str, reference: str, folder: str | Path,
                   weights: str = "student") -> list[str]:
    """The markdown lines that set ``runs`` (grid ``this``) beside the scored runs in ``folder`` (grid
    ``reference``'s published folder): :func:`across_rows` and :func:`across_markdown`, with the reason in the
    section's place when the folder is missing or the runs cannot be set beside each other, and the other grid's
    unreadable runs named. Never raises on the other grid's content."""
    folder = Path(folder)
    if not folder.is_dir():
        return across_markdown([], this, reference, f"no published folder `{reference}` beside this one")
    problems: list[str] = []
    theirs = collect_scored(folder, problems)
    try:
        rows = across_rows(runs, theirs, weights=weights)
    except ValueError as exc:
        return across_markdown([], this, reference, str(exc))
    which = " / ".join(sorted({r.which for r in runs})) or "last"
    return across_markdown(rows, this, reference, left_out=[p.replace(str(folder), reference) for p in problems],
                           which=which, weights=weights)
