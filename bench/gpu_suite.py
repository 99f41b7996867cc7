"""The GPU suite: one command that spends a short GPU window well (``bench/README.md`` says how to launch it).

Stages, in order; each is timed, capped and recorded even when it fails, and the summary is
rewritten after every stage (a suite stopped at the tool's limit still leaves what it measured):

1. ``env``: machine, driver, torch / CUDA, the carried wheels installed (``.gpu_carry/whl/*.whl``,
   none needed today), the packages the suite imports, the data (``.gpu_carry/acdc.pack``);
2. ``pytest``: ``pytest -m gpu`` on the test files that hold GPU tests;
3. ``bench``: ``bench/bench_train.py`` on the ``acdc_paper`` recipe: iterations / s per method
   and phase, eager and with ``torch.compile``, peak memory, the projected 10 k + 20 k schedule,
   the SSL4MIS-style loop as the 1x, and where the time of an ACTION++ step goes (``profile.txt``);
4. ``train``: short real-ACDC training (up to 1 000 fine-tuning iterations) of supervised and of
   ACTION++ with validation Dice; the iteration count is sized from the measured speed;
5. ``jobs``: 1, 2, 4, 8 processes of the ACTION++ recipe side by side on the GPU, the aggregate
   iterations / s and the ``--jobs`` it suggests for the 24-run replication grid;
6. ``ddp``: ``torchrun`` with NCCL (needs two GPUs: skipped, and said so, on one).

Everything it keeps goes to ``$OUT`` (default ``runs/gpu_suite/``; ``runs/gpu_suite-dry/`` for a
dry run): ``summary.md``, ``summary.json``, ``suite.log``, ``pytest.log``, ``profile.txt`` (five
files: the device tool returns at most eight). Run directories and worker logs live in a scratch
folder that is deleted at the end (``--keep-scratch`` keeps it).

    python bench/gpu_suite.py                      # on the GPU machine (budget 500 s)
    python bench/gpu_suite.py --dry-run            # every stage at the smallest sizes on the CPU, < ~2 min
    python bench/gpu_suite.py --record DIR         # write DIR/summary.json into docs/benchmarks.md
    python bench/gpu_suite.py --check-carry        # what a device call would send, against 64 MiB

The suite imports only the standard library at the top: the project (and torch) are imported
after the carried wheels are installed. Validation inside the suite computes surface distances
with the project's SciPy backend (MONAI, the default, is not on the GPU image; the two agree to
float precision, tests/test_metrics.py).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import faulthandler
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
CARRY = REPO / ".gpu_carry"
SECTION = "gpu_suite"
REQUIRED = ("numpy", "scipy", "h5py", "yaml", "tqdm", "pytest")  # what the suite's code paths import
GRID_RUNS = 24  # the replication grid (method x seeds x settings)
RECIPE_ITERS = 30_000  # the paper's 10 k + 20 k

# stage caps in seconds (GPU run, dry run); a stage also never gets more than what is left of --budget
CAPS = {
    "env": (30, 30),
    "pytest": (110, 60),
    "bench": (210, 60),
    "train": (100, 45),
    "jobs": (100, 60),
    "ddp": (45, 45),
}
STAGES = tuple(CAPS)
# A dry run checks code paths, not speed: on a busy 2-core machine two workers importing torch and building
# the smoke recipe may need minutes to start. Their start-up is waited for up to this long (within what the
# suite's own watchdog leaves), and workers that are alive but not ready by then skip the stage; only a
# worker that dies fails it.
DRY_STARTUP_S = 240.0


# =========================================================================== output


OUT_FILES = ("summary.md", "summary.json", "suite.log", "pytest.log", "profile.txt")


def check_out(out: Path) -> str | None:
    """Why the suite may not write into ``out``, or None. The ownership rule of ``actionpp.atomic`` (this
    file imports only the standard library at the top, and its ``$OUT`` must hold nothing but its five
    files, so no marker): ``out`` is new, empty, or holds only files named as the suite's with a
    ``summary.json`` the suite wrote; it replaces those and never anything else."""
    if not out.exists():
        return None
    if not out.is_dir():
        return f"{out}: exists and is not a folder"
    names = sorted(p.name for p in out.iterdir())
    foreign = [n for n in names if n not in OUT_FILES and n != "summary.json.tmp"]  # .tmp: a killed write_summary
    if foreign:
        return (f"{out}: refusing to write into this folder: it holds files the GPU suite did not write "
                f"({', '.join(foreign[:4])}); choose a new or empty --out")
    if names:
        try:
            doc = json.loads((out / "summary.json").read_text())
            ours = isinstance(doc, dict) and {"meta", "stages"} <= set(doc)
        except (OSError, ValueError):
            ours = False
        if not ours:
            return (f"{out}: refusing to write into this folder: no summary.json of an earlier suite run in it, so "
                    f"its {', '.join(names[:4])} are not the suite's; choose a new or empty --out")
    return None


class Suite:
    """The suite's state: options, output folder, log, per-stage results, the clock."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dry = bool(args.dry_run)
        default = REPO / "runs" / ("gpu_suite-dry" if self.dry else "gpu_suite")
        self.out = Path(args.out or os.environ.get("OUT") or default)
        self.out.mkdir(parents=True, exist_ok=True)
        for name in ("summary.md", "summary.json", "suite.log", "pytest.log", "profile.txt"):
            (self.out / name).unlink(missing_ok=True)
        self.scratch = Path(args.scratch) if args.scratch else Path(tempfile.mkdtemp(prefix="actionpp-gpu-suite-"))
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.log_file = open(self.out / "suite.log", "a", buffering=1)  # noqa: SIM115 - open for the whole run
        self.t0 = time.perf_counter()
        self.budget = float(args.budget if args.budget is not None else (150 if self.dry else 500))
        self.stages: dict[str, dict[str, Any]] = {}
        self.meta: dict[str, Any] = {
            "dry_run": self.dry,
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": "python bench/gpu_suite.py " + " ".join(args.argv),
            "budget_s": self.budget,
        }
        self.data = "phantom"
        self.device = "cpu"

    # ---------------------------------------------------------------- time

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.budget - self.elapsed()

    def cap(self, stage: str) -> float:
        gpu_cap, dry_cap = CAPS[stage]
        return max(0.0, min(dry_cap if self.dry else gpu_cap, self.left() - 3))

    # ---------------------------------------------------------------- log

    def say(self, text: str) -> None:
        line = f"[{self.elapsed():6.1f} s] {text}"
        print(line, flush=True)
        self.log_file.write(line + "\n")

    def log_block(self, title: str, text: str) -> None:
        self.log_file.write(f"----- {title}\n{text.rstrip()}\n----- end {title}\n")

    # ---------------------------------------------------------------- summary

    def write_summary(self) -> None:
        self.meta["wall_s"] = round(self.elapsed(), 1)
        doc = {"meta": self.meta, "stages": self.stages}
        tmp = self.out / "summary.json.tmp"
        tmp.write_text(json.dumps(doc, indent=1, default=str))
        os.replace(tmp, self.out / "summary.json")
        (self.out / "summary.md").write_text(format_summary(doc))


def _json_safe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:600]


@contextlib.contextmanager
def _scipy_distances() -> Iterator[None]:
    """Validation inside the suite uses the SciPy surface distances (no MONAI on the GPU image)."""
    import functools

    import actionpp.evaluate as ev

    original = ev.volume_metrics
    ev.volume_metrics = functools.partial(original, backend="scipy")  # type: ignore[assignment]
    try:
        yield
    finally:
        ev.volume_metrics = original  # type: ignore[assignment]


def run_stage(suite: Suite, name: str, fn: Callable[[Suite, float], dict[str, Any]]) -> None:
    """Run one stage with its cap; record ok / failed / skipped, its seconds and what it returned."""
    cap = suite.cap(name)
    wanted = suite.args.stages.split(",") if suite.args.stages else list(STAGES)
    if name not in wanted:
        suite.stages[name] = {"status": "skipped", "reason": "not in --stages"}
        suite.write_summary()
        return
    if cap < 5:
        suite.stages[name] = {"status": "skipped", "reason": f"time budget spent ({suite.elapsed():.0f} s of "
                                                             f"{suite.budget:.0f} s)"}
        suite.say(f"stage {name}: skipped (time budget)")
        suite.write_summary()
        return
    suite.stages[name] = {"status": "running", "cap_s": round(cap, 1)}
    suite.write_summary()
    suite.say(f"stage {name}: start (cap {cap:.0f} s)")
    t = time.perf_counter()
    try:
        res = fn(suite, cap)
        res.setdefault("status", "ok")
    except Exception as exc:  # noqa: BLE001 - a failing stage is recorded; the next one still runs
        res = {"status": "failed", "error": _json_safe_error(exc)}
        suite.log_block(f"{name} traceback", traceback.format_exc())
        suite.say(f"stage {name}: FAILED: {_json_safe_error(exc)}")
    res["seconds"] = round(time.perf_counter() - t, 1)
    res["cap_s"] = round(cap, 1)
    suite.stages[name] = res
    suite.say(f"stage {name}: {res['status']} in {res['seconds']:.1f} s")
    suite.write_summary()


def _subprocess(suite: Suite, cmd: list[str], timeout: float, log_name: str | None = None,
                env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run ``cmd`` (output kept in suite.log, and in ``log_name`` under $OUT when given); rc 124 on timeout."""
    suite.say("$ " + " ".join(cmd))
    try:
        p = subprocess.run(cmd, cwd=REPO, env=env or _env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=timeout)
        rc, out = p.returncode, p.stdout
    except subprocess.TimeoutExpired as exc:
        raw = exc.stdout or ""
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        rc, out = 124, text + f"\n[timed out after {timeout:.0f} s]"
    suite.log_block(" ".join(cmd[:6]), out)
    if log_name:
        (suite.out / log_name).write_text(out)
    return rc, out


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra or {})
    return env


# =========================================================================== stage 1: the environment


def stage_env(suite: Suite, cap: float) -> dict[str, Any]:
    res: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                           "cpus": os.cpu_count()}
    # carried wheels first: nothing below may import a package they bring
    wheels = sorted((CARRY / "whl").glob("*.whl")) if (CARRY / "whl").is_dir() else []
    res["wheels"] = [w.name for w in wheels]
    if wheels:
        site = suite.scratch / "site"
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
               "--no-cache-dir", "--upgrade", "--target", str(site), *map(str, wheels)]
        rc, out = _subprocess(suite, cmd, timeout=min(cap, 120))
        if rc != 0:
            raise RuntimeError(f"installing the carried wheels failed (rc {rc}): {out[-400:]}")
        sys.path.insert(0, str(site))
        os.environ["PYTHONPATH"] = os.pathsep.join([str(site)] + [p for p in os.environ.get("PYTHONPATH", "").split(
            os.pathsep) if p])
    import importlib
    import importlib.util

    versions, missing = {}, []
    for mod in REQUIRED + ("torch",):
        try:
            m = importlib.import_module(mod)
            versions[mod] = str(getattr(m, "__version__", "?"))
        except ImportError:
            missing.append(mod)
    res["packages"] = versions
    for optional in ("monai", "nibabel", "pytest_timeout"):
        res.setdefault("optional", {})[optional] = importlib.util.find_spec(optional) is not None
    if missing:
        raise RuntimeError(f"missing packages {missing}: carry their wheels in .gpu_carry/whl/ (bench/README.md)")
    import torch

    res["torch"] = torch.__version__
    res["cuda"] = torch.cuda.is_available()
    res["torch_cuda"] = torch.version.cuda
    suite.meta["torch"] = torch.__version__
    suite.meta["python"] = res["python"]
    if res["cuda"]:
        props = torch.cuda.get_device_properties(0)
        res["gpu"] = torch.cuda.get_device_name(0)
        res["gpus"] = torch.cuda.device_count()
        res["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        res["capability"] = f"{props.major}.{props.minor}"
        res["bf16"] = bool(torch.cuda.is_bf16_supported())
        if shutil.which("nvidia-smi"):
            with contextlib.suppress(Exception):
                q = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm,power.limit",
                                    "--format=csv,noheader"], capture_output=True, text=True, timeout=15)
                res["nvidia_smi"] = q.stdout.strip()
        suite.device = "cuda"
        suite.meta["machine"] = (f"{res['gpu']} ({res['gpu_memory_gib']} GiB, compute capability {res['capability']}"
                                 + (f", driver {res['nvidia_smi'].split(',')[0]}" if res.get("nvidia_smi") else "")
                                 + f"), {res['cpus']} CPUs")
    else:
        suite.device = "cpu"
        suite.meta["machine"] = f"{platform.machine()}, {res['cpus']} CPUs, no CUDA"
        if not suite.dry:
            res["warning"] = "no CUDA device: the numbers below are CPU numbers"
    with contextlib.suppress(Exception):
        g = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                           timeout=10)
        if g.returncode == 0:
            suite.meta["commit"] = g.stdout.strip()
    # the data
    data = suite.args.data
    if data is None and not suite.dry and (CARRY / "acdc.pack").is_file():
        data = str(CARRY / "acdc.pack")
    if data is None:
        data = "phantom"
        if not suite.dry:
            res["warning_data"] = "no .gpu_carry/acdc.pack: benchmarks on the phantom, the training stage skipped"
    if data not in ("phantom", "shared"):
        data = str(Path(data).resolve())  # the subprocesses run from the repository root
    suite.data = data
    res["data"] = data
    if data not in ("phantom", "shared") and Path(data).is_file():
        from actionpp.data.pack import read_header

        header, _ = read_header(data)
        res["data_bytes"] = Path(data).stat().st_size
        res["data_items"] = len(header.get("items", header.get("entries", [])))
        res["data_kind"] = header.get("dataset", header.get("kind"))
    suite.meta["data"] = data if data == "phantom" else f"{Path(data).name} ({res.get('data_bytes', 0) / 1e6:.0f} MB)"
    return res


# =========================================================================== stage 2: pytest -m gpu


def gpu_test_files() -> list[str]:
    """The test files that hold ``pytest.mark.gpu`` tests (collecting only these keeps out files that need
    packages the GPU image lacks)."""
    return sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py")
                  if "pytest.mark.gpu" in p.read_text())


def stage_pytest(suite: Suite, cap: float) -> dict[str, Any]:
    import importlib.util

    files = gpu_test_files()
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rA", "-p", "no:cacheprovider", "-o", "addopts=",
           "--strict-markers", *files]
    if importlib.util.find_spec("pytest_timeout") is not None:
        cmd.append(f"--timeout={int(max(cap - 10, 30))}")  # per test
    threads = "1" if suite.dry else "4"
    rc, out = _subprocess(suite, cmd, timeout=cap, log_name="pytest.log", env=_env({"OMP_NUM_THREADS": threads}))
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", out.splitlines()[-1]
                                                if out.strip() else "")}
    outcomes = []
    for line in out.splitlines():
        m = re.match(r"^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\s+(.*)$", line)
        if m:
            outcomes.append([m.group(1), m.group(2)[:200]])
    res = {"rc": rc, "files": files, "counts": counts, "outcomes": outcomes}
    if rc != 0:
        res["status"] = "failed"
        res["error"] = f"pytest exit code {rc} (pytest.log)"
    return res


# =========================================================================== stage 3: the training benchmark


def _bench_module() -> Any:
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    import bench_train

    return bench_train


def stage_bench(suite: Suite, cap: float) -> dict[str, Any]:
    bt = _bench_module()
    if suite.dry:
        argv = ["--device", "cpu", "--config", "phantom_smoke", "--data", suite.data, "--size", "32", "--iters", "2",
                "--warmup", "1", "--compile", "both", "--compile-backend", "aot_eager", "--compile-methods",
                "actionpp", "--ssl4mis", "--ssl4mis-workers", "1", "--profile-steps", "2"]
    else:
        argv = ["--device", "auto", "--config", "acdc_paper", "--data", suite.data, "--iters", "50", "--warmup", "10",
                "--compile", "both", "--compile-methods", "actionpp,supervised,mean_teacher,action", "--ssl4mis",
                "--profile-steps", "5"]
    argv += ["--profile", str(suite.out / "profile.txt"), "--budget", str(int(max(cap - 25, 10))), "--no-write"]
    args = bt.parser().parse_args(argv)
    args.argv = argv
    result = bt.run(args)
    (suite.out / "profile.txt").write_text(bt.format_profile([p for p in result["profiles"] if "error" not in p])
                                           or "no profile (see suite.log)\n")
    failed = [r for r in result["rows"] if r["status"].startswith("failed")]
    failed += [s for s in result["ssl4mis"] if s["status"].startswith("failed")]
    failed += [p for p in result["profiles"] if "error" in p]
    res = {"result": result, "section": bt.format_section(result)}
    if failed:
        res["status"] = "failed"
        res["error"] = f"{len(failed)} row(s) failed: " + "; ".join(
            str(f.get("status", f.get("error")))[:150] for f in failed[:3])
    return res


def _its(suite: Suite, method: str, phase: str = "finetune", compile_on: bool = False) -> float | None:
    bench = suite.stages.get("bench", {}).get("result")
    if not bench:
        return None
    for r in bench["rows"]:
        if (r["method"], r["phase"], r["compile"]) == (method, phase, compile_on) and r["status"] == "ok":
            return float(r["its_per_s"])
    return None


# =========================================================================== stage 4: short real-ACDC training


def stage_train(suite: Suite, cap: float) -> dict[str, Any]:
    if not suite.dry and suite.data == "phantom":
        return {"status": "skipped", "reason": "no real ACDC data (.gpu_carry/acdc.pack): bench/README.md"}
    import torch

    from actionpp.config import load_config
    from actionpp.runlog import read_jsonl
    from actionpp.train import train

    methods = ("supervised", "actionpp")
    runs: dict[str, Any] = {}
    t_stage = time.perf_counter()
    for i, method in enumerate(methods):
        left = cap - (time.perf_counter() - t_stage)
        share = left / (len(methods) - i)
        if suite.dry:
            iters, profile = 4, "phantom_smoke"
            over = ["data.val_max_volumes=2", "runtime.log_every=2", "eval.every=2", "runtime.checkpoint_every=4"]
        else:
            its = _its(suite, method) or 5.0
            # validation of 20 volumes twice (a few seconds each) and the data load come out of the share
            iters = int(max(100, min(1000, (share - 25) * 0.8 * its)) // 100 * 100)
            profile = "acdc_paper"
            over = [f"eval.every={iters // 2}", "runtime.log_every=50", f"runtime.checkpoint_every={iters}"]
        if share < 10:
            runs[method] = {"status": "skipped", "reason": "time budget"}
            continue
        cfg = load_config(profile, [f"data.root={suite.data}", f"method.name={method}", "train.pretrain_iters=0",
                                    f"train.finetune_iters={iters}", "runtime.progress=false",
                                    "runtime.device=auto" if not suite.dry else "runtime.device=cpu", *over])
        run_dir = suite.scratch / f"train-{method}"
        if suite.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        with _scipy_distances():
            result = train(cfg, run_dir=run_dir, resume=False, progress=False)
        seconds = time.perf_counter() - t
        log = read_jsonl(run_dir / "log.jsonl")
        vals = [{"iteration": e["iteration"], "dice": e.get("dice"), "dice_per_class": e.get("dice_per_class"),
                 "seconds": e.get("seconds")} for e in log if e.get("kind") == "val"]
        losses = [e["loss/total"] for e in log if e.get("kind") == "train" and "loss/total" in e]
        final = result.final or {}
        runs[method] = {
            "status": "ok", "iterations": iters, "seconds": round(seconds, 1),
            "its_per_s": result.its_per_s.get("finetune"), "validations": vals,
            "final_dice": final.get("dice"), "best_dice": (result.best or {}).get("dice"),
            "dice_per_class": final.get("dice_per_class"),
            "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if suite.device == "cuda" else None,
        }
        suite.say(f"train {method}: {iters} iterations in {seconds:.1f} s, final val Dice {final.get('dice')}")
    res: dict[str, Any] = {"runs": runs, "profile": "phantom_smoke" if suite.dry else "acdc_paper",
                           "data": suite.meta.get("data", suite.data)}
    bad = [m for m, r in runs.items() if r["status"] == "ok" and not (r["final_dice"] is not None
                                                                     and math.isfinite(r["final_dice"]))]
    if bad:
        res["status"] = "failed"
        res["error"] = f"no finite validation Dice for {bad}"
    return res


# =========================================================================== stage 5: runs side by side


def worker_main(ctl: Path, wid: int, spec: dict[str, Any]) -> int:
    """One process of the ``jobs`` stage: prepare, warm up, then run the rounds the parent announces."""
    import torch

    from actionpp.config import load_config
    from actionpp.distributed import DistInfo, resolve_device
    from actionpp.train import prepare
    from actionpp.train.steps import finetune_step, pretrain_step

    torch.set_num_threads(int(spec.get("threads", 1)))
    cfg = load_config(spec["profile"], spec["overrides"])
    device = resolve_device(cfg.runtime.device)
    tr, batches, objective, _ = prepare(cfg, device, DistInfo())
    tr.optimizer = tr.new_optimizer(spec["phase"])
    fn = pretrain_step if spec["phase"] == "pretrain" else finetune_step
    cuda = device.type == "cuda"
    it = 0
    for _ in range(int(spec["warmup"])):
        fn(tr, batches, objective, it)
        it += 1
    if cuda:
        torch.cuda.synchronize()
    _atomic_json(ctl / f"ready-{wid}.json", {"pid": os.getpid()})
    k = 0
    idle_until = time.time() + float(spec["idle_timeout"])
    while True:
        if (ctl / "stop").exists():
            return 0
        rf = ctl / f"round-{k}.json"
        if not rf.exists():
            if time.time() > idle_until:
                return 3
            time.sleep(0.05)
            continue
        r = json.loads(rf.read_text())
        if wid in r["ids"]:
            while time.time() < r["start_at"]:
                time.sleep(0.002)
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            end = t0 + float(r["seconds"])
            n = 0
            out: dict[str, Any] = {}
            while time.perf_counter() < end:
                out = fn(tr, batches, objective, it)
                it += 1
                n += 1
            total = float(out["total"])
            if cuda:
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            _atomic_json(ctl / f"res-{k}-{wid}.json", {
                "its": n / dt, "n": n, "seconds": dt, "finite": math.isfinite(total),
                "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None})
        k += 1
        idle_until = time.time() + float(spec["idle_timeout"])


def _atomic_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def _wait_for(paths: list[Path], timeout: float, procs: list[subprocess.Popen[bytes]],
              any_dead: bool = False) -> list[Path]:
    """The files of ``paths`` that exist once all do, ``timeout`` passes, or the processes died (all of them;
    with ``any_dead``, any one)."""
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        done = [p for p in paths if p.exists()]
        if len(done) == len(paths):
            return done
        dead = [pr.poll() is not None for pr in procs]
        if dead and (any(dead) if any_dead else all(dead)):
            time.sleep(0.2)  # a result written just before the exit
            break
        time.sleep(0.1)
    return [p for p in paths if p.exists()]


def stage_jobs(suite: Suite, cap: float) -> dict[str, Any]:
    import torch

    levels = [1, 2] if suite.dry else [1, 2, 4, 8]
    seconds = 3.0 if suite.dry else 10.0
    # the workers start together; whatever is not ready when the rounds must begin is left out of them
    startup = startup_allowance(suite, cap, levels, seconds)
    bench = suite.stages.get("bench", {}).get("result") or {}
    peak = next((r.get("peak_gib") for r in bench.get("rows", []) if (r["method"], r["phase"], r["compile"])
                 == ("actionpp", "finetune", False) and r["status"] == "ok"), None)
    note = None
    if suite.device == "cuda" and peak:
        fits = int(torch.cuda.get_device_properties(0).total_memory / 2**30 // (peak + 1.5))
        if fits < max(levels):
            levels = [n for n in levels if n <= fits] or [1]
            note = f"memory: {peak:.1f} GiB per process, at most {fits} fit"
    if suite.device == "cuda":
        torch.cuda.empty_cache()  # this process's cached blocks from the earlier stages go back to the workers
    bt = _bench_module()
    size = 32 if suite.dry else 256
    spec = {
        "profile": "phantom_smoke" if suite.dry else "acdc_paper",
        "overrides": bt.bench_overrides(suite.data, size, torch.device(suite.device), False, "actionpp"),
        "phase": "finetune", "warmup": 1 if suite.dry else 5, "idle_timeout": startup + 60,
        "threads": 1 if suite.dry else max(1, (os.cpu_count() or 8) // max(levels)),
    }
    ctl = suite.scratch / "jobs"
    ctl.mkdir(parents=True, exist_ok=True)
    n_workers = max(levels)
    logs = [open(ctl / f"worker-{i}.log", "wb") for i in range(n_workers)]  # noqa: SIM115
    procs = [subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", str(ctl), str(i),
                               json.dumps(spec)], cwd=REPO, env=_env({"OMP_NUM_THREADS": str(spec["threads"])}),
                              stdout=logs[i], stderr=subprocess.STDOUT) for i in range(n_workers)]
    t_stage = time.perf_counter()
    rounds: list[dict[str, Any]] = []
    slow = None  # the workers were alive but not ready in time (not a failure: see DRY_STARTUP_S)
    try:
        ready_files = _wait_for([ctl / f"ready-{i}.json" for i in range(n_workers)], startup, procs)
        ready = sorted(int(p.stem.split("-")[1]) for p in ready_files)
        suite.say(f"jobs: {len(ready)} of {n_workers} workers ready after {time.perf_counter() - t_stage:.1f} s")
        if not ready and not any(p.poll() is not None for p in procs):
            slow = f"no worker ready after {time.perf_counter() - t_stage:.0f} s, all alive: a busy machine"
        for k, level in enumerate(levels):
            if level > len(ready):
                rounds.append({"processes": level, "status": f"skipped: only {len(ready)} workers started"})
                continue
            if not suite.dry and cap - (time.perf_counter() - t_stage) < seconds + 10:
                rounds.append({"processes": level, "status": "skipped (time budget)"})
                continue
            ids = ready[:level]
            _atomic_json(ctl / f"round-{k}.json", {"ids": ids, "start_at": time.time() + 0.5, "seconds": seconds})
            got = _wait_for([ctl / f"res-{k}-{i}.json" for i in ids], seconds + 60, [procs[i] for i in ids],
                            any_dead=True)
            per = [json.loads(p.read_text()) for p in got]
            if len(per) < level:
                rounds.append({"processes": level, "status": f"failed: {len(per)} of {level} workers reported"})
                continue
            agg = sum(p["its"] for p in per)
            peaks = [p["peak_gib"] for p in per if p.get("peak_gib") is not None]
            rounds.append({"processes": level, "status": "ok", "aggregate_its": agg, "per_process_its": agg / level,
                           "min_its": min(p["its"] for p in per), "finite": all(p["finite"] for p in per),
                           "peak_gib_per_process": max(peaks) if peaks else None})
            suite.say(f"jobs: {level} process(es): {agg:.2f} it/s together")
    finally:
        (ctl / "stop").write_text("")
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        for f in logs:
            f.close()
        for i in range(n_workers):
            text = (ctl / f"worker-{i}.log").read_text(errors="replace")
            if text.strip():
                suite.log_block(f"jobs worker {i}", text[-3000:])
    ok = [r for r in rounds if r["status"] == "ok"]
    res: dict[str, Any] = {"rounds": rounds, "seconds_per_round": seconds, "phase": "finetune", "method": "actionpp",
                           "workers_started": n_workers, "exit_codes": [p.returncode for p in procs]}
    if note:
        res["note"] = note
    if ok:
        best = max(r["aggregate_its"] for r in ok)
        rec = min(r["processes"] for r in ok if r["aggregate_its"] >= 0.95 * best)
        one = next((r["aggregate_its"] for r in ok if r["processes"] == 1), None)
        rec_its = next(r["aggregate_its"] for r in ok if r["processes"] == rec)
        res.update({"recommended_jobs": rec, "best_aggregate_its": best,
                    "scaling_vs_one": (best / one) if one else None,
                    "grid_hours": GRID_RUNS * RECIPE_ITERS / rec_its / 3600})
    if not ok and slow is not None:
        res["status"] = "skipped"
        res["reason"] = slow
    elif not ok or any(not r.get("finite", True) for r in ok):
        res["status"] = "failed"
        res["error"] = "no round completed" if not ok else "a worker's loss was not finite"
    return res


def startup_allowance(suite: Suite, cap: float, levels: list[int], seconds: float) -> float:
    """Seconds the ``jobs`` stage waits for its workers to start: what its cap leaves after the rounds; in a
    dry run at least :data:`DRY_STARTUP_S`, bounded by what the suite's watchdog (budget + 60 s) leaves."""
    startup = max(20.0, cap - len(levels) * (seconds + 3) - 5)
    if suite.dry:
        watchdog_left = suite.budget + 60 - suite.elapsed() - len(levels) * (seconds + 10) - 15
        startup = max(startup, min(DRY_STARTUP_S, watchdog_left))
    return startup


# =========================================================================== stage 6: torchrun


def stage_ddp(suite: Suite, cap: float) -> dict[str, Any]:
    import torch

    gpus = torch.cuda.device_count() if suite.device == "cuda" else 0
    if suite.device == "cuda" and gpus < 2:
        return {"status": "skipped", "reason": f"{gpus} GPU: NCCL refuses two ranks on one device, so "
                                               "torchrun + NCCL needs a machine with 2 GPUs"}
    nproc = 2
    run_dir = suite.scratch / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m",
           "actionpp.cli", "train", "phantom_smoke", "--run-dir", str(run_dir), "--no-progress"]
    for o in (f"data.root={suite.data}", "train.pretrain_iters=2", "train.finetune_iters=2",
              "runtime.checkpoint_every=2", "data.val_max_volumes=1", "runtime.log_every=1",
              f"runtime.device={'cuda' if gpus else 'cpu'}"):
        cmd += ["--set", o]
    rc, out = _subprocess(suite, cmd, timeout=cap, env=_env({"OMP_NUM_THREADS": "1"}))
    res: dict[str, Any] = {"rc": rc, "processes": nproc, "backend": "nccl" if gpus else "gloo"}
    m = re.search(r"\{\s*\"run_dir\".*\}", out, re.S)
    if m:
        with contextlib.suppress(json.JSONDecodeError):
            summary = json.loads(m.group(0))
            res["iterations"] = summary.get("iterations")
            res["its_per_s"] = summary.get("its_per_s")
    if rc != 0:
        res["status"] = "failed"
        res["error"] = f"torchrun exit code {rc}: {out.strip().splitlines()[-1][:300] if out.strip() else ''}"
    return res


# =========================================================================== the summary


def _fmt(v: Any, nd: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def format_summary(doc: dict[str, Any]) -> str:
    """``summary.md``: the GPU suite's section of ``docs/benchmarks.md``."""
    meta, st = doc["meta"], doc["stages"]
    lines = ["## GPU suite (`bench/gpu_suite.py`)", ""]
    if meta.get("dry_run"):
        lines += ["**Dry run on the CPU at the smallest sizes: it shows that every stage's code runs; no number "
                  "below is a GPU measurement.**", ""]
    lines += [
        f"- machine: {meta.get('machine', '?')}; torch {meta.get('torch', '?')}, Python {meta.get('python', '?')}",
        f"- date: {meta['date']}" + (f"; commit {meta['commit']}" if meta.get("commit") else ""),
        f"- command: `{meta['command'].strip()}`; wall time {meta.get('wall_s', 0):.0f} s of a "
        f"{meta['budget_s']:.0f} s budget",
        f"- data: {meta.get('data', '?')}",
        "",
        "| stage | status | seconds | note |",
        "| --- | --- | ---: | --- |",
    ]
    for name in STAGES:
        s = st.get(name)
        if s is None:
            continue
        note = s.get("error") or s.get("reason") or s.get("note") or ""
        if name == "pytest" and s.get("counts"):
            note = ", ".join(f"{v} {k}" for k, v in s["counts"].items()) + (f"; {note}" if note else "")
        lines.append(f"| {name} | {s['status']} | {_fmt(s.get('seconds'), 1)} | {str(note)[:200]} |")
    lines.append("")
    bench = (st.get("bench") or {}).get("result")
    goals = _goals(st)
    if goals:
        lines += ["### Goals (issue 13)", "", "| goal | measured | met |", "| --- | --- | --- |"]
        lines += [f"| {g} | {m} | {ok} |" for g, m, ok in goals]
        lines.append("")
    p = st.get("pytest") or {}
    if p.get("outcomes"):
        lines += ["### `pytest -m gpu`", ""]
        lines += [f"- {o[0]} {o[1]}" for o in p["outcomes"]]
        lines.append("")
    if bench:
        lines += [(st["bench"].get("section") or "").rstrip(), ""]
        prof = next((x for x in bench.get("profiles", []) if x.get("phase") == "finetune" and "error" not in x), None)
        if prof:
            lines += _profile_lines(prof)
    tr = (st.get("train") or {}).get("runs")
    if tr:
        lines += [f"### Short training (`{st['train'].get('profile')}` on {st['train'].get('data')}, fine-tuning "
                  "only, validation Dice on val.list)", "",
                  "| method | iterations | iterations / s | validation Dice (iteration) | final Dice per class | "
                  "loss first -> last | seconds |",
                  "| --- | ---: | ---: | --- | --- | --- | ---: |"]
        for m, r in tr.items():
            if r["status"] != "ok":
                lines.append(f"| {m} | {r['status']}: {r.get('reason', '')} | | | | | |")
                continue
            vals = ", ".join(f"{_fmt(v['dice'], 3)} ({v['iteration']})" for v in r["validations"])
            per = ", ".join(f"{k} {_fmt(v, 3)}" for k, v in (r.get("dice_per_class") or {}).items())
            lines.append(f"| {m} | {r['iterations']} | {_fmt(r['its_per_s'])} | {vals} | {per} | "
                         f"{_fmt(r['loss_first'], 3)} -> {_fmt(r['loss_last'], 3)} | {_fmt(r['seconds'], 1)} |")
        lines.append("")
    jb = st.get("jobs") or {}
    if jb.get("rounds"):
        lines += [f"### Runs side by side (ACTION++ {jb.get('phase')} steps, {jb.get('seconds_per_round')} s "
                  "per round)",
                  "", "| processes | aggregate iterations / s | per process | slowest process | peak GiB per process |",
                  "| ---: | ---: | ---: | ---: | ---: |"]
        for r in jb["rounds"]:
            if r["status"] != "ok":
                lines.append(f"| {r['processes']} | {r['status']} | | | |")
                continue
            lines.append(f"| {r['processes']} | {_fmt(r['aggregate_its'])} | {_fmt(r['per_process_its'])} | "
                         f"{_fmt(r['min_its'])} | {_fmt(r['peak_gib_per_process'])} |")
        if jb.get("recommended_jobs"):
            lines += ["", f"- `actionpp replicate ... --jobs {jb['recommended_jobs']}`: the fewest processes "
                          "within 5 % "
                          f"of the best aggregate ({_fmt(jb['best_aggregate_its'])} it/s, "
                          f"{_fmt(jb.get('scaling_vs_one'))}x one process); the {GRID_RUNS}-run grid of "
                          f"{RECIPE_ITERS // 1000} k iterations each would take about {_fmt(jb['grid_hours'], 1)} h "
                          "(fine-tuning steps as the cost of every iteration; validation not included)"]
        if jb.get("note"):
            lines.append(f"- {jb['note']}")
        lines.append("")
    dd = st.get("ddp") or {}
    if dd:
        lines += ["### torchrun", "", f"- {dd['status']}: " + (dd.get("reason") or dd.get("error") or
                  f"{dd.get('processes')} processes, backend {dd.get('backend')}, {dd.get('iterations')} iterations"),
                  ""]
    return "\n".join(lines).rstrip() + "\n"


def _profile_lines(prof: dict[str, Any]) -> list[str]:
    lines = [f"### Where the time of an ACTION++ fine-tuning step goes ({prof['steps']} profiled steps; "
             "`profile.txt` has the tables)", ""]
    lines.append(f"- wall {prof['wall_ms_per_step']:.1f} ms / step"
                 + (f"; GPU kernels {prof['gpu_kernel_ms_per_step']:.1f} ms / step (busy "
                    f"{100 * prof['gpu_busy_share']:.0f} %), {prof['kernels_per_step']:.0f} kernels / step; "
                    f"{prof['syncs_per_step']:.1f} host synchronisations / step"
                    if prof.get("gpu_kernel_ms_per_step") is not None else "; GPU counters: CUDA only"))
    for site, n in list((prof.get("sync_sites") or {}).items())[:6]:
        lines.append(f"  - {n:.1f} / step at `{site[:140]}`")
    stages = sorted(prof["stages"].items(), key=lambda kv: -kv[1]["cpu_ms_per_step"])[:8]
    if stages:
        lines.append("- host time per stage (ms / step): " + ", ".join(
            f"{k} {v['cpu_ms_per_step']:.1f}" for k, v in stages))
    lines.append(f"- Hungarian matching on the host: {prof['hungarian_host_ms_per_step']:.2f} ms / step")
    lines.append("")
    return lines


def _goals(st: dict[str, Any]) -> list[tuple[str, str, str]]:
    bench = (st.get("bench") or {}).get("result")
    if not bench or not bench.get("projections"):
        return []
    out = []
    best = min(bench["projections"], key=lambda p: p["minutes"])
    modes = "; ".join(f"{'compile' if p['compile'] else 'eager'} {p['minutes']:.1f} min "
                      f"({p['mean_its_per_s']:.1f} it/s)" for p in bench["projections"])
    out.append(("paper recipe (10 k + 20 k ACTION++) in <= 10 minutes", modes,
                "yes" if best["minutes"] <= 10 else "no"))
    out.append((">= 50 iterations / s on average", f"{best['mean_its_per_s']:.1f}",
                "yes" if best["mean_its_per_s"] >= 50 else "no"))
    if "speedup_actionpp_vs_ssl4mis" in best:
        out.append((">= 10x the SSL4MIS-style loop (same command, per iteration)",
                    f"{best['speedup_actionpp_vs_ssl4mis']:.1f}x (ACTION++), "
                    f"{best.get('speedup_mean_teacher_vs_ssl4mis', float('nan')):.1f}x (mean teacher vs mean teacher)",
                    "yes" if best["speedup_actionpp_vs_ssl4mis"] >= 10 else "no"))
    return out


# =========================================================================== recording into docs/benchmarks.md


def record(path: Path, doc_path: Path | None = None) -> str:
    """Write the summary at ``path`` (a folder or its summary.json) as the ``gpu_suite`` section."""
    sys.path.insert(0, str(REPO))
    from actionpp import benchdoc

    f = path / "summary.json" if path.is_dir() else path
    doc = json.loads(f.read_text())
    meta = doc["meta"]
    if meta.get("dry_run"):
        statuses = ", ".join(f"{k} {v['status']}" for k, v in doc["stages"].items())
        body = "\n".join([
            "## GPU suite (`bench/gpu_suite.py`)", "",
            "**Not yet run on a GPU: the GPU numbers are owed.** The suite is ready for the first GPU window "
            "(`bench/README.md`: the carried folder and the one command).", "",
            f"- last dry run (CPU, smallest sizes, code paths only): {meta['date']}, {meta.get('machine', '?')}, "
            f"torch {meta.get('torch', '?')}; `{meta['command'].strip()}`; {meta.get('wall_s', 0):.0f} s; "
            f"stages: {statuses}",
            "- what the CPU proves on every run (`tests/test_cpu_paths.py`, default suite): bf16 autocast through "
            "pre-training and fine-tuning within |a - b| <= 1e-2 |a| + 1e-3 of fp32 per loss term (measured: at most "
            "7e-4 relative on the totals, 3e-3 absolute on any term), the whole loop in bf16 resuming bit-exactly, "
            "`torch.compile` of the U-Net traced in one graph (`aot_eager`; inductor under `-m slow`), the paper "
            "shapes (256 x 256, batch 4 + 4, queue 12 288, d = 128 and 496), the ops without a deterministic CUDA "
            "kernel, and the dry run's core",
        ]) + "\n"
    else:
        body = format_summary(doc)
    target = doc_path or REPO / "docs" / "benchmarks.md"
    benchdoc.write_section(target, SECTION, body)
    return body


# =========================================================================== what travels to the GPU machine


CARRY_LIMIT = 64 * 2**20  # the device tool's limit on the working tree plus the carried folders


def carry_report() -> tuple[int, str]:
    """Sizes of what a device call sends (the tree git does not ignore, plus ``.gpu_carry/``) against the limit."""
    p = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                       capture_output=True, timeout=60)
    if p.returncode != 0:
        return 2, f"git ls-files failed: {p.stderr.decode(errors='replace')[:200]}"
    tree = sum((REPO / f).stat().st_size for f in p.stdout.decode().split("\0") if f and (REPO / f).is_file())
    carried = {str(f.relative_to(REPO)): f.stat().st_size for f in sorted(CARRY.rglob("*")) if f.is_file()}
    total = tree + sum(carried.values())
    lines = [f"working tree (tracked + untracked, not ignored): {tree / 2**20:8.2f} MiB"]
    lines += [f"{name}: {size / 2**20:8.2f} MiB" for name, size in carried.items()]
    lines.append(f"total sent with carry=[\".gpu_carry\"]: {total / 2**20:8.2f} MiB of {CARRY_LIMIT / 2**20:.0f} MiB"
                 + ("" if total <= CARRY_LIMIT else "  -- OVER THE LIMIT"))
    if not (CARRY / "acdc.pack").is_file():
        lines.append("missing .gpu_carry/acdc.pack (make gpu-carry): the training stage would be skipped")
    return (0 if total <= CARRY_LIMIT else 1), "\n".join(lines)


# =========================================================================== entry point


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="every stage at the smallest sizes on the CPU")
    ap.add_argument("--out", default=None, help="output folder (default $OUT, else runs/gpu_suite/)")
    ap.add_argument("--data", default=None,
                    help="data root or pack (default .gpu_carry/acdc.pack on a GPU run, the phantom in a dry run)")
    ap.add_argument("--budget", type=float, default=None, help="seconds for the whole suite (default 500; dry 150)")
    ap.add_argument("--stages", default=None, help=f"comma-separated subset of {','.join(STAGES)}")
    ap.add_argument("--scratch", default=None, help="scratch folder (default: a new temporary folder)")
    ap.add_argument("--keep-scratch", action="store_true")
    ap.add_argument("--no-write", action="store_true", help="GPU run: do not write docs/benchmarks.md here")
    ap.add_argument("--record", default=None, metavar="DIR",
                    help="only write DIR/summary.json (a fetched $OUT) into docs/benchmarks.md")
    ap.add_argument("--check-carry", action="store_true",
                    help="only print what a device call would send (tree + .gpu_carry/) against the 64 MiB limit")
    ap.add_argument("--worker", nargs=3, metavar=("CTL", "ID", "SPEC"), help=argparse.SUPPRESS)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    if args.worker:
        sys.path.insert(0, str(REPO))
        ctl, wid, spec = args.worker
        return worker_main(Path(ctl), int(wid), json.loads(spec))
    if args.record:
        print(record(Path(args.record)))
        return 0
    if args.check_carry:
        rc, text = carry_report()
        print(text)
        return rc
    args.argv = argv
    dry_default = REPO / "runs" / ("gpu_suite-dry" if args.dry_run else "gpu_suite")
    refused = check_out(Path(args.out or os.environ.get("OUT") or dry_default))
    if refused:
        print(f"error: {refused}", file=sys.stderr)
        return 2
    suite = Suite(args)
    sys.path.insert(0, str(REPO))
    # a hang is dumped (every thread's traceback into suite.log) and ended before the device tool's own limit
    faulthandler.dump_traceback_later(suite.budget + 60, exit=True, file=suite.log_file)
    suite.say(f"GPU suite{' (dry run)' if suite.dry else ''}: out {suite.out}, scratch {suite.scratch}, "
              f"budget {suite.budget:.0f} s")
    try:
        run_stage(suite, "env", stage_env)
        run_stage(suite, "pytest", stage_pytest)
        run_stage(suite, "bench", stage_bench)
        run_stage(suite, "train", stage_train)
        run_stage(suite, "jobs", stage_jobs)
        run_stage(suite, "ddp", stage_ddp)
    finally:
        faulthandler.cancel_dump_traceback_later()
        suite.write_summary()
        if not args.keep_scratch:
            shutil.rmtree(suite.scratch, ignore_errors=True)
    print((suite.out / "summary.md").read_text())
    if not suite.dry and not args.no_write and suite.device == "cuda":
        with contextlib.suppress(Exception):
            record(suite.out)
    failed = [k for k, v in suite.stages.items() if v["status"] == "failed"]
    suite.say(f"done in {suite.elapsed():.0f} s; failed stages: {failed or 'none'}")
    suite.log_file.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
