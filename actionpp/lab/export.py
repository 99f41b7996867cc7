"""The student version of the lab notebooks: solution regions replaced by a stub.

The source notebooks hold each solution between nbgrader's markers, in a code cell tagged
``solution``::

    def simplex_cosine(k):
        ### BEGIN SOLUTION
        return -1 / (k - 1)
        ### END SOLUTION

:func:`student_source` turns the region into :data:`STUB` at the indentation of its ``BEGIN``
line; :func:`export_student` does it for whole notebooks (outputs stripped, ids and tags kept,
parameter profiles copied), refusing malformed markers before anything is written.

The student folder follows the ownership rule of :mod:`actionpp.atomic`: it is new or empty, or one
an earlier export created (its ``.actionpp-lab-export.json`` marker lists every file written with its
SHA-256). A file there is replaced only with ``overwrite`` and only if unchanged since the export: a
notebook the student edited is never replaced, and a folder of solution notebooks never receives stubs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from actionpp.atomic import atomic_write_text, check_file, check_folder, claim_folder, record_files, written_unchanged

__all__ = ["BEGIN", "END", "STUB", "SOLUTION_TAG", "CHECK_TAG", "OWNER", "ExportError", "student_source",
           "export_student", "solution_cells", "checked_names"]

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
STUB = 'raise NotImplementedError("your answer here")'
SOLUTION_TAG = "solution"
CHECK_TAG = "check"
ANSWER_TAG = "answer"  # the instructor's answer to a question (a Markdown cell): absent from the student version
OWNER = "lab-export"  # the student folder's marker: .actionpp-lab-export.json (actionpp.atomic)


class ExportError(ValueError):
    """Malformed solution markers, or a student version that would replace its own source (actionpp.cli: exit 2)."""


_BEGIN_RE = re.compile(r"^(?P<indent>[ \t]*)" + re.escape(BEGIN) + r"[ \t]*$")
_END_RE = re.compile(r"^[ \t]*" + re.escape(END) + r"[ \t]*$")


def student_source(source: str, where: str = "cell") -> str:
    """``source`` with every solution region (markers included) replaced by :data:`STUB` at the
    indentation of its ``### BEGIN SOLUTION`` line. ValueError naming ``where`` on an unclosed
    region, an ``END`` without ``BEGIN`` or nested regions."""
    out: list[str] = []
    inside: str | None = None
    for n, line in enumerate(source.splitlines(), 1):
        begin, end = _BEGIN_RE.match(line), _END_RE.match(line)
        if begin:
            if inside is not None:
                raise ExportError(f"{where}, line {n}: {BEGIN} inside another solution region")
            inside = begin.group("indent")
            out.append(f"{inside}{STUB}")
        elif end:
            if inside is None:
                raise ExportError(f"{where}, line {n}: {END} without {BEGIN}")
            inside = None
        elif inside is None:
            out.append(line)
    if inside is not None:
        raise ExportError(f"{where}: {BEGIN} is never closed by {END}")
    return "\n".join(out)


def _has_markers(source: str) -> bool:
    return any(_BEGIN_RE.match(line) or _END_RE.match(line) for line in source.splitlines())


def export_student(
    notebooks: Iterable[str | Path],
    out_dir: str | Path,
    copy_params: bool = True,
    overwrite: bool = False,
) -> list[Path]:
    """Write the student version of each notebook into ``out_dir``; return the written paths.

    Solution regions become :data:`STUB`; outputs and execution counts are dropped; cell ids,
    tags and everything else stay. A notebook without exercises is copied the same way (so the
    folder is a whole lab). With ``copy_params`` the parameter profiles
    ``params/<profile>/<stem>.yaml`` next to each notebook are copied to ``out_dir/params``.
    Raises :class:`ExportError` (a ValueError) naming the notebook and cell for a marker outside a cell
    tagged ``solution``, a ``solution`` cell without markers, or malformed markers, and
    :class:`~actionpp.atomic.OwnershipError` for a folder or file the export may not write (see the
    module docstring; ``overwrite`` replaces files an earlier export wrote and nobody edited since);
    nothing is written then.
    """
    import nbformat

    out = Path(out_dir)
    students = []
    for path in (Path(p) for p in notebooks):
        try:
            nb = nbformat.read(path, as_version=4)
        except Exception as exc:  # noqa: BLE001 - nbformat raises several kinds for a file that is not a notebook
            raise ExportError(f"{path}: not a notebook ({' '.join(str(exc).split())[:120]})") from None
        for i, cell in enumerate(nb.cells):
            where = f"{path.name}, cell {i} (id {cell.get('id', '?')})"
            tags = cell.get("metadata", {}).get("tags", [])
            marked = cell.cell_type == "code" and _has_markers(cell.source)
            if marked and SOLUTION_TAG not in tags:
                raise ExportError(f"{where}: solution markers in a cell not tagged {SOLUTION_TAG!r}")
            if SOLUTION_TAG in tags and not marked:
                raise ExportError(f"{where}: tagged {SOLUTION_TAG!r} but holds no {BEGIN} ... {END} region")
            if marked:
                cell.source = student_source(cell.source, where)
            if cell.cell_type == "code":
                cell.outputs = []
                cell.execution_count = None
        nb.cells = [c for c in nb.cells if ANSWER_TAG not in c.get("metadata", {}).get("tags", [])]
        students.append((path, nb))
    # every file to write, checked before the first byte (actionpp.atomic's rule)
    plan: list[tuple[Path, str]] = []  # (target, text)
    for path, nb in students:
        target = out / path.name
        if target.resolve() == path.resolve():
            raise ExportError(f"the student version of {path} would overwrite it: choose another folder")
        plan.append((target, nbformat.writes(nb)))
        if copy_params:
            for prof in sorted((path.parent / "params").glob(f"*/{path.stem}.yaml")):
                plan.append((out / "params" / prof.parent.name / prof.name, prof.read_text(encoding="utf-8")))
    names = [t for t, _ in plan]
    dup = sorted({t.name for t in names if names.count(t) > 1})
    if dup:
        raise ExportError(f"two notebooks would be written to the same file {out / dup[0]}: export them one by one")
    check_folder(out, OWNER)
    for target, _ in plan:
        check_file(target, overwrite=overwrite, what="a file an earlier export wrote and nobody edited since",
                   ours=lambda f: written_unchanged(out, OWNER, f))
    claim_folder(out, OWNER)
    for target, text in plan:
        atomic_write_text(target, text if text.endswith("\n") else text + "\n")  # as nbformat.write
        record_files(out, OWNER, [target])
    return [out / path.name for path, _ in students]


def solution_cells(notebook: str | Path) -> list[tuple[str, str]]:
    """``(cell id, source)`` of the cells tagged ``solution`` in ``notebook`` (the tests execute them)."""
    import nbformat

    nb = nbformat.read(Path(notebook), as_version=4)
    return [(str(c.get("id", "")), c.source) for c in nb.cells
            if c.cell_type == "code" and SOLUTION_TAG in c.get("metadata", {}).get("tags", [])]


def checked_names(source: str) -> list[str]:
    """Exercise names that ``source`` passes to ``check(...)`` (``lab.check("01.x", f)``)."""
    return re.findall(r"check\(\s*[\"']([0-9]{2}\.[A-Za-z0-9_]+)[\"']", source)
