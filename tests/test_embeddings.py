"""Pixel-embedding extraction and head-versus-tail geometry (actionpp.embeddings).

Synthetic embeddings whose numbers are known in closed form, plus one extraction through a
real (untrained, tiny-input) U-Net and representation head checked against the dense head.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from actionpp import embeddings as E
from actionpp.models import RepresentationHead, UNet2D


def _unit(*rows: list[float]) -> torch.Tensor:
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=1)


def test_perfectly_aligned_classes() -> None:
    # three classes, every embedding of class c equals e_c
    emb = _unit([1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1], [0, 0, 1])
    lab = torch.tensor([0, 0, 1, 2, 2, 2])
    assert E.alignment(emb, lab, 3).tolist() == pytest.approx([1.0, 1.0, 1.0])
    acc, per = E.nearest_centre_accuracy(emb, lab, E.class_means(emb, lab, 3))
    assert acc == 1.0 and per.tolist() == [1.0, 1.0, 1.0]
    # orthogonal class means: 90 degrees apart
    ang = E.mean_angles(E.class_means(emb, lab, 3))
    assert ang[0, 1].item() == pytest.approx(90.0) and ang[1, 2].item() == pytest.approx(90.0)
    assert ang.diagonal().tolist() == pytest.approx([0.0, 0.0, 0.0], abs=1e-4)
    # one repeated point has uniformity log(exp(0)) = 0
    assert E.uniformity(emb[:2]) == pytest.approx(0.0)


def test_alignment_is_cos_theta_for_a_symmetric_fan() -> None:
    theta = math.radians(30)
    emb = _unit([math.cos(theta), math.sin(theta)], [math.cos(theta), -math.sin(theta)])
    lab = torch.tensor([0, 0])
    assert E.alignment(emb, lab, 2)[0].item() == pytest.approx(math.cos(theta))
    assert math.isnan(E.alignment(emb, lab, 2)[1].item())  # class 1 has no samples


def test_antipodal_means_angle_180_and_uniformity_minus_8() -> None:
    emb = _unit([1, 0], [-1, 0])
    lab = torch.tensor([0, 1])
    assert E.mean_angles(E.class_means(emb, lab, 2))[0, 1].item() == pytest.approx(180.0)
    # ||u - v||^2 = 4 -> log exp(-2 * 4) = -8
    assert E.uniformity(emb) == pytest.approx(-8.0)


def test_uniformity_of_a_regular_simplex() -> None:
    # K = 4 unit vectors with pairwise cosine -1/3: ||u - v||^2 = 8/3, uniformity = -2 * 8/3
    from actionpp.centers import simplex_centers

    c = simplex_centers(4, 8, seed=1)
    assert E.uniformity(c) == pytest.approx(-16 / 3, abs=1e-5)
    assert E.mean_angles(c)[0, 1].item() == pytest.approx(math.degrees(math.acos(-1 / 3)), abs=1e-3)


def test_nearest_centre_accuracy_follows_the_assignment() -> None:
    psi = _unit([1, 0, 0], [0, 1, 0], [0, 0, 1])
    assignment = torch.tensor([2, 0, 1])  # class c uses centre assignment[c]
    class_centres = psi[assignment]
    lab = torch.tensor([0, 1, 2, 2])
    emb = class_centres[lab] + 0.1 * _unit([0, 1, 1], [1, 0, 1], [1, 1, 0], [1, 1, 0])
    emb = F.normalize(emb, dim=1)
    acc, per = E.nearest_centre_accuracy(emb, lab, class_centres)
    assert acc == 1.0
    # reading the raw centres (identity assignment) instead is wrong for every class
    acc_id, _ = E.nearest_centre_accuracy(emb, lab, psi)
    assert acc_id == 0.0


def test_geometry_names_head_and_tail() -> None:
    emb = _unit([1, 0], [1, 0.1], [1, -0.1], [-1, 0])
    lab = torch.tensor([0, 0, 0, 1])
    g = E.geometry(emb, lab, 2, class_names=["BG", "RV"], frequencies=torch.tensor([0.96, 0.04]))
    assert g["head"] == "BG" and g["tail"] == "RV"
    assert g["per_class"]["RV"]["alignment"] == pytest.approx(1.0)
    assert g["per_class"]["BG"]["min_angle_deg"] == pytest.approx(180.0)
    assert g["accuracy_by"] == "class means" and g["accuracy"] == 1.0
    assert math.isnan(g["per_class"]["RV"]["uniformity"])  # one point
    with pytest.raises(ValueError, match="class_names"):
        E.geometry(emb, lab, 2, class_names=["BG"])


def test_sampling_balanced_and_natural_counts() -> None:
    lab = torch.zeros(2, 8, 8, dtype=torch.long)
    lab[0, :2, :2] = 1  # 4 pixels of class 1
    lab[1, 4:, 4:] = 2  # 16 pixels of class 2
    idx = E.sample_positions(lab, 3, "balanced", per_class=10, seed=0)
    got = lab[idx[:, 0], idx[:, 1], idx[:, 2]]
    assert torch.bincount(got, minlength=3).tolist() == [10, 4, 10]  # class 1 has only 4
    assert len({tuple(r) for r in idx.tolist()}) == idx.shape[0]  # without replacement
    nat = E.sample_positions(lab, 3, "natural", total=128, seed=0)  # every pixel once
    assert torch.bincount(lab[nat[:, 0], nat[:, 1], nat[:, 2]], minlength=3).tolist() == [108, 4, 16]
    assert torch.equal(E.sample_positions(lab, 3, "balanced", per_class=10, seed=0), idx)  # seeded
    with pytest.raises(ValueError, match="labels must lie"):
        E.sample_positions(lab, 2)
    with pytest.raises(ValueError, match="sampling"):
        E.sample_positions(lab, 3, "uniform")


def test_extract_matches_the_dense_head_at_sampled_pixels() -> None:
    torch.manual_seed(0)
    model = UNet2D(1, 4)
    head = RepresentationHead(model.feature_channels, dim=8)
    x = torch.randn(3, 1, 32, 32)
    lab = torch.randint(0, 4, (3, 32, 32))
    lab[:, :16] = 0  # make background the head class
    emb = E.extract(model, head, x, lab, 4, "balanced", per_class=20, seed=3, batch=2)
    assert emb.vectors.shape == (80, 8) and emb.sampling == "balanced"
    assert torch.allclose(emb.vectors.norm(dim=1), torch.ones(80), atol=1e-5)
    assert torch.bincount(emb.labels, minlength=4).tolist() == [20, 20, 20, 20]
    assert int(emb.pixel_counts.sum()) == 3 * 32 * 32 and emb.frequencies.argmax().item() == 0
    assert model.training and head.training  # modes restored
    model.eval()
    head.eval()
    with torch.no_grad():
        _, feats = model.forward_features(x)
        dense = F.normalize(head(feats.decoder, (32, 32)), dim=1)  # (3, 8, 32, 32)
    i = emb.index
    torch.testing.assert_close(emb.vectors, dense[i[:, 0], :, i[:, 1], i[:, 2]], atol=1e-5, rtol=1e-4)
    assert torch.equal(emb.labels, lab[i[:, 0], i[:, 1], i[:, 2]])


def test_pca_map_holds_centres_in_the_same_map() -> None:
    # points on two axes and their centres: the centres land on their class clusters
    emb = _unit([1, 0, 0], [1, 0.05, 0], [0, 1, 0], [0, 1, 0.05])
    centres = _unit([1, 0, 0], [0, 1, 0])
    pts, c2 = E.map_2d(emb, centres, method="pca")
    assert pts.shape == (4, 2) and c2 is not None and c2.shape == (2, 2)
    d = ((pts[:, None, :] - c2[None]) ** 2).sum(-1)  # (4, 2)
    assert d.argmin(1).tolist() == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="umap"):
        E.map_2d(emb, None, method="tsne")


@pytest.mark.slow
def test_umap_map_holds_centres_in_the_same_map() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.eye(3, 16)
    lab = torch.arange(3).repeat_interleave(40)
    emb = F.normalize(centres[lab] + 0.05 * torch.randn(120, 16, generator=g), dim=1)
    pts, c2 = E.umap_2d(emb, centres, seed=0)
    assert pts.shape == (120, 2) and c2.shape == (3, 2)
    d = ((pts[:, None, :] - c2[None]) ** 2).sum(-1)
    assert (d.argmin(1) == torch.arange(3).repeat_interleave(40).numpy()).mean() > 0.95


@pytest.mark.parametrize("method", ["actionpp", "supervised"])
def test_published_embedding_sample_holds_what_notebook_05_reads(tmp_path, method) -> None:
    """The runner's per-run sample (issue 19): both samplings at the same pixels, head and decoder features,
    labels and predictions, centres where the method has them, class pixel counts; small, and equal to extract."""
    import numpy as np

    from actionpp.config import load_config
    from actionpp.train import train

    cfg = load_config("phantom_smoke", [f"method.name={method}", "train.pretrain_iters=2", "train.finetune_iters=2",
                                        "runtime.checkpoint_every=2"])
    train(cfg, run_dir=tmp_path / "run", progress=False)
    path = E.write_embedding_sample(tmp_path / "run", tmp_path / E.SAMPLE_FILE, per_class=20, total=50)
    s = E.read_embedding_sample(path)
    assert s["meta"]["method"] == method and s["meta"]["split"] == "val" and s["meta"]["checkpoint"] == "last.pt"
    images, labels = E.validation_slices(cfg, "val")
    counts = torch.bincount(labels.reshape(-1), minlength=4)
    assert s["class_pixels"].tolist() == counts.tolist()
    want = torch.clamp(counts, max=20)  # balanced: min(per_class, pixels of the class) of every class
    assert np.bincount(s["balanced_labels"], minlength=4).tolist() == want.tolist()
    assert s["natural_labels"].shape == (50,)
    for sampling in ("balanced", "natural"):
        n = len(s[f"{sampling}_labels"])
        assert s[f"{sampling}_head"].shape == (n, cfg.model.rep_dim) and s[f"{sampling}_features"].shape == (n, 16)
        np.testing.assert_allclose(np.linalg.norm(s[f"{sampling}_head"], axis=1), 1.0, atol=2e-3)  # fp16 unit rows
        assert set(np.unique(s[f"{sampling}_pred"])) <= {0, 1, 2, 3}
    rm = E.load_run(tmp_path / "run", "last")
    ref = E.extract(rm.net, rm.head, images, labels, 4, "balanced", per_class=20)
    np.testing.assert_allclose(s["balanced_head"], ref.vectors.numpy(), atol=2e-3)  # the same pixels, fp16
    assert s["centres"].shape == ((4, cfg.model.rep_dim) if method == "actionpp" else (0,))
    assert path.stat().st_size < 200_000
    path.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable embedding sample"):
        E.read_embedding_sample(path)


def test_seed_difference_by_hand() -> None:
    # a: 0.70, 0.72 (s^2 2e-4), b: 0.80, 0.82 (s^2 2e-4): b - a = 0.10, se = sqrt(1e-4 + 1e-4)
    d = E.seed_difference([0.70, 0.72, float("nan")], [0.80, 0.82])
    assert d["difference"] == pytest.approx(0.10) and d["se"] == pytest.approx(math.sqrt(2e-4))
    assert (d["n_a"], d["n_b"]) == (2, 2)  # the NaN is left out
    assert math.isnan(E.seed_difference([0.7], [0.8, 0.9])["se"])


def test_seed_verdict_calls_only_beyond_two_standard_errors() -> None:
    higher = {"dice": True, "min_angle_deg": True, "accuracy": True, "centre_accuracy": True, "alignment": False}
    lines = E.seed_verdict(
        {
            "dice": ([0.70, 0.72], [0.80, 0.82]),  # +0.100, se 0.014: beyond 2 se, b ahead
            "min_angle_deg": ([50.0, 60.0], [52.0, 58.0]),  # 0, se sqrt(50 / 2 + 18 / 2) = 5.83: noise
            "alignment": ([0.5, 0.6], [0.8, 0.9]),  # +0.3, se 0.071: beyond, but no better direction
            "centre_accuracy": ([math.nan, math.nan], [0.7, 0.8]),  # a has no centres: left out
            "accuracy": ([0.9], [0.8, 0.85]),  # one value on a side: no standard error
        },
        "supervised", "actionpp", "RV", higher, labels={"dice": "Dice"}, seeds=([0, 1], [0, 1]),
    )
    assert lines[0] == ("RV (tail), Dice: supervised 0.710, actionpp 0.810; actionpp - supervised = +0.100 +- 0.014: "
                        "actionpp ahead by more than 2 standard errors")
    assert lines[1].endswith("= +0.000 +- 5.831: within 2 standard errors (seed noise)")
    assert lines[2].endswith("actionpp higher by more than 2 standard errors")
    assert not any("centre_accuracy" in x for x in lines)
    assert lines[3].endswith("(supervised: 1 value(s), actionpp: 2; fewer than two on a side): not a comparison")
    # two directed numbers with a standard error (Dice, angle): actionpp ahead on one, supervised on none
    assert lines[4] == ("In short: of 2 tail numbers where higher means better separated (accuracies, smallest angle, "
                        "Dice), actionpp is ahead beyond 2 standard errors on 1 and supervised on 0 (seeds [0, 1] and "
                        "[0, 1]).")
    assert len(lines) == 5


def test_seed_verdict_calls_nothing_without_a_spread() -> None:
    one = E.seed_verdict({"dice": ([0.7], [0.9])}, "a", "b", "RV", {"dice": True}, seeds=([0], [0]))
    assert one[0].endswith("no standard error (a: 1 value(s), b: 1; one draw): not a comparison")
    assert one[1].startswith("In short: no tail number has a standard error here (seeds [0] and [0])")
    flat = E.seed_verdict({"dice": ([0.5, 0.5], [0.5, 0.5])}, "a", "b", "RV", {"dice": True})
    assert flat[0].endswith("no spread over the seeds on either side (standard error 0): not a comparison")
    assert "nothing is called ahead" in flat[1]
