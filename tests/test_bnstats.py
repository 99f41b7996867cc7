"""Re-estimating BatchNorm's running statistics (actionpp.bnstats) and the grid's BatchNorm check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from actionpp import replicate as rp
from actionpp.bnstats import check_batchnorm, draw_batches, reestimate_batchnorm
from actionpp.config import load_config
from actionpp.evaluate import evaluate_run
from actionpp.replicate.batchnorm import BATCHNORM, BatchNormSpec, batchnorm_markdown, check_run
from actionpp.replicate.score import ScoreSpec
from actionpp.replicate.tables import RunRecord
from actionpp.train import train

FAST = ["train.pretrain_iters=2", "train.finetune_iters=4", "runtime.checkpoint_every=2"]


def _two_batches() -> list[torch.Tensor]:
    # one channel, 2 images of 1 x 2 pixels per batch: values 1, 3, 5, 7 then 0, 0, 0, 4
    return [torch.tensor([[[[1.0, 3.0]]], [[[5.0, 7.0]]]]), torch.tensor([[[[0.0, 0.0]]], [[[0.0, 4.0]]]])]


def test_running_statistics_are_the_average_of_the_batch_statistics() -> None:
    """By hand: batch 1 has mean 4 and unbiased variance (9+1+1+9)/3 = 20/3; batch 2 mean 1 and (1+1+1+9)/3 = 4.
    The re-estimated running mean is (4 + 1)/2 = 2.5, the running variance (20/3 + 4)/2 = 16/3; whatever
    the layer held before is gone, and its momentum and the network's mode are as before."""
    bn = nn.BatchNorm2d(1, momentum=0.3)
    bn.running_mean.fill_(100.0)
    bn.running_var.fill_(0.01)
    net = nn.Sequential(bn).train()
    assert reestimate_batchnorm(net, _two_batches()) == 4
    assert bn.running_mean.item() == pytest.approx(2.5, abs=1e-6)
    assert bn.running_var.item() == pytest.approx(16 / 3, abs=1e-5)
    assert bn.momentum == 0.3 and net.training and bn.training


def test_dropout_stays_off_while_the_statistics_are_re_estimated() -> None:
    """Dropout before the BatchNorm layer would zero about half the inputs (and double the rest) in train
    mode; re-estimating keeps it in eval mode, so the statistics equal those without the dropout layer."""
    torch.manual_seed(0)
    with_dropout = nn.Sequential(nn.Dropout(0.5), nn.BatchNorm2d(1))
    plain = nn.Sequential(nn.BatchNorm2d(1))
    reestimate_batchnorm(with_dropout, _two_batches())
    reestimate_batchnorm(plain, _two_batches())
    assert torch.equal(with_dropout[1].running_mean, plain[0].running_mean)
    assert torch.equal(with_dropout[1].running_var, plain[0].running_var)
    assert with_dropout.training and with_dropout[0].training  # back in the train mode it started in


def test_a_refused_re_estimation_leaves_the_statistics_as_they_were() -> None:
    bn = nn.BatchNorm2d(1)
    bn.running_mean.fill_(7.0)
    net = nn.Sequential(bn)
    with pytest.raises(ValueError, match="at least 2"):
        reestimate_batchnorm(net, [_two_batches()[0], torch.ones(1, 1, 1, 2)])
    assert bn.running_mean.item() == 7.0 and bn.num_batches_tracked.item() == 0
    with pytest.raises(ValueError, match="no batch"):
        reestimate_batchnorm(net, [])
    assert bn.running_mean.item() == 7.0
    with pytest.raises(ValueError, match="no BatchNorm"):
        reestimate_batchnorm(nn.Sequential(nn.Conv2d(1, 1, 1)), _two_batches())


def test_draw_batches_mixes_parts_and_uses_every_image_before_repeating() -> None:
    lab = torch.arange(3.0).view(3, 1, 1, 1)  # labelled images 0, 1, 2
    unl = 10 + torch.arange(5.0).view(5, 1, 1, 1)  # unlabelled images 10..14
    batches = list(draw_batches([(lab, 1), (unl, 2)], batches=5, seed=0))
    assert [b.shape[0] for b in batches] == [3] * 5
    firsts = [int(b[0].item()) for b in batches]
    rest = [int(v) for b in batches for v in b[1:].flatten().tolist()]
    assert sorted(firsts[:3]) == [0, 1, 2] and all(v < 3 for v in firsts)  # a permutation, then again
    assert sorted(rest[:5]) == [10, 11, 12, 13, 14] and all(v >= 10 for v in rest)
    assert [torch.equal(a, b) for a, b in zip(batches, draw_batches([(lab, 1), (unl, 2)], 5, seed=0),
                                                strict=True)] == [True] * 5  # seeded
    with pytest.raises(ValueError, match="no images"):
        list(draw_batches([(unl[:0], 4)], 1, seed=0))


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A grid run folder holding a finished ACTION++ smoke run on the phantom in ``run/``."""
    folder = tmp_path_factory.mktemp("bn")
    train(load_config("phantom_smoke", ["method.name=actionpp", *FAST]), run_dir=folder / "run", progress=False)
    return folder


def test_check_batchnorm_scores_the_stored_statistics_as_evaluate_does_and_ignores_them_when_re_estimating(
        smoke_run: Path, tmp_path: Path) -> None:
    """`stored` is exactly what evaluate_run reports; the re-estimated scores do not depend on what the
    checkpoint's running statistics were (they are reset): scrambled ones give the same re-estimated scores."""
    ckpt = smoke_run / "run" / "last.pt"
    report = check_batchnorm(ckpt, split="val", images=16, seed=0)
    assert report["stored"] == evaluate_run(ckpt, None, split="val", which="last").summary
    assert report["images"] == 16 and report["batches"] * report["batch"] == 16
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    for key, value in state["student"].items():
        if key.endswith("running_var"):
            value.mul_(1e4)
        if key.endswith("running_mean"):
            value.add_(3.0)
    scrambled = tmp_path / "scrambled.pt"
    torch.save(state, scrambled)
    again = check_batchnorm(scrambled, split="val", images=16, seed=0)
    assert again["unlabelled"] == report["unlabelled"] and again["mixed"] == report["mixed"]


def test_a_run_is_checked_once_and_the_table_says_what_changed(smoke_run: Path) -> None:
    spec, score = BatchNormSpec(images=16), ScoreSpec(run="run", which="last", splits=("val",))
    first = check_run(smoke_run, score, spec)
    stamp = (smoke_run / BATCHNORM).stat().st_mtime_ns
    assert check_run(smoke_run, score, spec) == first and (smoke_run / BATCHNORM).stat().st_mtime_ns == stamp
    assert json.loads((smoke_run / BATCHNORM).read_text())["spec"] == {"split": "val", "images": 16, "seed": 0}
    check_run(smoke_run, score, BatchNormSpec(images=32))  # another check: computed again
    assert (smoke_run / BATCHNORM).stat().st_mtime_ns != stamp

    def fake(dice: tuple[float, float, float], missed: tuple[int, int, int]) -> dict:
        return {"split": "val", "images": 400, "batch": 8,
                **{k: {"dice": d, "empty": {"missed": m}}
                   for k, d, m in zip(("stored", "unlabelled", "mixed"), dice, missed, strict=True)}}

    def record(method: str, seed: int) -> RunRecord:
        return RunRecord(f"method={method}_lab=3_seed={seed}", {"METHOD": method, "LABELLED_PATIENTS": 3, "SEED": seed},
                         {"method": method, "labelled_patients": 3}, smoke_run)

    md = batchnorm_markdown([(record("action", 0), fake((0.10, 0.40, 0.12), (40, 2, 38))),
                             (record("action", 1), fake((0.20, 0.30, 0.22), (30, 4, 28))),
                             (record("supervised", 0), fake((0.40, 0.38, 0.41), (5, 6, 5)))])
    # ACTION: stored (10 + 20)/2 = 15.0, unlabelled (40 + 30)/2 = 35.0, changes +30 and +10: mean +20.0
    assert "| action | 3 | 2 | 15.0 | 35.0 | 17.0 | +20.0 [+10.0, +30.0] |" in md
    assert "ACTION 15.0 -> 35.0 (+20.0, higher in 2 of 2 runs; mixed 17.0)" in md
    assert "supervised 40.0 -> 38.0 (-2.0, higher in 0 of 1 run; mixed 41.0)" in md
    assert "| method=action_lab=3_seed=0 | 10.0 | 40.0 | 12.0 | 40 | 2 | 38 |" in md


@pytest.mark.parametrize(("raw", "needle"), [
    ({"split": "test"}, "never used for a choice"),
    ({"split": "training"}, "val or train"),
    ({"images": 1}, "images"),
    ({"seed": -1}, "seed"),
    ({"volumes": 3}, "unknown key"),
])
def test_bad_batchnorm_blocks_name_the_key(raw: dict, needle: str) -> None:
    with pytest.raises(rp.GridError, match=needle):
        rp.load_grid({"name": "g", "notebooks": ["04_train"], "axes": {"SEED": [0]}, "score": {"splits": ["val"]},
                      "batchnorm_check": raw})
    with pytest.raises(rp.GridError, match="needs a 'score' block"):
        rp.load_grid({"name": "g", "notebooks": ["04_train"], "axes": {"SEED": [0]}, "batchnorm_check": {}})
