"""``actionpp replicate GRID.yaml``: run a grid of notebook runs and write the results tables.

Examples::

    actionpp replicate notebooks/grids/phantom_small.yaml --jobs 2
    actionpp replicate notebooks/grids/acdc_paper.yaml --dry-run
    actionpp replicate notebooks/grids/acdc_paper.yaml --shard 3/8 --out runs/acdc_paper
    actionpp replicate notebooks/grids/acdc_paper.yaml --out runs/acdc_paper --report-only

On a SLURM cluster, one array job spreads a grid over 8 GPUs (each task runs its shard;
finished runs are skipped on a re-submit)::

    sbatch --array=0-7 --gres=gpu:1 --wrap \\
        'actionpp replicate notebooks/grids/acdc_paper.yaml --shard $SLURM_ARRAY_TASK_ID/8 --out runs/acdc_paper'

Exit code: 0 when every selected run finished (or was already finished), 1 when any failed
(each failure is listed with its error and the executed notebook holding the traceback) or
was left alone because another runner is working in its folder (``busy``), 2 for a bad grid
or bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "replicate",
        help="run a grid of notebook runs (papermill) and write results.csv / results.md",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("grid", type=Path, help="grid YAML (see notebooks/grids/)")
    p.add_argument("--jobs", type=int, default=1, help="runs at once (one per GPU when GPUs are visible); default 1")
    p.add_argument(
        "--shard", default=None, metavar="i/n", help="run only shard i of n (0-based), e.g. for a SLURM array"
    )
    p.add_argument("--out", type=Path, default=None, help="output folder (default: runs/replicate/<grid name>)")
    p.add_argument("--dry-run", action="store_true", help="list the runs with their status and parameters; run nothing")
    p.add_argument(
        "--report-only", action="store_true", help="only (re)write results.csv and results.md from finished runs"
    )
    p.add_argument("--force", action="store_true", help="re-run finished runs too (their results are overwritten)")
    p.add_argument("--publish", type=Path, default=None, metavar="DIR",
                   help="also copy the finished runs' small files (metrics, config, log) with the tables, a "
                        "validation-curve plot and a README into DIR (e.g. results/<grid name>)")
    p.add_argument("--docs", type=Path, default=None, metavar="FILE",
                   help="with --publish: rewrite the grid's section of this Markdown file (e.g. docs/results.md)")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from actionpp import replicate as rp
    from actionpp.paths import runs_dir

    try:
        grid = rp.load_grid(args.grid)
        runs = rp.expand(grid)
        selected = runs
        if args.shard:
            i, n = rp.parse_shard(args.shard)
            selected = rp.shard(runs, i, n)
        if args.jobs < 1:
            raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    except ValueError as e:  # GridError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = (args.out or runs_dir() / "replicate" / grid.name).resolve()
    shard_txt = f" (shard {args.shard}: {len(selected)} runs)" if args.shard else ""
    print(f"grid {grid.name}: {len(runs)} runs{shard_txt} -> {out}")

    if args.dry_run:
        print(
            f"  [shard key] run id  status  parameters of {grid.notebooks[0].stem} (profile {grid.profile}; OUT_DIR "
            f"= the run folder)"
        )
        from actionpp.replicate.run import run_state

        for r in selected:
            shown = {k: v for k, v in r.parameters[0].items() if k != "OUT_DIR"}
            status, problem = run_state(r, out)
            print(f"  [{r.index:>3}] {r.run_id:<40} {status:<8} {shown}")
            if problem:
                print(f"        will run again: {problem}")
        return 0

    outcomes: list = []
    if not args.report_only:
        outcomes = rp.run_grid(selected, out, jobs=args.jobs, force=args.force)
    problems: list[str] = []
    records = rp.collect(out, runs, problems)
    csv_path, md_path = rp.write_results(out, records, title=f"{grid.name}: results")
    print(f"results of {len(records)}/{len(runs)} finished runs: {csv_path}, {md_path}")
    for problem in problems:
        print(f"left out of the tables (run it again): {problem}", file=sys.stderr)
    if args.publish is not None:
        from actionpp.replicate.publish import publish

        flags = " --report-only" if args.report_only else f" --jobs {args.jobs}"
        command = f"actionpp replicate {args.grid}{flags} --out {args.out or out} --publish {args.publish}"
        if args.docs is not None:
            command += f" --docs {args.docs}"
        dest = publish(out, runs, grid, args.publish, command=command, docs=args.docs)
        print(f"published {len(records)} runs to {dest}")
    if outcomes:
        print(rp.summary(outcomes))
    return 1 if problems or any(o.status in ("failed", "stale", "busy") for o in outcomes) else 0
