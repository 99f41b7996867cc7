"""Segmentation backbones, contrastive heads and the EMA teacher.

- ``UNet2D``: the SSL4MIS 2D U-Net (ACDC), 1 813 764 parameters.
- ``VNet3D``: the UA-MT 3D V-Net (LA), 9 448 866 parameters.
- ``Backbone``, ``Features``: what both offer (``forward_features`` -> logits and decoder maps).
- ``ProjectionMLP``, ``GlobalHead``, ``LocalHead``, ``RepresentationHead``, ``local_patches``: heads.
- ``SegModel``, ``load_model`` (:mod:`actionpp.models.segmodel`): the training bundle and loading it back.
- ``EMATeacher``, ``ema_update``: the mean teacher.

Taught in notebooks/04_train.ipynb.
"""

from torch import nn

from actionpp.models.backbone import Backbone, Features
from actionpp.models.ema import EMATeacher, ema_update, warmup_momentum
from actionpp.models.heads import GlobalHead, LocalHead, ProjectionMLP, RepresentationHead, local_patches
from actionpp.models.unet import UNet2D
from actionpp.models.vnet import VNet3D

__all__ = [
    "UNet2D",
    "VNet3D",
    "Features",
    "Backbone",
    "ProjectionMLP",
    "GlobalHead",
    "LocalHead",
    "RepresentationHead",
    "local_patches",
    "EMATeacher",
    "ema_update",
    "warmup_momentum",
    "count_parameters",
]


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those with ``requires_grad``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
