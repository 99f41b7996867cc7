"""Tests of actionpp.augment: expected values from numpy, scipy or hand calculation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from actionpp import augment as A


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def label_batch(b: int = 6, h: int = 12, w: int = 12, k: int = 4, seed: int = 0) -> torch.Tensor:
    """Blocky label maps (B, H, W) with every class present."""
    g = gen(seed)
    y = torch.randint(0, k, (b, h // 3, w // 3), generator=g)
    y = y.repeat_interleave(3, 1).repeat_interleave(3, 2)
    y[:, 0, :k] = torch.arange(k)  # make sure all k classes occur
    return y


# ----------------------------------------------------------------------------- rot90 / flip


@pytest.mark.parametrize("k", [0, 1, 2, 3])
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_flip_rotate_equals_numpy(k: int, axis: int) -> None:
    x = torch.arange(2 * 3 * 16, dtype=torch.float32).view(2, 3, 4, 4)
    y = torch.arange(2 * 16).view(2, 4, 4)
    xo, yo = A.flip_rotate(x, y, torch.full((2,), k), torch.full((2,), axis))
    for b in range(2):
        ry = np.rot90(y[b].numpy(), k)
        ry = ry if axis < 0 else np.flip(ry, axis)
        assert np.array_equal(yo[b].numpy(), ry)
        for c in range(3):
            rx = np.rot90(x[b, c].numpy(), k)
            rx = rx if axis < 0 else np.flip(rx, axis)
            assert np.array_equal(xo[b, c].numpy(), rx)


def test_flip_rotate_per_sample_and_3d_plane() -> None:
    vol = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 1, 3, 4, 4)  # B C D H W
    lab = vol[:, 0].long()
    k, a = torch.tensor([1, 2]), torch.tensor([0, -1])
    xo, yo = A.flip_rotate(vol, lab, k, a)
    assert np.array_equal(xo[0, 0].numpy(), np.flip(np.rot90(vol[0, 0].numpy(), 1, axes=(1, 2)), 1))
    assert np.array_equal(xo[1, 0].numpy(), np.rot90(vol[1, 0].numpy(), 2, axes=(1, 2)))
    assert torch.equal(yo, xo[:, 0].long())
    # plane=(0, 1): UA-MT's (X, Y) plane of an (X, Y, Z) volume
    xp, _ = A.flip_rotate(vol[:, :, :, :, :3], None, torch.tensor([2, 0]), torch.tensor([1, 0]), plane=(0, 1))
    ref0 = np.flip(np.rot90(vol[0, 0, :, :, :3].numpy(), 2, axes=(0, 1)), 1)
    assert np.array_equal(xp[0, 0].numpy(), ref0)


def test_random_flip_rotate_is_a_reflection_and_label_follows() -> None:
    y = torch.tensor([[0, 1], [2, 3]]).repeat(64, 1, 1)
    x = y[:, None].float()
    xo, yo = A.random_flip_rotate(x, y, gen(3))
    assert torch.equal(xo[:, 0].round().long(), yo)
    seen = {tuple(t.flatten().tolist()) for t in yo}
    # hand-listed: flip rows, flip columns, transpose, anti-transpose; never identity or rotation
    assert seen == {(2, 3, 0, 1), (1, 0, 3, 2), (0, 2, 1, 3), (3, 1, 2, 0)}


def test_non_square_plane_keeps_shape_and_rejects_odd_k() -> None:
    x = torch.rand(8, 1, 4, 6)
    xo, _ = A.random_flip_rotate(x, None, gen(0))
    assert xo.shape == x.shape
    with pytest.raises(ValueError, match="square"):
        A.flip_rotate(x, None, torch.ones(8, dtype=torch.long), torch.zeros(8, dtype=torch.long))


# ----------------------------------------------------------------------------- rotation


def test_rotate_90_degrees_equals_rot90() -> None:
    x = torch.arange(25, dtype=torch.float32).view(1, 1, 5, 5)
    y = torch.arange(25).view(1, 5, 5)
    xo, yo = A.rotate(x, y, torch.tensor([90.0]), image_mode="nearest")
    assert np.array_equal(xo[0, 0].numpy(), np.rot90(x[0, 0].numpy(), 1))
    assert np.array_equal(yo[0].numpy(), np.rot90(y[0].numpy(), 1))
    # 3D: every slice turns in the plane; plane=(0, 1) turns an (X, Y, Z) volume in (X, Y)
    v = torch.arange(3 * 5 * 5, dtype=torch.float32).view(1, 1, 3, 5, 5)
    vo, _ = A.rotate(v, v[:, 0].long(), torch.tensor([90.0]), image_mode="nearest")
    assert np.array_equal(vo[0, 0].numpy(), np.rot90(v[0, 0].numpy(), 1, axes=(1, 2)))
    w = v.permute(0, 1, 3, 4, 2)  # (1, 1, 5, 5, 3)
    wo, _ = A.rotate(w, None, torch.tensor([90.0]), plane=(0, 1), image_mode="nearest")
    assert np.array_equal(wo[0, 0].numpy(), np.rot90(w[0, 0].numpy(), 1, axes=(0, 1)))
    # bilinear agrees at exact quarter turns too (sample points land on pixel centres)
    xb, _ = A.rotate(x, None, torch.tensor([-90.0]))
    torch.testing.assert_close(xb[0, 0], torch.from_numpy(np.rot90(x[0, 0].numpy(), -1).copy()), atol=1e-4, rtol=0)


def test_rotate_matches_scipy_order0_on_most_pixels() -> None:
    rng = np.random.default_rng(0)
    img = rng.random((64, 48)).astype(np.float32)
    for angle in (30.0, -17.0):
        ref = ndimage.rotate(img, angle, order=0, reshape=False)  # SSL4MIS's call
        out, _ = A.rotate(torch.from_numpy(img)[None, None], None, torch.tensor([angle]), image_mode="nearest")
        # same sense and centre: only rounding ties on the lattice differ
        assert (out[0, 0].numpy() == ref).mean() > 0.97


def test_random_rotate_label_follows_image_exactly() -> None:
    y = label_batch(6, 24, 24)
    x = y[:, None].float()
    xo, yo = A.random_rotate(x, y, gen(1), max_degrees=45, image_mode="nearest")
    assert yo.dtype == y.dtype
    assert torch.equal(xo[:, 0].round().long(), yo)
    assert not torch.equal(yo, y)
    # corners rotated in from outside are background 0 (hand: a 45-degree turn empties the corner)
    y1 = torch.ones(1, 24, 24, dtype=torch.long)
    _, yr = A.rotate(y1[:, None].float(), y1, torch.tensor([45.0]))
    assert yr[0, 0, 0] == 0 and yr[0, 12, 12] == 1


def test_weak_augment_branch_probabilities_and_reproducibility() -> None:
    # Every sample is an asymmetric 3x3 pattern; classify what happened to it.
    base = torch.tensor([[1, 2, 0], [0, 3, 0], [0, 0, 0]])
    y = base.repeat(4000, 1, 1)
    xo, yo = A.weak_augment(y[:, None].float(), y, gen(5), image_mode="nearest")
    assert torch.equal(xo[:, 0].round().long(), yo)
    same = (yo == y).flatten(1).all(1)
    reflections = [np.flip(base.numpy(), 0), np.flip(base.numpy(), 1), base.numpy().T, np.rot90(base.numpy(), 2).T]
    refl = torch.zeros(4000, dtype=torch.bool)
    for r in reflections:
        refl |= (yo == torch.from_numpy(r.copy())).flatten(1).all(1)
    # SSL4MIS: P(reflection) = 1/2; P(rotate) = 1/4 (a rotation by < 20 degrees of a 3x3 with
    # nearest sampling may leave it unchanged), so P(unchanged) >= 1/4.
    assert abs(refl.float().mean().item() - 0.5) < 0.04
    assert same.float().mean().item() >= 0.25 - 0.04
    xa, ya = A.weak_augment(y[:8, None].float(), y[:8], gen(7))
    xb, yb = A.weak_augment(y[:8, None].float(), y[:8], gen(7))
    assert torch.equal(xa, xb) and torch.equal(ya, yb)


# ----------------------------------------------------------------------------- crops


def test_random_crop_matches_slicing_and_covers_all_offsets() -> None:
    x = torch.arange(3 * 2 * 6 * 5, dtype=torch.float32).view(3, 2, 6, 5)
    y = torch.arange(3 * 6 * 5).view(3, 6, 5)
    offsets = torch.tensor([[0, 0], [2, 1], [3, 2]])
    xo, yo = A.crop(x, y, offsets, (3, 3))
    for b, (i, j) in enumerate(offsets.tolist()):
        assert torch.equal(xo[b], x[b, :, i : i + 3, j : j + 3])
        assert torch.equal(yo[b], y[b, i : i + 3, j : j + 3])
    # the top-left value encodes the offset; all 4 x 3 offsets appear, none outside
    many = torch.arange(6 * 5).view(1, 1, 6, 5).float().repeat(400, 1, 1, 1)
    xr, _ = A.random_crop(many, None, (3, 3), gen(2))
    tl = {int(v) for v in xr[:, 0, 0, 0]}
    assert tl == {5 * i + j for i in range(4) for j in range(3)}


def test_random_crop_list_of_volumes_and_padding() -> None:
    vols = [torch.rand(1, 10, 9, 8), torch.rand(1, 7, 12, 6)]
    labs = [(v[0] > 0.5).long() for v in vols]
    xo, yo = A.random_crop(vols, labs, (6, 6, 7), gen(0))
    assert xo.shape == (2, 1, 6, 6, 7) and yo.shape == (2, 6, 6, 7)
    assert torch.equal(yo, (xo[:, 0] > 0.5).long())  # label crop aligned with image crop
    # second volume has Z = 6 < 7: zero-padded (centred: 0 before, 1 after) to 7
    assert torch.all(xo[1, 0, :, :, -1] == 0)
    small = torch.ones(2, 1, 3, 3)
    xs, _ = A.random_crop(small, None, (5, 5), gen(0))
    assert xs.shape == (2, 1, 5, 5) and xs.sum().item() == 2 * 9


# ----------------------------------------------------------------------------- CutMix / ClassMix


@pytest.mark.parametrize("area", [(0.5, 0.5), (0.25, 0.5)])
def test_cutmix_box_area_and_mix_targets(area: tuple[float, float]) -> None:
    b, h, w = 16, 40, 30
    x = torch.rand(b, 2, h, w)
    mixed, mask, perm = A.cutmix(x, gen(4), area=area)
    assert mask.shape == (b, 1, h, w) and mask.dtype == torch.bool
    frac = mask.float().mean((1, 2, 3))
    tol = 0.5 / h + 0.5 / w + 0.25 / (h * w)  # rounding of the two sides (see docstring)
    assert torch.all(frac >= area[0] - tol) and torch.all(frac <= area[1] + tol)
    for i in range(b):  # the mask is one axis-aligned box: rows x columns
        rows, cols = mask[i, 0].any(1), mask[i, 0].any(0)
        assert mask[i, 0].sum() == rows.sum() * cols.sum()
    assert torch.all(perm != torch.arange(b)) and sorted(perm.tolist()) == list(range(b))
    assert torch.equal(A.mix_targets(x, mask, perm), mixed)
    assert torch.equal(mixed[0][:, mask[0, 0]], x[perm[0]][:, mask[0, 0]])
    assert torch.equal(mixed[0][:, ~mask[0, 0]], x[0][:, ~mask[0, 0]])
    # labels (B, H, W) are mixed with the same mask
    lab = torch.arange(b).view(b, 1, 1).expand(b, h, w)
    ml = A.mix_targets(lab, mask, perm)
    assert torch.equal(ml, torch.where(mask[:, 0], perm.view(b, 1, 1), lab))


def test_cutmix_3d_box() -> None:
    x = torch.rand(4, 1, 8, 10, 12)
    _, mask, _ = A.cutmix(x, gen(0), area=(0.3, 0.3))
    frac = mask.float().mean((1, 2, 3, 4))
    assert torch.all((frac - 0.3).abs() < 0.5 / 8 + 0.5 / 10 + 0.5 / 12 + 0.01)


def test_classmix_pastes_exactly_the_chosen_classes() -> None:
    y = label_batch(6, 12, 12, k=4)
    y[5] = 2  # one image with a single class: floor(1 / 2) = 0 classes pasted from it
    x = torch.rand(6, 1, 12, 12)
    mixed, mask, perm = A.classmix(x, y, gen(1), num_classes=4)
    for i in range(6):
        s = int(perm[i])
        assert s != i
        chosen = torch.unique(y[s][mask[i, 0]])
        n = len(torch.unique(y[s]))
        assert len(chosen) == n // 2
        assert torch.equal(mask[i, 0], torch.isin(y[s], chosen))  # whole classes, nothing else
        assert torch.equal(mixed[i], torch.where(mask[i], x[s], x[i]))
    assert torch.equal(A.mix_targets(y, mask, perm)[mask[:, 0]], y[perm][mask[:, 0]])
    _, mask_c, perm_c = A.classmix(x, y, gen(1), num_classes=4, rounding="ceil")
    i5 = int((perm_c == 5).nonzero()[0])  # the single-class image now pastes its one class
    assert bool(mask_c[i5].all())


# ----------------------------------------------------------------------------- jitter and blur


def test_colour_jitter_identity_range_and_dtype() -> None:
    x = torch.rand(5, 1, 16, 16, dtype=torch.float64)
    assert torch.equal(A.colour_jitter(x, gen(0), brightness=0.0, contrast=0.0, p=1.0), x)
    out = A.colour_jitter(x, gen(0), brightness=0.5, contrast=0.5, gamma=0.5, p=1.0)
    assert out.dtype == x.dtype and out.shape == x.shape
    assert not torch.equal(out, x)
    lo, hi = x.amin((1, 2, 3)), x.amax((1, 2, 3))
    assert torch.all(out.amin((1, 2, 3)) >= lo) and torch.all(out.amax((1, 2, 3)) <= hi)
    # brightness only (contrast 0, no clip): each sample scaled by one factor in [0.5, 1.5]
    ob = A.colour_jitter(x, gen(2), brightness=0.5, contrast=0.0, p=1.0, clip=None)
    f = ob / x
    torch.testing.assert_close(f, f[:, :1, :1, :1].expand_as(f))
    assert torch.all((f[:, 0, 0, 0] >= 0.5) & (f[:, 0, 0, 0] <= 1.5))
    # contrast only keeps each sample's mean (x * c + mean * (1 - c))
    oc = A.colour_jitter(x, gen(2), brightness=0.0, contrast=0.5, p=1.0, clip=None)
    torch.testing.assert_close(oc.mean((1, 2, 3)), x.mean((1, 2, 3)))


def test_gaussian_kernel_closed_form_and_scipy() -> None:
    img = torch.zeros(1, 1, 15, 15, dtype=torch.float64)
    img[0, 0, 7, 7] = 1.0
    out = A.blur(img, torch.tensor([1.0], dtype=torch.float64))  # radius ceil(3 * 1) = 3
    g = np.exp(-np.arange(-3, 4) ** 2 / 2.0)
    g /= g.sum()
    expected = np.zeros((15, 15))
    expected[4:11, 4:11] = np.outer(g, g)
    np.testing.assert_allclose(out[0, 0].numpy(), expected, atol=1e-12)
    rng = np.random.default_rng(0)
    a = rng.random((20, 17))
    ref = ndimage.gaussian_filter(a, 1.0, mode="nearest", truncate=3.0)
    mine = A.blur(torch.from_numpy(a)[None, None], torch.tensor([1.0], dtype=torch.float64))
    np.testing.assert_allclose(mine[0, 0].numpy(), ref, atol=1e-12)


def test_gaussian_blur_constant_image_shape_and_per_sample() -> None:
    x = torch.full((4, 2, 9, 11), 0.7)
    out = A.gaussian_blur(x, gen(0), p=1.0)
    assert out.shape == x.shape
    torch.testing.assert_close(out, x)
    x3 = torch.full((2, 1, 5, 6, 7), -1.5)
    torch.testing.assert_close(A.gaussian_blur(x3, gen(0), p=1.0), x3)
    # per-sample sigma: sigma 0 leaves sample 0 alone, sample 1 is smoothed
    r = torch.rand(2, 1, 16, 16, dtype=torch.float64)
    out2 = A.blur(r, torch.tensor([0.0, 1.5], dtype=torch.float64))
    torch.testing.assert_close(out2[0], r[0])
    assert out2[1].std() < r[1].std()


def test_strong_augment_reproducible_and_keeps_shape() -> None:
    x = torch.rand(4, 1, 32, 32)
    a, b, c = (A.strong_augment(x, gen(s)) for s in (11, 11, 12))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


# ----------------------------------------------------------------------------- generators, devices, errors


def test_same_seed_same_output_different_seed_different() -> None:
    y = label_batch(8, 24, 24)
    x = torch.rand(8, 1, 24, 24)
    calls = [
        lambda g: A.random_flip_rotate(x, y, g),
        lambda g: A.random_rotate(x, y, g),
        lambda g: A.weak_augment(x, y, g),
        lambda g: A.random_crop(x, y, (16, 16), g),
        lambda g: A.cutmix(x, g),
        lambda g: A.classmix(x, y, g, num_classes=4),
        lambda g: (A.colour_jitter(x, g),),
        lambda g: (A.gaussian_blur(x, g),),
    ]
    for f in calls:
        o1, o2, o3 = f(gen(21)), f(gen(21)), f(gen(22))
        assert all(torch.equal(a, b) for a, b in zip(o1, o2) if a is not None)
        assert any(not torch.equal(a, c) for a, c in zip(o1, o3) if a is not None)


def test_everything_runs_on_meta_device() -> None:
    dev = torch.device("meta")
    x = torch.empty(4, 1, 16, 16, device=dev)
    y = torch.empty(4, 16, 16, dtype=torch.long, device=dev)
    g = gen(0)
    outs = [
        *A.weak_augment(x, y, g),
        *A.random_crop(x, y, (8, 8), g),
        *A.cutmix(x, g),
        *A.classmix(x, y, g, num_classes=4),
        A.strong_augment(x, g),
    ]
    assert all(o is not None and o.device == dev for o in outs)
    x3 = torch.empty(2, 1, 4, 8, 8, device=dev)
    assert A.strong_augment(x3, g).shape == x3.shape


def test_bad_inputs_raise_clear_errors() -> None:
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match=r"\(2, 8, 8\)"):
        A.weak_augment(x, torch.zeros(2, 8, 7, dtype=torch.long), gen())
    with pytest.raises(ValueError, match="torch.Generator"):
        A.cutmix(x, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="area"):
        A.cutmix(x, gen(), area=(0.6, 0.4))
    with pytest.raises(ValueError, match=r"\(2, 8\)"):
        A.random_crop(torch.rand(2, 8), None, (4,), gen())
    with pytest.raises(ValueError, match="floating"):
        A.colour_jitter(torch.zeros(2, 1, 4, 4, dtype=torch.long), gen())
    with pytest.raises(ValueError, match="neither"):
        A.mix_targets(torch.rand(2, 3, 8), torch.zeros(2, 1, 8, 8, dtype=torch.bool), torch.tensor([1, 0]))


@pytest.mark.gpu
def test_cuda_generator_on_cuda_matches_shapes() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)
    y = label_batch(4, 32, 32).to(dev)
    x = y[:, None].float()
    xo, yo = A.weak_augment(x, y, g, image_mode="nearest")
    assert xo.device.type == "cuda" and torch.equal(xo[:, 0].round().long(), yo)
    # a CPU generator gives the same random parameters on every device
    xc, yc = A.weak_augment(x.cpu(), y.cpu(), gen(3), image_mode="nearest")
    xg, yg = A.weak_augment(x, y, gen(3), image_mode="nearest")
    assert torch.equal(yc, yg.cpu())
    assert math.isfinite(float(A.strong_augment(x, g).sum()))


def test_cpu_and_accelerator_code_paths_agree() -> None:
    """The CPU takes grouped / subset shortcuts; the gather / full-batch path (used on CUDA) must match."""
    codes = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 4, 0])
    for t in (torch.rand(14, 2, 5, 5), torch.randint(0, 9, (14, 3, 5, 5))):
        assert torch.equal(A._grouped_plane(t, codes), A._gather_plane(t, codes))
    x = torch.rand(8, 1, 20, 20, dtype=torch.float64)
    u = torch.rand((2, 8), generator=gen(9), dtype=torch.float32)  # gaussian_blur's two draws
    sig = torch.where(u[0] < 0.5, 0.15 + 1.0 * u[1], torch.zeros(8)).double()
    full = A.blur(x, sig, radius=4)  # every sample through the grouped conv, identity kernels included
    torch.testing.assert_close(A.gaussian_blur(x, gen(9)), full, atol=1e-12, rtol=0)


def test_bench_writes_only_its_own_section(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "bench_augment.py"
    spec = importlib.util.spec_from_file_location("bench_augment", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    doc = tmp_path / "benchmarks.md"
    bench.write_section("first", doc)  # creates the file
    assert bench.START + "\nfirst\n" + bench.END in doc.read_text()
    doc.write_text("# B\n\n<!-- other:start -->\nkeep me\n<!-- other:end "
                   "-->\n\n" + doc.read_text().split("\n\n", 2)[-1])
    bench.write_section("second", doc)
    text = doc.read_text()
    assert "keep me" in text and "second" in text and "first" not in text
    assert text.count(bench.START) == 1
