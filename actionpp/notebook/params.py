"""A notebook's declared parameters, their types, and parameter profiles.

papermill injects any parameter it is given and only *warns* about names the
notebook does not declare, and it never checks types. Here:

- :func:`parameters_of` reads the declared parameters of a notebook (name ->
  ``(type_name, default, help)``) with ``papermill.inspect_notebook`` and refuses
  a ``parameters`` cell that papermill's own parser misreads (a line it silently
  drops, a default that is not a literal);
- :func:`check_parameters` rejects unknown names and mistyped values with a
  :class:`ParameterError` naming the notebook, the parameter and what was expected;
- :func:`load_profile` reads ``notebooks/params/<profile>/<stem>.yaml``.

Parameter cells follow one convention (docs/style.md): one cell tagged
``parameters`` holding ``UPPER_SNAKE: type = literal  # why`` lines and nothing
derived. Supported declared types: ``int``, ``float`` (an ``int`` value is
accepted), ``bool``, ``str``, ``list[T]``, ``tuple[T, ...]``, ``dict[K, V]``,
``Optional[T]`` / ``Union[...]`` (papermill's parser does not understand
``T | None`` annotations: write ``Optional[T]``) and ``Any``.

Taught in notebooks/README.md (every notebook is run through this package).
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import yaml

__all__ = ["Parameter", "ParameterError", "parameters_of", "check_parameters", "profile_path", "load_profile"]


class ParameterError(ValueError):
    """A parameter problem found before execution: unknown name, wrong type, bad profile.

    The message names the notebook, the parameter and what was expected.
    """




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
        folder = path.parent.parent
        available = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
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
