"""The lab's exercises (actionpp.lab): solutions pass; a stub gets "not done yet" without a hint the first
time and with it the second; a wrong answer gets what it returned (never the library's value) and the
hint; an answer that runs the library function it is checked against fails; the interpretive questions;
the instructor's answers, absent from the student export; and the student notebooks running end to end
with every check "not done yet".

The solution cells are executed on their own (they are self-contained by convention), so the
grading of every exercise is tested in seconds; one test per notebook runs the student version
under papermill (smoke profile), as a student's half-done notebook would run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import nbformat
import pytest

from actionpp import lab
from actionpp import notebook as nbx
from actionpp.paths import repo_root

NOTEBOOK_DIR = repo_root() / "notebooks"
LAB_NOTEBOOKS = sorted({NOTEBOOK_DIR / f"{e.notebook}.ipynb" for e in lab.EXERCISES.values()})
# the notebooks whose exercises this file covers one by one (07's are tested with their notebook)
COVERED = ("00", "01", "02", "03", "04", "05")
MINE = [e for e in lab.EXERCISES.values() if e.notebook[:2] in COVERED]
QUESTIONS = [e for e in MINE if e.library == "the figure above"]  # interpretive questions (a letter)
LINE = re.compile(r"^\[(passed|not done yet|not yet right)\] ([0-9]{2}\.[A-Za-z0-9_]+): ")


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


def _solutions(notebook: Path, student: bool = False) -> dict[str, Any]:
    """Execute every solution cell of ``notebook`` (or its student version) in one namespace."""
    ns: dict[str, Any] = {}
    for cid, source in lab.solution_cells(notebook):
        code = lab.student_source(source, cid) if student else source
        exec(compile(code, f"{notebook.name}:{cid}", "exec"), ns)  # noqa: S102 - our own notebooks
    return ns


def _checks(notebook: Path) -> list[tuple[str, str]]:
    """``(exercise name, answer variable)`` of every check cell, in order."""
    out = []
    nb = nbformat.read(notebook, as_version=4)
    for c in nb.cells:
        if lab.CHECK_TAG in c.metadata.get("tags", []):
            for m in re.finditer(r"check\(\s*[\"']([^\"']+)[\"']\s*,\s*([A-Za-z_][A-Za-z0-9_]*)", c.source):
                out.append((m.group(1), m.group(2)))
    return out


# ---------------------------------------------------------------------------------------------
# The registry and the notebooks agree
# ---------------------------------------------------------------------------------------------


def test_notebooks_01_to_05_have_two_or_three_exercises_and_00_to_05_one_question_each():
    functions = {n: [e.name for e in MINE if e.notebook[:2] == n and e not in QUESTIONS] for n in COVERED[1:]}
    assert all(2 <= len(v) <= 3 for v in functions.values()), functions
    questions = {n: [e.name for e in QUESTIONS if e.notebook[:2] == n] for n in COVERED}
    assert all(len(questions[n]) == 1 for n in COVERED), questions
    for e in lab.EXERCISES.values():
        assert e.name.startswith(e.notebook[:2] + "."), e.name
        assert (NOTEBOOK_DIR / f"{e.notebook}.ipynb").is_file(), e.notebook


@pytest.mark.parametrize("nb", LAB_NOTEBOOKS, ids=_ids(LAB_NOTEBOOKS))
def test_each_exercise_has_a_solution_cell_then_its_check(nb):
    cells = nbformat.read(nb, as_version=4).cells
    checks = _checks(nb)
    assert [n for n, _ in checks] == [e.name for e in lab.exercises_of(nb.stem)], (
        "check cells must name the notebook's exercises in registry order")
    for i, c in enumerate(cells):
        if lab.CHECK_TAG in c.metadata.get("tags", []):
            prev = cells[i - 1]
            assert lab.SOLUTION_TAG in prev.metadata.get("tags", []), f"{nb.name}: cell {c.id} follows no solution cell"
            (name, var), = [(n, v) for n, v in _checks(nb) if n in lab.checked_names(c.source)]
            assert re.search(rf"def {var}\(", prev.source), f"{nb.name}: {c.id} checks {var}, not defined above it"


# ---------------------------------------------------------------------------------------------
# Grading
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("nb", LAB_NOTEBOOKS, ids=_ids(LAB_NOTEBOOKS))
def test_the_solutions_pass_every_check(nb):
    ns = _solutions(nb)
    for name, var in _checks(nb):
        out = lab.run_check(name, ns[var])
        assert out.passed, out.line
        assert LINE.match(out.line) and "\n" not in out.line


@pytest.mark.parametrize("nb", LAB_NOTEBOOKS, ids=_ids(LAB_NOTEBOOKS))
def test_a_stub_is_not_done_yet_and_gets_its_hint_only_when_checked_again(nb):
    ns = _solutions(nb, student=True)
    for name, var in _checks(nb):
        first = lab.run_check(name, ns[var])
        assert first.status == "not done yet", first.line
        assert "Hint:" not in first.line and lab.EXERCISES[name].hint not in first.line, first.line
        assert "again for a hint" in first.line
        second = lab.run_check(name, ns[var], attempt=2)
        assert second.status == "not done yet" and lab.EXERCISES[name].hint in second.line and "Hint:" in second.line
        assert "\n" not in second.line and "Traceback" not in second.line


def test_check_counts_attempts_per_exercise(capsys):
    lab.reset_attempts()
    lab.check("01.simplex_cosine", None)
    lab.check("01.uniformity_energy", None)  # another exercise: its own first attempt
    lab.check("01.simplex_cosine", None)
    lab.reset_attempts()
    lines = capsys.readouterr().out.splitlines()
    assert ["Hint:" in ln for ln in lines] == [False, False, True], lines


def _wrong_answers() -> list[tuple[str, Any]]:
    """A plausible wrong answer for every exercise of notebooks 00-05 (a common slip, a constant, a wrong letter)."""
    import math

    import numpy as np

    return [
        ("00.class_shares", lambda: "a"),
        ("01.kept_iterate", lambda: "c"),
        ("02.why_low_tau", lambda: "(c)"),
        ("03.which_form_acts", lambda: "a"),
        ("04.loss_rises", lambda: "a"),
        ("05.balanced_maps", lambda: "c"),
        ("01.simplex_cosine", lambda k: -1.0 / k),  # K instead of K - 1
        # the sum over i, not the mean
        ("01.uniformity_energy", lambda v, t: float(np.log(np.exp((v @ v.T).numpy() / t).sum(1)).sum())),
        ("02.tau_at_quarter", lambda lo, hi: lo),  # the value at T/2
        ("02.per_epoch_tau", lambda it, lo, hi, p, ipe: lo + 0.5 * (hi - lo) * (1 + math.cos(2 * math.pi * it / p))),
        ("03.anchor_loss", lambda *a: 1.0),
        ("03.centre_weight", lambda n, lam, form: lam / (n + 1)),  # forgets the own view, and the form
        ("04.poly_lr", lambda base, it, max_it, power: base * (1 - it / max_it) ** power),  # negative after the end
        ("04.dice", lambda p, g: float((p & g).sum() / max(1, (p | g).sum()))),  # Jaccard
        ("05.alignment", lambda emb, labels, k: np.ones(k)),
        ("05.simplex_uniformity", lambda k: -4.0),
        ("05.difference", lambda a, b: (float(np.mean(b) - np.mean(a)), float(np.std(a) + np.std(b)))),
    ]


def test_wrong_answers_get_what_differs_and_the_hint_never_the_librarys_value():
    import numpy as np

    def _fmt(v: float) -> list[str]:  # the ways a number could be printed (a scalar, an array entry)
        return [f"{v:.10g}", f"{v:.6g}", f"{v:.6f}".rstrip("0")]

    names = [n for n, _ in _wrong_answers()]
    assert sorted(names) == sorted(e.name for e in MINE), "one wrong answer per exercise of notebooks 00-05"
    for name, answer in _wrong_answers():
        out = lab.run_check(name, answer)
        assert out.status == "not yet right", (name, out.line)
        assert out.message.startswith("for ") and lab.EXERCISES[name].hint in out.line, out.line
        assert "\n" not in out.line
        ex = lab.EXERCISES[name]
        failed = next(c for c in ex.cases(np.random.default_rng(0)) if ex.compare(answer(*c.args), c.expected))
        assert failed.desc in out.line
        if isinstance(failed.expected, str):  # a question: the digest of the right letter
            shown = [failed.expected]
        else:  # the library's values where the answer differs (an entry the answer got right is its own)
            expected = np.asarray(failed.expected, dtype=float)
            try:
                got = np.broadcast_to(np.asarray(answer(*failed.args), dtype=float), expected.shape)
            except (TypeError, ValueError):  # not a real number (04.poly_lr's slip returns a complex one)
                got = np.full(expected.shape, np.nan)
            shown = [f for e, g in zip(expected.ravel(), got.ravel()) if not np.isclose(e, g) for f in _fmt(e)]
        said = out.message.split(failed.desc, 1)[1]  # what the line says about the failing case
        assert not any(re.search(rf"(?<![\w.]){re.escape(v)}(?![\w.]*\d)", said) for v in shown), (name, out.line)
    assert "too large" in lab.run_check("01.simplex_cosine", lambda k: 1.0).line
    assert "too small" in lab.run_check("01.simplex_cosine", lambda k: -2.0).line


def _delegating_answers() -> dict[str, list[Any]]:
    """For every function exercise of notebooks 01-05, answers that let the library do the work: the function
    itself, a wrapper, a helper, an object's method, a partial."""
    import functools

    import numpy as np
    import torch

    from actionpp import embeddings as E
    from actionpp import temperature as T
    from actionpp.centers import make_centers, pairwise_cosines, simplex_centers, uniformity_energy
    from actionpp.losses import saacl_loss
    from actionpp.metrics import dice_jaccard
    from actionpp.train import poly_lr

    def helper(*args):  # a helper of the student's that calls the library
        return poly_lr(*args)

    def via_module(base, it, max_it, power):  # through the package, not a name imported into the notebook
        import actionpp.train

        return actionpp.train.poly_lr(base, it, max_it, power)

    def anchor(v, label, view, queue, qlab, centres, tau, lam, form):
        return float(saacl_loss(v[None], torch.tensor([label]), view[None], queue, qlab, centres, tau, lam,
                                centre_term=form))

    def centre_weight(n_same, lam, form):  # reads the weight off the library's loss, as the check does
        k, d = 3, 6
        v = centres = torch.nn.functional.normalize(torch.eye(k, d, dtype=torch.float64) + 0.1, dim=1)
        qlab = torch.zeros(n_same, dtype=torch.long)
        queue = v[qlab]
        args = (v[:1], torch.tensor([0]), v[:1], queue, qlab, centres, 0.5)
        diff = saacl_loss(*args, lam, centre_term=form) - saacl_loss(*args, 0.0, centre_term=form)
        cands = torch.cat([v[:1], queue, centres])
        return float(diff / -torch.log_softmax(cands @ v[0] / 0.5, 0)[1 + n_same])

    return {
        "01.simplex_cosine": [lambda k: float(pairwise_cosines(simplex_centers(k, k).double())[0, 1]),
                              lambda k: float(pairwise_cosines(make_centers(k, k, method="simplex").vectors)[0, 1])],
        "01.uniformity_energy": [uniformity_energy, lambda v, t: float(uniformity_energy(v, t))],
        "02.tau_at_quarter": [lambda lo, hi: T.make_schedule("cosine", tau_min=lo, tau_max=hi, period=4)(1),
                              lambda lo, hi: float(T.make_schedule("cosine", tau_min=lo, tau_max=hi,
                                                                   period=8).values(np.array([2]))[0])],
        "02.per_epoch_tau": [lambda it, lo, hi, p, ipe: T.make_schedule("cosine_epoch", tau_min=lo, tau_max=hi,
                                                                         period=p, iters_per_epoch=ipe)(it)],
        "03.anchor_loss": [anchor],
        "03.centre_weight": [centre_weight],
        "04.poly_lr": [poly_lr, lambda *a: poly_lr(*a), helper, via_module, functools.partial(poly_lr)],
        "04.dice": [lambda p, g: dice_jaccard(p, g)[0]],
        "05.alignment": [lambda emb, labels, k: E.alignment(emb, labels, k).numpy()],
        "05.simplex_uniformity": [lambda k: E.uniformity(simplex_centers(k, k).double())],
        "05.difference": [lambda a, b: (E.seed_difference(a, b)["difference"], E.seed_difference(a, b)["se"])],
    }


def test_an_answer_that_runs_the_library_function_it_is_checked_against_fails():
    answers = _delegating_answers()
    assert sorted(answers) == sorted(e.name for e in MINE if e not in QUESTIONS), "every function exercise"
    for name, candidates in answers.items():
        for answer in candidates:
            out = lab.run_check(name, answer)
            assert out.status == "not yet right", (name, out.line)
            assert "the library function this exercise is checked against" in out.line, out.line
            assert lab.EXERCISES[name].hint in out.line


def test_the_library_guard_follows_answers_not_names():
    # an answer may use other parts of the library, and the checked function under another name still counts
    from actionpp.train import poly_lr as renamed

    def own(base, it, max_it, power):
        import actionpp.centers  # the library, but not what 04.poly_lr is checked against

        actionpp.centers.simplex_centers(2, 2)
        return 0.0 if it >= max_it else base * (1 - it / max_it) ** power

    assert lab.run_check("04.poly_lr", own).passed
    assert not lab.run_check("04.poly_lr", renamed).passed
    assert lab.EXERCISES["02.tau_at_quarter"].guarded == ("actionpp.temperature",)
    assert lab.EXERCISES["04.poly_lr"].guarded == ("actionpp.train.poly_lr",)  # from its `library` by default
    assert all(q.guarded == () for q in QUESTIONS)


def test_check_never_raises_and_prints_one_line(capsys):
    def boom(*a):
        raise ZeroDivisionError("division by zero\nsecond line")

    lab.check("01.simplex_cosine", boom)
    lab.check("01.simplex_cosine", "not a function")
    lab.check("01.simplex_cosine", ...)
    lab.check("no.such_exercise", lambda k: 0)
    lab.check("01.simplex_cosine", lambda k: "a string")
    lab.check("05.alignment", lambda e, y, k: [1.0, 2.0])  # wrong shape
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6, lines
    assert lines[0].startswith("[not yet right] 01.simplex_cosine: your function raised ZeroDivisionError: "
                               "division by zero for K=")
    assert "expected a function" in lines[1] and lines[2].startswith("[not done yet]")
    assert "no exercise of this name" in lines[3] and "you return str" in lines[4] and "shape" in lines[5]
    assert not any("Traceback" in ln for ln in lines)


def test_checks_are_reproducible_and_seeded():
    a = lab.EXERCISES["03.anchor_loss"].cases
    import numpy as np

    c1, c2 = a(np.random.default_rng(0)), a(np.random.default_rng(0))
    assert [c.expected for c in c1] == [c.expected for c in c2]
    assert len(c1) >= 3 and {c.args[-1] for c in c1} == {"averaged", "separate"}


# ---------------------------------------------------------------------------------------------
# Student export
# ---------------------------------------------------------------------------------------------


def test_student_source_replaces_regions_at_their_indentation():
    src = "def f(x):\n    '''doc'''\n    ### BEGIN SOLUTION\n    y = x + 1\n    return y\n    ### END SOLUTION\n\nz = 1"
    assert lab.student_source(src) == f"def f(x):\n    '''doc'''\n    {lab.STUB}\n\nz = 1"
    for bad, why in [(f"{lab.BEGIN}\nx", "never closed"), (f"x\n{lab.END}", "without"),
                     (f"{lab.BEGIN}\n{lab.BEGIN}\n{lab.END}", "inside another")]:
        with pytest.raises(ValueError, match=why):
            lab.student_source(bad, "here")


def test_export_student_strips_solutions_and_answers_and_keeps_the_rest(tmp_path):
    written = lab.export_student(LAB_NOTEBOOKS, tmp_path / "student")
    assert [p.name for p in written] == [p.name for p in LAB_NOTEBOOKS]
    for src, out in zip(LAB_NOTEBOOKS, written):
        a, b = nbformat.read(src, as_version=4), nbformat.read(out, as_version=4)
        answers = [c for c in a.cells if lab.ANSWER_TAG in c.metadata.get("tags", [])]
        a.cells = [c for c in a.cells if c not in answers]
        assert [c.id for c in a.cells] == [c.id for c in b.cells]
        assert [c.metadata.get("tags") for c in a.cells] == [c.metadata.get("tags") for c in b.cells]
        assert not any(ans.source in out.read_text() for ans in answers)
        text = out.read_text()
        assert lab.BEGIN not in text and lab.END not in text
        n_sol = sum(lab.SOLUTION_TAG in c.metadata.get("tags", []) for c in a.cells)
        assert sum(c.source.count(lab.STUB) for c in b.cells) == n_sol >= 1
        for ca, cb in zip(a.cells, b.cells):
            if lab.SOLUTION_TAG not in ca.metadata.get("tags", []):
                assert ca.source == cb.source
        assert nbx.is_stripped(out)
        assert nbx.parameters_of(out) == nbx.parameters_of(src)
        assert (tmp_path / "student" / "params" / "smoke" / f"{src.stem}.yaml").is_file()
    with pytest.raises(ValueError, match="overwrite"):
        lab.export_student([LAB_NOTEBOOKS[0]], NOTEBOOK_DIR)


def test_export_refuses_markers_outside_solution_cells(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"def f():\n    {lab.BEGIN}\n    return 1\n    {lab.END}")]
    path = tmp_path / "01_x.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(ValueError, match="not tagged 'solution'"):
        lab.export_student([path], tmp_path / "out")
    nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["solution"]})]
    nbformat.write(nb, path)
    with pytest.raises(ValueError, match="holds no"):
        lab.export_student([path], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_lab_export_and_list(tmp_path, capsys):
    from actionpp.cli import main

    assert main(["lab", "export", "--student", str(tmp_path / "s"), str(LAB_NOTEBOOKS[0])]) == 0
    assert (tmp_path / "s" / LAB_NOTEBOOKS[0].name).is_file()
    assert main(["lab", "list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in lab.EXERCISES)
    assert main(["lab", "export", "--student", str(tmp_path / "s"), str(tmp_path / "missing.ipynb")]) == 2


# ---------------------------------------------------------------------------------------------
# The student version runs end to end
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    lab.export_student(LAB_NOTEBOOKS, out)
    return out


@pytest.mark.notebooks
@pytest.mark.extended  # about 3 minutes: CI runs it after the default suite (.ci/run)
@pytest.mark.timeout(900)
@pytest.mark.parametrize("nb", LAB_NOTEBOOKS, ids=_ids(LAB_NOTEBOOKS))
def test_student_notebook_runs_to_the_end_with_every_check_not_done(nb, student_dir, tmp_path):
    student = student_dir / nb.name
    out_dir = tmp_path / "out"
    executed = nbx.execute(student, tmp_path / nb.name, {"OUT_DIR": str(out_dir)}, profile="smoke",
                           cwd=repo_root(), timeout=600)
    assert (out_dir / "metrics.json").is_file() and json.loads((out_dir / "metrics.json").read_text())
    run = nbformat.read(executed, as_version=4)
    lines = []
    for c in run.cells:
        for o in c.get("outputs", []):
            assert o.get("output_type") != "error", f"{nb.name}: cell {c.id} raised {o.get('ename')}"
            if lab.CHECK_TAG in c.metadata.get("tags", []) and o.get("name") == "stdout":
                lines += [ln for ln in o["text"].splitlines() if ln.strip()]
    expected = [e.name for e in lab.exercises_of(nb.stem)]
    assert [LINE.match(ln).group(2) for ln in lines] == expected, lines
    # a first run top to bottom: every check once, so no hint beside an untouched stub
    assert all(ln.startswith("[not done yet]") and "Hint:" not in ln for ln in lines), lines


# ---------------------------------------------------------------------------------------------
# The runs notebook 05 compares (and the demo trains in the background)
# ---------------------------------------------------------------------------------------------


def test_comparison_plan_validates_before_anything_trains(tmp_path):
    from actionpp.config import ConfigError
    from actionpp.lab import runs as R

    plan = R.comparison_plan(["supervised", "actionpp"], [0, 1, 2], "phantom_tail", tmp_path)
    assert [(r.method, r.seed, r.run_dir.name) for r in plan][:2] == [("supervised", 0, "supervised_seed0"),
                                                                    ("supervised", 1, "supervised_seed1")]
    c = plan[-1].config
    assert (c.method.name, c.runtime.seed, c.data.size, c.data.phantom_preset) == ("actionpp", 2, 64, "longtail")
    with pytest.raises(ConfigError, match="no_such"):
        R.comparison_plan(["supervised"], [0], "phantom_tail", tmp_path, overrides=["train.no_such=1"])
    with pytest.raises(ValueError, match="repeat"):
        R.comparison_plan(["supervised", "supervised"], [0], "phantom_tail", tmp_path)
    assert R.plan_of_notebook({"RUN_DIRS": ["x"], "METHODS": ["supervised"]}) == []


def test_a_plan_trained_in_the_background_is_then_reused(tmp_path):
    from actionpp.lab import runs as R

    plan = R.comparison_plan(["supervised"], [0, 1], "phantom_smoke", tmp_path / "runs", finetune_iters=2)
    bg = R.start_background(plan)
    assert bg is not None and bg.wait(600), "the background training failed"
    assert all((r.run_dir / "metrics.json").is_file() for r in plan)
    assert R.start_background(plan) is None  # nothing left to train
    out = R.train_plan(plan, jobs=2, log=None)
    assert [(s["method"], s["seed"], s["cached"]) for s in out] == [("supervised", 0, True), ("supervised", 1, True)]


# ---------------------------------------------------------------------------------------------
# Every question has the instructor's answer; the student version has none of them
# ---------------------------------------------------------------------------------------------

# every notebook with exercises (06 has none: it reads a grid)
QUESTION_NOTEBOOKS = [NOTEBOOK_DIR / f"{stem}.ipynb" for stem in
                      ("00_data_tour", "01_class_centers", "02_temperature_schedule", "03_contrastive_losses",
                       "04_train", "05_embeddings", "07_beyond_medical")]


def _questions_and_answers(nb: Path) -> list[tuple[str, str | None]]:
    """(id of each Markdown cell that asks the student a question, id of the answer cell after it or None).

    A question is a sentence of prose ending in "?" (a heading line's "?" is a title, not a question); its
    answer is a cell tagged ``answer`` before the next Markdown cell that is neither an answer nor part of
    the same exercise (its solution and check cells)."""
    cells = nbformat.read(nb, as_version=4).cells
    out = []
    for i, c in enumerate(cells):
        tags = c.metadata.get("tags", [])
        if c.cell_type != "markdown" or lab.ANSWER_TAG in tags:
            continue
        prose = "\n".join(line for line in c.source.splitlines() if not line.lstrip().startswith("#"))
        text = re.sub(r"`[^`]*`|\$[^$]*\$", "", prose)
        if "?" not in text:
            continue
        answer = None
        for later in cells[i + 1:]:
            later_tags = later.metadata.get("tags", [])
            if lab.ANSWER_TAG in later_tags:
                answer = later.id
                break
            if later.cell_type == "markdown":
                break
        out.append((c.id, answer))
    return out


@pytest.mark.parametrize("nb", QUESTION_NOTEBOOKS, ids=_ids(QUESTION_NOTEBOOKS))
def test_every_question_has_an_answer_in_the_instructor_version(nb):
    qa = _questions_and_answers(nb)
    assert qa, f"{nb.name} asks no question"
    missing = [q for q, a in qa if a is None]
    assert not missing, f"{nb.name}: questions without an answer cell (tagged {lab.ANSWER_TAG!r}) after them: {missing}"
    for c in nbformat.read(nb, as_version=4).cells:
        if lab.ANSWER_TAG in c.metadata.get("tags", []):
            assert c.cell_type == "markdown" and c.source.startswith("**Answer (instructor version).**"), c.id


def test_the_question_finder_sees_a_question_without_answer(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("Why is the sky blue?"), nbformat.v4.new_code_cell("x = 1"),
                nbformat.v4.new_markdown_cell("Next section, with `a?b` code only."),
                nbformat.v4.new_markdown_cell("## A title that asks?\n\nProse without a question.")]
    for i, c in enumerate(nb.cells):
        c.id = f"c{i}"
    nbformat.write(nb, tmp_path / "q.ipynb")
    assert _questions_and_answers(tmp_path / "q.ipynb") == [("c0", None)]
