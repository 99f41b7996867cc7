"""Anatomical contrast (ReCo style): a hand-computed case, sampling rules, degenerate cases."""

from __future__ import annotations

import math

import pytest
import torch

from actionpp.losses import anatomical_contrast_loss, valid_mask


def test_two_classes_by_hand():
    # class 0: (1, 0) hard (conf 0.5) and (0.6, 0.8) easy; class 1: (0, 1) easy.
    emb = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], requires_grad=True)
    labels = torch.tensor([0, 0, 1])
    conf = torch.tensor([0.5, 0.99, 0.99])
    loss = anatomical_contrast_loss(emb, labels, conf, tau=1.0, num_queries=8, num_negatives=3,
                                    generator=torch.Generator().manual_seed(0))
    # prototype 0 = normalise((1.6, 0.8)) = (2, 1)/sqrt 5; the only query (1, 0): positive 2/sqrt 5;
    # every negative is the single class-1 pixel (0, 1): cosine 0. Class 1 has no hard query but counts.
    pos = 2 / math.sqrt(5)
    term0 = math.log(math.exp(pos) + 3 * math.exp(0.0)) - pos
    assert float(loss.detach()) == pytest.approx(term0 / 2, rel=1e-6)
    loss.backward()
    # gradient flows through the query only (prototype and negatives are constants)
    assert emb.grad[0].abs().sum() > 0
    assert torch.equal(emb.grad[1:], torch.zeros(2, 2))


def test_negative_classes_follow_prototype_similarity():
    # query class 0 near class 1 (similar prototype) and far from class 2: with a low tau nearly all
    # negatives come from class 1, so the loss equals the one with class 2 removed.
    emb = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 0.0, 1.0]])
    labels = torch.tensor([0, 1, 2])
    conf = torch.tensor([0.1, 0.99, 0.99])
    gen = torch.Generator().manual_seed(0)
    loss = anatomical_contrast_loss(emb, labels, conf, tau=0.01, num_queries=1, num_negatives=64, generator=gen)
    pos = 1.0
    neg = float(torch.nn.functional.normalize(emb[1], dim=0)[0])
    term = math.log(math.exp(pos / 0.01) + 64 * math.exp(neg / 0.01)) - pos / 0.01
    assert float(loss) == pytest.approx(term / 3, rel=1e-5)


def test_queries_capped_and_deterministic_with_generator():
    g = torch.Generator().manual_seed(3)
    emb = torch.randn(300, 8, generator=g)
    labels = torch.randint(0, 3, (300,), generator=g)
    conf = torch.rand(300, generator=g)
    a = anatomical_contrast_loss(emb, labels, conf, tau=0.5, num_queries=16, num_negatives=32,
                                 generator=torch.Generator().manual_seed(1))
    b = anatomical_contrast_loss(emb, labels, conf, tau=0.5, num_queries=16, num_negatives=32,
                                 generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(a) and float(a) > 0
    assert float(a) == float(b)


@pytest.mark.parametrize("case", ["single_class", "no_pixels", "no_hard"])
def test_degenerate_cases_give_grad_carrying_zero(case):
    emb = torch.randn(10, 4, requires_grad=True)
    labels = torch.tensor([0, 1] * 5)
    conf = torch.full((10,), 0.5)
    if case == "single_class":
        labels = torch.zeros(10, dtype=torch.long)
    if case == "no_pixels":
        emb = emb[:0].detach().requires_grad_(True)
        labels, conf = labels[:0], conf[:0]
    if case == "no_hard":
        conf = torch.ones(10)
    loss = anatomical_contrast_loss(emb, labels, conf, tau=0.5)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.equal(emb.grad, torch.zeros_like(emb))


def test_valid_mask():
    labels = torch.tensor([[0, 1], [2, 255]])
    assert valid_mask(labels, ignore_index=255).tolist() == [[True, True], [True, False]]
    conf = torch.tensor([[0.9, 0.69], [0.7, 0.95]])
    assert valid_mask(labels, conf, threshold=0.7).tolist() == [[True, False], [True, True]]


def test_errors():
    with pytest.raises(ValueError, match="tau must be > 0"):
        anatomical_contrast_loss(torch.zeros(2, 2), torch.tensor([0, 1]), torch.zeros(2), tau=0.0)
    with pytest.raises(ValueError, match=r"must be \(2,\)"):
        anatomical_contrast_loss(torch.zeros(2, 2), torch.tensor([0, 1, 1]), torch.zeros(2), tau=0.5)


def test_negative_similarities_equal_the_gathered_product_and_its_gradient_in_float64():
    """The anatomical contrast's negatives (issue 17): forward and query gradient of (q @ v.T).gather."""
    from actionpp.losses.anatomical import negative_similarities

    g = torch.Generator().manual_seed(1)
    q = torch.randn(9, 5, generator=g, dtype=torch.float64)
    v = torch.randn(30, 5, generator=g, dtype=torch.float64)
    idx = torch.randint(0, 30, (9, 11), generator=g)
    idx[0, :3] = 4  # a negative drawn several times for one query
    w = torch.randn(9, 11, generator=g, dtype=torch.float64)
    q1, q2 = q.clone().requires_grad_(), q.clone().requires_grad_()
    want = (q1 @ v.T).gather(1, idx)
    got = negative_similarities(q2, v, idx)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    (want * w).sum().backward()
    (got * w).sum().backward()
    torch.testing.assert_close(q2.grad, q1.grad, rtol=1e-12, atol=1e-12)
    # first-order only: a second derivative is an error, not a silently wrong zero
    q3 = q.clone().requires_grad_()
    (grad,) = torch.autograd.grad((negative_similarities(q3, v, idx) ** 2 * w).sum(), q3, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|differentiate twice"):
        grad.sum().backward()
