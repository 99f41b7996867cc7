"""What the lab notebooks need beyond the method library: exercises, the student version, and the
runs notebook 05 compares.

Exercises (:mod:`actionpp.lab.exercises`). Each asks for one short function at a point of a
notebook where understanding matters (the simplex's cosine, the ATS value at T/4, one anchor's
SAACL loss, ...). In the notebook::

    def simplex_cosine(k):
        ### BEGIN SOLUTION
        return -1 / (k - 1)
        ### END SOLUTION

    lab.check("01.simplex_cosine", simplex_cosine)      # the next cell

:func:`check` calls the answer on several random cases, compares it with the library
(``actionpp.centers``, ``actionpp.temperature``, ``actionpp.losses``, ...) and prints **one
line**: ``passed``, ``not done yet`` (the answer is still the stub), or ``not yet right`` with what
the answer returned for which case (never the library's value). The hint comes only after an
attempt: with a wrong answer, or when a stub is checked a second time. An answer that runs the
library function it is checked against (the function itself, a wrapper, an alias, a helper that
calls it) is "not yet right" whatever it returns. The check never raises: an exception inside the
student's function becomes that line too, so a half-done notebook runs to the end (papermill included).

Each notebook 00-04 also asks one interpretive question (read a figure, choose a letter), checked the
same way: the answer is a function that returns the letter. Every question a notebook asks has the
instructor's answer in a Markdown cell tagged ``answer`` (:data:`ANSWER_TAG`), which the student
version drops.

The student version (:mod:`actionpp.lab.export`). One source of truth: the notebooks in
``notebooks/`` hold the solutions between nbgrader's markers (``### BEGIN SOLUTION`` /
``### END SOLUTION``) in code cells tagged ``solution``, the check in the next cell tagged
``check``; :func:`export_student` (``actionpp lab export --student DIR``, ``make lab-student``)
writes the student version, every solution region replaced by ``raise NotImplementedError(...)``
at the region's indentation. Solution cells are self-contained (their own imports), so the tests
execute each one on its own (``tests/test_lab.py``).

Why not nbgrader or otter-grader: both bring a course server or a grading format (a gradebook
database and assignment folders; autograder zips and their own test files) that a self-study lab
does not need, and neither compares an answer with this project's library on random cases out of
the box; the two pieces we need are ~150 lines. The markers are nbgrader's, so a course that uses
nbgrader can still take the source notebooks as they are.

The comparison runs (:mod:`actionpp.lab.runs`): the (method, seed) runs notebook 05 trains,
as a plan shared by the notebook and ``actionpp demo`` (which trains them on the second core
while notebook 04 trains on the first), and a trainer that runs several at once.

The method diagram of the lab guide (:mod:`actionpp.lab.diagram`): ``python -m actionpp.lab.diagram``
draws ``docs/method_diagram.png``.

Taught in notebooks/README.md (the lab guide) and used by notebooks 00-05.
"""

from __future__ import annotations

from actionpp.lab.exercises import (
    EXERCISES,
    Case,
    Exercise,
    Outcome,
    check,
    choice,
    choice_digest,
    exercises_of,
    reset_attempts,
    run_check,
    summary_table,
)
from actionpp.lab.export import (
    ANSWER_TAG,
    BEGIN,
    CHECK_TAG,
    END,
    SOLUTION_TAG,
    STUB,
    checked_names,
    export_student,
    solution_cells,
    student_source,
)

__all__ = [
    "Case",
    "Exercise",
    "Outcome",
    "EXERCISES",
    "BEGIN",
    "END",
    "STUB",
    "SOLUTION_TAG",
    "CHECK_TAG",
    "ANSWER_TAG",
    "check",
    "choice",
    "choice_digest",
    "reset_attempts",
    "run_check",
    "exercises_of",
    "summary_table",
    "student_source",
    "export_student",
    "solution_cells",
    "checked_names",
]
