"""The ``actionpp`` command line.

Every module in :mod:`actionpp.commands` that defines ``register(subparsers)``
adds one sub-command; this file only discovers and dispatches them, so a new
command is one new file.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from actionpp import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="actionpp",
        description=(
            "ACTION++ teaching and replication kit: data (phantom, ACDC, LA), class centres, "
            "training, evaluation and papermill batch replication."
        ),
    )
    parser.add_argument("--version", action="version", version=f"actionpp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    import actionpp.commands as commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"actionpp.commands.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
