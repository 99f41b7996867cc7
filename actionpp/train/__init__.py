"""Training: one loop for every method (a method is configuration).

- :func:`train`, :func:`prepare`, :class:`Hooks`, :class:`RunResult`, :class:`TrainingDiverged`, :class:`RunDirError`,
  :func:`default_run_dir`, :func:`poly_lr`: :mod:`actionpp.train.loop` (phases, logging,
  validation and model selection, the run directory);
- :mod:`actionpp.train.steps`: one iteration of each phase;
- :mod:`actionpp.train.objective`: which loss terms, their weights and temperatures;
- :mod:`actionpp.train.batches`: batches and augmentation;
- :mod:`actionpp.train.state`: what a run carries and checkpoints;
- :mod:`actionpp.train.data`: the training tensors and validation volumes.

Taught in notebooks/04_train.ipynb.
"""

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

__all__ = ["train", "prepare", "Hooks", "RunResult", "TrainingDiverged", "RunDirError", "default_run_dir", "poly_lr"]
