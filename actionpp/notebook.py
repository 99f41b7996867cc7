"""Strict, reproducible notebook execution and the metrics file every notebook writes.

papermill injects any parameter it is given and only *warns* about names the
notebook does not declare, and it never checks types. This module is the strict
front door used by the demo, by ``replicate`` and by the tests:

- :func:`parameters_of` reads the declared parameters of a notebook (name ->
  ``(type_name, default, help)``) with ``papermill.inspect_notebook`` and refuses
  a ``parameters`` cell that papermill's own parser misreads (a line it silently
  drops, a default that is not a literal).
- :func:`execute` merges a parameter profile (``notebooks/params/<profile>/<stem>.yaml``)
  with explicit overrides, rejects unknown names and mistyped values with a
  :class:`ParameterError` *before* any kernel starts, runs the notebook and, when a
  cell fails, raises :class:`NotebookFailed` while leaving the partially executed
  notebook at ``output`` for inspection.
- :func:`write_metrics` / :func:`read_metrics`: the last cell of every notebook
  records its numbers in ``<OUT_DIR>/metrics.json`` (atomic write) for tests and
  batch replication.
- :func:`strip_outputs` / :func:`is_stripped`: notebooks are stored without outputs.

Parameter cells follow one convention (docs/style.md): one cell tagged
``parameters`` holding ``UPPER_SNAKE: type = literal  # why`` lines and nothing
derived. Supported declared types: ``int``, ``float`` (an ``int`` value is
accepted), ``bool``, ``str``, ``list[T]``, ``tuple[T, ...]``, ``dict[K, V]``,
``Optional[T]`` / ``Union[...]`` (papermill's parser does not understand
``T | None`` annotations: write ``Optional[T]``) and ``Any``.

Taught in notebooks/README.md (every notebook is run through this module).
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import yaml

from actionpp.atomic import atomic_write_text

__all__ = [
    "Parameter",
    "ParameterError",
    "NotebookFailed",
    "parameters_of",
    "profile_path",
    "load_profile",
    "check_parameters",
    "execute",
    "export_html",
    "output_dir",
    "setup",
    "write_metrics",
    "read_metrics",
    "METRICS_FILE",
    "strip_outputs",
    "is_stripped",
    "stripped_problems",
]

METRICS_FILE = "metrics.json"
_NOTES_KEY = "_notes"


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


class ParameterError(ValueError):
    """A parameter problem found before execution: unknown name, wrong type, bad profile.

    The message names the notebook, the parameter and what was expected.
    """


class NotebookFailed(RuntimeError):
    """A notebook raised while executing; ``output`` holds the partially executed copy.

    Attributes: ``notebook`` and ``output`` (paths), ``cell_index`` (0-based index of
    the failing cell in the *source* notebook, or ``None`` when the kernel died or a
    cell timed out),
    ``ename`` (exception class name) and ``evalue`` (its message).
    """

    def __init__(
        self,
        notebook: Path,
        output: Path,
        cell_index: int | None,
        ename: str,
        evalue: str,
    ) -> None:
        self.notebook = Path(notebook)
        self.output = Path(output)
        self.cell_index = cell_index
        self.ename = ename
        self.evalue = evalue
        where = f"cell {cell_index}" if cell_index is not None else "execution"
        super().__init__(
            f"{self.notebook} failed in {where}: {ename}: {evalue} "
            f"(partially executed notebook: {self.output})"
        )

    def __reduce__(self):  # keep picklable (multiprocessing, pytest-xdist)
        return (
            type(self),
            (self.notebook, self.output, self.cell_index, self.ename, self.evalue),
        )


# ---------------------------------------------------------------------------
# Declared parameters
# ---------------------------------------------------------------------------


class Parameter(NamedTuple):
    """One declared parameter: ``type_name`` as written (``"None"`` when untyped),
    ``default`` as a Python value (the literal evaluated), ``help`` (the trailing comment)."""

    type_name: str
    default: Any
    help: str


def _parameters_cell(nb: Any) -> tuple[int, str] | None:
    for i, cell in enumerate(nb.cells):
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            return i, cell.source
    return None


def _assigned_names(source: str) -> list[str]:
    """Names assigned at top level of a cell (``X = ...``, ``X: T = ...``), in order."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    names.append(t.id)
    return names


def parameters_of(notebook_path: str | os.PathLike[str]) -> dict[str, Parameter]:
    """Declared parameters of a notebook: name -> ``Parameter(type_name, default, help)``.

    Read with ``papermill.inspect_notebook`` (so it sees what papermill sees), then
    cross-checked against a Python parse of the ``parameters`` cell: an assignment
    papermill's line parser skips (an ``=`` inside a string or comment, a ``T | None``
    annotation) or a default that is not a Python literal raises :class:`ParameterError`,
    because such a parameter could not be checked or overridden reliably.

    A notebook without a ``parameters`` cell has no parameters (empty dict).
    """
    import nbformat
    import papermill

    path = Path(notebook_path)
    if not path.is_file():
        raise FileNotFoundError(f"notebook not found: {path}")
    nb = nbformat.read(path, as_version=4)
    found = _parameters_cell(nb)
    if found is None:
        return {}
    cell_index, source = found
    inspected = papermill.inspect_notebook(str(path))
    missing = [n for n in _assigned_names(source) if n not in inspected]
    if missing:
        raise ParameterError(
            f"{path}: papermill cannot parse the declaration of {missing} in the parameters cell "
            f"(cell {cell_index}); keep one 'NAME: type = literal  # why' per line, no '=' in the "
            "comment or in string values, and write Optional[T] rather than 'T | None'"
        )
    params: dict[str, Parameter] = {}
    for name, info in inspected.items():
        raw = info["default"]
        try:
            default = ast.literal_eval(raw)
        except (ValueError, SyntaxError) as exc:
            raise ParameterError(
                f"{path}: default of parameter {name!r} is not a literal ({raw!r}); "
                "the parameters cell holds literals only (derive values in a later cell)"
            ) from exc
        type_name = info["inferred_type_name"] or "None"
        params[name] = Parameter(str(type_name), default, info.get("help", "") or "")
    return params


# ---------------------------------------------------------------------------
# Type checking of values against declared type names
# ---------------------------------------------------------------------------

_TOKEN = re.compile(r"\s*(\w+|\.\.\.|[\[\],|])")


class _Unsupported(Exception):
    pass


def _parse_type(text: str) -> Any:
    """Parse a type name into a nested tuple ``(name, [args])``; raises _Unsupported."""
    tokens = _TOKEN.findall(text)
    if "".join(tokens) != re.sub(r"\s+", "", text):
        raise _Unsupported(text)
    pos = 0

    def union() -> Any:
        nonlocal pos
        options = [atom()]
        while pos < len(tokens) and tokens[pos] == "|":
            pos += 1
            options.append(atom())
        return options[0] if len(options) == 1 else ("Union", options)

    def atom() -> Any:
        nonlocal pos
        if pos >= len(tokens):
            raise _Unsupported(text)
        name = tokens[pos]
        pos += 1
        args: list[Any] = []
        if pos < len(tokens) and tokens[pos] == "[":
            pos += 1
            args.append(union())
            while pos < len(tokens) and tokens[pos] == ",":
                pos += 1
                args.append(union())
            if pos >= len(tokens) or tokens[pos] != "]":
                raise _Unsupported(text)
            pos += 1
        return (name, args)

    tree = union()
    if pos != len(tokens):
        raise _Unsupported(text)
    return tree


def _matches(value: Any, tree: Any) -> bool:
    name, args = tree
    if name == "Union":
        return any(_matches(value, t) for t in args)
    if name == "Optional":
        return value is None or any(_matches(value, t) for t in args)
    if name == "Any":
        return True
    if name == "None":
        return value is None
    if name == "bool":
        return isinstance(value, bool)
    if name == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if name == "str":
        return isinstance(value, str)
    if name in ("list", "List", "tuple", "Tuple", "Sequence"):
        if not isinstance(value, (list, tuple)):
            return False
        if not args:
            return True
        if name in ("tuple", "Tuple") and not (len(args) == 2 and args[1][0] == "..."):
            return len(value) == len(args) and all(_matches(v, t) for v, t in zip(value, args))
        return all(_matches(v, args[0]) for v in value)
    if name in ("dict", "Dict", "Mapping"):
        if not isinstance(value, dict):
            return False
        if not args:
            return True
        if len(args) != 2:
            raise _Unsupported(name)
        return all(_matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items())
    raise _Unsupported(name)


def _yaml_hint(value: Any, type_name: str) -> str:
    if isinstance(value, str) and "float" in type_name:
        try:
            float(value)
        except ValueError:
            return ""
        return " (YAML reads exponent numbers without a dot, such as 1e-3, as strings: write 1.0e-3)"
    return ""


def check_parameters(
    notebook: str | os.PathLike[str],
    parameters: Mapping[str, Any],
    declared: Mapping[str, Parameter] | None = None,
) -> dict[str, Any]:
    """Validate ``parameters`` against the notebook's declared ones; return them as a dict.

    Unknown names and values whose type does not match the declared type raise
    :class:`ParameterError` naming the notebook, the parameter and the expected type.
    ``int`` is accepted where ``float`` is declared, ``None`` only where the type is
    ``Optional[...]``; ``bool`` never passes for ``int``/``float``. Untyped parameters
    (``X = 1``) accept any value, since nothing was declared to check against.
    """
    path = Path(notebook)
    declared = parameters_of(path) if declared is None else declared
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise ParameterError(
            f"{path}: unknown parameter(s) {unknown}; declared parameters are {sorted(declared)}"
        )
    for name, value in parameters.items():
        type_name = declared[name].type_name
        if type_name == "None":  # untyped declaration: nothing to check against
            continue
        try:
            ok = _matches(value, _parse_type(type_name))
        except _Unsupported as exc:
            raise ParameterError(
                f"{path}: parameter {name!r} is declared with type {type_name!r}, which the strict "
                f"checker does not support (unsupported part: {exc}); use int, float, bool, str, "
                "list[...], tuple[...], dict[..., ...], Optional[...] or Any"
            ) from None
        if not ok:
            raise ParameterError(
                f"{path}: parameter {name!r} expects {type_name}, got {value!r} "
                f"({type(value).__name__}){_yaml_hint(value, type_name)}"
            )
    return dict(parameters)


# ---------------------------------------------------------------------------
# Profiles
# ---------------------------------------------------------------------------


def profile_path(notebook: str | os.PathLike[str], profile: str) -> Path:
    """``<notebook folder>/params/<profile>/<notebook stem>.yaml``."""
    nb = Path(notebook)
    return nb.parent / "params" / profile / f"{nb.stem}.yaml"


def load_profile(notebook: str | os.PathLike[str], profile: str) -> dict[str, Any]:
    """Parameters of ``profile`` for ``notebook`` (a YAML mapping; an empty file is ``{}``).

    A missing file or a file that is not a mapping of names raises :class:`ParameterError`.
    Types are not checked here (see :func:`check_parameters`).
    """
    path = profile_path(notebook, profile)
    if not path.is_file():
        available = sorted(p.name for p in path.parent.parent.iterdir() if p.is_dir()) if path.parent.parent.is_dir() else []
        raise ParameterError(
            f"{notebook}: no parameter profile {profile!r} (looked for {path}; profiles present: {available})"
        )
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ParameterError(f"{path}: a parameter profile must be a mapping of parameter names to values")
    return data


# ---------------------------------------------------------------------------
# Execution
# ---------------------------------------------------------------------------


def execute(
    notebook: str | os.PathLike[str],
    output: str | os.PathLike[str],
    parameters: Mapping[str, Any] | None = None,
    profile: str | None = None,
    cwd: str | os.PathLike[str] | None = None,
    kernel_name: str = "python3",
    progress: bool = False,
    timeout: float | None = None,
) -> Path:
    """Execute ``notebook`` with papermill into ``output``, strictly; return ``output``.

    Parameters are the profile's (``params/<profile>/<stem>.yaml`` next to the notebook,
    when ``profile`` is given) updated with ``parameters``. Everything is validated by
    :func:`check_parameters` before a kernel starts. ``cwd`` is the kernel's working
    directory (default: the caller's), ``timeout`` the per-cell limit in seconds.

    Raises :class:`ParameterError` (nothing executed, no output written), ``ValueError``
    for an unknown ``kernel_name``, or :class:`NotebookFailed` (a cell raised, the kernel
    died or a cell timed out; the partially executed notebook, error included, is at
    ``output``). A previous file at ``output`` is removed before the kernel starts.
    """
    import papermill
    from papermill.exceptions import PapermillException, PapermillExecutionError

    nb_path = Path(notebook)
    out_path = Path(output)
    declared = parameters_of(nb_path)
    merged: dict[str, Any] = {}
    if profile is not None:
        merged.update(load_profile(nb_path, profile))
    if parameters:
        merged.update(parameters)
    merged = check_parameters(nb_path, merged, declared)
    if out_path.resolve() == nb_path.resolve():
        raise ValueError(f"output {out_path} would overwrite the source notebook")
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(kernel_name)
    except NoSuchKernel:
        raise ValueError(
            f"no Jupyter kernel named {kernel_name!r} (install one with "
            f"`python -m ipykernel install --sys-prefix --name {kernel_name}`)"
        ) from None
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.unlink(missing_ok=True)  # never leave a previous run's copy that looks like this one's
    # The kernel inherits this process's environment: BATCH_ENV tells the notebook that no
    # person is watching, so `widgets_wanted` skips ipywidgets (static figures still drawn).
    previous = os.environ.get(BATCH_ENV)
    os.environ[BATCH_ENV] = "1"
    try:
        papermill.execute_notebook(
            str(nb_path),
            str(out_path),
            parameters=merged,
            kernel_name=kernel_name,
            progress_bar=progress,
            cwd=None if cwd is None else str(cwd),
            execution_timeout=timeout,
        )
    except PapermillExecutionError as exc:
        raise NotebookFailed(nb_path, out_path, _source_index(nb_path, exc.source, exc.cell_index),
                             exc.ename, exc.evalue) from exc
    except (PapermillException, RuntimeError, TimeoutError) as exc:
        # nbclient's CellTimeoutError (a TimeoutError) and DeadKernelError (a RuntimeError)
        raise NotebookFailed(nb_path, out_path, None, type(exc).__name__, str(exc)) from exc
    finally:
        if previous is None:
            os.environ.pop(BATCH_ENV, None)
        else:
            os.environ[BATCH_ENV] = previous
    return out_path


BATCH_ENV = "ACTIONPP_BATCH"


def widgets_wanted(interactive: bool) -> bool:
    """Whether a notebook should build ipywidgets: ``INTERACTIVE`` and not a batch run.

    :func:`execute` (used by ``actionpp demo``, ``actionpp replicate`` and the tests) sets
    ``ACTIONPP_BATCH=1`` for the kernel; set it yourself for a plain ``papermill`` batch.
    Widgets in a kernel with no front end are useless and, under nbclient, were seen to
    stall a cell, so batch runs draw only the static figures that every notebook has anyway.
    """
    return bool(interactive) and os.environ.get(BATCH_ENV, "") not in ("1", "true", "yes")


def _source_index(notebook: Path, source: str, fallback: int) -> int:
    """Index in the source notebook of the failing cell (papermill counts its injected cell)."""
    import nbformat

    cells = nbformat.read(notebook, as_version=4).cells
    hits = [i for i, c in enumerate(cells) if c.cell_type == "code" and c.source == source]
    if not hits:
        return fallback
    return min(hits, key=lambda i: (abs(fallback - i), i))  # identical cells: the nearest one


def export_html(executed_ipynb: str | os.PathLike[str], html_path: str | os.PathLike[str]) -> Path:
    """Render an executed notebook to a self-contained HTML page with nbconvert; return its path."""
    import nbformat
    from nbconvert import HTMLExporter

    src = Path(executed_ipynb)
    dst = Path(html_path)
    nb = nbformat.read(src, as_version=4)
    body, _ = HTMLExporter().from_notebook_node(nb)
    dst.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write_text(dst, body)
    return dst


def output_dir(out_dir: str | os.PathLike[str]) -> Path:
    """Resolve a notebook's ``OUT_DIR`` and create it.

    A relative path is taken from the repository root (not from the kernel's working
    directory, which differs between JupyterLab and papermill), so
    ``"runs/notebooks/01_class_centers"`` lands in the repository's ignored ``runs/``.
    """
    from actionpp.paths import repo_root

    p = Path(out_dir).expanduser()
    if not p.is_absolute():
        p = repo_root() / p
    p.mkdir(parents=True, exist_ok=True)
    return p


def setup(seed: int, device: str) -> "torch.device":
    """The first lines of every notebook: seed ``random``, numpy and torch, check ``device``.

    ``device`` is a torch device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``);
    a device that does not exist on this machine raises ``ValueError`` naming it, instead
    of failing later inside a cell. Returns the ``torch.device``.
    """
    import random

    import numpy as np
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"DEVICE={device!r} is not a torch device string ({exc})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"DEVICE={device!r} but torch.cuda.is_available() is False; use DEVICE='cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"DEVICE={device!r} but only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"DEVICE={device!r} but MPS is not available on this machine; use DEVICE='cpu'")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"DEVICE={device!r}: use 'cpu', 'cuda[:i]' or 'mps'")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"SEED must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return dev


# ---------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------


def _atomic_write_text(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def _plain(value: Any, path: tuple[Any, ...], notes: list[dict[str, Any]]) -> Any:
    """Convert to JSON-ready Python; non-finite floats become None, recorded in ``notes``."""
    try:  # torch without importing it when unused
        import torch

        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            value = value.item() if value.dim() == 0 else value.tolist()
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    try:
        import numpy as np

        if isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, np.generic):
            value = value.item()
    except ImportError:  # pragma: no cover
        pass
    where = "/".join(map(str, path)) or "top level"
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        notes.append({"path": list(path), "value": "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")})
        return None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"metrics key {k!r} under {where} is not a string")
            if not path and k == _NOTES_KEY:
                raise ValueError(f"metrics key {_NOTES_KEY!r} is reserved")
            out[k] = _plain(v, path + (k,), notes)
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v, path + (i,), notes) for i, v in enumerate(value)]
    raise TypeError(f"metrics value at {where!r} has type {type(value).__name__}, which JSON cannot hold")


def write_metrics(out_dir: str | os.PathLike[str], metrics: Mapping[str, Any]) -> Path:
    """Write ``metrics`` to ``<out_dir>/metrics.json`` atomically (temp file + ``os.replace``).

    numpy / torch scalars and arrays become Python numbers and lists, paths strings,
    tuples lists. NaN and +-inf become ``null`` (strict JSON); the file then holds a
    top-level ``"_notes"`` entry listing each such value's key path and what it was
    (``{"path": ["a", "b", 0], "value": "nan"}``) so that :func:`read_metrics` restores
    them. Keys must be strings; ``"_notes"`` is reserved at the top level. ``out_dir`` is
    created if missing. Nothing is written when a value cannot be converted. Returns the
    file's path.
    """
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a mapping, got {type(metrics).__name__}")
    notes: list[dict[str, Any]] = []
    data = _plain(metrics, (), notes)
    if notes:
        data[_NOTES_KEY] = {"non_finite_written_as_null": notes}
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / METRICS_FILE
    _atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")
    return path


def read_metrics(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``<out_dir>/metrics.json`` (or the file itself if given); NaN / inf restored."""
    path = Path(out_dir)
    if path.is_dir():
        path = path / METRICS_FILE
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    notes = data.pop(_NOTES_KEY, {}).get("non_finite_written_as_null", [])
    for note in notes:
        *parents, last = note["path"]
        node: Any = data
        for part in parents:
            node = node[part]
        node[last] = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}[note["value"]]
    return data


# ---------------------------------------------------------------------------
# Stripped storage
# ---------------------------------------------------------------------------

_VOLATILE_CELL_METADATA = ("execution", "papermill", "collapsed", "scrolled", "ExecuteTime")
_VOLATILE_NB_METADATA = ("papermill", "widgets", "signature")


def stripped_problems(path: str | os.PathLike[str]) -> list[str]:
    """Why a stored notebook is not clean: outputs, execution counts, run metadata,
    or a number of ``parameters``-tagged cells other than one. Empty list = clean."""
    import nbformat

    nb = nbformat.read(Path(path), as_version=4)
    problems: list[str] = []
    n_param = 0
    for i, cell in enumerate(nb.cells):
        tags = cell.get("metadata", {}).get("tags", [])
        n_param += "parameters" in tags
        if "injected-parameters" in tags:
            problems.append(f"cell {i} is a papermill injected-parameters cell")
        if cell.cell_type == "code":
            if cell.get("outputs"):
                problems.append(f"cell {i} has {len(cell.outputs)} output(s)")
            if cell.get("execution_count") is not None:
                problems.append(f"cell {i} has execution_count {cell.execution_count}")
        for key in _VOLATILE_CELL_METADATA:
            if key in cell.get("metadata", {}):
                problems.append(f"cell {i} has run metadata {key!r}")
    for key in _VOLATILE_NB_METADATA:
        if key in nb.metadata:
            problems.append(f"notebook metadata holds run data {key!r}")
    if n_param != 1:
        problems.append(f"{n_param} cells are tagged 'parameters' (expected exactly 1)")
    return problems


def is_stripped(path: str | os.PathLike[str]) -> bool:
    """True when :func:`stripped_problems` finds nothing."""
    return not stripped_problems(path)


def strip_outputs(path: str | os.PathLike[str]) -> Path:
    """Remove outputs, execution counts, papermill's injected cell and run metadata in place.

    Cell tags (``parameters`` in particular), sources and ids are kept. Returns the path.
    """
    import nbformat

    p = Path(path)
    nb = nbformat.read(p, as_version=4)
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        for key in _VOLATILE_CELL_METADATA:
            cell.metadata.pop(key, None)
    for key in _VOLATILE_NB_METADATA:
        nb.metadata.pop(key, None)
    text = nbformat.writes(nb)
    _atomic_write_text(p, text if text.endswith("\n") else text + "\n")
    return p
