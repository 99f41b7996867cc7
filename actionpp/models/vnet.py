"""The UA-MT 3D V-Net used for LA by ACTION and ACTION++.

Stages at ``f, 2f, 4f, 8f, 16f`` filters (``f = base_filters = 16``) with 1, 2,
3, 3, 3 conv-norm-ReLU layers (3x3x3, padding 1) in the encoder; between stages
a 2x2x2 convolution with stride 2 (+ norm + ReLU) down-samples. The decoder
mirrors it (3, 3, 2, 1 layers at 8f, 4f, 2f, f): each up-sampling is a 2x2x2
transposed convolution with stride 2 (+ norm + ReLU) whose output is *added* to
the encoder map of the same size (no concatenation, no residual inside stages,
as in UA-MT's ``VNet``). ``Dropout3d(0.5)`` is applied to the bottleneck and to
the last decoder map when ``has_dropout`` (active only in training mode). The
output is a 1x1x1 convolution to ``num_classes`` logits.

Parameter count (in 1, 2 classes, f = 16, batchnorm): 9 448 866 (worked out
layer by layer in tests/test_models.py; "~9.45 M" in method.md).

``forward_features`` returns ``Features.bottleneck`` = the deepest encoder map
``(B, 256, X/16, Y/16, Z/16)`` (after dropout) and ``Features.decoder`` = the
bottleneck then the four decoder stage outputs, coarse to fine:
``[256, 128, 64, 32, 16]`` channels; the last one ``(B, 16, X, Y, Z)`` (before
dropout) is what the official 3D representation head reads.

X, Y, Z must be multiples of 16. Taught in notebooks/04_train.ipynb.
"""

from __future__ import annotations

from torch import Tensor, nn

from actionpp.models.backbone import Backbone, Features

__all__ = ["VNet3D"]


def _norm(kind: str, channels: int) -> list[nn.Module]:
    if kind == "batchnorm":
        return [nn.BatchNorm3d(channels)]
    if kind == "groupnorm":
        return [nn.GroupNorm(num_groups=16, num_channels=channels)]
    if kind == "instancenorm":
        return [nn.InstanceNorm3d(channels)]
    if kind == "none":
        return []
    raise ValueError(f"normalization must be batchnorm, groupnorm, instancenorm or none, got {kind!r}")


def _stage(layers: int, c_in: int, c_out: int, norm: str) -> nn.Sequential:
    ops: list[nn.Module] = []
    for i in range(layers):
        ops += [nn.Conv3d(c_in if i == 0 else c_out, c_out, kernel_size=3, padding=1), *_norm(norm, c_out)]
        ops.append(nn.ReLU(inplace=True))
    return nn.Sequential(*ops)


def _down(c_in: int, c_out: int, norm: str) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(c_in, c_out, kernel_size=2, stride=2), *_norm(norm, c_out), nn.ReLU(inplace=True))


def _up(c_in: int, c_out: int, norm: str) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose3d(c_in, c_out, kernel_size=2, stride=2), *_norm(norm, c_out), nn.ReLU(inplace=True)
    )


class VNet3D(Backbone):
    """UA-MT V-Net: ``(B, in_channels, X, Y, Z) -> logits (B, num_classes, X, Y, Z)``."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        base_filters: int = 16,
        normalization: str = "batchnorm",
        has_dropout: bool = True,
    ) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 1 or base_filters < 1:
            raise ValueError(
                f"in_channels, num_classes, base_filters must be >= 1, got {in_channels}, {num_classes}, {base_filters}"
            )
        f = base_filters
        _norm(normalization, f)  # validates the name early
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.has_dropout = has_dropout
        widths = [f, 2 * f, 4 * f, 8 * f, 16 * f]
        self.widths = widths
        enc_inputs = [in_channels] + widths[1:]  # stage i > 0 reads the down-sampling conv's output
        self.enc = nn.ModuleList(
            [_stage(n, c_in, c, normalization) for n, c_in, c in zip([1, 2, 3, 3, 3], enc_inputs, widths)]
        )
        self.down = nn.ModuleList([_down(widths[i], widths[i + 1], normalization) for i in range(4)])
        self.up = nn.ModuleList([_up(widths[i], widths[i - 1], normalization) for i in range(4, 0, -1)])
        self.dec = nn.ModuleList(
            [_stage(n, widths[i], widths[i], normalization) for n, i in zip([3, 3, 2, 1], [3, 2, 1, 0])]
        )
        self.out_conv = nn.Conv3d(f, num_classes, kernel_size=1)
        self.dropout = nn.Dropout3d(p=0.5)

    @property
    def feature_channels(self) -> list[int]:
        """Channels of ``Features.decoder`` entries, coarse to fine (``[256, 128, 64, 32, 16]``)."""
        return list(reversed(self.widths))

    def forward_features(self, x: Tensor) -> tuple[Tensor, Features]:
        """``x (B, C_in, X, Y, Z)`` -> ``(logits (B, K, X, Y, Z), Features)``; sizes multiples of 16."""
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"VNet3D expects (B, {self.in_channels}, X, Y, Z), got {tuple(x.shape)}")
        if any(s % 16 for s in x.shape[2:]):
            raise ValueError(f"VNet3D needs X, Y, Z divisible by 16, got {tuple(x.shape[2:])}")
        skips = []
        h = x
        for i, stage in enumerate(self.enc):
            h = stage(h if i == 0 else self.down[i - 1](h))
            skips.append(h)
        if self.has_dropout:
            h = self.dropout(h)
        bottleneck = h
        maps = [bottleneck]
        for up, stage, skip in zip(self.up, self.dec, reversed(skips[:-1])):
            h = stage(up(h) + skip)
            maps.append(h)
        if self.has_dropout:
            h = self.dropout(h)
        return self.out_conv(h), Features(bottleneck=bottleneck, decoder=maps)

    def forward(self, x: Tensor) -> Tensor:
        """``x (B, C_in, X, Y, Z)`` -> logits ``(B, num_classes, X, Y, Z)``."""
        return self.forward_features(x)[0]

