"""Backbones, heads and the EMA teacher: parameter counts, shapes, dense == sampled head, EMA closed form."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from actionpp.models import (
    EMATeacher,
    GlobalHead,
    LocalHead,
    ProjectionMLP,
    RepresentationHead,
    UNet2D,
    VNet3D,
    count_parameters,
    ema_update,
    warmup_momentum,
)

# ---------------------------------------------------------------- parameter counts


def _conv(ci: int, co: int, k: int, nd: int) -> int:
    return ci * co * k**nd + co


def test_unet_parameter_count_matches_ssl4mis_and_the_layer_by_layer_sum():
    c = [16, 32, 64, 128, 256]

    def block(ci: int, co: int) -> int:  # conv-BN-conv-BN (BN: weight + bias)
        return _conv(ci, co, 3, 2) + 2 * co + _conv(co, co, 3, 2) + 2 * co

    enc = block(1, 16) + sum(block(c[i - 1], c[i]) for i in range(1, 5))
    dec = sum(_conv(c[i], c[i - 1], 1, 2) + block(2 * c[i - 1], c[i - 1]) for i in range(4, 0, -1))
    out = _conv(16, 4, 3, 2)
    assert enc + dec + out == 1_813_764  # the number method.md quotes for the SSL4MIS U-Net
    assert count_parameters(UNet2D(1, 4)) == 1_813_764
    # the transposed-convolution variant is a different network (2x2 transposed conv instead of 1x1 conv)
    transpose = enc + out + sum(c[i] * c[i - 1] * 4 + c[i - 1] + block(2 * c[i - 1], c[i - 1]) for i in range(4, 0, -1))
    assert count_parameters(UNet2D(1, 4, upsampling="transpose")) == transpose == 1_944_324


def test_vnet_parameter_count_matches_the_layer_by_layer_sum():
    w = [16, 32, 64, 128, 256]

    def stage(n: int, ci: int, co: int) -> int:
        return sum(_conv(ci if i == 0 else co, co, 3, 3) + 2 * co for i in range(n))

    enc = stage(1, 1, 16) + stage(2, 32, 32) + stage(3, 64, 64) + stage(3, 128, 128) + stage(3, 256, 256)
    down = sum(_conv(w[i], w[i + 1], 2, 3) + 2 * w[i + 1] for i in range(4))
    up = sum(_conv(w[i], w[i - 1], 2, 3) + 2 * w[i - 1] for i in range(4, 0, -1))
    dec = stage(3, 128, 128) + stage(3, 64, 64) + stage(2, 32, 32) + stage(1, 16, 16)
    total = enc + down + up + dec + _conv(16, 2, 1, 3)
    assert total == 9_448_866  # "~9.45 M" in method.md
    assert count_parameters(VNet3D(1, 2)) == total


# ---------------------------------------------------------------- shapes and features


def test_unet_shapes_and_feature_maps_coarse_to_fine():
    torch.manual_seed(0)
    net = UNet2D().eval()
    logits, feats = net.forward_features(torch.randn(2, 1, 32, 48))
    assert logits.shape == (2, 4, 32, 48)
    assert feats.bottleneck.shape == (2, 256, 2, 3)
    assert [tuple(m.shape) for m in feats.decoder] == [
        (2, 256, 2, 3), (2, 128, 4, 6), (2, 64, 8, 12), (2, 32, 16, 24), (2, 16, 32, 48)
    ]
    assert sum(m.shape[1] for m in feats.decoder) == 496 == sum(net.feature_channels)
    assert feats.decoder[0] is feats.bottleneck
    torch.testing.assert_close(net(torch.zeros(1, 1, 16, 16)), net.forward_features(torch.zeros(1, 1, 16, 16))[0])


@pytest.mark.parametrize("shape", [(1, 1, 30, 32), (1, 2, 32, 32), (1, 32, 32)])
def test_unet_rejects_bad_input_shape(shape):
    with pytest.raises(ValueError, match="UNet2D"):
        UNet2D()(torch.zeros(shape))


def test_vnet_shapes_and_dropout_only_in_training():
    torch.manual_seed(0)
    net = VNet3D()
    x = torch.randn(2, 1, 16, 32, 16)
    net.eval()
    logits, feats = net.forward_features(x)
    assert logits.shape == (2, 2, 16, 32, 16)
    assert [m.shape[1] for m in feats.decoder] == [256, 128, 64, 32, 16]
    assert feats.decoder[-1].shape[2:] == (16, 32, 16)
    torch.testing.assert_close(net(x), logits)  # eval: deterministic
    net.train()
    assert not torch.allclose(net(x), net(x))  # Dropout3d(0.5) active
    with pytest.raises(ValueError, match="divisible by 16"):
        net(torch.zeros(1, 1, 16, 16, 20))


# ---------------------------------------------------------------- heads


def _maps(b: int, size: tuple[int, int], channels=(256, 128, 64, 32, 16), seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    h, w = size
    n = len(channels)
    scales = [2 ** (n - 1 - i) for i in range(n)]
    return [torch.randn(b, c, h // s, w // s, generator=g) for c, s in zip(channels, scales)]


@pytest.mark.parametrize("dim,hidden", [(32, None), (8, 24)])
def test_representation_head_forward_at_equals_dense_including_borders(dim, hidden):
    torch.manual_seed(0)
    size = (32, 48)
    maps = _maps(2, size)
    head = RepresentationHead([256, 128, 64, 32, 16], dim=dim, hidden=hidden)
    dense = head(maps, size)
    assert dense.shape == (2, dim, 32, 48)
    # all four corners, every edge, interior points, both images
    b = torch.tensor([0, 0, 1, 1, 0, 1, 0, 1, 1, 0])
    ys = torch.tensor([0, 31, 0, 31, 0, 31, 17, 5, 16, 13])
    xs = torch.tensor([0, 47, 47, 0, 20, 33, 0, 47, 24, 29])
    sampled = head.forward_at(maps, size, b, ys, xs)
    assert sampled.shape == (10, dim)
    torch.testing.assert_close(sampled, dense[b, :, ys, xs], rtol=1e-5, atol=1e-5)
    assert head.forward_at(maps, size, b[:0], ys[:0], xs[:0]).shape == (0, dim)


def test_representation_head_forward_at_with_odd_output_size_and_5x5_kernel():
    torch.manual_seed(2)
    maps = [torch.randn(2, 6, 4, 7), torch.randn(2, 3, 9, 13)]  # no map at the output size
    head = RepresentationHead([6, 3], dim=5, kernel_size=5)
    size = (31, 47)
    dense = head(maps, size)
    b = torch.tensor([0, 1, 1, 0, 1])
    ys, xs = torch.tensor([0, 30, 1, 15, 29]), torch.tensor([46, 0, 1, 23, 45])
    torch.testing.assert_close(head.forward_at(maps, size, b, ys, xs), dense[b, :, ys, xs], rtol=1e-5, atol=1e-5)


def test_representation_head_forward_at_has_the_dense_gradients():
    torch.manual_seed(1)
    size = (16, 16)
    maps = [m.requires_grad_() for m in _maps(1, size, channels=(8, 4, 2), seed=1)]
    head = RepresentationHead([8, 4, 2], dim=4)
    b = torch.zeros(5, dtype=torch.long)
    ys, xs = torch.tensor([0, 15, 7, 3, 15]), torch.tensor([0, 15, 8, 15, 0])
    head(maps, size)[b, :, ys, xs].square().sum().backward()
    dense_grads = [head.conv.weight.grad.clone(), maps[0].grad.clone()]
    head.zero_grad()
    maps[0].grad = None
    head.forward_at(maps, size, b, ys, xs).square().sum().backward()
    torch.testing.assert_close(head.conv.weight.grad, dense_grads[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(maps[0].grad, dense_grads[1], rtol=1e-4, atol=1e-5)


def test_representation_head_3d_forward_at_equals_dense_including_borders():
    torch.manual_seed(0)
    maps = [torch.randn(2, 8, 2, 3, 2), torch.randn(2, 4, 4, 6, 4), torch.randn(2, 2, 8, 12, 8)]
    head = RepresentationHead([8, 4, 2], dim=6, spatial_dims=3)
    size = (8, 12, 8)
    dense = head(maps, size)
    assert dense.shape == (2, 6, 8, 12, 8)
    b = torch.tensor([0, 1, 1, 0, 1, 0])
    ys, xs, zs = torch.tensor([0, 7, 0, 7, 3, 4]), torch.tensor([0, 11, 11, 0, 6, 5]), torch.tensor([7, 0, 0, 7, 4, 3])
    sampled = head.forward_at(maps, size, b, ys, xs, zs)
    torch.testing.assert_close(sampled, dense[b, :, ys, xs, zs], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="zs"):
        head.forward_at(maps, size, b, ys, xs)


def test_representation_head_1x1_is_one_linear_map_per_voxel():
    torch.manual_seed(0)
    head = RepresentationHead([16], dim=12, kernel_size=1, spatial_dims=3)
    x = torch.randn(1, 16, 4, 4, 4)
    w = head.proj.weight.view(12, 12) @ head.conv.weight.view(12, 16)  # first conv has no bias
    torch.testing.assert_close(head([x], (4, 4, 4))[0, :, 3, 1, 2], w @ x[0, :, 3, 1, 2] + head.proj.bias)


def test_representation_head_rejects_wrong_maps():
    head = RepresentationHead([4, 2], dim=3)
    with pytest.raises(ValueError, match="expects 2 maps"):
        head([torch.zeros(1, 4, 2, 2)], (4, 4))
    with pytest.raises(ValueError, match="map 1"):
        head([torch.zeros(1, 4, 2, 2), torch.zeros(1, 3, 4, 4)], (4, 4))
    with pytest.raises(ValueError, match="outside"):
        maps = [torch.zeros(1, 4, 2, 2), torch.zeros(1, 2, 4, 4)]
        head.forward_at(maps, (4, 4), torch.tensor([0]), torch.tensor([4]), torch.tensor([0]))


def test_projection_and_global_head_shapes():
    torch.manual_seed(0)
    assert ProjectionMLP(256)(torch.randn(3, 256)).shape == (3, 256)
    assert GlobalHead(256, 512, 128)(torch.randn(2, 256, 4, 4)).shape == (2, 128)
    assert GlobalHead(256)(torch.randn(2, 256, 2, 2, 2)).shape == (2, 256)


def test_local_head_pools_64_windows_at_stride_32():
    torch.manual_seed(0)
    head = LocalHead(in_channels=4)
    head.mlp = nn.Identity()  # expose the pooled window means
    x = torch.randn(2, 4, 256, 256)
    out = head(x)
    assert out.shape == (2, 49, 4)  # (256 - 64) / 32 + 1 = 7 windows per axis
    # window (row 1, col 2) covers rows 32..95, cols 64..127: patch index 1 * 7 + 2
    torch.testing.assert_close(out[1, 9], x[1, :, 32:96, 64:128].mean(dim=(1, 2)))
    with pytest.raises(ValueError, match="larger than the feature map"):
        head(torch.zeros(1, 4, 32, 256))


# ---------------------------------------------------------------- EMA teacher


class _Scalar(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.zeros(()))
        self.register_buffer("stat", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.p


def test_warmup_momentum_values():
    assert [warmup_momentum(s, 0.99) for s in (0, 1, 3)] == [0.0, 0.5, 0.75]
    assert warmup_momentum(99, 0.99) == pytest.approx(0.99)
    assert warmup_momentum(1000, 0.99) == 0.99


def test_ema_teacher_is_the_running_mean_during_warmup():
    student = _Scalar()
    teacher = EMATeacher(student)
    n = 50  # below 1 / (1 - 0.99): alpha = 1 - 1/(t+1) exactly, the running mean of the iterates
    for t in range(n):
        with torch.no_grad():
            student.p.fill_(t + 1.0)
            student.stat.fill_(-t)
        teacher.update(student, momentum=0.99)
    assert teacher.model.p.item() == pytest.approx((n + 1) / 2, rel=1e-5)  # mean of 1..n
    assert teacher.model.stat.item() == -(n - 1)  # buffers copied, not averaged
    assert int(teacher.step) == n and "step" in teacher.state_dict()


def test_ema_teacher_closed_form_with_capped_momentum():
    student = _Scalar()
    teacher = EMATeacher(student)
    # momentum 0.5: alphas 0, 0.5, 0.5, 0.5 on student values 1, 2, 3, 4
    # t0 = 1; t1 = (1 + 2) / 2 = 1.5; t2 = (1.5 + 3) / 2 = 2.25; t3 = (2.25 + 4) / 2 = 3.125
    alphas = []
    for t, expected in enumerate([1.0, 1.5, 2.25, 3.125]):
        with torch.no_grad():
            student.p.fill_(t + 1.0)
        alphas.append(teacher.update(student, momentum=0.5))
        assert teacher.model.p.item() == expected
    assert alphas == [0.0, 0.5, 0.5, 0.5]


def test_ema_teacher_is_frozen_and_stays_in_eval_mode():
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.5))
    parent = nn.ModuleDict({"student": student, "teacher": EMATeacher(student)})
    parent.train()
    teacher = parent["teacher"]
    assert student.training and not teacher.model.training and not teacher.model[1].training
    assert all(not p.requires_grad for p in teacher.parameters())
    x = torch.randn(5, 3)
    y = teacher(x)
    assert y.grad_fn is None
    torch.testing.assert_close(teacher(x), y)  # dropout off, BN on running statistics: deterministic


def test_ema_teacher_with_batch_statistics_stays_in_train_mode_as_the_official_scripts():
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    parent = nn.ModuleDict({"student": student, "teacher": EMATeacher(student, batch_statistics=True)})
    parent.eval()  # a parent's mode does not move the teacher out of its own
    teacher = parent["teacher"]
    assert teacher.model.training and teacher.model[1].training
    x = torch.randn(6, 3)
    with torch.no_grad():
        z = student[0](x)
        expect = (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + 1e-5)  # this batch's statistics
    torch.testing.assert_close(teacher(x), expect * student[1].weight + student[1].bias)


def test_ema_update_plain_and_errors():
    a, b = _Scalar(), _Scalar()
    with torch.no_grad():
        a.p.fill_(2.0)
        b.p.fill_(4.0)
    ema_update(a, b, 0.75)
    assert a.p.item() == 2.5  # 0.75 * 2 + 0.25 * 4
    wrapped = EMATeacher(a)
    ema_update(wrapped, b, 0.5)  # an EMATeacher is unwrapped
    assert wrapped.model.p.item() == 3.25
    with pytest.raises(ValueError, match="momentum"):
        ema_update(a, b, 1.5)
    with pytest.raises(ValueError, match="differ"):
        ema_update(a, nn.Linear(1, 1), 0.5)


def test_to_sphere3_keeps_vectors_that_live_in_three_dimensions():
    from actionpp.centers import simplex_centers
    from actionpp.plotting import to_sphere3

    c3 = simplex_centers(4, 3, seed=0)  # a regular tetrahedron: pairwise cosine -1/3
    torch.testing.assert_close(to_sphere3(c3), c3.double())
    c16 = simplex_centers(4, 16, seed=0)  # the same simplex in R^16 spans a 3D subspace: the projection is exact
    cos = to_sphere3(c16) @ to_sphere3(c16).T
    torch.testing.assert_close(cos, torch.full((4, 4), -1 / 3, dtype=torch.float64).fill_diagonal_(1.0))
    two = to_sphere3(torch.tensor([[0.0, 2.0]]))  # padded and normalised
    torch.testing.assert_close(two, torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64))


@pytest.mark.parametrize("n_pixels", [3, 40, 400])  # 3: every map gathered; 40: one projected first; 400: three
def test_forward_at_both_paths_and_the_row_sparse_backward_equal_the_dense_head_in_float64(n_pixels):
    """The fast head (issue 17) against the dense definition, float64, values and every gradient to 1e-10.

    A map with fewer positions than there are pixels is projected through the convolution before the
    gather, any other gathered first (``flat rows < pixels`` decides per map); the backward re-evaluates only the
    rows whose gradient is not zero (half of them here, as the anatomical contrast's queries).
    """
    g = torch.Generator().manual_seed(3)
    size = (16, 24)
    maps = [torch.randn(2, c, 16 // 2 ** (3 - i), 24 // 2 ** (3 - i), generator=g, dtype=torch.float64)
            for i, c in enumerate((12, 8, 6, 4))]
    head = RepresentationHead([12, 8, 6, 4], dim=5, hidden=7).double()
    b = torch.randint(0, 2, (n_pixels,), generator=g)
    ys, xs = torch.randint(0, 16, (n_pixels,), generator=g), torch.randint(0, 24, (n_pixels,), generator=g)
    ys[0], xs[0] = 0, 23  # a corner: the zero padding
    weight = torch.randn(n_pixels, 5, generator=g, dtype=torch.float64)
    weight[::2] = 0.0  # rows without gradient, as the anatomical contrast's non-query pixels

    def grads(fn):
        ms = [m.clone().requires_grad_() for m in maps]
        head.zero_grad()
        out = fn(ms)
        (out * weight).sum().backward()
        return [out.detach(), *(m.grad for m in ms), *(p.grad.clone() for p in head.parameters())]

    dense = grads(lambda ms: head(ms, size)[b, :, ys, xs])
    fast = grads(lambda ms: head.forward_at(ms, size, b, ys, xs))
    for want, got in zip(dense, fast):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("n_pixels", [0, 5])
def test_forward_at_gives_zero_not_missing_gradients_when_no_row_is_used(n_pixels):
    """A loss that uses none of the head's rows (no hard query, no pixel) leaves zeros in every gradient, as
    the plain graph does: an optimiser skips a parameter whose gradient is None (no momentum, no decay)."""
    maps = [torch.randn(1, c, s, s).requires_grad_() for c, s in ((8, 4), (4, 8))]
    head = RepresentationHead([8, 4], dim=3)
    b = torch.zeros(n_pixels, dtype=torch.long)
    ys = xs = torch.arange(n_pixels) % 8
    (head.forward_at(maps, (8, 8), b, ys, xs).sum() * 0.0).backward()
    for t in [*maps, *head.parameters()]:
        assert t.grad is not None and torch.count_nonzero(t.grad) == 0
    with torch.no_grad():
        w = head.conv.weight.clone()
    torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9, weight_decay=0.5).step()
    assert not torch.equal(head.conv.weight, w)  # the decay acts, as with the dense head
