"""Batched, on-device data augmentation for the training loop.

Why one module of this length: every transform comes with its label / target counterpart and
its exact 2D and 3D cases (flip, rotation, crop, CutMix, ClassMix, jitter, blur), sharing the
same generator and shape checks; they are one concept, the batched augmentation.

Taught in notebooks/04_train.ipynb.

Every function works on a whole batch at once on the batch's own device (CPU,
CUDA or ``meta``): no per-sample Python loop, no scipy or PIL. Random numbers
are only ever drawn *per sample* (a handful of scalars per image), never per
pixel, and only from the explicit ``generator`` argument, so a run is exactly
reproducible from its seed.

Layouts
-------
- 2D: images ``x (B, C, H, W)`` float, labels ``y (B, H, W)`` integer.
- 3D: images ``x (B, C, D, H, W)`` float, labels ``y (B, D, H, W)`` integer.
  The geometric transforms (rot90 / flip / rotation) act in one plane of two
  spatial axes, ``plane``; the default is the last two spatial axes. The UA-MT
  LA volumes are stored ``(X, Y, Z)`` and UA-MT rotates in (X, Y): pass
  ``plane=(0, 1)`` for them.

Generators
----------
``generator`` must be a ``torch.Generator`` either on the data's device or on
the CPU. A generator on the data's device is the fast path (a CUDA batch with a
``torch.Generator(device=x.device)`` never leaves the GPU). A CPU generator
works for every device, including ``meta``: the few per-sample numbers are drawn
on the CPU and copied to the data's device, which on CUDA can cost a small
host-to-device copy per call; the random parameters are then identical on every
device for the same seed. Each function draws a fixed number of values per call
(independent of the outcome), so the generator's stream stays aligned.

Defaults and where they come from
---------------------------------
- :func:`weak_augment` is SSL4MIS's ``RandomGenerator`` for the labelled
  stream: with probability 1/2 a random rot90 + flip, otherwise with
  probability 1/2 a random rotation in [-20, 20] degrees.
- :func:`strong_augment` follows ReCo's unlabelled transform, which ACTION
  inherits: colour jitter with factors in [0.75, 1.25] applied with
  probability 0.8, then a Gaussian blur with sigma in [0.15, 1.15] applied with
  probability 0.5 (hue and saturation are no-ops on grayscale MR and are left
  out).
- :func:`cutmix` defaults to ReCo's box of half the image area; :func:`classmix`
  pastes ``floor(n / 2)`` of the ``n`` classes present, as ReCo does (the
  ClassMix paper's code uses ``ceil``; ``rounding="ceil"`` gives that).

Mixing convention
-----------------
:func:`cutmix` and :func:`classmix` return ``(mixed, mask, perm)`` with
``mask (B, 1, *spatial)`` bool and ``perm (B,)`` long: output sample ``i`` is
``x[perm[i]]`` where ``mask[i]`` is True and ``x[i]`` elsewhere. The same
``mix_targets(t, mask, perm)`` mixes any per-pixel target (logits,
probabilities, labels, confidences) consistently.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "flip_rotate",
    "random_flip_rotate",
    "rotate",
    "random_rotate",
    "weak_augment",
    "crop",
    "random_crop",
    "random_derangement",
    "cutmix",
    "classmix",
    "mix_targets",
    "colour_jitter",
    "gaussian_kernels",
    "blur",
    "gaussian_blur",
    "strong_augment",
]

Clip = Literal["input"] | tuple[float, float] | None


# --------------------------------------------------------------------------- checks and random draws


def _check_images(x: Tensor, name: str = "x") -> int:
    """Validate an image batch and return its number of spatial axes (2 or 3)."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim not in (4, 5):
        raise ValueError(
            f"{name} must be (B, C, H, W) or (B, C, D, H, W), got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point image batch, got dtype {x.dtype}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(x.shape)})")
    return x.ndim - 2


def _check_labels(x: Tensor, y: Tensor | None, name: str = "y") -> None:
    if y is None:
        return
    if not isinstance(y, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor or None, got {type(y).__name__}")
    expected = (x.shape[0], *x.shape[2:])
    if tuple(y.shape) != expected:
        raise ValueError(
            f"{name} must have shape (B, *spatial) = {expected} to match x {tuple(x.shape)}, "
            f"got {tuple(y.shape)}"
        )
    if y.is_floating_point() or y.is_complex():
        raise ValueError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    if y.device != x.device:
        raise ValueError(f"{name} is on {y.device} but x is on {x.device}")


def _check_generator(generator: torch.Generator, device: torch.device) -> None:
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    gdev = torch.device(generator.device)
    if gdev.type != "cpu" and gdev != torch.device(device):
        raise ValueError(
            f"generator is on {gdev} but the data is on {device}: use "
            f"torch.Generator(device=x.device) or a CPU generator"
        )


def _rand(n: int | tuple[int, ...], generator: torch.Generator, device: torch.device) -> Tensor:
    """Uniform [0, 1) float32 numbers drawn on the generator's device, moved to ``device``."""
    shape = (n,) if isinstance(n, int) else n
    u = torch.rand(shape, generator=generator, device=generator.device)
    return u.to(device, non_blocking=True)


def _randint(high: int, n: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """Integers uniform in [0, high), shape (n,), int64, on ``device``."""
    k = torch.randint(0, high, (n,), generator=generator, device=generator.device)
    return k.to(device, non_blocking=True)


def _plane_axes(spatial: int, plane: tuple[int, int] | None) -> tuple[int, int]:
    """Tensor axes (counting B and C) of the two spatial axes of the plane."""
    if plane is None:
        return (spatial, spatial + 1)  # the last two spatial axes of x
    if len(plane) != 2 or plane[0] == plane[1] or not all(0 <= p < spatial for p in plane):
        raise ValueError(f"plane must be two distinct spatial axes in [0, {spatial}), got {plane}")
    return (plane[0] + 2, plane[1] + 2)


def _per_sample(v: Tensor, like: Tensor) -> Tensor:
    """(B,) -> (B, 1, ..., 1) broadcastable against ``like``."""
    return v.view(-1, *([1] * (like.ndim - 1)))


# --------------------------------------------------------------------------- rot90 and flips


@lru_cache(maxsize=16)
def _dihedral_table(h: int, w: int, device: torch.device) -> Tensor:
    """Source index tables of the 12 (k, flip_axis) transforms of an (h, w) plane.

    Row ``k * 3 + flip_axis + 1`` (``flip_axis`` in {-1 none, 0 rows, 1 columns})
    holds, for every output pixel in row-major order, the flat index of the
    input pixel it copies: ``np.flip(np.rot90(m, k), flip_axis)``. Rows with odd
    ``k`` are only valid for square planes (-1 elsewhere).
    """
    base = torch.arange(h * w, device=device).view(h, w)
    table = torch.full((12, h * w), -1, dtype=torch.long, device=device)
    for k in range(4):
        if k % 2 == 1 and h != w:
            continue
        r = torch.rot90(base, k, dims=(0, 1))
        for a in (-1, 0, 1):
            t = r if a < 0 else r.flip(a)
            table[k * 3 + a + 1] = t.reshape(-1)
    return table


def _gather_plane(t: Tensor, codes: Tensor) -> Tensor:
    """Apply per-sample table transforms to the last two axes of ``t`` with one gather (no host sync)."""
    h, w = t.shape[-2], t.shape[-1]
    idx = _dihedral_table(h, w, t.device)[codes]  # (B, h*w)
    flat = t.reshape(*t.shape[:-2], h * w)  # (B, ..., h*w)
    idx = idx.view(idx.shape[0], *([1] * (flat.ndim - 2)), h * w).expand_as(flat)
    return flat.gather(-1, idx).view(t.shape)


def _grouped_plane(t: Tensor, codes: Tensor) -> Tensor:
    """Same result as :func:`_gather_plane`, one rot90 / flip per distinct code (at most 12 groups).

    Faster on the CPU (contiguous copies, no (B, h*w) index); it reads the codes on
    the host, which would be a synchronisation on an accelerator.
    """
    out = torch.empty_like(t)
    for code in torch.unique(codes).tolist():
        ids = (codes == code).nonzero().flatten()
        k, axis = divmod(int(code), 3)
        sub = torch.rot90(t.index_select(0, ids), k, dims=(-2, -1))
        if axis > 0:
            sub = sub.flip(sub.ndim - 3 + axis)  # axis 1 -> rows (-2), axis 2 -> columns (-1)
        out.index_copy_(0, ids, sub.contiguous())
    return out


def _transform_plane(t: Tensor, codes: Tensor) -> Tensor:
    return _grouped_plane(t, codes) if t.device.type == "cpu" else _gather_plane(t, codes)


def flip_rotate(
    x: Tensor,
    y: Tensor | None,
    k: Tensor,
    flip_axis: Tensor,
    plane: tuple[int, int] | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Per-sample ``np.flip(np.rot90(sample, k), flip_axis)`` in the given plane, one gather.

    Args:
        x: images (B, C, H, W) or (B, C, D, H, W).
        y: labels (B, H, W) / (B, D, H, W) or None.
        k: (B,) int, counter-clockwise quarter turns in {0, 1, 2, 3} (np.rot90's sense:
            row 0 shown at the top).
        flip_axis: (B,) int in {-1 (no flip), 0 (first plane axis), 1 (second plane axis)},
            applied after the rotation.
        plane: the two spatial axes (0-based, spatial axes only) of the plane;
            default the last two.

    Returns:
        ``(x', y')`` with the same shapes and dtypes; ``y'`` is None when ``y`` is.
        Odd ``k`` needs a square plane (the shape must not change) and raises otherwise.
    """
    spatial = _check_images(x)
    _check_labels(x, y)
    a0, a1 = _plane_axes(spatial, plane)
    b = x.shape[0]
    if k.shape != (b,) or flip_axis.shape != (b,):
        raise ValueError(f"k and flip_axis must have shape ({b},), got {tuple(k.shape)}, {tuple(flip_axis.shape)}")
    h, w = x.shape[a0], x.shape[a1]
    k = k.to(x.device).long() % 4
    flip_axis = flip_axis.to(x.device).long()
    if h != w and x.device.type != "meta" and bool((k % 2 == 1).any()):
        raise ValueError(f"odd rot90 k needs a square plane, got plane shape ({h}, {w})")
    codes = k * 3 + flip_axis + 1  # (B,)
    xm = x.movedim((a0, a1), (-2, -1))
    xo = _transform_plane(xm, codes).movedim((-2, -1), (a0, a1))
    yo = None
    if y is not None:
        ym = y.movedim((a0 - 1, a1 - 1), (-2, -1))
        yo = _transform_plane(ym, codes).movedim((-2, -1), (a0 - 1, a1 - 1))
    return xo, yo


def _draw_rot_flip(b: int, square: bool, generator: torch.Generator, device: torch.device) -> tuple[Tensor, Tensor]:
    k = _randint(4, b, generator, device)
    if not square:
        k = (k % 2) * 2  # only shape-preserving turns (0 or 180 degrees) on a non-square plane
    axis = _randint(2, b, generator, device)
    return k, axis


def random_flip_rotate(
    x: Tensor,
    y: Tensor | None,
    generator: torch.Generator,
    plane: tuple[int, int] | None = None,
) -> tuple[Tensor, Tensor | None]:
    """SSL4MIS ``random_rot_flip`` for every sample: k ~ U{0..3} quarter turns, then a flip along a random plane axis.

    Note (hand-checkable): a rotation followed by a flip is always a reflection,
    and ``rot90(k) + flip(0)`` equals ``rot90(k + 2) + flip(1)``, so the output is
    one of the 4 reflections of the square (flip rows, flip columns, transpose,
    anti-transpose), each with probability 1/4; never the identity or a pure
    rotation. On a non-square plane k is restricted to {0, 2} (the shape must not
    change), which leaves the two axis flips.

    Shapes: as :func:`flip_rotate`. Draws 2 * B integers.
    """
    _check_images(x)
    _check_generator(generator, x.device)
    a0, a1 = _plane_axes(x.ndim - 2, plane)
    k, axis = _draw_rot_flip(x.shape[0], x.shape[a0] == x.shape[a1], generator, x.device)
    return flip_rotate(x, y, k, axis, plane)


# --------------------------------------------------------------------------- arbitrary rotation


def _affine_grid(theta: Tensor, h: int, w: int) -> Tensor:
    """``F.affine_grid(theta, (B, *, h, w), align_corners=False)`` by broadcasting: (B, 2, 3) -> (B, h, w, 2).

    Same values, several times faster on the CPU than the batched matrix product.
    """
    xs = (2.0 * torch.arange(w, device=theta.device, dtype=theta.dtype) + 1.0) / w - 1.0  # (w,) pixel centres
    ys = (2.0 * torch.arange(h, device=theta.device, dtype=theta.dtype) + 1.0) / h - 1.0  # (h,)
    t = theta[:, :, :, None, None]  # B x 2 x 3 x 1 x 1
    gx = t[:, 0, 0] * xs + t[:, 0, 1] * ys[:, None] + t[:, 0, 2]  # B x h x w
    gy = t[:, 1, 0] * xs + t[:, 1, 1] * ys[:, None] + t[:, 1, 2]  # B x h x w
    return torch.stack([gx, gy], dim=-1)


def rotate(
    x: Tensor,
    y: Tensor | None,
    degrees: Tensor,
    plane: tuple[int, int] | None = None,
    image_mode: Literal["bilinear", "nearest"] = "bilinear",
) -> tuple[Tensor, Tensor | None]:
    """Rotate each sample about the plane's centre by its own angle (``affine_grid`` + ``grid_sample``).

    Args:
        x: images (B, C, H, W) or (B, C, D, H, W); 3D volumes are rotated slice by
            slice in ``plane`` (the other spatial axis is folded into channels).
        y: labels or None; always resampled with nearest neighbour so classes stay classes.
        degrees: (B,) angles; positive = counter-clockwise with row 0 shown at the top,
            the sense of ``np.rot90`` and ``scipy.ndimage.rotate``.
        image_mode: "bilinear" (default; smoother than SSL4MIS, which uses order 0 for
            the image too) or "nearest" (exactly SSL4MIS's order-0 resampling; then image
            and label move pixel for pixel together).

    Pixels whose source falls outside the plane become 0 in both image and label
    (``scipy.ndimage.rotate``'s default ``cval=0``; background for [0, 1]-normalised
    MR). Pixel spacing is treated as isotropic in the plane, also for H != W.
    Returns ``(x', y')`` with the input shapes and dtypes.
    """
    spatial = _check_images(x)
    _check_labels(x, y)
    if image_mode not in ("bilinear", "nearest"):
        raise ValueError(f"image_mode must be 'bilinear' or 'nearest', got {image_mode!r}")
    b = x.shape[0]
    if degrees.shape != (b,):
        raise ValueError(f"degrees must have shape ({b},), got {tuple(degrees.shape)}")
    a0, a1 = _plane_axes(spatial, plane)
    h, w = x.shape[a0], x.shape[a1]
    rad = degrees.to(device=x.device, dtype=torch.float32) * (math.pi / 180.0)
    c, s = torch.cos(rad), torch.sin(rad)
    zero = torch.zeros_like(c)
    # Output pixel (x_n, y_n) in grid_sample's normalised coordinates (x along W) reads
    # the source at R(angle) applied in *pixel* units; the H/W factors undo the
    # normalisation so non-square planes are not sheared.
    theta = torch.stack(
        [
            torch.stack([c, -s * (h / w), zero], dim=-1),
            torch.stack([s * (w / h), c, zero], dim=-1),
        ],
        dim=1,
    )  # theta: B x 2 x 3
    xm = x.movedim((a0, a1), (-2, -1))
    folded = xm.reshape(b, -1, h, w)  # B x (C * other) x h x w
    grid = _affine_grid(theta.to(x.dtype), h, w)
    xo = F.grid_sample(folded, grid, mode=image_mode, padding_mode="zeros", align_corners=False)
    xo = xo.view(xm.shape).movedim((-2, -1), (a0, a1))
    yo = None
    if y is not None:
        ym = y.movedim((a0 - 1, a1 - 1), (-2, -1))
        yf = ym.reshape(b, -1, h, w).to(grid.dtype)
        yr = F.grid_sample(yf, grid, mode="nearest", padding_mode="zeros", align_corners=False)
        yo = yr.round().to(y.dtype).view(ym.shape).movedim((-2, -1), (a0 - 1, a1 - 1))
    return xo, yo


def random_rotate(
    x: Tensor,
    y: Tensor | None,
    generator: torch.Generator,
    max_degrees: float = 20.0,
    plane: tuple[int, int] | None = None,
    image_mode: Literal["bilinear", "nearest"] = "bilinear",
) -> tuple[Tensor, Tensor | None]:
    """Rotate every sample by its own angle ~ U[-max_degrees, max_degrees] (continuous).

    SSL4MIS draws integer degrees in [-20, 19]; a continuous angle is the same
    augmentation without the lattice. Shapes and interpolation as :func:`rotate`.
    Draws B floats.
    """
    _check_images(x)
    _check_generator(generator, x.device)
    if not max_degrees >= 0:
        raise ValueError(f"max_degrees must be >= 0, got {max_degrees}")
    u = _rand(x.shape[0], generator, x.device)
    return rotate(x, y, (2.0 * u - 1.0) * max_degrees, plane, image_mode)


def weak_augment(
    x: Tensor,
    y: Tensor | None,
    generator: torch.Generator,
    flip_prob: float = 0.5,
    rotate_prob: float = 0.5,
    max_degrees: float = 20.0,
    plane: tuple[int, int] | None = None,
    image_mode: Literal["bilinear", "nearest"] = "bilinear",
) -> tuple[Tensor, Tensor | None]:
    """SSL4MIS ``RandomGenerator`` on a whole batch: the labelled (and teacher-view) geometric pipeline.

    Per sample, independently: with probability ``flip_prob`` a
    :func:`random_flip_rotate`; otherwise, with probability ``rotate_prob``, a
    :func:`random_rotate`; otherwise unchanged. With the defaults a sample is
    reflected w.p. 1/2, rotated w.p. 1/4 and left alone w.p. 1/4. (SSL4MIS then
    zooms to the network size; here the batch already has it.)

    On an accelerator both branches are computed for the whole batch and selected
    per sample with ``torch.where`` (no host synchronisation); on the CPU only the
    selected samples are transformed. The result is the same either way and
    unselected samples are returned bit for bit. Draws 5 * B numbers per call
    whatever the outcome.

    Args / returns: as :func:`random_rotate`; ``y`` may be None (unlabelled stream).
    """
    spatial = _check_images(x)
    _check_labels(x, y)
    _check_generator(generator, x.device)
    for name, p in (("flip_prob", flip_prob), ("rotate_prob", rotate_prob)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {p}")
    b, dev = x.shape[0], x.device
    a0, a1 = _plane_axes(spatial, plane)
    u_flip = _rand(b, generator, dev)
    u_rot = _rand(b, generator, dev)
    k, axis = _draw_rot_flip(b, x.shape[a0] == x.shape[a1], generator, dev)
    angle = (2.0 * _rand(b, generator, dev) - 1.0) * max_degrees
    do_flip = u_flip < flip_prob  # (B,)
    do_rot = ~do_flip & (u_rot < rotate_prob)  # (B,)
    # Identity = (k 0, no flip) for the samples outside the flip branch.
    k = torch.where(do_flip, k, torch.zeros_like(k))
    axis = torch.where(do_flip, axis, torch.full_like(axis, -1))
    x1, y1 = flip_rotate(x, y, k, axis, plane)
    if x.device.type == "cpu":
        # Rotate only the selected samples (reading the selection is free on the CPU).
        ids = do_rot.nonzero().flatten()
        if ids.numel() == 0:
            return x1, y1
        xr, yr = rotate(
            x1.index_select(0, ids), None if y1 is None else y1.index_select(0, ids), angle[ids], plane, image_mode
        )
        xo = x1.index_copy(0, ids, xr)
        yo = None if y1 is None or yr is None else y1.index_copy(0, ids, yr)
        return xo, yo
    # Elsewhere rotate the whole batch and select per sample: no host synchronisation.
    xr, yr = rotate(x1, y1, torch.where(do_rot, angle, torch.zeros_like(angle)), plane, image_mode)
    xo = torch.where(_per_sample(do_rot, x1), xr, x1)
    yo = None
    if y1 is not None and yr is not None:
        yo = torch.where(_per_sample(do_rot, y1), yr, y1)
    return xo, yo


# --------------------------------------------------------------------------- crops


def _pad_to(t: Tensor, size: Sequence[int], lead: int) -> Tensor:
    """Zero-pad the trailing spatial axes of ``t`` (after ``lead`` leading axes) up to ``size``, centred."""
    shape = t.shape[lead:]
    if all(s >= c for s, c in zip(shape, size)):
        return t
    pad: list[int] = []
    for s, c in reversed(list(zip(shape, size))):
        extra = max(c - s, 0)
        pad += [extra // 2, extra - extra // 2]
    return F.pad(t, pad)  # constant 0: background label, black image


def crop(x: Tensor, y: Tensor | None, offsets: Tensor, size: Sequence[int]) -> tuple[Tensor, Tensor | None]:
    """Per-sample crops ``x[b, :, o0:o0+s0, o1:o1+s1, ...]`` gathered with one advanced index.

    Args:
        x: images (B, C, *spatial); y: labels (B, *spatial) or None.
        offsets: (B, n_spatial) int, the crop's first index along each spatial axis;
            ``0 <= offsets[:, i] <= spatial[i] - size[i]``.
        size: the crop size, one int per spatial axis.
    Returns:
        ``x' (B, C, *size)``, ``y' (B, *size)`` or None.
    """
    spatial = _check_images(x)
    _check_labels(x, y)
    b = x.shape[0]
    size = tuple(int(s) for s in size)
    if len(size) != spatial or any(s <= 0 for s in size):
        raise ValueError(f"size must be {spatial} positive ints for x {tuple(x.shape)}, got {size}")
    if any(s > S for s, S in zip(size, x.shape[2:])):
        raise ValueError(f"crop size {size} is larger than the spatial shape {tuple(x.shape[2:])}")
    if offsets.shape != (b, spatial):
        raise ValueError(f"offsets must have shape ({b}, {spatial}), got {tuple(offsets.shape)}")
    offsets = offsets.to(x.device).long()
    bi = torch.arange(b, device=x.device).view(b, *([1] * spatial))
    index: list[Tensor] = [bi]
    for i, s in enumerate(size):
        r = offsets[:, i : i + 1] + torch.arange(s, device=x.device)  # (B, s)
        shape = [b] + [1] * spatial
        shape[i + 1] = s
        index.append(r.view(shape))
    xo = x.movedim(1, -1)[tuple(index)].movedim(-1, 1)  # B x C x *size
    yo = y[tuple(index)] if y is not None else None
    return xo.contiguous(), yo


def random_crop(
    x: Tensor | Sequence[Tensor],
    y: Tensor | Sequence[Tensor] | None,
    size: Sequence[int],
    generator: torch.Generator,
) -> tuple[Tensor, Tensor | None]:
    """Uniformly placed crops of ``size``, one offset per sample.

    Two input forms:
    - a batch ``x (B, C, *spatial)`` with ``y (B, *spatial)`` or None: one gather, no loop;
    - lists of differently sized volumes ``x[b] (C, *spatial_b)`` with ``y[b] (*spatial_b)``
      (the LA training volumes, cropped to 112 x 112 x 80): offsets for all volumes
      are drawn in one call, then each volume is sliced (a view) and the crops are
      stacked. This path reads the offsets on the host (a sync on CUDA).

    Every valid offset ``0..S - s`` is equally likely (UA-MT's ``randint(0, S - s)``
    never picks the last one). A volume smaller than ``size`` along an axis is first
    zero-padded, centred, to ``size`` there (UA-MT pads a few voxels more).
    Draws B * n_spatial floats. Returns ``x' (B, C, *size)``, ``y' (B, *size)`` or None.
    """
    size = tuple(int(s) for s in size)
    if isinstance(x, Tensor):
        spatial = _check_images(x)
        if y is not None and not isinstance(y, Tensor):
            raise ValueError("y must be a tensor (or None) when x is a tensor")
        _check_labels(x, y)
        _check_generator(generator, x.device)
        if len(size) != spatial:
            raise ValueError(f"size must have {spatial} entries for x {tuple(x.shape)}, got {size}")
        x = _pad_to(x, size, 2)
        y = _pad_to(y, size, 1) if y is not None else None
        room = torch.tensor([S - s + 1 for S, s in zip(x.shape[2:], size)], dtype=torch.float64)
        u = _rand((x.shape[0], spatial), generator, x.device).double()
        offsets = torch.floor(u * room.to(x.device)).long()  # u < 1 -> offset <= S - s
        return crop(x, y, offsets, size)

    xs = list(x)
    ys = None if y is None else list(y)
    if not xs:
        raise ValueError("random_crop got an empty list of volumes")
    if ys is not None and len(ys) != len(xs):
        raise ValueError(f"got {len(xs)} image volumes but {len(ys)} label volumes")
    _check_generator(generator, xs[0].device)
    u = _rand((len(xs), len(size)), generator, torch.device("cpu")).double()
    out_x: list[Tensor] = []
    out_y: list[Tensor] = []
    for b, xb in enumerate(xs):  # one slice per volume: views, no per-pixel work
        if xb.ndim != len(size) + 1:
            raise ValueError(f"volume {b} has shape {tuple(xb.shape)}, expected (C, *spatial) with {len(size)} "
                             f"spatial axes")
        yb = ys[b] if ys is not None else None
        if yb is not None and tuple(yb.shape) != tuple(xb.shape[1:]):
            raise ValueError(f"label {b} has shape {tuple(yb.shape)}, image {b} has {tuple(xb.shape)}")
        xb = _pad_to(xb, size, 1)
        yb = _pad_to(yb, size, 0) if yb is not None else None
        offs = [int(math.floor(float(u[b, i]) * (S - s + 1))) for i, (S, s) in enumerate(zip(xb.shape[1:], size))]
        sl = tuple(slice(o, o + s) for o, s in zip(offs, size))
        index = (slice(None), *sl)  # every channel, the crop window
        out_x.append(xb[index])
        if yb is not None:
            out_y.append(yb[sl])
    return torch.stack(out_x), (torch.stack(out_y) if ys is not None else None)


# --------------------------------------------------------------------------- CutMix / ClassMix


def random_derangement(n: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """A random single-cycle permutation of range(n): ``perm[i] != i`` for n > 1 ([0] for n = 1).

    Every sample gets a partner other than itself. Draws n floats.
    """
    order = torch.argsort(_rand(n, generator, device))  # a uniform random permutation
    perm = torch.empty_like(order)
    perm[order] = order.roll(-1)  # order[j] -> order[j + 1]: one cycle through all
    return perm


def mix_targets(t: Tensor, mask: Tensor, perm: Tensor) -> Tensor:
    """Mix a per-pixel target like the images: ``t[perm[i]]`` where ``mask[i]``, ``t[i]`` elsewhere.

    Args:
        t: (B, K, *spatial) (logits, probabilities, images) or (B, *spatial)
            (labels, confidences), any dtype.
        mask: (B, 1, *spatial) bool, from :func:`cutmix` / :func:`classmix`.
        perm: (B,) long partner indices.
    Returns:
        a tensor of ``t``'s shape and dtype.
    """
    if mask.dtype != torch.bool or mask.ndim < 3 or mask.shape[1] != 1:
        raise ValueError(f"mask must be bool (B, 1, *spatial), got {mask.dtype} {tuple(mask.shape)}")
    b, spatial = mask.shape[0], tuple(mask.shape[2:])
    if perm.shape != (b,):
        raise ValueError(f"perm must have shape ({b},), got {tuple(perm.shape)}")
    if t.ndim == mask.ndim and t.shape[0] == b and tuple(t.shape[2:]) == spatial:
        m = mask
    elif t.ndim == mask.ndim - 1 and t.shape[0] == b and tuple(t.shape[1:]) == spatial:
        m = mask[:, 0]
    else:
        raise ValueError(
            f"target shape {tuple(t.shape)} matches neither (B, K, *spatial) nor (B, *spatial) "
            f"for mask {tuple(mask.shape)}"
        )
    return torch.where(m, t[perm.to(t.device)], t)




def cutmix(
    x: Tensor,
    generator: torch.Generator,
    area: tuple[float, float] = (0.5, 0.5),
) -> tuple[Tensor, Tensor, Tensor]:
    """CutMix: paste one box per sample from a partner image.

    The box covers a fraction ``a ~ U[area]`` of the image; its side fractions
    are ``a ** t_i`` with ``t`` uniform on the simplex (each side in [a, 1] of its
    axis, e.g. 2D: at least half of each side for a = 0.5, like ReCo's box), sides
    rounded to whole pixels, and it is placed uniformly inside the image. Rounding
    moves the area fraction by at most ``sum_i 0.5 / S_i`` plus the product terms
    (2D: ``0.5 / H + 0.5 / W + 0.25 / (H W)``).

    Args:
        x: images (B, C, H, W) or (B, C, D, H, W).
        area: (lo, hi) box-area fraction range, 0 < lo <= hi <= 1; default ReCo's fixed 1/2.
    Returns:
        ``(mixed (like x), mask (B, 1, *spatial) bool, True inside the box = from the partner,
        perm (B,) long)``; use :func:`mix_targets` with the same mask and perm on the
        teacher's targets. A batch of one is mixed with itself (unchanged).
    Draws B * (2 + 2 * n_spatial) floats (area, shape, placement, partner).
    """
    spatial = _check_images(x)
    _check_generator(generator, x.device)
    lo, hi = float(area[0]), float(area[1])
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"area must satisfy 0 < lo <= hi <= 1, got {area}")
    b, dev = x.shape[0], x.device
    sizes = x.shape[2:]
    a = lo + (hi - lo) * _rand(b, generator, dev).double()  # (B,)
    e = -torch.log1p(-_rand((b, spatial), generator, dev).double())  # exponential draws
    t = e / e.sum(1, keepdim=True).clamp_min(1e-12)  # (B, n): uniform on the simplex
    frac = a[:, None] ** t  # (B, n), product = a
    extent = torch.tensor(list(sizes), dtype=torch.float64, device=dev)
    side = torch.round(frac * extent).clamp(min=1.0)
    side = torch.minimum(side, extent)  # (B, n) whole pixels
    start = torch.floor(_rand((b, spatial), generator, dev).double() * (extent - side + 1.0))
    mask = torch.ones((b, 1, *sizes), dtype=torch.bool, device=dev)
    for i, s in enumerate(sizes):
        coord = torch.arange(s, device=dev, dtype=torch.float64)
        inside = (coord >= start[:, i : i + 1]) & (coord < start[:, i : i + 1] + side[:, i : i + 1])  # (B, s)
        shape = [b, 1] + [1] * spatial
        shape[2 + i] = s
        mask = mask & inside.view(shape)
    perm = random_derangement(b, generator, dev)
    return mix_targets(x, mask, perm), mask, perm


def classmix(
    x: Tensor,
    labels: Tensor,
    generator: torch.Generator,
    num_classes: int | None = None,
    rounding: Literal["floor", "ceil"] = "floor",
) -> tuple[Tensor, Tensor, Tensor]:
    """ClassMix: paste the pixels of half of a partner's classes onto each image.

    For each source image j, a random ``floor(n_j / 2)`` (or ``ceil``) of the
    ``n_j`` classes present in ``labels[j]`` are chosen; output ``i`` takes the
    pixels of ``x[perm[i]]`` whose label is a chosen class of ``perm[i]``, and keeps
    ``x[i]`` elsewhere. With ``floor`` an image whose (pseudo-)label map has a
    single class pastes nothing.

    Args:
        x: images (B, C, *spatial).
        labels: (B, *spatial) integer (pseudo-)labels in [0, num_classes).
        num_classes: K; None reads ``labels.max() + 1`` (one host sync; pass K on ``meta``).
        rounding: "floor" (ReCo) or "ceil" (the ClassMix paper's code).
    Returns:
        ``(mixed, mask (B, 1, *spatial) bool, perm (B,) long)``, as :func:`cutmix`.
    Draws B * K + B floats.
    """
    _check_images(x)
    _check_labels(x, labels, "labels")
    _check_generator(generator, x.device)
    if rounding not in ("floor", "ceil"):
        raise ValueError(f"rounding must be 'floor' or 'ceil', got {rounding!r}")
    b, dev = x.shape[0], x.device
    k = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    if k < 1:
        raise ValueError(f"num_classes must be >= 1, got {k}")
    flat = labels.reshape(b, -1).long()  # (B, N)
    present = torch.zeros((b, k), dtype=torch.bool, device=dev).scatter_(1, flat, True)  # (B, K)
    n = present.sum(1)  # (B,)
    n_pick = n // 2 if rounding == "floor" else (n + 1) // 2
    scores = torch.where(present, _rand((b, k), generator, dev), torch.full((b, k), 2.0, device=dev))
    rank = scores.argsort(1).argsort(1)  # present classes get ranks 0..n-1 in random order
    chosen = present & (rank < n_pick[:, None])  # (B, K)
    perm = random_derangement(b, generator, dev)
    mask = chosen[perm].gather(1, flat[perm]).view(b, 1, *x.shape[2:])  # (B, 1, *spatial)
    return mix_targets(x, mask, perm), mask, perm


# --------------------------------------------------------------------------- intensity: jitter and blur


def colour_jitter(
    x: Tensor,
    generator: torch.Generator,
    brightness: float = 0.25,
    contrast: float = 0.25,
    gamma: float = 0.0,
    p: float = 0.8,
    clip: Clip = "input",
) -> Tensor:
    """Per-sample brightness, contrast and (optional) gamma jitter for grayscale images.

    With probability ``p`` per sample (ReCo: 0.8), in this order:
    brightness ``x * f_b``, ``f_b ~ U[1 - brightness, 1 + brightness]``;
    contrast ``x * f_c + mean * (1 - f_c)`` (mean over the sample after brightness,
    as torchvision), ``f_c ~ U[1 - contrast, 1 + contrast]``;
    then values are clipped (see ``clip``); then, if ``gamma > 0``, a gamma curve
    ``lo + (hi - lo) * ((v - lo) / (hi - lo)) ** g`` with ``log g ~ U[-log(1 + gamma), log(1 + gamma)]``
    over the clip range [lo, hi].

    ``clip``: "input" (default) clips each sample to its own [min, max] before
    jitter, so [0, 1]-normalised MR stays in [0, 1] and z-scored volumes keep
    their range; a ``(lo, hi)`` pair clips every sample to that range
    (torchvision's (0, 1)); None does not clip (gamma then uses the jittered
    sample's own [min, max]).

    Zero strengths (or ``p = 0``) return ``x`` bit for bit. Shape (B, C, *spatial)
    and dtype are kept; statistics are over all of a sample's channels and pixels.
    Draws 4 * B floats.
    """
    _check_images(x)
    _check_generator(generator, x.device)
    for name, v in (("brightness", brightness), ("contrast", contrast), ("gamma", gamma)):
        if not 0.0 <= v:
            raise ValueError(f"{name} must be >= 0, got {v}")
    if brightness > 1.0 or contrast > 1.0:
        raise ValueError(f"brightness and contrast must be <= 1 (factors stay >= 0), got {brightness}, {contrast}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    b, dev = x.shape[0], x.device
    dims = tuple(range(1, x.ndim))
    u = _rand((4, b), generator, dev).to(x.dtype)
    apply = u[0] < p
    one = torch.ones_like(u[0])
    f_b = torch.where(apply, 1.0 + brightness * (2.0 * u[1] - 1.0), one)
    f_c = torch.where(apply, 1.0 + contrast * (2.0 * u[2] - 1.0), one)
    lo: Tensor | float | None = None
    hi: Tensor | float | None = None
    if clip == "input":
        lo, hi = x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
    elif clip is not None:
        if len(clip) != 2 or not float(clip[0]) < float(clip[1]):
            raise ValueError(f"clip must be 'input', None or (lo, hi) with lo < hi, got {clip!r}")
        lo, hi = float(clip[0]), float(clip[1])
    out = x * _per_sample(f_b, x)
    c = _per_sample(f_c, x)
    out = out * c + out.mean(dim=dims, keepdim=True) * (1.0 - c)
    if isinstance(lo, Tensor) and isinstance(hi, Tensor):
        out = torch.minimum(torch.maximum(out, lo), hi)
    elif isinstance(lo, float) and isinstance(hi, float):
        out = out.clamp(lo, hi)
    if gamma > 0.0:
        if lo is None or hi is None:
            lo, hi = out.amin(dim=dims, keepdim=True), out.amax(dim=dims, keepdim=True)
        g = torch.exp(math.log1p(gamma) * (2.0 * u[3] - 1.0))
        span = hi - lo
        span = span.clamp_min(torch.finfo(x.dtype).tiny) if isinstance(span, Tensor) else span
        curved = lo + span * ((out - lo) / span).clamp(0.0, 1.0) ** _per_sample(g, x)
        out = torch.where(_per_sample(apply, x), curved, out)
    return out


def gaussian_kernels(sigmas: Tensor, radius: int) -> Tensor:
    """Normalised 1D Gaussian kernels, one per sigma: (B,) -> (B, 2 * radius + 1).

    ``w_b(t) = exp(-t^2 / (2 sigma_b^2)) / sum_{|s| <= radius} exp(-s^2 / (2 sigma_b^2))``;
    ``sigma_b = 0`` gives the identity (a unit impulse at the centre).
    """
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    t = torch.arange(-radius, radius + 1, device=sigmas.device, dtype=sigmas.dtype)  # (k,)
    s = sigmas[:, None]
    w = torch.exp(-(t**2) / (2.0 * s.clamp_min(1e-12) ** 2))  # (B, k)
    w = torch.where(s > 0, w, (t == 0).to(w.dtype).expand_as(w))
    return w / w.sum(1, keepdim=True)


def blur(x: Tensor, sigmas: Tensor, radius: int | None = None, truncate: float = 3.0) -> Tensor:
    """Gaussian blur with a per-sample sigma, as separable depthwise (grouped) convolutions.

    The batch is folded into channels, ``(B, C, *S) -> (1, B * C, *S)``, so each
    (sample, channel) gets its own kernel in one grouped conv per spatial axis.
    Borders replicate the edge pixel (a constant image stays constant).

    Args:
        x: images (B, C, H, W) or (B, C, D, H, W); 3D volumes are blurred along all three axes.
        sigmas: (B,) standard deviations in pixels; 0 = unchanged.
        radius: kernel half-width; default ``ceil(truncate * max(sigmas))`` (one host read).
    Returns:
        a tensor like ``x``.
    """
    spatial = _check_images(x)
    b, c = x.shape[:2]
    if sigmas.shape != (b,):
        raise ValueError(f"sigmas must have shape ({b},), got {tuple(sigmas.shape)}")
    if radius is None:
        radius = int(math.ceil(truncate * float(sigmas.max()))) if x.device.type != "meta" else 3
    w = gaussian_kernels(sigmas.to(device=x.device, dtype=x.dtype), radius)  # (B, k)
    if radius == 0:
        return x.clone()
    k = 2 * radius + 1
    w = w.repeat_interleave(c, dim=0)  # (B*C, k): row b*C + j for channel j of sample b
    folded = x.reshape(1, b * c, *x.shape[2:])
    out = F.pad(folded, [radius] * (2 * spatial), mode="replicate")
    conv = F.conv2d if spatial == 2 else F.conv3d
    for axis in range(spatial):
        shape = [b * c, 1] + [1] * spatial
        shape[2 + axis] = k
        out = conv(out, w.view(shape), groups=b * c)
    return out.view(x.shape)


def gaussian_blur(
    x: Tensor,
    generator: torch.Generator,
    sigma: tuple[float, float] = (0.15, 1.15),
    p: float = 0.5,
    truncate: float = 3.0,
) -> Tensor:
    """Blur each sample with probability ``p`` with its own ``sigma ~ U[sigma]`` (ReCo: p 0.5, [0.15, 1.15]).

    The kernel half-width is ``ceil(truncate * sigma[1])`` for the whole batch (no
    host read); on an accelerator unblurred samples go through an identity kernel,
    on the CPU they are skipped (same result). Shapes as :func:`blur`.
    Draws 2 * B floats.
    """
    _check_images(x)
    _check_generator(generator, x.device)
    lo, hi = float(sigma[0]), float(sigma[1])
    if not 0.0 <= lo <= hi:
        raise ValueError(f"sigma must satisfy 0 <= lo <= hi, got {sigma}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    b, dev = x.shape[0], x.device
    u = _rand((2, b), generator, dev)
    chosen = u[0] < p  # (B,)
    s = torch.where(chosen, lo + (hi - lo) * u[1], torch.zeros_like(u[1]))
    radius = int(math.ceil(truncate * hi))
    if dev.type == "cpu":  # blur only the chosen samples (reading the choice is free on the CPU)
        ids = chosen.nonzero().flatten()
        if ids.numel() == 0:
            return x.clone()
        return x.index_copy(0, ids, blur(x.index_select(0, ids), s[ids], radius=radius))
    return blur(x, s, radius=radius)


def strong_augment(
    x: Tensor,
    generator: torch.Generator,
    brightness: float = 0.25,
    contrast: float = 0.25,
    gamma: float = 0.0,
    jitter_p: float = 0.8,
    clip: Clip = "input",
    sigma: tuple[float, float] = (0.15, 1.15),
    blur_p: float = 0.5,
) -> Tensor:
    """The photometric half of the unlabelled student view: :func:`colour_jitter` then :func:`gaussian_blur`.

    CutMix / ClassMix are applied separately by the engine (they need the
    teacher's targets, mixed with :func:`mix_targets`). Shape and dtype of ``x``
    are kept. Draws 6 * B floats.
    """
    out = colour_jitter(x, generator, brightness, contrast, gamma, jitter_p, clip)
    return gaussian_blur(out, generator, sigma, blur_p)
