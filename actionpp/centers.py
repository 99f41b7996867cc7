"""Class centres on the unit hypersphere (offline and data-free).

ACTION++ fixes K class centres psi_1..psi_K in R^d before training, spread as
uniformly as possible on the unit sphere, by minimising the uniformity energy

    L_unif(psi) = (1/K) sum_i log sum_j exp(psi_i . psi_j / t)        (t = 0.07)

For K <= d + 1 the minimiser, at every t > 0, is the regular simplex: every
pairwise cosine equals -1/(K-1). (Proof sketch: by Jensen on the convex exp,
sum_{j!=i} exp(c_ij/t) >= (K-1) exp(m_i/t) with m_i the mean cosine of row i;
the map m -> log(e^{1/t} + (K-1) e^{m/t}) is convex and increasing, so the energy
is at least its value at the mean of the m_i, and that mean is >= -1/(K-1)
because |sum_i psi_i|^2 >= 0. Equality holds exactly for the simplex.)

Four generators (``make_centers(..., method=...)``):

- ``"simplex"``: the closed form, randomly rotated by the seed (K <= d + 1 only).
- ``"optimize"`` (default): Riemannian gradient descent on the product of spheres,
  in float64, with Barzilai-Borwein steps and a non-monotone Armijo safeguard,
  annealing t geometrically from 1 down to the target t. The energy is evaluated
  as 1/t + mean_i log1p(sum_{j != i} exp((c_ij - 1)/t)), which keeps full relative
  precision where the naive float32 form saturates (method.md section 1), and the
  BB step adapts to the tiny gradient scale of small t, so the descent does not
  stall. For K <= d + 1 only the end stages t = 1 and the target t are run (the
  minimiser is the same simplex); for K > d + 1 several seeded restarts are run
  in one batch and the lowest energy wins.
- ``"tsc"``: the official recipe as published (t = 0.07, Adam lr 1e-3, 10 000 steps,
  float32, Adam on raw randn, the loss evaluated on the row-normalised iterate every
  step, the lowest float32 loss kept), kept
  to show how far from the simplex it ends (``return_trace=True`` records the
  energy and the minimum angle per step).
- ``"tammes"``: maximise the minimum pairwise angle (the Tammes problem) with a
  soft-min-distance objective (1/s) log sum_{i<j} exp(-s log|psi_i - psi_j|),
  annealing s upward (``TAMMES_STAGES``), 8 seeded restarts, float64, keeping the
  restart with the largest minimum angle. Uniformity-energy minimisers
  are close to, but not exactly, the best spherical codes; this refinement is
  what the ``TAMMES_DEG`` comparison uses.

Why one module of this length: the closed-form simplex, the optimised energy, the official
recipe (to show why it stalls) and the Tammes codes are the four answers to one question.

Taught in notebooks/01_class_centers.ipynb.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from actionpp.atomic import atomic_path, check_file

__all__ = [
    "Centers",
    "CentersError",
    "METHODS",
    "TAMMES_DEG",
    "make_centers",
    "check_centers_output",
    "uniformity_energy",
    "simplex_centers",
    "pairwise_cosines",
    "min_angle_deg",
    "simplex_error",
    "save_centers",
    "load_centers",
]

METHODS = ("optimize", "simplex", "tsc", "tammes")

#: Best known minimum pairwise angles (degrees) of K points on S^2 (the Tammes problem),
#: rounded to 0.01 degree, as tabulated in the spherical-codes literature.
TAMMES_DEG: dict[int, float] = {
    5: 90.0, 6: 90.0, 7: 77.87, 8: 74.86, 9: 70.53, 10: 66.15, 11: 63.43, 12: 63.43,
    13: 57.14, 14: 55.67, 15: 53.66, 16: 52.24, 17: 51.09, 18: 49.56, 19: 47.69,
    20: 47.43, 21: 45.61, 22: 44.74, 23: 43.71, 24: 43.69,
}


class CentersError(ValueError):
    """Bad arguments to a centre generator or a bad centres file."""


@dataclass
class Centers:
    """K unit vectors and how they were made.

    ``vectors``: (K, d) float32 tensor with unit rows (CPU).
    ``meta``: JSON-serialisable dict with at least ``K``, ``d``, ``method``, ``seed``,
    ``t``, ``energy`` (uniformity energy at ``t``), ``min_angle_deg``,
    ``max_abs_cos_error_vs_simplex`` (None when K > d + 1) and ``seconds``.
    ``trace``: only for ``method="tsc", return_trace=True``: ``{"energy": (steps,),
    "min_angle_deg": (steps,)}`` numpy arrays, one value per Adam step.
    """

    vectors: torch.Tensor
    meta: dict[str, Any]
    trace: dict[str, np.ndarray] | None = field(default=None, repr=False)


# --------------------------------------------------------------------------- geometry helpers


def pairwise_cosines(vectors: torch.Tensor) -> torch.Tensor:
    """(K, K) cosine matrix of the rows of ``vectors`` (K, d); rows are normalised first."""
    if vectors.ndim != 2:
        raise CentersError(f"vectors must be (K, d), got shape {tuple(vectors.shape)}")
    v = torch.nn.functional.normalize(vectors, dim=1)
    return v @ v.T  # K x K


def _offdiag(c: torch.Tensor) -> torch.Tensor:
    k = c.shape[-1]
    mask = ~torch.eye(k, dtype=torch.bool, device=c.device)
    return c[..., mask]


def min_angle_deg(vectors: torch.Tensor) -> float:
    """Smallest pairwise angle (degrees) between the rows of ``vectors`` (computed in float64).

    K = 1 (no pair) returns 180.0.
    """
    if vectors.shape[0] < 2:
        return 180.0
    c = _offdiag(pairwise_cosines(vectors.double()))
    return float(torch.rad2deg(torch.arccos(c.max().clamp(-1.0, 1.0))))


def simplex_error(vectors: torch.Tensor) -> float | None:
    """max_{i != j} |cos(psi_i, psi_j) + 1/(K-1)| in float64; None when K > d + 1 or K < 2."""
    k, d = vectors.shape
    if k < 2 or k > d + 1:
        return None
    c = _offdiag(pairwise_cosines(vectors.double()))
    return float((c + 1.0 / (k - 1)).abs().max())


def uniformity_energy(vectors: torch.Tensor, t: float = 0.07) -> torch.Tensor:
    """Uniformity energy (1/K) sum_i log sum_j exp(psi_i . psi_j / t) of the rows of ``vectors``.

    ``vectors``: (K, d) (rows are normalised first); returns a differentiable scalar
    in ``vectors``' dtype. Evaluated in the stable form
    1/t + mean_i log1p(sum_{j != i} exp((c_ij - 1)/t)), so that differences between
    near-optimal configurations keep their relative precision (the naive form is
    1/t plus a quantity ~1e-9 and loses it entirely in float32).
    For the simplex (K <= d + 1) it equals 1/t + log1p((K-1) exp((-1/(K-1) - 1)/t)).
    """
    if t <= 0:
        raise CentersError(f"t must be > 0, got {t}")
    c = pairwise_cosines(vectors)  # K x K
    k = c.shape[0]
    off = ~torch.eye(k, dtype=torch.bool, device=c.device)
    s = (torch.exp((c - 1.0) / t) * off).sum(dim=1)  # K
    return 1.0 / t + torch.log1p(s).mean()


# --------------------------------------------------------------------------- closed form


def _random_frame(d: int, m: int, seed: int) -> np.ndarray:
    """(d, m) matrix with orthonormal columns drawn from the Haar measure (seeded)."""
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((d, m))
    q, r = np.linalg.qr(g)
    return q * np.sign(np.diag(r))[None, :]


def simplex_centers(num_classes: int, dim: int, seed: int = 0) -> torch.Tensor:
    """The regular simplex: K unit vectors in R^d with all pairwise cosines -1/(K-1).

    Built in closed form (the centred standard basis of R^K, expressed in an
    orthonormal basis of its (K-1)-dimensional span) and placed in R^d by a random
    orthonormal frame drawn with ``seed``. Needs 2 <= K <= d + 1. Returns (K, d) float32.
    """
    _check_kd(num_classes, dim)
    k, d = num_classes, dim
    if k > d + 1:
        raise CentersError(
            f"a regular simplex of K={k} points needs dim >= K - 1 = {k - 1} (K <= d + 1 = {d + 1}); "
            "use method='optimize' for K > d + 1"
        )
    centred = np.eye(k) - 1.0 / k  # K x K, rows sum to zero, rank K-1
    u, s, _ = np.linalg.svd(centred)
    coords = u[:, : k - 1] * s[: k - 1]  # K x (K-1), same Gram matrix as `centred`
    coords /= np.linalg.norm(coords, axis=1, keepdims=True)
    frame = _random_frame(d, k - 1, seed)  # d x (K-1)
    v = coords @ frame.T  # K x d
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return torch.from_numpy(v).float()


# --------------------------------------------------------------------------- Riemannian descent

EnergyFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _unif_energy_grad(t: float) -> EnergyFn:
    """Batched uniformity energy minus 1/t and its Euclidean gradient, X: (R, K, d) float64."""

    def fn(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = x.shape[1]
        c = x @ x.transpose(1, 2)  # R x K x K
        off = ~torch.eye(k, dtype=torch.bool, device=x.device)
        m = torch.exp((c - 1.0) / t) * off  # R x K x K, diagonal zeroed
        s = m.sum(dim=2)  # R x K
        e = torch.log1p(s).mean(dim=1)  # R
        p = m / (1.0 + s).unsqueeze(2)  # R x K x K, softmax weights of the off-diagonal terms
        g = (p + p.transpose(1, 2)) @ x / (k * t)  # R x K x d
        return e, g

    return fn


def _softmin_dist_grad(s: float) -> EnergyFn:
    """Batched (1/s) log sum_{i != j} exp(-s log|x_i - x_j|) and its gradient, X: (R, K, d)."""

    def fn(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = x.shape[1]
        c = x @ x.transpose(1, 2)  # R x K x K
        off = ~torch.eye(k, dtype=torch.bool, device=x.device)
        one_minus = (1.0 - c).clamp_min(1e-300)
        logr = 0.5 * torch.log(2.0 * one_minus)  # R x K x K, log pairwise distance
        a = torch.where(off, -s * logr, torch.full_like(logr, -math.inf))
        lse = torch.logsumexp(a.flatten(1), dim=1)  # R
        w = torch.exp(a - lse[:, None, None])  # R x K x K, softmax over ordered pairs
        # dF/dc_ij = w_ij / (2 (1 - c_ij)) for each ordered pair; c_ij = x_i . x_j
        wc = w / (2.0 * one_minus)
        g = (wc + wc.transpose(1, 2)) @ x  # R x K x d
        return lse / s, g

    return fn


def _tangent(g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return g - (g * x).sum(dim=2, keepdim=True) * x


def _retract(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=2, keepdim=True)


def _sphere_descent(
    x: torch.Tensor,
    fn: EnergyFn,
    max_iter: int = 2000,
    gtol: float = 1e-11,
    xtol: float = 1e-15,
    memory: int = 5,
) -> torch.Tensor:
    """Minimise ``fn`` over R independent configurations X (R, K, d) of unit rows.

    Riemannian gradient (Euclidean gradient projected on each row's tangent space),
    retraction by normalisation, Barzilai-Borwein step sizes (alternating BB1/BB2)
    safeguarded by a non-monotone Armijo test against the max of the last ``memory``
    energies. A configuration stops when its tangent gradient is below ``gtol`` times
    its full Euclidean gradient (a scale-free stationarity test: at a critical point
    on the sphere the whole gradient is radial, whatever the energy's scale), when
    its largest coordinate change falls below ``xtol``, or when 30 step halvings
    cannot decrease the energy.
    """
    r = x.shape[0]
    x = _retract(x)
    e, gx = fn(x)
    g = _tangent(gx, x)
    gmax = g.abs().flatten(1).amax(dim=1).clamp_min(1e-300)
    step = 0.1 / gmax  # first move at most 0.1 in any coordinate
    hist = e[:, None].repeat(1, memory)
    def stationary(g: torch.Tensor, gx: torch.Tensor) -> torch.Tensor:
        return g.flatten(1).norm(dim=1) <= gtol * gx.flatten(1).norm(dim=1)

    active = ~stationary(g, gx)
    for it in range(max_iter):
        if not bool(active.any()):
            break
        gg = (g * g).flatten(1).sum(dim=1)  # R
        ref = hist.amax(dim=1)
        trial = step.clone()
        ok = torch.zeros(r, dtype=torch.bool, device=x.device)
        for _ in range(30):
            xn = _retract(x - trial[:, None, None] * g)
            en, gxn = fn(xn)
            ok = (en <= ref - 1e-4 * trial * gg) & torch.isfinite(en)
            if bool((ok | ~active).all()):
                break
            trial = torch.where(ok | ~active, trial, trial * 0.5)
        moved = ok & active
        active = moved.clone()
        if not bool(active.any()):
            break
        mv = moved[:, None, None]
        gn = _tangent(gxn, xn)
        dx = torch.where(mv, xn - x, torch.zeros_like(x))
        dg = torch.where(mv, gn - g, torch.zeros_like(g))
        x = torch.where(mv, xn, x)
        g = torch.where(mv, gn, g)
        gx = torch.where(mv, gxn, gx)
        e = torch.where(moved, en, e)
        hist = torch.where(moved[:, None], torch.cat([hist[:, 1:], e[:, None]], dim=1), hist)
        sy = (dx * dg).flatten(1).sum(dim=1)
        ss = (dx * dx).flatten(1).sum(dim=1)
        yy = (dg * dg).flatten(1).sum(dim=1)
        bb = ss / sy if it % 2 == 0 else sy / yy.clamp_min(1e-300)
        good = (sy > 0) & torch.isfinite(bb)
        step = torch.where(moved & good, bb, torch.where(moved, trial * 2.0, step)).clamp(1e-12 / gmax, 1e12 / gmax)
        change = dx.abs().flatten(1).amax(dim=1)
        active = active & (change > xtol) & ~stationary(g, gx)
    return x


# --------------------------------------------------------------------------- generators


def _check_kd(num_classes: int, dim: int) -> None:
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise CentersError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if not isinstance(dim, (int, np.integer)) or dim < 2:
        raise CentersError(f"dim must be an integer >= 2, got {dim!r}")


def _randn(r: int, k: int, d: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randn(r, k, d, generator=gen, dtype=torch.float64)


def _optimize(k: int, d: int, seed: int, t: float, restarts: int | None, max_iter: int) -> torch.Tensor:
    if k <= d + 1:
        temps = [1.0, t] if t < 1.0 else [t]
        r = 1 if restarts is None else restarts
    else:
        n = max(1, math.ceil(math.log2(1.0 / t))) if t < 1.0 else 0
        temps = [float(v) for v in np.geomspace(1.0, t, n + 1)] if t < 1.0 else [t]
        r = 4 if restarts is None else restarts
    x = _randn(r, k, d, seed)
    for i, tau in enumerate(temps):
        last = i == len(temps) - 1
        if k <= d + 1:
            x = _sphere_descent(x, _unif_energy_grad(tau), max_iter=max_iter)
        else:  # intermediate anneal stages only need to land in the right basin
            x = _sphere_descent(
                x,
                _unif_energy_grad(tau),
                max_iter=max_iter if last else min(max_iter, 300),
                gtol=1e-9 if last else 1e-6,
            )
    e, _ = _unif_energy_grad(t)(x)
    return x[int(torch.argmin(e))]


#: Soft-min sharpness stages of the ``tammes`` method. Starting at s = 32 rather than at a
#: Riesz-like s ~ 2 matters: small s funnels every restart into the same (Thomson-like)
#: basin, which for K = 13, 14 is not the best code (stuck ~1.2-1.7 % short).
TAMMES_STAGES: tuple[float, ...] = (32.0, 128.0, 512.0, 2048.0, 8192.0)


def _tammes(k: int, d: int, seed: int, restarts: int | None, max_iter: int) -> torch.Tensor:
    r = 8 if restarts is None else restarts
    x = _randn(r, k, d, seed)
    for s in TAMMES_STAGES:
        # near-degenerate optima (e.g. K = 5, 6) creep slowly: cap each stage, loosen gtol
        x = _sphere_descent(x, _softmin_dist_grad(s), max_iter=min(max_iter, 300), gtol=1e-9)
    c = x @ x.transpose(1, 2)
    c = c - 3.0 * torch.eye(k, dtype=c.dtype)  # mask the diagonal
    worst = c.flatten(1).amax(dim=1)  # R, largest cosine = smallest angle
    return x[int(torch.argmin(worst))]


def _tsc(k: int, d: int, seed: int, t: float, steps: int, lr: float, return_trace: bool):
    """The published recipe: float32, naive log-sum-exp, Adam on raw randn, keep the lowest loss.

    As published, the Adam parameter x starts as randn(K, d) (not normalised, norm ~ sqrt(d))
    and is never re-normalised itself; every step evaluates the loss on F.normalize(x)
    ("renormalised every step") and keeps that normalised iterate when its float32 loss
    is strictly below the best so far.
    """
    gen = torch.Generator().manual_seed(int(seed))
    x = torch.randn(k, d, generator=gen, dtype=torch.float32).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    best_loss, best = math.inf, torch.nn.functional.normalize(x.detach(), dim=1)
    energies = np.empty(steps) if return_trace else None
    angles = np.empty(steps) if return_trace else None
    eye = torch.eye(k, dtype=torch.bool)
    for i in range(steps):
        xn = torch.nn.functional.normalize(x, dim=1)  # K x d
        c = xn @ xn.T  # K x K
        loss = torch.log(torch.exp(c / t).sum(dim=1)).mean()
        lv = float(loss.detach())
        if lv < best_loss:
            best_loss, best = lv, xn.detach().clone()
        if return_trace:
            energies[i] = lv  # type: ignore[index]
            mc = float(c.detach().masked_fill(eye, -2.0).max().clamp(-1, 1))
            angles[i] = math.degrees(math.acos(mc))  # type: ignore[index]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    trace = {"energy": energies, "min_angle_deg": angles} if return_trace else None
    return best.double(), trace


def make_centers(
    num_classes: int,
    dim: int,
    method: str = "optimize",
    seed: int = 0,
    *,
    t: float = 0.07,
    restarts: int | None = None,
    max_iter: int = 3000,
    steps: int = 10_000,
    lr: float = 1e-3,
    return_trace: bool = False,
) -> Centers:
    """K = ``num_classes`` unit vectors in R^``dim`` spread on the sphere (see the module docstring).

    ``method``: ``"optimize"`` (default; any K and d; the simplex for K <= d + 1),
    ``"simplex"`` (closed form, K <= d + 1), ``"tsc"`` (official float32 Adam recipe;
    ``steps``, ``lr``, ``return_trace``), ``"tammes"`` (max-min-angle refinement).
    ``t``: the uniformity temperature (energy reported and, for optimize/tsc, minimised).
    ``restarts``: independent seeded starts (optimize: 1 if K <= d + 1 else 4; tammes: 8).
    Deterministic for a given seed. Returns :class:`Centers` with float32 (K, d) CPU vectors.
    """
    _check_kd(num_classes, dim)
    if method not in METHODS:
        raise CentersError(f"unknown centre method {method!r}; choose one of {', '.join(METHODS)}")
    if t <= 0:
        raise CentersError(f"t must be > 0, got {t}")
    if restarts is not None and restarts < 1:
        raise CentersError(f"restarts must be >= 1, got {restarts}")
    k, d = int(num_classes), int(dim)
    t0 = time.perf_counter()
    trace = None
    if method == "simplex":
        v64 = simplex_centers(k, d, seed).double()
    elif method == "optimize":
        v64 = _optimize(k, d, seed, t, restarts, max_iter)
    elif method == "tammes":
        v64 = _tammes(k, d, seed, restarts, max_iter)
    else:
        if steps < 1:
            raise CentersError(f"steps must be >= 1, got {steps}")
        v64, trace = _tsc(k, d, seed, t, steps, lr, return_trace)
    seconds = time.perf_counter() - t0
    vectors = torch.nn.functional.normalize(v64, dim=1).float().contiguous()
    meta: dict[str, Any] = {
        "K": k,
        "d": d,
        "method": method,
        "seed": int(seed),
        "t": float(t),
        "energy": float(uniformity_energy(vectors.double(), t)),
        "min_angle_deg": min_angle_deg(vectors),
        "max_abs_cos_error_vs_simplex": simplex_error(vectors),
        "seconds": seconds,
    }
    if method == "tsc":
        meta.update(steps=int(steps), lr=float(lr))
    return Centers(vectors=vectors, meta=meta, trace=trace)


# --------------------------------------------------------------------------- files


def _is_centres_file(path: Path) -> bool:
    try:
        load_centers(path)
    except Exception:  # noqa: BLE001 - whatever a foreign file makes the readers raise: not ours
        return False
    return True


def check_centers_output(path: str | Path, overwrite: bool = False) -> None:
    """Refuse a centres file ``path`` that :func:`save_centers` may not write: another suffix
    (:class:`CentersError`), or an existing file that is not a centres file, or one without ``overwrite``
    (:class:`~actionpp.atomic.OwnershipError` naming it: the rule of :mod:`actionpp.atomic`)."""
    p = Path(path)
    if p.suffix not in (".npz", ".pt"):
        raise CentersError(f"{p}: centres files end in .npz or .pt, got suffix {p.suffix!r}")
    check_file(p, overwrite=overwrite, ours=_is_centres_file, what="a centres file (actionpp centers --out)")


def save_centers(path: str | Path, centers: Centers, overwrite: bool = False) -> Path:
    """Write ``centers`` to ``.npz`` (``vectors`` + ``meta`` as JSON) or ``.pt``, atomically.

    The ``.pt`` file holds only a tensor and a JSON string, so ``torch.load(...,
    weights_only=True)`` reads it. An existing file is replaced only if it is a centres file (and
    ``overwrite``; :func:`check_centers_output`). Returns the path written.
    """
    p = Path(path)
    check_centers_output(p, overwrite=overwrite)
    meta_json = json.dumps(centers.meta)
    with atomic_path(p) as tmp:
        with open(tmp, "wb") as fh:  # a file object: np.savez would add .npz to a name
            if p.suffix == ".npz":
                np.savez(fh, vectors=centers.vectors.detach().cpu().numpy().astype(np.float32),
                         meta=np.array(meta_json))
            else:
                torch.save({"vectors": centers.vectors.detach().cpu().float(), "meta_json": meta_json}, fh)
    return p


def load_centers(path: str | Path) -> Centers:
    """Read a file written by :func:`save_centers` (``.npz`` or ``.pt``, weights-only safe)."""
    p = Path(path)
    if not p.is_file():
        raise CentersError(f"{p}: no such centres file")
    try:
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                vectors = torch.from_numpy(np.asarray(z["vectors"], dtype=np.float32))
                meta = json.loads(str(z["meta"]))
        elif p.suffix == ".pt":
            obj = torch.load(p, map_location="cpu", weights_only=True)
            vectors = obj["vectors"].float()
            meta = json.loads(obj["meta_json"])
        else:
            raise CentersError(f"{p}: centres files end in .npz or .pt, got suffix {p.suffix!r}")
    except (KeyError, ValueError, OSError) as exc:
        if isinstance(exc, CentersError):
            raise
        raise CentersError(f"{p}: not a centres file ({exc})") from exc
    if vectors.ndim != 2:
        raise CentersError(f"{p}: vectors must be (K, d), got shape {tuple(vectors.shape)}")
    return Centers(vectors=vectors, meta=meta)
