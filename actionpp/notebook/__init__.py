"""Strict, reproducible notebook execution and the metrics file every notebook writes.

papermill injects any parameter it is given and only *warns* about names the
notebook does not declare, and it never checks types. This package is the strict
front door used by the demo, by ``replicate`` and by the tests
(:mod:`~actionpp.notebook.params`, :mod:`~actionpp.notebook.run`,
:mod:`~actionpp.notebook.metrics`, :mod:`~actionpp.notebook.strip`):

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

from actionpp.notebook.metrics import METRICS_FILE, read_metrics, write_metrics
from actionpp.notebook.params import (
    Parameter,
    ParameterError,
    check_parameters,
    load_profile,
    parameters_of,
    profile_path,
)
from actionpp.notebook.run import BATCH_ENV, NotebookFailed, execute, export_html, output_dir, setup, widgets_wanted
from actionpp.notebook.strip import is_stripped, strip_outputs, stripped_problems

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
    "widgets_wanted",
    "BATCH_ENV",
    "write_metrics",
    "read_metrics",
    "METRICS_FILE",
    "strip_outputs",
    "is_stripped",
    "stripped_problems",
]
