"""Longer training checks (``-m slow``): the 3D path on the LA phantom, and real ACDC at a CPU size."""

from __future__ import annotations

import math

import pytest

from actionpp.config import load_config
from actionpp.runlog import read_jsonl
from actionpp.train import train

pytestmark = pytest.mark.slow

LA_TINY = [
    "data.root=phantom", "data.crop=[32, 32, 32]", "data.labelled=2", "train.pretrain_iters=2",
    "train.finetune_iters=2", "pretrain.patch=16", "pretrain.stride=8", "pretrain.memory_bank=8",
    "saacl.anchors_per_class=16", "saacl.queue_size=64", "anco.queries_per_class=16", "anco.negatives=32",
    "anco.pixels_per_class=64", "runtime.device=cpu", "runtime.log_every=1", "runtime.progress=false",
]


def test_actionpp_trains_in_3d_on_the_la_phantom(tmp_path):
    res = train(load_config("la_paper", LA_TINY), run_dir=tmp_path, progress=False)
    rows = [e for e in read_jsonl(tmp_path / "log.jsonl") if e["kind"] == "train"]
    assert [e["iteration"] for e in rows] == [1, 2, 3, 4]
    assert {"loss/saacl", "loss/anco", "loss/unsup"} <= set(rows[-1])
    assert all(math.isfinite(v) for e in rows for k, v in e.items() if k.startswith("loss/"))
    assert all(sorted(e["assignment"]) == [0, 1] for e in rows if e["phase"] == "finetune")
    assert res.final is None and res.selected == "last"  # LA has no validation split


@pytest.mark.realdata
@pytest.mark.parametrize("method", ["supervised", "actionpp"])
def test_real_acdc_trains_and_validates(tmp_path, acdc_root, method):
    cfg = load_config("acdc_lite", [f"data.root={acdc_root}", f"method.name={method}", "train.pretrain_iters=4",
                                    "train.finetune_iters=8", "eval.every=0", "runtime.log_every=4",
                                    "runtime.device=cpu", "runtime.progress=false", "data.val_max_volumes=4"])
    res = train(cfg, run_dir=tmp_path, progress=False)
    rows = [e for e in read_jsonl(tmp_path / "log.jsonl") if e["kind"] == "train"]
    assert all(math.isfinite(v) for e in rows for k, v in e.items() if k.startswith("loss/"))
    assert res.final["n_volumes"] == 4 and 0.0 <= res.final["dice"] <= 1.0
    assert set(res.final["dice_per_class"]) == {"RV", "Myo", "LV"}
