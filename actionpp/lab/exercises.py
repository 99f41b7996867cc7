"""The lab's exercises and the checks that grade them (``actionpp.lab.check``).

An :class:`Exercise` names its notebook, what it asks for, the library function it is compared
with, a hint, a generator of random :class:`Case` objects (the expected answers come from the
library) and a comparison. :func:`run_check` grades an answer without printing and never raises;
:func:`check` prints its one line. See :mod:`actionpp.lab` for the conventions in the notebooks.

What a check promises a course:

- **The hint comes after an attempt.** The first check of an untouched stub says only "not done
  yet"; the hint is added to a wrong answer, and to a stub checked again (the student asked once
  more without an answer). :func:`check` counts the attempts per exercise in the kernel.
- **The library's answer is never printed.** A wrong answer is told what it returned for which case
  and whether that is too large or too small, never the value it should have been.
- **The library cannot answer for the student.** Each exercise names the library functions it is
  checked against (``forbidden``; by default the ``actionpp...`` name in ``library``). The answer runs
  under a profiling hook (:func:`sys.setprofile`) that sees every Python call: an answer that is, wraps,
  or calls one of them (directly, through an alias, a ``functools.partial``, a helper or an object's
  method) is "not yet right", whatever it returns.
- **Interpretive questions** (one per notebook) use the same mechanism: the answer is a function that
  returns a letter (:func:`choice`); the right letter is stored as a digest, not as the letter.

Why one module of this length: a registry of exercises, each a case generator of a few lines next to
its registration; split up, a reader would have to join the registry again to see what is checked.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import re
import sys
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - typing only
    from actionpp.losses.saacl import CentreTerm

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
    "choice",
    "choice_digest",
    "reset_attempts",
    "library_codes",
]

CASES = 6  # random cases per check

PASSED, NOT_DONE, WRONG = "passed", "not done yet", "not yet right"


# ---------------------------------------------------------------------------------------------
# Outcomes and the registry
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """The result of one check: ``status`` is ``"passed"``, ``"not done yet"`` or ``"not yet right"``.

    ``line`` is the one line :func:`check` prints; it ends with the hint when ``show_hint`` (never
    when passed).
    """

    name: str
    status: str
    message: str
    hint: str = ""
    show_hint: bool = True

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    @property
    def line(self) -> str:
        text = f"[{self.status}] {self.name}: {self.message}"
        if self.status != PASSED and self.hint and self.show_hint:
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
    ``compare(got, expected)`` returns None when they agree, else what differs (one phrase, never the
    expected value). ``forbidden``: dotted names of the library functions, classes or modules the answer
    may not run (default: the first ``actionpp.`` name in ``library``; an interpretive question has none).
    """

    name: str
    notebook: str
    title: str
    library: str
    hint: str
    cases: Callable[[np.random.Generator], list[Case]]
    compare: Callable[[Any, Any], str | None]
    forbidden: tuple[str, ...] = ()

    @property
    def guarded(self) -> tuple[str, ...]:
        """The dotted names whose code the answer may not run."""
        if self.forbidden:
            return self.forbidden
        found = re.search(r"actionpp(?:\.[A-Za-z_][A-Za-z0-9_]*)+", self.library)
        return (found.group(0),) if found else ()


EXERCISES: dict[str, Exercise] = {}


def _register(ex: Exercise) -> None:
    if ex.name in EXERCISES:
        raise ValueError(f"exercise {ex.name!r} registered twice")
    EXERCISES[ex.name] = ex


def exercises_of(notebook_stem: str) -> list[Exercise]:
    """The exercises of one notebook (``"01_class_centers"``), in registry order."""
    return [e for e in EXERCISES.values() if e.notebook == notebook_stem]


# ---------------------------------------------------------------------------------------------
# Comparisons (they say what the answer returned, never what the library returns)
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
    """A comparison of numbers or arrays (same shape, within ``rtol`` / ``atol``; NaN equals NaN).

    What differs is said without the expected value: for a number, whether the answer is too large or
    too small (or not a number); for an array, how many entries differ and the first one's index.
    """

    def compare(got: Any, expected: Any) -> str | None:
        g = _as_array(got)
        e = np.asarray(expected, dtype=np.float64)
        if g is None:
            shown = repr(got)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            return f"you return {type(got).__name__} {shown}, where a number{'' if e.ndim == 0 else ' array'} is due"
        if g.shape != e.shape and not (g.size == 1 and e.size == 1):
            return f"you return shape {g.shape}, the library {e.shape}"
        g = g.reshape(e.shape)
        ok = np.isclose(g, e, rtol=rtol, atol=atol, equal_nan=True)
        if ok.all():
            return None
        if e.ndim == 0:
            if np.isnan(g) or np.isnan(e):
                return f"you return {_fmt(g)}, and that is not it" + (" (a number is due)" if np.isnan(g) else "")
            return f"you return {_fmt(g)}, which is too {'large' if g > e else 'small'}"
        first = tuple(int(i) for i in np.argwhere(~ok)[0])
        return (f"you return {_fmt(g)}: {int((~ok).sum())} of {ok.size} entries differ from the library's, "
                f"the first at index {first[0] if len(first) == 1 else first}")

    return compare


# ---------------------------------------------------------------------------------------------
# Interpretive questions: a function that returns a letter
# ---------------------------------------------------------------------------------------------


def choice_digest(name: str, letter: str) -> str:
    """The stored form of the right letter of question ``name`` (a SHA-256 digest, so that reading the
    registry does not give the answer away at a glance)."""
    return hashlib.sha256(f"{name}:{letter.strip().lower()}".encode()).hexdigest()


def choice(name: str, letters: str, digest: str) -> tuple[Callable[[np.random.Generator], list[Case]],
                                                             Callable[[Any, Any], str | None]]:
    """``(cases, compare)`` of a multiple-choice question: the answer is a function of no argument that
    returns one of ``letters`` (``"abc"``); ``digest`` is :func:`choice_digest` of the right one."""
    allowed = list(letters)

    def cases(rng: np.random.Generator) -> list[Case]:
        return [Case("the question above", (), digest)]

    def compare(got: Any, expected: Any) -> str | None:
        letter = str(got).strip().strip("()").lower() if isinstance(got, str) else None
        if letter not in allowed:
            return f"you return {got!r}; answer with one letter of {', '.join(allowed)}"
        if choice_digest(name, letter) != expected:
            return f"you chose ({letter}), and that is not it"
        return None

    return cases, compare


# ---------------------------------------------------------------------------------------------
# The library may not answer for the student
# ---------------------------------------------------------------------------------------------


def _resolve(dotted: str) -> Any:
    """The object a dotted name points to: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:n]))
        except ImportError:
            continue
        for attr in parts[n:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f"cannot resolve {dotted!r}")


def _codes_of(obj: Any, module: str | None = None) -> set[types.CodeType]:
    """Code objects of a function (unwrapped), of every method of a class, or of every function and class
    a module defines."""
    out: set[types.CodeType] = set()
    if isinstance(obj, types.ModuleType):
        for value in vars(obj).values():
            if getattr(value, "__module__", None) == obj.__name__ and (inspect.isfunction(value)
                                                                       or inspect.isclass(value)):
                out |= _codes_of(value, obj.__name__)
        return out
    if inspect.isclass(obj):
        for value in vars(obj).values():
            if isinstance(value, (staticmethod, classmethod)):
                value = value.__func__
            elif isinstance(value, property):
                value = value.fget
            if inspect.isfunction(value):
                out |= _codes_of(value)
        return out
    func = inspect.unwrap(obj) if callable(obj) else obj
    for f in {obj, func}:
        code = getattr(f, "__code__", None)
        if isinstance(code, types.CodeType):
            out.add(code)
    return out


def library_codes(ex: Exercise) -> dict[types.CodeType, str]:
    """Code object -> dotted name, for everything ``ex`` forbids the answer to run."""
    out: dict[types.CodeType, str] = {}
    for dotted in ex.guarded:
        for code in _codes_of(_resolve(dotted)):
            qual = getattr(code, "co_qualname", code.co_name)
            out.setdefault(code, dotted if dotted.endswith(code.co_name) else f"{dotted} ({qual})")
    return out


class _CallSpy:
    """A profiling hook that records the first call into any of ``codes`` while it is installed."""

    def __init__(self, codes: dict[types.CodeType, str]) -> None:
        self.codes, self.hit = codes, ""
        self._previous: Any = None

    def _hook(self, frame: types.FrameType, event: str, arg: Any) -> None:
        if event == "call" and not self.hit and frame.f_code in self.codes:
            self.hit = self.codes[frame.f_code]
        if self._previous is not None:
            self._previous(frame, event, arg)

    def __enter__(self) -> _CallSpy:
        self._previous = sys.getprofile()
        if self.codes:
            sys.setprofile(self._hook)
        return self

    def __exit__(self, *exc: Any) -> None:
        sys.setprofile(self._previous)


# ---------------------------------------------------------------------------------------------
# check / run_check
# ---------------------------------------------------------------------------------------------

_ATTEMPTS: dict[str, int] = {}


def reset_attempts() -> None:
    """Forget how often each exercise was checked in this kernel (the next stub gets no hint again)."""
    _ATTEMPTS.clear()


def _is_stub(answer: Any) -> bool:
    return answer is None or answer is Ellipsis


def run_check(name: str, answer: Any, seed: int = 0, attempt: int = 1) -> Outcome:
    """Grade ``answer`` for exercise ``name`` without printing; never raises (see :func:`check`).

    ``attempt``: how many times this exercise has been checked, this time included; the hint goes with a
    wrong answer always, and with "not done yet" only from the second attempt on.
    """
    ex = EXERCISES.get(name)
    if ex is None:
        known = ", ".join(sorted(EXERCISES))
        return Outcome(name, WRONG, f"there is no exercise of this name (known: {known}).")
    later = attempt > 1
    again = "" if later else " Run this cell again for a hint."
    if _is_stub(answer):
        return Outcome(name, NOT_DONE, f"write your answer in the cell above, then run it and this cell again.{again}",
                       ex.hint, show_hint=later)
    if not callable(answer):
        return Outcome(name, WRONG, f"expected a function, got {type(answer).__name__}.", ex.hint)
    try:
        cases = ex.cases(np.random.default_rng(seed))
        codes = library_codes(ex)
    except Exception as exc:  # noqa: BLE001 - the grader itself must not break a student's run
        return Outcome(name, WRONG, f"the check could not build its cases ({type(exc).__name__}: {exc}); "
                       "please report this.")
    for case in cases:
        spy = _CallSpy(codes)
        try:
            with spy:
                got = answer(*case.args)
        except NotImplementedError:
            return Outcome(name, NOT_DONE, "replace `raise NotImplementedError(...)` in the cell above with your "
                           f"code, run it, then run this cell again.{again}", ex.hint, show_hint=later)
        except Exception as exc:  # noqa: BLE001 - reported in one line, never as a traceback
            msg = str(exc).splitlines()[0] if str(exc) else ""
            return Outcome(name, WRONG, f"your function raised {type(exc).__name__}"
                           f"{': ' + msg[:120] if msg else ''} for {case.desc}.", ex.hint)
        if spy.hit:
            return Outcome(name, WRONG, f"your function runs {spy.hit}, the library function this exercise is "
                           "checked against: compute the answer yourself.", ex.hint)
        try:
            why = ex.compare(got, case.expected)
        except Exception as exc:  # noqa: BLE001
            why = f"your answer could not be compared ({type(exc).__name__}: {exc})"
        if why:
            return Outcome(name, WRONG, f"for {case.desc}, {why}.", ex.hint)
    what = "the right answer" if not codes and len(cases) == 1 else f"{ex.library} on {len(cases)} random cases"
    return Outcome(name, PASSED, f"agrees with {what}.")


def check(name: str, answer: Any, seed: int = 0) -> None:
    """Grade ``answer`` (the student's function) for exercise ``name`` and print one line.

    ``passed`` when it agrees with the library on every random case (and does not run the library
    function it is checked against); ``not done yet`` while it is the stub (it raises
    ``NotImplementedError``, or is ``None`` / ``...``), with the hint from the second check on;
    otherwise ``not yet right`` with the first case that differs (or the exception it raised) and a
    hint. Never raises and returns nothing, so a notebook with open exercises runs to the end.
    """
    _ATTEMPTS[name] = _ATTEMPTS.get(name, 0) + 1
    print(run_check(name, answer, seed, attempt=_ATTEMPTS[name]).line)


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
    forbidden=("actionpp.centers.simplex_centers", "actionpp.centers.make_centers"),
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
    _cases_tau_quarter, close(atol=1e-12), forbidden=("actionpp.temperature",),
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
    _cases_per_epoch, close(atol=1e-12), forbidden=("actionpp.temperature",),
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
        form: CentreTerm = "averaged" if i % 2 == 0 else "separate"
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
    _cases_anchor_loss, close(rtol=1e-6), forbidden=("actionpp.losses.saacl",),
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
        form: CentreTerm = "averaged" if i % 2 == 0 else "separate"
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
    _cases_centre_weight, close(rtol=1e-6), forbidden=("actionpp.losses.saacl",),
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


# ---------------------------------------------------------------------------------------------
# Interpretive questions, one per notebook 00-04: read a figure, choose a letter. Registered here so
# that 04's question sits between its two exercises, as in the notebook; the explanations are the
# instructor's answer cells (tagged ``answer``, dropped from the student version).
# ---------------------------------------------------------------------------------------------


def _register_choice(name: str, notebook: str, title: str, letters: str, digest: str, hint: str) -> None:
    cases, compare = choice(name, letters, digest)
    _register(Exercise(name, notebook, title, "the figure above", hint, cases, compare))


_register_choice(
    "00.class_shares", "00_data_tour", "which statement the class-share figure supports (a letter)", "abc",
    "ae94afdb462a3322a7513182b9a6894fe5d43ec9a254ebd9c64e65c063127bb6",
    "compare the three black dots with each other, then with the background's dot (the axis is logarithmic).",
)
_register_choice(
    "01.kept_iterate", "01_class_centers", "why the official recipe keeps an early iterate (a letter)", "abc",
    "95c0a8aee2d18995df64abf385d159bea2c3b4fcb8d9214f1c4701a81fb9a584",
    "look at the dashed line of the right-hand panels (the kept step) and at the error curve after it; then at "
    "the gradient panels: what is Adam following once the centres are spread?",
)
_register_choice(
    "02.why_low_tau", "02_temperature_schedule", "why ATS passes through a low temperature (a letter)", "abc",
    "09895ccfded2e5242c16afddf8f7005c4e266e05340915a7dc67877e3fa6bc0c",
    "section 2: what does a low tau do to one anchor's softmax, and which candidates then receive its gradient?",
)
_register_choice(
    "03.which_form_acts", "03_contrastive_losses", "which SAACL form lets the centres act (a letter)", "abc",
    "69fd9a92f941dede6c08499ddf24bbf7fd793fd2c190cb062700114598d22bfd",
    "read the centre term's share of the gradient in both figures of section 1, toy and real runs, once the "
    "queue is full.",
)
_register_choice(
    "04.loss_rises", "04_train", "why the total loss rises at the end of fine-tuning (a letter)", "abc",
    "9fa99f35d3b4de3131ee49c24cce74fd4bae4220670fb41409c146456aed4ec8",
    "in the middle panel, compare the two halves of the cycle at the same tau; then the grey floor curve.",
)
_register_choice(
    "05.balanced_maps", "05_embeddings", "why the maps draw the class-balanced sample (a letter)", "abc",
    "b14b0f0ae1820ad83380606825681b8a29fea46f603ce7a713ff5fbffc512037",
    "read the line above the maps that counts the natural sample's pixels per class; then ask what a map of "
    "those pixels could show about the tail.",
)


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
    forbidden=("actionpp.embeddings.alignment", "actionpp.embeddings.class_means"),
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


def _cases_longtail_counts(rng: np.random.Generator) -> list[Case]:
    import math

    from actionpp.longtail import longtail_counts

    out: list[Case] = []
    while len(out) < CASES:
        n_max, k = int(rng.integers(5, 400)), int(rng.integers(2, 13))
        ratio = float(rng.choice([1.0, 2.0, 10.0, 50.0, 100.0, 200.0, float(np.round(rng.uniform(1.5, 300.0), 2))]))
        exact = [n_max * ratio ** (-r / (k - 1)) for r in range(k)]
        if any(abs(v - math.floor(v) - 0.5) < 1e-6 for v in exact):
            continue  # a value half-way between two integers: every rounding rule would be a fair answer
        out.append(Case(f"n_max={n_max}, K={k}, ratio={ratio:g}", (n_max, k, ratio), longtail_counts(n_max, k, ratio)))
    return out


_register(Exercise(
    "07.longtail_counts", "07_beyond_medical",
    "the training images per class of an exponential long tail (head first)",
    "actionpp.longtail.longtail_counts",
    "class r (r = 0 for the head, K - 1 for the rarest) keeps n_max * ratio ** (-r / (K - 1)) images, rounded to "
    "the nearest integer and at least 1; return the K counts as a list.",
    _cases_longtail_counts, close(atol=0.0), forbidden=("actionpp.longtail.longtail_counts",),
))


def _cases_logit_adjustment(rng: np.random.Generator) -> list[Case]:
    import torch

    from actionpp.longtail import logit_adjusted_loss

    out = []
    for i in range(CASES):
        n, k = int(rng.integers(1, 9)), int(rng.integers(2, 7))
        logits = torch.from_numpy(2.0 * rng.standard_normal((n, k)))
        labels = torch.from_numpy(rng.integers(0, k, n)).long()
        counts = torch.from_numpy(rng.integers(1, 500, k)).double()
        tau = 1.0 if i == 0 else float(rng.choice([0.0, 0.5, 1.0, 2.0]))
        out.append(Case(f"{n} rows, K={k}, counts={counts.long().tolist()}, tau={tau:g}",
                        (logits.clone(), labels.clone(), counts.clone(), tau),
                        float(logit_adjusted_loss(logits, labels, counts, tau))))
    return out


_register(Exercise(
    "07.logit_adjustment", "07_beyond_medical",
    "the logit-adjusted cross-entropy of a batch (balanced softmax at tau = 1)",
    "actionpp.longtail.logit_adjusted_loss",
    "prior = counts / counts.sum(); add tau * log(prior) to every row of the logits (in training only), then take "
    "the mean cross-entropy of the adjusted logits over the rows.",
    _cases_logit_adjustment, close(rtol=1e-7), forbidden=("actionpp.longtail.logit_adjusted_loss",),
))


def summary_table(names: Sequence[str] | None = None) -> list[dict[str, str]]:
    """One row per exercise: name, notebook, what it asks, what it is checked against."""
    chosen = [EXERCISES[n] for n in names] if names is not None else list(EXERCISES.values())
    return [{"name": e.name, "notebook": e.notebook, "asks for": e.title, "checked against": e.library}
            for e in chosen]

