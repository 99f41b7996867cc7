"""The lab's exercises and the checks that grade them (``actionpp.lab.check``).

An :class:`Exercise` names its notebook, what it asks for, the library function it is compared
with, a hint, a generator of random :class:`Case` objects (the expected answers come from the
library) and a comparison. :func:`run_check` grades an answer without printing and never raises;
:func:`check` prints its one line. See :mod:`actionpp.lab` for the conventions in the notebooks.

Why one module of this length: eleven exercises, each a case generator of a few lines next to its
registration; split up, a reader would have to join the registry again to see what is checked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "Case",
    "Exercise",
    "Outcome",
    "EXERCISES",
    "check",
    "run_check",
    "exercises_of",
    "summary_table",
    "close",
]

CASES = 6  # random cases per check

PASSED, NOT_DONE, WRONG = "passed", "not done yet", "not yet right"


# ---------------------------------------------------------------------------------------------
# Outcomes and the registry
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """The result of one check: ``status`` is ``"passed"``, ``"not done yet"`` or ``"not yet right"``.

    ``line`` is the one line :func:`check` prints (the hint is part of it unless passed).
    """

    name: str
    status: str
    message: str
    hint: str = ""

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    @property
    def line(self) -> str:
        text = f"[{self.status}] {self.name}: {self.message}"
        if self.status != PASSED and self.hint:
            text += f" Hint: {self.hint}"
        return " ".join(text.split())  # one line, whatever the messages hold


@dataclass(frozen=True)
class Case:
    """One random case: ``args`` for the student's function, the library's ``expected`` answer,
    and ``desc``, how the line names the case (``"K=5"``)."""

    desc: str
    args: tuple[Any, ...]
    expected: Any


@dataclass(frozen=True)
class Exercise:
    """One exercise: where it is, what it asks, how its cases are drawn and compared.

    ``cases(rng)`` returns the :class:`Case` list (the expected answers come from the library);
    ``compare(got, expected)`` returns None when they agree, else what differs (one phrase).
    """

    name: str
    notebook: str
    title: str
    library: str
    hint: str
    cases: Callable[[np.random.Generator], list[Case]]
    compare: Callable[[Any, Any], str | None]


EXERCISES: dict[str, Exercise] = {}


def _register(ex: Exercise) -> None:
    if ex.name in EXERCISES:
        raise ValueError(f"exercise {ex.name!r} registered twice")
    EXERCISES[ex.name] = ex


def exercises_of(notebook_stem: str) -> list[Exercise]:
    """The exercises of one notebook (``"01_class_centers"``), in registry order."""
    return [e for e in EXERCISES.values() if e.notebook == notebook_stem]


# ---------------------------------------------------------------------------------------------
# Comparisons
# ---------------------------------------------------------------------------------------------


def _fmt(x: Any) -> str:
    a = np.asarray(x)
    if a.ndim == 0:
        v = a.item()
        return f"{v:.10g}" if isinstance(v, float) else repr(v)
    with np.printoptions(precision=6, suppress=False, threshold=8, edgeitems=3):
        return np.array2string(a, separator=", ")


def _as_array(x: Any) -> np.ndarray | None:
    """``x`` (a number, list, numpy array or torch tensor) as float64, or None when it is not numeric."""
    try:
        import torch

        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().double().numpy()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    if isinstance(x, (str, bytes, dict, set)) or x is None:
        return None
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return a


def close(rtol: float = 1e-6, atol: float = 1e-9) -> Callable[[Any, Any], str | None]:
    """A comparison of numbers or arrays (same shape, within ``rtol`` / ``atol``; NaN equals NaN)."""

    def compare(got: Any, expected: Any) -> str | None:
        g = _as_array(got)
        e = np.asarray(expected, dtype=np.float64)
        if g is None:
            shown = repr(got)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            return f"you return {type(got).__name__} {shown}, the library a number{'' if e.ndim == 0 else 's'}"
        if g.shape != e.shape and not (g.size == 1 and e.size == 1):
            return f"you return shape {g.shape}, the library {e.shape}"
        g = g.reshape(e.shape)
        if not np.allclose(g, e, rtol=rtol, atol=atol, equal_nan=True):
            return f"you return {_fmt(g)}, the library gives {_fmt(e)}"
        return None

    return compare


# ---------------------------------------------------------------------------------------------
# check / run_check
# ---------------------------------------------------------------------------------------------


def _is_stub(answer: Any) -> bool:
    return answer is None or answer is Ellipsis


def run_check(name: str, answer: Any, seed: int = 0) -> Outcome:
    """Grade ``answer`` for exercise ``name`` without printing; never raises (see :func:`check`)."""
    ex = EXERCISES.get(name)
    if ex is None:
        known = ", ".join(sorted(EXERCISES))
        return Outcome(name, WRONG, f"there is no exercise of this name (known: {known}).")
    if _is_stub(answer):
        return Outcome(name, NOT_DONE, "write your answer in the cell above, then run it and this cell again.",
                       ex.hint)
    if not callable(answer):
        return Outcome(name, WRONG, f"expected a function, got {type(answer).__name__}.", ex.hint)
    try:
        cases = ex.cases(np.random.default_rng(seed))
    except Exception as exc:  # noqa: BLE001 - the grader itself must not break a student's run
        return Outcome(name, WRONG, f"the check could not build its cases ({type(exc).__name__}: {exc}); "
                       "please report this.")
    for case in cases:
        try:
            got = answer(*case.args)
        except NotImplementedError:
            return Outcome(name, NOT_DONE, "replace `raise NotImplementedError(...)` in the cell above with your "
                           "code, run it, then run this cell again.", ex.hint)
        except Exception as exc:  # noqa: BLE001 - reported in one line, never as a traceback
            msg = str(exc).splitlines()[0] if str(exc) else ""
            return Outcome(name, WRONG, f"your function raised {type(exc).__name__}"
                           f"{': ' + msg[:120] if msg else ''} for {case.desc}.", ex.hint)
        try:
            why = ex.compare(got, case.expected)
        except Exception as exc:  # noqa: BLE001
            why = f"your answer could not be compared ({type(exc).__name__}: {exc})"
        if why:
            return Outcome(name, WRONG, f"for {case.desc}, {why}.", ex.hint)
    return Outcome(name, PASSED, f"agrees with {ex.library} on {len(cases)} random cases.")


def check(name: str, answer: Any, seed: int = 0) -> None:
    """Grade ``answer`` (the student's function) for exercise ``name`` and print one line.

    ``passed`` when it agrees with the library on every random case; ``not done yet`` while it
    is the stub (it raises ``NotImplementedError``, or is ``None`` / ``...``); otherwise
    ``not yet right`` with the first case that differs (or the exception it raised) and a hint.
    Never raises and returns nothing, so a notebook with open exercises runs to the end.
    """
    print(run_check(name, answer, seed).line)


# ---------------------------------------------------------------------------------------------
# The exercises (cases come from the library; the notebooks hold the solutions)
# ---------------------------------------------------------------------------------------------


def _unit_rows(rng: np.random.Generator, k: int, d: int) -> Any:
    import torch

    x = torch.from_numpy(rng.standard_normal((k, d)))
    return torch.nn.functional.normalize(x, dim=1)  # float64


def _cases_simplex_cosine(rng: np.random.Generator) -> list[Case]:
    from actionpp.centers import pairwise_cosines, simplex_centers

    out = []
    for k in [2, 4, *rng.choice(np.arange(3, 17), CASES - 2, replace=False).tolist()]:
        d = int(k + rng.integers(0, 6))
        cos = pairwise_cosines(simplex_centers(int(k), d, seed=int(rng.integers(1000))).double())
        off = cos[~np.eye(k, dtype=bool)]
        out.append(Case(f"K={k} (d={d})", (int(k),), float(off.mean())))
    return out


_register(Exercise(
    "01.simplex_cosine", "01_class_centers",
    "the pairwise cosine of a regular simplex of K centres",
    "actionpp.centers.simplex_centers",
    "the K unit vectors of a simplex add up to zero, so 0 = |sum_i psi_i|^2 = K + K (K - 1) c; solve for c.",
    _cases_simplex_cosine, close(atol=1e-9),
))


def _cases_uniformity_energy(rng: np.random.Generator) -> list[Case]:
    from actionpp.centers import uniformity_energy

    out = []
    for _ in range(CASES):
        k, d = int(rng.integers(2, 9)), int(rng.integers(2, 9))
        t = float(rng.choice([0.1, 0.3, 0.5, 1.0, 2.0]))
        v = _unit_rows(rng, k, d)
        out.append(Case(f"K={k}, d={d}, t={t}", (v.clone(), t), float(uniformity_energy(v, t))))
    return out


_register(Exercise(
    "01.uniformity_energy", "01_class_centers",
    "the uniformity energy (1/K) sum_i log sum_j exp(psi_i . psi_j / t) of K unit rows",
    "actionpp.centers.uniformity_energy",
    "the Gram matrix G = V V^T holds every psi_i . psi_j (diagonal included); take torch.logsumexp(G / t, dim=1), "
    "then the mean over i.",
    _cases_uniformity_energy, close(rtol=1e-7),
))


def _cases_tau_quarter(rng: np.random.Generator) -> list[Case]:
    from actionpp.temperature import make_schedule

    out = []
    for _ in range(CASES):
        lo = float(np.round(rng.uniform(0.02, 0.5), 3))
        hi = float(np.round(lo + rng.uniform(0.05, 1.5), 3))
        period = int(4 * rng.integers(10, 10_000))
        s = make_schedule("cosine", tau_min=lo, tau_max=hi, period=period)
        out.append(Case(f"tau_min={lo}, tau_max={hi} (T={period})", (lo, hi), s(period // 4)))
    return out


_register(Exercise(
    "02.tau_at_quarter", "02_temperature_schedule",
    "the ATS temperature at t = T/4",
    "actionpp.temperature.make_schedule('cosine')",
    "at t = T/4 the angle 2 pi t / T is pi/2, and cos(pi/2) = 0.",
    _cases_tau_quarter, close(atol=1e-12),
))


def _cases_per_epoch(rng: np.random.Generator) -> list[Case]:
    from actionpp.temperature import make_schedule

    out = []
    for _ in range(CASES):
        lo = float(np.round(rng.uniform(0.02, 0.3), 3))
        hi = float(np.round(lo + rng.uniform(0.1, 1.0), 3))
        per_epoch = int(rng.integers(3, 300))
        period = float(rng.choice([2.0, 5.0, 10.0, 7.5]))
        it = int(rng.integers(0, 40 * per_epoch))
        s = make_schedule("cosine_epoch", tau_min=lo, tau_max=hi, period=period, iters_per_epoch=per_epoch)
        out.append(Case(f"iteration={it}, tau_min={lo}, tau_max={hi}, period={period:g} epochs, "
                        f"{per_epoch} iterations per epoch", (it, lo, hi, period, per_epoch), s(it)))
    return out


_register(Exercise(
    "02.per_epoch_tau", "02_temperature_schedule",
    "the official per-epoch schedule at an iteration",
    "actionpp.temperature.make_schedule('cosine_epoch')",
    "first the epoch, iteration // iters_per_epoch (a whole number: tau is constant within an epoch), then the "
    "ATS cosine with t = that epoch and T = the period in epochs.",
    _cases_per_epoch, close(atol=1e-12),
))


def _anchor_case(rng: np.random.Generator, k: int, d: int, q: int) -> tuple[Any, ...]:
    import torch

    v = _unit_rows(rng, 1, d)[0]
    label = int(rng.integers(k))
    view = _unit_rows(rng, 1, d)[0]
    queue = _unit_rows(rng, q, d)
    qlab = torch.from_numpy(rng.integers(0, k, q)).long()
    centres = _unit_rows(rng, k, d)
    return v, label, view, queue, qlab, centres


def _cases_anchor_loss(rng: np.random.Generator) -> list[Case]:
    import torch

    from actionpp.losses import saacl_loss

    out = []
    for i in range(CASES):
        k, d, q = int(rng.integers(2, 5)), int(rng.integers(3, 9)), int(rng.integers(0, 12))
        tau = float(rng.choice([0.1, 0.2, 0.5, 1.0]))
        lam = float(rng.choice([0.1, 0.2, 1.0]))
        form = "averaged" if i % 2 == 0 else "separate"
        v, label, view, queue, qlab, centres = _anchor_case(rng, k, d, q)
        lib = saacl_loss(v[None], torch.tensor([label]), view[None], queue, qlab, centres, tau, lam,
                         centre_term=form)
        out.append(Case(f"form={form}, K={k}, {q} queue entries, tau={tau}, lambda_a={lam}",
                        (v, label, view, queue, qlab, centres, tau, lam, form), float(lib)))
    return out


_register(Exercise(
    "03.anchor_loss", "03_contrastive_losses",
    "the SAACL loss of one anchor, both forms",
    "actionpp.losses.saacl_loss",
    "candidates = [own view, queue rows, centres]; log_p = torch.log_softmax(candidates @ v / tau, 0); positives = "
    "the own view (index 0) and the queue rows with the anchor's label; the centre is candidate 1 + Q + label. "
    "averaged: -(sum of log_p[positives] + lambda_a log_p[centre]) / (|P| + 1); separate: -mean(log_p[positives]) "
    "- lambda_a log_p[centre].",
    _cases_anchor_loss, close(rtol=1e-6),
))


def _cases_centre_weight(rng: np.random.Generator) -> list[Case]:
    import torch

    from actionpp.losses import saacl_loss

    out = []
    for i in range(CASES):
        k, d = 3, 6
        n_same = int(rng.choice([0, 1, 3, 10, 60, 500]))
        n_other = int(rng.integers(0, 20))
        lam = float(rng.choice([0.1, 0.2, 0.5]))
        form = "averaged" if i % 2 == 0 else "separate"
        v, label, view, _, _, centres = _anchor_case(rng, k, d, 0)
        others = [c for c in range(k) if c != label]
        qlab = torch.tensor([label] * n_same + [others[j % len(others)] for j in range(n_other)]).long()
        queue = _unit_rows(rng, len(qlab), d)
        # the loss is affine in lambda_a: L(lam) - L(0) = -weight * log p(centre); read the weight off it
        cands = torch.cat([view[None], queue, centres])
        log_p_centre = torch.log_softmax(cands @ v / 0.5, 0)[1 + len(qlab) + label]
        args = (v[None], torch.tensor([label]), view[None], queue, qlab, centres, 0.5)
        diff = saacl_loss(*args, lam, centre_term=form) - saacl_loss(*args, 0.0, centre_term=form)
        out.append(Case(f"form={form}, {n_same} same-class queue entries, lambda_a={lam}",
                        (n_same, lam, form), float(diff / -log_p_centre)))
    return out


_register(Exercise(
    "03.centre_weight", "03_contrastive_losses",
    "the weight of the centre term log p(nu) in one anchor's loss",
    "actionpp.losses.saacl_loss (the loss is affine in lambda_a)",
    "|P| = 1 (the own view) + the same-class queue entries; averaged divides lambda_a by |P| + 1, separate keeps "
    "lambda_a.",
    _cases_centre_weight, close(rtol=1e-6),
))


def _cases_poly_lr(rng: np.random.Generator) -> list[Case]:
    from actionpp.train import poly_lr

    out = []
    for i in range(CASES):
        max_it = int(rng.integers(10, 30_000))
        it = max_it + int(rng.integers(0, 5)) if i == CASES - 1 else int(rng.integers(0, max_it))
        base = float(rng.choice([0.01, 0.1, 0.003]))
        power = float(rng.choice([0.9, 0.9, 1.0, 2.0]))
        out.append(Case(f"base_lr={base}, it={it}, max_it={max_it}, power={power}", (base, it, max_it, power),
                        poly_lr(base, it, max_it, power)))
    return out


_register(Exercise(
    "04.poly_lr", "04_train",
    "the poly learning rate at an iteration",
    "actionpp.train.poly_lr",
    "base_lr * (1 - it / max_it) ** power while it < max_it, and 0 from max_it on (the phase is over).",
    _cases_poly_lr, close(rtol=1e-9, atol=1e-15),
))


def _cases_dice(rng: np.random.Generator) -> list[Case]:
    from actionpp.metrics import dice_jaccard

    out = []
    for i in range(CASES):
        shape = tuple(int(s) for s in rng.integers(3, 12, size=int(rng.integers(2, 4))))
        if i == CASES - 1:
            pred = gt = np.zeros(shape, dtype=bool)
        else:
            pred, gt = rng.random(shape) < rng.uniform(0.1, 0.6), rng.random(shape) < rng.uniform(0.1, 0.6)
        out.append(Case(f"masks of shape {shape} ({int(pred.sum())} and {int(gt.sum())} pixels set)",
                        (pred.copy(), gt.copy()), dice_jaccard(pred, gt)[0]))
    return out


_register(Exercise(
    "04.dice", "04_train",
    "the Dice score of two boolean masks",
    "actionpp.metrics.dice_jaccard",
    "2 |P and G| / (|P| + |G|) with |.| the number of True pixels; when both masks are empty there is nothing to "
    "find and nothing was found: 1.",
    _cases_dice, close(rtol=1e-9),
))


def _cases_alignment(rng: np.random.Generator) -> list[Case]:
    import torch

    from actionpp import embeddings as E

    out = []
    for _ in range(CASES):
        k, d = int(rng.integers(2, 5)), int(rng.integers(3, 9))
        n = int(rng.integers(3 * k, 60))
        labels = torch.from_numpy(np.concatenate([np.arange(k), rng.integers(0, k, n - k)])).long()
        centre = _unit_rows(rng, k, d)
        emb = torch.nn.functional.normalize(centre[labels] + 0.7 * torch.from_numpy(rng.standard_normal((n, d))), dim=1)
        out.append(Case(f"{n} embeddings, K={k}, d={d}", (emb.clone(), labels.clone(), k),
                        E.alignment(emb, labels, k).numpy()))
    return out


_register(Exercise(
    "05.alignment", "05_embeddings",
    "per class alignment: the mean cosine of a class's embeddings to their normalised class mean",
    "actionpp.embeddings.alignment",
    "for each class c: mu = normalise(mean of its embeddings); the answer is the mean of emb[labels == c] @ mu. "
    "Return one number per class, a (K,) array.",
    _cases_alignment, close(rtol=1e-6),
))


def _cases_simplex_uniformity(rng: np.random.Generator) -> list[Case]:
    from actionpp import embeddings as E
    from actionpp.centers import simplex_centers

    out = []
    for k in [2, 4, *rng.choice(np.arange(3, 20), CASES - 2, replace=False).tolist()]:
        d = int(k + rng.integers(0, 4))
        out.append(Case(f"K={k} (d={d})", (int(k),),
                        E.uniformity(simplex_centers(int(k), d, seed=int(rng.integers(1000))).double())))
    return out


_register(Exercise(
    "05.simplex_uniformity", "05_embeddings",
    "the uniformity log mean_{i != j} exp(-2 |u_i - u_j|^2) of a regular K-simplex",
    "actionpp.embeddings.uniformity",
    "for unit vectors |u - v|^2 = 2 - 2 cos(u, v), and every pair of a simplex has cos = -1/(K - 1) "
    "(exercise 01.simplex_cosine): all pairs give the same term.",
    _cases_simplex_uniformity, close(rtol=1e-6),
))


def _cases_difference(rng: np.random.Generator) -> list[Case]:
    from actionpp import embeddings as E

    out = []
    for _ in range(CASES):
        na, nb = int(rng.integers(2, 6)), int(rng.integers(2, 6))
        a = np.round(rng.uniform(0, 1, na), 3).tolist()
        b = np.round(rng.uniform(0, 1, nb), 3).tolist()
        diff = E.seed_difference(a, b)
        out.append(Case(f"a={a}, b={b}", (list(a), list(b)), (diff["difference"], diff["se"])))
    return out


_register(Exercise(
    "05.difference", "05_embeddings",
    "a difference of two methods over seeds and its standard error",
    "actionpp.embeddings.seed_difference",
    "difference = mean(b) - mean(a); standard error = sqrt(var(a) / n_a + var(b) / n_b) with the sample "
    "variance (ddof = 1, as the std over seeds in the tables). Return the pair (difference, se).",
    _cases_difference, close(rtol=1e-9),
))




def summary_table(names: Sequence[str] | None = None) -> list[dict[str, str]]:
    """One row per exercise: name, notebook, what it asks, what it is checked against."""
    chosen = [EXERCISES[n] for n in names] if names is not None else list(EXERCISES.values())
    return [{"name": e.name, "notebook": e.notebook, "asks for": e.title, "checked against": e.library}
            for e in chosen]

