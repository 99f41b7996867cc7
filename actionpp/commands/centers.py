"""``actionpp centers``: generate class centres on the hypersphere and report their quality."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "centers",
        help="generate K class centres in R^d (simplex / optimize / tsc / tammes) and report their geometry",
        description=(
            "Generate K unit class centres in R^d and print min pairwise angle, error versus the regular "
            "simplex (K <= d + 1), uniformity energy and time. Optionally save them (.npz or .pt)."
        ),
    )
    p.add_argument("--classes", type=int, required=True, help="K, background included (ACDC 4, LA 2)")
    p.add_argument("--dim", type=int, required=True, help="d, the embedding dimension (paper 128; official 2D 496)")
    p.add_argument("--method", default="optimize", choices=["optimize", "simplex", "tsc", "tammes"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--t", type=float, default=0.07, help="uniformity temperature (default 0.07)")
    p.add_argument("--out", default=None, help="write the centres to this .npz or .pt file (a new one)")
    p.add_argument("--overwrite", action="store_true", help="replace a centres file an earlier run wrote at --out")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from actionpp.centers import check_centers_output, make_centers, save_centers

    if args.out:
        check_centers_output(args.out, overwrite=args.overwrite)  # before the (long) optimisation
    # CentersError and OwnershipError: one line, exit 2 (actionpp.cli)
    c = make_centers(args.classes, args.dim, method=args.method, seed=args.seed, t=args.t)
    if args.out:
        save_centers(args.out, c, overwrite=args.overwrite)
    m = c.meta
    report = {
        "classes": m["K"],
        "dim": m["d"],
        "method": m["method"],
        "seed": m["seed"],
        "t": m["t"],
        "min_angle_deg": m["min_angle_deg"],
        "max_abs_cos_error_vs_simplex": m["max_abs_cos_error_vs_simplex"],
        "energy": m["energy"],
        "seconds": m["seconds"],
        "out": args.out,
    }
    if args.json:
        print(json.dumps(report))
    else:
        err = report["max_abs_cos_error_vs_simplex"]
        print(
            f"{m['K']} centres in R^{m['d']} ({m['method']}, seed {m['seed']}): min angle {m['min_angle_deg']:.4f} "
            f"deg, "
            f"max |cos - simplex| {'n/a (K > d + 1)' if err is None else f'{err:.2e}'}, "
            f"energy(t={m['t']}) {m['energy']:.10f}, {m['seconds']:.3f} s"
            + (f", saved to {args.out}" if args.out else "")
        )
    return 0
