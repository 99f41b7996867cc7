"""Projection and representation heads for the contrastive losses.

- ``ProjectionMLP``: Linear -> BatchNorm1d -> ReLU -> Linear (the ISD / BYOL-style
  2-layer MLP; the student's predictor is a second one on top of its projection).
- ``GlobalHead``: global average pool of the bottleneck, then a ``ProjectionMLP``
  (global instance discrimination in pre-training).
- ``LocalHead``: average pool over windows (2D: 64 x 64, stride 32) of a map,
  one ``ProjectionMLP`` embedding per window (local instance discrimination).
- ``RepresentationHead``: the dense pixel-embedding head of SAACL and the
  anatomical contrast. Every decoder map (bottleneck included) is up-sampled
  bilinearly (``align_corners=True``) to the output size and the maps are
  concatenated in the order given (496 channels for the 2D U-Net); then a
  ``k x k`` convolution (padding ``k // 2``) to ``hidden`` channels and a 1x1
  convolution to ``dim``, with no non-linearity in between. With ``dim = hidden =
  496`` and ``k = 3`` on the U-Net's five maps this is the official ACTION++ 2D
  head. The official 3D head has the same form, trilinear up-sampling and
  3x3x3 + 1x1x1 convolutions to 128, on five maps of 128 + 64 + 32 + 16 + 16 =
  256 channels from a V-Net variant whose file the official repository does not
  ship; on our ``VNet3D`` maps the same head is ``RepresentationHead(
  VNet3D().feature_channels, 128, spatial_dims=3)`` (496 channels in). The
  paper's dimension is 128 (method.md section 8).

Why ``forward_at`` exists: the losses read the head only at a few hundred
sampled pixels per class, and the whole head is linear in the decoder maps
(bilinear up-sampling, concatenation, convolutions). So the embedding at a pixel
can be computed from the ``k x k`` (3D: ``k x k x k``) neighbourhood of the
*up-sampled* features at that pixel, and each up-sampled feature is a 4-tap
bilinear (3D: 8-tap trilinear) combination of the low-resolution maps.
``forward_at`` gathers those taps directly (zero for neighbours outside the
image, the convolution's zero padding), then applies the
convolution weights as a matrix product: identical to indexing ``forward`` up to
float rounding, at a small fraction of the FLOPs (the dense official head costs
967 GFLOP per 256 x 256 slice, method.md section 9; see bench/bench_models.py).

Taught in notebooks/03_contrastive_losses.ipynb and notebooks/04_train.ipynb.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = ["ProjectionMLP", "GlobalHead", "LocalHead", "RepresentationHead", "local_patches"]


class ProjectionMLP(nn.Module):
    """``(N, in_dim) -> (N, out_dim)``: Linear -> BatchNorm1d -> ReLU -> Linear.

    BatchNorm1d needs N >= 2 in training mode (PyTorch raises otherwise).
    """

    def __init__(self, in_dim: int, hidden: int = 512, out_dim: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class GlobalHead(nn.Module):
    """Bottleneck ``(B, C, *spatial)`` -> global average pool ``(B, C)`` -> MLP ``(B, out_dim)``."""

    def __init__(self, in_channels: int = 256, hidden: int = 512, out_dim: int = 256) -> None:
        super().__init__()
        self.mlp = ProjectionMLP(in_channels, hidden, out_dim)

    def forward(self, bottleneck: Tensor) -> Tensor:
        if bottleneck.ndim < 3:
            raise ValueError(f"GlobalHead expects (B, C, *spatial), got {tuple(bottleneck.shape)}")
        return self.mlp(bottleneck.flatten(2).mean(dim=2))


class LocalHead(nn.Module):
    """Map ``(B, C, *spatial)`` -> window means -> MLP -> ``(B, P, out_dim)``.

    The windows are an average pool with ``window`` and ``stride`` (no padding): a
    256 x 256 map with window 64, stride 32 gives P = 7 x 7 = 49 windows. Raises if
    the map is smaller than a window.
    """

    def __init__(
        self,
        in_channels: int,
        window: int | Sequence[int] = 64,
        stride: int | Sequence[int] = 32,
        hidden: int = 512,
        out_dim: int = 256,
    ) -> None:
        super().__init__()
        self.window = window
        self.stride = stride
        self.mlp = ProjectionMLP(in_channels, hidden, out_dim)

    def forward(self, feature_map: Tensor) -> Tensor:
        win = self.window if isinstance(self.window, int) else tuple(self.window)
        st = self.stride if isinstance(self.stride, int) else tuple(self.stride)
        patches = local_patches(feature_map, win, st)  # (B * P, C)
        b = feature_map.shape[0]
        return self.mlp(patches).reshape(b, patches.shape[0] // b, -1)


def local_patches(
    feature_map: torch.Tensor,
    window: int | tuple[int, ...] = 64,
    stride: int | tuple[int, ...] = 32,
) -> torch.Tensor:
    """Average-pooled patch vectors for the local ISD variant.

    ``feature_map`` (B, C, H, W) -> (B * P, C) with P = h' w' patches,
    h' = (H - window) // stride + 1 (same for W); rows ordered batch-major, then
    row-major over patch positions. A 3D map (B, C, D, H, W) uses 3D windows.
    A window larger than the map raises ``ValueError``.
    """
    nd = feature_map.ndim - 2
    if nd not in (2, 3):
        raise ValueError(f"feature_map must be (B, C, H, W) or (B, C, D, H, W), got shape {tuple(feature_map.shape)}")
    win = (window,) * nd if isinstance(window, int) else tuple(window)
    st = (stride,) * nd if isinstance(stride, int) else tuple(stride)
    if len(win) != nd or len(st) != nd or min(st) < 1 or min(win) < 1:
        raise ValueError(f"window {window} / stride {stride} do not fit a {nd}D map")
    spatial = tuple(feature_map.shape[2:])
    if any(w > s for w, s in zip(win, spatial)):
        raise ValueError(f"window {win} is larger than the feature map's spatial size {spatial}")
    pool = F.avg_pool2d if nd == 2 else F.avg_pool3d
    pooled = pool(feature_map, kernel_size=win, stride=st)  # B x C x h' x w' [x ...]
    c = feature_map.shape[1]
    return pooled.flatten(2).transpose(1, 2).reshape(-1, c)  # (B*P) x C


def _bilinear_taps(pos: Tensor, in_size: int, out_size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Source indices and weights of ``align_corners=True`` linear interpolation.

    ``pos`` (any shape, long, in ``[0, out_size)``) -> ``(i0, i1, w0, w1)`` with the
    up-sampled value at ``pos`` = ``w0 * src[i0] + w1 * src[i1]``.
    """
    if out_size > 1 and in_size > 1:
        src = pos.to(torch.float64) * ((in_size - 1) / (out_size - 1))
    else:
        src = torch.zeros_like(pos, dtype=torch.float64)
    i0 = src.floor().long().clamp(0, in_size - 1)
    i1 = (i0 + 1).clamp(max=in_size - 1)
    w1 = src - i0.to(torch.float64)
    return i0, i1, 1.0 - w1, w1


def _interpolation_taps(
    b: Tensor, pos: Sequence[Tensor], src: Sequence[int], size: Sequence[int],
) -> tuple[Tensor, Tensor]:
    """Where the up-sampled map's values at ``pos`` come from: ``(rows (N, T, R), weights (N, T, R))``.

    ``b`` (N,) batch indices; ``pos`` one (N, T) tensor of output-grid positions per spatial axis;
    ``src`` the map's spatial size, ``size`` the output's. Rows index the map flattened as
    ``(B * prod(src), C)``. A map already at the output size is read as is (R = 1, weight 1);
    otherwise R = 2^d corners of the ``align_corners=True`` (bi/tri)linear interpolation.
    """
    nd = len(src)
    strides = [1] * nd
    for a in range(nd - 2, -1, -1):
        strides[a] = strides[a + 1] * src[a + 1]
    base = b[:, None] * (strides[0] * src[0])  # (N, 1)
    if list(src) == list(size):
        rows = base + sum(p * st for p, st in zip(pos, strides))
        return rows[..., None], torch.ones(rows.shape + (1,), dtype=torch.float64, device=b.device)
    taps = [_bilinear_taps(p, s, n) for p, s, n in zip(pos, src, size)]
    idx, wts = [], []
    for corner in itertools.product((0, 1), repeat=nd):
        i = base
        w = torch.ones_like(pos[0], dtype=torch.float64)
        for a, bit in enumerate(corner):
            i0, i1, w0, w1 = taps[a]
            i = i + (i1 if bit else i0) * strides[a]
            w = w * (w1 if bit else w0)
        idx.append(i)
        wts.append(w)
    return torch.stack(idx, dim=-1), torch.stack(wts, dim=-1)


class _RowSparseBackward(torch.autograd.Function):
    """:meth:`RepresentationHead.forward_at` whose backward touches only the rows with a gradient.

    The losses use the head's rows unevenly: the anatomical contrast takes gradients through its hard
    queries only (its prototypes and negatives are detached), so most candidate rows get an exact zero
    gradient. The forward runs without a graph; the backward recomputes the head on the rows whose
    incoming gradient is not zero and back-propagates those alone. The gradients are those of the
    plain graph (rows with a zero gradient add nothing), at the cost of a second forward of the used
    rows. Used on the CPU without autocast (the backward runs outside autocast; on a GPU the row count
    would cost a host synchronisation).
    """

    @staticmethod
    def forward(ctx: Any, head: RepresentationHead, size: list[int], b: Tensor, coords: list[Tensor],
                n_maps: int, *tensors: Tensor) -> Tensor:
        ctx.head, ctx.size, ctx.coords, ctx.n_maps = head, size, coords, n_maps
        ctx.save_for_backward(b, *tensors)
        with torch.no_grad():
            return head._embed(tensors[:n_maps], size, b, coords, *tensors[n_maps:])

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        b, *tensors = ctx.saved_tensors
        needs = ctx.needs_input_grad[5:]
        rows = grad.ne(0).any(dim=1).nonzero().squeeze(1)  # the rows some loss uses
        # zeros, not None, for every input that asks for a gradient: the plain graph gives zeros when no row is
        # used (e.g. no hard query), and an optimiser skips a parameter whose gradient is None (no momentum, no
        # weight decay that step)
        grads: list[Tensor | None] = [torch.zeros_like(t) if w else None for t, w in zip(tensors, needs)]
        if rows.numel():
            with torch.enable_grad():
                ins = [t.detach().requires_grad_(bool(w)) for t, w in zip(tensors, needs)]
                out = ctx.head._embed(ins[:ctx.n_maps], ctx.size, b[rows], [c[rows] for c in ctx.coords],
                                      *ins[ctx.n_maps:])
                wanted = [i for i, t in enumerate(ins) if t.requires_grad]
                got = torch.autograd.grad(out, [ins[i] for i in wanted], grad[rows], allow_unused=True)
            for i, g in zip(wanted, got):
                grads[i] = g if g is not None else torch.zeros_like(tensors[i])
        return (None, None, None, None, None, *grads)


class RepresentationHead(nn.Module):
    """Dense pixel (voxel) embeddings from decoder maps (see the module docstring).

    ``in_channels_list``: channels of the maps passed to ``forward``, in that order.
    ``dim``: embedding size; ``hidden``: channels after the ``k x k`` conv
    (default ``dim``); ``kernel_size``: odd ``k``; ``spatial_dims``: 2 or 3. The
    ``k x k`` conv has no bias (as the official heads: a bias there would only add
    a constant that the 1x1 conv's bias already covers). The output is not
    normalised (the losses L2-normalise).
    """

    def __init__(
        self,
        in_channels_list: Sequence[int],
        dim: int = 128,
        hidden: int | None = None,
        kernel_size: int = 3,
        spatial_dims: int = 2,
    ) -> None:
        super().__init__()
        if not in_channels_list or any(c < 1 for c in in_channels_list):
            raise ValueError(f"in_channels_list must be non-empty positive channel counts, got {in_channels_list}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1, got {kernel_size}")
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        self.in_channels_list = list(in_channels_list)
        self.in_total = sum(in_channels_list)
        self.dim = dim
        self.hidden = dim if hidden is None else hidden
        self.kernel_size = kernel_size
        self.spatial_dims = spatial_dims
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.conv = conv(self.in_total, self.hidden, kernel_size=kernel_size, padding=kernel_size // 2, bias=False)
        self.proj = conv(self.hidden, dim, kernel_size=1)

    def _check(self, maps: Sequence[Tensor], out_size: Sequence[int]) -> None:
        if len(maps) != len(self.in_channels_list):
            raise ValueError(f"RepresentationHead expects {len(self.in_channels_list)} maps, got {len(maps)}")
        for i, (m, c) in enumerate(zip(maps, self.in_channels_list)):
            if m.ndim != 2 + self.spatial_dims or m.shape[1] != c:
                raise ValueError(f"map {i} should be (B, {c}, {self.spatial_dims} spatial dims), got {tuple(m.shape)}")
        if len(out_size) != self.spatial_dims:
            raise ValueError(f"out_size must have {self.spatial_dims} entries, got {tuple(out_size)}")

    def upsampled(self, decoder_maps: Sequence[Tensor], out_size: Sequence[int]) -> Tensor:
        """The concatenated up-sampled maps ``(B, sum(in_channels), *out_size)``."""
        self._check(decoder_maps, out_size)
        mode = "bilinear" if self.spatial_dims == 2 else "trilinear"
        size = tuple(int(s) for s in out_size)
        ups = [
            m if tuple(m.shape[2:]) == size else F.interpolate(m, size=size, mode=mode, align_corners=True)
            for m in decoder_maps
        ]
        return torch.cat(ups, dim=1)

    def forward(self, decoder_maps: Sequence[Tensor], out_size: Sequence[int]) -> Tensor:
        """Dense embeddings ``(B, dim, *out_size)``."""
        return self.proj(self.conv(self.upsampled(decoder_maps, out_size)))

    def forward_at(
        self,
        decoder_maps: Sequence[Tensor],
        out_size: Sequence[int],
        b: Tensor,
        ys: Tensor,
        xs: Tensor,
        zs: Tensor | None = None,
    ) -> Tensor:
        """Embeddings at sampled positions only: ``(N, dim)``, row i = ``forward(...)[b[i], :, ys[i], xs[i]]``.

        ``b, ys, xs`` (and ``zs`` in 3D): integer tensors of shape (N,) indexing the
        batch and the output grid (``ys`` the first spatial axis, ``xs`` the second,
        ``zs`` the third). Only the ``k^d`` neighbourhoods of the sampled positions
        are computed (module docstring). N = 0 gives an empty ``(0, dim)`` tensor.
        """
        self._check(decoder_maps, out_size)
        nd = self.spatial_dims
        if (nd == 3) != (zs is not None):
            raise ValueError("forward_at needs zs exactly when the head is 3D")
        size = [int(s) for s in out_size]
        ref = decoder_maps[0]
        given = [ys, xs] if zs is None else [ys, xs, zs]
        coords = [t.to(device=ref.device, dtype=torch.long).reshape(-1) for t in given]
        b = b.to(device=ref.device, dtype=torch.long).reshape(-1)
        if any(c.shape != b.shape for c in coords):
            raise ValueError(f"b and the coordinates must have the same length, got {[len(t) for t in (b, *coords)]}")
        if b.numel() and ref.device.type != "meta":
            for c, n in zip(coords, size):
                if c.min() < 0 or c.max() >= n:
                    raise ValueError(f"sampled positions fall outside the output size {tuple(size)}")
        bias = self.proj.bias
        assert bias is not None  # the 1x1 convolution has a bias
        params = (self.conv.weight, self.proj.weight, bias)
        tensors = (*decoder_maps, *params)
        if (ref.device.type == "cpu" and torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
                and not torch.is_autocast_enabled("cpu")):
            out: Tensor = _RowSparseBackward.apply(self, size, b, coords, len(decoder_maps), *tensors)
            return out
        return self._embed(decoder_maps, size, b, coords, *params)

    def _embed(
        self, decoder_maps: Sequence[Tensor], size: Sequence[int], b: Tensor, coords: Sequence[Tensor],
        conv_weight: Tensor, proj_weight: Tensor, proj_bias: Tensor,
    ) -> Tensor:
        """:meth:`forward_at` on checked inputs, with the convolutions' parameters passed in."""
        nd = self.spatial_dims
        ref = decoder_maps[0]
        n = b.numel()
        k = self.kernel_size
        r = k // 2
        offs = torch.cartesian_prod(*[torch.arange(-r, r + 1, device=ref.device)] * nd).reshape(-1, nd)  # (T, nd)
        n_taps = offs.shape[0]
        pos = [c[:, None] + offs[None, :, a] for a, c in enumerate(coords)]  # nd x (N, T), row-major taps
        valid = torch.ones_like(pos[0], dtype=torch.bool)
        for p, s_out in zip(pos, size):
            valid &= (p >= 0) & (p < s_out)  # the k^d conv's zero padding
        pos = [p.clamp(0, s_out - 1) for p, s_out in zip(pos, size)]
        # the k^d convolution's weight per tap: (hidden, C_total, T)
        weight = conv_weight.reshape(self.hidden, self.in_total, n_taps)
        hid = torch.zeros(n, self.hidden, dtype=ref.dtype, device=ref.device)  # (N, hidden)
        start = 0
        for m in decoder_maps:
            ch, src = int(m.shape[1]), [int(s) for s in m.shape[2:]]
            w_m = weight[:, start:start + ch]  # (hidden, C, T)
            start += ch
            idx, wts = _interpolation_taps(b, pos, src, size)  # (N, T, R): rows of the flat map, weights
            wts = wts * valid[..., None]  # the zero padding as a zero weight
            flat = m.movedim(1, -1).reshape(-1, ch)  # (B * prod(src), C)
            corners = idx.shape[-1]
            if flat.shape[0] < n:
                # project first: every position of the (small) coarse map through every tap of the conv,
                # then one fused gather-and-weighted-sum of the projections at the pixels' taps and corners
                proj = (flat @ w_m.permute(1, 2, 0).reshape(ch, n_taps * self.hidden)).reshape(-1, self.hidden)
                rows = idx * n_taps + torch.arange(n_taps, device=ref.device)[None, :, None]  # (N, T, R)
                hid = hid + F.embedding_bag(rows.reshape(n, -1), proj, per_sample_weights=wts.reshape(n, -1).to(
                    proj.dtype), mode="sum")  # (N, hidden)
            else:
                # gather first: the up-sampled feature at each tap, then the conv as one matrix product
                feats = F.embedding_bag(idx.reshape(n * n_taps, corners), flat, per_sample_weights=wts.reshape(
                    n * n_taps, corners).to(flat.dtype), mode="sum")  # (N * T, C)
                hid = hid + feats.reshape(n, n_taps * ch) @ w_m.permute(2, 1, 0).reshape(n_taps * ch, self.hidden)
        return hid @ proj_weight.reshape(self.dim, self.hidden).T + proj_bias  # (N, dim)
