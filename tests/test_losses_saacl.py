"""SAACL: hand-computed softmax, gradcheck, centre attraction, degenerate cases, anchors, queue."""

from __future__ import annotations

import math

import pytest
import torch

from actionpp.losses import FeatureQueue, saacl_loss
from actionpp.sampling import sample_pixels


def tiny():
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1])
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    queue = torch.tensor([[0.0, 1.0]])
    qlab = torch.tensor([1])
    centres = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])  # class 0 -> (1, 0), class 1 -> (-1, 0)
    return anchors, labels, teacher, queue, qlab, centres


@pytest.mark.parametrize("lam", [0.0, 0.2, 1.0])
@pytest.mark.parametrize("form", ["averaged", "separate"])
def test_two_anchors_one_queue_entry_two_centres_by_hand(lam, form):
    a, y, t, q, ql, c = tiny()
    e = math.e
    # anchor 0 = (1,0): candidates t0 (cos 1), q (0), centre0 (1), centre1 (-1); positives {t0}
    z0 = e + 1 + e + 1 / e
    # anchor 1 = (0,1): t1 (1), q (1), centre0 (0), centre1 (0); positives {t1, q}; own centre (-1,0): cos 0
    z1 = e + e + 1 + 1
    if form == "averaged":  # the centre is one more positive: |P| = 1 + 1 and 2 + 1
        l0 = -((1 - math.log(z0)) + lam * (1 - math.log(z0))) / 2
        l1 = -(2 * (1 - math.log(z1)) + lam * (0 - math.log(z1))) / 3
    else:  # centre term outside the average over the positives
        l0 = -(1 - math.log(z0)) - lam * (1 - math.log(z0))
        l1 = -(2 * (1 - math.log(z1))) / 2 - lam * (0 - math.log(z1))
    got = saacl_loss(a, y, t, q, ql, c, tau=1.0, lambda_a=lam, centre_term=form)
    assert float(got) == pytest.approx((l0 + l1) / 2, rel=1e-6)


def test_temperature_and_normalisation_by_hand():
    a, y, t, q, ql, c = tiny()
    tau = 0.5
    e2 = math.exp(2)
    z0 = e2 + 1 + e2 + math.exp(-2)
    z1 = e2 + e2 + 1 + 1
    l0 = -(2 - math.log(z0))
    l1 = -(2 * (2 - math.log(z1))) / 2
    got = saacl_loss(
        3 * a, y, 5 * t, 2 * q, ql, 7 * c, tau=tau, lambda_a=0.0, centre_term="separate"
    )  # scales do not matter
    assert float(got) == pytest.approx((l0 + l1) / 2, rel=1e-6)


@pytest.mark.parametrize("form", ["averaged", "separate"])
def test_centres_not_candidates_by_hand(form):
    a, y, t, q, ql, c = tiny()
    e, lam = math.e, 0.5
    z0 = e + 1  # t0, q
    z1 = e + e
    c0, c1 = lam * (1 - math.log(z0 + e)), lam * (0 - math.log(z1 + 1))  # softmax over the others + own centre
    if form == "averaged":
        l0, l1 = -((1 - math.log(z0)) + c0) / 2, -(2 * (1 - math.log(z1)) + c1) / 3
    else:
        l0, l1 = -(1 - math.log(z0)) - c0, -(2 * (1 - math.log(z1))) / 2 - c1
    got = saacl_loss(a, y, t, q, ql, c, tau=1.0, lambda_a=lam, include_centres_as_candidates=False, centre_term=form)
    assert float(got) == pytest.approx((l0 + l1) / 2, rel=1e-6)


def official_saacl(anchors, labels, teacher, queue, qlab, centres, tau, lam):
    """TSC.py's formula written out densely in float64, independently of actionpp (method.md 3).

    logits = [own teacher view | queue | centres] / tau; positives = own view + same-label
    queue entries + the matched centre; loss_i = -(sum of log p over the own view and the
    queue positives + lam * log p(centre)) / (number of positives incl. the centre).
    """
    import numpy as np

    def unit(x):
        x = np.asarray(x, dtype=np.float64)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    v, t, c = unit(anchors), unit(teacher), unit(centres)
    q = unit(queue) if len(queue) else np.zeros((0, v.shape[1]))
    total = 0.0
    for i in range(len(v)):
        cand = np.concatenate([t[i : i + 1], q, c])  # (1 + Q + K, d)
        logits = cand @ v[i] / tau
        log_p = logits - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
        mask_class = np.concatenate([[1.0], (np.asarray(qlab) == labels[i]).astype(float), np.zeros(len(c))])
        mask_centre = np.zeros(len(cand))
        mask_centre[1 + len(q) + labels[i]] = 1.0
        n_pos = mask_class.sum() + mask_centre.sum()
        total += -((mask_class * log_p).sum() + lam * (mask_centre * log_p).sum()) / n_pos
    return total / len(v)


@pytest.mark.parametrize("queue_kind", ["empty", "partial", "class_absent", "single_class"])
@pytest.mark.parametrize("lam", [0.1, 0.2])
@pytest.mark.parametrize("tau", [0.07, 0.7])
def test_averaged_equals_the_official_formula_in_float64(queue_kind, lam, tau):
    g = torch.Generator().manual_seed(11)
    k, d, n = 4, 8, 24
    a = torch.randn(n, d, dtype=torch.float64, generator=g)
    t = torch.randn(n, d, dtype=torch.float64, generator=g)
    c = torch.randn(k, d, dtype=torch.float64, generator=g)
    y = torch.randint(0, k, (n,), generator=g)
    q = torch.randn(40, d, dtype=torch.float64, generator=g)
    ql = torch.randint(0, k, (40,), generator=g)
    if queue_kind == "empty":
        q, ql = q[:0], ql[:0]
    elif queue_kind == "partial":
        q, ql = q[:7], ql[:7]
    elif queue_kind == "class_absent":  # class 3: a centre, but no anchor and no queue entry
        y, ql = y % 3, ql % 3
    else:  # one class everywhere
        y, ql = torch.zeros_like(y), torch.zeros_like(ql)
    got = saacl_loss(a, y, t, q, ql, c, tau=tau, lambda_a=lam, centre_term="averaged")
    want = official_saacl(a.numpy(), y.numpy(), t.numpy(), q.numpy(), ql.numpy(), c.numpy(), tau, lam)
    assert abs(float(got) - want) <= 1e-10


def test_centre_gradient_share_matches_a_separate_derivation():
    from actionpp.losses import centre_gradient_share

    g = torch.Generator().manual_seed(5)
    k, d, n = 4, 8, 16
    a = torch.randn(n, d, dtype=torch.float64, generator=g)
    t, c = torch.randn(n, d, dtype=torch.float64, generator=g), torch.randn(k, d, dtype=torch.float64, generator=g)
    y = torch.arange(k).repeat(n // k)
    q, ql = torch.randn(20, d, dtype=torch.float64, generator=g), torch.arange(k).repeat(5)
    for form in ("averaged", "separate"):
        # the centre term alone, written from the module docstring: lam * log p(nu_i) scaled by 1 / (|P_i| + 1)
        # (averaged) or by 1 (separate), averaged over anchors
        v = a.clone().requires_grad_(True)
        vn = torch.nn.functional.normalize(v, dim=1)
        cand = (
            torch.cat(
                [
                    (vn * torch.nn.functional.normalize(t, dim=1)).sum(1, keepdim=True),
                    vn @ torch.nn.functional.normalize(q, dim=1).T,
                    vn @ torch.nn.functional.normalize(c, dim=1).T,
                ],
                1,
            )
            / 0.3
        )
        log_p = torch.log_softmax(cand, 1)
        n_pos = 1.0 + (ql[None, :] == y[:, None]).sum(1).double()
        scale = 1.0 / (n_pos + 1.0) if form == "averaged" else torch.ones_like(n_pos)
        centre = -(0.2 * log_p.gather(1, (1 + q.shape[0] + y)[:, None])[:, 0] * scale).mean()
        (g_centre,) = torch.autograd.grad(centre, v)
        full = a.clone().requires_grad_(True)
        (g_full,) = torch.autograd.grad(saacl_loss(full, y, t, q, ql, c, tau=0.3, lambda_a=0.2, centre_term=form), full)
        share = centre_gradient_share(a, y, t, q, ql, c, tau=0.3, lambda_a=0.2, centre_term=form)
        n_c, n_r = float(g_centre.norm()), float((g_full - g_centre).norm())
        assert share == pytest.approx(n_c / (n_c + n_r), rel=1e-10)


def test_a_full_queue_silences_the_averaged_centre_term_but_not_the_separate_one():
    """method.md 3: with a full, class-balanced queue the official form gives the centres ~nothing."""
    from actionpp.centers import simplex_centers
    from actionpp.losses import centre_gradient_share

    g = torch.Generator().manual_seed(3)
    k, d = 4, 16
    centres = simplex_centers(k, d, seed=0)
    y = torch.arange(k).repeat_interleave(64)
    a = centres[y] + 0.8 * torch.randn(y.numel(), d, generator=g)
    t = centres[y] + 0.8 * torch.randn(y.numel(), d, generator=g)
    ql = torch.arange(k).repeat(12_288 // k)  # 3 072 same-class entries per anchor
    q = centres[ql] + 0.8 * torch.randn(ql.numel(), d, generator=g)
    averaged = centre_gradient_share(a, y, t, q, ql, centres, tau=0.1, lambda_a=0.2, centre_term="averaged")
    separate = centre_gradient_share(a, y, t, q, ql, centres, tau=0.1, lambda_a=0.2, centre_term="separate")
    assert averaged < 0.01 < 0.1 < separate, (averaged, separate)


def test_plain_supervised_contrast_ablation_equals_no_centre_candidates():
    a, y, t, q, ql, c = tiny()
    plain = saacl_loss(a, y, t, q, ql, None, tau=1.0, lambda_a=0.0)
    e = math.e
    l0 = -(1 - math.log(e + 1))
    l1 = -(2 * (1 - math.log(2 * e))) / 2
    assert float(plain) == pytest.approx((l0 + l1) / 2, rel=1e-6)


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 3, dtype=torch.float64, generator=g, requires_grad=True)
    t = torch.randn(5, 3, dtype=torch.float64, generator=g, requires_grad=True)
    q = torch.randn(4, 3, dtype=torch.float64, generator=g, requires_grad=True)
    c = torch.randn(3, 3, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.tensor([0, 1, 2, 1, 0])
    ql = torch.tensor([1, 1, 0, 2])
    assert torch.autograd.gradcheck(
        lambda a, t, q, c: saacl_loss(a, y, t, q, ql, c, tau=0.3, lambda_a=0.2), (a, t, q, c)
    )


def test_moving_embeddings_toward_their_centre_lowers_the_loss():
    g = torch.Generator().manual_seed(1)
    k, d, n = 4, 16, 64
    from actionpp.centers import simplex_centers

    centres = simplex_centers(k, d, seed=0).double()
    y = torch.arange(k).repeat_interleave(n // k)
    qy = torch.arange(k).repeat(8)
    noise = torch.randn(n, d, dtype=torch.float64, generator=g)
    t = centres[y] + 0.05 * torch.randn(n, d, dtype=torch.float64, generator=g)
    q = centres[qy] + 0.05 * torch.randn(qy.numel(), d, dtype=torch.float64, generator=g)
    losses = []
    for alpha in (0.0, 0.3, 0.6, 1.0):
        a = (1 - alpha) * noise + alpha * 4 * centres[y]
        losses.append(float(saacl_loss(a, y, t, q, qy, centres, tau=0.1, lambda_a=0.2)))
    assert all(l2 < l1 for l1, l2 in zip(losses, losses[1:])), losses


@pytest.mark.parametrize("case", ["single_class", "empty_queue", "none_queue", "absent_class", "no_anchor"])
def test_degenerate_cases_are_finite_and_backward_works(case):
    g = torch.Generator().manual_seed(2)
    a = torch.randn(6, 4, generator=g, requires_grad=True)
    t = torch.randn(6, 4, generator=g)
    q = torch.randn(5, 4, generator=g)
    ql = torch.tensor([0, 1, 0, 1, 0])
    c = torch.randn(3, 4, generator=g)
    y = torch.tensor([0, 0, 1, 1, 0, 1])
    if case == "single_class":
        y = torch.zeros(6, dtype=torch.long)
    if case == "empty_queue":
        q, ql = q[:0], ql[:0]
    if case == "none_queue":
        q, ql = None, None
    if case == "absent_class":  # class 2 has a centre but no anchor and no queue entry
        pass
    if case == "no_anchor":
        a = a[:0].detach().requires_grad_(True)
        t, y = t[:0], y[:0]
    loss = saacl_loss(a, y, t, q, ql, c, tau=0.1, lambda_a=0.2, centre_term="separate")
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(a.grad).all()
    if case == "no_anchor":
        assert float(loss.detach()) == 0.0
    if case in ("empty_queue", "none_queue"):
        # only the own teacher view is positive: loss_i = -(log p(t_i) + 0.2 log p(c_y))
        v = torch.nn.functional.normalize(a.detach(), dim=1)
        logits = (
            torch.cat(
                [
                    (v * torch.nn.functional.normalize(t, dim=1)).sum(1, keepdim=True),
                    v @ torch.nn.functional.normalize(c, dim=1).T,
                ],
                1,
            )
            / 0.1
        )
        lp = torch.log_softmax(logits, 1)
        expect = -(lp[:, 0] + 0.2 * lp.gather(1, (1 + y).unsqueeze(1)).squeeze(1)).mean()
        assert float(loss.detach()) == pytest.approx(float(expect), rel=1e-5)


def test_errors():
    a, y, t, q, ql, c = tiny()
    with pytest.raises(ValueError, match="lambda_a > 0 needs class_centres"):
        saacl_loss(a, y, t, q, ql, None, tau=1.0, lambda_a=0.1)
    with pytest.raises(ValueError, match=r"anchor_labels must be in \[0, 2\).*\[5\]"):
        saacl_loss(a, torch.tensor([0, 5]), t, q, ql, c, tau=1.0, lambda_a=0.1)
    with pytest.raises(ValueError, match="tau must be > 0"):
        saacl_loss(a, y, t, q, ql, c, tau=0.0, lambda_a=0.1)
    with pytest.raises(ValueError, match="centre_term must be one of averaged, separate"):
        saacl_loss(a, y, t, q, ql, c, tau=1.0, lambda_a=0.1, centre_term="inside")
    with pytest.raises(ValueError, match=r"queue must be \(N, 2\)"):
        saacl_loss(a, y, t, torch.zeros(3, 5), torch.zeros(3, dtype=torch.long), c, tau=1.0, lambda_a=0.1)


def test_anchor_sampling_counts_classes_and_determinism():
    labels = torch.tensor([0] * 10 + [1] * 3 + [3] * 7 + [255] * 4)
    valid = labels != 255  # an ignored label is simply not valid
    idx, lab = sample_pixels(labels, 4, per_class=5, generator=torch.Generator().manual_seed(0), valid=valid)
    got = labels[idx[:, 0]]
    assert torch.equal(got, lab)
    assert (got == 0).sum() == 5 and (got == 1).sum() == 3 and (got == 3).sum() == 5 and (got == 255).sum() == 0
    assert idx[:, 0].unique().numel() == idx.shape[0]  # without replacement
    again, _ = sample_pixels(labels, 4, per_class=5, generator=torch.Generator().manual_seed(0), valid=valid)
    assert torch.equal(idx, again)
    assert sample_pixels(torch.zeros(0, dtype=torch.long), 4, per_class=5)[0].numel() == 0


def test_feature_queue_fifo_by_hand(tmp_path):
    q = FeatureQueue(size=4, dim=2)
    assert q.embeddings.shape == (0, 2) and len(q) == 0
    q.push(torch.tensor([[1.0, 0], [2.0, 0], [3.0, 0]]), torch.tensor([1, 2, 3]))
    assert q.labels.tolist() == [1, 2, 3]
    q.push(torch.tensor([[4.0, 0], [5.0, 0]]), torch.tensor([4, 5]))  # wraps: 1 is dropped
    assert q.embeddings[:, 0].tolist() == [2.0, 3.0, 4.0, 5.0] and q.labels.tolist() == [2, 3, 4, 5]
    q.push(torch.arange(12.0).view(6, 2), torch.arange(6))  # larger than the queue: last 4 rows
    assert q.labels.tolist() == [2, 3, 4, 5] and q.embeddings[:, 0].tolist() == [4.0, 6.0, 8.0, 10.0]
    p = tmp_path / "q.pt"
    torch.save(q.state_dict(), p)
    r = FeatureQueue(size=4, dim=2)
    r.load_state_dict(torch.load(p, weights_only=True))
    assert torch.equal(r.embeddings, q.embeddings) and torch.equal(r.labels, q.labels)
    with pytest.raises(ValueError, match="size=4"):
        FeatureQueue(size=8, dim=2).load_state_dict(q.state_dict())
    with pytest.raises(ValueError, match=r"emb must be \(n, 2\)"):
        q.push(torch.zeros(1, 3), torch.zeros(1, dtype=torch.long))


def test_chunked_logsumexp_equals_torch_in_float64_with_its_gradient():
    """The SAACL denominator over the queue in row chunks, its gradient formed in the forward (issue 17)."""
    from actionpp.losses.saacl import logsumexp_against

    g = torch.Generator().manual_seed(0)
    a = torch.randn(37, 6, generator=g, dtype=torch.float64) * 3
    b = torch.randn(50, 6, generator=g, dtype=torch.float64)
    w = torch.randn(37, generator=g, dtype=torch.float64)
    a1, a2 = a.clone().requires_grad_(), a.clone().requires_grad_()
    want = torch.logsumexp(a1 @ b.T, dim=1)
    got = logsumexp_against(a2, b, chunk_elements=7 * 50)  # 7 rows per chunk: 6 chunks, the last partial
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    (want * w).sum().backward()
    (got * w).sum().backward()
    torch.testing.assert_close(a2.grad, a1.grad, rtol=1e-12, atol=1e-12)
    assert torch.isneginf(logsumexp_against(a, b[:0])).all()  # an empty queue adds nothing to the softmax
    # its backward is first-order only: a second derivative (a gradient penalty, a Hessian-vector product) is an
    # error, not the silently wrong zero a hand-written backward would give
    a3 = a.clone().requires_grad_()
    (grad,) = torch.autograd.grad((logsumexp_against(a3, b) ** 2).sum(), a3, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|differentiate twice"):
        grad.sum().backward()
