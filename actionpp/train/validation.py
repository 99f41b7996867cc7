"""Validation during training and model selection on ``data.val_split`` (never the test split).

Taught in notebooks/04_train.ipynb.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from actionpp.checkpoint import save_checkpoint
from actionpp.runlog import RunLogger
from actionpp.train.state import TrainerState
from actionpp.train.steps import autocast

__all__ = ["validate", "validate_and_select"]


def validate_and_select(
    st: TrainerState, val: list[Any], run_dir: Path, logger: RunLogger, done: int, final: bool = False,
) -> dict[str, Any] | None:
    """Score the student on ``val`` (rank 0 calls this), log it, keep ``best.pt`` if it is the best so far.

    Selection is on the mean validation Dice; the first of equal maxima is kept (a later
    checkpoint must be strictly better). Returns the summary (None without validation volumes).
    """
    t0 = time.perf_counter()
    summary = validate(st, val)
    if summary is None:
        return None
    entry: dict[str, Any] = {"kind": "val", "iteration": done}
    if final:
        entry["final"] = True
    logger.log({**entry, **summary, "seconds": time.perf_counter() - t0})
    score = summary["dice"] if summary["dice"] is not None else -math.inf
    if score > st.best_score:
        st.best_score, st.best_iteration, st.best_summary = score, done, summary
        save_checkpoint(run_dir / "best.pt", st.best_state_dict())
    return summary


def validate(st: TrainerState, val: list[Any]) -> dict[str, Any] | None:
    """Evaluate the student on the validation volumes; restores train mode."""
    if not val:
        return None
    from actionpp.evaluate import evaluate, summarise_result

    cfg = st.cfg
    net = st.student.net
    was = net.training
    net.eval()
    try:
        with torch.no_grad(), autocast(st.device, cfg.runtime.amp):
            res = evaluate(
                _FloatLogits(net), val, dataset=cfg.data.dataset, size=cfg.data.size, patch=cfg.data.crop,
                num_classes=cfg.data.num_classes, device=st.device, progress=False, split=cfg.data.val_split,
                batch_size=cfg.eval.batch,
            )
    finally:
        net.train(was)
    return summarise_result(res, cfg.data.dataset)


class _FloatLogits(nn.Module):
    """Wraps a network so its logits come back in float32 (bf16 autocast would hand bf16 to numpy)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        logits: Tensor = self.net(x)
        return logits.float()
