"""FLOPs and CPU times of the backbones, the representation head (dense vs sampled) and the metrics.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python bench/bench_models.py [--repeats N] [--no-write]``

- FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` on the ``meta``
  device (shapes only, nothing is computed). It counts convolutions and matrix
  products; bilinear up-sampling, BN, activations and pooling are not counted.
- U-Net: forward + backward of one 1 x 256 x 256 slice. V-Net: forward of one
  112 x 112 x 80 window (a sliding-window test volume is 45-63 of them).
- RepresentationHead on the U-Net's five decoder maps at 256 x 256: the dense
  head (``forward``) versus ``forward_at`` at 4 classes x 256 anchors = 1024
  pixels, forward + backward, ``dim = hidden`` = 128 and 496 (496 = official).
- CPU times: median of ``--repeats`` calls after one warm-up. The dense head is
  timed at dim 128 only and with a single call (the 496 one is ~320 GFLOP forward).
- Metrics: ``surface_distances`` with the MONAI and the scipy backend on a real
  LA label against a copy shifted by 3 voxels (skipped without the real data),
  and the one-off MONAI import time.

Prints a table and writes it between the ``bench_models`` markers of
``docs/benchmarks.md`` (other sections are left alone).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from actionpp import benchdoc  # noqa: E402
from actionpp.models import RepresentationHead, UNet2D, VNet3D, count_parameters  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
CHANNELS = [256, 128, 64, 32, 16]
SIZE = 256
ANCHORS = 4 * 256


def flops(fn: Callable[[], None]) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def median_time(fn: Callable[[], None], repeats: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def _maps(device: str, b: int = 1, grad: bool = False) -> list[torch.Tensor]:
    return [
        torch.randn(b, c, SIZE // 2 ** (4 - i), SIZE // 2 ** (4 - i), device=device, requires_grad=grad)
        for i, c in enumerate(CHANNELS)
    ]


def _anchors(device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ys = torch.randint(0, SIZE, (ANCHORS,), generator=g).to(device)
    xs = torch.randint(0, SIZE, (ANCHORS,), generator=g).to(device)
    return torch.zeros(ANCHORS, dtype=torch.long, device=device), ys, xs


def head_step(head: RepresentationHead, device: str, sampled: bool) -> Callable[[], None]:
    maps = _maps(device, grad=True)
    b, ys, xs = _anchors(device)

    def step() -> None:
        if sampled:
            out = head.forward_at(maps, (SIZE, SIZE), b, ys, xs)
        else:
            out = head(maps, (SIZE, SIZE))[b, :, ys, xs]
        out.square().sum().backward()

    return step


def run(repeats: int) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    torch.manual_seed(0)

    # ---- FLOPs on the meta device
    with torch.device("meta"):
        unet = UNet2D()
        vnet = VNet3D()
    x2 = torch.randn(1, 1, SIZE, SIZE, device="meta")
    f_unet = flops(lambda: unet(x2).sum().backward())
    rows.append(("UNet2D forward + backward, 1 x 256 x 256", f"{f_unet / 1e9:.2f} GFLOP",
                 f"{count_parameters(UNet2D()):,} parameters"))
    x3 = torch.randn(1, 1, 112, 112, 80, device="meta")
    with torch.no_grad():
        f_vnet = flops(lambda: vnet.eval()(x3))
    rows.append(("VNet3D forward, 1 x 112 x 112 x 80 window", f"{f_vnet / 1e9:.1f} GFLOP",
                 f"{count_parameters(VNet3D()):,} parameters; x 45-63 windows per LA volume"))
    for dim in (128, 496):
        with torch.device("meta"):
            head = RepresentationHead(CHANNELS, dim=dim)
        f_dense = flops(head_step(head, "meta", sampled=False))
        f_at = flops(head_step(head, "meta", sampled=True))
        rows.append((f"RepresentationHead dim {dim} dense, fwd + bwd", f"{f_dense / 1e9:.1f} GFLOP",
                     f"{f_dense / f_unet:.1f} x the U-Net"))
        rows.append((f"RepresentationHead dim {dim} forward_at {ANCHORS} px, fwd + bwd", f"{f_at / 1e9:.2f} GFLOP",
                     f"{f_dense / f_at:.0f} x fewer than dense"))

    # 3D: the same head on the V-Net's maps (496 channels) over one 112 x 112 x 80 patch, 2 classes x 256 anchors
    with torch.device("meta"):
        head3 = RepresentationHead(CHANNELS, dim=128, spatial_dims=3)
    patch = (112, 112, 80)
    maps3 = [torch.randn(1, c, *(p // 2 ** (4 - i) for p in patch), device="meta", requires_grad=True)
             for i, c in enumerate(CHANNELS)]
    idx3 = [torch.zeros(512, dtype=torch.long, device="meta")] * 4
    f3_dense = flops(lambda: head3(maps3, patch)[idx3[0], :, idx3[1], idx3[2], idx3[3]].sum().backward())
    f3_at = flops(lambda: head3.forward_at(maps3, patch, *idx3).sum().backward())
    rows.append(("RepresentationHead 3D dim 128 (496 ch in) dense, 112 x 112 x 80, fwd + bwd",
                 f"{f3_dense / 1e12:.2f} TFLOP", ""))
    rows.append(("RepresentationHead 3D dim 128 forward_at 512 voxels, fwd + bwd", f"{f3_at / 1e9:.2f} GFLOP",
                 f"{f3_dense / f3_at:.0f} x fewer than dense"))

    # ---- CPU times
    unet = UNet2D().train()
    for b in (1, 8):
        x = torch.randn(b, 1, SIZE, SIZE)
        t = median_time(lambda: unet(x).sum().backward(), repeats)
        rows.append((f"UNet2D forward + backward, batch {b} x 256 x 256, CPU", f"{t * 1e3:.0f} ms", ""))
    with torch.no_grad():
        vnet = VNet3D().eval()
        x = torch.randn(1, 1, 112, 112, 80)
        t = median_time(lambda: vnet(x), 1)
    rows.append(("VNet3D forward, one 112 x 112 x 80 window, CPU", f"{t:.2f} s",
                 f"x 45 windows = {45 * t:.0f} s per LA volume"))
    head = RepresentationHead(CHANNELS, dim=128)
    t_dense = median_time(head_step(head, "cpu", sampled=False), 1)
    t_at = median_time(head_step(head, "cpu", sampled=True), repeats)
    rows.append(("RepresentationHead dim 128 dense, fwd + bwd, CPU", f"{t_dense:.2f} s", "single call"))
    rows.append((f"RepresentationHead dim 128 forward_at {ANCHORS} px, fwd + bwd, CPU", f"{t_at * 1e3:.0f} ms",
                 f"{t_dense / t_at:.0f} x faster"))
    head = RepresentationHead(CHANNELS, dim=496)
    t_at = median_time(head_step(head, "cpu", sampled=True), repeats)
    rows.append((f"RepresentationHead dim 496 forward_at {ANCHORS} px, fwd + bwd, CPU", f"{t_at * 1e3:.0f} ms", ""))

    # ---- metrics on a real LA label pair
    from actionpp.paths import shared_data

    la = shared_data("la")
    t0 = time.perf_counter()
    import monai.metrics.utils  # noqa: F401

    rows.append(("import monai.metrics.utils (once per process)", f"{time.perf_counter() - t0:.1f} s", ""))
    if la is not None:
        import h5py

        from actionpp.metrics import time_backends

        with h5py.File(la / "2018LA_Seg_Training Set" / "06SR5RBREL16DQ6M8LWS" / "mri_norm2.h5", "r") as f:
            gt = f["label"][:] == 1
        pred = np.zeros_like(gt)
        pred[3:] = gt[:-3]
        tb = time_backends(pred, gt, repeats=max(repeats, 3))
        rows.append(
            (
                "surface distances, real LA label vs 3-voxel shift, MONAI (KD-tree)",
                f"{tb['monai'] * 1e3:.0f} ms",
                "183 x 140 x 88",
            )
        )
        rows.append(("surface distances, same pair, own scipy EDT", f"{tb['scipy'] * 1e3:.0f} ms", ""))
    return rows


def table(rows: list[tuple[str, str, str]]) -> str:
    lines = ["| what | value | note |", "| --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines) + "\n"


def write_section(text: str) -> None:
    benchdoc.write_section(DOC, "bench_models", text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-write", action="store_true", help="print only; do not touch docs/benchmarks.md")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    load = os.getloadavg()[0]
    rows = run(args.repeats)
    cpu = platform.processor() or platform.machine()
    text = (
        "## Models, heads and metrics (`bench/bench_models.py`)\n\n"
        f"{dt.date.today().isoformat()}, `OMP_NUM_THREADS=1 .venv/bin/python bench/bench_models.py "
        f"--repeats {args.repeats}`, {torch.get_num_threads()} torch thread(s), {os.cpu_count()} CPU(s) ({cpu}), "
        f"torch {torch.__version__}, a shared machine (1-minute load average {load:.1f} at the start: times are "
        "indicative). FLOPs from "
        "`FlopCounterMode` on the meta device (convolutions and matrix products only). Times: median after one "
        "warm-up.\n\n" + table(rows)
    )
    print(text)
    if not args.no_write:
        write_section(text)
        print(f"\nwrote section to {DOC}")


if __name__ == "__main__":
    main()
