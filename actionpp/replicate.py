"""Batch replication: expand a grid of notebook runs, execute them, tabulate the results.

Taught in notebooks/06_replication_report.ipynb.

A *grid* is a small YAML file (examples in ``notebooks/grids/``)::

    name: acdc_paper                 # free text, printed in the report
    notebooks: [04_train]            # run in this order inside one run directory
    profile: paper_acdc              # base parameters: notebooks/params/<profile>/<stem>.yaml
    parameters: {DATASET: acdc}      # fixed overrides for every run (all notebooks that have them)
    axes:                            # one run per combination (cartesian product)
      METHOD: [supervised, mean_teacher, action, actionpp]
      LABELLED_PATIENTS: [3, 7]
      SEED: [0, 1, 2]
    variants:                        # optional named parameter sets: one more axis
      - {name: ats_only, SAACL: false, ATS: true}

Instead of ``axes`` / ``variants``, a grid may list ``blocks``: each block has its
own ``axes``, ``variants`` and ``parameters`` (merged over the grid's), and the
runs are the blocks' runs in block order, so one file can hold a main table over
three seeds and its ablations over one, and order them (the first block runs
first)::

    blocks:
      - axes: {SEED: [0], METHOD: [supervised, actionpp]}
      - axes: {SEED: [0]}
        variants: [{name: no_ats, METHOD: actionpp, ATS: "off"}]
      - axes: {SEED: [1, 2], METHOD: [supervised, actionpp]}

A notebook entry is either a stem / path (``04_train``) or a mapping
``{notebook: 05_embeddings, parameters: {RUN_DIRS: ["{run_dir}"]}}``;
strings in a per-notebook mapping may use ``{run_dir}`` (the run directory) and
``{out}`` (the grid's output folder).

Each run gets a stable id built from its axis values in a canonical order
(method, variant, labelled patients, other axes by name, seed), e.g.
``method=actionpp_lab=3_seed=0``, so the id does not depend on how the YAML is
ordered. The run directory ``OUT/<run_id>/`` holds:

- ``<stem>.ipynb``: the executed notebook (kept on failure: it shows the traceback);
- ``metrics.json``: written by the first notebook's last cell (``OUT_DIR`` is the
  run directory); later notebooks get ``OUT_DIR = OUT/<run_id>/<stem>/``;
- ``done``: a JSON marker written atomically after every notebook of the run
  succeeded. A run with a ``done`` marker whose parameters match is skipped on
  re-run; a run without one (failed or interrupted) is executed again, and the
  training engine resumes from its own checkpoint inside the run directory;
- ``failed.json``: the error and the notebook path of the last failed attempt.

Sharding: ``--shard i/n`` takes the runs whose position in the grid *sorted by
run id* is ``i`` modulo ``n``; shards are disjoint, together complete, and the
split does not change when the YAML lists axes or values in another order.
A SLURM array spreads a grid over ``n`` machines with one line::

    sbatch --array=0-7 --gres=gpu:1 --wrap \
        'actionpp replicate notebooks/grids/acdc_paper.yaml --shard $SLURM_ARRAY_TASK_ID/8 --out runs/acdc_paper'

then ``actionpp replicate GRID --out DIR --report-only`` writes the tables once
every shard finished (each shard also writes them for what is finished so far).

Results: ``results.csv`` and ``results.md`` in ``OUT``: mean +- sample standard
deviation (ddof = 1; blank with one seed) over seeds for every group of runs that
share all axis values except ``SEED``, per class Dice / Jaccard (%) and HD95 /
ASD (in the unit the runs state, voxels by default), the paper's numbers beside
them (:data:`PAPER_RESULTS`), and the evaluation protocol read from the runs'
``metrics.json``.

The ``metrics.json`` a first notebook writes must contain (04_train does)::

    dataset: "acdc" | "la"            data: "phantom" | "shared" | folder name
    method: str                       labelled_patients: int    seed: int
    classes: [str, ...]               # foreground class names, in label order
    dice, jaccard, hd95, asd: {class: float}   # mean over evaluated volumes; Dice in [0, 1]
    protocol: {split, eval_split, labelled_slices, iterations, model_selection,
               empty_mask_policy, distance_units}
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import io
import itertools
import json
import math
import multiprocessing as mp
import os
import re
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import yaml

from actionpp.atomic import atomic_write_text
from actionpp.paths import repo_root

__all__ = [
    "GridError",
    "Grid",
    "NotebookStep",
    "Run",
    "RunOutcome",
    "RunRecord",
    "ResultRow",
    "PAPER_RESULTS",
    "PAPER_SOURCE",
    "METRIC_NAMES",
    "load_grid",
    "make_run_id",
    "profile_parameters",
    "expand",
    "shard",
    "parse_shard",
    "run_status",
    "run_grid",
    "execute_run",
    "visible_gpus",
    "summary",
    "collect",
    "aggregate",
    "paper_row",
    "results_csv",
    "results_markdown",
    "write_results",
    "run_metrics",
]

DONE = "done"
FAILED = "failed.json"
METRICS = "metrics.json"

# The four numbers per class that the paper reports, and whether they are shown in %.
METRIC_NAMES: tuple[str, ...] = ("dice", "jaccard", "hd95", "asd")
_PERCENT = {"dice": True, "jaccard": True, "hd95": False, "asd": False}
_LABEL = {"dice": "Dice", "jaccard": "Jaccard", "hd95": "HD95", "asd": "ASD"}

# Canonical order of well-known axes inside a run id, with their short names.
_ID_ORDER = ("METHOD", "VARIANT", "LABELLED_PATIENTS")
_SHORT = {"METHOD": "method", "VARIANT": "variant", "LABELLED_PATIENTS": "lab", "SEED": "seed"}

# ---------------------------------------------------------------------------------------------
# The paper's numbers
# ---------------------------------------------------------------------------------------------

#: Reported results of ACTION++ (You et al., MICCAI 2023, arXiv 2304.02689) and the baselines
#: in its tables, as summarised in docs method.md section 7 (shared/docs/method.md). Keys are
#: ``(dataset, labelled_patients, name)``; ``name`` is a METHOD value or, for the LA ablation, a
#: VARIANT name of ``notebooks/grids/la_ablation.yaml``. Dice in %, ASD in voxels; ``None`` = not
#: reported. ``dice_per_class`` follows the dataset's foreground class order (ACDC: RV, Myo, LV).
PAPER_SOURCE = (
    "You et al., ACTION++, MICCAI 2023 (arXiv 2304.02689): ACDC / LA comparison tables and the "
    "LA 8-labelled ablation, as summarised in docs/method.md section 7"
)
PAPER_RESULTS: dict[tuple[str, int, str], dict[str, Any]] = {
    ("acdc", 3, "action"): {"dice": 87.5, "asd": 1.12},
    ("acdc", 3, "actionpp"): {"dice": 88.5, "asd": 0.723, "dice_per_class": {"RV": 86.9, "Myo": 86.8, "LV": 91.9}},
    ("acdc", 7, "action"): {"dice": 89.7, "asd": 0.736},
    ("acdc", 7, "actionpp"): {"dice": 90.4, "asd": 0.592, "dice_per_class": {"RV": 90.5, "Myo": 87.5, "LV": 93.1}},
    ("acdc", 3, "supervised"): {"dice": 51.7, "asd": None},
    ("acdc", 7, "supervised"): {"dice": 79.5, "asd": None},
    ("acdc", 70, "supervised"): {"dice": 91.5, "asd": None},
    ("acdc", 3, "mean_teacher"): {"dice": 58.3, "asd": None},
    ("acdc", 7, "mean_teacher"): {"dice": 80.1, "asd": None},
    ("la", 4, "action"): {"dice": 86.6, "asd": 2.24},
    ("la", 4, "actionpp"): {"dice": 87.8, "asd": 2.09},
    ("la", 8, "action"): {"dice": 88.7, "asd": 2.10},
    ("la", 8, "actionpp"): {"dice": 89.9, "asd": 1.74},
    # Ablation, LA 8 labelled (fine-tuning stage).
    ("la", 8, "no_saacl_no_ats"): {"dice": 89.0, "asd": None},
    ("la", 8, "ats_only"): {"dice": 89.3, "asd": None},
    ("la", 8, "saacl_only"): {"dice": 89.5, "asd": None},
    ("la", 8, "saacl_ats"): {"dice": 89.9, "asd": None},
    ("la", 8, "random_assign"): {"dice": 88.0, "asd": None},
}


def paper_row(dataset: str | None, labelled: Any, name: str | None) -> dict[str, Any] | None:
    """The paper's entry for ``(dataset, labelled, name)`` or ``None`` when it reports none."""
    if dataset is None or name is None:
        return None
    try:
        key = (str(dataset).lower(), int(labelled), str(name))
    except (TypeError, ValueError):
        return None
    return PAPER_RESULTS.get(key)


# ---------------------------------------------------------------------------------------------
# Grid
# ---------------------------------------------------------------------------------------------


class GridError(ValueError):
    """A grid file or a run directory is malformed; the message names the file and the key."""


@dataclass(frozen=True)
class NotebookStep:
    """One notebook of a run: its path and its per-notebook parameter templates."""

    path: Path
    parameters: Mapping[str, Any] = field(default_factory=dict)

    @property
    def stem(self) -> str:
        return self.path.stem


@dataclass(frozen=True)
class Grid:
    """A parsed grid file. ``axes`` keeps the YAML order; ``variants`` maps name -> parameters."""

    name: str
    source: Path | None
    notebooks: tuple[NotebookStep, ...]
    profile: str | None
    parameters: Mapping[str, Any]
    axes: Mapping[str, tuple[Any, ...]]
    variants: Mapping[str, Mapping[str, Any]]
    blocks: tuple["Grid", ...] = ()  # when the file lists blocks: one sub-grid each (axes / variants empty here)


@dataclass(frozen=True)
class Run:
    """One expanded run: its id, axis values and the full parameters of each notebook."""

    run_id: str
    axes: Mapping[str, Any]  # axis name -> value (VARIANT included when the grid has variants)
    notebooks: tuple[NotebookStep, ...]
    parameters: tuple[Mapping[str, Any], ...]  # one dict per notebook, OUT_DIR excluded
    index: int  # position in the grid sorted by run id (the shard key)

    def run_dir(self, out: Path) -> Path:
        return Path(out) / self.run_id

    def notebook_out_dir(self, out: Path, i: int) -> Path:
        """``OUT_DIR`` of notebook ``i``: the run directory for the first one, a sub-folder after."""
        rd = self.run_dir(out)
        return rd if i == 0 else rd / self.notebooks[i].stem


def _resolve_notebook(entry: str, base: Path | None, where: str) -> Path:
    name = entry if entry.endswith(".ipynb") else f"{entry}.ipynb"
    candidates = []
    p = Path(name)
    if p.is_absolute():
        candidates.append(p)
    else:
        if base is not None:
            candidates.append(base / name)
        candidates.append(repo_root() / "notebooks" / name)
        candidates.append(Path.cwd() / name)
    for c in candidates:
        if c.is_file():
            return c.resolve()
    raise GridError(f"{where}: notebook {entry!r} not found (looked at {', '.join(str(c) for c in candidates)})")


def _scalar_ok(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def load_grid(path: str | Path | Mapping[str, Any], *, base: Path | None = None) -> Grid:
    """Parse and validate a grid from a YAML file (or an already-loaded mapping).

    Notebook entries are resolved relative to the grid file's folder first, then to
    ``<repo>/notebooks``. Raises :class:`GridError` naming the file and key on any problem:
    unknown top-level key, empty axis, non-scalar axis value, variant without a name,
    duplicate variant names, or a missing notebook.
    """
    if isinstance(path, Mapping):
        raw: Any = dict(path)
        src: Path | None = None
        where = "grid"
    else:
        src = Path(path)
        where = str(src)
        if not src.is_file():
            raise GridError(f"grid file {src} does not exist")
        try:
            raw = yaml.safe_load(src.read_text())
        except yaml.YAMLError as e:
            raise GridError(f"{src}: not valid YAML: {e}") from e
        base = base or src.parent
    if not isinstance(raw, dict):
        raise GridError(f"{where}: a grid is a mapping with keys notebooks, profile, parameters, axes, variants")
    allowed = {"name", "notebooks", "profile", "parameters", "axes", "variants", "description", "blocks"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise GridError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")

    nbs_raw = raw.get("notebooks")
    if isinstance(nbs_raw, (str, dict)):
        nbs_raw = [nbs_raw]
    if not nbs_raw:
        raise GridError(f"{where}: 'notebooks' must list at least one notebook")
    steps = []
    for i, e in enumerate(nbs_raw):
        if isinstance(e, str):
            steps.append(NotebookStep(_resolve_notebook(e, base, f"{where}: notebooks[{i}]")))
        elif isinstance(e, dict) and "notebook" in e and set(e) <= {"notebook", "parameters"}:
            params = e.get("parameters") or {}
            if not isinstance(params, dict):
                raise GridError(f"{where}: notebooks[{i}].parameters must be a mapping")
            steps.append(NotebookStep(_resolve_notebook(str(e["notebook"]), base, f"{where}: notebooks[{i}]"), params))
        else:
            raise GridError(f"{where}: notebooks[{i}] must be a name or {{notebook: NAME, parameters: {{...}}}}, got {e!r}")

    profile = raw.get("profile")
    if profile is not None and not isinstance(profile, str):
        raise GridError(f"{where}: 'profile' must be a string, got {profile!r}")
    params = raw.get("parameters") or {}
    if not isinstance(params, dict):
        raise GridError(f"{where}: 'parameters' must be a mapping")

    if "blocks" in raw:
        if "axes" in raw or "variants" in raw:
            raise GridError(f"{where}: a grid lists either 'blocks' or 'axes' / 'variants', not both")
        blocks_raw = raw["blocks"]
        if not isinstance(blocks_raw, list) or not blocks_raw:
            raise GridError(f"{where}: 'blocks' must be a non-empty list of {{axes, variants, parameters}}")
        blocks = []
        for i, b in enumerate(blocks_raw):
            if not isinstance(b, dict) or not set(b) <= {"axes", "variants", "parameters"}:
                raise GridError(f"{where}: blocks[{i}] must be a mapping with keys axes, variants, parameters")
            bparams = b.get("parameters") or {}
            if not isinstance(bparams, dict):
                raise GridError(f"{where}: blocks[{i}].parameters must be a mapping")
            sub = {"notebooks": nbs_raw, "profile": profile, "parameters": {**params, **bparams},
                   "axes": b.get("axes") or {}, "variants": b.get("variants") or []}
            try:
                blocks.append(load_grid(sub, base=base))
            except GridError as exc:
                raise GridError(f"{where}: blocks[{i}]: {str(exc).removeprefix('grid: ')}") from None
        return Grid(name=str(raw.get("name") or (src.stem if src else "grid")), source=src, notebooks=tuple(steps),
                    profile=profile, parameters=params, axes={}, variants={}, blocks=tuple(blocks))

    axes_raw = raw.get("axes") or {}
    if not isinstance(axes_raw, dict):
        raise GridError(f"{where}: 'axes' must be a mapping PARAMETER: [values]")
    axes: dict[str, tuple[Any, ...]] = {}
    for k, vals in axes_raw.items():
        if not isinstance(k, str) or not k:
            raise GridError(f"{where}: axis name {k!r} must be a non-empty string")
        if k == "VARIANT":
            raise GridError(f"{where}: axis 'VARIANT' is reserved; use the 'variants' list")
        if not isinstance(vals, list):
            vals = [vals]
        if not vals:
            raise GridError(f"{where}: axis {k!r} has no values")
        for v in vals:
            if not _scalar_ok(v):
                raise GridError(f"{where}: axis {k!r} value {v!r} is not a scalar (str, int, float, bool)")
        if len(set(map(repr, vals))) != len(vals):
            raise GridError(f"{where}: axis {k!r} repeats a value: {vals}")
        axes[k] = tuple(vals)

    variants: dict[str, dict[str, Any]] = {}
    for i, v in enumerate(raw.get("variants") or []):
        if not isinstance(v, dict) or not isinstance(v.get("name"), str):
            raise GridError(f"{where}: variants[{i}] must be a mapping with a string 'name'")
        name = v["name"]
        if name in variants:
            raise GridError(f"{where}: variant name {name!r} appears twice")
        rest = {k: x for k, x in v.items() if k != "name"}
        clash = sorted(set(rest) & set(axes))
        if clash:
            raise GridError(f"{where}: variant {name!r} sets {clash}, which are also axes")
        variants[name] = rest

    return Grid(
        name=str(raw.get("name") or (src.stem if src else "grid")),
        source=src,
        notebooks=tuple(steps),
        profile=profile,
        parameters=params,
        axes=axes,
        variants=variants,
    )


def _fmt_value(v: Any) -> str:
    if isinstance(v, bool):
        s = "true" if v else "false"
    elif v is None:
        s = "none"
    elif isinstance(v, float):
        s = repr(v)
    else:
        s = str(v)
    s = re.sub(r"[^A-Za-z0-9._+-]+", "-", s).strip("-")
    return s or "x"


def _id_keys(axis_names: Iterable[str]) -> list[str]:
    names = list(axis_names)
    head = [k for k in _ID_ORDER if k in names]
    tail = ["SEED"] if "SEED" in names else []
    middle = sorted(k for k in names if k not in head and k not in tail)
    return head + middle + tail


def make_run_id(axes: Mapping[str, Any]) -> str:
    """``method=actionpp_lab=3_seed=0`` from axis values, in canonical key order.

    The order is METHOD, VARIANT, LABELLED_PATIENTS, the other axes sorted by name, SEED;
    names are shortened (``lab``, ``seed``...) or lower-cased; values are made file-safe.
    An empty grid (no axes) gives ``run``.
    """
    parts = [f"{_SHORT.get(k, k.lower())}={_fmt_value(axes[k])}" for k in _id_keys(axes)]
    return "_".join(parts) or "run"


def profile_parameters(notebook: Path, profile: str | None) -> dict[str, Any]:
    """Parameters of ``notebooks/params/<profile>/<stem>.yaml`` next to ``notebook`` ({} if absent).

    An absent file is fine for the ``lab`` profile (= the parameters cell) and ``None``; for any
    other profile it is an error, since it would silently run lab-sized.
    """
    if profile is None:
        return {}
    f = notebook.parent / "params" / profile / f"{notebook.stem}.yaml"
    if not f.is_file():
        if profile == "lab":
            return {}
        raise GridError(f"profile {profile!r} has no parameter file {f} for notebook {notebook.name}")
    data = yaml.safe_load(f.read_text()) or {}
    if not isinstance(data, dict):
        raise GridError(f"{f}: a parameter profile must be a mapping NAME: value")
    return data


def _substitute(value: Any, mapping: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        for k, v in mapping.items():
            value = value.replace("{" + k + "}", v)
        return value
    if isinstance(value, list):
        return [_substitute(x, mapping) for x in value]
    if isinstance(value, dict):
        return {k: _substitute(x, mapping) for k, x in value.items()}
    return value


def expand(grid: Grid) -> list[Run]:
    """All runs of ``grid`` in a deterministic order (the cartesian product in YAML order).

    Parameters of notebook i, later ones winning: its profile file, the grid's ``parameters``,
    the variant's, the axis values, then the notebook's own templates. Notebooks after the first
    receive only the names they declare (05_embeddings has no METHOD); the first notebook gets
    everything, and its strict execution turns a typo in the grid into an error.

    A grid of ``blocks`` gives the runs of each block in block order.

    Raises :class:`GridError` when two runs get the same id.
    """
    if grid.blocks:
        parts = [r for b in grid.blocks for r in expand(b)]
        ids = [r.run_id for r in parts]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise GridError(f"{grid.source or 'grid'}: several runs share the id(s) {dup}; make axis values distinct")
        order = {rid: k for k, rid in enumerate(sorted(ids))}
        return [Run(r.run_id, r.axes, r.notebooks, r.parameters, order[r.run_id]) for r in parts]
    axis_names = list(grid.axes)
    value_lists: list[tuple[Any, ...]] = [grid.axes[k] for k in axis_names]
    names = axis_names
    if grid.variants:
        names = ["VARIANT", *axis_names]
        value_lists = [tuple(grid.variants), *value_lists]
    combos = list(itertools.product(*value_lists)) if names else [()]
    profiles = [profile_parameters(s.path, grid.profile) for s in grid.notebooks]
    runs: list[tuple[str, dict[str, Any], tuple[dict[str, Any], ...]]] = []
    for combo in combos:
        axes = dict(zip(names, combo))
        rid = make_run_id(axes)
        overrides: dict[str, Any] = dict(grid.parameters)
        if "VARIANT" in axes:
            overrides.update(grid.variants[axes["VARIANT"]])
        overrides.update({k: v for k, v in axes.items() if k != "VARIANT"})
        per_nb = []
        for step, prof in zip(grid.notebooks, profiles):
            p = dict(prof)
            p.update(overrides)
            p.update(step.parameters)
            per_nb.append(p)
        runs.append((rid, axes, tuple(per_nb)))
    ids = [r[0] for r in runs]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise GridError(f"{grid.source or 'grid'}: several runs share the id(s) {dup}; make axis values distinct")
    order = {rid: k for k, rid in enumerate(sorted(ids))}
    return [Run(rid, axes, grid.notebooks, params, order[rid]) for rid, axes, params in runs]


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``; anything else raises ValueError naming it."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m:
        raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {text!r}")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard {text!r}: need n >= 1 and 0 <= i < n")
    return i, n


def shard(runs: Sequence[Run], i: int, n: int) -> list[Run]:
    """The runs of shard ``i`` of ``n``: those whose sorted-id position is ``i`` mod ``n``."""
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard {i}/{n}: need n >= 1 and 0 <= i < n")
    return [r for r in runs if r.index % n == i]


# ---------------------------------------------------------------------------------------------
# Execution
# ---------------------------------------------------------------------------------------------


def _atomic_write_text(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x, default=str))


def _marker_params(run: Run) -> list[dict[str, Any]]:
    return [_jsonable(p) for p in run.parameters]


def run_status(run: Run, out: Path) -> str:
    """``"done"`` (finished, same parameters), ``"stale"`` (finished with other parameters),
    ``"failed"`` (last attempt failed), ``"partial"`` (started, not finished) or ``"pending"``."""
    rd = run.run_dir(out)
    marker = rd / DONE
    if marker.is_file() and (rd / METRICS).is_file():
        try:
            data = json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError):
            return "partial"
        return "done" if data.get("parameters") == _marker_params(run) else "stale"
    if (rd / FAILED).is_file():
        return "failed"
    if rd.exists():
        return "partial"
    return "pending"


@dataclass
class RunOutcome:
    """What happened to one run: ``status`` is ``done``, ``skipped``, ``failed`` or ``stale``."""

    run_id: str
    status: str
    seconds: float = 0.0
    error: str | None = None
    notebook: str | None = None  # the executed notebook that failed (holds the traceback)


Executor = Callable[[Path, Path, dict[str, Any]], Any]


def _declared_parameters(notebook: Path) -> set[str]:
    from actionpp.notebook import parameters_of

    return set(parameters_of(notebook))


def _default_executor(notebook: Path, output: Path, parameters: dict[str, Any]) -> Any:
    """Strict execution through :func:`actionpp.notebook.execute` (the profile is already merged)."""
    from actionpp.notebook import execute

    return execute(notebook, output, parameters, None)


def _describe_error(exc: BaseException) -> str:
    ename = getattr(exc, "ename", None)
    evalue = getattr(exc, "evalue", None)
    if ename:
        return f"{ename}: {evalue}"
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0] if msg else ''}".strip()


def execute_run(run: Run, out: Path, executor: Executor | None = None, force: bool = False) -> RunOutcome:
    """Execute every notebook of ``run`` into ``OUT/<run_id>/``; never raises for a notebook error.

    Skips a run whose ``done`` marker matches its parameters (unless ``force``); refuses (status
    ``stale``) a run directory holding a finished run with *other* parameters, so finished results
    are never overwritten. On success writes ``done`` atomically and removes ``failed.json``; on
    failure writes ``failed.json`` with the error and the executed notebook's path. A stale
    ``metrics.json`` from an interrupted attempt is removed before executing again, so a
    ``metrics.json`` without ``done`` is never mistaken for a result; everything else (the
    engine's checkpoints) stays, so training resumes.
    """
    out = Path(out).resolve()
    executor = executor or _default_executor
    status = run_status(run, out)
    if status == "done" and not force:
        return RunOutcome(run.run_id, "skipped")
    rd = run.run_dir(out)
    if status == "stale" and not force:
        return RunOutcome(
            run.run_id,
            "stale",
            error=f"{rd} holds a finished run with different parameters; move it away or use another --out",
        )
    rd.mkdir(parents=True, exist_ok=True)
    for name in (DONE, METRICS):
        (rd / name).unlink(missing_ok=True)
    t0 = time.perf_counter()
    mapping = {"run_dir": str(rd), "out": str(out)}
    for i, (step, params) in enumerate(zip(run.notebooks, run.parameters)):
        nb_out = run.notebook_out_dir(out, i)
        nb_out.mkdir(parents=True, exist_ok=True)
        if i > 0:
            (nb_out / METRICS).unlink(missing_ok=True)
        p = _substitute(dict(params), mapping)
        p["OUT_DIR"] = str(nb_out)
        output = rd / f"{step.stem}.ipynb"
        try:
            if i > 0:
                declared = _declared_parameters(step.path)
                p = {k: v for k, v in p.items() if k in declared}
            executor(step.path, output, p)
            if not (nb_out / METRICS).is_file():
                raise RuntimeError(f"{step.path.name} finished without writing {nb_out / METRICS}")
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed run is reported, the grid goes on
            err = _describe_error(exc)
            info = {
                "run_id": run.run_id,
                "notebook": str(output),
                "error": err,
                "traceback": "".join(traceback.format_exception(exc))[-8000:],
                "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
            _atomic_write_text(rd / FAILED, json.dumps(info, indent=2))
            return RunOutcome(run.run_id, "failed", time.perf_counter() - t0, err, str(output))
    seconds = time.perf_counter() - t0
    marker = {
        "run_id": run.run_id,
        "axes": _jsonable(dict(run.axes)),
        "notebooks": [str(s.path) for s in run.notebooks],
        "parameters": _marker_params(run),
        "seconds": round(seconds, 3),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    _atomic_write_text(rd / DONE, json.dumps(marker, indent=2))
    (rd / FAILED).unlink(missing_ok=True)
    return RunOutcome(run.run_id, "done", seconds)


# Worker side of --jobs N: each pool process takes one device slot for its whole life.
_SLOT_ENV: dict[str, str] = {}


def _init_worker(slots: Any, gpus: list[str], threads: int) -> None:
    slot = slots.get()
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    os.environ.setdefault("MKL_NUM_THREADS", str(threads))


def _worker(run: Run, out: str, force: bool) -> RunOutcome:
    return execute_run(run, Path(out), force=force)


def visible_gpus() -> list[str]:
    """GPU ids a job may be pinned to: ``CUDA_VISIBLE_DEVICES`` if set, else torch's count."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001
        return []


def run_grid(
    runs: Sequence[Run],
    out: str | Path,
    jobs: int = 1,
    executor: Executor | None = None,
    force: bool = False,
    log: Callable[[str], None] | None = print,
) -> list[RunOutcome]:
    """Execute ``runs`` (skipping finished ones), ``jobs`` at a time; outcomes in ``runs`` order.

    ``jobs == 1`` runs in this process (with ``executor``, the strict papermill execution by
    default). ``jobs > 1`` uses a pool of ``jobs`` spawned processes; when GPUs are visible,
    pool process k is pinned to GPU ``k mod #gpus`` through ``CUDA_VISIBLE_DEVICES``, and on a
    CPU each process gets ``OMP_NUM_THREADS = cores // jobs`` (unless already set). A custom
    ``executor`` requires ``jobs == 1`` (it cannot be sent to another process reliably).
    """
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    say = log or (lambda s: None)
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    outcomes: dict[str, RunOutcome] = {}
    total = len(runs)

    def report(k: int, o: RunOutcome) -> None:
        tail = f" {o.seconds:.1f} s" if o.status == "done" else ""
        extra = f": {o.error}" if o.error else ""
        say(f"[{k}/{total}] {o.run_id}: {o.status}{tail}{extra}")

    if jobs == 1:
        for k, r in enumerate(runs, 1):
            o = execute_run(r, out, executor, force)
            outcomes[r.run_id] = o
            report(k, o)
    else:
        if executor is not None:
            raise ValueError("a custom executor runs only with jobs=1")
        ctx = mp.get_context("spawn")
        slots = ctx.Queue()
        for s in range(jobs):
            slots.put(s)
        threads = max(1, (os.cpu_count() or 1) // jobs)
        pool = cf.ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker, initargs=(slots, visible_gpus(), threads))
        try:
            futs = {pool.submit(_worker, r, str(out), force): r for r in runs}
            for k, fut in enumerate(cf.as_completed(futs), 1):
                r = futs[fut]
                try:
                    o = fut.result()
                except Exception as exc:  # noqa: BLE001 - a crashed worker is one failed run
                    o = RunOutcome(r.run_id, "failed", error=_describe_error(exc), notebook=str(r.run_dir(out)))
                outcomes[r.run_id] = o
                report(k, o)
        except BaseException:
            # Ctrl-C or an error here: drop the queued runs instead of letting the pool finish them
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
    return [outcomes[r.run_id] for r in runs]


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRecord:
    """A finished run read back from disk: its id, axis values and first-notebook metrics."""

    run_id: str
    axes: Mapping[str, Any]
    metrics: Mapping[str, Any]
    path: Path


def collect(out: str | Path, runs: Sequence[Run] | None = None) -> list[RunRecord]:
    """Finished runs under ``out`` (those with a ``done`` marker and ``metrics.json``).

    With ``runs`` only those runs are read (a grid's runs, in grid order); without, every
    sub-folder of ``out`` holding a ``done`` marker, sorted by run id. Runs without a marker
    (failed, interrupted, pending) are left out.
    """
    out = Path(out)
    dirs: list[Path]
    if runs is not None:
        dirs = [r.run_dir(out) for r in runs]
    else:
        dirs = sorted(p.parent for p in out.glob(f"*/{DONE}"))
    records = []
    for d in dirs:
        marker, mfile = d / DONE, d / METRICS
        if not (marker.is_file() and mfile.is_file()):
            continue
        try:
            m = json.loads(marker.read_text())
            metrics = json.loads(mfile.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise GridError(f"{d}: unreadable done marker or metrics.json: {e}") from e
        records.append(RunRecord(str(m.get("run_id", d.name)), dict(m.get("axes") or {}), metrics, d))
    return records


def _mean_std(values: list[float]) -> tuple[float, float]:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return math.nan, math.nan
    mean = statistics.fmean(vals)
    std = statistics.stdev(vals) if len(vals) > 1 else math.nan
    return mean, std


def _metric_of(metrics: Mapping[str, Any], name: str, cls: str | None) -> float | None:
    block = metrics.get(name)
    if cls is None:
        v = metrics.get(f"{name}_mean")
        if v is None and isinstance(block, Mapping) and block:
            vals = [float(x) for x in block.values() if x is not None]
            v = statistics.fmean(vals) if vals else None
        return None if v is None else float(v)
    if isinstance(block, Mapping) and block.get(cls) is not None:
        return float(block[cls])
    return None


@dataclass
class ResultRow:
    """One group of runs (same axis values except SEED) aggregated over seeds."""

    group: dict[str, Any]  # axis values except SEED
    dataset: str | None  # "acdc", "la" (the label set)
    data: str | None  # where the images came from: "phantom", "shared" or a folder name
    method: str | None
    labelled: Any
    seeds: list[Any]
    classes: list[str]
    stats: dict[str, tuple[float, float]]  # "dice_mean" / "dice_RV" ... -> (mean, std); % for Dice / Jaccard
    paper: dict[str, Any] | None
    protocol: dict[str, Any]


def aggregate(records: Sequence[RunRecord]) -> list[ResultRow]:
    """Group finished runs by every axis except ``SEED`` and take mean / sample std over seeds.

    Dice and Jaccard become % (x 100); HD95 and ASD stay in the runs' distance unit. The mean
    over classes of one run is its ``<metric>_mean`` if given, else the mean of its per-class
    values; the row's ``<metric>_mean`` is then the mean over seeds of those. Groups keep the
    order in which they first appear. Protocol entries that differ between the runs of a group
    are joined with " | " so a mixed batch cannot hide.
    """
    groups: dict[str, list[RunRecord]] = {}
    keys: dict[str, dict[str, Any]] = {}
    for r in records:
        g = {k: v for k, v in r.axes.items() if k != "SEED"}
        key = json.dumps(g, sort_keys=True, default=str)
        groups.setdefault(key, []).append(r)
        keys[key] = g
    rows = []
    for key, recs in groups.items():
        first = recs[0].metrics
        classes = list(first.get("classes") or [])
        if not classes and isinstance(first.get("dice"), Mapping):
            classes = list(first["dice"])
        stats: dict[str, tuple[float, float]] = {}
        for name in METRIC_NAMES:
            scale = 100.0 if _PERCENT[name] else 1.0
            for cls in [None, *classes]:
                vals = [_metric_of(r.metrics, name, cls) for r in recs]
                vals2 = [v * scale for v in vals if v is not None]
                stats[f"{name}_{cls or 'mean'}"] = _mean_std(vals2)
        protocol: dict[str, Any] = {}
        for r in recs:
            for k, v in (r.metrics.get("protocol") or {}).items():
                sv = str(v)
                if k not in protocol:
                    protocol[k] = sv
                elif sv not in str(protocol[k]).split(" | "):
                    protocol[k] = f"{protocol[k]} | {sv}"
        g = keys[key]
        dataset = first.get("dataset") or next((r.metrics.get("dataset") for r in recs if r.metrics.get("dataset")), None)
        method = g.get("METHOD", first.get("method"))
        labelled = g.get("LABELLED_PATIENTS", first.get("labelled_patients"))
        name = g.get("VARIANT", method)
        rows.append(
            ResultRow(
                group=g,
                dataset=dataset,
                data=None if first.get("data") is None else str(first.get("data")),
                method=None if method is None else str(method),
                labelled=labelled,
                seeds=[r.axes.get("SEED", r.metrics.get("seed")) for r in recs],
                classes=classes,
                stats=stats,
                paper=paper_row(dataset, labelled, None if name is None else str(name)),
                protocol=protocol,
            )
        )
    return rows


def _cell(mean: float, std: float, digits: int) -> str:
    if math.isnan(mean):
        return "-"
    if math.isnan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _group_columns(rows: Sequence[ResultRow]) -> list[str]:
    names: list[str] = []
    for r in rows:
        for k in r.group:
            if k not in names:
                names.append(k)
    return _id_keys(names)


def _all_classes(rows: Sequence[ResultRow]) -> list[str]:
    out: list[str] = []
    for r in rows:
        for c in r.classes:
            if c not in out:
                out.append(c)
    return out


def results_csv(rows: Sequence[ResultRow]) -> str:
    """The table as CSV: group columns, n, seeds, then ``<metric>_<class|mean>_{mean,std}`` and
    ``paper_dice``, ``paper_asd``, ``paper_dice_<class>``; Dice / Jaccard in %, empty = n/a."""
    gcols = _group_columns(rows)
    classes = _all_classes(rows)
    stat_cols = [f"{m}_{c}" for m in METRIC_NAMES for c in ["mean", *classes]]
    header = ["dataset", "data", *gcols, "n", "seeds"]
    for s in stat_cols:
        header += [f"{s}_mean", f"{s}_std"]
    header += ["paper_dice", "paper_asd", *[f"paper_dice_{c}" for c in classes]]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        line: list[Any] = [r.dataset or "", r.data or "", *[r.group.get(k, "") for k in gcols], len(r.seeds), " ".join(map(str, r.seeds))]
        for s in stat_cols:
            m, sd = r.stats.get(s, (math.nan, math.nan))
            line += ["" if math.isnan(m) else f"{m:.6g}", "" if math.isnan(sd) else f"{sd:.6g}"]
        p = r.paper or {}
        pc = p.get("dice_per_class") or {}
        line += [p.get("dice", "") if p.get("dice") is not None else "", p.get("asd", "") if p.get("asd") is not None else ""]
        line += [pc.get(c, "") for c in classes]
        w.writerow(line)
    return buf.getvalue()


_PROTOCOL_LABELS = (
    ("split", "split"),
    ("eval_split", "evaluated on"),
    ("labelled_slices", "labelled slices / volumes"),
    ("iterations", "iterations"),
    ("model_selection", "model selection"),
    ("empty_mask_policy", "empty-mask policy"),
    ("distance_units", "distance units (HD95, ASD)"),
)


def _ds(r: ResultRow) -> str:
    return f"{r.dataset or '-'} ({r.data})" if r.data else (r.dataset or "-")


def results_markdown(rows: Sequence[ResultRow], title: str = "Results") -> str:
    """Paper-style Markdown: a main table (Dice / Jaccard / HD95 / ASD mean +- std, paper Dice and
    ASD beside), a per-class table, the protocol of the runs, and the paper source."""
    gcols = _group_columns(rows)
    classes = _all_classes(rows)
    lines = [f"# {title}", ""]
    if not rows:
        return "\n".join(lines + ["No finished runs.", ""])
    short = [_SHORT.get(k, k.lower()) for k in gcols]
    head = ["dataset", *short, "n", "Dice %", "Jaccard %", "HD95", "ASD", "paper Dice %", "paper ASD"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        p = r.paper or {}
        cells = [_ds(r), *[str(r.group.get(k, "-")) for k in gcols], str(len(r.seeds))]
        cells += [_cell(*r.stats[f"{m}_mean"], 1 if _PERCENT[m] else 2) for m in METRIC_NAMES]
        cells += [str(p["dice"]) if p.get("dice") is not None else "-", str(p["asd"]) if p.get("asd") is not None else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    if classes:
        lines += ["", "Per class (mean ± std over seeds; paper Dice in brackets where reported):", ""]
        head2 = ["dataset", *short]
        for m in METRIC_NAMES:
            head2 += [f"{_LABEL[m]} {c}" for c in classes]
        lines += ["| " + " | ".join(head2) + " |", "|" + "---|" * len(head2)]
        for r in rows:
            pc = (r.paper or {}).get("dice_per_class") or {}
            cells = [_ds(r), *[str(r.group.get(k, "-")) for k in gcols]]
            for m in METRIC_NAMES:
                for c in classes:
                    txt = _cell(*r.stats.get(f"{m}_{c}", (math.nan, math.nan)), 1 if _PERCENT[m] else 2)
                    if m == "dice" and c in pc:
                        txt += f" [{pc[c]}]"
                    cells.append(txt)
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Protocol (read from the runs' metrics.json):", ""]
    proto: dict[str, str] = {}
    for r in rows:
        for k, v in r.protocol.items():
            if k not in proto:
                proto[k] = v
            elif v not in proto[k].split(" | "):
                proto[k] = f"{proto[k]} | {v}"
    known = dict(_PROTOCOL_LABELS)
    for k in [*known, *sorted(set(proto) - set(known))]:
        if k in proto:
            lines.append(f"- {known.get(k, k)}: {proto[k]}")
    missing = [known[k] for k in known if k not in proto]
    if missing:
        lines.append(f"- not stated by the runs: {', '.join(missing)}")
    lines += [
        "- mean ± sample standard deviation (ddof = 1) over seeds; one seed shows the value alone",
        "",
        f"Paper numbers: {PAPER_SOURCE}. They come from longer training on real data; a phantom or "
        "lab-sized run is not expected to match them.",
        "",
    ]
    return "\n".join(lines)


def write_results(out: str | Path, records: Sequence[RunRecord], title: str = "Results") -> tuple[Path, Path]:
    """Aggregate ``records`` and write ``OUT/results.csv`` and ``OUT/results.md`` atomically."""
    out = Path(out)
    rows = aggregate(records)
    csv_path, md_path = out / "results.csv", out / "results.md"
    _atomic_write_text(csv_path, results_csv(rows))
    _atomic_write_text(md_path, results_markdown(rows, title))
    return csv_path, md_path


# ---------------------------------------------------------------------------------------------
# The metrics.json of a training run (written by notebooks/04_train.ipynb)
# ---------------------------------------------------------------------------------------------

_POLICY_TEXT = {
    "penalty": "missed or spurious structure: Dice 0, HD95 / ASD = the volume diagonal; both empty: Dice 1, distances 0",
    "nan": "missed or spurious structure: Dice 0, distances NaN (left out of the means, counted); both empty: Dice 1",
    "ssl4mis": "as SSL4MIS: empty prediction scores 0 on all four metrics (a missed structure gets HD95 0)",
}


def run_metrics(cfg: Any, result: Any, evaluation: Any, eval_split: str, data_root: str | Path) -> dict[str, Any]:
    """The ``metrics.json`` of one training run, in the schema the results tables read.

    ``cfg``: the run's :class:`actionpp.config.Config`; ``result``: the engine's ``RunResult``;
    ``evaluation``: an :class:`actionpp.evaluate.EvalResult` of the selected checkpoint on
    ``eval_split``; ``data_root``: the resolved dataset folder (for the split description).
    Per-class numbers are means over the evaluated volumes (Dice / Jaccard in [0, 1], HD95 / ASD
    in voxels; ``hd95_mm`` / ``asd_mm`` in mm, NaN without spacing); ``*_mean`` are the means
    over classes. ``protocol`` states how every number was obtained.
    """
    from actionpp.data.core import open_dataset
    from actionpp.evaluate import CLASS_NAMES

    dataset = cfg.data.dataset
    names = CLASS_NAMES.get(dataset, {})
    summ = evaluation.summary
    per_class = summ["per_class"]
    cls_keys = sorted(per_class, key=lambda c: int(c) if str(c).isdigit() else str(c))
    classes = [str(names.get(int(c), c)) if str(c).isdigit() else str(c) for c in cls_keys]

    def block(key: str) -> dict[str, float]:
        return {n: float(per_class[c][key]) for n, c in zip(classes, cls_keys)}

    ds = open_dataset(data_root)
    n_labelled: int
    if dataset == "acdc":
        from actionpp.data.acdc import first_patients, patient_of

        slices = list(ds.train_slices)
        n_labelled = first_patients(slices, cfg.data.labelled)
        n_train = len({patient_of(n) for n in slices})
        split = (
            f"{cfg.data.root} ({Path(data_root).name}): train {n_train} patients ({len(slices)} slices), "
            f"val {len(ds.volumes('val'))} volumes, test {len(ds.volumes('test')) if ds.has_split('test') else 0} volumes"
        )
        labelled_txt = f"{n_labelled} slices ({cfg.data.labelled} patients)"
    else:
        train = ds.volumes("train")
        n_labelled = len(train) if cfg.data.labelled is None else min(cfg.data.labelled, len(train))
        split = f"{cfg.data.root} ({Path(data_root).name}): train {len(train)} scans, test {len(ds.volumes('test'))} scans"
        labelled_txt = f"{n_labelled} scans"
    pre, fine = cfg.pretrain_iters, cfg.finetune_iters
    val_every = f"every {cfg.eval.every} iterations" if cfg.eval.every else "at the end"
    protocol = {
        "split": split,
        "eval_split": f"{eval_split} ({summ['n_volumes']} volumes)",
        "labelled_slices": labelled_txt,
        "iterations": f"{pre} pre-training + {fine} fine-tuning" if pre else f"{fine} (no pre-training)",
        "model_selection": f"{result.selected} checkpoint (validation Dice on {cfg.data.val_split}, {val_every})",
        "empty_mask_policy": _POLICY_TEXT.get(evaluation.protocol.get("empty_policy", ""), str(evaluation.protocol.get("empty_policy"))),
        "distance_units": "voxels (HD95, ASD); *_mm columns in mm",
        "input": (f"slices resized to {cfg.data.size} x {cfg.data.size} (nearest), metrics on the 3D volume"
                  if dataset == "acdc" else f"sliding window {list(cfg.data.crop)}"),
    }
    mean = summ["mean"]
    best = result.best or {}
    return {
        "dataset": dataset,
        "data": cfg.data.root if cfg.data.root in ("phantom", "shared") else Path(data_root).name,
        "method": cfg.method.name,
        "switches": {k: bool(v) for k, v in vars(cfg.method).items() if isinstance(v, bool)},
        "assignment": cfg.saacl.assignment,
        "labelled_patients": cfg.data.labelled,
        "labelled_slices": n_labelled,
        "seed": cfg.runtime.seed,
        "config_hash": result.config_hash,
        "classes": classes,
        "dice": block("dice"),
        "jaccard": block("jaccard"),
        "hd95": block("hd95_vox"),
        "asd": block("asd_vox"),
        "hd95_mm": block("hd95_mm"),
        "asd_mm": block("asd_mm"),
        "dice_mean": float(mean["dice"]),
        "jaccard_mean": float(mean["jaccard"]),
        "hd95_mean": float(mean["hd95_vox"]),
        "asd_mean": float(mean["asd_vox"]),
        "empty": dict(summ.get("empty", {})),
        "val_best_dice": best.get("dice"),
        "val_best_iteration": result.best_iteration,
        "iterations": result.iterations,
        "train_seconds": result.seconds,
        "its_per_s": dict(result.its_per_s),
        "reused_finished_run": bool(result.cached),
        "protocol": protocol,
    }


def summary(outcomes: Sequence[RunOutcome]) -> str:
    """Counts and the failures (error + executed notebook), for the end of a CLI run."""
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    lines = [", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "no runs"]
    for o in outcomes:
        if o.status in ("failed", "stale"):
            lines.append(f"FAILED {o.run_id}: {o.error}" + (f"\n    notebook: {o.notebook}" if o.notebook else ""))
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: actionpp replicate GRID.yaml")
