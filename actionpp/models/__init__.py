"""Segmentation backbones, contrastive heads and the EMA teacher.

- ``UNet2D``: the SSL4MIS 2D U-Net (ACDC), 1 813 764 parameters.
- ``VNet3D``: the UA-MT 3D V-Net (LA), 9 448 866 parameters.
- ``ProjectionMLP``, ``GlobalHead``, ``LocalHead``, ``RepresentationHead``: heads.
- ``EMATeacher``, ``ema_update``: the mean teacher.

Taught in notebooks/04_train.ipynb.
"""

from torch import nn

from actionpp.models.ema import EMATeacher, ema_update, warmup_momentum
from actionpp.models.heads import GlobalHead, LocalHead, ProjectionMLP, RepresentationHead
from actionpp.models.unet import Features, UNet2D
from actionpp.models.vnet import VNet3D

__all__ = [
    "UNet2D",
    "VNet3D",
    "Features",
    "ProjectionMLP",
    "GlobalHead",
    "LocalHead",
    "RepresentationHead",
    "EMATeacher",
    "ema_update",
    "warmup_momentum",
    "count_parameters",
]


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those with ``requires_grad``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
