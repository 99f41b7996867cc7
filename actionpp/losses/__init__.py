"""The losses of ACTION++ and what it inherits from ACTION.

- :func:`supervised_loss`, :func:`dice_loss`: 0.5 (CE + soft Dice) on labelled images.
- :func:`saacl_loss`, :func:`centre_gradient_share`, :class:`FeatureQueue`: SAACL (anchors: :mod:`actionpp.sampling`).
- :func:`anatomical_contrast_loss`, :func:`valid_mask`: ReCo-style anatomical contrast.
- :func:`isd_loss`, :class:`MemoryBank`: ISD-style pre-training.
- :func:`consistency_loss`, :func:`teacher_input_noise`, :func:`sigmoid_rampup`: mean teacher.
- :func:`pseudo_label_loss`: confidence-weighted pseudo-label CE.

Every loss is device-agnostic (the device of its inputs), batched, and returns a
grad-carrying 0 in its documented degenerate cases.

Taught in notebooks/03_contrastive_losses.ipynb.
"""

from .anatomical import anatomical_contrast_loss, valid_mask
from .consistency import consistency_loss, sigmoid_rampup, teacher_input_noise
from .isd import isd_loss
from .pseudo import pseudo_label_loss
from .queue import FeatureQueue, MemoryBank
from .saacl import CENTRE_TERMS, CentreTerm, centre_gradient_share, saacl_loss
from .supervised import dice_loss, supervised_loss

__all__ = [
    "supervised_loss",
    "dice_loss",
    "saacl_loss",
    "centre_gradient_share",
    "CENTRE_TERMS",
    "CentreTerm",
    "FeatureQueue",
    "anatomical_contrast_loss",
    "valid_mask",
    "isd_loss",
    "consistency_loss",
    "teacher_input_noise",
    "sigmoid_rampup",
    "MemoryBank",
    "pseudo_label_loss",
]
