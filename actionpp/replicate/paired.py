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

Noise estimates (:func:`noise_rows`): per method and budget, the spread over seeds of the student's
and the EMA teacher's last-checkpoint test Dice, and of the last validation against the mean of
the last three validations (the mid-run dips), each as a sample standard deviation;
:func:`noise_summary` answers the rule's question in sentences (is the teacher or a three-point mean
less noisy, by how much, and what the primary interval would be with the teacher's scores).

:func:`write_paired` writes ``paired.csv``, ``paired.md`` (tables and the verdict sentences) and
``paired.png`` (one point and interval per budget and class). Taught in
notebooks/06_replication_report.ipynb.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actionpp.atomic import atomic_write_bytes, atomic_write_text

__all__ = [
    "ScoredRun",
    "Interval",
    "PairedRow",
    "COMPARISONS",
    "paired_interval",
    "welch_interval",
    "collect_scored",
    "paired_rows",
    "noise_rows",
    "noise_summary",
    "planned_pairs",
    "grid_design",
    "pooled_sd",
    "equal_spread_test",
    "verdicts",
    "write_paired",
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
            which=str(sc.get("which", "last")),
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

    @property
    def call(self) -> str:
        if self.paired.n < 2:
            return "too few seeds"
        if not self.paired.excludes_zero:
            return "not distinguishable"
        return "ahead" if self.paired.mean > 0 else "behind"


def _main_runs(runs: Iterable[ScoredRun]) -> list[ScoredRun]:
    return [r for r in runs if r.variant is None]


def _points(runs: Mapping[int, ScoredRun], split: str, weights: str, cls: str) -> dict[int, float]:
    """seed -> Dice points of ``cls`` for the runs that have it."""
    out = {}
    for seed, r in runs.items():
        v = r.dice(split, weights, cls)
        if v is not None:
            out[seed] = 100 * v
    return out


def paired_rows(runs: Sequence[ScoredRun], comparisons: Sequence[tuple[str, str, str]] = COMPARISONS,
                splits: Sequence[str] = ("test", "val"), weights: str = "student",
                level: float = LEVEL) -> list[PairedRow]:
    """Every comparison x budget x split x class (``mean`` first) that has runs of both methods, in Dice points."""
    main = _main_runs(runs)
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
    classes = next((r.classes for r in main if r.classes), ())
    rows = []
    for labelled in sorted({r.labelled for r in main}, reverse=True):
        at = [r for r in main if r.labelled == labelled]
        for a, b, role in comparisons:
            ra = {r.seed: r for r in at if r.method == a}
            rb = {r.seed: r for r in at if r.method == b}
            if not ra or not rb:
                continue
            for split in splits:
                for cls in ("mean", *classes):
                    va = _points(ra, split, weights, cls)
                    vb = _points(rb, split, weights, cls)
                    seeds = tuple(sorted(set(va) & set(vb)))
                    if not va or not vb:
                        continue
                    d = [va[s] - vb[s] for s in seeds]
                    # the unpaired interval of the same seeds: what pairing buys, not what extra runs buy
                    rows.append(PairedRow(
                        a, b, role, labelled, split, cls, paired_interval(d, level),
                        welch_interval([va[s] for s in seeds], [vb[s] for s in seeds], level),
                        sum(x > 0 for x in d), sum(x < 0 for x in d), seeds,
                    ))
    return rows


def noise_rows(runs: Sequence[ScoredRun]) -> list[dict[str, Any]]:
    """Per method and budget: the spread over seeds of the estimates a replication could report (Dice points).

    ``sd_test_student`` / ``sd_test_teacher``: sample std of the last checkpoint's test Dice, student and
    EMA teacher; ``sd_val_last`` / ``sd_val_mean3``: of the last validation and of the mean of the last
    three validations (val split); ``dip``: mean |last - mean of the last three| over seeds.
    """
    main = _main_runs(runs)
    out = []
    for labelled in sorted({r.labelled for r in main}, reverse=True):
        for method in [m for m in NAMES if any(r.method == m and r.labelled == labelled for r in main)]:
            rs = [r for r in main if r.method == method and r.labelled == labelled]

            def sd(vals: list[float | None]) -> float:
                v = [100 * x for x in vals if x is not None]
                return statistics.stdev(v) if len(v) >= 2 else math.nan

            def mean(vals: list[float | None]) -> float:
                v = [100 * x for x in vals if x is not None]
                return statistics.fmean(v) if v else math.nan

            last = [r.val_curve[-1] if r.val_curve else None for r in rs]
            mean3 = [statistics.fmean(r.val_curve[-3:]) if len(r.val_curve) >= 3 else None for r in rs]
            dips = [abs(a - b) for a, b in zip(last, mean3) if a is not None and b is not None]
            out.append({
                "labelled": labelled, "method": method, "n": len(rs),
                "test_student": mean([r.dice("test") for r in rs]),
                "test_teacher": mean([r.dice("test", "teacher") for r in rs]),
                "sd_test_student": sd([r.dice("test") for r in rs]),
                "sd_test_teacher": sd([r.dice("test", "teacher") for r in rs]),
                "sd_val_last": sd(last), "sd_val_mean3": sd(mean3),
                "dip": 100 * statistics.fmean(dips) if dips else math.nan,
            })
    return out


def pooled_sd(groups: Iterable[Sequence[float]]) -> tuple[float, int]:
    """Pooled within-group sample standard deviation and its degrees of freedom.

    sqrt(sum_i (n_i - 1) s_i^2 / sum_i (n_i - 1)) over the groups with at least two values: the spread over
    seeds with each group's own mean removed (a method at a budget is one group), so differences between
    methods and budgets do not count as noise. NaN and 0 degrees of freedom when no group has two values.

    >>> sd, df = pooled_sd([[70.0, 72.0], [60.0, 66.0, 63.0]])   # s^2 = 2 (df 1) and 9 (df 2): (2 + 18) / 3
    >>> round(sd ** 2, 6), df
    (6.666667, 3)
    """
    ss, df = 0.0, 0
    for g in groups:
        v = [float(x) for x in g]
        if len(v) >= 2:
            ss += statistics.variance(v) * (len(v) - 1)
            df += len(v) - 1
    return (math.sqrt(ss / df), df) if df else (math.nan, 0)


def _paired_groups(runs: Sequence[ScoredRun], first: Any, second: Any) -> tuple[list[list[float]], list[list[float]],
                                                                               list[float], int]:
    """Per (method, budget) with two or more runs that have both estimates: the two estimates of each such run;
    also every such run's second - first, and how many runs that is."""
    xs, ys, diffs, n = [], [], [], 0
    main = _main_runs(runs)
    for key in sorted({(r.method, r.labelled) for r in main}):
        both = [(first(r), second(r)) for r in main if (r.method, r.labelled) == key]
        both = [(x, y) for x, y in both if x is not None and y is not None]
        if len(both) < 2:
            continue  # one run has no spread over seeds: it says nothing about noise
        xs.append([x for x, _ in both])
        ys.append([y for _, y in both])
        diffs += [y - x for x, y in both]
        n += len(both)
    return xs, ys, diffs, n


def equal_spread_test(xs: Sequence[Sequence[float]], ys: Sequence[Sequence[float]]) -> tuple[float, float, int]:
    """Pitman-Morgan test that two estimates measured on the same runs spread equally over seeds.

    ``xs[g][i]`` and ``ys[g][i]`` are the two estimates of run i in group g (a method at a budget). Within each
    group both are centred on their group mean; with u = x + y and v = x - y, var x = var y exactly when u
    and v are uncorrelated, and the correlation r of u and v on N runs in G groups has the t statistic
    r sqrt(df / (1 - r^2)), df = N - G - 1 (a partial correlation given the groups). r > 0: x spreads more.
    Returns ``(r, two-sided p, df)``; r and p are NaN when df < 1 or u or v does not vary.

    >>> r, p, df = equal_spread_test([[70, 74], [60, 66, 63]], [[72, 73], [60, 63, 63]])
    >>> round(r, 4), round(p, 4), df   # at 2 degrees of freedom p = 1 - |r|
    (0.8152, 0.1848, 2)
    """
    us, vs = [], []
    for gx, gy in zip(xs, ys):
        if len(gx) != len(gy):
            raise ValueError("each group needs both estimates of every run")
        if not gx:
            continue
        mx, my = statistics.fmean(gx), statistics.fmean(gy)
        for x, y in zip(gx, gy):
            us.append((x - mx) + (y - my))
            vs.append((x - mx) - (y - my))
    df = len(us) - sum(1 for g in xs if g) - 1
    suv, suu, svv = sum(u * v for u, v in zip(us, vs)), sum(u * u for u in us), sum(v * v for v in vs)
    if df < 1 or suu <= 0 or svv <= 0:
        return math.nan, math.nan, max(df, 0)
    r = max(-1.0, min(1.0, suv / math.sqrt(suu * svv)))
    if abs(r) == 1.0:
        return r, 0.0, df
    from scipy import stats

    t = r * math.sqrt(df / (1 - r * r))
    return r, float(2 * stats.t.sf(abs(t), df)), df


def _plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else (many or word + 's')}"


def _spread_test(xs: Sequence[Sequence[float]], ys: Sequence[Sequence[float]], level: float) -> str:
    r, p, df = equal_spread_test(xs, ys)
    if not math.isfinite(p):
        return " (too few runs, or no spread, for a test of equal spread)"
    verdict = ("a difference this large is unlikely if they spread equally" if p < 1 - level
               else "a difference this large is well within what equal spreads give on these runs")
    return (f"; a test of equal spread on the same runs (Pitman-Morgan, within each method and budget, "
            f"{_plural(df, 'degree')} of freedom) gives p = {p:.2f}: {verdict}")


def _less_noisy(name: str, sd_new: float, sd_old: float, old: str) -> str:
    if not (math.isfinite(sd_new) and math.isfinite(sd_old)):
        return f"{name} cannot be compared with {old}"
    if sd_old == 0:
        return f"{name} is as noisy as {old}" if sd_new == 0 else f"{name} is noisier than {old} (sd 0)"
    change = 100 * (1 - sd_new / sd_old)
    if abs(change) < 0.5:  # shown as a whole per cent
        return f"{name} is as noisy as {old}"
    return f"{name} is {abs(change):.0f} % {'less' if change > 0 else 'more'} noisy than {old}"


def noise_summary(runs: Sequence[ScoredRun], level: float = LEVEL) -> list[str]:
    """Sentences on the decision rule's noise question: is the EMA teacher, or the mean of the last three
    validations, a less noisy estimate than the last student checkpoint, and by how much?

    The EMA teacher is set against the student on test; the mean of the last three validations against the
    last validation on val (the student checkpoint's own validation). Spread is the pooled within-group
    sample standard deviation over seeds (:func:`pooled_sd`; a group is a method at a budget, with only the
    runs that have both estimates, and pooling assumes one spread for all groups), so the two estimates are
    compared on the same runs, with :func:`equal_spread_test` for whether their spreads differ beyond
    chance. The third sentence recomputes the primary comparison with the teacher's test Dice,
    per budget with at least two pairs: the interval a replication would report if the teacher were its
    number (reported only; the rule's primary number stays the student's).
    """
    out = []
    stud, teach, diffs, n = _paired_groups(runs, lambda r: _pts(r.dice("test")),
                                           lambda r: _pts(r.dice("test", "teacher")))
    (s_sd, df), (t_sd, _) = pooled_sd(stud), pooled_sd(teach)
    if df:
        which = _less_noisy("the teacher", t_sd, s_sd, "the student")
        out.append(
            f"EMA teacher against student (test, last checkpoint; {n} runs scored both ways in "
            f"{_plural(len(stud), 'method x budget group')} of two or more, pooled sd over seeds with "
            f"{_plural(df, 'degree')} of freedom): sd {t_sd:.2f} Dice points for the teacher, {s_sd:.2f} for the "
            f"student: {which}{_spread_test(teach, stud, level)}. On average the teacher scores "
            f"{statistics.fmean(diffs):+.2f} points against the student (range {min(diffs):+.2f} to "
            f"{max(diffs):+.2f})."
        )
    else:
        out.append("EMA teacher against student: no method and budget has two runs scored both ways yet.")
    last, mean3, diffs, n = _paired_groups(
        runs, lambda r: 100 * r.val_curve[-1] if len(r.val_curve) >= 3 else None,
        lambda r: 100 * statistics.fmean(r.val_curve[-3:]) if len(r.val_curve) >= 3 else None)
    (l_sd, df), (m_sd, _) = pooled_sd(last), pooled_sd(mean3)
    if df:
        which = _less_noisy("the three-point mean", m_sd, l_sd, "the last validation")
        dip = statistics.fmean(abs(d) for d in diffs)
        out.append(
            f"Mean of the last three validations against the last one (val; {n} runs in "
            f"{_plural(len(last), 'group')}, {_plural(df, 'degree')} of freedom): sd {m_sd:.2f} against "
            f"{l_sd:.2f} Dice points: {which}{_spread_test(mean3, last, level)}. The last validation sits "
            f"{dip:.2f} points from the three-point mean on average (the mid-run dip)."
        )
    else:
        out.append("Mean of the last three validations against the last one: no method and budget has two runs "
                   "with three validations yet.")
    primary = [c for c in COMPARISONS if c[2] == "primary"]
    student = {r.labelled: r for r in paired_rows(runs, primary, ("test",), "student", level) if r.cls == "mean"}
    for r in paired_rows(runs, primary, ("test",), "teacher", level):
        s = student.get(r.labelled)
        if r.cls != "mean" or r.paired.n < 2 or s is None or s.paired.n < 2:
            continue
        a, b = NAMES.get(r.a, r.a), NAMES.get(r.b, r.b)
        out.append(
            f"{a} - {b} at {r.labelled} labelled patient{'s' if r.labelled != 1 else ''} scored with the EMA "
            f"teachers instead: d = {_fmt(r.paired.mean, True)} [{_fmt(r.paired.lo, True)}, {_fmt(r.paired.hi, True)}]"
            f" ({r.paired.n} pairs, width {r.paired.width:.1f} against the student's {s.paired.width:.1f} on "
            f"{s.paired.n} pairs; call: {r.call}; reported only, the rule's number is the student's)."
        )
    return out


def _pts(v: float | None) -> float | None:
    return None if v is None else 100 * v


def _fmt(x: float, signed: bool = False) -> str:
    if x is None or not math.isfinite(x):
        return "-" if x is None or math.isnan(x) else ("+inf" if x > 0 else "-inf")
    return f"{x:+.1f}" if signed else f"{x:.1f}"


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
            f"{r.paired.n}){agree}.{interim}"
        )
    return out


# --------------------------------------------------------------------------------------------- writing

_CSV_FIELDS = ["comparison", "role", "labelled", "split", "class", "n_pairs", "seeds", "d_mean", "d_sd", "ci_lo",
               "ci_hi", "ahead", "behind", "call", "unpaired_diff", "unpaired_lo", "unpaired_hi", "unpaired_df"]


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
        })
    return buf.getvalue()


def _n_volumes(runs: Sequence[ScoredRun], split: str) -> str:
    ns = sorted({int(r.scores.get(split, {}).get("student", {}).get("n_volumes", 0)) for r in runs} - {0})
    return " or ".join(map(str, ns)) or "?"


def paired_markdown(rows: Sequence[PairedRow], noise: Sequence[Mapping[str, Any]], runs: Sequence[ScoredRun],
                    summary: Sequence[str] = (), planned: Mapping[int, int] | None = None) -> str:
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
    return "\n".join(lines) + "\n"


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
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_paired(source: str | Path, dest: str | Path | None = None,
                 only: Iterable[str] | None = None, planned: Mapping[int, int] | None = None) -> dict[str, Any]:
    """Read the scored runs under ``source``, write ``paired.csv``, ``paired.md`` and ``paired.png`` into ``dest``.

    ``dest`` defaults to ``source``; ``only``: the run ids to analyse (:func:`collect_scored`); ``planned``:
    the grid's planned pairs per budget (:func:`planned_pairs`), for the verdicts' interim note. Returns
    ``{"runs", "rows", "verdicts", "noise_summary", "markdown", "files"}``; with no
    scored run nothing is written.
    """
    source = Path(source)
    dest = Path(dest) if dest is not None else source
    runs = collect_scored(source, only=only)
    rows = paired_rows(runs)
    noise = noise_rows(runs)
    summary = noise_summary(runs) if runs else []
    md = paired_markdown(rows, noise, runs, summary, planned)
    files: list[str] = []
    if runs:
        dest.mkdir(parents=True, exist_ok=True)
        atomic_write_text(dest / "paired.csv", paired_csv(rows))
        atomic_write_text(dest / "paired.md", md)
        files += ["paired.csv", "paired.md"]
        png = paired_figure(rows)
        if png is not None:
            atomic_write_bytes(dest / "paired.png", png)
            files.append("paired.png")
        else:
            (dest / "paired.png").unlink(missing_ok=True)  # an earlier figure of this function no longer holds
    return {"runs": len(runs), "rows": rows, "verdicts": verdicts(rows, planned), "noise_summary": summary,
            "markdown": md, "files": files}
