"""The exponential-moving-average (mean) teacher.

After every optimiser step of the student, each teacher parameter becomes

    theta_teacher <- alpha * theta_teacher + (1 - alpha) * theta_student,
    alpha = min(1 - 1 / (step + 1), momentum)          (step = 0, 1, 2, ...)

the warm-up of SSL4MIS's ``update_ema_variables`` (and so of ACTION / ACTION++):
the first update copies the student (alpha = 0) and, while ``1 - 1/(step+1)`` is
below ``momentum``, the teacher is the plain running mean of the student's
iterates; after step ``1 / (1 - momentum) - 1`` (99 for 0.99) it is the usual EMA.

Buffers (BatchNorm running statistics, ``num_batches_tracked``) are *copied* from
the student, and the teacher stays in eval mode: its BN uses those running
statistics. SSL4MIS leaves the teacher in train mode, so its BN normalises each
teacher batch with that batch's statistics and accumulates its own running
statistics; copying is the byol-pytorch / timm choice and makes the teacher
deterministic for a given input.

Taught in notebooks/04_train.ipynb.
"""

from __future__ import annotations

import copy
from typing import Any, Generic, TypeVar

import torch
from torch import Tensor, nn

__all__ = ["EMATeacher", "ema_update", "warmup_momentum"]


# ---------------------------------------------------------------- helpers


def warmup_momentum(step: int, momentum: float) -> float:
    """``min(1 - 1 / (step + 1), momentum)``: 0 at step 0, 0.5 at step 1, ... capped at ``momentum``."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return min(1.0 - 1.0 / (step + 1), momentum)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """In place: teacher params <- momentum * teacher + (1 - momentum) * student; buffers copied.

    The two modules must have the same parameter and buffer names and shapes (an
    ``EMATeacher`` is unwrapped to its model). ``momentum`` = 0 copies the student,
    1 leaves the teacher unchanged.
    """
    if isinstance(teacher, EMATeacher):
        teacher = teacher.model
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    t_params = dict(teacher.named_parameters())
    s_params = dict(student.named_parameters())
    if t_params.keys() != s_params.keys():
        missing = sorted(set(t_params) ^ set(s_params))[:5]
        raise ValueError(f"teacher and student parameters differ (e.g. {missing})")
    for name, tp in t_params.items():
        sp = s_params[name]
        if tp.shape != sp.shape:
            raise ValueError(f"parameter {name}: teacher {tuple(tp.shape)} vs student {tuple(sp.shape)}")
        tp.mul_(momentum).add_(sp.detach(), alpha=1.0 - momentum)
    s_buffers = dict(student.named_buffers())
    for name, tb in teacher.named_buffers():
        if name not in s_buffers:
            raise ValueError(f"teacher buffer {name} has no student counterpart")
        tb.copy_(s_buffers[name])


# ---------------------------------------------------------------- teacher


M = TypeVar("M", bound=nn.Module)


class EMATeacher(nn.Module, Generic[M]):
    """A frozen deep copy of the student, updated by ``update(student)``.

    ``teacher(x)`` and ``teacher.forward_features(x)`` run the copy without gradients.
    ``batch_statistics=False`` (default): always in eval mode (dropout off, BatchNorm with
    its running statistics, copied from the student at each update; ``train()`` on a parent
    module does not switch it back). ``batch_statistics=True``: always in train mode, as the
    official ACTION / ACTION++ scripts call ``ema_model.train()``: BatchNorm normalises each
    teacher batch with that batch's statistics, and dropout is on. ``step`` (a buffer, so it
    is saved in ``state_dict``) counts updates.
    """

    step: Tensor

    def __init__(self, student: M, batch_statistics: bool = False) -> None:
        super().__init__()
        self.model: M = copy.deepcopy(student)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.batch_statistics = bool(batch_statistics)
        self.model.train(self.batch_statistics)

    def train(self, mode: bool = True) -> EMATeacher[M]:
        """Keeps the teacher in its one mode whatever ``mode`` is (see the class docstring)."""
        super().train(False)
        self.model.train(self.batch_statistics)
        return self

    @torch.no_grad()
    def update(self, student: nn.Module, momentum: float = 0.99) -> float:
        """One EMA step with the warm-up momentum; returns the alpha used."""
        alpha = warmup_momentum(int(self.step), momentum)
        ema_update(self.model, student, alpha)
        self.step += 1
        return alpha

    @torch.no_grad()
    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        return self.model(*args, **kwargs)

    @torch.no_grad()
    def forward_features(self, *args: Any, **kwargs: Any) -> Any:
        """The wrapped model's ``forward_features`` without gradients."""
        features: Any = self.model.forward_features  # a Backbone or SegModel.net method
        return features(*args, **kwargs)
