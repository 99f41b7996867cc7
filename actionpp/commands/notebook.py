"""``actionpp notebook run|check|strip``: strict notebook execution and stored-notebook hygiene.

Examples::

    actionpp notebook run notebooks/01_class_centers.ipynb --profile smoke
    actionpp notebook run notebooks/02_temperature_schedule.ipynb -p TAU_MIN=0.05 -p INTERACTIVE=false --html
    actionpp notebook check notebooks/*.ipynb
    actionpp notebook strip notebooks/03_contrastive_losses.ipynb

``run`` is papermill with the parameter contract enforced (unknown names and wrong
types are errors before anything executes); ``-p NAME=VALUE`` values are read as
YAML (``3``, ``0.5``, ``true``, ``[4, 2]``, ``cuda``). The executed copy goes to
``runs/notebooks/<profile or default>/<name>.ipynb`` unless ``--out`` is given. An
executed copy already there (and its ``--html`` page) is replaced only with ``--overwrite``;
any other file there (a stored notebook, your own file) is never replaced.

Exit codes: 0 success; 1 the notebook failed (the message names the cell and the
partially executed copy) or ``check`` found problems; 2 bad parameters or arguments,
or an output path the command may not write (actionpp/cli.py maps them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "notebook",
        help="run a notebook strictly (papermill + type-checked parameters), check or strip stored notebooks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    r = sub.add_parser("run", help="execute a notebook with a profile and overrides")
    r.add_argument("notebook", type=Path)
    r.add_argument("--profile", default=None, help="smoke, lab, paper_acdc or paper_la (notebooks/params/<profile>/)")
    r.add_argument(
        "-p", "--param", action="append", default=[], metavar="NAME=VALUE", help="override (YAML value); repeatable"
    )
    r.add_argument("--out", type=Path, default=None, help="executed notebook path")
    r.add_argument("--overwrite", action="store_true",
                   help="replace an executed notebook (and its --html page) already at the output path")
    r.add_argument("--html", action="store_true", help="also write an HTML export next to the executed notebook")
    r.add_argument("--timeout", type=float, default=None, help="per-cell limit in seconds")
    r.add_argument("--progress", action="store_true", help="show papermill's progress bar")
    c = sub.add_parser("check", help="stored notebooks: stripped, one parameters cell, parseable parameters")
    c.add_argument("notebooks", type=Path, nargs="+")
    s = sub.add_parser("strip", help="remove outputs and run metadata in place (tags are kept)")
    s.add_argument("notebooks", type=Path, nargs="+")
    p.set_defaults(func=_main)


def _parse_overrides(items: list[str]) -> dict:
    from actionpp.cli import UsageError
    from actionpp.config import ConfigError, safe_yaml

    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"-p expects NAME=VALUE, got {item!r}")
        try:
            out[name.strip()] = safe_yaml(value, f"-p {name.strip()}") if value.strip() else ""
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
    return out


def _require_notebook(path: Path) -> None:
    """:class:`~actionpp.cli.UsageError` naming ``path`` unless it is a notebook file."""
    import nbformat

    from actionpp.cli import UsageError

    if not path.is_file():
        raise UsageError(f"{path}: no such notebook")
    try:
        nbformat.read(path, as_version=4)
    except Exception as exc:  # noqa: BLE001 - nbformat raises several kinds for a file that is not a notebook
        raise UsageError(f"{path}: not a notebook ({' '.join(str(exc).split())[:120]})") from None


def _main(args: argparse.Namespace) -> int:
    from actionpp import notebook as nbx
    from actionpp.cli import UsageError

    if args.action in ("strip", "check"):
        # every path a notebook, before anything is rewritten (strip rewrites in place)
        for nb in args.notebooks:
            _require_notebook(nb)
    if args.action == "strip":
        for nb in args.notebooks:
            nbx.strip_outputs(nb)
            print(f"stripped {nb}")
        return 0
    if args.action == "check":
        bad = 0
        for nb in args.notebooks:
            problems = list(nbx.stripped_problems(nb))
            try:
                nbx.parameters_of(nb)
            except nbx.ParameterError as exc:
                problems.append(str(exc))
            for prob in problems:
                print(f"{nb}: {prob}", file=sys.stderr)
            bad += bool(problems)
        print(f"{len(args.notebooks) - bad} of {len(args.notebooks)} notebook(s) clean")
        return 1 if bad else 0
    params = _parse_overrides(args.param)
    if not args.notebook.is_file():
        raise UsageError(f"{args.notebook}: no such notebook")
    if args.timeout is not None and not args.timeout > 0:
        raise UsageError(f"--timeout must be > 0 seconds, got {args.timeout}")
    from actionpp.notebook.run import check_output
    from actionpp.paths import runs_dir

    out = args.out or runs_dir() / "notebooks" / (args.profile or "default") / args.notebook.name
    if out.resolve() == args.notebook.resolve():
        raise UsageError(f"{out}: is the source notebook; choose another --out")
    check_output(out, overwrite=args.overwrite, html=args.html)  # before anything runs (actionpp.atomic's rule)
    executed = nbx.execute(args.notebook, out, params, profile=args.profile, progress=args.progress,
                           timeout=args.timeout)  # ParameterError: exit 2, NotebookFailed: exit 1 (actionpp.cli)
    print(f"executed {executed}")
    if args.html:
        print(f"html     {nbx.export_html(executed, executed.with_suffix('.html'))}")
    return 0
