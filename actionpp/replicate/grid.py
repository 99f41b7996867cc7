"""Replication grids: parse a grid file, expand it into runs with stable ids, shard them.

The grid format is described in :mod:`actionpp.replicate` (the package docstring).

Taught in notebooks/06_replication_report.ipynb.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from actionpp.paths import repo_root
from actionpp.replicate.batchnorm import BatchNormSpec, parse_batchnorm_spec
from actionpp.replicate.score import ScoreSpec, parse_score_spec

__all__ = [
    "GridError",
    "NotebookStep",
    "Grid",
    "Run",
    "load_grid",
    "make_run_id",
    "profile_parameters",
    "expand",
    "grid_variants",
    "shard",
    "parse_shard",
    "grid_fingerprint",
    "id_keys",
    "substitute",
    "SHORT_NAMES",
]

# Canonical order of well-known axes inside a run id, with their short names.
_ID_ORDER = ("METHOD", "VARIANT", "LABELLED_PATIENTS")
SHORT_NAMES = {"METHOD": "method", "VARIANT": "variant", "LABELLED_PATIENTS": "lab", "SEED": "seed"}


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
    blocks: tuple[Grid, ...] = ()  # when the file lists blocks: one sub-grid each (axes / variants empty here)
    score: ScoreSpec | None = None  # what the runner scores after each run (actionpp.replicate.score)
    batchnorm: BatchNormSpec | None = None  # the BatchNorm check of each run, at publish (replicate.batchnorm)
    describe_against: str | None = None  # a grid whose published runs this one's are set beside (replicate.across)


@dataclass(frozen=True)
class Run:
    """One expanded run: its id, axis values and the full parameters of each notebook."""

    run_id: str
    axes: Mapping[str, Any]  # axis name -> value (VARIANT included when the grid has variants)
    notebooks: tuple[NotebookStep, ...]
    parameters: tuple[Mapping[str, Any], ...]  # one dict per notebook, OUT_DIR excluded
    index: int  # position in the grid sorted by run id (the shard key)
    score: ScoreSpec | None = None  # scored by the runner before ``done`` (the grid's ``score`` block)

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


_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def _grid_name(raw: Mapping[str, Any], src: Path | None, where: str) -> str:
    """The grid's ``name``: a plain file name (it names the default output folder ``runs/replicate/<name>``)."""
    name = str(raw.get("name") or (src.stem if src else "grid"))
    if not _NAME_RE.fullmatch(name) or ".." in name:
        raise GridError(
            f"{where}: name {name!r} must be a plain folder name (letters, digits, '.', '_', '+', '-'; no '/' or "
            "'..'), since it names the output folder"
        )
    return name


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
        except yaml.YAMLError as exc:
            raise GridError(f"{src}: not valid YAML: {exc}") from exc
        base = base or src.parent
    if not isinstance(raw, dict):
        raise GridError(f"{where}: a grid is a mapping with keys notebooks, profile, parameters, axes, variants")
    allowed = {"name", "notebooks", "profile", "parameters", "axes", "variants", "description", "blocks", "score",
               "batchnorm_check", "describe_against"}
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
            raise GridError(f"{where}: notebooks[{i}] must be a name or {{notebook: NAME, parameters: {{...}}}}, "
                            f"got {e!r}")

    profile = raw.get("profile")
    if profile is not None and not isinstance(profile, str):
        raise GridError(f"{where}: 'profile' must be a string, got {profile!r}")
    params = raw.get("parameters") or {}
    if not isinstance(params, dict):
        raise GridError(f"{where}: 'parameters' must be a mapping")
    score: ScoreSpec | None = None
    if raw.get("score") is not None:
        try:
            score = parse_score_spec(raw["score"], where)
        except ValueError as exc:
            raise GridError(str(exc)) from None
    try:
        batchnorm = parse_batchnorm_spec(raw.get("batchnorm_check"), where)
    except ValueError as exc:
        raise GridError(str(exc)) from None
    if batchnorm is not None and score is None:
        raise GridError(f"{where}: batchnorm_check reads the checkpoint the runner scores: it needs a 'score' block")
    against = raw.get("describe_against")
    if against is not None:
        if not isinstance(against, str) or not _NAME_RE.fullmatch(against) or ".." in against:
            raise GridError(f"{where}: describe_against must name another grid (its published folder beside this "
                            f"one's), got {against!r}")
        if score is None:
            raise GridError(f"{where}: describe_against compares the runs' scores: it needs a 'score' block")
        if against == _grid_name(raw, src, where):
            raise GridError(f"{where}: describe_against names this grid itself; name another grid")

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
            sub = {
                "notebooks": nbs_raw,
                "profile": profile,
                "parameters": {**params, **bparams},
                "axes": b.get("axes") or {},
                "variants": b.get("variants") or [],
                "score": raw.get("score"),
            }
            try:
                blocks.append(load_grid(sub, base=base))
            except GridError as exc:
                raise GridError(f"{where}: blocks[{i}]: {str(exc).removeprefix('grid: ')}") from None
        return Grid(
            name=_grid_name(raw, src, where),
            source=src,
            notebooks=tuple(steps),
            profile=profile,
            parameters=params,
            axes={},
            variants={},
            blocks=tuple(blocks),
            score=score,
            batchnorm=batchnorm,
            describe_against=against,
        )

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
        name=_grid_name(raw, src, where),
        source=src,
        notebooks=tuple(steps),
        profile=profile,
        parameters=params,
        axes=axes,
        variants=variants,
        score=score,
        batchnorm=batchnorm,
        describe_against=against,
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


def id_keys(axis_names: Iterable[str]) -> list[str]:
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
    parts = [f"{SHORT_NAMES.get(k, k.lower())}={_fmt_value(axes[k])}" for k in id_keys(axes)]
    return "_".join(parts) or "run"


def profile_parameters(notebook: Path, profile: str | None) -> dict[str, Any]:
    """Parameters of ``notebooks/params/<profile>/<stem>.yaml`` next to ``notebook`` ({} if absent).

    An absent file is fine for the ``lab`` profile (= the parameters cell) and ``None``; for any
    other profile it is an error, since it would silently run lab-sized.
    """
    from actionpp.notebook.params import ParameterError, load_profile, profile_path

    if profile is None:
        return {}
    if profile == "lab" and not profile_path(notebook, profile).is_file():
        return {}
    try:
        return load_profile(notebook, profile)
    except ParameterError as exc:
        raise GridError(str(exc)) from None


def substitute(value: Any, mapping: Mapping[str, str]) -> Any:
    """``value`` with ``{key}`` replaced by ``mapping[key]`` in every string (lists and dicts recursively)."""
    if isinstance(value, str):
        for k, v in mapping.items():
            value = value.replace("{" + k + "}", v)
        return value
    if isinstance(value, list):
        return [substitute(x, mapping) for x in value]
    if isinstance(value, dict):
        return {k: substitute(x, mapping) for k, x in value.items()}
    return value


def grid_variants(grid: Grid) -> dict[str, Mapping[str, Any]]:
    """Every variant of ``grid``, its own and its blocks', name -> parameters (``name`` left out). Refused with a
    :class:`GridError` when two blocks define one name with different parameters (its runs would share ids)."""
    out: dict[str, Mapping[str, Any]] = {}
    for g in (grid, *grid.blocks):
        for name, params in g.variants.items():
            if name in out and dict(out[name]) != dict(params):
                raise GridError(f"{grid.source or grid.name}: variant {name!r} is defined twice, differently")
            out[name] = params
    return out


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
        return [Run(r.run_id, r.axes, r.notebooks, r.parameters, order[r.run_id], r.score) for r in parts]
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
    return [Run(rid, axes, grid.notebooks, params, order[rid], grid.score) for rid, axes, params in runs]


def grid_fingerprint(runs: Sequence[Run]) -> str:
    """A short digest of a grid's runs (ids and parameters, in shard order): a SLURM array task checks that the
    grid it reads is the one it was submitted for, so ``--shard i/N`` still names the same run."""
    import hashlib
    import json

    body = [[r.run_id, [json.loads(json.dumps(p, default=str)) for p in r.parameters]]
            for r in sorted(runs, key=lambda r: r.index)]
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


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
