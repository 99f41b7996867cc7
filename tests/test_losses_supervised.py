"""Supervised 0.5 (CE + Dice) and the pseudo-label loss: hand-computed values and label checks."""

from __future__ import annotations

import math

import pytest
import torch

from actionpp.losses import dice_loss, pseudo_label_loss, supervised_loss


def test_uniform_logits_by_hand():
    # 2 classes, 1 image of 2 x 2 pixels, zero logits -> p = 0.5 everywhere.
    logits = torch.zeros(1, 2, 2, 2, requires_grad=True)
    target = torch.tensor([[[0, 1], [1, 1]]])  # 1 background, 3 foreground
    smooth = 1e-5
    # class 0: I = 0.5, sum p^2 = 1, sum g^2 = 1; class 1: I = 1.5, sum p^2 = 1, sum g^2 = 3
    d0 = 1 - (2 * 0.5 + smooth) / (1 + 1 + smooth)
    d1 = 1 - (2 * 1.5 + smooth) / (1 + 3 + smooth)
    assert float(dice_loss(logits.detach(), target)) == pytest.approx((d0 + d1) / 2, rel=1e-6)
    expect = 0.5 * (math.log(2) + (d0 + d1) / 2)
    loss = supervised_loss(logits, target)
    assert float(loss.detach()) == pytest.approx(expect, rel=1e-6)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_perfect_prediction_is_near_zero():
    target = torch.randint(0, 3, (2, 5, 5), generator=torch.Generator().manual_seed(0))
    logits = 50.0 * torch.nn.functional.one_hot(target, 3).movedim(-1, 1).float()
    assert float(supervised_loss(logits, target)) < 1e-6


def test_3d_inputs():
    logits = torch.zeros(1, 2, 2, 2, 2)
    target = torch.zeros(1, 2, 2, 2, dtype=torch.long)
    # class 1 absent and predicted at 0.5: dice_1 = 1 - smooth / (2 + smooth) ~ 1; class 0: 1 - (8 + s)/(2 + 8 + s)
    s = 1e-5
    expect_dice = ((1 - (8 + s) / (10 + s)) + (1 - s / (2 + s))) / 2
    assert float(dice_loss(logits, target)) == pytest.approx(expect_dice, rel=1e-6)


def test_label_range_error_names_the_values():
    logits = torch.zeros(1, 4, 2, 2)
    with pytest.raises(ValueError, match=r"out-of-range value\(s\) \[-1, 4, 255\]"):
        supervised_loss(logits, torch.tensor([[[0, 4], [255, -1]]]))
    with pytest.raises(ValueError, match="does not match logits"):
        supervised_loss(logits, torch.zeros(1, 3, 2, dtype=torch.long))


def test_pseudo_label_loss_by_hand():
    # B = 2, C = 2, 1 x 2 pixels; zero student logits -> CE = log 2 at every pixel.
    student = torch.zeros(2, 2, 1, 2, requires_grad=True)
    teacher = torch.tensor(
        [
            [[[0.99, 0.4]], [[0.01, 0.6]]],  # image 0: confidences 0.99, 0.6 -> share 0.5
            [[[0.5, 0.3]], [[0.5, 0.7]]],  # image 1: 0.5, 0.7 -> share 0
        ]
    )
    loss = pseudo_label_loss(student, teacher, threshold=0.97)
    assert float(loss.detach()) == pytest.approx((0.5 * math.log(2) * 2) / 4, rel=1e-6)
    loss.backward()
    assert student.grad[1].abs().max() == 0  # unconfident image contributes nothing
    # targets are the teacher argmax: pixel (0, 0, 1) -> class 1, gradient pushes logit 1 up
    assert student.grad[0, 1, 0, 1] < 0


def test_pseudo_label_all_unconfident_is_a_grad_carrying_zero():
    student = torch.randn(1, 3, 4, 4, requires_grad=True)
    teacher = torch.full((1, 3, 4, 4), 1 / 3)
    loss = pseudo_label_loss(student, teacher)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.equal(student.grad, torch.zeros_like(student))


def test_pseudo_label_shape_error():
    with pytest.raises(ValueError, match="same shape"):
        pseudo_label_loss(torch.zeros(1, 2, 3, 3), torch.zeros(1, 3, 3, 3))
