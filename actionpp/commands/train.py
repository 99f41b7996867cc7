"""``actionpp train CONFIG [--set k=v ...] [--run-dir DIR] [--resume]``: the one training loop.

CONFIG is a bundled profile name (``actionpp train phantom_lab``) or a YAML path.
Under ``torchrun`` every process runs this command; rank 0 logs and checkpoints.
"""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a method from a config profile (supervised, mean_teacher, action, actionpp, ablations)",
        description="Train with the one ACTION++ training loop. A method is configuration: "
        "e.g. --set method.name=supervised. Profiles: acdc_paper, acdc_official, la_paper, la_official, "
        "acdc_lite, phantom_lab, phantom_smoke (or a YAML path).",
    )
    p.add_argument("config", help="profile name or YAML path")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting (dotted key, YAML value); repeatable")
    p.add_argument("--run-dir", default=None,
                   help="run directory (default: runs/<method>-<config hash>): new, empty or one train wrote; "
                        "one process trains in it at a time")
    p.add_argument("--resume", action="store_true",
                   help="continue from the run directory's last.pt (refused if it came from another config)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from actionpp.config import dump_yaml, load_config

    cfg = load_config(args.config, args.overrides)  # errors become one line and exit 2 (actionpp.cli)
    if args.print_config:
        print(dump_yaml(cfg), end="")
        return 0
    from actionpp.train import train

    result = train(cfg, run_dir=args.run_dir, resume=args.resume, progress=not args.no_progress)
    if result.is_main:
        if result.cached:
            print(f"note: {result.run_dir} already holds this finished run (config {result.config_hash}); nothing "
                  "was trained: the result below is the stored one (use another --run-dir to train again)",
                  file=sys.stderr)
        print(json.dumps(result.summary(), indent=2))
    return 0
