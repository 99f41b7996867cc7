"""Does a change keep the training computation? Phantom smoke runs of every method, two checkouts side by side.

Trains ``phantom_smoke`` (32 x 32, 4 + 8 iterations) for each method with the checkout at ``--a`` and
the one at ``--b`` (git worktrees, say the commit before a change and after it), each in its own
process, and compares what they logged: every loss term at every logged iteration and the
validation Dice, as the largest relative difference, and the final student weights. Identical
computation gives 0 everywhere; a change of float rounding order gives differences of fp32's order
(1e-7 .. 1e-5) that grow slowly along the run; a change of the computation gives differences of
the loss's own size.

``--dropout-off``: both runs with every ``nn.Dropout`` as the identity, for comparing memory
formats (channels-last draws its dropout masks in another order, so the runs differ by design
otherwise). ``--set-a`` / ``--set-b``: overrides for one side only (e.g. ``runtime.channels_last=false``).

    python bench/compare_runs.py --a ../base --b . --set-a runtime.channels_last=false --dropout-off

Prints a table and, unless ``--no-write``, writes it into the ``compare_runs`` section of
``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
METHODS = ("supervised", "mean_teacher", "action", "actionpp")

_CHILD = r'''
import json, sys
import torch
sys.path.insert(0, sys.argv[1])
if sys.argv[4] == "1":
    torch.nn.Dropout.forward = lambda self, x: x
torch.set_num_threads(int(sys.argv[5]))
from actionpp.config import load_config
from actionpp.train import train
overrides = json.loads(sys.argv[3])
train(load_config("phantom_smoke", overrides), run_dir=sys.argv[2], progress=False)
'''


def _train(checkout: Path, run_dir: Path, overrides: list[str], dropout_off: bool, threads: int = 1) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(checkout)}
    subprocess.run([sys.executable, "-c", _CHILD, str(checkout), str(run_dir), json.dumps(overrides),
                    "1" if dropout_off else "0", str(threads)], check=True, env=env, cwd=checkout)


def _log(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]


def _rel(a: float, b: float) -> float:
    if a == b:
        return 0.0
    if not (math.isfinite(a) and math.isfinite(b)):
        return math.inf
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


def compare(a_dir: Path, b_dir: Path) -> dict[str, Any]:
    """Largest relative difference of the logged loss terms and validation Dice, and of the final weights."""
    import torch

    la, lb = _log(a_dir), _log(b_dir)
    ta = [e for e in la if e.get("kind") == "train"]
    tb = [e for e in lb if e.get("kind") == "train"]
    if [e["iteration"] for e in ta] != [e["iteration"] for e in tb]:
        raise SystemExit(f"{a_dir} and {b_dir} logged other iterations")
    loss = 0.0
    first_loss = 0.0
    for k, (ea, eb) in enumerate(zip(ta, tb)):
        for key in ea:
            if key.startswith("loss/") and key in eb and ea[key] is not None and eb[key] is not None:
                r = _rel(float(ea[key]), float(eb[key]))
                loss = max(loss, r)
                if k == 0:
                    first_loss = max(first_loss, r)
    va = [e["dice"] for e in la if e.get("kind") == "val"]
    vb = [e["dice"] for e in lb if e.get("kind") == "val"]
    dice = max((abs(x - y) for x, y in zip(va, vb)), default=0.0)
    sa = torch.load(a_dir / "last.pt", map_location="cpu", weights_only=False)["student"]
    sb = torch.load(b_dir / "last.pt", map_location="cpu", weights_only=False)["student"]
    keys = [k for k in sa if sa[k].is_floating_point() and k.startswith("net.")]  # the backbone's parameters
    wa = torch.cat([sa[k].double().reshape(-1) for k in keys])
    wb = torch.cat([sb[k].double().reshape(-1) for k in keys])
    weights = float((wa - wb).norm() / wa.norm())
    return {"loss_first": first_loss, "loss_max": loss, "val_dice_abs": dice, "weights_max": weights,
            "logged": len(ta)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--a", required=True, help="checkout A (a git worktree)")
    ap.add_argument("--b", default=str(REPO), help="checkout B (default: this one)")
    ap.add_argument("--set", action="append", default=[], help="override for both sides")
    ap.add_argument("--set-a", action="append", default=[], help="override for side A only")
    ap.add_argument("--set-b", action="append", default=[], help="override for side B only")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--dropout-off", action="store_true", help="every nn.Dropout the identity on both sides")
    ap.add_argument("--threads-b", type=int, default=1,
                    help="torch threads of side B (2: other reduction orders, the size of rounding alone)")
    ap.add_argument("--label", default=None, help="a name for this comparison in docs/benchmarks.md")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    a, b = Path(args.a).resolve(), Path(args.b).resolve()

    def rev(p: Path) -> str:
        r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=p, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "actionpp"], cwd=p,
                               capture_output=True, text=True).stdout
        return r.stdout.strip() + (" + uncommitted library changes" if dirty.strip() else "")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            common = [f"method.name={method}", *args.set]
            _train(a, Path(tmp) / f"a_{method}", common + args.set_a, args.dropout_off)
            _train(b, Path(tmp) / f"b_{method}", common + args.set_b, args.dropout_off, args.threads_b)
            r = compare(Path(tmp) / f"a_{method}", Path(tmp) / f"b_{method}")
            rows.append({"method": method, **r})
            print(f"{method:13s} first logged losses {r['loss_first']:.2e}  all logged losses {r['loss_max']:.2e}  "
                  f"val Dice {r['val_dice_abs']:.2e}  final weights {r['weights_max']:.2e}", flush=True)
    cmd = "python bench/compare_runs.py " + " ".join(argv if argv is not None else sys.argv[1:])
    label = args.label or f"{rev(a)} vs {rev(b)}"
    lines = [
        f"### {label}",
        "",
        f"- A: `{rev(a)}` {' '.join(args.set + args.set_a) or '(profile defaults)'}; "
        f"B: `{rev(b)}` {' '.join(args.set + args.set_b) or '(profile defaults)'}"
        + ("; dropout off on both sides" if args.dropout_off else "")
        + (f"; B with {args.threads_b} torch threads" if args.threads_b != 1 else ""),
        f"- machine: {platform.machine()}, {os.cpu_count()} logical CPUs; one torch thread unless said; date "
        f"{_dt.date.today().isoformat()}; command: `{cmd}`",
        "- phantom_smoke (32 x 32, 4 pre-training + 8 fine-tuning iterations); largest relative difference "
        "A vs B of the logged loss terms (first logged step / all), absolute of the validation Dice, and "
        "||w_A - w_B|| / ||w_A|| of the final backbone weights",
        "",
        "| method | logged steps | losses, first step | losses, all steps | val Dice | final weights |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(f"| {r['method']} | {r['logged']} | {r['loss_first']:.1e} | {r['loss_max']:.1e} | "
                     f"{r['val_dice_abs']:.1e} | {r['weights_max']:.1e} |")
    section = "\n".join(lines) + "\n"
    print(section)
    if not args.no_write:
        sys.path.insert(0, str(REPO))
        from actionpp import benchdoc

        benchdoc.write_section(REPO / "docs" / "benchmarks.md", "compare_runs:" + (args.label or "latest"), section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
