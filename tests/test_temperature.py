"""Temperature schedules: values at known points of the formulas, validation, round trips."""

from __future__ import annotations

import numpy as np
import pytest

from actionpp.temperature import Constant, Cosine, CosineEpoch, Step, make_schedule


def test_cosine_known_points():
    s = make_schedule("cosine", tau_min=0.1, tau_max=1.0, period=1000)
    assert s(0) == pytest.approx(1.0)  # t = 0 -> tau_max
    assert s(250) == pytest.approx(0.55)  # T/4 -> midpoint
    assert s(500) == pytest.approx(0.1)  # T/2 -> tau_min
    assert s(750) == pytest.approx(0.55)
    assert s(1000) == pytest.approx(1.0)  # T -> tau_max
    assert s(1500) == pytest.approx(0.1)  # periodic
    np.testing.assert_allclose(s.values(np.array([0, 250, 500, 1000])), [1.0, 0.55, 0.1, 1.0])
    # a generic point against the formula written out
    assert s(123) == pytest.approx(0.1 + 0.45 * (1 + np.cos(2 * np.pi * 123 / 1000)))


def test_constant():
    s = make_schedule("constant", tau=0.5)
    assert s(0) == 0.5 and s(10**6) == 0.5
    np.testing.assert_array_equal(s.values(np.arange(3)), [0.5, 0.5, 0.5])


def test_cosine_epoch_is_constant_within_an_epoch():
    # the official 2D SAACL schedule: its own cosine between 0.07 and 1.0 (no floor on the AnCo one)
    s = make_schedule("cosine_epoch", tau_min=0.07, tau_max=1.0, period=4, iters_per_epoch=10)
    # epoch 0 -> tau_max for iterations 0..9
    np.testing.assert_allclose(s.values(np.arange(10)), np.full(10, 1.0))
    # epoch 1 = period/4 -> midpoint 0.535; epoch 2 = period/2 -> tau_min 0.07; epoch 4 = a full cycle
    assert s(10) == pytest.approx(0.535) and s(19) == pytest.approx(0.535)
    assert s(20) == pytest.approx(0.07) and s(29) == pytest.approx(0.07)
    assert s(40) == pytest.approx(1.0)
    assert CosineEpoch(tau_min=0.05, tau_max=1.0, period=4, iters_per_epoch=10)(25) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="unknown parameter"):
        make_schedule("cosine_epoch", tau_min=0.05, tau_max=1.0, period=4, iters_per_epoch=10, floor=0.07)


def test_step_schedule():
    s = make_schedule("step", milestones=[100, 200], values=[1.0, 0.5, 0.1])
    assert [s(0), s(99), s(100), s(199), s(200), s(10**5)] == [1.0, 1.0, 0.5, 0.5, 0.1, 0.1]
    np.testing.assert_array_equal(s.values(np.array([0, 100, 250])), [1.0, 0.5, 0.1])


@pytest.mark.parametrize(
    "s",
    [Constant(0.3), Cosine(0.1, 1.0, 500), CosineEpoch(0.07, 1.0, 3, 7), Step([5, 9], [1.0, 0.5, 0.2])],
)
def test_to_dict_round_trip_and_values_match_call(s):
    d = s.to_dict()
    again = make_schedule(**d)
    it = np.arange(0, 40)
    np.testing.assert_allclose(again.values(it), s.values(it))
    np.testing.assert_allclose(s.values(it), [s(int(i)) for i in it])


@pytest.mark.parametrize(
    "kind,params,match",
    [
        ("cosine", dict(tau_min=0.0, tau_max=1.0, period=10), "tau_min must be"),
        ("cosine", dict(tau_min=0.5, tau_max=0.2, period=10), "tau_min must be <= tau_max"),
        ("cosine", dict(tau_min=0.1, tau_max=1.0, period=0), "period must be"),
        ("cosine_epoch", dict(iters_per_epoch=0), "iters_per_epoch"),
        ("constant", dict(tau=-1.0), "tau must be"),
        ("step", dict(milestones=[10, 5], values=[1, 2, 3]), "strictly increasing"),
        ("step", dict(milestones=[10], values=[1.0]), "len\\(values\\)"),
        ("cosine", dict(tau_min=0.1, tau_max=1.0, period=10, T=5), "unknown parameter"),
        ("linear", dict(), "unknown temperature schedule 'linear'"),
    ],
)
def test_validation(kind, params, match):
    with pytest.raises(ValueError, match=match):
        make_schedule(kind, **params)


def test_negative_iteration_rejected():
    with pytest.raises(ValueError, match="iteration must be >= 0"):
        Cosine()(-1)


def test_frozen():
    s = Cosine()
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        s.tau_min = 0.2  # type: ignore[misc]
