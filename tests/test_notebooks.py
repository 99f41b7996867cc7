"""Every notebook in notebooks/: parameter contract, profiles, stripped storage, smoke execution.

The notebooks are found by glob (``notebooks/NN_*.ipynb``), so a new notebook is
checked as soon as it exists. Its smoke run must write ``metrics.json`` with the
keys and ranges listed in ``EXPECTED_METRICS`` below: a notebook without an entry
fails on purpose (the owner of the notebook adds one).
"""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path
from typing import Any

import nbformat
import pytest

from actionpp import notebook as nbx
from actionpp.paths import repo_root

NOTEBOOK_DIR = repo_root() / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
PROFILES = ("smoke", "lab", "paper_acdc", "paper_la")
REQUIRED = {"SEED": "int", "DEVICE": "str", "OUT_DIR": "str"}
# the teaching notebooks this suite was written with; 04-06 are checked by glob as they appear
CORE = ("00_data_tour", "01_class_centers", "02_temperature_schedule", "03_contrastive_losses")


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


# ---------------------------------------------------------------------------
# Expected metrics of each notebook's smoke run: dotted key path -> check.
# A check is (lo, hi) (inclusive; None = open), a set of allowed values, or a
# (description, predicate) pair. Keep the bounds meaningful: closed forms where
# there is one, otherwise what a broken implementation could not reach.
# ---------------------------------------------------------------------------

Check = Any

EXPECTED_METRICS: dict[str, dict[str, Check]] = {
    "00_data_tour": {
        # phantom shares sum to one; background is the head class (> 80 % of pixels, like ACDC's ~96 %)
        "phantom.class_share_sum": (1 - 1e-9, 1 + 1e-9),
        "phantom.class_share.background": (0.8, 1.0),
        "phantom.class_share.RV": (1e-4, 0.1),
        "phantom.class_share.Myo": (1e-4, 0.1),
        "phantom.class_share.LV": (1e-4, 0.1),
        "phantom.head_to_tail_ratio": (10.0, None),
        "phantom.labelled_patients": {3},
        "phantom.labelled_slices": (1, None),
        "phantom.unlabelled_slices": (1, None),
        "phantom.la.class_share.atrium": (1e-4, 0.5),
        # the LV cavity is smaller at end-systole than at end-diastole
        "phantom.lv_shrinkage_ed_to_es_median": (0.1, 0.9),
    },
    "01_class_centers": {
        # the closed form and the correct optimiser reach the simplex; the official recipe does not
        "error_vs_simplex.K4.simplex": (0.0, 1e-6),
        "error_vs_simplex.K4.optimize": (0.0, 1e-6),
        "error_vs_simplex.K4.tsc": (0.02, 2.0),
        "error_vs_simplex.K2.simplex": (0.0, 1e-6),
        "error_vs_simplex.K2.optimize": (0.0, 1e-6),
        "error_vs_simplex.K2.tsc": (0.1, 2.0),
        "tsc_kept_step.K4": (1, None),
        "tsc_last_grad_cos_float32_vs_exact.K4": (-1.0, 1.0),
        # cos(c) energy signal below half a float32 ulp at 1/t = 1/0.07: c < 1 + t ln(ulp/2) ~ 0.0
        "float32_blind_below_cos": (-0.1, 0.1),
        # no method can beat the best known code (gap >= 0); the Tammes refinement gets close
        "tammes_gap_deg.K5.tammes": (-1e-3, 0.05),
        "tammes_gap_deg.K8.tammes": (-1e-3, 0.05),
        "tammes_gap_deg.K8.optimize": (-1e-3, 5.0),
    },
    "02_temperature_schedule": {
        # ATS cosine, paper values: tau(0) = tau_max, tau(T/4) = midpoint, tau(T/2) = tau_min, tau(T) = tau_max
        "tau.t0": (1.0 - 1e-12, 1.0 + 1e-12),
        "tau.quarter": (0.55 - 1e-12, 0.55 + 1e-12),
        "tau.half": (0.1 - 1e-12, 0.1 + 1e-12),
        "tau.end": (1.0 - 1e-12, 1.0 + 1e-12),
        "tau_by_schedule.official_per_epoch.t0": (1.0 - 1e-12, 1.0 + 1e-12),
        "tau_by_schedule.step.end": (0.1 - 1e-12, 0.1 + 1e-12),  # last of STEP_VALUES
        "tau_by_schedule.constant.half": (0.5 - 1e-12, 0.5 + 1e-12),
        # on the long-tailed toy, a higher tau moves the gradient from the head to the tail
        "grad_share_tail.increases_with_tau": {True},
        "grad_share_tail.at_tau_min": (0.0, 1.0),
        "grad_share_tail.at_tau_max": (0.0, 1.0),
        # softmax over 321 candidates: entropy <= log 321, max probability >= 1/321
        "softmax_entropy_nats.tau_1": (0.0, 5.7714),
        "softmax_max_prob.tau_0.1": (1 / 321, 1.0),
        "head_share_along_run.constant": ("a constant tau gives a constant share",
                                          lambda v: abs(v["max"] - v["min"]) < 1e-9),
    },
    "03_contrastive_losses": {
        # accuracies are fractions, angles between 0 and 180 degrees, the loss is a cross-entropy
        "variants.plain.tail_centre_accuracy": (0.0, 1.0),
        "variants.saacl_hungarian.tail_centre_accuracy": (0.0, 1.0),
        "variants.saacl_random.tail_centre_accuracy": (0.0, 1.0),
        "variants.plain.min_angle_between_class_means_deg": (0.0, 180.0),
        "variants.saacl_hungarian.min_angle_between_class_means_deg": (0.0, 180.0),
        "variants.saacl_random.min_angle_between_class_means_deg": (0.0, 180.0),
        "variants.saacl_hungarian.tail_alignment": (-1.0, 1.0),
        "variants.saacl_hungarian.final_loss": (0.0, None),
        # the Hungarian assignment is the optimum, so it never costs more than the random one
        "allocation_cost.hungarian_le_random": {True},
        # smoke classes [200, 30, 10]: the tail is 1/6 of the pixels, and the queue draws uniformly
        "tail_share_of_queue": (0.05, 0.35),
        # method.md 3: with a full 12 288-entry queue the official "averaged" centre term is ~1e-4 of the
        # gradient (lambda_a / |P_i|, |P_i| ~ 3 000); "separate" keeps it at a sizeable share
        "centre_share_full_queue.averaged": (0.0, 0.01),
        "centre_share_full_queue.separate": (0.1, 0.9),
    },
    # ---- 04-06: entries owned by the 04-06 notebook engineer ----
    "04_train": {
        # smoke: ACTION++ on the phantom, engine profile phantom_smoke (4 pre-training + 8 fine-tuning)
        "method": {"actionpp"},
        "switches.saacl": {True},
        "switches.ats": {True},
        "iterations": {12},
        "labelled_patients": {7},
        "classes": ("ACDC foreground classes in label order", lambda v: v == ["RV", "Myo", "LV"]),
        "dice_mean": (0.0, 1.0),
        "dice.RV": (0.0, 1.0),
        "dice.LV": (0.0, 1.0),
        "jaccard_mean": (0.0, 1.0),
        # "penalty" policy: distances are finite and at most the volume diagonal (never NaN)
        "hd95_mean": (0.0, None),
        "asd_mean": (0.0, None),
        "empty.missed": (0, None),
        "reused_finished_run": {False},
        "protocol.model_selection": ("names the validation split", lambda v: "val" in v),
        "protocol.eval_split": ("scored on the test split", lambda v: v.startswith("test")),
        "protocol.distance_units": ("states voxels", lambda v: "voxels" in v),
    },
    "05_embeddings": {
        # smoke: supervised (no centres) and ACTION++ (allocator centres) trained for a few iterations
        "runs.actionpp.has_centres": {True},
        "runs.supervised.has_centres": {False},
        "runs.actionpp.accuracy_by": {"centres"},
        "runs.supervised.accuracy_by": {"class means"},
        "runs.actionpp.accuracy": (0.0, 1.0),
        "runs.actionpp.head": {"BG"},
        # unit vectors: 0 <= ||u - v||^2 <= 4, so log mean exp(-2 ||u - v||^2) lies in [-8, 0]
        "runs.supervised.uniformity": (-8.0, 0.0),
        "runs.actionpp.per_class.RV.alignment": (-1.0, 1.0),
        "runs.actionpp.per_class.LV.min_angle_deg": (0.0, 180.0),
        "frequencies.BG": (0.8, 1.0),
        "map": {"pca"},
        # two seeds a side: the tail differences carry a standard error and the summary counts the calls
        "comparison.verdict": ("tail lines with +- and an 'In short: of N' summary",
                               lambda v: any("+- " in ln for ln in v if "(tail), " in ln)
                               and v[-1].startswith("In short: of ")),
    },
    "06_replication_report": {
        # smoke: notebooks/grids/tiny.yaml = supervised and actionpp, one seed, 7 labelled patients
        "n_runs": {2},
        "n_groups": {2},
        "failed": ("no failed run", lambda v: v == []),
        "groups.actionpp.paper_dice": {90.4},
        "groups.supervised.paper_dice": {79.5},
        "groups.actionpp.dice_mean": (0.0, 100.0),
    },
    "07_beyond_medical": {
        # smoke: all seven arms, imbalance ratio 10, seeds 0 and 1, 30 steps each
        "n_runs": {14},
        "test_balanced": {True},
        # 120 * 10 ** (-r / 9), rounded half up: the exponential long tail of ratio 10
        "counts.10": ("the long tail of ratio 10", lambda v: v == [120, 93, 72, 56, 43, 33, 26, 20, 15, 12]),
        # ten balanced classes: chance is 0.1; cross-entropy is well above it even after 30 steps
        "summary.10.ce.balanced_accuracy.mean": (0.3, 1.0),
        "summary.10.logit_adjusted.tail_recall.mean": (0.0, 1.0),
        "summary.10.actionpp.min_angle_deg.mean": (0.0, 180.0),
        # unit vectors: uniformity log mean exp(-2 ||u - v||^2) lies in [-8, 0]
        "summary.10.centres_separate.uniformity.mean": (-8.0, 0.0),
        "summary.10.supcon_ats.alignment.mean": (-1.0, 1.0),
        # the paired difference to SupCon: over both seeds, none for SupCon itself
        "summary.10.actionpp.tail_recall.n": {2},
        "summary.10.supcon.tail_recall.diff": ("no difference of SupCon to itself", lambda v: v != v),
        # one summary line and one line per ratio for each of the seven comparisons; two seeds call nothing
        "verdict": ("2 lines x 7 comparisons, no call from 2 seeds",
                    lambda v: len(v) == 14 and all("not enough seeds" in ln for ln in v[::2])),
    },
}


def _lookup(metrics: Any, path: str) -> Any:
    """Value at a dotted path; a key may itself contain dots (``grad.tau_0.1``): longest match first."""
    if path == "":
        return metrics
    parts = path.split(".")
    for n in range(len(parts), 0, -1):
        head, rest = ".".join(parts[:n]), ".".join(parts[n:])
        if isinstance(metrics, dict) and head in metrics:
            try:
                return _lookup(metrics[head], rest)
            except KeyError:
                continue
        if isinstance(metrics, list) and n == 1 and head.isdigit() and int(head) < len(metrics):
            return _lookup(metrics[int(head)], rest)
    raise KeyError(path)


def _check(value: Any, check: Check) -> str | None:
    """None when ``value`` passes ``check``, else why not."""
    if isinstance(check, tuple) and len(check) == 2 and isinstance(check[0], str):
        desc, pred = check
        return None if pred(value) else f"{value!r} fails: {desc}"
    if isinstance(check, (set, frozenset)):
        return None if value in check else f"{value!r} not in {sorted(check, key=repr)}"
    lo, hi = check
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return f"{value!r} is not a number"
    if lo is not None and value < lo:
        return f"{value!r} < {lo}"
    if hi is not None and value > hi:
        return f"{value!r} > {hi}"
    return None


# ---------------------------------------------------------------------------
# Structure (fast, no kernel)
# ---------------------------------------------------------------------------


def test_core_notebooks_exist():
    missing = [s for s in CORE if not (NOTEBOOK_DIR / f"{s}.ipynb").is_file()]
    assert not missing, f"missing notebooks: {missing}"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_is_stored_stripped_with_one_parameters_cell(nb):
    problems = nbx.stripped_problems(nb)
    assert not problems, (
        f"{nb.name} is not stored clean: {problems}. Run "
        f"`.venv/bin/python -c \"from actionpp.notebook import strip_outputs; "
        f"strip_outputs('{nb.relative_to(repo_root())}')\"`"
    )


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_parameter_cell_contract(nb):
    params = nbx.parameters_of(nb)  # raises on lines papermill would silently drop
    for name, type_name in REQUIRED.items():
        assert name in params, f"{nb.name}: every notebook declares {name}: {type_name}"
        assert params[name].type_name == type_name, f"{nb.name}: {name} must be declared as {type_name}"
    for name, p in params.items():
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", name), f"{nb.name}: parameter {name} is not UPPER_SNAKE"
        assert p.type_name != "None", f"{nb.name}: parameter {name} has no type annotation"
        assert p.help.strip(), f"{nb.name}: parameter {name} needs a '# why' comment"
        # the declared type accepts the default (e.g. no `X: int = 0.5`)
        nbx.check_parameters(nb, {name: p.default}, params)
    # only `NAME: type = literal` statements: nothing derived (papermill injects after this cell);
    # `from typing import Optional` is allowed, since Optional[...] annotations need it
    cell = next(c for c in nbformat.read(nb, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    for stmt in ast.parse(cell.source).body:
        if isinstance(stmt, ast.ImportFrom) and stmt.module == "typing":
            continue
        assert isinstance(stmt, ast.AnnAssign) and stmt.value is not None, (
            f"{nb.name}: the parameters cell holds only 'NAME: type = literal  # why' lines, "
            f"found: {ast.unparse(stmt)[:80]}"
        )
        ast.literal_eval(stmt.value)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("nb", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_profile_matches_declared_parameters(nb, profile):
    path = nbx.profile_path(nb, profile)
    assert path.is_file(), f"{nb.name}: missing parameter profile {path.relative_to(repo_root())}"
    params = nbx.parameters_of(nb)
    values = nbx.load_profile(nb, profile)
    nbx.check_parameters(nb, values, params)  # unknown names or wrong types raise ParameterError
    if profile == "lab":
        # lab runs exactly the parameters-cell defaults: every value it sets equals the default
        # (00-03 list them all, as a copyable template; an empty file is equally exact)
        defaults = {name: p.default for name, p in params.items()}
        differ = {k: {"lab": v, "default": defaults[k]} for k, v in values.items() if v != defaults[k]}
        assert not differ, f"{path.relative_to(repo_root())} must equal the defaults of {nb.name}: {differ}"


def test_expected_metrics_cover_only_existing_notebooks():
    stems = {p.stem for p in NOTEBOOKS}
    stale = sorted(set(EXPECTED_METRICS) - stems)
    assert not stale, f"EXPECTED_METRICS lists notebooks that do not exist: {stale}"


def test_metric_checks_reject_bad_values():
    assert _check(0.5, (0.0, 1.0)) is None
    assert _check(1.5, (0.0, 1.0)) == "1.5 > 1.0"
    assert _check(float("nan"), (0.0, None)) == "nan is not a number"
    assert _check(True, (0, 1)) == "True is not a number"
    assert _check(3, {3}) is None and _check(2, {3}) is not None
    assert _check(2, ("even", lambda v: v % 2 == 0)) is None
    assert _lookup({"a": {"b": [1, 2]}}, "a.b.1") == 2
    assert _lookup({"g": {"tau_0.1": 3, "tau_0": {"1": 4}}}, "g.tau_0.1") == 3
    with pytest.raises(KeyError):
        _lookup({"a": {}}, "a.c")


# ---------------------------------------------------------------------------
# Execution with the smoke profile
# ---------------------------------------------------------------------------


@pytest.mark.notebooks
@pytest.mark.timeout(900)
@pytest.mark.parametrize("nb", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_smoke_run_writes_expected_metrics(nb, tmp_path):
    expected = EXPECTED_METRICS.get(nb.stem)
    assert expected, (
        f"no EXPECTED_METRICS entry for {nb.stem}: the notebook's owner adds one to "
        "tests/test_notebooks.py (dotted metrics.json key -> (lo, hi) range, set of allowed values, "
        "or (description, predicate)), with bounds a broken implementation could not meet"
    )
    out_dir = tmp_path / "out"
    executed = nbx.execute(
        nb, tmp_path / nb.name, {"OUT_DIR": str(out_dir)}, profile="smoke", cwd=repo_root(), timeout=600
    )
    metrics = nbx.read_metrics(out_dir)
    failures = []
    for path, check in expected.items():
        try:
            value = _lookup(metrics, path)
        except KeyError:
            failures.append(f"{path}: missing")
            continue
        why = _check(value, check)
        if why:
            failures.append(f"{path}: {why}")
    assert not failures, f"{nb.name} smoke metrics ({out_dir / 'metrics.json'}):\n  " + "\n  ".join(failures)
    # a static figure is always drawn, whatever INTERACTIVE says
    run = nbformat.read(executed, as_version=4)
    images = sum("image/png" in o.get("data", {}) for c in run.cells for o in c.get("outputs", []))
    assert images >= 1, f"{nb.name}: the smoke run drew no figure"


@pytest.mark.notebooks
@pytest.mark.realdata
@pytest.mark.timeout(900)
def test_data_tour_on_real_acdc_matches_its_readme(acdc_root, tmp_path):
    """00_data_tour on the real ACDC folder: the class shares and the 3 / 7-patient subsets
    documented in shared/data/acdc/README.md (96.2 / 1.18 / 1.33 / 1.29 %, 68 and 136 slices)."""
    nb = NOTEBOOK_DIR / "00_data_tour.ipynb"
    out_dir = tmp_path / "out"
    nbx.execute(
        nb,
        tmp_path / nb.name,
        {
            "OUT_DIR": str(out_dir),
            "DATA_ROOT": str(acdc_root),
            "LABELLED_PATIENTS": [3, 7],
            "MAX_SLICES": 0,
            "PATIENTS": 20,
        },
        profile="smoke",
        cwd=repo_root(),
        timeout=600,
    )
    real = nbx.read_metrics(out_dir)["real"]
    assert real["train_slices"] == 1312 and real["slices_counted"] == 1312
    share = real["class_share"]  # README rounds to 0.1 % (background) and 0.01 % (structures)
    assert share["background"] == pytest.approx(0.962, abs=5e-4)
    for name, value in {"RV": 0.0118, "Myo": 0.0133, "LV": 0.0129}.items():
        assert share[name] == pytest.approx(value, abs=5e-5), name
    assert real["labelled_slices_by_patients"] == {"3": 68, "7": 136}
    assert real["unlabelled_slices"] == 1312 - 68
    assert real["class_share_sum"] == pytest.approx(1.0)
    assert 0.1 < real["lv_shrinkage_ed_to_es_median"] < 0.9


@pytest.mark.notebooks
@pytest.mark.timeout(900)
def test_embeddings_one_seed_calls_nothing(tmp_path):
    """05's part 2 with one seed a side (the lab default since the demo had to fit 10 minutes) has no
    standard error: the verdict gives each difference as one draw and calls no method ahead; before,
    it printed "+- nan" and "within 2 standard errors (seed noise)" for a spread it never measured."""
    nb = next(p for p in NOTEBOOKS if p.stem == "05_embeddings")
    out_dir = tmp_path / "out"
    nbx.execute(nb, tmp_path / nb.name, {"OUT_DIR": str(out_dir), "SEEDS": [0], "RESULTS": ""},
                profile="smoke", cwd=repo_root(), timeout=600)
    verdict = nbx.read_metrics(out_dir)["comparison"]["verdict"]
    tail_lines = [ln for ln in verdict if "(tail), " in ln]
    assert tail_lines, verdict
    assert all("no standard error" in ln and "one draw" in ln and "nan" not in ln for ln in tail_lines), verdict
    assert "nothing is called ahead" in verdict[-1], verdict
    assert not any("standard errors" in ln and "ahead by" in ln for ln in verdict), verdict
