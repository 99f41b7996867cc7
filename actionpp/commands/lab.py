"""``actionpp lab``: the lab's exercises, and the student version of the notebooks.

Examples::

    actionpp lab list                              # every exercise: notebook, what it asks, checked against
    actionpp lab export --student runs/lab-student # notebooks with the solutions replaced by a stub
    actionpp lab export --student DIR notebooks/03_contrastive_losses.ipynb

The source notebooks (``notebooks/NN_*.ipynb``) hold the solutions between ``### BEGIN SOLUTION``
and ``### END SOLUTION`` in cells tagged ``solution`` (:mod:`actionpp.lab`); the student version
keeps everything else, outputs stripped, and the parameter profiles are copied next to it.
DIR is new, empty, or one an earlier export created; a second export replaces its files only with
``--overwrite``, and never a notebook the student edited since (nor anything it did not write).

Exit code: 0 done, 2 bad arguments, malformed solution markers or a refused DIR (nothing written).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "lab",
        help="list the lab's exercises; export the student version of the notebooks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="lab_command", metavar="ACTION")
    sub.required = True
    ls = sub.add_parser("list", help="every exercise with its notebook and what it is checked against")
    ls.set_defaults(func=_list)
    ex = sub.add_parser("export", help="write the student version (solutions replaced by a stub)")
    ex.add_argument("--student", type=Path, required=True, metavar="DIR", help="folder to write the notebooks into")
    ex.add_argument("notebooks", nargs="*", type=Path,
                    help="notebooks to export (default: every notebooks/NN_*.ipynb)")
    ex.add_argument("--no-params", action="store_true", help="do not copy the parameter profiles")
    ex.add_argument("--overwrite", action="store_true",
                    help="replace the files an earlier export wrote into DIR (never one edited since)")
    ex.set_defaults(func=_export)


def _list(args: argparse.Namespace) -> int:
    from actionpp import lab

    rows = lab.summary_table()
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        print(f"{r['name']:<{width}}  {r['asks for']}  (checked against {r['checked against']})")
    print(f"\n{len(rows)} exercises in {len({r['notebook'] for r in rows})} notebooks")
    return 0


def _export(args: argparse.Namespace) -> int:
    from actionpp import lab
    from actionpp.cli import UsageError
    from actionpp.paths import repo_root

    nbs = list(args.notebooks) or sorted((repo_root() / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    missing = [str(p) for p in nbs if not p.is_file()]
    if missing:
        raise UsageError(f"no such notebook: {', '.join(missing)}")
    # ExportError and OwnershipError: one line, exit 2 (actionpp.cli)
    written = lab.export_student(nbs, args.student, copy_params=not args.no_params, overwrite=args.overwrite)
    n_ex = sum(len(lab.exercises_of(p.stem)) for p in written)
    print(f"wrote {len(written)} student notebooks ({n_ex} exercises) to {args.student}")
    return 0
