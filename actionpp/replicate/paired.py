"""Paired comparisons of methods over seeds: the powered grid's analysis (docs/results.md, issue 18).

A grid whose runs the runner scored (``scores.json``: :mod:`actionpp.replicate.score`) is read
back as one :class:`ScoredRun` per finished run. For two methods A and B at one label budget, the
runs sharing a seed are pairs (same initial weights, same labelled batches where the methods draw
them); the per-seed differences d = A - B give

- the mean difference, its 95 % confidence interval from Student's t with n - 1 degrees of
  freedom (:func:`paired_interval`), and the sign count (seeds where A is ahead / behind / equal);
- beside it the unpaired comparison of the same runs, Welch's interval (:func:`welch_interval`),
  so a reader sees how much the pairing narrows the interval;

per split (``test``: the primary number, never used for a choice; ``val``: the selection split),
per class and for the mean over classes, in Dice points (x 100). A difference is called
``ahead`` / ``behind`` only when its interval excludes 0.

Ablation variants (a grid's ``variants``) are outside those comparisons: :func:`variant_rows` sets each
beside its own method's runs of the same seeds and budget (variant - method; val first, test beside),
and :func:`variant_sentences` says it in one sentence per variant and budget.

A verdict written while seeds are still arriving is one look at a growing sample: :func:`looks` gives
the primary interval as it stood after each pair, in the order the pairs finished, so a reader sees how
far an interim call moved before the planned number of pairs was in.

Why one module of this length: it is the decision rule of docs/results.md in code (which runs pair, the
intervals, the call, the sentences that state it, the looks), and a reader checks it against that rule
in one place; the noise question and the writing of files, which the rule only refers to, live apart.

The noise of the estimates (teacher, three-point mean) is :mod:`actionpp.replicate.noise`, which
builds on this module.

:mod:`actionpp.replicate.analysis` writes ``paired.csv``, ``paired.md`` (tables and the verdict sentences)
and ``paired.png`` (one point and interval per budget and class). Taught in
notebooks/06_replication_report.ipynb.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ScoredRun",
    "Interval",
    "PairedRow",
    "COMPARISONS",
    "paired_interval",
    "welch_interval",
    "collect_scored",
    "paired_rows",
    "method_order",
    "one_run_each",
    "compare_by_seed",
    "variant_rows",
    "variant_sentences",
    "describe_variants",
    "planned_pairs",
    "grid_design",
    "main_runs",
    "fmt_points",
    "verdicts",
    "looks",
]

#: (A, B, role): A - B is reported; the first is the primary question.
COMPARISONS: tuple[tuple[str, str, str], ...] = (
    ("actionpp", "action", "primary"),
    ("actionpp", "supervised", "secondary"),
    ("actionpp", "mean_teacher", "secondary"),
    ("action", "supervised", "context"),
)
NAMES = {"actionpp": "ACTION++", "action": "ACTION", "supervised": "supervised", "mean_teacher": "mean teacher"}
LEVEL = 0.95


def method_order(name: str) -> tuple[int, str]:
    """Sort key for methods (and variants) in tables: the :data:`NAMES` order, then any other name alphabetically.

    >>> sorted(["zeta", "action", "actionpp", "alpha"], key=method_order)
    ['actionpp', 'action', 'alpha', 'zeta']
    """
    order = list(NAMES)
    return (order.index(name), "") if name in NAMES else (len(order), name)


@dataclass(frozen=True)
class ScoredRun:
    """One finished, scored run: its axes, ``scores.json`` content and validation curve (val Dice, in order)."""

    run_id: str
    method: str
    variant: str | None
    labelled: int
    seed: int
    scores: Mapping[str, Mapping[str, Mapping[str, Any]]]
    val_curve: tuple[float, ...] = ()
    classes: tuple[str, ...] = ()
    which: str = "last"  # the checkpoint scored (scores.json)
    finished: str = ""  # when the run finished (its ``done`` marker, ISO time); "" when not recorded

    def dice(self, split: str, weights: str = "student", cls: str = "mean") -> float | None:
        """Dice in [0, 1] of ``cls`` (``"mean"``: mean over the foreground classes); None when absent."""
        entry = self.scores.get(split, {}).get(weights)
        if entry is None:
            return None
        v = entry.get("dice_mean") if cls == "mean" else entry.get("dice", {}).get(cls)
        return float(v) if v is not None and math.isfinite(float(v)) else None


@dataclass(frozen=True)
class Interval:
    """A difference estimate: ``mean`` with ``[lo, hi]`` at ``level``; ``n`` observations (pairs or runs)."""

    mean: float
    lo: float
    hi: float
    n: int
    sd: float = math.nan
    df: float = math.nan
    level: float = LEVEL

    @property
    def excludes_zero(self) -> bool:
        """The interval lies on one side of 0. A zero-width interval (every difference equal: no spread to
        estimate the noise from) never does."""
        if not self.width > 0:
            return False
        return self.lo > 0 or self.hi < 0

    @property
    def width(self) -> float:
        return self.hi - self.lo


def _t(df: float, level: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2, df))


def paired_interval(diffs: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean of ``diffs`` with the t interval ``mean +- t_{n-1} sd / sqrt(n)``; n = 1 gives an infinite interval.

    >>> iv = paired_interval([1.0, 2.0, 3.0])   # mean 2, sd 1, t_2 = 4.303: 2 +- 2.484
    >>> round(iv.lo, 3), round(iv.hi, 3)
    (-0.484, 4.484)
    """
    d = [float(x) for x in diffs]
    n = len(d)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    m = statistics.fmean(d)
    if n == 1:
        return Interval(m, -math.inf, math.inf, 1)
    sd = statistics.stdev(d)
    half = _t(n - 1, level) * sd / math.sqrt(n)
    return Interval(m, m - half, m + half, n, sd, n - 1, level)


def welch_interval(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Interval:
    """``mean(a) - mean(b)`` with Welch's t interval (unequal variances, Welch-Satterthwaite degrees of freedom)."""
    a, b = [float(x) for x in a], [float(x) for x in b]
    if not a or not b:
        return Interval(math.nan, math.nan, math.nan, 0)
    m = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return Interval(m, -math.inf, math.inf, len(a) + len(b))
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return Interval(m, m, m, len(a) + len(b), 0.0, math.inf, level)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = _t(df, level) * se
    return Interval(m, m - half, m + half, len(a) + len(b), math.nan, df, level)


# --------------------------------------------------------------------------------------------- reading


def _val_curve(log: Path) -> tuple[float, ...]:
    if not log.is_file():
        return ()
    out = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            e = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(e, dict) and e.get("kind") == "val" and isinstance(e.get("dice"), (int, float)) \
                and math.isfinite(e["dice"]):
            out.append(float(e["dice"]))
    return tuple(out)


def collect_scored(out: str | Path, problems: list[str] | None = None,
                   only: Iterable[str] | None = None) -> list[ScoredRun]:
    """Every finished run under ``out`` that holds a readable ``scores.json`` (sorted by run id).

    ``out`` is a grid's output folder or a published copy (run folders with ``done``, ``metrics.json``,
    ``scores.json`` and ``run/log.jsonl``). Runs without scores are left out and, when ``problems``
    is a list, named in it. ``only``: read just these run ids (a grid's current runs; a published folder
    may still hold folders of runs the grid no longer has).
    """
    from actionpp.replicate.score import SCORES, ScoresError, read_scores
    from actionpp.replicate.tables import collect

    runs = []
    keep = set(only) if only is not None else None
    for rec in collect(out, problems=problems):
        if keep is not None and rec.run_id not in keep:
            continue
        try:
            sc = read_scores(rec.path / SCORES)
        except ScoresError as exc:
            if problems is not None:
                problems.append(str(exc))
            continue
        axes = rec.axes
        method = str(axes.get("METHOD", rec.metrics.get("method", "")))
        runs.append(ScoredRun(
            run_id=rec.run_id, method=method, variant=axes.get("VARIANT"),
            labelled=int(axes.get("LABELLED_PATIENTS", rec.metrics.get("labelled_patients", 0))),
            seed=int(axes.get("SEED", rec.metrics.get("seed", 0))), scores=sc["scores"],
            val_curve=_val_curve(rec.path / "run" / "log.jsonl"), classes=tuple(sc.get("classes", ())),
            which=str(sc.get("which", "last")), finished=rec.finished,
        ))
    return sorted(runs, key=lambda r: r.run_id)


# --------------------------------------------------------------------------------------------- analysis


@dataclass(frozen=True)
class PairedRow:
    """A - B at one budget, split and class: the paired interval, the sign count and the unpaired interval."""

    a: str
    b: str
    role: str
    labelled: int
    split: str
    cls: str
    paired: Interval
    unpaired: Interval
    ahead: int
    behind: int
    seeds: tuple[int, ...] = field(default_factory=tuple)
    mean_a: float = math.nan  # A's and B's mean Dice points over the paired seeds: where the difference sits
    mean_b: float = math.nan

    @property
    def call(self) -> str:
        if self.paired.n < 2:
            return "too few seeds"
        if not self.paired.excludes_zero:
            return "not distinguishable"
        return "ahead" if self.paired.mean > 0 else "behind"


def main_runs(runs: Iterable[ScoredRun]) -> list[ScoredRun]:
    """The runs of the main comparison: every run that is not an ablation variant."""
    return [r for r in runs if r.variant is None]


def _points(runs: Mapping[int, ScoredRun], split: str, weights: str, cls: str) -> dict[int, float]:
    """seed -> Dice points of ``cls`` for the runs that have it."""
    out = {}
    for seed, r in runs.items():
        v = r.dice(split, weights, cls)
        if v is not None:
            out[seed] = 100 * v
    return out


def one_run_each(runs: Sequence[ScoredRun]) -> list[ScoredRun]:
    """The main runs, refused unless they score one checkpoint and hold one run per method, budget and seed."""
    main = main_runs(runs)
    whiches = sorted({r.which for r in main})
    if len(whiches) > 1:
        raise ValueError(f"the runs score different checkpoints ({', '.join(whiches)}): compare like with like")
    seen: dict[tuple[str, int, int], str] = {}
    for r in main:
        key = (r.method, r.labelled, r.seed)
        if key in seen:
            raise ValueError(f"runs {seen[key]} and {r.run_id} are both {r.method} at {r.labelled} labelled patients, "
                             f"seed {r.seed}: the grid has another axis; compare them one setting at a time")
        seen[key] = r.run_id
    return main


def paired_rows(runs: Sequence[ScoredRun], comparisons: Sequence[tuple[str, str, str]] = COMPARISONS,
                splits: Sequence[str] = ("test", "val"), weights: str = "student",
                level: float = LEVEL) -> list[PairedRow]:
    """Every comparison x budget x split x class (``mean`` first) that has runs of both methods, in Dice points."""
    main = one_run_each(runs)
    classes = next((r.classes for r in main if r.classes), ())
    rows = []
    for labelled in sorted({r.labelled for r in main}, reverse=True):
        at = [r for r in main if r.labelled == labelled]
        for a, b, role in comparisons:
            ra = {r.seed: r for r in at if r.method == a}
            rb = {r.seed: r for r in at if r.method == b}
            if ra and rb:
                rows += compare_by_seed(ra, rb, a, b, role, labelled, splits, weights, classes, level)
    return rows


def compare_by_seed(ra: Mapping[int, ScoredRun], rb: Mapping[int, ScoredRun], a: str, b: str, role: str,
                    labelled: int, splits: Sequence[str], weights: str, classes: Sequence[str],
                    level: float) -> list[PairedRow]:
    """A - B per split and class (``mean`` first) over the seeds both have, for those with runs of both."""
    rows = []
    for split in splits:
        for cls in ("mean", *classes):
            va = _points(ra, split, weights, cls)
            vb = _points(rb, split, weights, cls)
            if not va or not vb:
                continue
            seeds = tuple(sorted(set(va) & set(vb)))
            d = [va[s] - vb[s] for s in seeds]
            # the unpaired interval of the same seeds: what pairing buys, not what extra runs buy
            rows.append(PairedRow(
                a, b, role, labelled, split, cls, paired_interval(d, level),
                welch_interval([va[s] for s in seeds], [vb[s] for s in seeds], level),
                sum(x > 0 for x in d), sum(x < 0 for x in d), seeds,
                statistics.fmean(va[x] for x in seeds) if seeds else math.nan,
                statistics.fmean(vb[x] for x in seeds) if seeds else math.nan,
            ))
    return rows


def variant_rows(runs: Sequence[ScoredRun], splits: Sequence[str] = ("val", "test"), weights: str = "student",
                 level: float = LEVEL) -> list[PairedRow]:
    """Each ablation variant against its own method: variant - method at the variant's budget, paired by seed
    with the main comparison's run of that method (``role`` ``"variant"``, ``a`` the variant's name, ``b`` the
    method). A variant changes one method's settings, so its method's runs of the same seeds are its pairs;
    variants are diagnostics, read on val first (never on test for a choice). Budgets in falling order, then
    variants by name; a variant whose method has no run at its budget and seeds is left out (such as one whose
    whole change is another method preset). Raises ValueError naming the runs when two runs of one variant
    share a budget and seed, or when a variant run scores another checkpoint than the runs it is paired with."""
    main = {(r.method, r.labelled, r.seed): r for r in main_runs(runs)}
    groups: dict[tuple[int, str, str], dict[int, ScoredRun]] = {}
    for r in runs:
        if r.variant is None:
            continue
        group = groups.setdefault((r.labelled, str(r.variant), r.method), {})
        if r.seed in group:
            raise ValueError(f"runs {group[r.seed].run_id} and {r.run_id} are both variant {r.variant} at "
                             f"{r.labelled} labelled patients, seed {r.seed}: compare them one setting at a time")
        group[r.seed] = r
    classes = next((r.classes for r in runs if r.classes), ())
    rows = []
    for (labelled, variant, method), rv in sorted(groups.items(), key=lambda kv: (-kv[0][0], kv[0][1])):
        rb = {s: main[(method, labelled, s)] for s in rv if (method, labelled, s) in main}
        if not rb:
            continue
        ref = rb[min(rb)]  # the checkpoint every run of this comparison must score
        other = [f"{x.run_id} ({x.which})" for x in (*rv.values(), *rb.values()) if x.which != ref.which]
        if other:
            raise ValueError(f"variant {variant} at {labelled} labelled patients: {', '.join(other)} score another "
                             f"checkpoint than {ref.run_id} ({ref.which}): compare like with like")
        rows += compare_by_seed(rv, rb, variant, method, "variant", labelled, splits, weights, classes, level)
    return rows


def variant_sentences(rows: Sequence[PairedRow], described: Mapping[str, str] | None = None) -> list[str]:
    """One sentence per variant and budget from :func:`variant_rows`: the mean difference on val with its
    interval and sign count, then test beside it (a variant without a val score: test alone, said so).
    ``described``: variant -> what it changes (shown in parentheses)."""
    out = []
    mean = {(r.a, r.b, r.labelled, r.split): r for r in rows if r.role == "variant" and r.cls == "mean"}
    for a, b, labelled in dict.fromkeys((a, b, lab) for a, b, lab, _ in mean):
        what = f" ({NAMES.get(b, b)} with {described[a]})" if described and a in described else ""
        val, test = mean.get((a, b, labelled, "val")), mean.get((a, b, labelled, "test"))
        said = [_variant_d(val, "val") if val is not None else "no val score"]
        if test is not None:
            said.append(_variant_d(test, "test"))
        out.append(f"{a}{what} against {NAMES.get(b, b)} at {labelled} labelled "
                   f"patient{'s' if labelled != 1 else ''}: {'; '.join(said)}.")
    return out


def describe_variants(variants: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """variant -> what it changes in words for :func:`variant_sentences`: its parameters except ``METHOD``
    (the method it changes), ``SEED`` and ``name``, as ``KEY=value``, its ``OVERRIDES`` as written; a variant
    that changes nothing else is left out.

    >>> describe_variants({"x": {"METHOD": "actionpp", "ATS": "off", "OVERRIDES": ["train.teacher_mode=train"]}})
    {'x': 'ATS=off, train.teacher_mode=train'}
    """
    out = {}
    for name, params in variants.items():
        parts = []
        for key, value in params.items():
            if key in ("METHOD", "SEED", "name"):
                continue
            if key == "OVERRIDES" and isinstance(value, (list, tuple)):
                parts += [str(v) for v in value]
            else:
                parts.append(f"{key}={value}")
        if parts:
            out[str(name)] = ", ".join(parts)
    return out


def _variant_d(r: PairedRow, split: str) -> str:
    n = r.paired.n
    if n == 0:
        return f"no seed scored on {split} for both"
    if n == 1:
        return f"d = {fmt_points(r.paired.mean, True)} Dice points on {split} (1 seed: no interval)"
    return (f"d = {fmt_points(r.paired.mean, True)} Dice points [{fmt_points(r.paired.lo, True)}, "
            f"{fmt_points(r.paired.hi, True)}] on {split} ({n} paired seeds, the variant ahead on {r.ahead} of {n}; "
            f"call: {r.call})")


def fmt_points(x: float, signed: bool = False) -> str:
    """A number of Dice points for a table or sentence: one decimal (signed when asked), "-" for a missing
    value, +-inf for an interval that one pair leaves open."""
    if x is None or not math.isfinite(x):
        return "-" if x is None or math.isnan(x) else ("+inf" if x > 0 else "-inf")
    return f"{x:+.1f}" if signed else f"{x:.1f}"


_fmt = fmt_points  # the short name the tables below use


def planned_pairs(design: Iterable[tuple[str, str | None, int, int]],
                  comparison: tuple[str, str] = ("actionpp", "action")) -> dict[int, int]:
    """Per budget, how many seeds the grid plans for both methods of ``comparison`` (its planned pairs).

    ``design``: one ``(method, variant, labelled, seed)`` per run of the grid, finished or not; ablation
    variants (``variant`` not None) are not part of the comparison.

    >>> planned_pairs([("actionpp", None, 7, 0), ("actionpp", None, 7, 1), ("action", None, 7, 1),
    ...                ("action", None, 7, 2), ("actionpp", "no_ats", 7, 2)])
    {7: 1}
    """
    seeds: dict[tuple[str, int], set[int]] = {}
    for method, variant, labelled, seed in design:
        if variant is None:
            seeds.setdefault((method, int(labelled)), set()).add(int(seed))
    a, b = comparison
    return {lab: len(s & seeds.get((b, lab), set())) for (m, lab), s in sorted(seeds.items(), reverse=True)
            if m == a and (b, lab) in seeds}


def grid_design(runs: Iterable[Any]) -> list[tuple[str, str | None, int, int]]:
    """``(method, variant, labelled, seed)`` of each run of an expanded grid (:func:`actionpp.replicate.expand`),
    from its first notebook's parameters, for :func:`planned_pairs`; runs without a ``METHOD`` (text) or a
    ``LABELLED_PATIENTS`` (whole number) parameter are left out (their budget is not known before they run)."""
    out = []
    for r in runs:
        p = r.parameters[0] if r.parameters else {}
        method, labelled, seed = p.get("METHOD"), p.get("LABELLED_PATIENTS"), p.get("SEED", 0)
        if isinstance(method, str) and isinstance(labelled, int) and isinstance(seed, int):
            out.append((method, r.axes.get("VARIANT"), labelled, seed))
    return out


def verdicts(rows: Sequence[PairedRow], planned: Mapping[int, int] | None = None) -> list[str]:
    """One sentence per budget for the primary comparison on test (the decision rule of docs/results.md).

    ``planned`` (budget -> planned pairs, :func:`planned_pairs`): a sentence written before all of a
    budget's planned pairs are in says it is interim (the rule is the same; a call made while seeds are still
    arriving is provisional, since every new look is another chance of a false call)."""
    out = []
    for r in rows:
        if r.role != "primary" or r.split != "test" or r.cls != "mean":
            continue
        a, b = NAMES.get(r.a, r.a), NAMES.get(r.b, r.b)
        call = {"ahead": f"is ahead of {b}", "behind": f"is behind {b}",
                "not distinguishable": f"is not distinguishable from {b}",
                "too few seeds": f"cannot be compared with {b} yet"}[r.call]
        val = next((v for v in rows if (v.a, v.b, v.labelled, v.split, v.cls) == (r.a, r.b, r.labelled, "val", "mean")),
                   None)
        agree = ""
        if val is not None and val.paired.n >= 2:
            same_sign = (val.paired.mean > 0) == (r.paired.mean > 0)
            agree = (f"; on val d = {_fmt(val.paired.mean, True)} [{_fmt(val.paired.lo, True)}, "
                     f"{_fmt(val.paired.hi, True)}], {'the same sign' if same_sign else 'the opposite sign'}"
                     + (" and the same call" if val.call == r.call else f", call: {val.call}"))
        n_plan = (planned or {}).get(r.labelled, 0)
        interim = (f" Interim: {r.paired.n} of the {n_plan} planned pairs; the call is provisional until all are in."
                   if r.paired.n < n_plan else "")
        out.append(
            f"{a} {call} at {r.labelled} labelled patient{'s' if r.labelled != 1 else ''}: "
            f"d = {_fmt(r.paired.mean, True)} Dice points [{_fmt(r.paired.lo, True)}, {_fmt(r.paired.hi, True)}] "
            f"(test, {r.paired.n} paired seed{'s' if r.paired.n != 1 else ''}, {a} ahead on {r.ahead} of "
            f"{r.paired.n}; mean Dice {a} {_fmt(r.mean_a)}, {b} {_fmt(r.mean_b)}){agree}.{interim}"
        )
    return out


def looks(runs: Sequence[ScoredRun], a: str = "actionpp", b: str = "action", split: str = "test",
          cls: str = "mean", weights: str = "student", level: float = LEVEL) -> dict[int, list[tuple[int, Interval]]]:
    """Per budget, A - B as it stood after each pair arrived: ``[(seed added, interval over the pairs so far)]``.

    A pair arrives when the later of its two runs finished (``ScoredRun.finished``; a run with no recorded
    time counts as the earliest, ties go by seed); the list starts at the second pair, the first with an
    interval. Each entry is the paired interval (:func:`paired_interval`) of the pairs in by then, so the
    last entry is the current verdict's interval. Ablation variants are left out and the runs are refused as
    in :func:`paired_rows`. The times are compared as the runs' ``done`` markers write them: UTC with its offset
    (:func:`actionpp.atomic.utc_now`), or, written by code before ``e68b161``, the finishing machine's clock with
    no offset (UTC on the machine that trained the published grids). Both share the ``YYYY-MM-DDTHH:MM:SS``
    prefix, so they order by time as strings. A run trained again (``--force``) carries its new time, so the
    looks are rebuilt from the runs as they are now, not a record of what was published before.

    >>> def run(m, seed, dice, fin):
    ...     return ScoredRun(f"{m}{seed}", m, None, 7, seed, {"test": {"student": {"dice_mean": dice}}}, finished=fin)
    >>> rs = [run("a", 0, .52, "t1"), run("b", 0, .50, "t4"), run("a", 1, .51, "t3"), run("b", 1, .50, "t0"),
    ...       run("a", 2, .53, "t2"), run("b", 2, .50, "t1")]
    >>> [(seed, round(iv.mean, 2), iv.n) for seed, iv in looks(rs, "a", "b")[7]]   # pairs in at t2, t3, t4
    [(1, 2.0, 2), (0, 2.0, 3)]
    """
    main = one_run_each(runs)
    out: dict[int, list[tuple[int, Interval]]] = {}
    for labelled in sorted({r.labelled for r in main}, reverse=True):
        ra = {r.seed: r for r in main if r.labelled == labelled and r.method == a}
        rb = {r.seed: r for r in main if r.labelled == labelled and r.method == b}
        va, vb = _points(ra, split, weights, cls), _points(rb, split, weights, cls)
        order = sorted(set(va) & set(vb), key=lambda s: (max(ra[s].finished, rb[s].finished), s))
        steps = [(seed, paired_interval([va[x] - vb[x] for x in order[:k + 1]], level))
                 for k, seed in enumerate(order) if k >= 1]
        if steps:
            out[labelled] = steps
    return out
