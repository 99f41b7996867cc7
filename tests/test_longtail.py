"""actionpp.longtail (notebook 07): the long-tail sampler, logit adjustment, the metrics and the verdict,
with expected values worked out by hand; a few training steps of every method; the two exercises' checks
(a hand-written answer passes, an answer that runs the library does not)."""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from actionpp import lab
from actionpp import longtail as LT

torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------
# The long-tail sampler
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n_max, k, ratio, expected",
    [
        (100, 3, 100, [100, 10, 1]),  # 100 * 100^(-1/2) = 10, 100 * 100^(-1) = 1
        (120, 10, 10, [120, 93, 72, 56, 43, 33, 26, 20, 15, 12]),  # 120 * 10^(-r/9): 92.9, 72.0, 55.7, 43.1, ...
        (50, 4, 1, [50, 50, 50, 50]),  # ratio 1: balanced
        (3, 2, 2, [3, 2]),  # 1.5 rounds half up to 2
        (5, 2, 100, [5, 1]),  # 0.05 would round to 0: at least one image
        (16, 5, 16, [16, 8, 4, 2, 1]),  # 16 * 16^(-r/4) = 16 / 2^r
    ],
)
def test_longtail_counts_by_hand(n_max, k, ratio, expected):
    assert LT.longtail_counts(n_max, k, ratio) == expected


@pytest.mark.parametrize(
    "args, match",
    [((0, 3, 10), "n_max must be an integer >= 1, got 0"), ((10, 1, 10), "num_classes must be an integer >= 2, got 1"),
     ((10, 3, 0.5), "ratio must be a finite number >= 1, got 0.5"), ((10.0, 3, 10), "n_max .* got 10.0")],
)
def test_longtail_counts_names_the_bad_value(args, match):
    with pytest.raises(ValueError, match=match):
        LT.longtail_counts(*args)


def _toy_data(k: int = 4, per_class: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose first pixel is their row number, so splits can be traced back to rows."""
    labels = torch.arange(k).repeat_interleave(per_class)
    images = torch.zeros(k * per_class, 64)
    images[:, 0] = torch.arange(k * per_class, dtype=torch.float32)
    return images, labels


def test_split_has_the_long_tail_a_balanced_test_set_and_no_overlap():
    images, labels = _toy_data()
    sp = LT.longtail_split(images, labels, ratio=8, n_max=16, test_per_class=5, seed=3)
    assert sp.counts == [16, 8, 4, 2]  # 16 * 8^(-r/3) = 16 / 2^r
    assert torch.bincount(sp.y_train, minlength=4).tolist() == [16, 8, 4, 2]
    assert torch.bincount(sp.y_test, minlength=4).tolist() == [5, 5, 5, 5]
    assert sorted(sp.class_order) == [0, 1, 2, 3]
    train_rows, test_rows = set(sp.x_train[:, 0].long().tolist()), set(sp.x_test[:, 0].long().tolist())
    assert not train_rows & test_rows and len(train_rows) == 30 and len(test_rows) == 20
    # every image of rank r is a picture of the digit class_order[r]
    for x, y in ((sp.x_train, sp.y_train), (sp.x_test, sp.y_test)):
        digit = labels[x[:, 0].long()]
        assert digit.tolist() == [sp.class_order[r] for r in y.tolist()]
    again = LT.longtail_split(images, labels, ratio=8, n_max=16, test_per_class=5, seed=3)
    assert torch.equal(again.x_train, sp.x_train) and again.class_order == sp.class_order
    other = LT.longtail_split(images, labels, ratio=8, n_max=16, test_per_class=5, seed=4)
    assert not torch.equal(other.x_train, sp.x_train)


def test_split_names_the_class_that_is_too_small():
    images, labels = _toy_data(per_class=10)
    with pytest.raises(ValueError, match="class 0 has 10 images; test_per_class \\+ n_max = 13"):
        LT.longtail_split(images, labels, ratio=2, n_max=8, test_per_class=5, seed=0)


def test_the_digits_ship_with_scikit_learn():
    images, labels = LT.load_digits()
    assert images.shape == (1797, 64) and labels.shape == (1797,)
    assert float(images.min()) == 0.0 and float(images.max()) == 1.0
    assert int(torch.bincount(labels).min()) == 174  # the digit 8: 174 images (50 test + 120 head still fit)


def test_shifted_copies_move_one_pixel_by_hand():
    x = torch.zeros(1, 64)
    x[0, 3 * 8 + 3] = 1.0  # a single lit pixel at row 3, column 3
    c = LT.shifted_copies(x, max_shift=1)
    assert c.shape == (1, 9, 64)
    for s, (dy, dx) in enumerate((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)):
        img = c[0, s].reshape(8, 8)
        assert img.sum() == 1.0 and img[3 + dy, 3 + dx] == 1.0, (dy, dx)
    corner = torch.zeros(1, 64)
    corner[0, 0] = 1.0  # moved up or left, the corner pixel leaves the image; zeros come in
    assert LT.shifted_copies(corner, 1)[0, 0].sum() == 0.0 and LT.shifted_copies(corner, 1)[0, 8].sum() == 1.0
    g = torch.Generator().manual_seed(0)
    view = LT.shift_augment(c, torch.tensor([0, 0, 0]), g, noise=0.0)
    assert view.shape == (3, 64) and torch.all(view.sum(1) == 1.0)


# ---------------------------------------------------------------------------------------------
# Logit adjustment
# ---------------------------------------------------------------------------------------------


def test_logit_adjustment_on_a_tiny_case():
    logits, label = torch.zeros(1, 2), torch.tensor([0])
    # prior (3/4, 1/4): the adjusted logits are log 3/4 and log 1/4, so p(class 0) = 3/4
    assert float(LT.logit_adjusted_loss(logits, label, [3.0, 1.0], tau=1.0)) == pytest.approx(-math.log(0.75))
    # tau = 0 is plain cross-entropy: log 2 for two equal logits
    assert float(LT.logit_adjusted_loss(logits, label, [3.0, 1.0], tau=0.0)) == pytest.approx(math.log(2.0))
    # the rare class as the label: p = 1/4
    assert float(LT.logit_adjusted_loss(logits, torch.tensor([1]), [3.0, 1.0])) == pytest.approx(math.log(4.0))
    # counts or any multiple of them: the same prior
    x, y = torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 1])
    assert torch.allclose(LT.logit_adjusted_loss(x, y, [30, 20, 10]), LT.logit_adjusted_loss(x, y, [3, 2, 1]))
    assert torch.allclose(LT.logit_adjusted_loss(x, y, [3, 2, 1], tau=0.0), F.cross_entropy(x, y))


def test_logit_adjustment_names_bad_counts():
    with pytest.raises(ValueError, match="one entry per class \\(2\\), got shape \\(3,\\)"):
        LT.logit_adjusted_loss(torch.zeros(1, 2), torch.tensor([0]), [1, 2, 3])
    with pytest.raises(ValueError, match="must be > 0, got \\[1.0, 0.0\\]"):
        LT.logit_adjusted_loss(torch.zeros(1, 2), torch.tensor([0]), [1, 0])


# ---------------------------------------------------------------------------------------------
# Metrics on hand-placed features
# ---------------------------------------------------------------------------------------------


class _Fixed(nn.Module):
    """Returns given (z, logits) whatever the input, to place test features by hand."""

    def __init__(self, z: torch.Tensor, logits: torch.Tensor) -> None:
        super().__init__()
        self.z, self.logits = z, logits

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.z, self.logits


def test_class_groups_by_hand():
    assert LT.class_groups(10, 3, 3) == {"head": [0, 1, 2], "middle": [3, 4, 5, 6], "tail": [7, 8, 9]}
    assert LT.class_groups(4, 1, 1) == {"head": [0], "middle": [1, 2], "tail": [3]}
    with pytest.raises(ValueError, match="head=2, tail=2"):
        LT.class_groups(4, 2, 2)


def test_evaluate_on_hand_placed_features():
    # 4 classes, 2 test images each; class c's features lie on the axis e_c (orthogonal class means)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    z = 3.0 * torch.eye(4)[y]  # any length: features are normalised
    pred = torch.tensor([0, 0, 1, 1, 2, 0, 3, 1])  # one miss in rank 2 and one in rank 3
    # the fixed module answers every input alike, so the "training" features are the test features here
    split = LT.LongTailSplit(torch.zeros(8, 64), y, torch.zeros(8, 64), y, [8, 4, 2, 1], [0, 1, 2, 3], 8.0, 0)
    ev = LT.evaluate(_Fixed(z, F.one_hot(pred, 4).float()), split, head=1, tail=1)
    assert ev["recall"] == [1.0, 1.0, 0.5, 0.5]
    assert ev["balanced_accuracy"] == 0.75
    assert (ev["head_recall"], ev["middle_recall"], ev["tail_recall"]) == (1.0, 0.75, 0.5)
    # the nearest class mean reads the features, not the classifier: every feature sits on its class mean
    assert (ev["ncm_balanced_accuracy"], ev["ncm_tail_recall"]) == (1.0, 1.0)
    assert ev["alignment"] == pytest.approx(1.0) and ev["tail_alignment"] == pytest.approx(1.0)
    assert ev["min_angle_deg"] == pytest.approx(90.0) and ev["tail_min_angle_deg"] == pytest.approx(90.0)
    # 56 ordered pairs: 8 within a class (|u - v|^2 = 0), 48 across (orthogonal: |u - v|^2 = 2 -> exp(-4))
    assert ev["uniformity"] == pytest.approx(math.log((8 + 48 * math.exp(-4)) / 56))


def test_evaluate_smallest_angle_of_a_tail_class_by_hand():
    # 3 classes in the plane at 0, 30 and 120 degrees: smallest angle 30 (classes 0 and 1), class 2's is 90
    deg = torch.tensor([0.0, 30.0, 120.0])
    z = torch.stack([torch.cos(torch.deg2rad(deg)), torch.sin(torch.deg2rad(deg))], 1)
    y = torch.tensor([0, 1, 2])
    split = LT.LongTailSplit(torch.zeros(3, 64), y, torch.zeros(3, 64), y, [4, 2, 1], [0, 1, 2], 4.0, 0)
    ev = LT.evaluate(_Fixed(z, F.one_hot(y, 3).float()), split, head=1, tail=1)
    assert ev["min_angle_deg"] == pytest.approx(30.0, abs=1e-4)
    assert ev["tail_min_angle_deg"] == pytest.approx(90.0, abs=1e-4)


def test_paired_difference_by_hand():
    d = LT.paired_difference([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])  # per-seed differences 1, 2, 3
    se = 1.0 / math.sqrt(3)  # sample std 1
    assert d["difference"] == pytest.approx(2.0) and d["se"] == pytest.approx(se) and d["n"] == 3
    t = 4.302652729749464  # Student's t, 97.5 % quantile, 2 degrees of freedom
    assert (d["lo"], d["hi"]) == (pytest.approx(2.0 - t * se), pytest.approx(2.0 + t * se))
    one = LT.paired_difference([1.0], [2.0])
    assert one["difference"] == 1.0 and math.isnan(one["se"]) and math.isnan(one["lo"])
    assert LT.paired_difference([1.0, float("nan"), 3.0], [2.0, 5.0, 5.0])["n"] == 2  # a NaN pair is left out
    with pytest.raises(ValueError, match="same length, got 2 and 3"):
        LT.paired_difference([1.0, 2.0], [1.0, 2.0, 3.0])


def _rows(tail_gain: float) -> list[dict]:
    """Two methods over three seeds at one ratio: 'b' gains ``tail_gain`` (plus seed noise) on the tail only."""
    rows = []
    for seed, noise in enumerate([0.0, 0.01, -0.01]):
        base = {"ratio": 10.0, "seed": seed, "balanced_accuracy": 0.8, "head_recall": 0.9, "middle_recall": 0.8,
                "recall": [0.9, 0.8, 0.7], "alignment": 0.5, "tail_alignment": 0.5, "uniformity": -2.0,
                "min_angle_deg": 60.0, "tail_min_angle_deg": 70.0}
        rows.append({**base, "method": "a", "tail_recall": 0.5})
        rows.append({**base, "method": "b", "tail_recall": 0.5 + tail_gain + noise})
    return rows


def test_verdict_reads_the_numbers():
    v = LT.verdict(_rows(0.2), comparisons=[("does b help?", "a", "b")])
    calls = v["calls"]["does b help?"]["10"]
    assert calls == {"balanced_accuracy": "no measurable difference", "tail_recall": "helps",
                     "middle_recall": "no measurable difference", "head_recall": "no measurable difference"}
    assert v["lines"][0] == "does b help? (b - a) -> helps: tail at ratio 10"
    assert v["lines"][1].startswith("  ratio 10 (n=3 seeds): balanced accuracy +0.000 [+0.000, +0.000] no measurable")
    hurt = LT.verdict(_rows(-0.2), comparisons=[("does b help?", "a", "b")])
    assert hurt["lines"][0].endswith("-> hurts: tail at ratio 10")
    noise = LT.verdict(_rows(0.0), comparisons=[("does b help?", "a", "b")])
    assert noise["calls"]["does b help?"]["10"]["tail_recall"] == "no measurable difference"
    assert noise["lines"][0].endswith("no measurable difference at any ratio, for any measure")
    # geometry: larger is not better, so the words say which way it moved
    geo = LT.verdict(_rows(0.2), comparisons=[("b?", "a", "b")], measures=("tail_recall",), words=("larger", "smaller"))
    assert geo["lines"][0] == "b? (b - a) -> larger: tail at ratio 10"
    assert LT.verdict(_rows(0.2), comparisons=[("absent?", "a", "zzz")]) == {"lines": [], "calls": {}}
    # two seeds: no call, however clear the two differences look
    two = LT.verdict([r for r in _rows(0.2) if r["seed"] < 2], comparisons=[("b?", "a", "b")])
    assert set(two["calls"]["b?"]["10"].values()) == {"not enough seeds"}
    assert two["lines"][0].endswith("not enough seeds to tell (a call needs at least 3 paired seeds)")


def test_summarise_gives_mean_sample_std_and_the_paired_difference():
    s = LT.summarise(_rows(0.2), reference="a", keys=("tail_recall",))
    b = s["10"]["b"]["tail_recall"]
    assert b["mean"] == pytest.approx(0.7) and b["std"] == pytest.approx(0.01) and b["n"] == 3
    assert b["diff"] == pytest.approx(0.2) and b["se"] == pytest.approx(0.01 / math.sqrt(3))
    assert math.isnan(s["10"]["a"]["tail_recall"]["diff"])  # the reference against itself
    assert s["10"]["a"]["recall_by_rank"]["mean"] == pytest.approx([0.9, 0.8, 0.7])


# ---------------------------------------------------------------------------------------------
# Training (a few steps) and the configuration
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_split() -> LT.LongTailSplit:
    images, labels = LT.load_digits()
    return LT.longtail_split(images, labels, ratio=10, n_max=30, test_per_class=20, seed=0)


@pytest.mark.parametrize("method", list(LT.METHODS))
def test_every_method_trains_a_few_steps(method, small_split):
    cfg = LT.StudyConfig(iterations=6, batch_size=16, queue_size=32)
    tr = LT.train_method(method, small_split, cfg, seed=0)
    assert math.isfinite(tr.final_loss) and not tr.encoder.training
    assert (tr.allocator is not None) == LT.METHODS[method].centres
    if LT.METHODS[method].contrastive:
        assert len(tr.taus) == 6
    ev = LT.evaluate(tr, small_split)
    assert len(ev["recall"]) == 10 and 0.0 <= ev["balanced_accuracy"] <= 1.0


def test_methods_share_initial_weights_and_batches(small_split):
    # logit adjustment with tau = 0 is plain cross-entropy: same seed, same weights at the end
    cfg = LT.StudyConfig(iterations=5, batch_size=16, adjust_tau=0.0)
    a = LT.train_method("ce", small_split, cfg, seed=1).encoder.state_dict()
    b = LT.train_method("logit_adjusted", small_split, cfg, seed=1).encoder.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = LT.train_method("ce", small_split, cfg, seed=2).encoder.state_dict()
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_ats_runs_one_cosine_over_the_run(small_split):
    cfg = LT.StudyConfig(iterations=8, batch_size=16, tau_min=0.1, tau_max=1.0)
    taus = LT.train_method("supcon_ats", small_split, cfg, seed=0).taus
    assert taus[0] == pytest.approx(1.0) and taus[4] == pytest.approx(0.1) and taus[2] == pytest.approx(0.55)
    assert set(LT.train_method("supcon", small_split, cfg, seed=0).taus) == {cfg.fixed_tau}


def test_bad_configuration_and_method_names_are_errors(small_split):
    with pytest.raises(ValueError, match="tau_min must be <= tau_max, got 2.0 > 1.0"):
        LT.StudyConfig(tau_min=2.0)
    with pytest.raises(ValueError, match="actionpp_centre_term .* got 'both'"):
        LT.StudyConfig(actionpp_centre_term="both")
    with pytest.raises(ValueError, match="unknown method 'focal'"):
        LT.train_method("focal", small_split, LT.StudyConfig(iterations=1), seed=0)
    with pytest.raises(ValueError, match="needs dim >= 9, got dim=4"):
        LT.train_method("actionpp", small_split, LT.StudyConfig(iterations=1, dim=4), seed=0)


# ---------------------------------------------------------------------------------------------
# The exercises of notebook 07
# ---------------------------------------------------------------------------------------------


def _counts_by_hand(n_max, k, ratio):
    return [max(1, math.floor(n_max * ratio ** (-r / (k - 1)) + 0.5)) for r in range(k)]


def _adjusted_by_hand(logits, labels, counts, tau):
    prior = counts / counts.sum()
    return F.cross_entropy(logits + tau * torch.log(prior), labels)


def test_hand_written_answers_pass_and_library_calls_do_not():
    assert lab.run_check("07.longtail_counts", _counts_by_hand).passed
    assert lab.run_check("07.logit_adjustment", _adjusted_by_hand).passed
    for name, fn in (("07.longtail_counts", LT.longtail_counts), ("07.logit_adjustment", LT.logit_adjusted_loss)):

        def helper(*a, fn=fn):  # a helper of the student's that lets the library do the work
            return fn(*a)

        # the library itself, a thin wrapper, a helper called from the answer, a partial
        for answer in (fn, lambda *a, fn=fn: fn(*a), lambda *a: helper(*a), functools.partial(fn)):
            out = lab.run_check(name, answer)
            assert out.status == "not yet right" and "actionpp.longtail." in out.message, out.line
        assert lab.run_check(name, None).status == "not done yet"
    # after a refused answer, a hand-written one passes again
    assert lab.run_check("07.longtail_counts", _counts_by_hand).passed


def test_common_slips_are_not_yet_right():
    truncated = lambda n, k, r: [max(1, int(n * r ** (-i / (k - 1)))) for i in range(k)]  # noqa: E731
    subtracted = lambda lg, y, c, t: F.cross_entropy(lg - t * torch.log(c / c.sum()), y)  # noqa: E731
    for name, answer in (("07.longtail_counts", truncated), ("07.logit_adjustment", subtracted)):
        out = lab.run_check(name, answer)
        assert out.status == "not yet right" and out.message.startswith("for ") and "Hint:" in out.line, out.line
    # another part of the library is allowed: the shape checks of the loss are not what is asked
    assert lab.run_check("07.logit_adjustment", lambda lg, y, c, t: _adjusted_by_hand(
        lg, y, c, t) + 0.0 * LT.class_groups(3, 1, 1)["head"][0]).passed
