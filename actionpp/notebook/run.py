"""Running a notebook strictly, and the helpers its setup cell calls.

- :func:`execute` merges a parameter profile with explicit overrides, checks them
  (:mod:`actionpp.notebook.params`) *before* any kernel starts, runs the notebook and,
  when a cell fails, raises :class:`NotebookFailed` while leaving the partially
  executed notebook at ``output`` for inspection;
- :func:`setup` (seeds, device), :func:`output_dir`, :func:`widgets_wanted` (no
  sliders in batch runs), :func:`export_html`.

Taught in notebooks/README.md (every notebook is run through this package).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actionpp.atomic import atomic_write_text, check_file
from actionpp.notebook.params import check_parameters, load_profile, parameters_of

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

__all__ = ["NotebookFailed", "execute", "export_html", "output_dir", "setup", "widgets_wanted", "BATCH_ENV",
           "check_output", "is_executed_notebook", "is_notebook_html"]


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
    ``output``). A previous file at ``output`` is removed before the kernel starts: ``output``
    belongs to the caller (the replicate runner's run folder, the demo's folder); a caller writing
    where a user chose checks it first with :func:`check_output` (``actionpp notebook run`` does).
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


def is_executed_notebook(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a notebook papermill executed (its ``metadata.papermill`` records the output path):
    an executed copy, a build output that :func:`execute` may replace. Stored notebooks are stripped."""
    import json

    try:
        with open(path, encoding="utf-8") as fh:
            nb = json.load(fh)
    except (OSError, ValueError):
        return False
    meta = nb.get("metadata") if isinstance(nb, dict) else None
    pm = meta.get("papermill") if isinstance(meta, dict) else None
    return isinstance(pm, dict) and "output_path" in pm


def is_notebook_html(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an HTML page nbconvert rendered from a notebook (what :func:`export_html` writes)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(1 << 20)
    except OSError:
        return False
    return head.lstrip().lower().startswith(b"<!doctype html>") and b"jp-Notebook" in head


def check_output(output: str | os.PathLike[str], *, overwrite: bool, html: bool = False) -> None:
    """Refuse (:class:`~actionpp.atomic.OwnershipError` naming it) an ``output`` that exists and is not an
    executed notebook (with ``html``: its HTML page next to it, ``.html``, not an nbconvert page), or is
    one but ``overwrite`` was not asked for. The ownership rule of :mod:`actionpp.atomic`."""
    out = Path(output)
    check_file(out, overwrite=overwrite, ours=is_executed_notebook,
               what="a notebook executed by actionpp (papermill's metadata)")
    if html:
        check_file(out.with_suffix(".html"), overwrite=overwrite, ours=is_notebook_html,
                   what="the HTML page of an executed notebook")


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
    atomic_write_text(dst, body)
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


def setup(seed: int, device: str) -> torch.device:
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
