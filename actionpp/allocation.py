"""Adaptive allocation: matching classes to the fixed class centres online.

ACTION++ keeps a running, L2-normalised mean embedding phi_c per class and
assigns classes to the pre-computed centres psi_k with the Hungarian algorithm on
the cost -phi_c . psi_k (for unit vectors the same as the squared distance
||phi_c - psi_k||^2 up to a constant):

    pi* = argmin_pi sum_c ||psi_pi(c) - phi_c||^2

Update rule (official code, TSC.py: momentum 0.1, every iteration, on the
student's projected embeddings of the sampled labelled pixels): for each class c
present in the batch, with m_c the mean of its L2-normalised embeddings,

    phi_c <- normalise((1 - momentum) phi_c + momentum normalise(m_c))

The batch mean is normalised before it enters the EMA (a mean of unit vectors is
shorter than 1, the more so the more spread the class is; mixing it in raw would
give a spread class a smaller step).

Degenerate cases:
- a class absent from the batch keeps its stale mean;
- a class never seen so far has phi_c = 0 (``seen[c]`` is False). Its cost row is
  all zeros, so the Hungarian matching gives it whichever centre the seen classes
  leave over (ties broken by scipy's deterministic order). Because the update
  re-normalises, the first update of a class sets phi_c to the direction of its
  batch mean, whatever the momentum;
- before any update the assignment is the identity (``mode="hungarian"``).

Ablations: ``mode="random"`` (a fixed permutation drawn once from ``seed``) and
``mode="identity"`` (class c -> centre c). The running means are kept in every
mode (for monitoring), only the assignment ignores them.

Device-agnostic: the state lives on the centres' device and dtype.

Taught in notebooks/03_contrastive_losses.ipynb.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

__all__ = ["CentreAllocator", "hungarian_assignment", "MODES"]

MODES = ("hungarian", "random", "identity")


def hungarian_assignment(means: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Class -> centre assignment minimising sum_c -phi_c . psi_pi(c).

    ``means``: (K, d) class means phi; ``centres``: (M, d) with M >= K.
    Returns LongTensor (K,) on ``centres.device``: entry c is the centre index of class c.
    """
    if means.ndim != 2 or centres.ndim != 2 or means.shape[1] != centres.shape[1]:
        raise ValueError(
            f"means (K,d) and centres (M,d) must share d, got {tuple(means.shape)} and {tuple(centres.shape)}"
        )
    if centres.shape[0] < means.shape[0]:
        raise ValueError(
            f"need at least as many centres as classes, got {centres.shape[0]} centres for {means.shape[0]} classes"
        )
    cost = -(means.detach().double() @ centres.detach().double().T)  # K x M
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    out = np.empty(means.shape[0], dtype=np.int64)
    out[rows] = cols
    return torch.from_numpy(out).to(centres.device)


class CentreAllocator:
    """Running class means and the class -> centre assignment.

    ``centres``: (K, d) unit rows (e.g. ``make_centers(...).vectors``; normalised here
    anyway). ``momentum``: EMA weight of the batch mean (official code: 0.1).
    ``mode``: ``"hungarian"`` | ``"random"`` | ``"identity"``; ``seed`` for ``"random"``.

    Attributes: ``means`` (K, d), ``seen`` (K,) bool, ``assignment`` LongTensor (K,),
    all on the centres' device.
    """

    def __init__(self, centres: torch.Tensor, momentum: float = 0.1, mode: str = "hungarian", seed: int = 0) -> None:
        if centres.ndim != 2 or centres.shape[0] < 1:
            raise ValueError(f"centres must be (K, d) with K >= 1, got shape {tuple(centres.shape)}")
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}")
        if mode not in MODES:
            raise ValueError(f"unknown allocation mode {mode!r}; choose one of {', '.join(MODES)}")
        if not centres.is_floating_point():
            raise ValueError(f"centres must be floating point, got {centres.dtype}")
        self.centres = torch.nn.functional.normalize(centres.detach(), dim=1)
        self.momentum = float(momentum)
        self.mode = mode
        self.seed = int(seed)
        k, d = self.centres.shape
        self.num_classes = k
        self.means = torch.zeros(k, d, dtype=self.centres.dtype, device=self.centres.device)
        self.seen = torch.zeros(k, dtype=torch.bool, device=self.centres.device)
        if mode == "random":
            gen = torch.Generator().manual_seed(self.seed)
            self.assignment = torch.randperm(k, generator=gen).to(self.centres.device)
        else:
            self.assignment = torch.arange(k, device=self.centres.device)

    @torch.no_grad()
    def update(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """EMA-update the means of the classes present in ``labels`` and re-match.

        ``emb``: (N, d) embeddings (normalised here); ``labels``: (N,) ints in [0, K).
        N = 0 is a no-op. Returns the (new) assignment (K,).
        """
        k, d = self.centres.shape
        if emb.ndim != 2 or emb.shape[1] != d:
            raise ValueError(f"emb must be (N, {d}), got shape {tuple(emb.shape)}")
        if labels.ndim != 1 or labels.shape[0] != emb.shape[0]:
            raise ValueError(f"labels must be (N,) = ({emb.shape[0]},), got shape {tuple(labels.shape)}")
        if labels.numel() == 0:
            return self.assignment
        labels = labels.to(self.centres.device).long()
        bad = labels[(labels < 0) | (labels >= k)]
        if bad.numel():
            raise ValueError(f"labels must be in [0, {k}), got {sorted(set(bad.unique().tolist()))}")
        v = torch.nn.functional.normalize(emb.detach().to(self.centres), dim=1)  # N x d
        sums = torch.zeros(k, d, dtype=v.dtype, device=v.device).index_add_(0, labels, v)  # K x d
        counts = torch.bincount(labels, minlength=k)  # K
        present = counts > 0
        batch_mean = torch.nn.functional.normalize(sums, dim=1)  # K x d, normalise(mean) = normalise(sum)
        ema = (1.0 - self.momentum) * self.means + self.momentum * batch_mean
        self.means = torch.where(present.unsqueeze(1), torch.nn.functional.normalize(ema, dim=1), self.means)
        self.seen |= present
        if self.mode == "hungarian":
            self.assignment = hungarian_assignment(self.means, self.centres)
        return self.assignment

    def class_centres(self) -> torch.Tensor:
        """(K, d): row c is the centre currently assigned to class c."""
        return self.centres[self.assignment]

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain values only (``torch.load(weights_only=True)``-safe)."""
        return {
            "centres": self.centres.clone(),
            "means": self.means.clone(),
            "seen": self.seen.clone(),
            "assignment": self.assignment.clone(),
            "momentum": self.momentum,
            "mode": self.mode,
            "seed": self.seed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; shapes must match, tensors move to this allocator's device."""
        missing = {"centres", "means", "seen", "assignment", "momentum", "mode"} - set(state)
        if missing:
            raise ValueError(f"allocator state is missing {sorted(missing)}")
        k, d = self.centres.shape
        for key, shape in (("centres", (k, d)), ("means", (k, d)), ("seen", (k,)), ("assignment", (k,))):
            if tuple(state[key].shape) != shape:
                raise ValueError(f"allocator state {key!r} has shape {tuple(state[key].shape)}, expected {shape}")
        if state["mode"] not in MODES:
            raise ValueError(f"allocator state has unknown mode {state['mode']!r}")
        dev, dt = self.centres.device, self.centres.dtype
        self.centres = state["centres"].to(dev, dt)
        self.means = state["means"].to(dev, dt)
        self.seen = state["seen"].to(dev, torch.bool)
        self.assignment = state["assignment"].to(dev, torch.long)
        self.momentum = float(state["momentum"])
        self.mode = str(state["mode"])
        self.seed = int(state.get("seed", self.seed))
