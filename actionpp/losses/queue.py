"""FIFO stores of past teacher embeddings: the SAACL feature queue and the ISD memory bank.

Taught in notebooks/03_contrastive_losses.ipynb.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["FeatureQueue", "MemoryBank"]


class _Fifo:
    """Ring buffer of ``size`` rows of width ``dim`` (optionally with integer labels)."""

    _with_labels = False

    def __init__(
        self, size: int, dim: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> None:
        if size < 1 or dim < 1:
            raise ValueError(f"{type(self).__name__} needs size >= 1 and dim >= 1, got size={size}, dim={dim}")
        self.size, self.dim = int(size), int(dim)
        dev = torch.device(device) if device is not None else torch.device("cpu")
        self._emb = torch.zeros(self.size, self.dim, dtype=dtype, device=dev)
        self._lab = torch.zeros(self.size, dtype=torch.long, device=dev)
        self.ptr = 0  # next row to write
        self.count = 0  # valid rows (<= size)

    @property
    def device(self) -> torch.device:
        return self._emb.device

    def to(self, device: torch.device | str) -> _Fifo:
        """Move the buffers to ``device`` (in place); returns self."""
        self._emb = self._emb.to(device)
        self._lab = self._lab.to(device)
        return self

    def __len__(self) -> int:
        return self.count

    @torch.no_grad()
    def _push(self, emb: torch.Tensor, labels: torch.Tensor | None) -> None:
        if emb.ndim != 2 or emb.shape[1] != self.dim:
            raise ValueError(f"{type(self).__name__}.push: emb must be (n, {self.dim}), got shape {tuple(emb.shape)}")
        if labels is not None and (labels.ndim != 1 or labels.shape[0] != emb.shape[0]):
            raise ValueError(
                f"{type(self).__name__}.push: labels must be ({emb.shape[0]},), got shape {tuple(labels.shape)}"
            )
        n = emb.shape[0]
        if n == 0:
            return
        emb = emb.detach().to(self._emb)
        if labels is not None:
            labels = labels.detach().to(self._lab)
        if n >= self.size:  # only the newest `size` rows survive
            emb = emb[-self.size :]
            labels = labels[-self.size :] if labels is not None else None
            n = self.size
        idx = (self.ptr + torch.arange(n, device=self._emb.device)) % self.size  # n
        self._emb[idx] = emb
        if labels is not None:
            self._lab[idx] = labels
        self.ptr = (self.ptr + n) % self.size
        self.count = min(self.size, self.count + n)

    @property
    def embeddings(self) -> torch.Tensor:
        """(count, dim) valid rows, oldest first."""
        if self.count < self.size:
            return self._emb[: self.count]
        return torch.cat([self._emb[self.ptr :], self._emb[: self.ptr]])

    def state_dict(self) -> dict[str, Any]:
        """Tensors and ints only (weights-only loadable)."""
        st: dict[str, Any] = {
            "embeddings": self._emb.clone(),
            "ptr": self.ptr,
            "count": self.count,
            "size": self.size,
            "dim": self.dim,
        }
        if self._with_labels:
            st["labels"] = self._lab.clone()
        return st

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; sizes must match; tensors move to this buffer's device."""
        if int(state.get("size", -1)) != self.size or int(state.get("dim", -1)) != self.dim:
            raise ValueError(
                f"{type(self).__name__} state has size={state.get('size')}, dim={state.get('dim')}; expected "
                f"size={self.size}, dim={self.dim}"
            )
        if tuple(state["embeddings"].shape) != (self.size, self.dim):
            raise ValueError(f"{type(self).__name__} state embeddings have shape {tuple(state['embeddings'].shape)}")
        self._emb = state["embeddings"].to(self._emb)
        if self._with_labels:
            self._lab = state["labels"].to(self._lab)
        self.ptr, self.count = int(state["ptr"]), int(state["count"])


class FeatureQueue(_Fifo):
    """SAACL's FIFO queue of teacher pixel embeddings with their labels (official size 12 288).

    ``push(emb (n, d), labels (n,))`` stores detached copies on the queue's device
    (default CPU; ``device=`` or ``.to()`` to move), overwriting the oldest rows; a
    push larger than ``size`` keeps its last ``size`` rows. ``.embeddings`` (count, d)
    and ``.labels`` (count,) return the valid rows, oldest first; ``len(q)`` = count.
    Embeddings are stored as given (SAACL normalises its inputs).
    """

    _with_labels = True

    def push(self, emb: torch.Tensor, labels: torch.Tensor) -> None:
        self._push(emb, labels)

    @property
    def labels(self) -> torch.Tensor:
        """(count,) labels of the valid rows, oldest first."""
        if self.count < self.size:
            return self._lab[: self.count]
        return torch.cat([self._lab[self.ptr :], self._lab[: self.ptr]])


class MemoryBank(_Fifo):
    """ISD's FIFO memory bank of teacher embeddings (ACTION: the last 36).

    ``push(emb (n, d))``; ``.embeddings`` (count, d), oldest first.
    """

    def push(self, emb: torch.Tensor) -> None:
        self._push(emb, None)
