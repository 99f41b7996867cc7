"""A run killed with SIGKILL and resumed ends bit-identical to an uninterrupted run (CPU, deterministic)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from actionpp.checkpoint import load_checkpoint

# phantom_smoke (32 x 32, batch 4 + 4) shortened: 2 pre-training + 4 fine-tuning iterations,
# a checkpoint every 2, a log line every iteration
OVERRIDES = ["runtime.deterministic=true", "runtime.device=cpu", "train.pretrain_iters=2", "train.finetune_iters=4",
             "runtime.checkpoint_every=2", "runtime.log_every=1", "data.val_max_volumes=1"]

SCRIPT = textwrap.dedent(
    """
    import sys, time
    import torch
    torch.set_num_threads(1)
    import actionpp.runlog as runlog
    from actionpp.config import load_config
    from actionpp.train import train

    run_dir, kill_at, overrides = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    original = runlog.RunLogger.log

    def log(self, entry):
        original(self, entry)
        if kill_at and entry.get("kind") == "train" and entry.get("iteration") == kill_at:
            print("READY", flush=True)  # the test SIGKILLs us now
            time.sleep(120)

    runlog.RunLogger.log = log
    train(load_config("phantom_smoke", overrides), run_dir=run_dir, resume=True, progress=False)
    print("DONE", flush=True)
    """
)


def _run(script: Path, run_dir: Path, kill_at: int = 0) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(run_dir), str(kill_at), *OVERRIDES],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    if kill_at:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "READY", f"run ended before iteration {kill_at}: {line!r} {proc.stderr.read()}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        return
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "DONE" in out, err


def _assert_same(a, b, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), f"differs at {where}"
    elif isinstance(a, dict):
        assert set(a) == set(b), f"keys differ at {where}: {set(a) ^ set(b)}"
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"lengths differ at {where}"
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"differs at {where}: {a!r} != {b!r}"


def test_sigkill_then_resume_matches_uninterrupted_run_bit_exactly(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    _run(script, straight)
    # killed after logging iteration 5: last.pt holds iteration 4 (two steps into fine-tuning: SGD
    # momentum, SAACL queue, allocator means and the pre-training memory banks all non-trivial)
    _run(script, killed, kill_at=5)
    assert not (killed / "metrics.json").exists()
    assert load_checkpoint(killed / "last.pt")["iteration"] == 4
    _run(script, killed)  # resume
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(killed / "last.pt")
    assert a["iteration"] == b["iteration"] == 6
    for key in ("student", "teacher", "optimizer", "queue", "allocator", "bank_g", "bank_l", "rng"):
        _assert_same(a[key], b[key], key)
    # the resumed log has every iteration once (lines after the checkpoint were dropped and rewritten)
    iters = [e["iteration"] for e in map(json.loads, (killed / "log.jsonl").read_text().splitlines())
             if e["kind"] == "train"]
    assert iters == [1, 2, 3, 4, 5, 6]
    starts = json.loads((killed / "run.json").read_text())["starts"]
    assert [s["from_iteration"] for s in starts] == [0, 4]
    commit = json.loads((killed / "run.json").read_text())["environment"]["git_commit"]
    assert [s["git_commit"] for s in starts] == [commit, commit]  # each start says which code it ran
    from actionpp.runlog import cpu_model

    assert [s["cpu"] for s in starts] == [cpu_model()] * 2 and cpu_model()  # and on which CPU
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (straight, killed))
    assert ma["final"] == mb["final"]
