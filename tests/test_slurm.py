"""`actionpp replicate GRID --slurm` against a real single-node SLURM (marker "slurm", skipped by default).

The test starts munged, slurmctld and slurmd on localhost (Debian's munge and slurm-wlm) with a minimal
slurm.conf in its temporary folder, submits a grid of throwaway notebooks through --slurm, preempts one
array task (`scontrol requeue`, what a preemption does) and kills another (`scancel` of one array
element) mid-run, and checks what a user cares about: the tables, the preempted run resumed within the
same submission, the killed run resumed by the re-submission, finished runs not submitted again.

The notebook stands in for 04_train: it keeps a checkpoint (the last step done) in its run folder and
resumes from it, as the engine does; its long runs pause at step 3 until the test releases them, so the
kills land mid-run without any timing assumption. Run: `.venv/bin/python -m pytest -m slurm` (about a
minute and a half on 2 busy cores). Skips with the reason when the binaries are missing or SLURM does not
start.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest
import yaml

from actionpp import replicate as rp
from actionpp.cli import main as cli_main
from actionpp.replicate import slurm as slurm_mod

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scancel", "scontrol", "sinfo", "sacct")
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY",
            "BOOT_FAIL", "DEADLINE"}
PAUSE = 3  # the long runs wait at this step until the test releases them

PARAMS = '''SEED: int = 0  # seed
STEPS: int = 1  # steps of 0.2 s; checkpoint.json in OUT_DIR holds the last one done
PAUSE_AT: int = -1  # wait at this step until RELEASE exists (the test's window to kill the run)
RELEASE: str = ""  # the file that ends the pause
OUT_DIR: str = "out"  # the run folder'''

BODY = '''import json, os, pathlib, time
from actionpp.notebook import write_metrics
out = pathlib.Path(OUT_DIR)
ckpt = out / "checkpoint.json"
start = json.loads(ckpt.read_text())["step"] if ckpt.is_file() else 0  # resume, as the engine does
with open(out / "attempts.txt", "a") as f:
    f.write(f"{start}\\n")
for step in range(start, STEPS):
    while step == PAUSE_AT and not pathlib.Path(RELEASE).exists():
        time.sleep(0.2)
    time.sleep(0.2)
    (out / "checkpoint.tmp").write_text(json.dumps({"step": step + 1}))
    os.replace(out / "checkpoint.tmp", ckpt)
dice = {"RV": 0.80 + 0.04 * SEED, "Myo": 0.70, "LV": 0.90 - 0.10 * SEED}
write_metrics(OUT_DIR, {
    "dataset": "acdc", "method": "fake", "labelled_patients": 3, "seed": SEED,
    "classes": ["RV", "Myo", "LV"], "dice": dice,
    "jaccard": {k: v / (2 - v) for k, v in dice.items()},
    "hd95": {"RV": [2.0, 4.0, 9.0][SEED], "Myo": 1.0, "LV": 1.0},
    "asd": {"RV": 0.5, "Myo": 0.5, "LV": 0.5},
    "protocol": {"split": "fake", "iterations": STEPS, "model_selection": "last",
                 "empty_mask_policy": "n/a", "distance_units": "voxels"},
})'''


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/bin", "/sbin"):
        if os.access(f"{folder}/{name}", os.X_OK):
            return f"{folder}/{name}"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    """A single-node SLURM whose every file lives in ``root``; ``env`` points the clients at it."""

    root: Path
    env: dict[str, str]
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def jobcomp(self) -> Path:
        return self.root / "jobcomp.txt"

    def run(self, *argv: str, check: bool = True) -> str:
        proc = subprocess.run([_binary(argv[0]) or argv[0], *argv[1:]], env=self.env, capture_output=True,
                              text=True, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed: {proc.stderr.strip()}\n{self.diagnostics()}")
        return proc.stdout

    def queue(self) -> dict[tuple[str, str], str]:
        """(job, array task or 'N/A') -> state of every job squeue still lists."""
        rows = [line.split() for line in self.run("squeue", "--noheader", "--array", "--format=%F %K %T").splitlines()]
        return {(r[0], r[1]): r[2] for r in rows if len(r) == 3}

    def finished(self) -> dict[tuple[str, str], str]:
        """(job, array task or '') -> the last state the job-completion log recorded (a requeue records PENDING)."""
        states: dict[tuple[str, str], str] = {}
        if not self.jobcomp.is_file():
            return states
        for line in self.jobcomp.read_text().splitlines():
            kv = dict(item.split("=", 1) for item in line.split() if "=" in item)
            if kv.get("ArrayJobId", "0") not in ("", "0"):
                states[(kv["ArrayJobId"], kv.get("ArrayTaskId", ""))] = kv.get("JobState", "")
            else:
                states[(kv.get("JobId", ""), "")] = kv.get("JobState", "")
        return states

    def array_states(self, array_job: str) -> dict[int, str]:
        return {int(task): state for (job, task), state in self.finished().items() if job == array_job}

    def diagnostics(self) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log"):
            p = self.root / "log" / name
            if p.is_file():
                parts.append(f"--- {name} (tail)\n" + "\n".join(p.read_text().splitlines()[-15:]))
        return "\n".join(parts)


def _start(root: Path) -> Cluster:
    """munged, slurmctld and slurmd on localhost, all state under ``root``; returns once the node is idle
    (skips the test with the reason otherwise)."""
    for sub in ("munge", "state", "spool", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    sock = root / "munge" / "munge.socket"
    conf = root / "slurm.conf"
    user = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip() or "root"
    conf.write_text(f"""# a single-node SLURM for tests/test_slurm.py; every file under {root}
ClusterName=actionpptest
SlurmctldHost=localhost(127.0.0.1)
SlurmUser={user}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
CredType=cred/munge
# cred_expire: a requeued job waits this long before it starts again (default 120 s)
AuthInfo=socket={sock},cred_expire=10
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
SchedulerParameters=sched_interval=1
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
# no slurmdbd here: sacct --completion reads this log
JobCompType=jobcomp/filetxt
JobCompLoc={root}/jobcomp.txt
ReturnToService=2
KillWait=5
NodeName=localhost NodeAddr=127.0.0.1 CPUs=4 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
""")
    env = {**os.environ, "SLURM_CONF": str(conf)}
    cluster = Cluster(root, env)
    commands = {
        "munged": [_binary("munged"), "--foreground", "--force", f"--key-file={key}", f"--socket={sock}",
                   f"--pid-file={root}/munge/munged.pid", f"--seed-file={root}/munge/seed",
                   f"--log-file={root}/log/munged.log"],
        "slurmctld": [_binary("slurmctld"), "-D", "-f", str(conf)],
        "slurmd": [_binary("slurmd"), "-D", "-N", "localhost", "-f", str(conf)],
    }
    for name, argv in commands.items():
        with open(root / "log" / f"{name}.out", "wb") as log:
            cluster.procs[name] = subprocess.Popen([str(a) for a in argv], env=env, stdout=log,
                                                   stderr=subprocess.STDOUT, start_new_session=True)
        if name == "munged":
            deadline = time.monotonic() + 15
            while not sock.exists() and time.monotonic() < deadline and cluster.procs[name].poll() is None:
                time.sleep(0.2)
    deadline = time.monotonic() + 45
    state = ""
    while time.monotonic() < deadline:
        dead = [n for n, p in cluster.procs.items() if p.poll() is not None]
        if dead:
            break
        with contextlib.suppress(subprocess.SubprocessError, OSError, AssertionError):
            state = cluster.run("sinfo", "--noheader", "--format=%T", check=False).strip()
        if state == "idle":
            return cluster
        time.sleep(0.5)
    logs = "\n".join(f"{n}: {(root / 'log' / f'{n}.out').read_text()[-600:]}" for n in commands)
    _stop(cluster)
    pytest.skip(f"SLURM did not start on localhost (node state {state!r}, exited: "
                f"{[n for n, p in cluster.procs.items() if p.poll() is not None]}):\n{logs}")


def _stop(cluster: Cluster) -> None:
    """Cancel every job of this test cluster, then end the three daemons it started (by their pids)."""
    if cluster.procs.get("slurmctld") and cluster.procs["slurmctld"].poll() is None:
        with contextlib.suppress(Exception):
            cluster.run("scancel", "--me", check=False)
            deadline = time.monotonic() + 30
            while cluster.queue() and time.monotonic() < deadline:
                time.sleep(0.5)
    for name in ("slurmd", "slurmctld", "munged"):
        proc = cluster.procs.get(name)
        if proc is None or proc.poll() is not None:
            continue
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@pytest.fixture
def slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    missing = [b for b in (*DAEMONS, *CLIENTS) if _binary(b) is None]
    if missing:
        pytest.skip(f"SLURM / munge binaries not found: {missing} (Debian: apt-get install slurm-wlm munge)")
    cluster = _start(tmp_path / "slurm")
    monkeypatch.setenv("SLURM_CONF", cluster.env["SLURM_CONF"])  # what sbatch reads inside `actionpp replicate`
    try:
        yield cluster
    finally:
        _stop(cluster)


def _grid(tmp_path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(PARAMS, metadata={"tags": ["parameters"]}), nbformat.v4.new_code_cell(BODY)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "fake_train.ipynb")
    grid = {
        "name": "slurm_test",
        "notebooks": ["fake_train"],
        "blocks": [
            {"axes": {"SEED": [0]}},
            {"axes": {"SEED": [1, 2]},
             "parameters": {"STEPS": 6, "PAUSE_AT": PAUSE, "RELEASE": str(tmp_path / "release")}},
        ],
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


def _wait(what: str, cond: Callable[[], bool], cluster: Cluster, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: still not so after {timeout:.0f} s\n{cluster.diagnostics()}")
        time.sleep(0.5)


def _job_ids(printed: str) -> tuple[str, str]:
    m = re.search(r"submitted array job (\d+) .* and tables job (\d+) \(afterany:\1\)", printed)
    assert m, f"no job ids in:\n{printed}"
    return m.group(1), m.group(2)


def _checkpoint(out: Path, seed: int) -> int:
    p = out / f"seed={seed}" / "checkpoint.json"
    return json.loads(p.read_text())["step"] if p.is_file() else 0


def _attempts(out: Path, seed: int) -> list[int]:
    """The step each attempt of the run started from (0: from scratch; more: resumed)."""
    return [int(x) for x in (out / f"seed={seed}" / "attempts.txt").read_text().split()]


def _seeds_in_table(out: Path) -> str:
    [row] = list(csv.DictReader((out / "results.csv").open()))
    return row["seeds"]


# --------------------------------------------------------------------------- without SLURM (default suite)


def _fake_executor(notebook: Path, output: Path, params: dict) -> None:
    """In-process stand-in for papermill: a valid metrics.json, no kernel."""
    output.write_text("{}")
    one = {"RV": 0.5}
    (Path(params["OUT_DIR"]) / "metrics.json").write_text(json.dumps({
        "dataset": "acdc", "method": "fake", "labelled_patients": 3, "seed": params["SEED"], "classes": ["RV"],
        "dice": one, "jaccard": one, "hd95": {"RV": 2.0}, "asd": {"RV": 1.0}, "protocol": {"split": "fake"},
    }))


def _scripts(printed: str) -> tuple[str, str]:
    """The array and tables scripts a --dry-run printed."""
    parts = re.split(r"^# ----- .*\.sbatch \(--dry-run: not written, not submitted\) -----$", printed, flags=re.M)
    assert len(parts) == 3, printed
    return parts[1].strip() + "\n", parts[2].strip() + "\n"


def test_dry_run_prints_both_scripts_from_the_options_and_leaves_finished_runs_out(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    grid = _grid(tmp_path)
    out = tmp_path / "out"
    runs = rp.expand(rp.load_grid(grid))
    assert rp.execute_run(runs[0], out, executor=_fake_executor).status == "done"  # seed=0 finished here
    rc = cli_main(["replicate", str(grid), "--out", str(out), "--slurm", "--dry-run", "--partition", "gpu",
                   "--gpus-per-run", "2", "--time", "1-00:00:00", "--max-parallel", "2", "--sbatch-arg=--mem=32G",
                   "--publish", "results/x"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert re.search(r"seed=0\s+finished: not submitted", printed) and re.search(r"seed=2\s+array task 2", printed)
    array, tables = _scripts(printed)
    sbatch = [line for line in array.splitlines() if line.startswith("#SBATCH")]
    assert sbatch == [
        "#SBATCH --job-name=actionpp-slurm_test",
        "#SBATCH --array=1-2%2",  # the finished run is not in the array
        f"#SBATCH --output={out.resolve()}/slurm/%A_%a.out",
        "#SBATCH --open-mode=append",
        "#SBATCH --requeue",
        "#SBATCH --partition=gpu",
        "#SBATCH --time=1-00:00:00",
        "#SBATCH --gres=gpu:2",
        "#SBATCH --mem=32G",
    ]
    task_line = array.rstrip().splitlines()[-1]
    fingerprint = rp.grid_fingerprint(rp.expand(rp.load_grid(grid)))
    assert task_line.endswith(f'replicate {grid} --out {out} --shard "${{SLURM_ARRAY_TASK_ID}}/3" '
                              f"--expect-grid {fingerprint}")
    assert "#SBATCH --dependency=afterany:<array job id>" in tables and "#SBATCH --mem=32G" in tables
    assert "--gres" not in tables and "--array" not in tables
    assert tables.rstrip().splitlines()[-1].endswith(f"replicate {grid} --out {out} --report-only --publish results/x")
    for script in (array, tables):  # what sbatch would run is valid bash
        subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    assert not (out / "slurm").exists()  # nothing written, nothing submitted


@pytest.mark.parametrize("extra, needle", [
    (["--slurm", "--time", "2h"], "--time must look like HH:MM:SS"),
    (["--slurm", "--max-parallel", "0"], "--max-parallel must be >= 1"),
    (["--slurm", "--gpus-per-run", "-1"], "--gpus-per-run must be >= 0"),
    (["--slurm", "--sbatch-arg=mem=32G"], "--sbatch-arg takes one sbatch option"),
    (["--slurm", "--sbatch-arg=--array=0-3"], "is set by --slurm itself"),
    (["--slurm", "--shard", "0/2"], "--shard does not go with --slurm"),
    (["--slurm", "--jobs", "2"], "--jobs does not go with --slurm"),
    (["--partition", "gpu"], "--partition goes only with --slurm"),
])
def test_bad_slurm_options_exit_2_with_one_line_naming_the_option(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], needle: str) -> None:
    out = tmp_path / "out"
    assert cli_main(["replicate", str(_grid(tmp_path)), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and needle in err and "\n" not in err
    assert not out.exists()


def test_without_sbatch_nothing_is_submitted_or_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    out = tmp_path / "out"
    assert cli_main(["replicate", str(_grid(tmp_path)), "--out", str(out), "--slurm"]) == 2
    assert "error: sbatch not found on PATH" in capsys.readouterr().err
    assert not (out / "slurm").exists()


def test_a_foreign_out_folder_is_refused_before_anything_is_submitted(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "sbatch-calls"
    fake = bin_dir / "sbatch"  # a stand-in that records being called
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\necho 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("mine")
    assert cli_main(["replicate", str(_grid(tmp_path)), "--out", str(out), "--slurm"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(out) in err and "refusing to write into this folder" in err
    assert not calls.exists() and sorted(p.name for p in out.iterdir()) == ["chapter1.tex"]


def test_array_spec_by_hand() -> None:
    assert slurm_mod.array_spec([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert slurm_mod.array_spec([2, 0, 1, 1]) == "0-2"
    assert slurm_mod.array_spec([3], max_parallel=4) == "3%4"
    with pytest.raises(ValueError, match="at least one task"):
        slurm_mod.array_spec([])


def test_an_edited_template_with_an_unknown_name_or_no_command_is_refused() -> None:
    values = {"sbatch": "#SBATCH --requeue", "about": "#", "workdir": "/w", "command": "exec true"}
    assert slurm_mod.render("{{sbatch}}\ncd {{workdir}}\n{{command}}\n", values).endswith("cd /w\nexec true\n")
    with pytest.raises(ValueError, match=r"site.sbatch: unknown placeholder\(s\) \['\{\{modules\}\}'\]"):
        slurm_mod.render("{{modules}}\n{{command}}", values, "site.sbatch")
    with pytest.raises(ValueError, match="no {{command}} line"):
        slurm_mod.render("{{sbatch}}\n", values, "site.sbatch")


# --------------------------------------------------------------------------- a real SLURM (marker "slurm")


@pytest.mark.slurm
@pytest.mark.timeout(600)
def test_grid_through_slurm_resumes_the_killed_run_and_skips_finished_ones(
        slurm: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    grid = _grid(tmp_path)
    out = tmp_path / "out"
    runs = {r.run_id: r for r in rp.expand(rp.load_grid(grid))}
    assert {r.run_id: r.index for r in runs.values()} == {"seed=0": 0, "seed=1": 1, "seed=2": 2}
    command = ["replicate", str(grid), "--out", str(out), "--slurm", "--partition", "debug", "--gpus-per-run", "0",
               "--time", "00:10:00", "--max-parallel", "3", "--sbatch-arg=--comment=actionpp-test"]

    # --dry-run prints both scripts, with the options as #SBATCH lines, and submits nothing
    assert cli_main([*command, "--dry-run"]) == 0
    shown = capsys.readouterr().out
    for line in ("#SBATCH --array=0-2%3", "#SBATCH --requeue", "#SBATCH --partition=debug",
                 "#SBATCH --time=00:10:00", "#SBATCH --comment=actionpp-test",
                 "#SBATCH --dependency=afterany:<array job id>"):
        assert line in shown, line
    assert "--gres" not in shown and '--shard "${SLURM_ARRAY_TASK_ID}/3"' in shown and "--report-only" in shown
    assert not out.exists() and slurm.queue() == {}

    # submitted: one array job of the three runs and a tables job after it
    assert cli_main(command) == 0
    array1, tables1 = _job_ids(capsys.readouterr().out)
    assert "#SBATCH --array=0-2%3" in (out / "slurm" / "array.sbatch").read_text()
    _wait("the two long runs pause at their step 3",
          lambda: _checkpoint(out, 1) == PAUSE and _checkpoint(out, 2) == PAUSE, slurm)

    # the same command while they run: nothing is submitted twice
    assert cli_main(command) == 0
    again = capsys.readouterr().out
    assert f"still queued as {array1}_1" in again and f"still queued as {array1}_2" in again
    assert "nothing to submit" in again and "submitted array job" not in again

    # a preemption (requeue) of task 2 and a kill (scancel of one array element) of task 1, mid-run
    slurm.run("scontrol", "requeue", f"{array1}_2")
    slurm.run("scancel", f"{array1}_1")
    # both old attempts are gone once task 1 has left the queue and task 2 is back in it (or already restarted:
    # its new attempt holds the run lock the old one held)
    _wait("task 1 gone and task 2 back in the queue",
          lambda: (array1, "1") not in (q := slurm.queue())
          and (q.get((array1, "2")) == "PENDING" or len(_attempts(out, 2)) == 2), slurm)
    (tmp_path / "release").touch()
    _wait(f"tables job {tables1} ended", lambda: slurm.finished().get((tables1, "")) in TERMINAL, slurm)

    assert slurm.finished()[(tables1, "")] == "COMPLETED"
    assert slurm.array_states(array1) == {0: "COMPLETED", 1: "CANCELLED", 2: "COMPLETED"}
    status = {rid: rp.run_status(r, out) for rid, r in runs.items()}
    assert status == {"seed=0": "done", "seed=1": "partial", "seed=2": "done"}
    # the preempted run went back to the queue and resumed from its checkpoint within the same submission
    assert _attempts(out, 2) == [0, PAUSE]
    log2 = (out / "slurm" / f"{array1}_2.out").read_text()
    assert "attempt 1" in log2 and "attempt 2" in log2  # --open-mode=append keeps both attempts' logs
    # the killed run stopped where it was killed (no process of it went on), and the tables left it out
    assert _checkpoint(out, 1) == PAUSE and _attempts(out, 1) == [0]
    assert _seeds_in_table(out) == "0 2"

    # re-submission: only the killed run, and it resumes from its checkpoint
    mtimes = {s: (out / f"seed={s}" / "fake_train.ipynb").stat().st_mtime_ns for s in (0, 2)}
    assert cli_main(command) == 0
    printed = capsys.readouterr().out
    array2, tables2 = _job_ids(printed)
    assert re.search(r"seed=0\s+finished: not submitted", printed) and re.search(r"seed=1\s+array task 1", printed)
    assert "#SBATCH --array=1%3" in (out / "slurm" / "array.sbatch").read_text()
    _wait(f"tables job {tables2} ended", lambda: slurm.finished().get((tables2, "")) in TERMINAL, slurm)
    assert slurm.finished()[(tables2, "")] == "COMPLETED"
    assert slurm.array_states(array2) == {1: "COMPLETED"}  # one task: the finished runs were not resubmitted
    assert all(rp.run_status(r, out) == "done" for r in runs.values())
    assert _attempts(out, 1) == [0, PAUSE]  # resumed at the step it was killed at, not started over
    assert _attempts(out, 0) == [0] and _attempts(out, 2) == [0, PAUSE]
    assert {s: (out / f"seed={s}" / "fake_train.ipynb").stat().st_mtime_ns for s in (0, 2)} == mtimes
    assert _seeds_in_table(out) == "0 1 2"

    # everything finished: a third submission submits nothing
    assert cli_main(command) == 0
    assert "nothing to submit (3 finished, 0 still queued)" in capsys.readouterr().out
    assert len(json.loads((out / "slurm" / "submissions.json").read_text())) == 2

    with capsys.disabled():  # the record a CI log keeps: SLURM's own view of the jobs
        print("\n" + slurm.run("sacct", "--completion", "--format=JobID,JobName%30,State,ExitCode,Elapsed"))
        for (job, task), state in sorted(slurm.finished().items()):
            print(f"  {job}{'_' + task if task else ''}: {state}")
        print(f"  preempted task {array1}_2 log:\n" + (out / "slurm" / f"{array1}_2.out").read_text())
        print(f"  killed task {array1}_1 log:\n" + (out / "slurm" / f"{array1}_1.out").read_text())
        print(f"  resumed task {array2}_1 log:\n" + (out / "slurm" / f"{array2}_1.out").read_text())
        print({s: _attempts(out, s) for s in (0, 1, 2)}, "(the step each attempt started from)")


def test_an_array_task_refuses_a_grid_edited_since_it_was_submitted(tmp_path, capsys):
    """Task i runs `--shard i/N --expect-grid F`: if the grid file changed since submission, shard i could name
    another run (or two); the task refuses (exit 2) instead of running it."""
    from actionpp import replicate as rp
    from actionpp.cli import main

    grid_file = tmp_path / "g.yaml"
    grid_file.write_text("name: g\nnotebooks: [04_train]\nprofile: smoke\naxes: {METHOD: [supervised], SEED: [0, 1]}\n")
    fingerprint = rp.grid_fingerprint(rp.expand(rp.load_grid(grid_file)))
    args = ["replicate", str(grid_file), "--out", str(tmp_path / "out"), "--shard", "0/2", "--expect-grid"]
    assert main([*args, fingerprint, "--dry-run"]) == 0  # the grid it was submitted for
    grid_file.write_text(grid_file.read_text().replace("SEED: [0, 1]", "SEED: [0, 1, 2]"))
    assert main([*args, fingerprint, "--dry-run"]) == 2
    assert "the grid changed since this job was submitted" in capsys.readouterr().err
