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
