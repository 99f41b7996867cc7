"""Bad config files (empty, not a mapping) and bad checkpoint files (empty, garbage, pickled objects)."""

from __future__ import annotations

import pytest
import torch

from actionpp.checkpoint import FORMAT_VERSION, CheckpointError, load_checkpoint, save_checkpoint
from actionpp.config import ConfigError, load_config

# ----------------------------------------------------------------------------- config (item 5)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_empty_config_file_is_refused(tmp_path, text):
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    assert (
        str(exc.value) == f"config {p}: the file is empty; a profile must be a mapping of sections (data:, train:, ...)"
    )


@pytest.mark.parametrize(
    "text, kind",
    [
        ("- data\n- train\n", "list"),
        ("0\n", "int"),
        ("false\n", "bool"),
        ("'[]'\n", "str"),
        ("[]\n", "list"),
        ("{}\n", None),
    ],
)
def test_config_top_level_must_be_a_mapping(tmp_path, text, kind):
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    if kind is None:  # an explicit empty mapping is a mapping: all defaults, as asked
        assert load_config(p) == load_config({})
        return
    with pytest.raises(ConfigError, match=f"config {p}: the top level must be a mapping, got {kind}"):
        load_config(p)


def test_empty_base_profile_is_named(tmp_path):
    (tmp_path / "empty.yaml").write_text("")
    top = tmp_path / "top.yaml"
    top.write_text("base: empty.yaml\ntrain:\n  seed: 3\n")
    with pytest.raises(ConfigError, match=f"config {tmp_path / 'empty.yaml'}: the file is empty"):
        load_config(top)


def test_bundled_profiles_are_not_empty():
    from actionpp.config import profile_names

    for name in profile_names():
        load_config(name)


# ----------------------------------------------------------------------------- checkpoint (item 6)


def _msg(path) -> str:
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path)
    msg = str(exc.value)
    assert "\n" not in msg and "weights_only" not in msg and str(path) in msg, msg
    return msg


def test_zero_byte_checkpoint_says_empty(tmp_path):
    p = tmp_path / "last.pt"
    p.write_bytes(b"")
    assert _msg(p) == f"checkpoint {p} cannot be read: the file is empty (0 bytes)"


@pytest.mark.parametrize("blob", [bytes(range(256)) * 3, b"hello, not a checkpoint", b"\x80\x02garbage"])
def test_garbage_checkpoint_never_suggests_weights_only_false(tmp_path, blob):
    p = tmp_path / "last.pt"
    p.write_bytes(blob)
    assert _msg(p).startswith(f"checkpoint {p} cannot be read: not a PyTorch checkpoint, or the file is corrupt (")


def test_truncated_checkpoint_is_one_line(tmp_path):
    p = tmp_path / "last.pt"
    save_checkpoint(p, {"format": FORMAT_VERSION, "iteration": 1, "config": "{}", "w": torch.arange(1000.0)})
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    assert _msg(p).startswith(f"checkpoint {p} cannot be read: not a PyTorch checkpoint, or the file is corrupt (")


class _Obj:
    pass


def test_pickled_object_is_refused_without_the_weights_only_false_hint(tmp_path):
    p = tmp_path / "last.pt"
    torch.save({"format": FORMAT_VERSION, "iteration": 0, "config": "{}", "obj": _Obj()}, p)
    msg = _msg(p)
    assert msg.startswith(f"checkpoint {p} cannot be read: it holds a pickled Python object (")
    assert "_Obj" in msg and "only tensors and plain values" in msg


# ----------------------------------------------------------------------------- issue 16, item 9: every range


# (overrides, the message the ConfigError starts with): values the config accepted before issue 16, each of
# which trained silently wrong or crashed deep inside a run without naming its key
OUT_OF_RANGE = [
    (["data.phantom_patients=1"], "data.phantom_patients: must be >= 2, got 1"),
    (["data.phantom_patients=2"], "data.phantom_patients: the ACDC phantom needs at least 3 patients"),
    (["data.phantom_seed=-1"], "data.phantom_seed: must be in [0, 4294967295], got -1"),
    (["data.val_max_volumes=0"], "data.val_max_volumes: must be >= 1, got 0"),
    (["data.val_max_volumes=-1"], "data.val_max_volumes: must be >= 1, got -1"),
    (["data.size=8192"], "data.size: must be in [16, 4096], got 8192"),
    (["data.num_classes=300"], "data.num_classes: must be in [2, 256], got 300"),
    (["model.in_channels=3"], "model.in_channels: must be 1, got 3"),
    (["model.proj_hidden=0"], "model.proj_hidden: must be >= 1, got 0"),
    (["model.proj_dim=0"], "model.proj_dim: must be >= 1, got 0"),
    (["train.momentum=1.5"], "train.momentum: must be in [0, 1], got 1.5"),
    (["train.momentum=-0.1"], "train.momentum: must be in [0, 1], got -0.1"),
    (["train.weight_decay=-1e-4"], "train.weight_decay: must be >= 0"),
    (["train.poly_power=-1"], "train.poly_power: must be >= 0"),
    (["train.lr=.inf"], "train.lr: must be a finite number, got inf"),
    (["loss.sup=-1"], "loss.sup: must be >= 0"),
    (["loss.unsup=-1"], "loss.unsup: must be >= 0"),
    (["loss.unsup_threshold=1.5"], "loss.unsup_threshold: must be in [0, 1]"),
    (["loss.consistency=-0.1"], "loss.consistency: must be >= 0"),
    (["loss.consistency_rampup=-1"], "loss.consistency_rampup: must be >= 0"),
    (["loss.consistency_noise=-0.1"], "loss.consistency_noise: must be >= 0"),
    (["loss.anco=.nan"], "loss.anco: must be a finite number"),
    (["loss.saacl=-1"], "loss.saacl: must be >= 0"),
    (["anco.strong_threshold=2"], "anco.strong_threshold: must be in [0, 1]"),
    (["anco.weak_threshold=-0.5"], "anco.weak_threshold: must be in [0, 1]"),
    (["anco.pixels_per_class=0"], "anco.pixels_per_class: must be >= 1"),
    (["saacl.lambda_a=-0.2"], "saacl.lambda_a: must be >= 0"),
    (["saacl.allocator_momentum=1.5"], "saacl.allocator_momentum: must be in [0, 1]"),
    (["temperature.tau_max=.inf"], "temperature.tau_max: must be a finite number"),
    (["temperature.kind=step", "temperature.step_milestones=[-1]", "temperature.step_values=[0.5, 0.1]"],
     "temperature.step_milestones: must be >= 0"),
    (["temperature.kind=step", "temperature.step_milestones=[5, 3]", "temperature.step_values=[0.5, 0.3, 0.1]"],
     "temperature.step_milestones: must increase, got [5, 3]"),
    (["temperature.kind=step", "temperature.step_milestones=[5]", "temperature.step_values=[0.5, 0]"],
     "temperature.step_values: must be > 0"),
    (["pretrain.patch=0"], "pretrain.patch: must be >= 1, got 0"),
    (["pretrain.global_weight=-1"], "pretrain.global_weight: must be >= 0"),
    (["pretrain.local_weight=-1"], "pretrain.local_weight: must be >= 0"),
    (["pretrain.sup=-1"], "pretrain.sup: must be >= 0"),
    (["eval.batch=0"], "eval.batch: must be >= 1, got 0"),
    (["runtime.seed=-1"], "runtime.seed: must be in [0, 4294967295], got -1"),
    (["runtime.seed=4294967296"], "runtime.seed: must be in [0, 4294967295]"),
    (["train.nesterov_finetune=true", "train.momentum=0"], "train.momentum: Nesterov fine-tuning"),
]


@pytest.mark.parametrize("overrides, message", OUT_OF_RANGE, ids=[o[-1] for o, _ in OUT_OF_RANGE])
def test_out_of_range_setting_is_refused_naming_its_key(overrides, message):
    with pytest.raises(ConfigError) as exc:
        load_config("phantom_smoke", overrides)
    assert str(exc.value).startswith(message), str(exc.value)


def test_la_local_window_must_fit_the_crop():
    with pytest.raises(ConfigError, match=r"^pretrain.patch: must fit in the smallest side of data.crop"):
        load_config("la_paper", ["pretrain.patch=96"])


def _outside(key: str, lo: float, hi: float, bounds: str) -> list[str]:
    """Override values just outside each finite bound of ``key`` (a list for a tuple setting)."""
    import dataclasses
    import typing

    from actionpp.config import Config

    section, name = key.split(".")
    cls = typing.get_type_hints(Config)[section]
    tp = typing.get_type_hints(cls)[name]
    is_int = int in (tp, *typing.get_args(tp))
    width = {"data.crop": 3}.get(key, 1 if typing.get_origin(tp) is tuple else 0)
    values: list[float] = []
    if lo != -float("inf"):
        values.append(lo - 1 if is_int or bounds[0] == "[" else lo)
    if hi != float("inf"):
        values.append(hi + 1 if is_int or bounds[1] == "]" else hi)
    assert dataclasses.is_dataclass(cls)
    return [f"{key}={[v] * width if width else v}" for v in values]


def test_every_numeric_setting_has_a_range_and_each_bound_is_enforced():
    """The table covers every int / float setting (a new one without a range fails here), and a value just
    outside each bound is refused with the key named."""
    from actionpp.config import NUMERIC_RANGES, numeric_keys

    assert sorted(numeric_keys()) == sorted(NUMERIC_RANGES)
    for key, (lo, hi, bounds) in NUMERIC_RANGES.items():
        for override in _outside(key, lo, hi, bounds):
            extra = ["temperature.kind=step"] if key.startswith("temperature.step_") else []
            if key == "temperature.step_milestones":
                extra.append("temperature.step_values=[0.5, 0.1]")
            if key == "temperature.step_values":
                extra.append("temperature.step_milestones=[]")
            # a bound shared with an older relative check is reported by that check's key
            named = {"temperature.tau_max": "temperature.tau_min", "pretrain.tau_t": "pretrain.tau_s"}.get(key, key)
            with pytest.raises(ConfigError, match=rf"^({key}|{named}): "):
                load_config("phantom_smoke", [*extra, override])


# ----------------------------------------------------------------------------- YAML in bounded time and memory


@pytest.mark.parametrize("text, message", [
    ("x: &a [1, 2]\ny: &b [*a, *a]\ntrain:\n  lr: *b\n", "YAML aliases (*name) are not allowed"),
    ("data:\n  root: " + "[" * 2000 + "]" * 2000 + "\n", "nested deeper than 32 levels"),
    ("train:\n  lr: " + "7" * 6000 + "\n", "invalid YAML value"),
    ("train:\n  lr: 0.01\n" + "#" * (300 * 1024) + "\n", "larger than 256 KiB"),
], ids=["aliases", "deep", "huge-int", "too-large"])
def test_any_yaml_is_parsed_in_bounded_time_and_memory(tmp_path, text, message):
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    assert str(exc.value).startswith(f"config {p}: ") and message in str(exc.value), str(exc.value)


def test_override_values_are_bounded_too():
    with pytest.raises(ConfigError, match=r"^override data.root: invalid YAML: YAML aliases"):
        load_config("phantom_smoke", ["data.root=*x"])
    with pytest.raises(ConfigError, match=r"^override train.lr: invalid YAML value"):
        load_config("phantom_smoke", ["train.lr=" + "1" * 5000])


# ----------------------------------------------------------------------------- checkpoints (issue 16, item 10)


def test_full_disk_during_a_checkpoint_write_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    import errno

    from actionpp.atomic import WriteError

    p = tmp_path / "last.pt"
    save_checkpoint(p, {"format": FORMAT_VERSION, "iteration": 1, "config": "{}"})
    old = p.read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(WriteError) as exc:
        save_checkpoint(p, {"format": FORMAT_VERSION, "iteration": 2, "config": "{}"})
    assert str(exc.value).startswith(f"checkpoint {p}: cannot be written (No space left on device)")
    assert exc.value.errno == errno.ENOSPC
    assert p.read_bytes() == old and [x.name for x in tmp_path.iterdir()] == ["last.pt"]


@pytest.mark.parametrize("val_split, expected", [("val", "refused"), ("none", "last.pt")])
def test_which_best_without_best_pt_is_refused_or_said(tmp_path, val_split, expected):
    from actionpp.checkpoint import checkpoint_choice

    save_checkpoint(tmp_path / "last.pt", {"format": FORMAT_VERSION, "iteration": 1, "config": "{}"})
    (tmp_path / "config.yaml").write_text(f"data:\n  val_split: {val_split}\neval:\n  select: best\n")
    for which in ("best", "auto"):
        if expected == "refused":
            with pytest.raises(CheckpointError, match="holds no best.pt although the run validates on its val split"):
                checkpoint_choice(tmp_path, which)
        else:
            path, note = checkpoint_choice(tmp_path, which)
            assert path == tmp_path / "last.pt" and note is not None and "scored last.pt" in note
