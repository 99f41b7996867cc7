"""Class centres: closed-form simplex, convergence of `optimize`, Tammes codes, the tsc recipe, files, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from actionpp import centers as C
from actionpp.centers import (
    TAMMES_DEG,
    CentersError,
    load_centers,
    make_centers,
    min_angle_deg,
    pairwise_cosines,
    save_centers,
    simplex_centers,
    uniformity_energy,
)


def _offdiag(c: torch.Tensor) -> torch.Tensor:
    return c[~torch.eye(c.shape[0], dtype=torch.bool)]


def simplex_energy(k: int, t: float) -> float:
    """Closed form of the uniformity energy at the simplex: every off-diagonal cosine is -1/(K-1)."""
    return math.log(math.exp(1 / t) + (k - 1) * math.exp(-1 / ((k - 1) * t)))


@pytest.mark.parametrize("k,d", [(2, 2), (3, 2), (4, 3), (4, 128), (10, 9), (10, 496), (129, 128)])
def test_simplex_closed_form_has_all_cosines_minus_one_over_k_minus_one(k, d):
    v = simplex_centers(k, d, seed=3)
    assert v.shape == (k, d) and v.dtype == torch.float32
    torch.testing.assert_close(v.double().norm(dim=1), torch.ones(k, dtype=torch.float64), atol=1e-6, rtol=0)
    cos = _offdiag(pairwise_cosines(v.double()))
    assert (cos + 1 / (k - 1)).abs().max() < 1e-6


def test_simplex_seed_rotates_but_keeps_geometry():
    a, b = simplex_centers(4, 16, seed=0), simplex_centers(4, 16, seed=1)
    assert not torch.allclose(a, b)
    torch.testing.assert_close(a @ a.T, b @ b.T, atol=1e-6, rtol=0)
    torch.testing.assert_close(simplex_centers(4, 16, seed=0), a)


def test_simplex_too_many_points_names_the_limit():
    with pytest.raises(CentersError, match=r"K <= d \+ 1 = 4"):
        simplex_centers(5, 3)


def test_uniformity_energy_matches_closed_form_and_naive_formula():
    v = simplex_centers(4, 128).double()
    assert float(uniformity_energy(v, 0.07)) == pytest.approx(simplex_energy(4, 0.07), rel=1e-12)
    x = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    xn = torch.nn.functional.normalize(x, dim=1)
    naive = torch.logsumexp(xn @ xn.T / 0.5, dim=1).mean()
    torch.testing.assert_close(uniformity_energy(x, 0.5), naive)


@pytest.mark.parametrize("d", [128, 496])
@pytest.mark.parametrize("k", [2, 4, 10])
def test_optimize_converges_to_the_simplex(k, d):
    c = make_centers(k, d, method="optimize", seed=0)
    assert c.vectors.shape == (k, d) and c.vectors.dtype == torch.float32
    cos = _offdiag(pairwise_cosines(c.vectors.double()))
    assert (cos + 1 / (k - 1)).abs().max() < 1e-5
    assert c.meta["max_abs_cos_error_vs_simplex"] < 1e-5
    assert c.meta["energy"] == pytest.approx(simplex_energy(k, 0.07), rel=1e-9)
    assert c.meta["min_angle_deg"] == pytest.approx(math.degrees(math.acos(-1 / (k - 1))), abs=1e-3)


def test_optimize_is_deterministic_per_seed():
    a, b, c = (make_centers(4, 32, seed=s).vectors for s in (5, 5, 6))
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert not torch.allclose(a, c)


def test_optimize_beyond_simplex_finds_the_octahedron_on_s2():
    # 6 points on S^2: the octahedron (all nearest neighbours at 90 degrees) is the
    # universally optimal configuration; the K > d + 1 branch must find it.
    c = make_centers(6, 3, method="optimize", restarts=1)
    assert c.meta["max_abs_cos_error_vs_simplex"] is None
    assert c.meta["min_angle_deg"] == pytest.approx(90.0, abs=1e-3)
    cos = pairwise_cosines(c.vectors.double())
    # each point has exactly one antipode
    assert torch.equal((cos < -0.999).sum(dim=1), torch.ones(6, dtype=torch.long))


def _autograd_grad(fn, x):
    x = x.clone().requires_grad_(True)
    e, _ = fn(x)
    (g,) = torch.autograd.grad(e.sum(), x)
    return g


@pytest.mark.parametrize("factory", [lambda: C._unif_energy_grad(0.3), lambda: C._softmin_dist_grad(16.0)])
def test_closed_form_energy_gradients_match_autograd(factory):
    fn = factory()
    x = torch.nn.functional.normalize(
        torch.randn(3, 7, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1)), dim=2
    )
    _, g = fn(x)
    ga = _autograd_grad(fn, x)
    # compare tangent parts (radial parts do not matter on the sphere)
    torch.testing.assert_close(C._tangent(g, x), C._tangent(ga, x), atol=1e-10, rtol=1e-8)


FAST_TAMMES = (5, 7, 13, 24)


@pytest.mark.parametrize("k", FAST_TAMMES)
def test_tammes_refinement_within_one_percent_fast_subset(k):
    c = make_centers(k, 3, method="tammes", seed=0)
    assert c.meta["min_angle_deg"] >= 0.99 * TAMMES_DEG[k]
    assert c.meta["min_angle_deg"] <= TAMMES_DEG[k] + 0.01  # cannot beat the best known code


@pytest.mark.slow
@pytest.mark.parametrize("k", sorted(set(TAMMES_DEG) - set(FAST_TAMMES)))
def test_tammes_refinement_within_one_percent_all(k):
    c = make_centers(k, 3, method="tammes", seed=0)
    assert 0.99 * TAMMES_DEG[k] <= c.meta["min_angle_deg"] <= TAMMES_DEG[k] + 0.01


def test_min_angle_of_the_square_is_ninety_degrees():
    sq = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [-1.0, 0, 0], [0, -1.0, 0]])
    assert min_angle_deg(sq) == pytest.approx(90.0, abs=1e-9)


def test_tsc_recipe_trace_and_lowest_loss_iterate():
    steps = 300
    c = make_centers(4, 16, method="tsc", seed=0, steps=steps, return_trace=True)
    assert c.trace is not None
    assert c.trace["energy"].shape == (steps,) and c.trace["min_angle_deg"].shape == (steps,)
    # the kept iterate is the one with the lowest (float32) loss of the trace
    v = c.vectors
    naive32 = float(torch.log(torch.exp(v @ v.T / 0.07).sum(dim=1)).mean())
    assert naive32 == pytest.approx(float(np.min(c.trace["energy"])), abs=3e-6)
    # and it cannot be below the true minimum (the simplex energy)
    assert c.meta["energy"] >= simplex_energy(4, 0.07) - 1e-12
    assert c.meta["steps"] == steps and c.meta["lr"] == 1e-3


@pytest.mark.slow
def test_tsc_recipe_stalls_far_from_antipodal_for_two_classes():
    # method.md section 1: in float32 the energy is flat near the optimum and the
    # recipe keeps an early iterate; for K = 2 it ends far from cos = -1.
    c = make_centers(2, 128, method="tsc", seed=0)
    assert c.meta["max_abs_cos_error_vs_simplex"] > 0.1


@pytest.mark.parametrize("suffix", [".npz", ".pt"])
def test_save_load_round_trip(tmp_path, suffix):
    c = make_centers(4, 8, method="simplex", seed=2)
    p = save_centers(tmp_path / f"c{suffix}", c)
    back = load_centers(p)
    torch.testing.assert_close(back.vectors, c.vectors, atol=0, rtol=0)
    assert back.meta == c.meta
    if suffix == ".pt":
        obj = torch.load(p, weights_only=True)  # no pickled objects inside
        assert set(obj) == {"vectors", "meta_json"}


def test_file_errors_name_the_file(tmp_path):
    c = make_centers(2, 4, method="simplex")
    with pytest.raises(CentersError, match=r"\.txt"):
        save_centers(tmp_path / "c.txt", c)
    with pytest.raises(CentersError, match="no such centres file"):
        load_centers(tmp_path / "missing.npz")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(num_classes=1, dim=4), "num_classes"),
        (dict(num_classes=4, dim=1), "dim"),
        (dict(num_classes=4, dim=4, method="nope"), "unknown centre method 'nope'"),
        (dict(num_classes=4, dim=4, t=0.0), "t must be > 0"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(CentersError, match=match):
        make_centers(**kwargs)


def test_cli_json(capsys):
    from actionpp.cli import main

    assert main(["centers", "--classes", "4", "--dim", "128", "--method", "optimize", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["classes"] == 4 and out["dim"] == 128 and out["method"] == "optimize"
    assert out["max_abs_cos_error_vs_simplex"] < 1e-5
    assert out["min_angle_deg"] == pytest.approx(109.4712206, abs=1e-4)
    assert out["energy"] == pytest.approx(simplex_energy(4, 0.07), rel=1e-9)
    assert {"seconds", "seed"} <= set(out)


def test_cli_null_error_beyond_simplex_and_out_file(capsys, tmp_path):
    from actionpp.cli import main

    f = tmp_path / "c.npz"
    assert main(["centers", "--classes", "4", "--dim", "2", "--json", "--out", str(f)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["max_abs_cos_error_vs_simplex"] is None
    assert out["min_angle_deg"] == pytest.approx(90.0, abs=1e-3)  # 4 points on the circle: a square
    assert load_centers(f).vectors.shape == (4, 2)
    assert main(["centers", "--classes", "6", "--dim", "3", "--method", "simplex"]) == 2
    assert "K <= d + 1" in capsys.readouterr().err
