"""actionpp.atomic: a write either lands whole or leaves the previous file and no temp file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from actionpp.atomic import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_write_text_and_bytes_land_whole_and_create_the_folder(tmp_path):
    target = tmp_path / "sub" / "deeper" / "out.txt"
    assert atomic_write_text(target, "héllo\n") == target
    assert target.read_text(encoding="utf-8") == "héllo\n"
    atomic_write_bytes(target, b"\x00\x01replaced")
    assert target.read_bytes() == b"\x00\x01replaced"
    assert _names(target.parent) == ["out.txt"]


def test_atomic_path_yields_a_temp_in_the_same_folder(tmp_path):
    target = tmp_path / "ckpt.pt"
    with atomic_path(target, fsync=False) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        assert not target.exists()
        tmp.write_bytes(b"payload")
    assert target.read_bytes() == b"payload"
    assert _names(tmp_path) == ["ckpt.pt"]


def test_written_file_has_the_mode_a_plain_open_gives(tmp_path):
    mask = os.umask(0)
    os.umask(mask)
    target = tmp_path / "f.txt"
    atomic_write_text(target, "x")
    assert (target.stat().st_mode & 0o777) == (0o666 & ~mask)


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_error_inside_the_context_keeps_the_old_file_and_no_temp(tmp_path, exc):
    target = tmp_path / "run.json"
    target.write_text("old")
    with pytest.raises(type(exc)):
        with atomic_path(target) as tmp:
            tmp.write_text("half-writ")
            raise exc
    assert target.read_text() == "old"
    assert _names(tmp_path) == ["run.json"]


def test_failing_replace_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "a.txt"
    target.write_text("old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert _names(tmp_path) == ["a.txt"]


def test_json_round_trip_and_serialisation_error_touches_nothing(tmp_path):
    obj = {"dice": 0.5, "classes": [1, 2, 3], "name": "ACTION++", "nested": {"ok": True, "none": None}}
    target = tmp_path / "metrics.json"
    atomic_write_json(target, obj, indent=2, sort_keys=True)
    text = target.read_text()
    assert text.endswith("}\n") and text == json.dumps(obj, indent=2, sort_keys=True) + "\n"
    assert json.loads(text) == obj
    with pytest.raises(TypeError):
        atomic_write_json(target, {"bad": object()})
    assert json.loads(target.read_text()) == obj
    assert _names(tmp_path) == ["metrics.json"]
    atomic_write_json(target, [1, 2], trailing_newline=False, default=str)
    assert target.read_text() == "[1, 2]"
