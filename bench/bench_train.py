"""Training-loop benchmark: iterations / s per method and phase, peak GPU memory, augmentation throughput.

On CUDA: the ``acdc_paper`` recipe (256 x 256, batch 4 + 4, bf16 autocast) and a
projection of the paper's 10 k + 20 k ACTION++ schedule. On a CPU: 128 x 128 (ACDC-lite's size; the
``phantom_lab`` profile's own is 96 since 2c96d5e), batch 4 + 4, fp32. Data: the phantom by default
(``--data shared``, a folder or a pack file for real ACDC; the step cost barely depends
on the image content).

Options the GPU suite (``bench/gpu_suite.py``) uses:

- ``--compile both``: every row eager and with ``torch.compile`` of the U-Net
  (``--compile-backend aot_eager`` traces with dynamo + AOT autograd but skips inductor's
  code generation: the CPU dry run's way to exercise the compile path in seconds);
- ``--ssl4mis``: the 1x reference in the same command, an SSL4MIS-style mean-teacher loop
  (per-sample numpy / scipy augmentation in a ``DataLoader``, fp32, a host read of every
  loss term every iteration, a Python loop over the parameters for the EMA), at the same
  batch and image size;
- ``--profile FILE``: where the time of an ACTION++ step goes (per-stage host and GPU time
  from ``torch.profiler``, kernels per step, host synchronisations per step and where they
  happen, the Hungarian matching's host time), written as text;
- ``--json FILE``: every number as JSON; ``--budget S``: rows that would start after S
  seconds are skipped (and say so).

Writes its section of ``docs/benchmarks.md`` (``bench_train`` on a CPU, ``bench_train:cuda``
on CUDA; other benchmarks keep theirs); ``--no-write`` only prints.

    python bench/bench_train.py                  # CUDA if available, else CPU with torch's default threads
    python bench/bench_train.py --threads 1,2    # CPU: one set of rows per thread count
    python bench/bench_train.py --compile both --ssl4mis --profile runs/profile.txt   # on a GPU
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as _dt
import functools
import json
import math
import os
import platform
import sys
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parents[1]  # this checkout: its docs/benchmarks.md is written
# the library under test: this checkout, or another one when --baseline runs this script against it
REPO = Path(os.environ.get("ACTIONPP_BENCH_REPO") or HERE).resolve()
sys.path.insert(0, str(REPO))

from actionpp import benchdoc  # noqa: E402
from actionpp.config import Config, load_config  # noqa: E402
from actionpp.distributed import DistInfo, resolve_device  # noqa: E402
from actionpp.train import prepare  # noqa: E402

try:  # the step API of actionpp.train (what prepare returns, one step of each phase, the stages a probe sees)
    from actionpp.train import (  # noqa: E402
        FINETUNE_STAGES,
        PRETRAIN_STAGES,
        BatchSource,
        Objective,
        TrainerState,
        autocast,
        finetune_step,
        pretrain_step,
    )
except ImportError:  # a --baseline checkout from before that API (it is never profiled: --profile is not passed)
    from actionpp.train.batches import BatchSource  # type: ignore[no-redef]  # noqa: E402
    from actionpp.train.objective import Objective  # type: ignore[no-redef]  # noqa: E402
    from actionpp.train.state import TrainerState  # type: ignore[no-redef]  # noqa: E402
    from actionpp.train.steps import autocast, finetune_step, pretrain_step  # type: ignore[no-redef]  # noqa: E402

    FINETUNE_STAGES = PRETRAIN_STAGES = ()

METHODS = ("supervised", "mean_teacher", "action", "actionpp")
PAPER_PRETRAIN, PAPER_FINETUNE = 10_000, 20_000  # the paper's ACDC schedule
SSL4MIS_ITERS = 30_000  # SSL4MIS's ACDC schedule (max_iterations)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# =========================================================================== configs and compile


def bench_overrides(data: str, size: int, device: torch.device, compile_on: bool, method: str,
                    extra: list[str] | None = None) -> list[str]:
    """The overrides of one benchmark row (batch 4 + 4, no progress bar)."""
    base = [f"data.root={data}", f"data.size={size}", "train.batch_labelled=4", "train.batch_unlabelled=4",
            f"runtime.device={device}", f"runtime.compile={str(compile_on).lower()}", "runtime.progress=false",
            f"method.name={method}"]
    if size < 256:  # local ISD windows scaled with the image (64 / 32 of 256)
        base += [f"pretrain.patch={max(size // 4, 4)}", f"pretrain.stride={max(size // 8, 2)}"]
    return base + list(extra or [])


@contextlib.contextmanager
def compile_backend(backend: str | None) -> Iterator[None]:
    """Within the block, ``torch.compile`` uses ``backend`` (None: torch's default, inductor)."""
    if backend is None or backend == "inductor":
        yield
        return
    original = torch.compile
    torch.compile = functools.partial(original, backend=backend)  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.compile = original  # type: ignore[assignment]


def _reset_compiled() -> None:
    with contextlib.suppress(Exception):
        import torch._dynamo

        torch._dynamo.reset()


# =========================================================================== timing our loop


def time_phase(tr: TrainerState, batches: BatchSource, objective: Objective, phase: str, warmup: int,
               iters: int) -> dict[str, float]:
    """Seconds per iteration of ``phase`` after ``warmup`` untimed ones, and the first step's seconds."""
    tr.optimizer = tr.new_optimizer(phase)
    fn = pretrain_step if phase == "pretrain" else finetune_step
    t0 = time.perf_counter()
    fn(tr, batches, objective, 0)
    _sync(tr.device)
    first = time.perf_counter() - t0
    for i in range(1, warmup):
        fn(tr, batches, objective, i)
    _sync(tr.device)
    t0 = time.perf_counter()
    out: dict[str, torch.Tensor] = {}
    for i in range(warmup, warmup + iters):
        out = fn(tr, batches, objective, i)
    total = float(out["total"])  # one host read, as at a log interval
    _sync(tr.device)
    s = (time.perf_counter() - t0) / iters
    if not math.isfinite(total):
        raise RuntimeError(f"{tr.cfg.method.name} {phase}: non-finite loss {total} after {warmup + iters} iterations")
    return {"s": s, "first_s": first, "loss": total}


def floor_counts(cfg: Config, phase: str) -> tuple[int, int]:
    """Images through the student (forward + backward) and through the teacher (forward) in one step of ``phase``."""
    b_l, b_u, m = cfg.train.batch_labelled, cfg.train.batch_unlabelled, cfg.method
    if phase == "pretrain":
        return b_l + b_u, b_l + b_u
    unlab = b_u if m.finetune_unlabelled else 0
    return b_l + unlab, unlab + (b_l if m.saacl else 0)


def floor_step(tr: TrainerState, batches: BatchSource, phase: str) -> Callable[[], None]:
    """One iteration of the U-Net floor of ``phase``: what no implementation of the method can avoid.

    The student's backbone forward + backward (a trivial loss on its logits) and an SGD step on the
    images the step puts through it, and the teacher's backbone forward on the images it sees
    (:func:`floor_counts`), in the run's memory format and autocast; no augmentation, sampling, head,
    loss, queue or EMA.
    """
    n_s, n_t = floor_counts(tr.cfg, phase)
    x_l, _ = batches.labelled()
    x = torch.cat([x_l, batches.unlabelled()])
    while x.shape[0] < max(n_s, n_t):
        x = torch.cat([x, x])
    layout = getattr(tr, "layout", lambda t: t)  # checkouts before runtime.channels_last: the contiguous format
    x_s, x_t = layout(x[:n_s]), layout(x[:n_t])
    opt = tr.new_optimizer(phase)
    amp = tr.cfg.runtime.amp

    def one() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast(tr.device, amp):
            logits, _ = tr.student.net.forward_features(x_s)
        logits.float().mean().backward()
        opt.step()
        if n_t and tr.teacher is not None:
            with torch.no_grad(), autocast(tr.device, amp):
                tr.teacher.model.net.forward_features(x_t)

    return one


def time_paired(preps: dict[tuple[str, str], tuple[TrainerState, BatchSource, Objective]], rounds: int,
                warmup: int) -> list[dict[str, Any]]:
    """Every (method, phase) step and its U-Net floor in turn, ``rounds`` times: one row each with the medians.

    Round-robin so that every row sees the same machine (a shared or throttled CPU drifts by 10 % over
    a minute); each timing is one iteration, its median over the rounds is reported.
    """
    runs = []
    for (method, phase), (tr, batches, objective) in preps.items():
        fn = pretrain_step if phase == "pretrain" else finetune_step
        opt = tr.new_optimizer(phase)
        runs.append((method, phase, tr, batches, objective, fn, opt, floor_step(tr, batches, phase)))
    times: dict[tuple[str, str], tuple[list[float], list[float]]] = {(m, p): ([], []) for m, p, *_ in runs}
    for r in range(warmup + rounds):
        for method, phase, tr, batches, objective, fn, opt, floor in runs:
            tr.optimizer = opt
            _sync(tr.device)
            t0 = time.perf_counter()
            fn(tr, batches, objective, r)
            _sync(tr.device)
            t1 = time.perf_counter()
            floor()
            _sync(tr.device)
            if r >= warmup:
                times[(method, phase)][0].append(t1 - t0)
                times[(method, phase)][1].append(time.perf_counter() - t1)
    out = []
    for method, phase, tr, *_ in runs:
        steps, floors = times[(method, phase)]
        out.append({"method": method, "phase": phase, "rounds": rounds, "step_s": float(np.median(steps)),
                    "floor_s": float(np.median(floors)), "floor_images": list(floor_counts(tr.cfg, phase)),
                    "step_iqr_s": float(np.subtract(*np.percentile(steps, [75, 25]))),
                    "floor_iqr_s": float(np.subtract(*np.percentile(floors, [75, 25])))})
    return out


def time_augment(tr: TrainerState, batches: BatchSource, iters: int) -> float:
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


# =========================================================================== the SSL4MIS-style 1x


def _ssl4mis_random_generator(image: np.ndarray, label: np.ndarray, size: int,
                              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """SSL4MIS ``RandomGenerator``: rot90 + flip (p 1/2), else rotate by -20..20 deg (p 1/2), zoom to size."""
    from scipy import ndimage

    if rng.random() > 0.5:
        k, axis = int(rng.integers(0, 4)), int(rng.integers(0, 2))
        image, label = np.flip(np.rot90(image, k), axis).copy(), np.flip(np.rot90(label, k), axis).copy()
    elif rng.random() > 0.5:
        angle = int(rng.integers(-20, 20))
        image = ndimage.rotate(image, angle, order=0, reshape=False)
        label = ndimage.rotate(label, angle, order=0, reshape=False)
    h, w = image.shape
    image = ndimage.zoom(image, (size / h, size / w), order=0)
    label = ndimage.zoom(label, (size / h, size / w), order=0)
    return image, label


class _SliceSet(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """SSL4MIS ``BaseDataSets`` over in-memory slices (labelled first), augmented per sample in the worker."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, size: int, seed: int) -> None:
        self.images, self.labels, self.size, self.seed = images, labels, size, seed
        self.rng: np.random.Generator | None = None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.rng is None:
            info = torch.utils.data.get_worker_info()
            self.rng = np.random.default_rng(self.seed + (info.id if info is not None else 0))
        image, label = _ssl4mis_random_generator(self.images[i], self.labels[i], self.size, self.rng)
        return torch.from_numpy(image.astype(np.float32))[None], torch.from_numpy(label.astype(np.uint8))


def _two_stream_batches(n_l: int, n_total: int, b_l: int, b_u: int, count: int, seed: int) -> list[list[int]]:
    """SSL4MIS ``TwoStreamBatchSampler``: each batch ``b_l`` labelled then ``b_u`` unlabelled indices."""
    rng = np.random.default_rng(seed)
    return [list(rng.choice(n_l, b_l, replace=n_l < b_l)) + list(n_l + rng.choice(n_total - n_l, b_u,
                                                                                      replace=n_total - n_l < b_u))
            for _ in range(count)]


def _ssl4mis_dice(soft: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    """SSL4MIS ``DiceLoss``: a Python loop over the classes of a one-hot target."""
    loss = soft.new_zeros(())
    for c in range(k):
        t = (target == c).float()
        s = soft[:, c]
        intersect, y_sum, z_sum = (s * t).sum(), (t * t).sum(), (s * s).sum()
        loss = loss + 1 - (2 * intersect + 1e-5) / (z_sum + y_sum + 1e-5)
    return loss / k


def time_ssl4mis(cfg: Config, batches: BatchSource, device: torch.device, warmup: int, iters: int,
                 workers: int) -> dict[str, float]:
    """Seconds per iteration of an SSL4MIS-style mean-teacher loop on the same data, batch and size.

    SSL4MIS ``train_mean_teacher_2D.py`` as it runs: a ``DataLoader`` (``workers`` processes) over a
    dataset that augments each slice with numpy / scipy, the batch copied to the device, fp32,
    CE + Dice (class loop) + MSE consistency with the clipped input noise, SGD, the EMA teacher as a
    Python loop over the parameters, the poly learning rate, and a host read (``.item()``) of every
    logged loss every iteration. The slices are held in memory (SSL4MIS reads an HDF5 file per
    sample), which favours the reference.
    """
    from actionpp.models import UNet2D

    data = getattr(batches.data, "train", batches.data)  # the 2D training tensors (a baseline: the data itself)
    k, size = cfg.data.num_classes, cfg.data.size
    x_l = data.x_l.detach().cpu().numpy()[:, 0]
    y_l = data.y_l.detach().cpu().numpy().astype(np.uint8)
    x_u = data.x_u.detach().cpu().numpy()[:, 0]
    images = np.concatenate([x_l, x_u])
    labels = np.concatenate([y_l, np.zeros((len(x_u), *x_u.shape[1:]), dtype=np.uint8)])
    b_l, b_u = cfg.train.batch_labelled, cfg.train.batch_unlabelled
    dataset = _SliceSet(images, labels, size, cfg.runtime.seed)
    sampler = _two_stream_batches(len(x_l), len(images), b_l, b_u, warmup + iters, cfg.runtime.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                                         pin_memory=device.type == "cuda")
    torch.manual_seed(cfg.runtime.seed)
    model = UNet2D(1, k).to(device)
    ema = copy.deepcopy(model)
    for p in ema.parameters():
        p.detach_()
    model.train()
    ema.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    logged: list[float] = []
    t0 = time.perf_counter()
    for it, (volume, label) in enumerate(loader):
        if it == warmup:
            _sync(device)
            t0 = time.perf_counter()
        volume, label = volume.to(device), label.to(device)  # SSL4MIS: volume_batch.cuda()
        unlab = volume[b_l:]
        noise = torch.clamp(torch.randn_like(unlab) * 0.1, -0.2, 0.2)
        out = model(volume)
        soft = torch.softmax(out, dim=1)
        with torch.no_grad():
            ema_soft = torch.softmax(ema(unlab + noise), dim=1)
        loss_ce = F.cross_entropy(out[:b_l], label[:b_l].long())
        loss_dice = _ssl4mis_dice(soft[:b_l], label[:b_l], k)
        w = 0.1 * math.exp(-5.0 * (1.0 - min(it // 150, 200) / 200) ** 2)  # sigmoid ramp-up over "epochs"
        consistency = torch.mean((soft[b_l:] - ema_soft) ** 2)
        loss = 0.5 * (loss_ce + loss_dice) + w * consistency
        opt.zero_grad()
        loss.backward()
        opt.step()
        alpha = min(1 - 1 / (it + 1), 0.99)
        with torch.no_grad():
            for ep, p in zip(ema.parameters(), model.parameters()):
                ep.mul_(alpha).add_(p, alpha=1 - alpha)
        lr = 0.01 * (1.0 - it / SSL4MIS_ITERS) ** 0.9
        for g in opt.param_groups:
            g["lr"] = lr
        logged = [loss.item(), loss_ce.item(), loss_dice.item(), consistency.item()]  # writer.add_scalar each iteration
    _sync(device)
    s = (time.perf_counter() - t0) / iters
    if not all(math.isfinite(v) for v in logged):
        raise RuntimeError(f"SSL4MIS-style loop: non-finite loss {logged}")
    return {"s": s, "loss": logged[0], "workers": float(workers)}


# =========================================================================== where the time goes


HUNGARIAN = "Hungarian matching (host)"


@contextlib.contextmanager
def _instrumented(tr: TrainerState, host_s: dict[str, float]) -> Iterator[None]:
    """Each stage of a step in a ``torch.profiler.record_function`` range, its host time into ``host_s``.

    The stages are the step's own (``TrainerState.probe``: :data:`actionpp.train.FINETUNE_STAGES`,
    ``PRETRAIN_STAGES``); inside the ``centres`` stage the Hungarian matching (scipy's
    ``linear_sum_assignment``, called by ``actionpp.allocation``) is timed on its own.
    """
    from torch.profiler import record_function

    import actionpp.allocation as allocation

    @contextlib.contextmanager
    def probe(stage: str) -> Iterator[None]:
        t = time.perf_counter()
        with record_function(stage):
            yield
        host_s[stage] = host_s.get(stage, 0.0) + time.perf_counter() - t

    matching = allocation.linear_sum_assignment

    @functools.wraps(matching)
    def timed_matching(*a: Any, **kw: Any) -> Any:
        with probe(HUNGARIAN):
            return matching(*a, **kw)

    before = tr.probe
    tr.probe = probe
    allocation.linear_sum_assignment = timed_matching  # type: ignore[assignment]
    try:
        yield
    finally:
        tr.probe = before
        allocation.linear_sum_assignment = matching  # type: ignore[assignment]


def count_sync_warnings(fn: Callable[[], Any]) -> Counter[str]:
    """Warnings about synchronising CUDA operations while ``fn`` runs, counted per innermost project frame.

    With ``torch.cuda.set_sync_debug_mode("warn")`` every host synchronisation (``.item()``,
    ``.cpu()``, a boolean mask index, a blocking copy) raises such a warning in the calling frame.
    """
    sites: Counter[str] = Counter()
    original = warnings.showwarning

    def hook(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        if "synchroniz" not in str(message):
            return
        where = "outside the project"
        for fr in reversed(traceback.extract_stack()[:-1]):
            if ("/actionpp/" in fr.filename or "/bench/" in fr.filename) and fr.name not in (
                    "inner", "hook", "count_sync_warnings", "_sync_sites", "run"):
                where = f"{Path(fr.filename).parent.name}/{Path(fr.filename).name}:{fr.lineno} {fr.name}: {fr.line}"
                break
        sites[where] += 1

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = hook
        try:
            fn()
        finally:
            warnings.showwarning = original
    return sites


def _sync_sites(fn: Callable[[], Any], device: torch.device) -> Counter[str] | None:
    """:func:`count_sync_warnings` under the CUDA sync debug mode (None on other devices)."""
    if device.type != "cuda":
        return None
    torch.cuda.set_sync_debug_mode("warn")
    try:
        return count_sync_warnings(fn)
    finally:
        torch.cuda.set_sync_debug_mode("default")
        _sync(device)


def _evt(e: Any, *names: str) -> float:
    for n in names:
        v = getattr(e, n, None)
        if v is not None:
            return float(v)
    return 0.0


def profile_phase(tr: TrainerState, batches: BatchSource, objective: Objective, phase: str, warmup: int,
                  steps: int) -> dict[str, Any]:
    """Where the time of ``steps`` iterations of ``phase`` goes (see the module docstring)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = tr.device.type == "cuda"
    tr.optimizer = tr.new_optimizer(phase)
    fn = pretrain_step if phase == "pretrain" else finetune_step
    counter = [0]

    def run(n: int) -> None:
        for _ in range(n):
            fn(tr, batches, objective, counter[0])
            counter[0] += 1

    run(warmup)
    _sync(tr.device)
    t0 = time.perf_counter()
    run(steps)
    _sync(tr.device)
    wall = (time.perf_counter() - t0) / steps
    sites = _sync_sites(lambda: run(steps), tr.device)
    host_s: dict[str, float] = {}
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with _instrumented(tr, host_s), profile(activities=activities) as prof:
        run(steps)
        _sync(tr.device)
    from torch.autograd import DeviceType

    avgs = prof.key_averages()
    stage_names = {*FINETUNE_STAGES, *PRETRAIN_STAGES, HUNGARIAN}
    stages = {}
    for e in avgs:
        if e.key in stage_names:
            stages[e.key] = {
                "calls_per_step": e.count / steps,
                "cpu_ms_per_step": _evt(e, "cpu_time_total") / 1000 / steps,
                "gpu_ms_per_step": _evt(e, "device_time_total", "cuda_time_total") / 1000 / steps,
            }

    def on_device(e: Any) -> bool:  # a kernel, copy or memset (as torch's own table totals them)
        return getattr(e, "device_type", None) == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)

    host_ops = [e for e in avgs if e.key not in stage_names and not on_device(e)]
    device_ops = [e for e in avgs if on_device(e)]
    dev_events = [ev for ev in prof.events() if on_device(ev)] if cuda else []
    gpu_total = sum(_evt(ev, "self_device_time_total", "self_cuda_time_total") for ev in dev_events) / 1000 / steps
    kernels = len(dev_events)
    top_cpu = sorted(host_ops, key=lambda e: -_evt(e, "self_cpu_time_total"))[:15]
    top_gpu = sorted(device_ops, key=lambda e: -_evt(e, "self_device_time_total", "self_cuda_time_total"))[:15]
    return {
        "method": tr.cfg.method.name,
        "phase": phase,
        "steps": steps,
        "wall_ms_per_step": wall * 1000,
        "gpu_kernel_ms_per_step": gpu_total if cuda else None,
        "gpu_busy_share": (gpu_total / (wall * 1000)) if cuda and wall > 0 else None,
        "kernels_per_step": kernels / steps if cuda else None,
        "syncs_per_step": (sum(sites.values()) / steps) if sites is not None else None,
        "sync_sites": {k: v / steps for k, v in sites.most_common(20)} if sites is not None else None,
        "stages": stages,
        "hungarian_host_ms_per_step": host_s.get(HUNGARIAN, 0.0) * 1000 / steps,
        "top_cpu_ops": [(e.key, _evt(e, "self_cpu_time_total") / 1000 / steps, e.count / steps) for e in top_cpu],
        "top_gpu_ops": [(e.key, _evt(e, "self_device_time_total", "self_cuda_time_total") / 1000 / steps,
                         e.count / steps) for e in top_gpu],
    }


def format_profile(profiles: list[dict[str, Any]]) -> str:
    """The profile reports as text (one block per method and phase)."""
    out = []
    for p in profiles:
        out.append(f"== {p['method']} {p['phase']}: {p['steps']} profiled steps")
        out.append(f"wall (not profiled): {p['wall_ms_per_step']:.2f} ms / step")
        if p["gpu_kernel_ms_per_step"] is not None:
            out.append(f"GPU kernel time: {p['gpu_kernel_ms_per_step']:.2f} ms / step "
                       f"(the GPU is busy {100 * p['gpu_busy_share']:.0f} % of the wall time); "
                       f"{p['kernels_per_step']:.0f} kernels / step")
            out.append(f"host synchronisations: {p['syncs_per_step']:.1f} / step; where (per step):")
            for site, n in (p["sync_sites"] or {}).items():
                out.append(f"  {n:6.1f}  {site}")
        else:
            out.append("GPU kernel time, kernel and synchronisation counts: CUDA only")
        out.append(f"Hungarian matching on the host: {p['hungarian_host_ms_per_step']:.3f} ms / step")
        out.append("stage                               calls/step   host ms/step   GPU ms/step")
        for name, s in sorted(p["stages"].items(), key=lambda kv: -kv[1]["cpu_ms_per_step"]):
            out.append(f"  {name:34s} {s['calls_per_step']:8.1f} {s['cpu_ms_per_step']:14.2f} "
                       f"{s['gpu_ms_per_step']:13.2f}")
        out.append("top ops by host (self CPU) time:  ms/step  calls/step")
        for key, ms, n in p["top_cpu_ops"]:
            out.append(f"  {ms:8.3f} {n:7.1f}  {key[:90]}")
        if p["top_gpu_ops"]:
            out.append("top ops by GPU (self device) time:  ms/step  calls/step")
            for key, ms, n in p["top_gpu_ops"]:
                out.append(f"  {ms:8.3f} {n:7.1f}  {key[:90]}")
        out.append("")
    return "\n".join(out)


# =========================================================================== the whole benchmark


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every row of the benchmark as a JSON-ready dict (``rows``, ``augment``, ``ssl4mis``, ``profiles``)."""
    start = time.perf_counter()
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    size = args.size or (256 if cuda else 128)
    iters = args.iters or (50 if cuda else 8)
    warmup = args.warmup if args.warmup is not None else (10 if cuda else 2)
    data = args.data or "phantom"
    profile = args.config or ("acdc_paper" if cuda else "phantom_lab")
    extra = list(args.set or [])
    compile_modes = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    thread_counts = [int(t) for t in args.threads.split(",")] if args.threads else [torch.get_num_threads()]
    methods = args.methods.split(",")
    compile_methods = args.compile_methods.split(",") if args.compile_methods else methods
    rows: list[dict[str, Any]] = []
    aug_s: dict[int, float] = {}
    ssl: list[dict[str, Any]] = []
    profiles: list[dict[str, Any]] = []

    def over_budget(need: float = 0.0) -> bool:
        return args.budget is not None and time.perf_counter() - start + need > args.budget

    compile_need = 90.0 if cuda else 10.0  # a compile's first step, until one is measured
    compiled_once = False

    for threads in thread_counts:
        if not cuda:
            torch.set_num_threads(threads)
        for compile_on in compile_modes:
            for method in (compile_methods if compile_on else methods):
                cfg = load_config(profile, bench_overrides(data, size, device, compile_on, method, extra))
                phases = [p for p in ("pretrain", "finetune") if p == "finetune" or cfg.method.pretrain]
                if over_budget(compile_need if compile_on else 0.0):
                    rows += [{"threads": threads, "method": method, "phase": p, "compile": compile_on,
                              "status": "skipped (time budget)"} for p in phases]
                    continue
                _reset_compiled()
                with compile_backend(args.compile_backend if compile_on else None):
                    tr, batches, objective, _ = prepare(cfg, device, DistInfo())
                if threads not in aug_s and not compile_on:
                    aug_s[threads] = time_augment(tr, batches, iters * 2)
                for phase in phases:
                    row: dict[str, Any] = {"threads": threads, "method": method, "phase": phase,
                                           "compile": compile_on}
                    if over_budget():
                        rows.append({**row, "status": "skipped (time budget)"})
                        continue
                    if cuda:
                        torch.cuda.reset_peak_memory_stats(device)
                    try:
                        t = time_phase(tr, batches, objective, phase, max(warmup, 3 if compile_on else 1), iters)
                    except Exception as exc:  # noqa: BLE001 - a failing row is reported, the others still run
                        rows.append({**row, "status": f"failed: {type(exc).__name__}: {exc}"[:400]})
                        print(f"threads {threads} {method} {phase} compile={compile_on}: FAILED\n"
                              + traceback.format_exc(), flush=True)
                        continue
                    if compile_on:  # the first measured compile replaces the guess; later ones can only raise it
                        compile_need = t["first_s"] + 5.0 if not compiled_once else max(compile_need,
                                                                                          t["first_s"] + 5.0)
                        compiled_once = True
                    peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None
                    rows.append({**row, "status": "ok", "s_per_it": t["s"], "its_per_s": 1.0 / t["s"],
                                 "first_step_s": t["first_s"], "peak_gib": peak})
                    print(f"threads {threads} {method:13s} {phase:9s} compile={str(compile_on):5s} "
                          f"{t['s'] * 1000:8.1f} ms/it {1.0 / t['s']:7.2f} it/s  first step {t['first_s']:.1f} s"
                          + (f"  peak {peak:.2f} GiB" if peak is not None else ""), flush=True)
                if args.profile and not compile_on and method == "actionpp" and threads == thread_counts[0]:
                    for phase in phases:
                        if over_budget():
                            break
                        try:
                            profiles.append(profile_phase(tr, batches, objective, phase, 2, args.profile_steps))
                        except Exception as exc:  # noqa: BLE001
                            profiles.append({"method": method, "phase": phase,
                                             "error": f"{type(exc).__name__}: {exc}"[:400]})
                            print("profile FAILED\n" + traceback.format_exc(), flush=True)
                if args.ssl4mis and not compile_on and method == methods[-1] and threads == thread_counts[0]:
                    workers = args.ssl4mis_workers if args.ssl4mis_workers is not None else (
                        min(16, os.cpu_count() or 1) if cuda else 1)
                    if over_budget():
                        ssl.append({"status": "skipped (time budget)", "workers": workers})
                    else:
                        try:
                            r = time_ssl4mis(cfg, batches, device, max(warmup, 2), iters, workers)
                            ssl.append({"status": "ok", "s_per_it": r["s"], "its_per_s": 1.0 / r["s"],
                                        "workers": workers})
                            print(f"SSL4MIS-style mean teacher ({workers} loader workers): {r['s'] * 1000:8.1f} ms/it "
                                  f"{1.0 / r['s']:7.2f} it/s", flush=True)
                        except Exception as exc:  # noqa: BLE001
                            ssl.append({"status": f"failed: {type(exc).__name__}: {exc}"[:400], "workers": workers})
                            print("SSL4MIS-style loop FAILED\n" + traceback.format_exc(), flush=True)
                del tr, batches, objective
                if cuda:
                    torch.cuda.empty_cache()
    paired: list[dict[str, Any]] = []
    if args.floor and not over_budget():
        if not cuda:
            torch.set_num_threads(thread_counts[0])
        preps: dict[tuple[str, str], tuple[TrainerState, BatchSource, Objective]] = {}
        for method in methods:
            cfg = load_config(profile, bench_overrides(data, size, device, False, method, extra))
            tr, batches, objective, _ = prepare(cfg, device, DistInfo())
            for phase in ("pretrain", "finetune"):
                if phase == "finetune" or cfg.method.pretrain:
                    preps[(method, phase)] = (tr, batches, objective)
        paired = time_paired(preps, args.floor_rounds, max(warmup, 1))
        for p in paired:
            p["threads"] = thread_counts[0]
            print(f"paired {p['method']:13s} {p['phase']:9s} step {p['step_s'] * 1000:8.1f} ms  U-Net floor "
                  f"{p['floor_s'] * 1000:8.1f} ms  ({p['step_s'] / p['floor_s']:.2f}x)", flush=True)
        del preps
    machine = (torch.cuda.get_device_name(device) if cuda else
               f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs")
    cmd = "python bench/bench_train.py " + " ".join(args.argv)
    if os.environ.get("OMP_NUM_THREADS"):
        cmd = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " + cmd
    result = {
        "device": str(device), "cuda": cuda, "machine": machine, "torch": torch.__version__,
        "date": _dt.date.today().isoformat(), "command": cmd.strip(), "profile": profile, "data": data,
        "size": size, "iters": iters, "warmup": warmup, "compile_backend": args.compile_backend,
        "load_average": os.getloadavg()[0], "rows": rows, "augment_s": aug_s, "ssl4mis": ssl,
        "profiles": profiles, "paired": paired, "seconds": time.perf_counter() - start,
    }
    result["projections"] = projections(result)
    result["sets"] = extra
    return result


def _row(result: dict[str, Any], method: str, phase: str, compile_on: bool, threads: int | None = None
         ) -> dict[str, Any] | None:
    for r in result["rows"]:
        if (r["method"], r["phase"], r["compile"]) == (method, phase, compile_on) and r["status"] == "ok" and (
                threads is None or r["threads"] == threads):
            return r
    return None


def projections(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The paper schedule of ACTION++ (10 k + 20 k) per thread count and compile mode, and the 1x ratios."""
    out = []
    ssl = next((s for s in result["ssl4mis"] if s["status"] == "ok"), None)
    for threads in sorted({r["threads"] for r in result["rows"]}):
        for compile_on in (False, True):
            pre = _row(result, "actionpp", "pretrain", compile_on, threads)
            ft = _row(result, "actionpp", "finetune", compile_on, threads)
            if pre is None or ft is None:
                continue
            total = PAPER_PRETRAIN * pre["s_per_it"] + PAPER_FINETUNE * ft["s_per_it"]
            p: dict[str, Any] = {"threads": threads, "compile": compile_on, "minutes": total / 60,
                                 "mean_its_per_s": (PAPER_PRETRAIN + PAPER_FINETUNE) / total}
            mt = _row(result, "mean_teacher", "finetune", compile_on, threads)
            if ssl is not None:
                p["ssl4mis_minutes_30k"] = SSL4MIS_ITERS * ssl["s_per_it"] / 60
                p["speedup_actionpp_vs_ssl4mis"] = ssl["s_per_it"] / (total / (PAPER_PRETRAIN + PAPER_FINETUNE))
                if mt is not None:
                    p["speedup_mean_teacher_vs_ssl4mis"] = ssl["s_per_it"] / mt["s_per_it"]
            out.append(p)
    return out


def format_section(result: dict[str, Any]) -> str:
    """The Markdown section of ``docs/benchmarks.md`` (and of the GPU suite's summary)."""
    cuda = result["cuda"]
    any_compile = any(r["compile"] for r in result["rows"])
    lines = [
        f"### Training loop ({'CUDA' if cuda else 'CPU'}, {result['size']} x {result['size']}, batch 4 + 4, "
        f"{'bf16 autocast' if cuda else 'fp32'}{', with and without torch.compile' if any_compile else ''})",
        "",
        f"- machine: {result['machine']}; torch {result['torch']}; date {result['date']}"
        + (f"; load average at the end {result['load_average']:.1f} (a shared machine inflates CPU times)"
           if not cuda else ""),
        f"- command: `{result['command']}`",
        f"- profile `{result['profile']}` on data `{result['data']}`; {result['warmup']} warm-up + {result['iters']} "
        "timed iterations per row (one host read at the end, as at a log interval); first step = the first "
        "iteration's seconds (compile time with torch.compile"
        + (f", backend {result['compile_backend']}" if result.get("compile_backend") else "") + ")",
        "",
        "| torch threads | method | phase | compile | ms / iteration | iterations / s | first step (s) | "
        "peak GPU memory (GiB) |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        c = "yes" if r["compile"] else "no"
        if r["status"] != "ok":
            lines.append(f"| {r['threads']} | {r['method']} | {r['phase']} | {c} | {r['status']} | | | |")
            continue
        peak = "-" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}"
        lines.append(f"| {r['threads']} | {r['method']} | {r['phase']} | {c} | {r['s_per_it'] * 1000:.1f} | "
                     f"{r['its_per_s']:.2f} | {r['first_step_s']:.1f} | {peak} |")
    lines.append("")
    lines += floor_lines(result.get("paired", []))
    for s in result["ssl4mis"]:
        if s["status"] == "ok":
            lines.append(f"- SSL4MIS-style mean teacher (the 1x: per-sample numpy / scipy augmentation in a DataLoader "
                         f"with {s['workers']} worker(s), fp32, `.item()` of every logged loss each iteration): "
                         f"{s['s_per_it'] * 1000:.1f} ms / iteration, {s['its_per_s']:.2f} iterations / s")
        else:
            lines.append(f"- SSL4MIS-style mean teacher: {s['status']}")
    for threads, a in result["augment_s"].items():
        lines.append(
            f"- augmentation alone (sampling, weak + strong views, CutMix, jitter, blur), {threads} thread(s): "
            f"{a * 1000:.2f} ms per 4 + 4 batch, {8 / a:.0f} images / s"
        )
    rows = {(r["threads"], r["method"], r["phase"], r["compile"]): r for r in result["rows"] if r["status"] == "ok"}
    lowest = min((r["threads"] for r in result["rows"]), default=1)
    slower = [k for k in rows if k[0] > lowest and (lowest,) + k[1:] in rows
              and rows[k]["s_per_it"] > rows[(lowest,) + k[1:]]["s_per_it"]]
    if slower:
        lines.append(
            f"- more threads were slower in {len(slower)} of the rows: other processes shared the cores "
            "(see the load average), so the OpenMP threads of one step waited on each other; "
            "compare thread counts only on an idle machine"
        )
    for p in result["projections"]:
        what = f"{p['threads']} thread(s), " if not cuda else ""
        what += "torch.compile" if p["compile"] else "eager"
        line = (f"- projected paper ACDC schedule of ACTION++ (10 k pre-training + 20 k fine-tuning) at this size, "
                f"{what}: {p['minutes']:.1f} minutes, {p['mean_its_per_s']:.1f} iterations / s on average "
                "(validation and checkpoints not included)")
        if "speedup_actionpp_vs_ssl4mis" in p:
            line += (f"; {p['speedup_actionpp_vs_ssl4mis']:.1f}x the SSL4MIS-style loop per iteration"
                     + (f" (our mean teacher: {p['speedup_mean_teacher_vs_ssl4mis']:.1f}x)"
                        if "speedup_mean_teacher_vs_ssl4mis" in p else "")
                     + f"; the SSL4MIS-style loop's own 30 k iterations: {p['ssl4mis_minutes_30k']:.0f} minutes")
        lines.append(line)
    return "\n".join(lines) + "\n"


def ratios(paired: list[dict[str, Any]]) -> dict[str, float]:
    """The CPU speed goals' ratios from the round-robin medians: ACTION++ over mean teacher, steps over floors."""
    by = {(r["method"], r["phase"]): r for r in paired}
    out: dict[str, float] = {}
    mt, ft, pre = (by.get(k) for k in (("mean_teacher", "finetune"), ("actionpp", "finetune"),
                                        ("actionpp", "pretrain")))
    if mt and ft:
        out["ACTION++ fine-tuning / mean teacher"] = ft["step_s"] / mt["step_s"]
    if mt and pre:
        out["ACTION++ pre-training / mean teacher"] = pre["step_s"] / mt["step_s"]
    if ft:
        out["ACTION++ fine-tuning / its U-Net floor"] = ft["step_s"] / ft["floor_s"]
    if mt:
        out["mean teacher / its U-Net floor"] = mt["step_s"] / mt["floor_s"]
    return out


GOALS = {"ACTION++ fine-tuning / mean teacher": 1.3, "ACTION++ pre-training / mean teacher": 1.3,
         "ACTION++ fine-tuning / its U-Net floor": 1.25, "mean teacher / its U-Net floor": 1.1}


def floor_lines(paired: list[dict[str, Any]]) -> list[str]:
    """The round-robin table (steps beside their U-Net floors) and the goal ratios; none without ``--floor``."""
    if not paired:
        return []
    lines = [
        f"Steps and their U-Net floors, round-robin ({paired[0]['rounds']} rounds: one step of every row and its "
        "floor in turn, so every row sees the same machine; medians, interquartile range in brackets). The "
        "U-Net floor of a step: the student's backbone forward + backward and SGD step on the images the method "
        "puts through it, and the teacher's backbone forward on its images, nothing else (`floor_step`).",
        "",
        "| torch threads | method | phase | images student / teacher | step ms | U-Net floor ms | step / floor |",
        "| --- | --- | --- | --- | ---: | ---: | ---: |",
    ]
    for r in paired:
        n_s, n_t = r["floor_images"]
        lines.append(f"| {r['threads']} | {r['method']} | {r['phase']} | {n_s} / {n_t} | {r['step_s'] * 1000:.1f} "
                     f"({r['step_iqr_s'] * 1000:.0f}) | {r['floor_s'] * 1000:.1f} ({r['floor_iqr_s'] * 1000:.0f}) | "
                     f"{r['step_s'] / r['floor_s']:.2f} |")
    lines += ["", "- goals (round-robin medians; goal in brackets): " + "; ".join(
        f"{k} **{v:.2f}** ({'<=' if v <= GOALS[k] else 'NOT <='} {GOALS[k]})" for k, v in ratios(paired).items()), ""]
    return lines


def _commit(checkout: Path) -> str:
    import subprocess

    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "actionpp"], cwd=checkout,
                           capture_output=True, text=True).stdout.strip()
    return (r.stdout.strip() or "?") + (" + uncommitted library changes" if dirty else "")


def run_baseline(args: argparse.Namespace) -> dict[str, Any]:
    """This script's rows on the checkout ``--baseline`` (same arguments; ``--baseline-set`` instead of ``--set``)."""
    import subprocess
    import tempfile

    skip_next = False
    argv = []
    for a in args.argv:  # the same command without the options that only concern this side
        if skip_next:
            skip_next = False
            continue
        if a in ("--baseline", "--set", "--baseline-set", "--json", "--profile"):
            skip_next = True
            continue
        if a.split("=")[0] in ("--baseline", "--set", "--baseline-set", "--json", "--profile") or a == "--no-write":
            continue
        argv.append(a)
    for s in args.baseline_set:
        argv += ["--set", s]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "before.json"
        prof = Path(tmp) / "before_profile.txt"
        cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--no-write", "--json", str(out)]
        if args.profile:
            cmd += ["--profile", str(prof)]
        env = {**os.environ, "ACTIONPP_BENCH_REPO": str(Path(args.baseline).resolve())}
        subprocess.run(cmd, check=True, env=env)
        before: dict[str, Any] = json.loads(out.read_text())
        before["profile_text"] = prof.read_text() if prof.is_file() else ""
    before["commit"] = _commit(Path(args.baseline))
    return before


def format_comparison(before: dict[str, Any], after: dict[str, Any]) -> str:
    """Markdown: the same rows before and after a change (``--baseline``), with the goal ratios of each."""
    after_commit = _commit(REPO)
    lines = [
        f"### Before and after (CPU speed work): `{before['commit']}` against `{after_commit}`",
        "",
        f"- machine: {after['machine']}; torch {after['torch']}; date {after['date']}; load average at the end "
        f"{before['load_average']:.1f} (before) and {after['load_average']:.1f} (after)",
        f"- command: `{after['command']}` (the baseline's rows: the same script run against the baseline checkout "
        "first, in its own process, then this checkout's; overrides of this side only: "
        f"{' '.join(after.get('sets', [])) or 'none'})",
        "",
        "| method | phase | before ms / it | after ms / it | after / before |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for r in after["rows"]:
        b = next((x for x in before["rows"] if (x["method"], x["phase"], x["compile"], x["threads"]) ==
                  (r["method"], r["phase"], r["compile"], r["threads"]) and x["status"] == "ok"), None)
        if r["status"] != "ok" or b is None:
            continue
        lines.append(f"| {r['method']} | {r['phase']} | {b['s_per_it'] * 1000:.1f} | {r['s_per_it'] * 1000:.1f} | "
                     f"{r['s_per_it'] / b['s_per_it']:.2f} |")
    for name, res in (("before", before), ("after", after)):
        if res.get("paired"):
            lines += ["", f"**{name}** (`{res.get('commit', after_commit)}`), round-robin:", ""]
            lines += floor_lines(res["paired"])
    for name, text in (("before", before.get("profile_text", "")), ("after", after.get("profile_text", ""))):
        if text:
            lines += ["", f"Where the time goes, **{name}** (`torch.profiler`, one `record_function` per stage):", "",
                      "```", text.rstrip(), "```"]
    return "\n".join(lines) + "\n"


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--config", default=None, help="profile (default: acdc_paper on CUDA, phantom_lab on CPU)")
    ap.add_argument("--data", default=None, help="phantom | shared | a folder or pack file (default: phantom)")
    ap.add_argument("--size", type=int, default=None, help="image size (default: 256 on CUDA, 128 on CPU)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config override")
    ap.add_argument("--iters", type=int, default=None, help="timed iterations per method and phase")
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--threads", default=None,
                    help="CPU: comma-separated torch thread counts, one set of rows each (e.g. 1,2)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--compile", nargs="?", const="on", default="off", choices=("off", "on", "both"),
                    help="torch.compile the U-Net: off, on (bare --compile) or both (every row twice)")
    ap.add_argument("--compile-methods", default=None, help="methods timed with compile (default: all of --methods)")
    ap.add_argument("--compile-backend", default=None,
                    help="torch.compile backend (default inductor; aot_eager: tracing only, for a CPU dry run)")
    ap.add_argument("--ssl4mis", action="store_true", help="also time the SSL4MIS-style loop (the 1x)")
    ap.add_argument("--ssl4mis-workers", type=int, default=None,
                    help="DataLoader workers of the SSL4MIS-style loop (default: min(16, CPUs) on CUDA, 1 on CPU)")
    ap.add_argument("--profile", default=None, metavar="FILE", help="profile ACTION++ steps into FILE (text)")
    ap.add_argument("--profile-steps", type=int, default=5)
    ap.add_argument("--floor", action="store_true",
                    help="also time every method's steps round-robin beside their U-Net floors (the speed goals)")
    ap.add_argument("--floor-rounds", type=int, default=15, help="round-robin rounds of --floor (default 15)")
    ap.add_argument("--baseline", default=None, metavar="CHECKOUT",
                    help="also run these rows against another checkout (a git worktree at the commit before a "
                         "change) and write a before / after section")
    ap.add_argument("--baseline-set", action="append", default=[], metavar="KEY=VALUE",
                    help="override for the baseline only (--set applies to this checkout only)")
    ap.add_argument("--budget", type=float, default=None, help="skip rows that would start after this many seconds")
    ap.add_argument("--json", default=None, metavar="FILE", help="write every number as JSON")
    ap.add_argument("--no-write", action="store_true", help="print only; do not touch docs/benchmarks.md")
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    args.argv = argv
    result = run(args)
    section = format_section(result)
    print(section)
    if args.profile and result["profiles"]:
        Path(args.profile).parent.mkdir(parents=True, exist_ok=True)
        result["profile_text"] = format_profile([p for p in result["profiles"] if "error" not in p])
        Path(args.profile).write_text(result["profile_text"])
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))
    if not args.no_write:
        name = "bench_train:cuda" if result["cuda"] else "bench_train"
        benchdoc.write_section(HERE / "docs" / "benchmarks.md", name, section)
    if args.baseline:
        before = run_baseline(args)
        comparison = format_comparison(before, result)
        print(comparison)
        if not args.no_write:
            benchdoc.write_section(HERE / "docs" / "benchmarks.md", "bench_train:before-after", comparison)
    return 0


if __name__ == "__main__":
    sys.exit(main())
