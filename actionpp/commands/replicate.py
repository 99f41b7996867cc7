"""``actionpp replicate GRID.yaml``: run a grid of notebook runs and write the results tables.

Examples::

    actionpp replicate notebooks/grids/phantom_small.yaml --jobs 2
    actionpp replicate notebooks/grids/acdc_paper.yaml --dry-run
    actionpp replicate notebooks/grids/acdc_paper.yaml --shard 3/8 --out runs/acdc_paper
    actionpp replicate notebooks/grids/acdc_paper.yaml --out runs/acdc_paper --report-only
    actionpp replicate notebooks/grids/acdc_paper.yaml --out runs/acdc_paper --restore-from results/acdc_paper

On a SLURM cluster, ``--slurm`` submits the grid as one array job (task i runs the run at position
i by run id, through ``--shard i/N``) and a tables job after it; ``--dry-run`` prints both scripts
(:mod:`actionpp.replicate.slurm`; README, "Grids on a SLURM cluster")::

    actionpp replicate notebooks/grids/acdc_paper.yaml --out runs/acdc_paper --slurm --partition gpu --time 12:00:00

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
    p.add_argument("--expect-grid", default=None, metavar="FINGERPRINT", help=argparse.SUPPRESS)  # --slurm's tasks
    p.add_argument("--dry-run", action="store_true", help="list the runs with their status and parameters; run nothing")
    p.add_argument(
        "--report-only", action="store_true", help="only (re)write results.csv and results.md from finished runs"
    )
    p.add_argument("--force", action="store_true", help="re-run finished runs too (their results are overwritten)")
    p.add_argument("--publish", type=Path, default=None, metavar="DIR",
                   help="also copy the finished runs' small files (metrics, config, log) with the tables, a "
                        "validation-curve plot and a README into DIR (e.g. results/<grid name>)")
    p.add_argument("--restore-from", type=Path, default=None, metavar="DIR",
                   help="first copy into --out every run that DIR (the grid's published folder, e.g. "
                        "results/<grid name>) holds as finished and --out lacks, so only the rest trains: for a "
                        "grid folder that was lost (scratch purged, new machine); nothing in --out is replaced")
    p.add_argument("--docs", type=Path, default=None, metavar="FILE",
                   help="with --publish: rewrite the grid's section of this Markdown file (e.g. docs/results.md)")
    cluster = p.add_argument_group(
        "SLURM", "--slurm submits the grid as one array job (a task per unfinished run) and a tables job after it "
        "(actionpp/replicate/slurm.py; the batch script: actionpp/replicate/slurm_array.sbatch)")
    cluster.add_argument("--slurm", action="store_true",
                         help="submit through sbatch instead of running here; with --dry-run print the scripts")
    cluster.add_argument("--partition", default=None, metavar="P", help="#SBATCH --partition=P")
    cluster.add_argument("--gpus-per-run", type=int, default=None, metavar="N",
                         help="#SBATCH --gres=gpu:N for each array task (default 1; 0: CPU only)")
    cluster.add_argument("--time", default=None, metavar="HH:MM:SS", help="time limit of each array task")
    cluster.add_argument("--max-parallel", type=int, default=None, metavar="K", help="at most K tasks at once")
    cluster.add_argument("--sbatch-arg", action="append", default=[], metavar="--OPTION=VALUE",
                         help="one more #SBATCH line, e.g. --sbatch-arg=--mem=32G (repeatable)")
    p.set_defaults(func=_dispatch)


def _dispatch(args: argparse.Namespace) -> int:
    """--slurm (or one of its options) goes to actionpp.replicate.slurm; everything else runs here."""
    from actionpp.cli import UsageError
    from actionpp.replicate import slurm

    if slurm.options_given(args):
        if args.restore_from is not None:
            raise UsageError("--restore-from copies runs on this machine: restore first (add --report-only to train "
                             "nothing), then submit with --slurm")
        return slurm.main(args)
    return _main(args)


def _main(args: argparse.Namespace) -> int:
    from actionpp import replicate as rp
    from actionpp.cli import UsageError
    from actionpp.paths import runs_dir
    from actionpp.replicate.run import check_run_parameters

    grid = rp.load_grid(args.grid)  # a GridError is one line, exit 2 (actionpp.cli)
    runs = rp.expand(grid)
    selected = runs
    if args.shard:
        try:
            i, n = rp.parse_shard(args.shard)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        selected = rp.shard(runs, i, n)
    if args.jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {args.jobs}")
    if args.docs is not None and args.publish is None:
        raise UsageError("--docs writes the grid's section from the published folder: it needs --publish DIR")
    if args.report_only and args.force:
        raise UsageError("--force re-runs finished runs; --report-only runs nothing: give one of them")
    check_run_parameters(runs)  # a typo'd axis or a mistyped value: before anything starts, dry run included
    if args.expect_grid is not None and args.expect_grid != rp.grid_fingerprint(runs):
        raise UsageError(f"{args.grid}: the grid changed since this job was submitted (its runs or their parameters "
                         "differ), so shard numbers no longer name the same runs; submit it again")
    out = (args.out or runs_dir() / "replicate" / grid.name).resolve()
    shard_txt = f" (shard {args.shard}: {len(selected)} runs)" if args.shard else ""
    print(f"grid {grid.name}: {len(runs)} runs{shard_txt} -> {out}")
    from actionpp.replicate.run import check_out, claim_out

    if args.restore_from is not None and args.dry_run:  # read-only: what a restore would copy
        from actionpp.replicate.restore import restorable

        check_out(out)
        todo = restorable(args.restore_from, out, selected, grid)
        print(f"would restore {len(todo)} finished runs from {args.restore_from} (a dry run copies nothing; the "
              "estimate below still counts them as to go)")
    if not args.dry_run:
        # every path the command will write is checked before the first byte (actionpp.atomic's rule); a restore
        # checks its source before it writes (restore.restorable)
        check_out(out)
        if args.publish is not None:
            from actionpp.replicate.publish import check_publish, publish

            check_publish(out, grid, args.publish, args.docs)
        if args.restore_from is not None:
            from actionpp.replicate.restore import restorable, restore

            restorable(args.restore_from, out, selected, grid)
        claim_out(out, grid.name)
        if args.restore_from is not None:
            done = restore(args.restore_from, out, selected, grid)
            print(f"restored {len(done)} finished runs from {args.restore_from} (their checkpoints were not "
                  "published: a restored run keeps its published scores, BatchNorm check and embedding sample)")
    if not args.report_only:
        from actionpp.replicate.eta import estimate

        print(estimate(selected, out, args.jobs).text(), flush=True)

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
    mine = problems
    if args.shard:  # a shard (a SLURM array task) answers for its own runs, not for the rest of the grid
        mine = []
        rp.collect(out, selected, mine)
    csv_path, md_path = rp.write_results(out, records, title=f"{grid.name}: results")
    print(f"results of {len(records)}/{len(runs)} finished runs: {csv_path}, {md_path}")
    for problem in problems:
        print(f"left out of the tables (run it again): {problem}", file=sys.stderr)
    if args.publish is not None:
        flags = " --report-only" if args.report_only else f" --jobs {args.jobs}"
        command = f"actionpp replicate {args.grid}{flags} --out {args.out or out} --publish {args.publish}"
        if args.docs is not None:
            command += f" --docs {args.docs}"
        dest = publish(out, runs, grid, args.publish, command=command, docs=args.docs)
        print(f"published {len(records)} runs to {dest}")
    if outcomes:
        print(rp.summary(outcomes))
    return 1 if mine or any(o.status in ("failed", "stale", "busy") for o in outcomes) else 0

