"""Replication grids on a SLURM cluster: one array job of the unfinished runs, then a tables job.

``actionpp replicate GRID --slurm [--partition P] [--gpus-per-run N] [--time HH:MM:SS] [--max-parallel K]
[--sbatch-arg=--OPTION ...] [--dry-run]`` renders the batch-script template :data:`TEMPLATE`
(``slurm_array.sbatch`` next to this file) twice and submits both scripts with ``sbatch``:

- the array job: one task per run to submit, the task id being the run's position in the grid sorted by
  run id (``Run.index``). Task ``i`` runs ``actionpp replicate GRID --out OUT --shard i/N`` (N = all the
  grid's runs), which selects that one run and runs exactly what the local runner runs: the run folder
  ``OUT/<run id>``, its lock and its resume (:func:`actionpp.replicate.run.execute_run`). ``--requeue``
  lets SLURM queue a preempted task again, and the restarted task resumes the same way.
- the tables job, ``--dependency=afterany:<array job>``: ``actionpp replicate GRID --out OUT --report-only``
  (with ``--publish DIR [--docs FILE]`` when given), whatever state the tasks ended in.

Not submitted: runs already finished (unless ``--force``), runs still pending or running in an array job
that an earlier submission into the same OUT recorded (``OUT/slurm/submissions.json``, checked with
``squeue``), and runs whose folder holds a finished run with other parameters (``stale``: reported, exit 1,
as the local runner does). So after a preemption, a time limit or a ``scancel``, the same command submits
what is left, and those runs resume from their checkpoints. The tasks read the grid file when they start:
edit it only while none of its tasks is queued.

``OUT/slurm/`` holds the submitted scripts (``array.sbatch``, ``tables.sbatch``: the latest submission),
the task logs (``<array job>_<task>.out``, appended to across requeues), the tables job's log and the
submission record. The scheduler is SLURM's own: ``sbatch`` submits, ``squeue`` and ``sacct`` follow;
there is no queue of ours.

Before anything is submitted, the grid's parameters are checked against the notebooks (as the local runner
checks them) and OUT (and ``--publish DIR``) against the runner's ownership rule; OUT then gets the runner's
marker, so the tasks find it claimed. Errors: a bad option, grid or parameter, a foreign OUT, a template
without ``{{command}}``, ``sbatch`` missing or refusing the array job: one ``error: ...`` line and exit 2,
nothing submitted. The tables job refused after the array job was submitted: exit 1, with the command
that writes the tables by hand.

Taught in notebooks/06_replication_report.ipynb.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actionpp.atomic import atomic_write_text, utc_now
from actionpp.replicate.grid import Run, grid_fingerprint
from actionpp.replicate.run import run_status

__all__ = [
    "TEMPLATE",
    "SlurmError",
    "SlurmOptions",
    "Plan",
    "array_spec",
    "render",
    "queued_runs",
    "select_runs",
    "sbatch",
    "main",
]

TEMPLATE = Path(__file__).with_name("slurm_array.sbatch")
FOLDER = "slurm"  # OUT/slurm/: scripts, task logs, the submission record
RECORD = "submissions.json"
TABLES_TIME = "00:30:00"  # the tables job reads the runs' small files (and plots curves with --publish)
BATCHNORM_MINUTES = 3  # per run, when --publish runs a grid's batchnorm_check (about 1-2 min of one CPU core)
_TIME_RE = re.compile(r"(\d+-)?\d{1,3}:\d{2}:\d{2}")
_PLACEHOLDER_RE = re.compile(r"\{\{(\w+)\}\}")
_OWN_OPTIONS = ("--array", "--dependency", "-a", "-d")  # the mechanism itself: set here, not by --sbatch-arg


class SlurmError(RuntimeError):
    """``sbatch`` or ``squeue`` is missing or failed; the message names the command and what it printed."""


@dataclass(frozen=True)
class SlurmOptions:
    """What becomes ``#SBATCH`` lines: ``--partition``, ``--gres=gpu:N`` (none for 0), ``--time``, the
    array's ``%K`` and one line per extra sbatch option."""

    partition: str | None = None
    gpus_per_run: int = 1
    time: str | None = None
    max_parallel: int | None = None
    sbatch_args: tuple[str, ...] = ()

    def check(self) -> None:
        """Raises ValueError naming the option when a value cannot go into an ``#SBATCH`` line."""
        if self.partition is not None and (not self.partition or any(c.isspace() for c in self.partition)):
            raise ValueError(f"--partition must be one partition name, got {self.partition!r}")
        if self.gpus_per_run < 0:
            raise ValueError(f"--gpus-per-run must be >= 0 (0: CPU only), got {self.gpus_per_run}")
        if self.time is not None and not _TIME_RE.fullmatch(self.time):
            raise ValueError(f"--time must look like HH:MM:SS (or D-HH:MM:SS), got {self.time!r}")
        if self.max_parallel is not None and self.max_parallel < 1:
            raise ValueError(f"--max-parallel must be >= 1, got {self.max_parallel}")
        for arg in self.sbatch_args:
            if not arg.startswith("-") or "\n" in arg or "\r" in arg:
                raise ValueError(f"--sbatch-arg takes one sbatch option written with '=', e.g. "
                                 f"--sbatch-arg=--mem=32G, got {arg!r}")
            name = re.split(r"[=\s]", arg, maxsplit=1)[0]
            if name in _OWN_OPTIONS or (not arg.startswith("--") and arg[:2] in _OWN_OPTIONS):
                raise ValueError(f"--sbatch-arg {arg!r}: {name} is set by --slurm itself (the array of the runs "
                                 "to submit, the tables job's dependency)")


def array_spec(indices: Sequence[int], max_parallel: int | None = None) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2,5,7-8"`` (then ``%K`` with ``max_parallel``): sbatch's ``--array``."""
    if not indices:
        raise ValueError("an array job needs at least one task")
    xs = sorted(set(indices))
    parts: list[str] = []
    start = prev = xs[0]
    for x in [*xs[1:], None]:
        if x is not None and x == prev + 1:
            prev = x
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if x is not None:
            start = prev = x
    return ",".join(parts) + (f"%{max_parallel}" if max_parallel else "")


def render(template: str, values: Mapping[str, str], source: str | Path = TEMPLATE) -> str:
    """``template`` with every ``{{name}}`` replaced by ``values[name]``.

    Raises ValueError naming ``source`` for a name it does not know, or when ``{{command}}`` is missing
    (a job that would run nothing)."""
    names = set(_PLACEHOLDER_RE.findall(template))
    unknown = sorted(names - set(values))
    if unknown:
        raise ValueError(f"{source}: unknown placeholder(s) {['{{' + n + '}}' for n in unknown]}; "
                         f"known: {['{{' + n + '}}' for n in values]}")
    if "command" not in names:
        raise ValueError(f"{source}: the template has no {{{{command}}}} line, so its jobs would run nothing")
    return _PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], template)


def _sbatch_lines(options: Sequence[str]) -> str:
    return "\n".join(f"#SBATCH {o}" for o in options)


@dataclass(frozen=True)
class Plan:
    """One submission: the grid (as the tasks will name it), the runs the array job runs, the options.

    ``grid_arg`` and ``out_arg`` are written into the scripts as given (the scripts ``cd`` to
    ``workdir`` first), so a relative path means what it meant where the command was typed."""

    grid_name: str
    grid_arg: str
    out_arg: str
    out: Path  # resolved: the logs' folder and the run folders
    n_runs: int  # every run of the grid: the N of --shard i/N
    submit: tuple[Run, ...]
    options: SlurmOptions = field(default_factory=SlurmOptions)
    workdir: Path = field(default_factory=Path.cwd)
    python: str = sys.executable
    force: bool = False
    publish: str | None = None
    docs: str | None = None
    fingerprint: str = ""  # grid_fingerprint of the runs at submission: a task refuses a grid edited since
    batchnorm_check: bool = False  # the grid has a batchnorm_check block: --publish checks every run

    def tables_time(self) -> str:
        """The tables job's time limit: :data:`TABLES_TIME`, plus :data:`BATCHNORM_MINUTES` per run of the grid
        when it publishes a grid with a BatchNorm check (computed there, once per run)."""
        if not (self.batchnorm_check and self.publish is not None):
            return TABLES_TIME
        h, m, sec = (int(x) for x in TABLES_TIME.split(":"))
        minutes = h * 60 + m + BATCHNORM_MINUTES * self.n_runs
        return f"{minutes // 60}:{minutes % 60:02d}:{sec:02d}"

    def _actionpp(self) -> str:
        return (f"exec {shlex.quote(self.python)} -m actionpp.cli replicate {shlex.quote(self.grid_arg)} "
                f"--out {shlex.quote(self.out_arg)}")

    def _partition(self) -> list[str]:
        return [f"--partition={self.options.partition}"] if self.options.partition else []

    def array_script(self, template: str, source: str | Path = TEMPLATE) -> str:
        """The array job's script: a task per run in :attr:`submit`, task id = ``Run.index``."""
        o = self.options
        lines = [
            f"--job-name=actionpp-{self.grid_name}",
            f"--array={array_spec([r.index for r in self.submit], o.max_parallel)}",
            f"--output={self.out / FOLDER}/%A_%a.out",
            "--open-mode=append",
            "--requeue",
            *self._partition(),
            *([f"--time={o.time}"] if o.time else []),
            *([f"--gres=gpu:{o.gpus_per_run}"] if o.gpus_per_run > 0 else []),
            *o.sbatch_args,
        ]
        about = [f"# This job: the array of grid {self.grid_name}, {len(self.submit)} of its {self.n_runs} runs",
                 "# (task i = the run at position i of the grid sorted by run id):"]
        about += [f"#   task {r.index:>3}: {r.run_id}" for r in sorted(self.submit, key=lambda r: r.index)]
        command = (f'{self._actionpp()} --shard "${{SLURM_ARRAY_TASK_ID}}/{self.n_runs}"'
                   f" --expect-grid {self.fingerprint}")
        if self.force:
            command += " --force"
        return render(template, {"sbatch": _sbatch_lines(lines), "about": "\n".join(about),
                                 "workdir": shlex.quote(str(self.workdir)), "command": command}, source)

    def tables_script(self, array_job: str, template: str, source: str | Path = TEMPLATE) -> str:
        """The tables job's script, run once array job ``array_job`` has ended (``afterany``)."""
        lines = [
            f"--job-name=actionpp-{self.grid_name}-tables",
            f"--dependency=afterany:{array_job}",
            f"--output={self.out / FOLDER}/%j-tables.out",
            *self._partition(),
            f"--time={self.tables_time()}",
            *self.options.sbatch_args,
        ]
        about = (f"# This job: the tables of grid {self.grid_name} once array job {array_job} has ended, whatever\n"
                 "# state its tasks ended in (runs without a done marker are left out of the tables).")
        command = f"{self._actionpp()} --report-only"
        if self.publish is not None:
            command += f" --publish {shlex.quote(self.publish)}"
            if self.docs is not None:
                command += f" --docs {shlex.quote(self.docs)}"
        return render(template, {"sbatch": _sbatch_lines(lines), "about": about,
                                 "workdir": shlex.quote(str(self.workdir)), "command": command}, source)


# --------------------------------------------------------------------------- the scheduler's commands


def _which(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        raise SlurmError(f"{name} not found on PATH: --slurm submits through SLURM's own commands (run it "
                         "where sbatch works, e.g. the cluster's login node; --dry-run prints the scripts anywhere)")
    return exe


def _run(argv: list[str], what: str) -> str:
    exe = _which(argv[0])
    try:
        proc = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{argv[0]} {what}: no answer from SLURM within 120 s") from None
    if proc.returncode != 0:
        said = " ".join((proc.stderr.strip() or proc.stdout.strip()).split()) or f"exit code {proc.returncode}"
        raise SlurmError(f"{argv[0]} {what}: {said}")
    return proc.stdout


def sbatch(script: Path) -> str:
    """Submits ``script`` (``sbatch --parsable``) and returns the job id; SlurmError with sbatch's message."""
    answer = _run(["sbatch", "--parsable", str(script)], f"refused {script}").strip()
    job = answer.split(";")[0]
    if not job.isdigit():
        raise SlurmError(f"sbatch {script}: unexpected answer {answer!r} (expected a job id)")
    return job


def _read_record(out: Path) -> list[dict[str, Any]]:
    path = out / FOLDER / RECORD
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SlurmError(f"{path}: unreadable submission record ({exc})") from None
    return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []


def queued_runs(out: Path) -> dict[str, str]:
    """Run id -> ``"<array job>_<task>"`` for the tasks of this OUT's earlier submissions that ``squeue``
    still lists (pending, running, requeued). Empty without a record; SlurmError when squeue fails."""
    record = _read_record(out)
    if not record:
        return {}
    tasks = {str(s.get("array")): s.get("tasks") or {} for s in record}
    listing = _run(["squeue", "--me", "--noheader", "--array", "--format=%F %K %T"], "(listing your jobs)")
    queued: dict[str, str] = {}
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in tasks and parts[1] in tasks[parts[0]]:
            queued[str(tasks[parts[0]][parts[1]])] = f"{parts[0]}_{parts[1]}"
    return queued


def select_runs(runs: Sequence[Run], out: Path, queued: Mapping[str, str], force: bool = False) -> dict[str, list[Run]]:
    """The grid's runs by what --slurm does with them: ``submit``, ``finished`` (done, not submitted
    unless ``force``), ``queued`` (a task of an earlier submission still has it), ``stale`` (its folder
    holds a finished run with other parameters: not submitted unless ``force``)."""
    groups: dict[str, list[Run]] = {"submit": [], "finished": [], "queued": [], "stale": []}
    for r in runs:
        status = run_status(r, out)
        if r.run_id in queued:
            groups["queued"].append(r)
        elif status in ("done", "stale") and not force:
            groups["finished" if status == "done" else "stale"].append(r)
        else:
            groups["submit"].append(r)
    return groups


# --------------------------------------------------------------------------- the command


_OPTION_NAMES = {"partition": "--partition", "gpus_per_run": "--gpus-per-run", "time": "--time",
                 "max_parallel": "--max-parallel", "sbatch_arg": "--sbatch-arg"}


def _options(args: argparse.Namespace) -> SlurmOptions:
    given = [flag for key, flag in _OPTION_NAMES.items() if getattr(args, key, None) not in (None, [])]
    if not args.slurm:
        raise ValueError(f"{', '.join(given)} {'goes' if len(given) == 1 else 'go'} only with --slurm")
    if args.shard:
        raise ValueError("--shard does not go with --slurm: the array job gives every run its own task "
                         "(--max-parallel K limits how many run at once)")
    if args.jobs != 1:
        raise ValueError("--jobs does not go with --slurm: one run per array task (--max-parallel K limits how "
                         "many tasks run at once)")
    if args.report_only:
        raise ValueError("--report-only does not go with --slurm: the tables job writes the tables after the "
                         "array job; to write them now, leave --slurm out")
    if args.docs is not None and args.publish is None:
        raise ValueError("--docs goes with --publish")
    opts = SlurmOptions(
        partition=args.partition,
        gpus_per_run=1 if args.gpus_per_run is None else args.gpus_per_run,
        time=args.time,
        max_parallel=args.max_parallel,
        sbatch_args=tuple(args.sbatch_arg or ()),
    )
    opts.check()
    return opts


def options_given(args: argparse.Namespace) -> bool:
    """Whether the command line asks for SLURM (``--slurm`` or one of its options)."""
    return bool(getattr(args, "slurm", False)) or any(
        getattr(args, key, None) not in (None, []) for key in _OPTION_NAMES)


def main(args: argparse.Namespace) -> int:
    """``actionpp replicate ... --slurm``: see the module docstring. Exit 0 when submitted (or nothing is
    left to submit), 1 when a run was left out as stale or the tables job was refused, 2 for bad options,
    a bad grid or template, or an array job sbatch refused (nothing submitted)."""
    from actionpp.paths import runs_dir
    from actionpp.replicate.grid import expand, load_grid
    from actionpp.replicate.run import check_out, check_run_parameters, claim_out

    try:
        opts = _options(args)
        grid = load_grid(args.grid)
        runs = expand(grid)
        check_run_parameters(runs)  # a typo in the grid fails here, not in every task of the array
        out = (args.out or runs_dir() / "replicate" / grid.name).resolve()
        if any(c.isspace() for c in str(out)):
            raise ValueError(f"--out {out}: a folder whose path holds a space cannot go into an #SBATCH --output "
                             "line; choose another")
        template = TEMPLATE.read_text()
    except (ValueError, OSError) as e:  # GridError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        queued = queued_runs(out)
    except SlurmError as e:
        print(f"warning: {e}; runs still queued by an earlier submission may be submitted twice (their run locks "
              "keep the two tasks apart)", file=sys.stderr)
        queued = {}
    groups = select_runs(runs, out, queued, args.force)
    plan = Plan(grid.name, str(args.grid), str(args.out) if args.out is not None else str(out), out, len(runs),
                tuple(groups["submit"]), opts, Path.cwd(), sys.executable, args.force,
                None if args.publish is None else str(args.publish), None if args.docs is None else str(args.docs),
                grid_fingerprint(runs), grid.batchnorm is not None)
    print(f"grid {grid.name}: {len(runs)} runs -> {out} (SLURM array: task i = the run at position i by run id)")
    group_of = {r.run_id: name for name, members in groups.items() for r in members}
    for r in sorted(runs, key=lambda r: r.index):
        what = {
            "submit": f"array task {r.index}",
            "finished": "finished: not submitted",
            "queued": f"still queued as {queued.get(r.run_id)}: not submitted",
            "stale": "STALE: not submitted (its folder holds a finished run with other parameters)",
        }[group_of[r.run_id]]
        print(f"  [{r.index:>3}] {r.run_id:<40} {what}")
    stale_rc = 1 if groups["stale"] else 0
    for r in groups["stale"]:
        print(f"FAILED {r.run_id}: {r.run_dir(out)} holds a finished run with different parameters; move it away "
              "or use another --out", file=sys.stderr)
    if not plan.submit:
        print(f"nothing to submit ({len(groups['finished'])} finished, {len(groups['queued'])} still queued); "
              f"the tables: actionpp replicate {args.grid} --out {plan.out_arg} --report-only")
        return 0 if args.dry_run else stale_rc
    try:
        array_text = plan.array_script(template)
        tables_preview = plan.tables_script("<array job id>", template)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    folder = out / FOLDER
    if args.dry_run:
        print(f"\n# ----- {folder / 'array.sbatch'} (--dry-run: not written, not submitted) -----")
        print(array_text, end="")
        print(f"\n# ----- {folder / 'tables.sbatch'} (--dry-run: not written, not submitted) -----")
        print(tables_preview, end="")
        return 0

    try:
        _which("sbatch")
        # the local runner's ownership rule, checked once here: a foreign --out (or --publish) is refused before
        # anything is submitted, and OUT holds the runner's marker before the first task starts
        check_out(out)
        if args.publish is not None:
            from actionpp.replicate.publish import check_publish

            check_publish(out, grid, args.publish, args.docs)
        claim_out(out, grid.name)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / "array.sbatch", array_text)
        array_job = sbatch(folder / "array.sbatch")
    except (SlurmError, ValueError) as e:  # OwnershipError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        record = _read_record(out)
    except SlurmError as e:  # already warned about above; a fresh record replaces it
        print(f"warning: {e}: replaced", file=sys.stderr)
        record = []
    entry: dict[str, Any] = {"array": array_job, "tables": None, "submitted": utc_now(),
                             "tasks": {str(r.index): r.run_id for r in plan.submit}}
    record.append(entry)
    atomic_write_text(folder / RECORD, json.dumps(record, indent=2))
    atomic_write_text(folder / "tables.sbatch", plan.tables_script(array_job, template))
    try:
        tables_job = sbatch(folder / "tables.sbatch")
    except SlurmError as e:
        print(f"error: array job {array_job} is submitted, but its tables job is not: {e}", file=sys.stderr)
        print(f"write the tables once the array job has ended: actionpp replicate {args.grid} --out {plan.out_arg} "
              "--report-only", file=sys.stderr)
        return 1
    entry["tables"] = tables_job
    atomic_write_text(folder / RECORD, json.dumps(record, indent=2))
    spec = array_spec([r.index for r in plan.submit], opts.max_parallel)
    print(f"submitted array job {array_job} ({len(plan.submit)} runs, tasks {spec}) and tables job {tables_job} "
          f"(afterany:{array_job})")
    print(f"  follow:  squeue -j {array_job},{tables_job}")
    print(f"           sacct -j {array_job},{tables_job} --format=JobID%16,JobName%40,State,Elapsed,ExitCode")
    print(f"  logs:    {folder}/{array_job}_<task>.out, {folder}/{tables_job}-tables.out")
    print(f"  cancel:  scancel {array_job} {tables_job}")
    print("  after a preemption, a time limit or a cancel, type the same command again: finished runs are not "
          "submitted again, interrupted ones resume from their checkpoints")
    return stale_rc
