"""Adaptive allocation: known optimal matchings, permutation invariance, stale means, state round trip."""

from __future__ import annotations

import pytest
import torch

from actionpp.allocation import CentreAllocator, hungarian_assignment
from actionpp.centers import simplex_centers


def _means_near(centres: torch.Tensor, perm: list[int], noise: float = 0.05, n: int = 20, seed: int = 0):
    """Embeddings of class c scattered around centre perm[c]."""
    g = torch.Generator().manual_seed(seed)
    k, d = centres.shape
    emb = torch.cat([centres[perm[c]] + noise * torch.randn(n, d, generator=g) for c in range(k)])
    labels = torch.arange(k).repeat_interleave(n)
    return emb, labels


def test_known_optimal_assignment():
    centres = simplex_centers(4, 8, seed=1)
    perm = [2, 0, 3, 1]
    alloc = CentreAllocator(centres)
    assert alloc.assignment.tolist() == [0, 1, 2, 3]  # identity before any update
    emb, lab = _means_near(centres, perm)
    alloc.update(emb, lab)
    assert alloc.assignment.tolist() == perm
    torch.testing.assert_close(alloc.class_centres(), centres[perm])


def test_hungarian_beats_greedy():
    # greedy (class 0 first) would take centre 0 for class 0 (0.9) and leave 0.1 + ...;
    # the optimum swaps: 0->1, 1->0 with total 0.8 + 0.8 > 0.9 + 0.0
    centres = torch.eye(2)
    means = torch.tensor([[0.9, 0.8], [0.8, 0.0]])
    assert hungarian_assignment(means, centres).tolist() == [1, 0]


def test_permuting_centres_permutes_the_assignment():
    centres = simplex_centers(4, 8, seed=2)
    emb, lab = _means_near(centres, [3, 1, 0, 2], noise=0.3, seed=3)
    a = CentreAllocator(centres)
    a.update(emb, lab)
    sigma = torch.tensor([1, 3, 0, 2])  # new row j holds old centre sigma[j]
    b = CentreAllocator(centres[sigma])
    b.update(emb, lab)
    inv = torch.argsort(sigma)
    assert b.assignment.tolist() == inv[a.assignment].tolist()
    torch.testing.assert_close(b.class_centres(), a.class_centres())


def test_ema_update_by_hand():
    centres = torch.eye(3)
    alloc = CentreAllocator(centres, momentum=0.5, mode="identity")
    alloc.update(torch.tensor([[2.0, 0, 0], [0, 3.0, 0]]), torch.tensor([0, 0]))
    # first sight: direction of the mean of the normalised embeddings, (0.5, 0.5, 0) -> (1, 1, 0)/sqrt 2
    r = 2**-0.5
    torch.testing.assert_close(alloc.means[0], torch.tensor([r, r, 0.0]))
    alloc.update(torch.tensor([[0, 0, 5.0]]), torch.tensor([0]))
    # normalise(0.5 (r, r, 0) + 0.5 (0, 0, 1))
    expect = torch.nn.functional.normalize(torch.tensor([0.5 * r, 0.5 * r, 0.5]), dim=0)
    torch.testing.assert_close(alloc.means[0], expect)


def test_the_batch_mean_is_normalised_before_the_ema():
    """Official TSC.py: phi <- normalise(0.9 phi + 0.1 normalise(batch mean)) (method.md 3)."""
    alloc = CentreAllocator(torch.eye(3), momentum=0.1, mode="identity")
    alloc.update(torch.tensor([[1.0, 0, 0]]), torch.tensor([0]))
    # two unit vectors whose mean (0, 0.6, 0) is only 0.6 long: its direction enters with weight 0.1
    alloc.update(torch.tensor([[0, 0.6, 0.8], [0, 0.6, -0.8]]), torch.tensor([0, 0]))
    expect = torch.nn.functional.normalize(torch.tensor([0.9, 0.1, 0.0]), dim=0)  # raw mean: (0.9, 0.06, 0)
    torch.testing.assert_close(alloc.means[0], expect)


def test_absent_classes_keep_stale_means_and_unseen_take_leftover():
    centres = torch.eye(3)
    alloc = CentreAllocator(centres)
    alloc.update(torch.tensor([[0, 1.0, 0], [0, 0, 1.0]]), torch.tensor([0, 1]))
    # class 0 -> centre 1, class 1 -> centre 2, never-seen class 2 gets the leftover centre 0
    assert alloc.assignment.tolist() == [1, 2, 0]
    assert alloc.seen.tolist() == [True, True, False]
    torch.testing.assert_close(alloc.means[2], torch.zeros(3))
    stale = alloc.means[1].clone()
    alloc.update(torch.tensor([[0, 1.0, 0.1]]), torch.tensor([0]))  # class 1 absent
    torch.testing.assert_close(alloc.means[1], stale)
    alloc.update(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))  # empty batch: no-op
    torch.testing.assert_close(alloc.means[1], stale)


def test_random_and_identity_modes_ignore_the_data():
    centres = simplex_centers(4, 8)
    emb, lab = _means_near(centres, [2, 0, 3, 1])
    r1, r2 = CentreAllocator(centres, mode="random", seed=7), CentreAllocator(centres, mode="random", seed=7)
    expected = torch.randperm(4, generator=torch.Generator().manual_seed(7)).tolist()
    assert r1.assignment.tolist() == expected == r2.assignment.tolist()
    r1.update(emb, lab)
    assert r1.assignment.tolist() == expected
    ident = CentreAllocator(centres, mode="identity")
    ident.update(emb, lab)
    assert ident.assignment.tolist() == [0, 1, 2, 3]


def test_state_dict_round_trip(tmp_path):
    centres = simplex_centers(4, 8, seed=4)
    a = CentreAllocator(centres, momentum=0.2)
    emb, lab = _means_near(centres, [1, 2, 3, 0])
    a.update(emb, lab)
    p = tmp_path / "alloc.pt"
    torch.save(a.state_dict(), p)
    b = CentreAllocator(centres, momentum=0.2)
    b.load_state_dict(torch.load(p, weights_only=True))
    assert b.assignment.tolist() == a.assignment.tolist() == [1, 2, 3, 0]
    torch.testing.assert_close(b.means, a.means)
    # identical continuation
    emb2, lab2 = _means_near(centres, [1, 2, 3, 0], seed=9)
    a.update(emb2, lab2)
    b.update(emb2, lab2)
    torch.testing.assert_close(b.means, a.means)


def test_errors():
    c = torch.eye(3)
    with pytest.raises(ValueError, match="unknown allocation mode 'greedy'"):
        CentreAllocator(c, mode="greedy")
    with pytest.raises(ValueError, match="momentum"):
        CentreAllocator(c, momentum=0.0)
    a = CentreAllocator(c)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\), got \[3, 7\]"):
        a.update(torch.ones(3, 3), torch.tensor([0, 3, 7]))
    with pytest.raises(ValueError, match=r"emb must be \(N, 3\)"):
        a.update(torch.ones(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="shape"):
        a.load_state_dict(CentreAllocator(torch.eye(4)).state_dict())
