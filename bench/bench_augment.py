"""Throughput of the batched augmentation pipelines versus the per-sample SSL4MIS / ReCo way.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python bench/bench_augment.py [--repeats N] [--no-write]``

Pipelines, 256 x 256 single-channel slices:
- labelled: ``weak_augment(x, y)`` (SSL4MIS RandomGenerator: rot90 + flip w.p. 1/2,
  else rotation w.p. 1/2).
- unlabelled: ``weak_augment(x)`` (teacher view), ``strong_augment`` (jitter + blur),
  ``cutmix`` and ``mix_targets`` of the teacher's (B, 4, H, W) probabilities.

Baseline (the per-sample way, numpy / scipy on the CPU, then collated to a tensor):
- labelled: SSL4MIS ``random_rot_flip`` / ``ndimage.rotate(order=0)`` on image and
  label, then ``ndimage.zoom(order=0)`` to 256 (here from 256, factor 1: scipy does
  the same per-pixel work as from the native ACDC size).
- unlabelled: the same geometric step on the image, brightness/contrast in numpy,
  ``ndimage.gaussian_filter`` per sample (ReCo uses PIL's blur), a ReCo-style
  CutMix box per sample, mixing image and probabilities.

Prints a table and writes it between the ``bench_augment`` markers of
``docs/benchmarks.md`` (other sections are left alone).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy import ndimage  # noqa: E402

from actionpp import augment as A  # noqa: E402
from actionpp import benchdoc  # noqa: E402

SIZE = 256
NUM_CLASSES = 4
START, END = benchdoc.markers("bench_augment")
DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


# ----------------------------------------------------------------------------- per-sample baseline


def _ssl4mis_geometric(
    image: np.ndarray, label: np.ndarray | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray | None]:
    if rng.random() > 0.5:
        k, axis = int(rng.integers(0, 4)), int(rng.integers(0, 2))
        image = np.flip(np.rot90(image, k), axis).copy()
        label = None if label is None else np.flip(np.rot90(label, k), axis).copy()
    elif rng.random() > 0.5:
        angle = int(rng.integers(-20, 20))
        image = ndimage.rotate(image, angle, order=0, reshape=False)
        label = None if label is None else ndimage.rotate(label, angle, order=0, reshape=False)
    h, w = image.shape
    image = ndimage.zoom(image, (SIZE / h, SIZE / w), order=0)
    label = None if label is None else ndimage.zoom(label, (SIZE / h, SIZE / w), order=0)
    return image, label


def baseline_labelled(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    out = [_ssl4mis_geometric(x[b], y[b], rng) for b in range(len(x))]
    xs = torch.stack([torch.from_numpy(i.astype(np.float32))[None] for i, _ in out])
    ys = torch.stack([torch.from_numpy(np.asarray(lab).astype(np.int64)) for _, lab in out])
    return xs, ys


def baseline_unlabelled(
    x: np.ndarray, probs: np.ndarray, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    b = len(x)
    weak = [_ssl4mis_geometric(x[i], None, rng)[0] for i in range(b)]
    strong = []
    for img in weak:
        if rng.random() < 0.8:  # brightness / contrast
            img = img * rng.uniform(0.75, 1.25)
            c = rng.uniform(0.75, 1.25)
            img = np.clip(img * c + img.mean() * (1 - c), 0.0, 1.0)
        if rng.random() < 0.5:
            img = ndimage.gaussian_filter(img, rng.uniform(0.15, 1.15), mode="nearest", truncate=3.0)
        strong.append(img)
    mixed_x, mixed_p = [], []
    for i in range(b):  # ReCo-style half-area box, partner i + 1
        w = int(rng.integers(SIZE // 2 + 1, SIZE))
        h = int(round(SIZE * SIZE / 2 / w))
        x0, y0 = int(rng.integers(0, SIZE - w + 1)), int(rng.integers(0, SIZE - h + 1))
        m = np.zeros((SIZE, SIZE), dtype=bool)
        m[y0 : y0 + h, x0 : x0 + w] = True
        j = (i + 1) % b
        mixed_x.append(np.where(m, strong[j], strong[i]))
        mixed_p.append(np.where(m[None], probs[j], probs[i]))
    return (
        torch.stack([torch.from_numpy(v.astype(np.float32))[None] for v in mixed_x]),
        torch.from_numpy(np.stack(mixed_p).astype(np.float32)),
    )


# ----------------------------------------------------------------------------- batched pipelines


def ours_labelled(x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    return A.weak_augment(x, y, g)


def ours_unlabelled(x: torch.Tensor, probs: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    weak, _ = A.weak_augment(x, None, g)
    strong = A.strong_augment(weak, g)
    mixed, mask, perm = A.cutmix(strong, g)
    return mixed, A.mix_targets(probs, mask, perm)


# ----------------------------------------------------------------------------- timing


def _time_pair(
    ours: Callable[[], object], base: Callable[[], object], repeats: int, sync: Callable[[], None]
) -> tuple[float, float]:
    """Median seconds of one call of each, after two warm-ups, calls interleaved.

    Interleaving makes both see the same machine load (this box is shared).
    """
    for _ in range(2):
        ours()
        base()
    sync()
    t_ours, t_base = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ours()
        sync()
        t1 = time.perf_counter()
        base()
        t2 = time.perf_counter()
        t_ours.append(t1 - t0)
        t_base.append(t2 - t1)
    return statistics.median(t_ours), statistics.median(t_base)


def _data(b: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random((b, SIZE, SIZE), dtype=np.float32)
    y = rng.integers(0, NUM_CLASSES, (b, SIZE, SIZE)).astype(np.uint8)
    p = rng.random((b, NUM_CLASSES, SIZE, SIZE), dtype=np.float32)
    return x, y, p / p.sum(1, keepdims=True)


def run(batches: list[int], repeats: int) -> list[dict[str, object]]:
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    rows: list[dict[str, object]] = []
    for b in batches:
        x, y, p = _data(b, seed=b)
        rng = np.random.default_rng(0)
        for dev in devices:
            sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
            g = torch.Generator(device=dev).manual_seed(0)
            xt = torch.from_numpy(x)[:, None].to(dev)
            yt = torch.from_numpy(y.astype(np.int64)).to(dev)
            pt = torch.from_numpy(p).to(dev)
            t_l, base_l = _time_pair(
                lambda: ours_labelled(xt, yt, g), lambda: baseline_labelled(x, y, rng), repeats, sync
            )
            t_u, base_u = _time_pair(
                lambda: ours_unlabelled(xt, pt, g), lambda: baseline_unlabelled(x, p, rng), repeats, sync
            )
            for name, t, tb in (("labelled", t_l, base_l), ("unlabelled", t_u, base_u)):
                rows.append({"device": dev.type, "batch": b, "pipeline": name, "ours_ms": 1e3 * t, "base_ms": 1e3 * tb})
    return rows


def table(rows: list[dict[str, object]]) -> str:
    head = (
        "| device | batch | pipeline | batched ms | batched img/s | per-sample CPU ms | per-sample img/s | speed-up |\n"
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |"
    )
    lines = [head]
    for r in rows:
        b, t, tb = int(r["batch"]), float(r["ours_ms"]), float(r["base_ms"])  # type: ignore[arg-type]
        lines.append(
            f"| {r['device']} | {b} | {r['pipeline']} | {t:.1f} | {1e3 * b / t:.0f} | {tb:.1f} | "
            f"{1e3 * b / tb:.0f} | {tb / t:.1f}x |"
        )
    return "\n".join(lines)


def summary(rows: list[dict[str, object]]) -> str:
    """One measured sentence per device, plus the context that does not depend on this run."""
    parts = []
    for dev in dict.fromkeys(str(r["device"]) for r in rows):
        sp = [float(r["base_ms"]) / float(r["ours_ms"]) for r in rows if r["device"] == dev]  # type: ignore[arg-type]
        parts.append(f"On {dev} the batched pipelines ran at {min(sp):.1f}x to {max(sp):.1f}x the per-sample speed.")
    if not torch.cuda.is_available():
        parts.append(
            "No CUDA device was present for this run, so the case the batched design is for (no host work, "
            "no per-iteration host-to-device copy of augmented batches) is not measured here. On the CPU both "
            "ways are memory-bound passes over the batch; for scale, one SSL4MIS mean-teacher CPU step of "
            "4 + 4 slices takes 2.1 s (method.md, section 9; an ACTION++ step costs more), so augmentation "
            "is 1-2 % of a step either way."
        )
    return " ".join(parts)


def write_section(text: str, path: Path = DOC) -> None:
    """Replace (or append) this benchmark's section of ``path``, leaving the rest untouched."""
    benchdoc.write_section(path, "bench_augment", text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[4, 24])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--no-write", action="store_true", help="print only; do not touch docs/benchmarks.md")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    rows = run(args.batches, args.repeats)
    cpu = platform.processor() or platform.machine()
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    text = (
        "## Augmentation throughput (`bench/bench_augment.py`)\n\n"
        f"256 x 256 slices, {torch.get_num_threads()} torch thread(s), {os.cpu_count()} CPU(s) ({cpu}){gpu}, "
        f"torch {torch.__version__}, median of {args.repeats} calls after 2 warm-ups, batched and per-sample calls "
        f"interleaved. "
        "Labelled = `weak_augment` (image + label); unlabelled = `weak_augment` + `strong_augment` + "
        "`cutmix` + `mix_targets` of (B, 4, H, W) teacher probabilities. Per-sample = the SSL4MIS / ReCo "
        "way in numpy / scipy (rotate and zoom with order 0, gaussian_filter) collated to tensors, always on "
        "the CPU. The batch count is per stream (4 means 4 labelled or 4 unlabelled images).\n\n"
        + table(rows)
        + "\n\n"
        + summary(rows)
    )
    print(text)
    if not args.no_write:
        write_section(text)
        print(f"\nwrote section to {DOC}")


if __name__ == "__main__":
    main()
