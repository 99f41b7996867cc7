"""Training: one loop for every method (a method is configuration).

- :func:`train`, :func:`prepare`, :class:`Hooks`, :class:`RunResult`, :class:`TrainingDiverged`, :class:`RunDirError`,
  :func:`default_run_dir`, :func:`poly_lr`: :mod:`actionpp.train.loop` (phases, logging,
  validation and model selection, the run directory);
- stepping by hand (benchmarks, notebooks): what :func:`prepare` returns (:class:`TrainerState`,
  :class:`BatchSource`, :class:`Objective`), one iteration of each phase (:func:`pretrain_step`,
  :func:`finetune_step`, :mod:`actionpp.train.steps`), their stages (:data:`FINETUNE_STAGES`,
  :data:`PRETRAIN_STAGES`: what a :class:`StageProbe` set as ``TrainerState.probe`` sees) and
  :func:`autocast`;
- :mod:`actionpp.train.objective`: which loss terms, their weights and temperatures (pure);
- :mod:`actionpp.train.batches`: batches and augmentation;
- :mod:`actionpp.train.state`: what a run carries and checkpoints;
- :mod:`actionpp.train.data`: the training tensors and validation volumes.

Taught in notebooks/04_train.ipynb.
"""

from actionpp.train.batches import BatchSource
from actionpp.train.loop import (
    Hooks,
    RunDirError,
    RunResult,
    TrainingDiverged,
    default_run_dir,
    poly_lr,
    prepare,
    train,
)
from actionpp.train.objective import Objective
from actionpp.train.state import StageProbe, TrainerState
from actionpp.train.steps import FINETUNE_STAGES, PRETRAIN_STAGES, autocast, finetune_step, pretrain_step

__all__ = [
    "train", "prepare", "Hooks", "RunResult", "TrainingDiverged", "RunDirError", "default_run_dir", "poly_lr",
    "TrainerState", "BatchSource", "Objective", "StageProbe", "pretrain_step", "finetune_step", "autocast",
    "FINETUNE_STAGES", "PRETRAIN_STAGES",
]
