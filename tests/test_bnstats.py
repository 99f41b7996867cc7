"""Re-estimating BatchNorm's running statistics (actionpp.bnstats) and the grid's BatchNorm check."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from actionpp import replicate as rp
from actionpp.bnstats import check_batchnorm, draw_batches, reestimate_batchnorm, training_batches
from actionpp.config import load_config
from actionpp.evaluate import evaluate_run
from actionpp.replicate.batchnorm import BATCHNORM, BatchNormSpec, RunBusy, batchnorm_markdown, check_run, checks_for
from actionpp.replicate.run import run_lock
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


def test_with_dropout_on_the_statistics_are_those_a_training_forward_records() -> None:
    """dropout=True runs the network as training does: a dropout of p = 0.5 before the layer zeroes inputs and
    doubles the rest, so the recorded variance is no longer the clean one (16/3 for these batches)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Dropout(0.5), nn.BatchNorm2d(1)).eval()
    reestimate_batchnorm(net, _two_batches(), dropout=True)
    assert net[1].running_var.item() != pytest.approx(16 / 3, abs=1e-3)
    assert not net.training and not net[0].training  # modes as before


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


def test_every_module_keeps_its_own_mode() -> None:
    """A network in eval mode with one sub-module in train mode (a dropout someone left on) comes back so."""
    net = nn.Sequential(nn.BatchNorm2d(1), nn.Dropout(0.5), nn.BatchNorm2d(1)).eval()
    net[1].train()
    reestimate_batchnorm(net, _two_batches())
    assert [m.training for m in net.modules()] == [False, False, True, False]


def _parts(batch: torch.Tensor) -> str:
    """'L' for a labelled image (values below 10 in the fakes below), 'U' for an unlabelled one."""
    return "".join("L" if v < 10 else "U" for v in batch.flatten().tolist())


@pytest.mark.parametrize(("unlabelled", "forward", "expected"), [
    (True, "joint", ["LLUUU"] * 4),  # one forward of 2 labelled + 3 unlabelled: 20 images in 4 batches
    (True, "separate", ["LL", "UUU"] * 4),  # two forwards per step, each its own BatchNorm batch
    (False, "joint", ["LL"] * 10),  # supervised: labelled batches only, 20 images in 10
])
def test_training_batches_are_composed_as_the_methods_fine_tuning_forward(unlabelled: bool, forward: str,
                                                                          expected: list[str]) -> None:
    cfg = SimpleNamespace(train=SimpleNamespace(batch_labelled=2, batch_unlabelled=3, finetune_forward=forward),
                          method=SimpleNamespace(finetune_unlabelled=unlabelled), data=SimpleNamespace(crop=(16,)))
    x_l = torch.arange(3.0).view(3, 1, 1, 1)
    x_u = 10 + torch.arange(7.0).view(7, 1, 1, 1)
    batches, described = training_batches(cfg, x_l, x_u, images=20, seed=0)
    assert [_parts(b) for b in batches] == expected
    assert described.startswith("2 labelled")


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
    # 3D: a list of differently sized volumes, each image a random crop of a drawn volume
    vols = [torch.full((1, 20, 18, 17), float(i)) for i in range(3)]
    crops = list(draw_batches([(vols, 2)], batches=3, seed=0, crop=(16, 16, 16)))
    assert [tuple(b.shape) for b in crops] == [(2, 1, 16, 16, 16)] * 3
    drawn = [int(b[j].unique().item()) for b in crops for j in range(2)]
    assert sorted(drawn[:3]) == [0, 1, 2]  # the first three images: one permutation of the three volumes


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
    stored = evaluate_run(ckpt, None, split="val", which="last")
    assert report["stored"] == stored.summary
    assert report["iteration"] == stored.iteration == torch.load(ckpt, weights_only=False)["iteration"] > 0
    cfg = load_config("phantom_smoke", ["method.name=actionpp"])
    b_l, b_u = cfg.train.batch_labelled, cfg.train.batch_unlabelled
    assert report["images"] == 16 // (b_l + b_u) * (b_l + b_u) and report["batch"] == b_l + b_u
    assert report["training_batches"] == f"{b_l} labelled + {b_u} unlabelled images in one batch"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    for key, value in state["student"].items():
        if key.endswith("running_var"):
            value.mul_(1e4)
        if key.endswith("running_mean"):
            value.add_(3.0)
    scrambled = tmp_path / "scrambled.pt"
    torch.save(state, scrambled)
    again = check_batchnorm(scrambled, split="val", images=16, seed=0)
    for way in ("unlabelled", "training", "training_dropout"):
        assert again[way] == report[way]


def test_a_run_is_checked_once_and_the_table_says_what_changed(smoke_run: Path) -> None:
    spec, score = BatchNormSpec(images=16), ScoreSpec(run="run", which="last", splits=("val",))
    first = check_run(smoke_run, score, spec)
    stamp = (smoke_run / BATCHNORM).stat().st_mtime_ns
    assert check_run(smoke_run, score, spec) == first and (smoke_run / BATCHNORM).stat().st_mtime_ns == stamp
    assert json.loads((smoke_run / BATCHNORM).read_text())["spec"] == {"split": "val", "images": 16, "seed": 0}
    check_run(smoke_run, score, BatchNormSpec(images=32))  # another check: computed again
    assert (smoke_run / BATCHNORM).stat().st_mtime_ns != stamp
    stamp = (smoke_run / BATCHNORM).stat().st_mtime_ns
    ckpt = smoke_run / "run" / "last.pt"
    st = ckpt.stat()
    os.utime(ckpt, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the checkpoint replaced: the check is stale
    with run_lock(smoke_run), pytest.raises(RunBusy, match="being trained"):  # and a trainer holds the run
        check_run(smoke_run, score, BatchNormSpec(images=32))
    assert (smoke_run / BATCHNORM).stat().st_mtime_ns == stamp
    check_run(smoke_run, score, BatchNormSpec(images=32))
    assert (smoke_run / BATCHNORM).stat().st_mtime_ns != stamp
    problems: list[str] = []
    broken = RunRecord("broken", {}, {}, smoke_run.parent / "no-such-run")
    (broken.path / "run").mkdir(parents=True)
    assert checks_for([broken], score, spec, progress=False, problems=problems) == []
    assert len(problems) == 1 and problems[0].startswith("broken: ")

    def fake(dice: tuple[float, ...], missed: tuple[int, ...]) -> dict:
        return {"split": "val", "images": 400, "batch": 8,
                **{k: {"dice": d, "empty": {"missed": m}} for k, d, m in
                   zip(("stored", "unlabelled", "training", "training_dropout"), dice, missed, strict=True)}}

    def record(method: str, seed: int) -> RunRecord:
        return RunRecord(f"method={method}_lab=3_seed={seed}", {"METHOD": method, "LABELLED_PATIENTS": 3, "SEED": seed},
                         {"method": method, "labelled_patients": 3}, smoke_run)

    md = batchnorm_markdown([(record("action", 0), fake((0.10, 0.40, 0.12, 0.11), (40, 2, 38, 39))),
                             (record("action", 1), fake((0.20, 0.30, 0.22, 0.19), (30, 4, 28, 31))),
                             (record("supervised", 0), fake((0.40, 0.38, 0.41, 0.42), (5, 6, 5, 4)))])
    # ACTION: stored (10 + 20)/2 = 15.0, unlabelled (40 + 30)/2 = 35.0, changes +30 and +10: mean +20.0;
    # as in training (12 + 22)/2 = 17.0, dropout on (11 + 19)/2 = 15.0
    assert "| action | 3 | 2 | 15.0 | 35.0 | 17.0 | 15.0 | +20.0 [+10.0, +30.0] |" in md
    assert "ACTION 15.0 -> 35.0 (+20.0, higher in 2 of 2 runs; as in training 17.0, dropout on 15.0)" in md
    assert "supervised 40.0 -> 38.0 (-2.0, higher in 0 of 1 run; as in training 41.0, dropout on 42.0)" in md
    assert "| method=action_lab=3_seed=0 | 10.0 | 40.0 | 12.0 | 11.0 | 40 | 2 | 38 | 39 |" in md
    # methods in the order supervised, mean teacher, ACTION, ACTION++ whatever the runs' order
    assert md.index("supervised 40.0") < md.index("ACTION 15.0")
    assert "## Not checked\n\n- x: gone" in batchnorm_markdown([], ["x: gone"])


def test_the_evaluate_command_prints_the_three_scores_and_refuses_the_test_split(smoke_run: Path,
                                                                                 capsys: pytest.CaptureFixture) -> None:
    from actionpp.cli import main

    assert main(["evaluate", str(smoke_run / "run"), "--data", "phantom", "--which", "last",
                 "--reestimate-bn", "16"]) == 0
    out = capsys.readouterr().out
    assert all(f"{label}: Dice" in out for label in ("as stored", "unlabelled", "as in training", "dropout on"))
    assert main(["evaluate", str(smoke_run / "run"), "--data", "phantom", "--split", "test",
                 "--reestimate-bn", "16"]) == 2
    assert "--split val" in capsys.readouterr().err


@pytest.mark.parametrize(("raw", "needle"), [
    ({"split": "test"}, "never used for a choice"),
    ({"split": "training"}, "val or train"),
    ({"images": 1}, "images"),
    ({"seed": -1}, "seed"),
    ({"volumes": 3}, "unknown key"),
    ("yes", "true, false or a mapping"),
])
def test_bad_batchnorm_blocks_name_the_key(raw: dict, needle: str) -> None:
    with pytest.raises(rp.GridError, match=needle):
        rp.load_grid({"name": "g", "notebooks": ["04_train"], "axes": {"SEED": [0]}, "score": {"splits": ["val"]},
                      "batchnorm_check": raw})
    with pytest.raises(rp.GridError, match="needs a 'score' block"):
        rp.load_grid({"name": "g", "notebooks": ["04_train"], "axes": {"SEED": [0]}, "batchnorm_check": {}})


def test_true_and_false_switch_the_check_and_a_slurm_tables_job_gets_time_for_it() -> None:
    """`batchnorm_check: true` is the defaults, `false` is off. A SLURM tables job that publishes a checked
    grid gets 30 minutes plus 3 per run of the grid: 71 runs -> 30 + 213 = 243 min = 4:03:00."""
    from actionpp.replicate.slurm import Plan

    base = {"name": "g", "notebooks": ["04_train"], "axes": {"SEED": [0]}, "score": {"splits": ["val"]}}
    assert rp.load_grid({**base, "batchnorm_check": True}).batchnorm == BatchNormSpec()
    assert rp.load_grid({**base, "batchnorm_check": False}).batchnorm is None
    plan = Plan("g", "g.yaml", "out", Path("out"), 71, (), publish="results/g", batchnorm_check=True)
    assert plan.tables_time() == "4:03:00"
    assert Plan("g", "g.yaml", "out", Path("out"), 71, (), batchnorm_check=True).tables_time() == "00:30:00"
    assert Plan("g", "g.yaml", "out", Path("out"), 71, (), publish="results/g").tables_time() == "00:30:00"
