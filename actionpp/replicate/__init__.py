"""Batch replication: expand a grid of notebook runs, execute them, tabulate the results.

Modules: :mod:`~actionpp.replicate.grid` (grid files, run ids, shards),
:mod:`~actionpp.replicate.run` (execution, markers, workers),
:mod:`~actionpp.replicate.tables` (collecting, aggregating, CSV / Markdown); the
run-metrics schema is :mod:`actionpp.report`.

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

Three optional keys make a grid one whose runs are compared as evidence (the powered grids of
``notebooks/grids/acdc_lite_power*.yaml``)::

    score: {run: run, which: last, splits: [val, test], weights: [student, teacher]}
    batchnorm_check: {split: val, images: 400, seed: 0}
    describe_against: acdc_lite_power

``score``: the runner scores each run's checkpoint before marking it done (``scores.json``,
:mod:`~actionpp.replicate.score`), and publishing writes the paired analysis
(:mod:`~actionpp.replicate.analysis`); ``batchnorm_check``: at publish, each run's checkpoint is also scored
with its BatchNorm statistics re-estimated (:mod:`~actionpp.replicate.batchnorm`; needs ``score``);
``describe_against``: at publish, the runs are set beside another grid's published runs of the same
method, budget and seed, a description with no call (:mod:`~actionpp.replicate.across`; needs ``score``).

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

from actionpp.replicate.grid import (
    Grid,
    GridError,
    NotebookStep,
    Run,
    expand,
    grid_fingerprint,
    grid_variants,
    load_grid,
    make_run_id,
    parse_shard,
    profile_parameters,
    shard,
)
from actionpp.replicate.run import RunOutcome, execute_run, run_grid, run_status, summary, visible_gpus
from actionpp.replicate.tables import (
    METRIC_NAMES,
    PAPER_RESULTS,
    PAPER_SOURCE,
    ResultRow,
    RunRecord,
    aggregate,
    collect,
    markdown_section,
    paper_row,
    results_csv,
    results_markdown,
    write_results,
)

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
    "grid_variants",
    "grid_fingerprint",
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
    "markdown_section",
    "results_markdown",
    "write_results",
]
