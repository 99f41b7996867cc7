"""Temperature schedules for the contrastive losses (ATS and its alternatives).

ACTION++'s anatomical-aware temperature scheduler (ATS) replaces a fixed
contrastive temperature by a cosine between ``tau_min`` and ``tau_max``:

    tau(t) = tau_min + 0.5 (tau_max - tau_min) (1 + cos(2 pi t / period))

``t`` counts iterations: tau(0) = tau_max, tau(period/4) = the midpoint,
tau(period/2) = tau_min, tau(period) = tau_max again. The paper uses one cycle over
the whole run (period = total iterations) between 0.1 and 1.0; the official code
evaluates it once per epoch with period 0.1 x epochs (``cosine_epoch``), and
gives SAACL its own cosine between 0.07 and 1.0 (the 2D script; the 3D script
keeps SAACL at a fixed 0.07 and schedules only the anatomical contrast).
Pre-training schedules the ISD temperatures the same way, each cosine running
from its configured low value up to 1.0.

Every schedule is a small frozen dataclass with ``__call__(iteration) -> float``,
``values(iterations) -> np.ndarray`` (vectorised, for plots) and ``to_dict()``
(for logs and configs; ``make_schedule(**s.to_dict())`` rebuilds it).

Taught in notebooks/02_temperature_schedule.ipynb.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "Constant",
    "Cosine",
    "CosineEpoch",
    "Step",
    "Schedule",
    "SCHEDULES",
    "make_schedule",
]


def _positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _check_iter(iteration: int) -> None:
    if iteration < 0:
        raise ValueError(f"iteration must be >= 0, got {iteration}")


def _as_iters(iterations: np.ndarray) -> np.ndarray:
    it = np.asarray(iterations, dtype=np.float64)
    if np.any(it < 0):
        raise ValueError(f"iterations must be >= 0, got minimum {it.min()}")
    return it


def _cosine(t: np.ndarray, tau_min: float, tau_max: float, period: float) -> np.ndarray:
    return tau_min + 0.5 * (tau_max - tau_min) * (1.0 + np.cos(2.0 * np.pi * t / period))


def _check_range(tau_min: float, tau_max: float, period: float) -> None:
    _positive("tau_min", tau_min)
    _positive("tau_max", tau_max)
    if tau_min > tau_max:
        raise ValueError(f"tau_min must be <= tau_max, got tau_min={tau_min} > tau_max={tau_max}")
    _positive("period", period)


@dataclass(frozen=True)
class Constant:
    """A fixed temperature ``tau`` (> 0): ACTION's 0.5, SupCon's 0.07, ..."""

    tau: float

    kind = "constant"

    def __post_init__(self) -> None:
        _positive("tau", self.tau)

    def __call__(self, iteration: int) -> float:
        _check_iter(iteration)
        return float(self.tau)

    def values(self, iterations: np.ndarray) -> np.ndarray:
        return np.full(_as_iters(iterations).shape, float(self.tau))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True)
class Cosine:
    """ATS per iteration: tau_min + 0.5 (tau_max - tau_min)(1 + cos(2 pi t / period)).

    ``period`` in iterations (paper: the total number of iterations, one cycle).
    Starts at ``tau_max``; ``tau_min`` at ``period / 2``.
    """

    tau_min: float = 0.1
    tau_max: float = 1.0
    period: float = 20_000

    kind = "cosine"

    def __post_init__(self) -> None:
        _check_range(self.tau_min, self.tau_max, self.period)

    def __call__(self, iteration: int) -> float:
        _check_iter(iteration)
        return float(_cosine(np.float64(iteration), self.tau_min, self.tau_max, self.period))

    def values(self, iterations: np.ndarray) -> np.ndarray:
        return _cosine(_as_iters(iterations), self.tau_min, self.tau_max, self.period)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True)
class CosineEpoch:
    """The official per-epoch ATS: the cosine evaluated at epoch = iteration // iters_per_epoch.

    ``period`` in epochs (official: 0.1 x the number of epochs, ~10 cycles).
    Constant within an epoch.
    """

    tau_min: float = 0.1
    tau_max: float = 1.0
    period: float = 10
    iters_per_epoch: int = 1

    kind = "cosine_epoch"

    def __post_init__(self) -> None:
        _check_range(self.tau_min, self.tau_max, self.period)
        if not isinstance(self.iters_per_epoch, (int, np.integer)) or self.iters_per_epoch < 1:
            raise ValueError(f"iters_per_epoch must be an integer >= 1, got {self.iters_per_epoch!r}")

    def values(self, iterations: np.ndarray) -> np.ndarray:
        epoch = np.floor(_as_iters(iterations) / self.iters_per_epoch)
        return _cosine(epoch, self.tau_min, self.tau_max, self.period)

    def __call__(self, iteration: int) -> float:
        _check_iter(iteration)
        return float(self.values(np.array([iteration]))[0])

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True)
class Step:
    """Piecewise constant: ``values[i]`` from ``milestones[i-1]`` (inclusive) to ``milestones[i]``.

    ``milestones``: strictly increasing iterations (> 0); ``values``: one more entry
    than ``milestones``, each > 0. tau(t) = values[#{m in milestones : m <= t}].
    """

    milestones: tuple[int, ...]
    values_: tuple[float, ...]

    kind = "step"

    def __init__(self, milestones: Any, values: Any) -> None:
        ms = tuple(int(m) for m in milestones)
        vs = tuple(float(v) for v in values)
        object.__setattr__(self, "milestones", ms)
        object.__setattr__(self, "values_", vs)
        if len(vs) != len(ms) + 1:
            raise ValueError(f"step schedule needs len(values) == len(milestones) + 1, got {len(vs)} values for "
                             f"{len(ms)} milestones")
        if any(m <= 0 for m in ms) or any(b <= a for a, b in zip(ms, ms[1:])):
            raise ValueError(f"milestones must be strictly increasing and > 0, got {list(ms)}")
        for i, v in enumerate(vs):
            _positive(f"values[{i}]", v)

    def values(self, iterations: np.ndarray) -> np.ndarray:
        it = _as_iters(iterations)
        idx = np.searchsorted(np.asarray(self.milestones, dtype=np.float64), it, side="right")
        return np.asarray(self.values_, dtype=np.float64)[idx]

    def __call__(self, iteration: int) -> float:
        _check_iter(iteration)
        return float(self.values(np.array([iteration]))[0])

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "milestones": list(self.milestones), "values": list(self.values_)}


Schedule = Constant | Cosine | CosineEpoch | Step

SCHEDULES: dict[str, type] = {"constant": Constant, "cosine": Cosine, "cosine_epoch": CosineEpoch, "step": Step}


def make_schedule(kind: str, **params: Any) -> Schedule:
    """Build a schedule by name: ``"constant"`` (tau), ``"cosine"`` (tau_min, tau_max, period),
    ``"cosine_epoch"`` (tau_min, tau_max, period, iters_per_epoch), ``"step"``
    (milestones, values). Unknown kinds or parameter names raise ``ValueError``.
    """
    if kind not in SCHEDULES:
        raise ValueError(f"unknown temperature schedule {kind!r}; choose one of {', '.join(SCHEDULES)}")
    cls = SCHEDULES[kind]
    allowed = {"milestones", "values"} if cls is Step else {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(f"schedule {kind!r} got unknown parameter(s) {unknown}; allowed: {sorted(allowed)}")
    try:
        return cls(**params)
    except TypeError as exc:
        raise ValueError(f"schedule {kind!r}: {exc}") from exc
