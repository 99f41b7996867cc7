"""`actionpp data ...` sub-commands: exit codes and printed summaries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from actionpp.cli import main


def test_check_json_and_exit_codes(phantom_acdc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "check", str(phantom_acdc), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["kind"] == "acdc" and s["lists"]["val"] == 2 and s["train_patients"] == 4
    assert main(["data", "check", str(tmp_path)]) == 1
    assert f"{tmp_path}: not a dataset" in capsys.readouterr().err


def test_phantom_pack_prepare_commands(phantom_acdc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ph"
    assert main(["data", "phantom", "--patients", "3", "--seed", "4", "--out", str(out), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["patients"] == {"train": 1, "val": 1, "test": 1} and (out / "train_slices.list").is_file()
    assert main(["data", "phantom", "--patients", "3", "--out", str(out)]) == 2  # refuses to overwrite
    capsys.readouterr()
    assert main(["data", "pack", str(out), str(tmp_path / "p.pack")]) == 0
    assert "slices: " in capsys.readouterr().out
    assert main(["data", "check", str(tmp_path / "p.pack"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["layout"] == "pack"
    assert main(["data", "prepare-acdc", str(phantom_acdc / "raw"), str(tmp_path / "conv")]) == 0
    assert "train_slices" in capsys.readouterr().out
    assert main(["data", "prepare-acdc", str(tmp_path / "nothing"), str(tmp_path / "c2")]) == 1
    assert "raw ACDC folder missing" in capsys.readouterr().err
