"""The training loop on the 32 x 32 phantom: every method trains, logs its own terms, and the run
directory behaves (cached results, refusals, divergence errors, model loading, CLI)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from actionpp.atomic import claim_folder
from actionpp.checkpoint import CheckpointError, load_checkpoint
from actionpp.config import ConfigError, load_config
from actionpp.losses import sigmoid_rampup
from actionpp.models.segmodel import load_model
from actionpp.runlog import read_jsonl
from actionpp.sampling import sample_pixels
from actionpp.train import Hooks, RunDirError, TrainingDiverged, poly_lr, train

# phantom_smoke is 32 x 32, batch 4 + 4; shorten it further for the default suite
FAST = ["train.pretrain_iters=2", "train.finetune_iters=4", "runtime.checkpoint_every=2", "runtime.device=cpu"]

TERMS = {
    "supervised": {"sup", "total"},
    "mean_teacher": {"sup", "consistency", "total"},
    "action": {"sup", "unsup", "anco", "total"},
    "actionpp": {"sup", "unsup", "anco", "saacl", "total"},
}
PRETRAIN_TERMS = {"sup", "isd_global", "isd_local", "total"}


def _cfg(*extra: str):
    return load_config("phantom_smoke", FAST + list(extra))


@pytest.mark.parametrize("method", ["supervised", "mean_teacher", "action", "actionpp"])
def test_each_method_trains_finite_and_logs_exactly_its_terms(tmp_path, method):
    cfg = _cfg(f"method.name={method}")
    res = train(cfg, run_dir=tmp_path, progress=False)
    log = read_jsonl(tmp_path / "log.jsonl")
    rows = [e for e in log if e["kind"] == "train"]
    phases = {e["phase"] for e in rows}
    assert phases == ({"pretrain", "finetune"} if method in ("action", "actionpp") else {"finetune"})
    for e in rows:
        terms = {k[len("loss/"):] for k in e if k.startswith("loss/")}
        assert terms == (PRETRAIN_TERMS if e["phase"] == "pretrain" else TERMS[method])
        assert all(math.isfinite(e[f"loss/{t}"]) for t in terms)
        assert ("tau" in e) == (e["phase"] == "finetune" and method in ("action", "actionpp"))
    if method == "action":
        assert all(e["tau"] == 0.5 for e in rows if "tau" in e)  # ACTION: fixed temperature
    if method == "actionpp":
        ft = [e for e in rows if e["phase"] == "finetune"]
        assert all(sorted(e["assignment"]) == [0, 1, 2, 3] for e in ft)  # a permutation of the centres
    assert res.iterations == cfg.total_iters == rows[-1]["iteration"]
    assert {p.name for p in tmp_path.iterdir()} >= {"config.yaml", "run.json", "log.jsonl", "last.pt", "metrics.json"}
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["config_hash"] == cfg.hash() and metrics["iterations"] == cfg.total_iters
    assert 0.0 <= metrics["final"]["dice"] <= 1.0 and metrics["final"]["n_volumes"] == 2
    assert set(metrics["its_per_s"]) == phases


def test_lr_follows_poly_decay_per_phase_and_schedules_have_closed_forms(tmp_path):
    train(_cfg("method.name=actionpp", "runtime.log_every=1"), run_dir=tmp_path, progress=False)
    rows = [e for e in read_jsonl(tmp_path / "log.jsonl") if e["kind"] == "train"]
    # each phase restarts at lr0 = 0.01 and decays as (1 - i / n) ** 0.9 (logged after step i)
    expected = [0.01 * (1 - i / 2) ** 0.9 for i in range(2)] + [0.01 * (1 - i / 4) ** 0.9 for i in range(4)]
    assert [e["lr"] for e in rows] == pytest.approx(expected)
    # ATS over the 4 fine-tuning iterations (one cycle): tau(t) = 0.1 + 0.45 (1 + cos(2 pi t / 4))
    taus = [e["tau"] for e in rows if e["phase"] == "finetune"]
    assert taus == pytest.approx([1.0, 0.55, 0.1, 0.55])
    assert poly_lr(0.01, 0, 100) == 0.01 and poly_lr(0.01, 50, 100, 1.0) == pytest.approx(0.005)
    assert poly_lr(0.01, 100, 100) == 0.0
    assert sigmoid_rampup(0, 100) == pytest.approx(math.exp(-5)) and sigmoid_rampup(100, 100) == 1.0
    assert sigmoid_rampup(50, 100) == pytest.approx(math.exp(-1.25)) and sigmoid_rampup(7, 0) == 1.0


def test_official_per_epoch_schedule_and_ats_off(tmp_path):
    # official ATS: the cosine evaluated once per epoch; period 2 epochs of 2 iterations
    cfg = _cfg("method.name=actionpp", "runtime.log_every=1", "temperature.kind=cosine_epoch",
               "temperature.period=2", "temperature.epoch_iters=2")
    train(cfg, run_dir=tmp_path / "epoch", progress=False)
    taus = [e["tau"] for e in read_jsonl(tmp_path / "epoch" / "log.jsonl") if "tau" in e]
    assert taus == pytest.approx([1.0, 1.0, 0.1, 0.1])
    # the ATS ablation: ACTION++ at ACTION's fixed temperature
    cfg = _cfg("method.name=actionpp", "method.ats=false", "runtime.log_every=1", "temperature.fixed_tau=0.3")
    train(cfg, run_dir=tmp_path / "fixed", progress=False)
    taus = [e["tau"] for e in read_jsonl(tmp_path / "fixed" / "log.jsonl") if "tau" in e]
    assert taus == pytest.approx([0.3] * 4)


def test_ats_schedules_every_contrastive_temperature(tmp_path):
    """method.md 4: ATS applies to SAACL, AnCo and the ISD pre-training temperatures."""
    cfg = _cfg("method.name=actionpp", "runtime.log_every=1")
    train(cfg, run_dir=tmp_path / "paper", progress=False)
    rows = [e for e in read_jsonl(tmp_path / "paper" / "log.jsonl") if e["kind"] == "train"]
    pre = [e for e in rows if e["phase"] == "pretrain"]
    ft = [e for e in rows if e["phase"] == "finetune"]
    # pre-training, one cycle over its 2 iterations, from pretrain.tau_max = 1.0 down to tau_s = 0.1 / tau_t = 0.01
    assert [e["tau_s"] for e in pre] == pytest.approx([1.0, 0.1])
    assert [e["tau_t"] for e in pre] == pytest.approx([1.0, 0.01])
    assert [e["tau_saacl"] for e in ft] == pytest.approx([1.0, 0.55, 0.1, 0.55])  # the AnCo cosine
    # the official 2D SAACL cosine has its own low end, 0.07; the official 3D one is fixed at 0.07
    train(_cfg("method.name=actionpp", "runtime.log_every=1", "saacl.tau_min=0.07"), run_dir=tmp_path / "own",
          progress=False)
    ft = [e for e in read_jsonl(tmp_path / "own" / "log.jsonl") if e.get("phase") == "finetune"]
    assert [e["tau_saacl"] for e in ft] == pytest.approx([1.0, 0.535, 0.07, 0.535])
    assert [e["tau"] for e in ft] == pytest.approx([1.0, 0.55, 0.1, 0.55])
    train(_cfg("method.name=actionpp", "runtime.log_every=1", "saacl.fixed_tau=0.07"), run_dir=tmp_path / "fixed",
          progress=False)
    ft = [e for e in read_jsonl(tmp_path / "fixed" / "log.jsonl") if e.get("phase") == "finetune"]
    assert [e["tau_saacl"] for e in ft] == pytest.approx([0.07] * 4)
    # ACTION (no ATS) keeps ISD's fixed temperatures
    train(_cfg("method.name=action", "runtime.log_every=1"), run_dir=tmp_path / "action", progress=False)
    pre = [e for e in read_jsonl(tmp_path / "action" / "log.jsonl") if e.get("phase") == "pretrain"]
    assert [e["tau_s"] for e in pre] + [e["tau_t"] for e in pre] == pytest.approx([0.1, 0.1, 0.01, 0.01])


def test_the_log_gives_the_temperature_at_the_iteration_like_the_lr(tmp_path):
    """Every two iterations a line: the loss terms are the window's means, lr and tau the values at the logged
    iteration (the ATS cosine over 4 fine-tuning iterations: 1.0, 0.55, 0.1, 0.55)."""
    train(_cfg("method.name=actionpp", "runtime.log_every=2"), run_dir=tmp_path, progress=False)
    ft = [e for e in read_jsonl(tmp_path / "log.jsonl") if e["kind"] == "train" and e["phase"] == "finetune"]
    assert [e["iteration"] for e in ft] == [4, 6]
    assert [e["tau"] for e in ft] == pytest.approx([0.55, 0.55])  # not the window means 0.775 and 0.325
    assert [e["tau_saacl"] for e in ft] == pytest.approx([0.55, 0.55])
    assert [e["lr"] for e in ft] == pytest.approx([0.01 * (1 - i / 4) ** 0.9 for i in (1, 3)])


def test_saacl_temperature_settings_that_cannot_act_are_refused():
    """saacl.fixed_tau wins over ATS for SAACL (the documented precedence); a tau_min beside it could never act."""
    cfg = load_config("phantom_smoke", ["saacl.fixed_tau=0.07"])
    assert cfg.method.ats and cfg.saacl.fixed_tau == 0.07  # official 3D: ATS for AnCo, SAACL fixed
    with pytest.raises(ConfigError, match="saacl.tau_min: has no effect while saacl.fixed_tau=0.07"):
        load_config("phantom_smoke", ["saacl.fixed_tau=0.07", "saacl.tau_min=0.05"])


@pytest.mark.parametrize("bank", [36, 10])
def test_local_memory_bank_holds_whole_images(tmp_path, bank):
    # smoke: 32 x 32 maps, windows 16 stride 8 -> 3 x 3 = 9 per image; 4 + 4 images per step, 2 steps = 16 images
    train(_cfg("method.name=action", f"pretrain.memory_bank={bank}"), run_dir=tmp_path, progress=False)
    state = load_checkpoint(tmp_path / "last.pt")
    images = min(bank, 16)
    assert (state["bank_l"]["size"], state["bank_l"]["count"]) == (bank * 9, images * 9)
    assert (state["bank_g"]["size"], state["bank_g"]["count"]) == (bank, images)


def test_gradient_diagnostics_are_logged_and_do_not_change_the_run(tmp_path):
    cfg = _cfg("method.name=actionpp")
    train(cfg, run_dir=tmp_path / "on", progress=False)
    rows = [e for e in read_jsonl(tmp_path / "on" / "log.jsonl") if e["kind"] == "train"]
    for e in rows:
        terms = [k[len("loss/"):] for k in e if k.startswith("loss/") and k != "loss/total"]
        shares = [e[f"share/{t}"] for t in terms]
        assert sum(shares) == pytest.approx(1.0, abs=1e-4)  # the shares decompose the update
        assert e["grad/sup"] > 0 and all(e[f"grad/{t}"] >= 0 for t in terms)
        if e["phase"] == "finetune":
            assert 0 < e["centre_share/averaged"] < e["centre_share/separate"] < 1
            assert e["saacl/positives"] >= 1
    train(cfg.replace(["runtime.grad_norms=false"]), run_dir=tmp_path / "off", progress=False)
    assert not any(k.startswith("share/") for e in read_jsonl(tmp_path / "off" / "log.jsonl") for k in e)
    on, off = load_checkpoint(tmp_path / "on" / "last.pt"), load_checkpoint(tmp_path / "off" / "last.pt")
    assert all(torch.equal(on["student"][k], off["student"][k]) for k in on["student"])


def test_nesterov_only_in_fine_tuning(tmp_path):
    train(_cfg("method.name=action", "train.nesterov_finetune=true", "runtime.checkpoint_every=1"), run_dir=tmp_path,
          progress=False)
    assert load_checkpoint(tmp_path / "last.pt")["optimizer"]["param_groups"][0]["nesterov"] is True
    import shutil

    shutil.rmtree(tmp_path)
    train(_cfg("method.name=action", "train.nesterov_finetune=true", "train.finetune_iters=0"), run_dir=tmp_path,
          progress=False)
    assert load_checkpoint(tmp_path / "last.pt")["optimizer"]["param_groups"][0]["nesterov"] is False


def test_separate_forward_normalises_the_labelled_and_unlabelled_batches_apart():
    from actionpp.models.segmodel import SegModel

    torch.manual_seed(0)
    model = SegModel(load_config("phantom_smoke")).train()
    x = torch.randn(6, 1, 32, 32)
    x[4:] = 3 * x[4:] + 1  # an "unlabelled" part with other statistics
    with torch.no_grad():  # the same seed before each: the same dropout masks
        torch.manual_seed(1)
        joint = model(x).logits
        torch.manual_seed(1)
        split = model(x, split=4).logits
        torch.manual_seed(1)
        apart = torch.cat([model.net.forward_features(x[:4])[0], model.net.forward_features(x[4:])[0]])
    torch.testing.assert_close(split, apart)  # exactly two BatchNorm batches
    assert not torch.allclose(split, joint)  # which is not one batch of six


def test_official_teacher_and_forward_switches_train(tmp_path):
    cfg = _cfg("method.name=actionpp", "train.teacher_mode=train", "train.finetune_forward=separate")
    res = train(cfg, run_dir=tmp_path, progress=False)
    rows = [e for e in read_jsonl(tmp_path / "log.jsonl") if e["kind"] == "train"]
    assert res.iterations == cfg.total_iters and all(math.isfinite(e["loss/total"]) for e in rows)


def test_3d_representation_head_reads_all_five_decoder_maps():
    from actionpp.models.segmodel import SegModel

    model = SegModel(load_config("la_official"))
    assert model.rep.in_channels_list == model.net.feature_channels == [256, 128, 64, 32, 16]
    assert (model.rep.kernel_size, model.rep.dim, model.rep.spatial_dims) == (3, 128, 3)


def test_supervised_loss_falls_on_the_phantom(tmp_path):
    cfg = load_config("phantom_smoke", ["method.name=supervised", "train.finetune_iters=30", "runtime.log_every=10",
                                        "runtime.checkpoint_every=0", "runtime.device=cpu"])
    train(cfg, run_dir=tmp_path, progress=False)
    sup = [e["loss/sup"] for e in read_jsonl(tmp_path / "log.jsonl") if e["kind"] == "train"]
    assert len(sup) == 3 and sup[2] < 0.8 * sup[0]


def test_finished_run_is_returned_without_training_and_other_configs_are_refused(tmp_path):
    cfg = _cfg("method.name=supervised")
    first = train(cfg, run_dir=tmp_path, progress=False)
    log_before = (tmp_path / "log.jsonl").read_text()
    again = train(cfg.replace(["runtime.progress=true"]), run_dir=tmp_path, progress=False)
    assert again.cached and not first.cached
    assert again.final == first.final and again.iterations == first.iterations
    assert (tmp_path / "log.jsonl").read_text() == log_before  # nothing ran
    with pytest.raises(RunDirError, match="finished run of config"):
        train(_cfg("method.name=supervised", "train.lr=0.02"), run_dir=tmp_path, progress=False)


def test_existing_checkpoint_needs_resume_and_must_come_from_the_same_config(tmp_path):
    cfg = _cfg("method.name=supervised")
    train(cfg, run_dir=tmp_path, progress=False)
    (tmp_path / "metrics.json").unlink()  # as if killed after the last checkpoint
    with pytest.raises(RunDirError, match="already holds a checkpoint"):
        train(cfg, run_dir=tmp_path, resume=False, progress=False)
    other = _cfg("method.name=supervised", "train.lr=0.02")
    with pytest.raises(CheckpointError) as exc:
        train(other, run_dir=tmp_path, progress=False)
    msg = str(exc.value)
    assert cfg.hash() in msg and other.hash() in msg and "train.lr: 0.01 != 0.02" in msg


def test_nan_loss_stops_with_iteration_terms_and_no_checkpoint(tmp_path):
    cfg = _cfg("method.name=supervised", "train.lr=1e30", "runtime.log_every=1")
    with pytest.raises(TrainingDiverged) as exc:
        train(cfg, run_dir=tmp_path, progress=False)
    err = exc.value
    assert err.iteration == 2  # step 1 with lr 1e30 wrecks the weights; the loss of step 2 is not finite
    assert set(err.terms) == {"sup", "total"} and not math.isfinite(err.terms["total"])
    assert err.last_checkpoint is None and "iteration 2" in str(err) and "sup=" in str(err)
    assert not (tmp_path / "last.pt").exists()  # a diverged model is never checkpointed


def test_divergence_after_a_checkpoint_names_it_and_keeps_it_finite(tmp_path):
    def poison_before_the_4th_iteration(state):
        if state.iteration == 3:  # one weight NaN before the 4th iteration: the forward turns NaN
            with torch.no_grad():
                state.student.net.out_conv.weight.fill_(float("nan"))

    cfg = _cfg("method.name=supervised", "runtime.log_every=4")
    with pytest.raises(TrainingDiverged) as exc:
        train(cfg, run_dir=tmp_path, progress=False, hooks=Hooks(before_step=poison_before_the_4th_iteration))
    assert exc.value.iteration == 4 and exc.value.last_checkpoint == tmp_path / "last.pt"
    assert str(tmp_path / "last.pt") in str(exc.value)
    ck = load_checkpoint(tmp_path / "last.pt")
    assert ck["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in ck["student"].values() if v.is_floating_point())


def test_load_model_gives_the_validated_network(tmp_path):
    from actionpp.data.roots import resolve_data_root
    from actionpp.data.tensors import load_volumes
    from actionpp.evaluate import evaluate
    from actionpp.models import UNet2D

    cfg = _cfg("method.name=supervised", "eval.select=last")
    res = train(cfg, run_dir=tmp_path, progress=False)
    net, cfg2 = load_model(tmp_path, which="last")
    assert isinstance(net, UNet2D) and not net.training and cfg2 == cfg
    vols = load_volumes(resolve_data_root("phantom", cfg), "val")[:2]
    again = evaluate(net, vols, dataset="acdc", size=32, progress=False)
    assert again.mean_dice == pytest.approx(res.final["dice"], abs=1e-12)
    # no validation run: best falls back to last
    net_b, _ = load_model(tmp_path / "last.pt")
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), net_b.state_dict().values()))


def test_validation_keeps_the_best_checkpoint(tmp_path):
    cfg = _cfg("method.name=supervised", "eval.every=2", "train.finetune_iters=6", "train.lr=0.05")
    res = train(cfg, run_dir=tmp_path, progress=False)
    vals = [e for e in read_jsonl(tmp_path / "log.jsonl") if e["kind"] == "val"]
    assert [e["iteration"] for e in vals] == [2, 4, 6]
    best = max(vals, key=lambda e: e["dice"])  # first of equal maxima wins: strict improvement needed
    assert res.best_iteration == best["iteration"] and res.best["dice"] == best["dice"]
    assert load_checkpoint(tmp_path / "best.pt")["iteration"] == best["iteration"]
    assert res.selected == "best" and res.checkpoint == tmp_path / "best.pt"


def test_pixel_sampler_draws_distinct_pixels_of_each_class():
    labels = torch.zeros(2, 4, 4, dtype=torch.long)
    labels[0, 0, :3] = 1  # 3 pixels of class 1
    labels[1, 2:, 2:] = 2  # 4 pixels of class 2
    valid = torch.ones_like(labels, dtype=torch.bool)
    valid[1, 3, 3] = False  # one class-2 pixel excluded
    gen = torch.Generator().manual_seed(0)
    idx, lab = sample_pixels(labels, num_classes=4, per_class=5, generator=gen, valid=valid)
    counts = torch.bincount(lab, minlength=4).tolist()
    assert counts == [5, 3, 3, 0]  # 25 background pixels -> 5; classes 1 and 2 give all their valid pixels
    assert torch.equal(labels[idx[:, 0], idx[:, 1], idx[:, 2]], lab)
    assert valid[idx[:, 0], idx[:, 1], idx[:, 2]].all()
    assert len({tuple(r) for r in idx.tolist()}) == len(idx)  # no pixel twice


def test_cli_train_and_evaluate(tmp_path, capsys):
    from actionpp.cli import main

    rd = tmp_path / "run"
    rc = main(
        [
            "train",
            "phantom_smoke",
            "--set",
            "method.name=supervised",
            "--set",
            "train.finetune_iters=2",
            "--set",
            "runtime.device=cpu",
            "--run-dir",
            str(rd),
            "--no-progress",
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["iterations"] == 2 and out["method"] == "supervised"
    rc = main(["evaluate", str(rd), "--data", "phantom", "--split", "val", "--json", "--device", "cpu"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["split"] == "val" and report["volumes"] == len(report["result"]["per_volume"]) >= 2
    assert 0.0 <= report["summary"]["dice"] <= 1.0
    assert main(["train", "phantom_smoke", "--set", "train.lrr=1"]) == 2
    assert "unknown key train.lrr" in capsys.readouterr().err


def test_run_logger_writes_jsonl_and_tensorboard_is_optional(tmp_path):
    import importlib.util
    import warnings

    from actionpp.runlog import RunLogger

    have_tb = importlib.util.find_spec("tensorboard") is not None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logger = RunLogger(tmp_path, tensorboard=True)
    assert have_tb or any("TensorBoard requested but unavailable" in str(w.message) for w in caught)
    logger.log({"kind": "train", "iteration": 1, "loss/sup": 0.5})
    (tmp_path / "log.jsonl").open("a").write('{"kind": "train", "iter')  # a torn line from a SIGKILL
    logger.close()
    assert read_jsonl(tmp_path / "log.jsonl") == [{"kind": "train", "iteration": 1, "loss/sup": 0.5}]
    silent = RunLogger(tmp_path / "rank1", enabled=False)  # ranks other than 0 write nothing
    silent.log({"kind": "train", "iteration": 1})
    assert not (tmp_path / "rank1").exists()


def test_a_start_after_an_attempt_killed_before_its_first_checkpoint_does_not_duplicate_the_log(tmp_path):
    cfg = _cfg("method.name=supervised", "runtime.log_every=1", "runtime.checkpoint_every=0")
    claim_folder(tmp_path, "train")  # the attempt claimed its folder (the marker) and wrote only log lines
    first = json.dumps({"kind": "train", "iteration": 1, "loss/total": 9.0})
    (tmp_path / "log.jsonl").write_text(first + "\n" + '{"kind": "train", "iteration": 2, "loss/t')  # a torn line
    train(cfg, run_dir=tmp_path, progress=False)
    its = [e["iteration"] for e in read_jsonl(tmp_path / "log.jsonl") if e["kind"] == "train"]
    assert its == [1, 2, 3, 4] and all(e.get("loss/total") != 9.0 for e in read_jsonl(tmp_path / "log.jsonl"))
