"""What every segmentation backbone offers the heads and the training loop.

A :class:`Backbone` is an ``nn.Module`` whose ``forward(x)`` gives the logits and whose
``forward_features(x)`` gives ``(logits, Features)``: the bottleneck and the decoder maps,
coarse to fine, whose channel counts ``feature_channels`` lists. ``UNet2D`` (ACDC) and
``VNet3D`` (LA) are the two the project uses; a new backbone subclasses this and the
heads, losses and loop work with it unchanged.

Taught in notebooks/04_train.ipynb.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

__all__ = ["Backbone", "Features"]


@dataclass
class Features:
    """Intermediate maps of a segmentation network.

    ``bottleneck``: deepest encoder map, ``(B, C_deep, ...)``.
    ``decoder``: maps coarse to fine, the first one being the bottleneck (2D U-Net:
    256, 128, 64, 32, 16 channels; 3D V-Net: see ``VNet3D``). The last entry is
    the full-resolution map the output convolution reads.
    """

    bottleneck: Tensor
    decoder: list[Tensor] = field(default_factory=list)


class Backbone(nn.Module):
    """Base class of the segmentation networks (see the module docstring)."""

    @property
    def feature_channels(self) -> list[int]:
        """Channels of ``Features.decoder`` entries, coarse to fine."""
        raise NotImplementedError

    def forward_features(self, x: Tensor) -> tuple[Tensor, Features]:
        """``(logits, Features)`` of ``x``."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """The logits (what inference uses)."""
        return self.forward_features(x)[0]
