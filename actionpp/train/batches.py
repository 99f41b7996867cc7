"""Batches and their augmentation: index draws from a seeded generator, batched on-device transforms.

- :meth:`BatchSource.labelled` / :meth:`BatchSource.unlabelled`: a batch drawn by index
  from the training tensors (3D: random crops), then the weak (flip / rotation) view;
- :meth:`BatchSource.photometric`: colour jitter and blur (the strong view's pixel part);
- :meth:`BatchSource.mix`: CutMix / ClassMix of an unlabelled batch, with the teacher's
  probabilities mixed the same way.

Every random draw comes from the two generators given: ``batch`` (CPU: which images)
and ``aug`` (the device: how they are transformed), so a run resumes exactly.

Taught in notebooks/04_train.ipynb.
"""

from __future__ import annotations

import torch
from torch import Tensor

from actionpp import augment as aug
from actionpp.config import Config
from actionpp.data.spec import TrainTensors
from actionpp.train.data import TrainingData

__all__ = ["BatchSource"]


class BatchSource:
    """Draws and augments the batches of one run (see the module docstring)."""

    def __init__(self, cfg: Config, data: TrainingData, device: torch.device, gen_batch: torch.Generator,
                 gen_aug: torch.Generator) -> None:
        self.cfg = cfg
        self.data = data
        self.device = device
        self.gen_batch = gen_batch
        self.gen_aug = gen_aug
        self.spatial_dims = data.spatial_dims

    def _draw(self, n: int, k: int) -> Tensor:
        """``k`` distinct indices in ``[0, n)`` (with repetition when k > n), from the batch generator."""
        if n == 0:
            raise ValueError("cannot draw a batch from an empty set (no unlabelled images?)")
        if k <= n:
            return torch.randperm(n, generator=self.gen_batch)[:k]
        return torch.randint(n, (k,), generator=self.gen_batch)

    def labelled(self) -> tuple[Tensor, Tensor]:
        """``(x (B_l, C, ...), y (B_l, ...))``: the weak view of a labelled batch."""
        cfg = self.cfg
        idx = self._draw(self.data.n_l, cfg.train.batch_labelled)
        train = self.data.train
        y: Tensor | None
        if isinstance(train, TrainTensors):
            i = idx.to(self.device)
            x, y = train.x_l[i], train.y_l[i]
        else:  # 3D: random crops of the drawn volumes
            xs = [train.x_l[j] for j in idx.tolist()]
            ys = [train.y_l[j] for j in idx.tolist()]
            x, y = aug.random_crop(xs, ys, cfg.data.crop, self.gen_aug)
        x, y_out = self.weak(x, y)
        assert y_out is not None  # labels in, labels out
        return x, y_out

    def unlabelled(self) -> Tensor:
        """``x (B_u, C, ...)``: the weak view of an unlabelled batch."""
        cfg = self.cfg
        idx = self._draw(self.data.n_u, cfg.train.batch_unlabelled)
        train = self.data.train
        if isinstance(train, TrainTensors):
            x = train.x_u[idx.to(self.device)]
        else:
            x, _ = aug.random_crop([train.x_u[j] for j in idx.tolist()], None, cfg.data.crop, self.gen_aug)
        return self.weak(x, None)[0]

    def weak(self, x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Flip / rotation as ``augment.labelled_*`` switch on (3D: in the axial plane only)."""
        a = self.cfg.augment
        if not (a.labelled_flip or a.labelled_rotate):
            return x, y
        plane = (0, 1) if self.spatial_dims == 3 else None
        return aug.weak_augment(
            x, y, self.gen_aug,
            flip_prob=0.5 if a.labelled_flip else 0.0,
            rotate_prob=0.5 if a.labelled_rotate else 0.0,
            plane=plane,
        )

    def photometric(self, x: Tensor) -> Tensor:
        """Colour jitter and / or Gaussian blur as ``augment.jitter`` / ``augment.blur`` switch on."""
        a = self.cfg.augment
        if a.jitter and a.blur:
            return aug.strong_augment(x, self.gen_aug)
        if a.jitter:
            return aug.colour_jitter(x, self.gen_aug)
        if a.blur:
            return aug.gaussian_blur(x, self.gen_aug)
        return x

    def mix(self, x: Tensor, probs: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """CutMix / ClassMix ``x (B, C, ...)``; the teacher probabilities ``(B, K, ...)`` are mixed alike."""
        mode = self.cfg.augment.mix
        if mode == "none":
            return x, probs
        if mode == "cutmix":
            mixed, mask, perm = aug.cutmix(x, self.gen_aug)
        else:
            mixed, mask, perm = aug.classmix(x, labels, self.gen_aug, num_classes=self.cfg.data.num_classes)
        return mixed, aug.mix_targets(probs, mask, perm)
