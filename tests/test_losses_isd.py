"""ISD distillation: hand-computed KL, gradcheck, degenerate banks, memory bank FIFO, patch pooling."""

from __future__ import annotations

import math

import pytest
import torch

from actionpp.losses import MemoryBank, isd_loss
from actionpp.models import local_patches


def test_kl_by_hand():
    student = torch.tensor([[2.0, 0.0]])  # normalised to (1, 0)
    teacher = torch.tensor([[0.6, 0.8]])
    bank = torch.tensor([[1.0, 0.0], [0.0, 3.0]])  # normalised to (1,0), (0,1)
    ps = [math.exp(1.0) / (math.exp(1.0) + 1.0), 1.0 / (math.exp(1.0) + 1.0)]  # tau_s = 1: logits 1, 0
    zt = math.exp(1.2) + math.exp(1.6)  # tau_t = 0.5: logits 1.2, 1.6
    pt = [math.exp(1.2) / zt, math.exp(1.6) / zt]
    kl = sum(p * math.log(p / q) for p, q in zip(pt, ps))
    assert float(isd_loss(student, teacher, bank, tau_s=1.0, tau_t=0.5)) == pytest.approx(kl, rel=1e-6)


def test_same_distribution_gives_zero_and_single_entry_bank_gives_zero():
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    bank = torch.randn(6, 8, generator=torch.Generator().manual_seed(1))
    assert float(isd_loss(x, x, bank, tau_s=0.2, tau_t=0.2)) == pytest.approx(0.0, abs=1e-6)
    assert float(isd_loss(x, -x, bank[:1])) == pytest.approx(0.0, abs=1e-6)


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(2)
    s = torch.randn(3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    t = torch.randn(3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(4, 5, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s, t, b: isd_loss(s, t, b, tau_s=0.1, tau_t=0.05), (s, t, b))


def test_empty_bank_is_grad_carrying_zero():
    s = torch.randn(3, 4, requires_grad=True)
    loss = isd_loss(s, torch.randn(3, 4), torch.zeros(0, 4))
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.equal(s.grad, torch.zeros_like(s))


def test_memory_bank_fifo():
    bank = MemoryBank(size=3, dim=1)
    for i in range(5):
        bank.push(torch.tensor([[float(i)]]))
    assert bank.embeddings.squeeze(1).tolist() == [2.0, 3.0, 4.0]
    other = MemoryBank(size=3, dim=1)
    other.load_state_dict(bank.state_dict())
    assert torch.equal(other.embeddings, bank.embeddings)
    bank.push(torch.tensor([[5.0]]))
    other.push(torch.tensor([[5.0]]))
    assert other.embeddings.squeeze(1).tolist() == [3.0, 4.0, 5.0] == bank.embeddings.squeeze(1).tolist()


def test_local_patches_2d_by_hand():
    fm = torch.arange(16.0).view(1, 1, 4, 4)
    out = local_patches(fm, window=2, stride=2)
    # means of the 2x2 blocks, row-major: (0+1+4+5)/4 = 2.5, 4.5, 10.5, 12.5
    assert out.shape == (4, 1) and out.squeeze(1).tolist() == [2.5, 4.5, 10.5, 12.5]
    fm2 = torch.randn(2, 3, 256, 256)
    assert local_patches(fm2).shape == (2 * 7 * 7, 3)  # (256 - 64) / 32 + 1 = 7 per axis
    torch.testing.assert_close(local_patches(fm2)[0], fm2[0, :, :64, :64].mean(dim=(1, 2)))
    torch.testing.assert_close(local_patches(fm2)[49 + 8], fm2[1, :, 32:96, 32:96].mean(dim=(1, 2)))


def test_local_patches_3d_and_errors():
    fm = torch.randn(1, 2, 8, 8, 4)
    out = local_patches(fm, window=(4, 4, 4), stride=(4, 4, 4))
    assert out.shape == (4, 2)
    torch.testing.assert_close(out[1], fm[0, :, :4, 4:8, :4].mean(dim=(1, 2, 3)))
    with pytest.raises(ValueError, match="larger than the feature map"):
        local_patches(torch.zeros(1, 1, 32, 32), window=64)
