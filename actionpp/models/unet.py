"""The SSL4MIS 2D U-Net used for ACDC by ACTION and ACTION++.

Architecture (channels ``(16, 32, 64, 128, 256)``, encoder dropout
``(0.05, 0.1, 0.2, 0.3, 0.5)``):

- encoder level ``i``: ``ConvBlock`` = conv 3x3 -> BN -> LeakyReLU -> dropout(p_i)
  -> conv 3x3 -> BN -> LeakyReLU; levels 1..4 start with a 2x2 max-pool;
- decoder level: 1x1 conv (``c_in -> c_skip``), 2x bilinear up-sampling
  (``align_corners=True``), concatenation ``[skip, up]``, ``ConvBlock`` with
  dropout 0; this is SSL4MIS's ``UpBlock`` with its default ``bilinear=True``,
  which is what its ``Decoder`` builds (the ``bilinear: False`` entry of its
  parameter dictionary is never read). The variant with a 2x2 transposed
  convolution instead of 1x1 conv + bilinear has 1 944 324 parameters; the
  bilinear one has exactly the 1 813 764 parameters quoted for the SSL4MIS U-Net,
  which is how the two were told apart (``upsampling="transpose"`` selects the
  other one);
- output: conv 3x3 ``16 -> num_classes`` (logits, no softmax).

``forward_features`` also returns the maps the contrastive heads read:
``Features.bottleneck`` is the deepest encoder map ``(B, 256, H/16, W/16)`` and
``Features.decoder`` lists, coarse to fine, the bottleneck and the outputs of the
four decoder blocks: ``[(B,256,H/16,W/16), (B,128,H/8,W/8), (B,64,H/4,W/4),
(B,32,H/2,W/2), (B,16,H,W)]``, 496 channels in total, the maps the official
ACTION++ 2D representation head up-samples and concatenates.

H and W must be multiples of 16 (four 2x poolings). Taught in notebooks/04_train.ipynb.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from actionpp.models.backbone import Backbone, Features

__all__ = ["Features", "UNet2D", "ConvBlock2D"]


class ConvBlock2D(nn.Sequential):
    """conv3x3-BN-LeakyReLU, dropout, conv3x3-BN-LeakyReLU: ``(B,c_in,H,W) -> (B,c_out,H,W)``."""

    def __init__(self, c_in: int, c_out: int, dropout: float) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, kernel_size=3, padding=1),
            nn.BatchNorm2d(c_out),
            nn.LeakyReLU(),
            nn.Dropout(dropout),
            nn.Conv2d(c_out, c_out, kernel_size=3, padding=1),
            nn.BatchNorm2d(c_out),
            nn.LeakyReLU(),
        )


class _UpBlock(nn.Module):
    """Up-sample the coarse map to the skip's size, concatenate ``[skip, up]``, ConvBlock."""

    def __init__(self, c_coarse: int, c_skip: int, c_out: int, upsampling: str) -> None:
        super().__init__()
        if upsampling == "bilinear":
            self.up: nn.Module = nn.Sequential(
                nn.Conv2d(c_coarse, c_skip, kernel_size=1),
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
            )
        elif upsampling == "transpose":
            self.up = nn.ConvTranspose2d(c_coarse, c_skip, kernel_size=2, stride=2)
        else:
            raise ValueError(f"upsampling must be 'bilinear' or 'transpose', got {upsampling!r}")
        self.conv = ConvBlock2D(2 * c_skip, c_out, 0.0)

    def forward(self, coarse: Tensor, skip: Tensor) -> Tensor:
        return self.conv(torch.cat([skip, self.up(coarse)], dim=1))


class UNet2D(Backbone):
    """SSL4MIS 2D U-Net: ``(B, in_channels, H, W) -> logits (B, num_classes, H, W)``.

    With the defaults (in 1, 4 classes) it has 1 813 764 parameters.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 4,
        channels: Sequence[int] = (16, 32, 64, 128, 256),
        dropout: Sequence[float] = (0.05, 0.1, 0.2, 0.3, 0.5),
        upsampling: str = "bilinear",
    ) -> None:
        super().__init__()
        if len(channels) != 5 or len(dropout) != 5:
            raise ValueError(f"channels and dropout need 5 entries, got {tuple(channels)} and {tuple(dropout)}")
        if in_channels < 1 or num_classes < 1:
            raise ValueError(f"in_channels and num_classes must be >= 1, got {in_channels}, {num_classes}")
        c = list(channels)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.channels = tuple(c)
        self.encoder = nn.ModuleList([ConvBlock2D(in_channels, c[0], dropout[0])])
        for i in range(1, 5):
            self.encoder.append(ConvBlock2D(c[i - 1], c[i], dropout[i]))
        self.pool = nn.MaxPool2d(2)
        self.decoder = nn.ModuleList([_UpBlock(c[i], c[i - 1], c[i - 1], upsampling) for i in range(4, 0, -1)])
        self.out_conv = nn.Conv2d(c[0], num_classes, kernel_size=3, padding=1)

    @property
    def feature_channels(self) -> list[int]:
        """Channels of ``Features.decoder`` entries, coarse to fine (``[256, 128, 64, 32, 16]``)."""
        return list(reversed(self.channels))

    def forward_features(self, x: Tensor) -> tuple[Tensor, Features]:
        """``x (B, C_in, H, W)`` -> ``(logits (B, K, H, W), Features)``; H, W multiples of 16."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"UNet2D expects (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if x.shape[2] % 16 or x.shape[3] % 16:
            raise ValueError(f"UNet2D needs H and W divisible by 16, got {tuple(x.shape[2:])}")
        skips = []
        h = x
        for i, block in enumerate(self.encoder):
            h = block(h if i == 0 else self.pool(h))
            skips.append(h)
        bottleneck = skips[-1]
        maps = [bottleneck]
        h = bottleneck
        for up, skip in zip(self.decoder, reversed(skips[:-1])):
            h = up(h, skip)
            maps.append(h)
        return self.out_conv(h), Features(bottleneck=bottleneck, decoder=maps)

    def forward(self, x: Tensor) -> Tensor:
        """``x (B, C_in, H, W)`` -> logits ``(B, num_classes, H, W)``."""
        return self.forward_features(x)[0]
