"""CUDA-only checks (marked ``gpu``; they skip without CUDA): run by ``pytest -m gpu`` and by ``bench/gpu_suite.py``.

- bf16 autocast (``runtime.amp`` auto / bf16) against fp32 (``off``) on the same seed: every loss
  term of ACTION++ (pre-training and fine-tuning) and of the mean teacher within the tolerance below;
- the sampled-pixel head (``RepresentationHead.forward_at``) on CUDA equals the dense head;
- a CUDA run interrupted after a checkpoint and resumed (the checkpoint read back onto the GPU)
  ends where the uninterrupted run ends;
- ``runtime.deterministic=true`` on CUDA: trains, warns only for the ops the torch docs list without
  a deterministic CUDA kernel, restores the flags, and two runs agree.

Only the packages of the GPU image are needed (no MONAI / nibabel: the phantom is written without
NIfTI and validation uses the SciPy distances). Tolerances: bf16 against fp32, per loss term,
``|a - b| <= 2e-2 |a| + 2e-3`` (the CPU test in tests/test_cpu_paths.py uses half of that; measured
on the CPU: at most 7e-4 relative on the totals, 3e-3 absolute on any term). Weights of two CUDA
runs that should agree: relative Frobenius distance below 1e-3 (the U-Net's bilinear up-sampling
and cross-entropy accumulate with atomics on CUDA, so bit-equality is not expected there).
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.gpu

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")

RTOL, ATOL = 2e-2, 2e-3
WEIGHT_RTOL = 1e-3
# the ops of a step that the torch docs list as throwing under deterministic mode on CUDA (loop.py: warn_only)
KNOWN_NONDETERMINISTIC = ("upsample_bilinear2d_backward", "nll_loss2d_forward")
FAST = ["train.pretrain_iters=2", "train.finetune_iters=4", "runtime.checkpoint_every=2", "runtime.log_every=1",
        "data.val_max_volumes=1", "runtime.device=cuda", "data.labelled=2"]


@pytest.fixture(scope="module")
def phantom6(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from actionpp.data.phantom import ensure_phantom

    return ensure_phantom("acdc", "acdc", patients=6, seed=0, root=tmp_path_factory.getbasetemp() / "gpu_phantom6")


@contextlib.contextmanager
def scipy_distances() -> Iterator[None]:
    import actionpp.evaluate as ev

    original = ev.volume_metrics
    ev.volume_metrics = functools.partial(original, backend="scipy")
    try:
        yield
    finally:
        ev.volume_metrics = original


def _steps(cfg, pre: int, ft: int) -> list[dict[str, float]]:
    from actionpp.train import prepare
    from actionpp.train.steps import finetune_step, pretrain_step

    st, batches, objective, _ = prepare(cfg, torch.device("cuda"))
    out = []
    if cfg.method.pretrain:
        st.optimizer = st.new_optimizer("pretrain")
        out += [{k: float(v) for k, v in pretrain_step(st, batches, objective, i).items()} for i in range(pre)]
    st.optimizer = st.new_optimizer("finetune")
    out += [{k: float(v) for k, v in finetune_step(st, batches, objective, i).items()} for i in range(ft)]
    return out


@needs_cuda
@pytest.mark.parametrize("method", ["actionpp", "mean_teacher"])
def test_bf16_autocast_matches_fp32_on_cuda(phantom6, method):
    from actionpp.config import load_config

    runs = {}
    for amp in ("off", "bf16"):
        cfg = load_config("phantom_smoke", [f"data.root={phantom6}", f"method.name={method}", f"runtime.amp='{amp}'",
                                            "runtime.device=cuda", "data.labelled=2"])
        runs[amp] = _steps(cfg, 2, 3)
    for i, (a, b) in enumerate(zip(runs["off"], runs["bf16"])):
        assert set(a) == set(b)
        for k in a:
            assert math.isfinite(b[k]), f"step {i}: {k} not finite under bf16"
            assert abs(a[k] - b[k]) <= RTOL * abs(a[k]) + ATOL, f"step {i}: {k} fp32 {a[k]} vs bf16 {b[k]}"


@needs_cuda
@pytest.mark.parametrize("dim", [128, 496])
def test_sampled_pixel_head_equals_dense_on_cuda(dim):
    from actionpp.models import RepresentationHead

    dev = torch.device("cuda")
    g = torch.Generator(device="cpu").manual_seed(0)
    size = (64, 96)
    channels = (256, 128, 64, 32, 16)
    maps = [torch.randn(2, c, size[0] // 2 ** (4 - i), size[1] // 2 ** (4 - i), generator=g).to(dev)
            for i, c in enumerate(channels)]
    torch.manual_seed(0)
    head = RepresentationHead(list(channels), dim=dim).to(dev)
    n = 300
    b = torch.randint(0, 2, (n,), generator=g)
    ys, xs = torch.randint(0, size[0], (n,), generator=g), torch.randint(0, size[1], (n,), generator=g)
    ys[:4], xs[:4] = torch.tensor([0, 0, size[0] - 1, size[0] - 1]), torch.tensor([0, size[1] - 1, 0, size[1] - 1])
    b, ys, xs = b.to(dev), ys.to(dev), xs.to(dev)
    prev = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # exact fp32 on both paths
    try:
        with torch.no_grad():
            dense = head(maps, size)[b, :, ys, xs]
            sampled = head.forward_at(maps, size, b, ys, xs)
        torch.testing.assert_close(sampled, dense, rtol=1e-4, atol=1e-4)
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):  # the training path
            dense16 = head(maps, size)[b, :, ys, xs].float()
            sampled16 = head.forward_at(maps, size, b, ys, xs).float()
        assert torch.isfinite(sampled16).all()
        rel = (sampled16 - dense16).norm() / dense16.norm()
        assert rel < 5e-2, f"bf16 sampled vs dense: relative distance {rel:.3g}"
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = prev


def _rel_distance(a: dict, b: dict) -> float:
    worst = 0.0
    for k, v in a.items():
        if torch.is_floating_point(v):
            w = b[k].to(v.device)
            worst = max(worst, float((v - w).float().norm() / v.float().norm().clamp_min(1e-12)))
    return worst


class _Interrupt(RuntimeError):
    pass


@needs_cuda
def test_resume_on_cuda_after_interruption_matches_uninterrupted(phantom6, tmp_path):
    from actionpp.checkpoint import load_checkpoint
    from actionpp.config import load_config
    from actionpp.runlog import read_jsonl
    from actionpp.train import Hooks, train

    cfg = load_config("phantom_smoke", FAST + [f"data.root={phantom6}", "method.name=actionpp"])
    with scipy_distances():
        train(cfg, run_dir=tmp_path / "whole", progress=False)

        def stop(st):
            if st.iteration == 4:  # after the checkpoint at iteration 4 (first fine-tuning checkpoint)
                raise _Interrupt("simulated kill")

        with pytest.raises(_Interrupt):
            train(cfg, run_dir=tmp_path / "cut", progress=False, hooks=Hooks(before_step=stop))
        assert load_checkpoint(tmp_path / "cut" / "last.pt")["iteration"] == 4
        res = train(cfg, run_dir=tmp_path / "cut", resume=True, progress=False)  # read back with map_location=cuda
    assert res.iterations == cfg.total_iters
    whole = load_checkpoint(tmp_path / "whole" / "last.pt")
    cut = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert whole["iteration"] == cut["iteration"] == cfg.total_iters
    assert _rel_distance(whole["student"], cut["student"]) < WEIGHT_RTOL
    assert _rel_distance(whole["teacher"], cut["teacher"]) < WEIGHT_RTOL
    log_w = {e["iteration"]: e for e in read_jsonl(tmp_path / "whole" / "log.jsonl") if e["kind"] == "train"}
    log_c = {e["iteration"]: e for e in read_jsonl(tmp_path / "cut" / "log.jsonl") if e["kind"] == "train"}
    assert sorted(log_w) == sorted(log_c)
    for it in (5, 6):  # the first iterations after the resume draw the same batches
        assert log_c[it]["loss/total"] == pytest.approx(log_w[it]["loss/total"], rel=1e-2, abs=1e-3)


@needs_cuda
def test_deterministic_flag_on_cuda_trains_warns_only_for_known_ops_and_restores(phantom6, tmp_path):
    from actionpp.checkpoint import load_checkpoint
    from actionpp.config import load_config
    from actionpp.train import train

    cfg = load_config("phantom_smoke", FAST + [f"data.root={phantom6}", "method.name=actionpp",
                                               "runtime.deterministic=true"])
    assert not torch.are_deterministic_algorithms_enabled()
    caught: list[str] = []
    for name in ("a", "b"):
        with warnings.catch_warnings(record=True) as w, scipy_distances():
            warnings.simplefilter("always")
            train(cfg, run_dir=tmp_path / name, progress=False)
        caught += [str(x.message) for x in w if "deterministic" in str(x.message)]
        assert not torch.are_deterministic_algorithms_enabled()  # restored after the run
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
    ops = {op for op in KNOWN_NONDETERMINISTIC if any(op in m for m in caught)}
    unknown = [m for m in caught if not any(op in m for op in KNOWN_NONDETERMINISTIC)]
    assert not unknown, f"ops without a deterministic CUDA kernel beyond the known ones: {unknown[:3]}"
    print(f"nondeterministic CUDA ops that warned: {sorted(ops)}")
    a = load_checkpoint(tmp_path / "a" / "last.pt")["student"]
    b = load_checkpoint(tmp_path / "b" / "last.pt")["student"]
    same = all(torch.equal(a[k], b[k]) for k in a)
    print(f"two deterministic CUDA runs bit-identical: {same}")
    assert _rel_distance(a, b) < WEIGHT_RTOL
