"""Multi-process training: torchrun with the gloo backend on the CPU, 2 ranks, identical final weights."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from actionpp.distributed import DistInfo, resolve_device

SCRIPT = textwrap.dedent(
    """
    import os, sys
    import torch
    torch.set_num_threads(1)
    from actionpp.config import load_config
    from actionpp.train import Hooks, train

    run_dir = sys.argv[1]

    def record(state):
        # every rank writes what it ends with (the library writes only rank 0's checkpoint)
        torch.save({"student": state.student.state_dict(), "teacher": state.teacher.state_dict()},
                   os.path.join(run_dir, f"rank{state.info.rank}.pt"))

    overrides = ["train.pretrain_iters=2", "train.finetune_iters=2", "runtime.device=cpu",
                 "runtime.checkpoint_every=2"]
    train(load_config("phantom_smoke", overrides), run_dir=run_dir, progress=False, hooks=Hooks(after_run=record))
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_end_with_identical_student_and_teacher(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(SCRIPT)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           str(script), str(run_dir)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    r0, r1 = (torch.load(run_dir / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for part in ("student", "teacher"):
        diff = [k for k in r0[part] if not torch.equal(r0[part][k], r1[part][k])]
        assert diff == [], f"{part} differs between ranks at {diff[:5]}"
    # rank 0 alone wrote the run directory, and its checkpoint is what both ranks hold
    from actionpp.checkpoint import load_checkpoint

    ck = load_checkpoint(run_dir / "last.pt")
    assert ck["world_size"] == 2 and len(ck["rng"]) == 2 and ck["iteration"] == 4
    assert all(torch.equal(ck["student"][k], r0["student"][k]) for k in r0["student"])
    # the ranks' batch generators are seeded apart (rank offset), so they drew different batches:
    # equal weights come from DDP's gradient averaging, not from identical inputs
    assert not torch.equal(ck["rng"][0]["generators"]["batch"], ck["rng"][1]["generators"]["batch"])


def test_device_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == (torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:0")
    with pytest.raises(ValueError, match="expected auto, cpu, cuda or cuda:N"):
        resolve_device("tpu")
    info = DistInfo()
    assert info.is_main and not info.enabled and info.world_size == 1
