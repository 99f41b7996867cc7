"""The ``actionpp`` command line.

Every module in :mod:`actionpp.commands` that defines ``register(subparsers)``
adds one sub-command; this file discovers and dispatches them, so a new command is
one new file, and it is the one place that turns the project's exceptions into exit
codes and one-line messages (``error: <what, naming the file or key>``):

====  ==========================================================================
code  meaning
====  ==========================================================================
0     done
1     the data, a run or a notebook failed (``DataError``, ``NotebookFailed``,
      ``RunMetricsError``, ``RunFileError`` (a run folder's own file is damaged),
      ``WriteError`` (disk full ...), an unexpected error)
2     bad usage or configuration: nothing was started (argparse, :class:`UsageError`,
      ``ConfigError``, ``ParameterError``, ``GridError``, ``CheckpointError``,
      ``RunDirError``, ``CentersError``, ``ExportError``, ``OwnershipError`` (a path
      the command did not write, or one of its own it was not asked to replace), a
      missing input file)
3     training diverged (``TrainingDiverged``: the message names the iteration and
      the last good checkpoint)
130   interrupted (Ctrl-C)
====  ==========================================================================

Commands raise; they do not print their own ``error:`` lines or choose exit codes (the one
exception: a command that reports several failures at the end, ``replicate``, returns 1).
The traceback of an error is printed only with ``--debug`` (or ``ACTIONPP_DEBUG=1``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import traceback
from collections.abc import Sequence

from actionpp import __version__


class UsageError(ValueError):
    """A bad combination or value of command-line arguments that argparse cannot express (exit 2)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="actionpp",
        description=(
            "ACTION++ teaching and replication kit: data (phantom, ACDC, LA), class centres, "
            "training, evaluation and papermill batch replication."
        ),
    )
    parser.add_argument("--version", action="version", version=f"actionpp {__version__}")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error (or ACTIONPP_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    import actionpp.commands as commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"actionpp.commands.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def exit_code(exc: BaseException) -> int:
    """The exit code of an exception that reached the command line (see the module docstring)."""
    from actionpp.atomic import OwnershipError, WriteError
    from actionpp.centers import CentersError
    from actionpp.checkpoint import CheckpointError
    from actionpp.config import ConfigError
    from actionpp.data.core import DataError
    from actionpp.lab.export import ExportError
    from actionpp.notebook import NotebookFailed, ParameterError
    from actionpp.replicate import GridError
    from actionpp.report import RunMetricsError
    from actionpp.runlog import RunFileError
    from actionpp.train import RunDirError, TrainingDiverged

    if isinstance(exc, TrainingDiverged):
        return 3
    if isinstance(exc, (DataError, NotebookFailed, RunMetricsError, RunFileError, WriteError)):
        return 1
    if isinstance(exc, (UsageError, ConfigError, ParameterError, GridError, CheckpointError, RunDirError,
                        CentersError, ExportError, OwnershipError, FileNotFoundError)):
        return 2
    return 1


def one_line(exc: BaseException) -> str:
    """``exc`` as one line: its message with line breaks folded (the type name when it has none)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False)) or os.environ.get("ACTIONPP_DEBUG", "") not in ("", "0")
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place errors become exit codes
        code = exit_code(exc)
        if debug:
            traceback.print_exc()
        known = code != 1 or type(exc).__module__.startswith("actionpp")
        hint = "" if known or debug else f" ({type(exc).__name__}; run with --debug for the traceback)"
        print(f"error: {one_line(exc)}{hint}", file=sys.stderr)
        return code
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
