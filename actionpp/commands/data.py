"""``actionpp data``: phantom generation, dataset checks, packing, raw-ACDC conversion."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "data",
        help="phantom generation, dataset checks, packing, raw-ACDC conversion",
        description="Data tools: generate the synthetic phantom, validate ACDC / LA folders, "
                    "pack a dataset into one compact lossless file, convert raw ACDC NIfTI.",
    )
    sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    sub.required = True

    ph = sub.add_parser("phantom", help="generate a synthetic data set in the real layout",
                        description="Generate a seeded, deterministic phantom in the SSL4MIS (ACDC) or UA-MT (LA) "
                                    "layout and print a summary (counts, class shares, seconds).")
    from actionpp.data.spec import dataset_names, dataset_specs

    presets = list(dict.fromkeys(p for s in dataset_specs() for p in s.phantom.presets))  # acdc, longtail
    ph.add_argument("--kind", choices=dataset_names(), default="acdc",
                    help="a registered dataset: cardiac 2D+t (acdc), 3D left atrium (la), ...")
    ph.add_argument("--preset", choices=presets, default=presets[0],
                    help="class shares of the cardiac phantom: like real ACDC, or with a clearly rarer RV (longtail)")
    ph.add_argument("--patients", type=int, default=None, help="number of synthetic patients (default 20)")
    ph.add_argument("--seed", type=int, default=0, help="random seed (same seed = identical files)")
    ph.add_argument(
        "--out",
        default=None,
        help="output folder (must not exist); default data/phantom/<kind>-<preset>-<seed>-<patients>, reused if "
             "present",
    )
    ph.add_argument(
        "--nifti", action="store_true", help="also write NIfTI files with voxel spacing (raw-ACDC layout for acdc)"
    )
    ph.add_argument("--json", action="store_true", help="print the summary as JSON")
    ph.set_defaults(func=_phantom)

    ck = sub.add_parser(
        "check",
        help="validate a data set and summarise it",
        description="Validate an ACDC (SSL4MIS) or LA (UA-MT) folder or a pack (auto-detected): every "
        "listed file is read once; each problem is reported with its file. Exit 1 on problems.",
    )
    ck.add_argument("root", help="dataset folder or pack file")
    ck.add_argument("--json", action="store_true", help="print the summary as JSON")
    ck.add_argument(
        "--partial",
        action="store_true",
        help="tolerate listed volumes that are absent (a partial copy, e.g. 5 of the 100 LA cases)",
    )
    ck.add_argument("--sha256", action="store_true", help="also verify ROOT/SHA256SUMS")
    ck.set_defaults(func=_check)

    pk = sub.add_parser(
        "pack",
        help="write a compact lossless single-file cache of a data set",
        description="Pack the training slices and the val/test volumes (ACDC) or the available volumes "
        "(LA) into one file, bit-exact, with SHA-256 digests of the header and the payload "
        "checked on load. OUT must lie outside ROOT.",
    )
    pk.add_argument("root", help="dataset folder")
    pk.add_argument("out", help="pack file to write (e.g. acdc.pack), outside ROOT")
    pk.add_argument("--overwrite", action="store_true",
                    help="replace OUT if it is a pack (never another file, never a file inside ROOT)")
    pk.add_argument("--leave-out", action="append", default=[], metavar="SPLIT", choices=("train", "val", "test"),
                    help="a volume split not to pack, list included (repeatable; the GPU carry: --leave-out test)")
    pk.set_defaults(func=_pack)

    pr = sub.add_parser(
        "prepare-acdc",
        help="convert the raw ACDC NIfTI release to the SSL4MIS layout",
        description="Convert RAW (patientNNN/patientNNN_frameMM.nii.gz + _gt) to the SSL4MIS layout in OUT: "
        "per-volume min-max to [0, 1], slices of training patients, standard split lists. "
        "OUT must lie outside RAW (not RAW itself, inside it or above it).",
    )
    pr.add_argument("raw", help="folder holding patientNNN/ folders")
    pr.add_argument("out", help="output folder (written atomically, with a .actionpp-prepare-acdc.json marker)")
    pr.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUT if it exists and was written by prepare-acdc (carries the marker)",
    )
    pr.set_defaults(func=_prepare)


def _print(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        for k, v in summary.items():
            print(f"{k:>22}: {v}")


def _phantom(args: argparse.Namespace) -> int:
    from pathlib import Path

    from actionpp.atomic import OwnershipError
    from actionpp.cli import UsageError
    from actionpp.data import phantom
    from actionpp.data.spec import dataset_spec

    spec = dataset_spec(args.kind)
    least = spec.phantom.min_patients
    if args.patients is not None and args.patients < least:
        raise UsageError(f"--patients: {spec.article_title} phantom needs at least {least} patients "
                         f"({'/'.join(spec.splits)}), got {args.patients}")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    if args.out is not None:
        out = Path(args.out)
        if out.exists() or out.is_symlink():
            raise OwnershipError(f"{out}: exists; choose a new folder (data phantom --out writes only a folder it "
                                 "creates)")
        n = args.patients if args.patients is not None else phantom.default_patients(args.kind)
        s = phantom.generate_into(out, kind=args.kind, preset=args.preset, patients=n, seed=args.seed,
                                  nifti=args.nifti)
    else:
        import time

        t0 = time.perf_counter()
        root = phantom.ensure_phantom(args.kind, args.preset, args.patients, args.seed, nifti=args.nifti)
        from actionpp.data.check import check_dataset

        s = check_dataset(root)
        s["seconds_total"] = round(time.perf_counter() - t0, 2)
    _print(s, args.json)
    return 0


def _check(args: argparse.Namespace) -> int:
    from pathlib import Path

    from actionpp.data.check import check_dataset, verify_manifest

    s = check_dataset(args.root, partial=args.partial)  # a DataError is one line, exit 1 (actionpp.cli)
    if args.sha256:
        s["sha256_verified_files"] = verify_manifest(Path(args.root) / "SHA256SUMS")
    _print(s, args.json)
    return 0


def _pack(args: argparse.Namespace) -> int:
    from actionpp.data.pack import pack_dataset

    _print(pack_dataset(args.root, args.out, overwrite=args.overwrite, leave_out=args.leave_out), False)
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from actionpp.data.acdc import prepare_acdc

    _print(prepare_acdc(args.raw, args.out, overwrite=args.overwrite), False)
    return 0
