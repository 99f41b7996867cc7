"""Time forward + backward of each ACTION++ loss at the paper's sizes, and the centre generator.

Usage (from the repository root):

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_losses.py --device cpu --threads 1
    .venv/bin/python bench/bench_losses.py --device cuda

Each case runs in its own subprocess so that its peak memory is its own: on CUDA,
``torch.cuda.max_memory_allocated`` during the timed calls; on the CPU, the growth
of the process's peak resident set size (``resource.getrusage(...).ru_maxrss``)
from just after the inputs were built to the end of the warm-up and timed calls
(so it counts the loss's own temporaries and autograd buffers, not the inputs;
an upper bound on the real peak because freed memory may not return to the OS). Times are the
median of ``--repeats`` runs after ``--warmup`` runs. Prints a Markdown table and
writes it into a marked section of ``docs/benchmarks.md`` (one section per
device and thread count; other sections are left as they are).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> description (sizes as in method.md: 4 classes x 256 anchors, queue 12 288, ...)
CASES: dict[str, str] = {
    "saacl_d128": "SAACL: 4 x 256 anchors, queue 12 288, 4 centres, d = 128",
    "saacl_d496": "SAACL: 4 x 256 anchors, queue 12 288, 4 centres, d = 496",
    "anco_d128": "AnCo: 4 classes x 256 queries x 512 negatives (4 096 sampled pixels), d = 128",
    "anco_d496": "AnCo: 4 classes x 256 queries x 512 negatives (4 096 sampled pixels), d = 496",
    "isd_global": "ISD global: batch 8, d = 512, bank 36",
    "isd_local": "ISD local: 8 x 49 patches (256^2 map, 64/32 windows), d = 512, bank 36",
    "supervised": "0.5 (CE + Dice): batch 8, 4 classes, 256 x 256",
    "centres_d128": "centres optimize K = 4, d = 128 (no backward)",
    "centres_d496": "centres optimize K = 4, d = 496 (no backward)",
}


def _build(name: str, device: str) -> Callable[[], None]:
    import torch

    from actionpp import losses as L
    from actionpp.centers import make_centers

    g = torch.Generator().manual_seed(0)
    dev = torch.device(device)

    def randn(*shape: int, grad: bool = False) -> torch.Tensor:
        return torch.randn(*shape, generator=g).to(dev).requires_grad_(grad)

    if name.startswith("saacl"):
        d = int(name.split("d")[-1])
        a, t, q = randn(1024, d, grad=True), randn(1024, d), randn(12288, d)
        y = torch.arange(4).repeat_interleave(256).to(dev)
        ql = torch.randint(0, 4, (12288,), generator=g).to(dev)
        c = make_centers(4, d).vectors.to(dev)

        def run() -> None:
            L.saacl_loss(a, y, t, q, ql, c, tau=0.1, lambda_a=0.2).backward()

        return run
    if name.startswith("anco"):
        d = int(name.split("d")[-1])
        e = randn(4096, d, grad=True)
        y = torch.arange(4).repeat_interleave(1024).to(dev)
        conf = torch.rand(4096, generator=g).to(dev)  # ~97 % hard: >= 256 queries per class
        gen = torch.Generator().manual_seed(1)

        def run() -> None:
            L.anatomical_contrast_loss(
                e, y, conf, tau=0.5, num_queries=256, num_negatives=512, generator=gen
            ).backward()

        return run
    if name.startswith("isd"):
        b = 8 if name == "isd_global" else 8 * 49
        s, t, bank = randn(b, 512, grad=True), randn(b, 512), randn(36, 512)

        def run() -> None:
            L.isd_loss(s, t, bank).backward()

        return run
    if name == "supervised":
        logits = randn(8, 4, 256, 256, grad=True)
        target = torch.randint(0, 4, (8, 256, 256), generator=g).to(dev)

        def run() -> None:
            L.supervised_loss(logits, target).backward()

        return run
    if name.startswith("centres"):
        d = int(name.split("d")[-1])

        def run() -> None:
            make_centers(4, d, method="optimize")

        return run
    raise SystemExit(f"unknown case {name!r}")


def _run_case(name: str, device: str, repeats: int, warmup: int, threads: int | None) -> dict:
    import torch

    if threads:
        torch.set_num_threads(threads)
    cuda = device.startswith("cuda")
    run = _build(name, device)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    # peak RSS is a high-water mark: read it before the first call (inputs already built)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    if cuda:
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    return {
        "case": name,
        "median_ms": 1000 * statistics.median(times),
        "min_ms": 1000 * min(times),
        "peak_mib": peak_mib,
    }


def _machine(device: str, threads: int | None) -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    desc = f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__}"
    desc += f", torch threads {threads or torch.get_num_threads()}"
    if device.startswith("cuda"):
        desc += f", GPU {torch.cuda.get_device_name(torch.device(device))}"
    return desc


def _write_section(doc: Path, key: str, body: str) -> None:
    from actionpp import benchdoc

    benchdoc.write_section(doc, f"bench_losses:{key}", body)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    p.add_argument("--doc", default=str(ROOT / "docs" / "benchmarks.md"), help="Markdown file to update ('' = none)")
    p.add_argument("--_case", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args._case:  # child process: one case, one JSON line
        print(json.dumps(_run_case(args._case, args.device, args.repeats, args.warmup, args.threads)))
        return 0

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("bench_losses: --device cuda requested but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    rows = []
    for name in args.cases:
        cmd = [
            sys.executable,
            __file__,
            "--_case",
            name,
            "--device",
            args.device,
            "--repeats",
            str(args.repeats),
            "--warmup",
            str(args.warmup),
        ] + (["--threads", str(args.threads)] if args.threads else [])
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            return out.returncode
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"  {name}: {r['median_ms']:.1f} ms", file=sys.stderr)
    mem = (
        "CUDA max_memory_allocated"
        if args.device.startswith("cuda")
        else "growth of peak RSS (ru_maxrss) over warm-up + timed calls, inputs excluded"
    )
    lines = [
        f"## Losses, forward + backward (`bench/bench_losses.py`), device `{args.device}`, "
        f"{args.threads or 'default'} thread(s)",
        "",
        f"- date: {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M')} UTC",
        f"- machine: {_machine(args.device, args.threads)}",
        f"- command: `OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset)')} python bench/bench_losses.py "
        + " ".join(a for a in (argv if argv is not None else sys.argv[1:]))
        + "`",
        f"- median of {args.repeats} runs after {args.warmup} warm-up; peak memory: {mem}",
        "",
        "| case | median ms | min ms | peak MiB |",
        "| --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(f"| {CASES[r['case']]} | {r['median_ms']:.1f} | {r['min_ms']:.1f} | {r['peak_mib']:.1f} |")
    table = "\n".join(lines)
    print(table)
    if args.doc:
        key = f"{args.device.replace(':', '')}-{args.threads or 'default'}t"
        _write_section(Path(args.doc), key, table)
        print(f"\n(updated {args.doc}, section {key})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
