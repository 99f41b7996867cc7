"""Training-loop benchmark: iterations / s per method and phase, peak GPU memory, augmentation throughput.

On CUDA: the ``acdc_paper`` recipe (256 x 256, batch 4 + 4, bf16 autocast) and a
projection of the paper's 10 k + 20 k ACTION++ schedule. On a CPU: the
``phantom_lab`` size (128 x 128, batch 4 + 4, fp32). Data: real ACDC when
``../shared/data/acdc`` exists (``--data shared``), else the phantom (the step cost
does not depend on the image content).

Writes its section of ``docs/benchmarks.md`` between ``<!-- bench_train:start -->`` and
``<!-- bench_train:end -->`` (other benchmarks keep theirs); ``--no-write`` only prints.

    python bench/bench_train.py                  # CUDA if available, else CPU with torch's default threads
    python bench/bench_train.py --threads 1,2    # CPU: one set of rows per thread count
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from actionpp import benchdoc  # noqa: E402
from actionpp.config import load_config  # noqa: E402
from actionpp.distributed import DistInfo, resolve_device  # noqa: E402
from actionpp.train import prepare  # noqa: E402
from actionpp.train.batches import BatchSource  # noqa: E402
from actionpp.train.objective import Objective  # noqa: E402
from actionpp.train.state import TrainerState  # noqa: E402
from actionpp.train.steps import finetune_step, pretrain_step  # noqa: E402

METHODS = ("supervised", "mean_teacher", "action", "actionpp")



def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_phase(tr: TrainerState, batches: BatchSource, objective: Objective, phase: str, warmup: int,
                iters: int) -> float:
    """Seconds per iteration of ``phase`` (after ``warmup`` untimed iterations)."""
    tr.optimizer = tr.new_optimizer(phase)
    fn = pretrain_step if phase == "pretrain" else finetune_step

    def step(i: int) -> dict[str, torch.Tensor]:
        return fn(tr, batches, objective, i)

    for i in range(warmup):
        step(i)
    _sync(tr.device)
    t0 = time.perf_counter()
    out: dict[str, torch.Tensor] = {}
    for i in range(warmup, warmup + iters):
        out = step(i)
    total = float(out["total"])  # one host read, as at a log interval
    _sync(tr.device)
    if not math.isfinite(total):
        raise RuntimeError(f"{tr.cfg.method.name} {phase}: non-finite loss {total} after {warmup + iters} iterations")
    return (time.perf_counter() - t0) / iters


def _time_augment(tr: TrainerState, batches: BatchSource, iters: int) -> float:
    """Seconds per batch of the data pipeline alone: sampling, weak + strong augmentation, CutMix."""
    def one() -> None:
        batches.labelled()
        x_u = batches.unlabelled()
        probs = torch.softmax(torch.randn(x_u.shape[0], tr.cfg.data.num_classes, *x_u.shape[2:], device=x_u.device), 1)
        mixed, _ = batches.mix(x_u, probs, probs.argmax(1))
        batches.photometric(mixed)

    for _ in range(3):
        one()
    _sync(tr.device)
    t0 = time.perf_counter()
    for _ in range(iters):
        one()
    _sync(tr.device)
    return (time.perf_counter() - t0) / iters


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data", default=None, help="phantom | shared | a folder (default: phantom)")
    ap.add_argument("--size", type=int, default=None, help="image size (default: 256 on CUDA, 128 on CPU)")
    ap.add_argument("--iters", type=int, default=None, help="timed iterations per method and phase")
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--threads", default=None,
                    help="CPU: comma-separated torch thread counts, one set of rows each (e.g. 1,2)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--compile", action="store_true", help="torch.compile the U-Net (CUDA)")
    ap.add_argument("--no-write", action="store_true", help="print only; do not touch docs/benchmarks.md")
    args = ap.parse_args(argv)

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    size = args.size or (256 if cuda else 128)
    iters = args.iters or (50 if cuda else 8)
    warmup = args.warmup if args.warmup is not None else (10 if cuda else 2)
    data = args.data or "phantom"
    profile = "acdc_paper" if cuda else "phantom_lab"
    base = [f"data.root={data}", f"data.size={size}", "train.batch_labelled=4", "train.batch_unlabelled=4",
            f"runtime.device={device}", f"runtime.compile={str(args.compile).lower()}", "runtime.progress=false"]
    if size < 256:
        base += [f"pretrain.patch={size // 4}", f"pretrain.stride={size // 8}"]
    thread_counts = [int(t) for t in args.threads.split(",")] if args.threads else [torch.get_num_threads()]
    rows = []
    phase_s: dict[tuple[int, str, str], float] = {}
    aug_s: dict[int, float] = {}
    for threads in thread_counts:
        torch.set_num_threads(threads)
        for method in args.methods.split(","):
            cfg = load_config(profile, base + [f"method.name={method}"])
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            tr, batches, objective, _ = prepare(cfg, device, DistInfo())
            if threads not in aug_s:
                aug_s[threads] = _time_augment(tr, batches, iters * 2)
            for phase in ("pretrain", "finetune"):
                if phase == "pretrain" and not cfg.method.pretrain:
                    continue
                s = _time_phase(tr, batches, objective, phase, warmup, iters)
                phase_s[(threads, method, phase)] = s
                peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None
                rows.append((threads, method, phase, s, 1.0 / s, peak))
                print(f"threads {threads} {method:13s} {phase:9s} {s * 1000:8.1f} ms/it {1.0 / s:7.2f} it/s"
                      + (f"  peak {peak:.2f} GiB" if peak is not None else ""), flush=True)
            del tr
    bl = 8
    machine = (torch.cuda.get_device_name(device) if cuda else
               f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs")
    cmd = "python bench/bench_train.py " + " ".join(argv if argv is not None else sys.argv[1:])
    env_threads = os.environ.get("OMP_NUM_THREADS")
    if env_threads:
        cmd = f"OMP_NUM_THREADS={env_threads} " + cmd
    lines = [
        f"### Training loop ({'CUDA' if cuda else 'CPU'}, {size} x {size}, batch 4 + 4, "
        f"{'bf16 autocast' if cuda else 'fp32'}{', torch.compile' if args.compile else ''})",
        "",
        f"- machine: {machine}; torch {torch.__version__}; date {_dt.date.today().isoformat()}"
        + (f"; load average at the end {os.getloadavg()[0]:.1f} (a shared machine inflates CPU times)"
           if not cuda else ""),
        f"- command: `{cmd.strip()}`",
        f"- profile `{profile}` on data `{data}`; {warmup} warm-up + {iters} timed iterations per row "
        "(one host read at the end, as at a log interval)",
        "",
        "| torch threads | method | phase | ms / iteration | iterations / s | peak GPU memory (GiB) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for threads, method, phase, s, its, peak in rows:
        lines.append(f"| {threads} | {method} | {phase} | {s * 1000:.1f} | {its:.2f} | "
                     f"{'-' if peak is None else f'{peak:.2f}'} |")
    lines.append("")
    for threads, a in aug_s.items():
        lines.append(
            f"- augmentation alone (sampling, weak + strong views, CutMix, jitter, blur), {threads} thread(s): "
            f"{a * 1000:.2f} ms per 4 + 4 batch, {bl / a:.0f} images / s"
        )
    slower = [k for k in phase_s if k[0] > min(thread_counts) and phase_s[k] > phase_s[(min(thread_counts),) + k[1:]]]
    if slower:
        lines.append(
            f"- more threads were slower in {len(slower)} of the rows: other processes shared the cores "
            "(see the load average), so the OpenMP threads of one step waited on each other; "
            "compare thread counts only on an idle machine"
        )
    for threads in thread_counts:
        if (threads, "actionpp", "pretrain") in phase_s and (threads, "actionpp", "finetune") in phase_s:
            total = (
                10_000 * phase_s[(threads, "actionpp", "pretrain")]
                + 20_000 * phase_s[(threads, "actionpp", "finetune")]
            )
            lines.append(
                f"- projected paper ACDC schedule of ACTION++ (10 k pre-training + 20 k fine-tuning) at this size, "
                f"{threads} thread(s): {total / 60:.0f} minutes (validation and checkpoints not included)"
            )
    section = "\n".join(lines) + "\n"
    print(section)
    if not args.no_write:
        _write_section(REPO / "docs" / "benchmarks.md", section)
    return 0


def _write_section(path: Path, section: str) -> None:
    """Replace (or append) the text between this benchmark's markers; other sections are kept."""
    benchdoc.write_section(path, "bench_train", section)


if __name__ == "__main__":
    sys.exit(main())
