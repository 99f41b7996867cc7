"""Checkpoints: atomic writes, weights-only loading, exact RNG round trips, refusal of another config."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from actionpp.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    capture_rng,
    check_compatible,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from actionpp.config import config_hash, load_config


class _Custom:
    """A class that only full unpickling could rebuild."""


def _state(cfg, **extra):
    return {
        "format": FORMAT_VERSION,
        "iteration": 3,
        "config": json.dumps(cfg.to_dict(), sort_keys=True),
        "config_hash": config_hash(cfg),
        **extra,
    }


def test_save_is_atomic_and_loads_weights_only(tmp_path, monkeypatch):
    cfg = load_config("phantom_smoke")
    path = tmp_path / "run" / "last.pt"
    save_checkpoint(path, _state(cfg, w=torch.arange(4.0), nested={"a": [1, 2.5, None, "x"]}))
    back = load_checkpoint(path)
    assert torch.equal(back["w"], torch.arange(4.0)) and back["nested"] == {"a": [1, 2.5, None, "x"]}
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary file left behind

    # a crash while writing leaves the previous checkpoint intact and no temporary file
    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, _state(cfg, w=torch.zeros(4)))
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["w"], torch.arange(4.0))
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def test_objects_that_need_pickle_are_refused_on_load(tmp_path):
    path = tmp_path / "bad.pt"  # an arbitrary class instance: would need pickle to rebuild
    obj = _Custom()
    torch.save({"format": FORMAT_VERSION, "iteration": 0, "config": "{}", "obj": obj}, path)
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an actionpp checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_rng_states_round_trip_exactly_through_a_weights_only_file(tmp_path):
    g = torch.Generator().manual_seed(123)
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    torch.rand(5), np.random.rand(5), random.random(), torch.rand(3, generator=g)  # advance every stream
    np.random.randn()  # numpy caches a gaussian: its state must survive too
    state = capture_rng({"g": g})
    save_checkpoint(tmp_path / "rng.pt", {"format": FORMAT_VERSION, "iteration": 0, "config": "{}", "rng": state})
    expected = (torch.rand(4), np.random.randn(4), random.random(), torch.rand(4, generator=g))
    torch.manual_seed(99), np.random.seed(99), random.seed(99), g.manual_seed(99)  # scramble
    restore_rng(load_checkpoint(tmp_path / "rng.pt")["rng"], {"g": g})
    got = (torch.rand(4), np.random.randn(4), random.random(), torch.rand(4, generator=g))
    assert torch.equal(got[0], expected[0])
    assert np.array_equal(got[1], expected[1])
    assert got[2] == expected[2]
    assert torch.equal(got[3], expected[3])
    with pytest.raises(CheckpointError, match="no state for generator 'h'"):
        restore_rng(state, {"h": torch.Generator()})


def test_checkpoint_of_another_config_is_refused_naming_hashes_and_keys():
    cfg = load_config("phantom_smoke")
    other = load_config("phantom_smoke", ["train.lr=0.02", "saacl.lambda_a=0.1"])
    check_compatible(_state(cfg), cfg, "x.pt")  # same config: accepted
    # presentation-only keys do not block a resume
    check_compatible(_state(cfg), cfg.replace(["runtime.progress=true", "runtime.log_every=7"]), "x.pt")
    with pytest.raises(CheckpointError) as exc:
        check_compatible(_state(other), cfg, "runs/x/last.pt")
    msg = str(exc.value)
    assert config_hash(other) in msg and config_hash(cfg) in msg and "runs/x/last.pt" in msg
    assert "train.lr: 0.02 != 0.01" in msg and "saacl.lambda_a: 0.1 != 0.2" in msg


def test_a_checkpoint_from_before_a_changed_default_says_which_override_resumes_it():
    """runtime.channels_last became the default after runs were published: the refusal names the way back."""
    import json

    from actionpp.checkpoint import CheckpointError, check_compatible
    from actionpp.config import config_hash, load_config

    old = load_config("phantom_smoke", ["runtime.channels_last=false"]).to_dict()
    del old["runtime"]["channels_last"]  # written before the key existed
    with pytest.raises(CheckpointError, match="resume it with --set runtime.channels_last=false"):
        check_compatible({"config_hash": config_hash(old), "config": json.dumps(old)}, load_config("phantom_smoke"),
                         "run/last.pt")
    # with the override the hashes agree: nothing to refuse
    check_compatible({"config_hash": config_hash(old), "config": json.dumps(old)},
                     load_config("phantom_smoke", ["runtime.channels_last=false"]), "run/last.pt")
