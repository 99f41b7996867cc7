"""Config: profiles load, overrides parse as YAML, errors name the key, presets expand, the hash is stable."""

from __future__ import annotations

import json

import pytest
import yaml

from actionpp.config import (
    METHOD_PRESETS,
    Config,
    ConfigError,
    config_from_dict,
    config_hash,
    diff_dicts,
    dump_yaml,
    load_config,
    parse_override,
    profile_names,
)

PROFILES = ["acdc_paper", "acdc_official", "la_paper", "la_official", "phantom_lab", "phantom_smoke", "acdc_lite"]


def test_every_named_profile_is_bundled_and_loads():
    assert set(PROFILES) <= set(profile_names())
    for name in PROFILES:
        cfg = load_config(name)
        assert isinstance(cfg, Config)
        assert cfg.data.val_split != "test"


def test_paper_and_official_profiles_follow_method_md_table():
    paper, official = load_config("acdc_paper"), load_config("acdc_official")
    # method.md section 8, paper column
    assert (paper.model.rep_dim, paper.saacl.lambda_a) == (128, 0.2)
    assert (paper.train.pretrain_iters, paper.train.finetune_iters) == (10_000, 20_000)
    assert (paper.temperature.kind, paper.temperature.tau_min, paper.temperature.tau_max) == ("cosine", 0.1, 1.0)
    assert paper.temperature.period is None  # one cycle over fine-tuning
    assert (paper.loss.anco, paper.loss.saacl) == (1.0, 1.0)
    assert paper.augment.labelled_rotate and paper.augment.labelled_flip
    # official column
    assert (official.model.rep_dim, official.saacl.lambda_a, official.saacl.tau_min) == (496, 0.1, 0.07)
    assert (official.saacl.centre_term, official.train.nesterov_finetune) == ("averaged", True)
    assert (paper.saacl.centre_term, paper.train.nesterov_finetune) == ("separate", False)
    assert (official.train.pretrain_iters, official.train.finetune_iters) == (30_000, 30_000)
    assert (official.loss.anco, official.loss.saacl, official.loss.unsup) == (0.01, 0.01, 1.0)
    assert official.temperature.kind == "cosine_epoch"
    assert not official.augment.labelled_rotate and not official.augment.labelled_flip
    assert official.eval.select == "last"
    # shared values: SGD 0.01 / 0.9 / 1e-4, EMA 0.99, ISD bank 36 and temperatures
    for c in (paper, official):
        assert (c.train.lr, c.train.momentum, c.train.weight_decay, c.train.ema_momentum) == (0.01, 0.9, 1e-4, 0.99)
        assert (c.pretrain.memory_bank, c.pretrain.tau_s, c.pretrain.tau_t) == (36, 0.1, 0.01)
        assert (c.model.proj_dim, c.pretrain.tau_max) == (512, 1.0)  # official 2D latent_feature_size 512
    la = load_config("la_paper")
    assert (la.model.arch, la.data.num_classes, la.data.crop, la.pretrain.tau_t) == ("vnet3d", 2, (112, 112, 80), 0.6)
    assert (la.train.pretrain_iters, la.train.finetune_iters) == (5000, 15000)
    la_off = load_config("la_official")  # official 3D: AnCo scheduled, SAACL fixed at 0.07
    assert la_off.method.ats and la_off.temperature.kind == "cosine_epoch"
    assert (la_off.saacl.fixed_tau, la_off.saacl.lambda_a, la_off.saacl.centre_term) == (0.07, 0.2, "averaged")


def test_every_profile_value_has_a_source_comment():
    from actionpp.config import profile_path

    for name in PROFILES:
        for line in profile_path(name).read_text().splitlines():
            s = line.strip()
            if not s or s.startswith("#") or s.endswith(":"):
                continue  # comments and section headers
            assert "#" in s, f"{name}: value without a comment saying where it comes from: {s!r}"


def test_override_values_are_parsed_as_yaml_scalars():
    assert parse_override("train.lr=0.001") == ("train.lr", 0.001)
    # YAML 1.1 reads 1e-3 (no dot) as a string; a float field still accepts it
    assert load_config("phantom_smoke", ["train.lr=1e-3"]).train.lr == 1e-3
    assert parse_override("data.labelled=null") == ("data.labelled", None)
    assert parse_override("method.ats=false") == ("method.ats", False)
    assert parse_override("data.crop=[64, 64, 32]") == ("data.crop", [64, 64, 32])
    assert parse_override("data.root=/a=b") == ("data.root", "/a=b")  # only the first '=' splits
    cfg = load_config("phantom_smoke", ["train.lr=0.05", "data.labelled=null", "data.crop=[64,64,32]"])
    assert cfg.train.lr == 0.05 and cfg.data.labelled is None and cfg.data.crop == (64, 64, 32)


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.lrr=0.1", "train.lrr"),  # unknown field
        ("trian.lr=0.1", "trian.lr"),  # unknown section
        ("train.lr=fast", "train.lr"),  # wrong type
        ("train.finetune_iters=2.5", "train.finetune_iters"),  # float for an int
        ("method.ats=1", "method.ats"),  # int for a bool
        ("augment.mix=mixup", "augment.mix"),  # not one of the choices
        ("data.crop=[64, 64]", "data.crop"),  # wrong length
        ("data.val_split=test", "data.val_split"),  # never select on test
        ("method.name=fixmatch", "method.name"),  # unknown method
        ("data.size=100", "data.size"),  # not a multiple of 16
        ("lr=0.1", "lr"),  # not section.field
    ],
)
def test_bad_overrides_are_errors_naming_the_key(override, key):
    with pytest.raises(ConfigError) as exc:
        load_config("phantom_smoke", [override])
    assert key in str(exc.value)


def test_unknown_key_in_a_profile_file_names_key_and_file(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("base: phantom_smoke\ntrain:\n  batch_size: 8\n")
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    assert "train.batch_size" in str(exc.value) and "mine.yaml" in str(exc.value)
    with pytest.raises(ConfigError, match="unknown config 'no_such_profile'"):
        load_config("no_such_profile")


def test_method_name_expands_to_switches_and_explicit_switches_win():
    sup = load_config("phantom_smoke", ["method.name=supervised"]).method
    assert (sup.pretrain, sup.teacher, sup.unsup, sup.anco, sup.saacl, sup.ats) == (False,) * 6
    mt = load_config("phantom_smoke", ["method.name=mean_teacher"]).method
    assert mt.consistency and mt.teacher and not mt.unsup and not mt.pretrain
    action = load_config("phantom_smoke", ["method.name=action"]).method
    assert action.pretrain and action.anco and action.unsup and not action.saacl and not action.ats
    app = load_config("phantom_smoke", ["method.name=actionpp"]).method
    assert app.saacl and app.ats and app.pretrain
    # an ablation as a switch: ACTION++ without ATS
    abl = load_config("phantom_smoke", ["method.name=actionpp", "method.ats=false"]).method
    assert abl.saacl and not abl.ats
    assert METHOD_PRESETS["actionpp_no_ats"] == {**METHOD_PRESETS["actionpp"], "ats": False}


def test_inconsistent_switches_are_rejected():
    with pytest.raises(ConfigError, match="method.teacher"):
        load_config("phantom_smoke", ["method.name=action", "method.teacher=false"])
    with pytest.raises(ConfigError, match="train.batch_unlabelled"):
        load_config("phantom_smoke", ["train.batch_unlabelled=0"])
    # supervised needs no unlabelled images
    cfg = load_config("phantom_smoke", ["method.name=supervised", "train.batch_unlabelled=0"])
    assert cfg.train.batch_unlabelled == 0


def test_to_dict_round_trips_and_hash_is_stable():
    cfg = load_config("phantom_smoke", ["train.lr=0.02"])
    d = cfg.to_dict()
    json.dumps(d)  # plain data
    assert d["data"]["crop"] == [112, 112, 80]
    again = config_from_dict(yaml.safe_load(dump_yaml(cfg)))
    assert again == cfg
    assert config_hash(again) == config_hash(cfg) == cfg.hash()
    assert len(cfg.hash()) == 16 and int(cfg.hash(), 16) >= 0
    # a result-relevant change changes the hash; a presentation-only one does not
    assert cfg.replace(["train.lr=0.03"]).hash() != cfg.hash()
    assert cfg.replace(["runtime.progress=true"]).hash() == cfg.replace(["runtime.progress=false"]).hash()
    # replace does not re-expand the method preset
    assert cfg.replace(["method.saacl=false"]).method.ats is True


def test_diff_dicts_names_the_differing_keys():
    a = load_config("phantom_smoke").to_dict()
    b = load_config("phantom_smoke", ["train.lr=0.5", "saacl.lambda_a=0.1"]).to_dict()
    assert diff_dicts(a, b) == ["saacl.lambda_a: 0.2 != 0.1", "train.lr: 0.01 != 0.5"]


def test_total_iterations_follow_the_phase_switches():
    cfg = load_config("phantom_smoke")
    assert cfg.total_iters == cfg.train.pretrain_iters + cfg.train.finetune_iters == 12
    assert load_config("phantom_smoke", ["method.name=supervised"]).total_iters == 8  # no pre-training


def test_off_and_on_reach_a_literal_as_the_words_not_booleans():
    # YAML 1.1 parses "off" as False: runtime.amp=off must still mean the literal "off"
    assert load_config("phantom_smoke", ["runtime.amp=off"]).runtime.amp == "off"
    with pytest.raises(ConfigError, match="runtime.amp"):
        load_config("phantom_smoke", ["runtime.amp=true"])


def test_keys_added_later_keep_old_hashes_while_they_hold_the_old_behaviour():
    from actionpp.config import HASH_OMITTED_WHEN

    cfg = load_config("phantom_smoke", ["train.teacher_mode=eval", "train.finetune_forward=joint",
                                        "runtime.channels_last=false"])
    old = cfg.to_dict()
    for key in HASH_OMITTED_WHEN:  # a config written before these keys existed
        section, name = key.split(".")
        del old[section][name]
    assert config_hash(old) == config_hash(cfg)
    assert config_hash(cfg.replace(["train.teacher_mode=train"])) != config_hash(cfg)
    # channels-last is the default now and draws other dropout masks: an older run is not found finished
    # (nor resumed) under the new default, only with runtime.channels_last=false
    assert config_hash(load_config("phantom_smoke", ["train.teacher_mode=eval", "train.finetune_forward=joint"])) \
        != config_hash(old)
