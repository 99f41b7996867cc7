"""The noise of the estimates a replication could report: the decision rule's noise question (issue 18).

The rule in docs/results.md keeps the last checkpoint's student as the primary number and asks whether
another estimate is less noisy, and by how much: the EMA teacher's test Dice at the same checkpoint, or
the mean of the last three validations instead of the last one (the mid-run dips). Both alternatives
are measured on the same runs as the number they would replace, so they are compared on those runs:

- :func:`noise_rows`: per method and budget, the spread over seeds (sample standard deviation) of each
  estimate, in Dice points (the table under the paired comparisons);
- :func:`pooled_sd`: one standard deviation from several groups (methods at budgets), each group's own
  mean removed, so differences between methods and budgets do not count as noise;
- :func:`equal_spread_test`: the Pitman-Morgan test that two estimates of the same runs spread equally;
- :func:`noise_summary`: the answer in sentences, with the primary interval recomputed on the teachers'
  scores (reported only).

Built on :mod:`actionpp.replicate.paired` (its runs, rows and names); :func:`actionpp.replicate.analysis.write_paired`
writes this module's table and sentences into ``paired.md``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from actionpp.replicate.paired import COMPARISONS, LEVEL, NAMES, ScoredRun, fmt_points, main_runs, paired_rows

__all__ = ["noise_rows", "pooled_sd", "equal_spread_test", "compare_spreads", "noise_summary"]


def noise_rows(runs: Sequence[ScoredRun]) -> list[dict[str, Any]]:
    """Per method and budget: the spread over seeds of the estimates a replication could report (Dice points).

    ``sd_test_student`` / ``sd_test_teacher``: sample std of the last checkpoint's test Dice, student and
    EMA teacher; ``sd_val_last`` / ``sd_val_mean3``: of the last validation and of the mean of the last
    three validations (val split); ``dip``: mean |last - mean of the last three| over seeds.
    """
    main = main_runs(runs)
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
    main = main_runs(runs)
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


def compare_spreads(name: str, sd_new: float, sd_old: float, old: str) -> str:
    """``name`` against ``old`` in words from their standard deviations: "A is 12 % less noisy than B" (the change
    relative to ``old``, a whole per cent; below 0.5 % "as noisy"), or why no comparison can be made."""
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
        which = compare_spreads("the teacher", t_sd, s_sd, "the student")
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
        which = compare_spreads("the three-point mean", m_sd, l_sd, "the last validation")
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
            f"teachers instead: d = {fmt_points(r.paired.mean, True)} [{fmt_points(r.paired.lo, True)}, "
            f"{fmt_points(r.paired.hi, True)}]"
            f" ({r.paired.n} pairs, width {r.paired.width:.1f} against the student's {s.paired.width:.1f} on "
            f"{s.paired.n} pairs; call: {r.call}; reported only, the rule's number is the student's)."
        )
    return out


def _pts(v: float | None) -> float | None:
    return None if v is None else 100 * v
