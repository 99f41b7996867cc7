"""Publishing a grid's results next to the code: small text files a reader can check, no checkpoints.

``actionpp replicate GRID --out RUNS --publish DIR`` (or :func:`publish`) writes into ``DIR``:

- ``results.csv`` / ``results.md``: the tables of the selected checkpoints, scored on the runs'
  evaluation split (:mod:`actionpp.replicate.tables`);
- ``results_best.csv`` / ``results_best.md``: the same runs at their best validation checkpoint
  (Dice only: what the training log records). When the evaluation split is the validation split
  this number is optimistic (selected and scored on the same volumes): the tables say so;
- ``val_dice.png``: validation Dice against fine-tuning iteration, mean and range over seeds per
  group (pre-training validations at negative iterations);
- ``loss_shares.md``: per run, the share of the update each loss term drives (``share/<term>``
  of the training log: (w_k g_k . g) / ||g||^2 on the backbone, the shares sum to 1), averaged over
  the first and the last quarter of fine-tuning, and the centre term's share of the SAACL anchor
  gradient under both ``saacl.centre_term`` forms;
- per run ``<run_id>/``: its ``done`` marker and ``metrics.json`` (what the notebook wrote), and
  ``run/config.yaml``, ``run/log.jsonl``, ``run/run.json`` (environment, git commit, start times),
  ``run/metrics.json`` (the training loop's own summary): the grid's own layout without the
  checkpoints and executed notebooks, so every reader of a grid folder
  (:func:`~actionpp.replicate.tables.collect`, :mod:`actionpp.replicate.logs`,
  notebook 06) reads a published folder too; nothing is edited, only copied;
- ``batchnorm.md`` and per run ``batchnorm.json`` when the grid has a ``batchnorm_check`` block: the
  split scored with BatchNorm's statistics as stored and re-estimated (:mod:`actionpp.replicate.batchnorm`;
  a run's check is computed once, into its run folder, the first time it is published; a run whose check
  fails is named in ``batchnorm.md`` and the publish goes on);
- ``README.md``: the grid file, the command, the commits the runs trained on, dates, wall times.

Everything in ``DIR`` is written by this function from files the runs wrote; the one thing it writes
outside ``DIR`` is a run's ``batchnorm.json`` in its own run folder (the grid's ``batchnorm_check``,
computed once per checkpoint under the run's lock). ``DIR`` is a folder
this function created (its ``.actionpp-publish.json`` marker records the grid), an empty one, or
one an earlier version published this grid into (its README says so); it is never the grid's
``--out`` folder, inside it or above it. ``--docs FILE`` is a Markdown file that is new or already
holds a section this function wrote (``<!-- grid:NAME:start -->``). Anything else is refused
(:func:`check_publish`) before the first byte is written: the rule of :mod:`actionpp.atomic`.

Taught in notebooks/06_replication_report.ipynb.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from actionpp.atomic import OwnershipError, atomic_write_text, check_folder, claim_folder, utc_now
from actionpp.replicate.batchnorm import PER_BUDGET_HEADING
from actionpp.replicate.grid import Grid, Run, grid_variants
from actionpp.replicate.logs import (
    SHARES_HEADING,
    TRAIN_DIR,
    best_records,
    loss_shares,
    plot_validation_curves,
    train_summary,
)
from actionpp.replicate.run import DONE
from actionpp.replicate.tables import (
    RunRecord,
    aggregate,
    collect,
    markdown_section,
    results_csv,
    results_markdown,
    write_results,
)

__all__ = ["publish", "check_publish", "OWNER"]

OWNER = "publish"  # the published folder's marker: DIR/.actionpp-publish.json (actionpp.atomic)
_COPIED = ("config.yaml", "log.jsonl", "run.json", "metrics.json")  # from the training run directory


def _machine() -> str:
    from actionpp.runlog import cpu_model

    return f"{cpu_model()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def _readme(grid: Grid, records: Sequence[RunRecord], runs: Sequence[Run], command: str, dest: Path) -> str:
    commits: dict[str, list[str]] = {}
    torch_versions: set[str] = set()
    lines_runs = []
    total = 0.0
    first = last = None
    for r in records:
        run_json = r.path / TRAIN_DIR / "run.json"
        record = json.loads(run_json.read_text()) if run_json.is_file() else {}
        env = record.get("environment", {})
        commits.setdefault(str(env.get("git_commit")), []).append(r.run_id)
        if env.get("torch"):
            torch_versions.add(str(env["torch"]))
        marker = json.loads((r.path / DONE).read_text())
        train = train_summary(r)
        # training time over every attempt (the loop keeps it in its checkpoints); the marker's seconds
        # are the last attempt's notebook only, which undercounts a run that was resumed
        seconds = float(train.get("seconds", marker.get("seconds", 0.0)))
        total += seconds
        fin = marker.get("finished")
        first = fin if first is None or (fin and fin < first) else first
        last = fin if last is None or (fin and fin > last) else last
        its = ", ".join(f"{k} {v:.2f}/s" for k, v in (train.get("its_per_s") or {}).items())
        resumed = len(record.get("starts", [])) > 1  # the loop records every start of the run
        starts = [s.get("git_commit") for s in record.get("starts", []) if isinstance(s, dict)]
        # the commit of every start (older runs record none: their one commit is in "environment", that of their
        # last start); a run resumed on newer code after a start that recorded none says so rather than credit
        # the newer commit
        code = (", ".join(dict.fromkeys(str(c)[:7] if c else "not recorded" for c in starts)) if any(starts)
                else str(env.get("git_commit") or "-")[:7])
        # the CPU of every start (runs on different CPUs are not bit-identical); older records have none
        cpus = [s.get("cpu") for s in record.get("starts", []) if isinstance(s, dict)]
        cpu = ", ".join(dict.fromkeys(str(c) if c else "not recorded" for c in cpus)) if any(cpus) else "not recorded"
        lines_runs.append(
            f"| {r.run_id} | {seconds / 60:.1f}{' (resumed)' if resumed else ''} | {its} | {code} | {cpu} | {fin} |"
        )
    out = [
        f"# {grid.name}: published results",
        "",
        "Written by `actionpp replicate --publish` from the runs' own files; nothing here is typed by hand.",
        "",
        f"- grid: `{grid.source}`" if grid.source else "- grid: (in memory)",
        f"- command: `{command}`",
        f"- finished runs: {len(records)} of {len(runs)} in the grid"
        + ("" if len(records) == len(runs) else " (the others had not finished when this was written)"),
        "- trained on commit(s): " + "; ".join(f"`{c}` ({len(v)} runs)" for c, v in commits.items()),
        f"- torch: {', '.join(sorted(torch_versions)) or 'unknown'}",
        f"- machine that wrote this folder: {_machine()} (each run's CPU: the table below)",
        f"- runs finished between {first} and {last}; training time of all runs added up: {total / 3600:.2f} h "
        "(two ran at a time, one torch thread each)",
        f"- written: {utc_now()}",
        "",
        "Files: `results.md` / `results.csv` (selected checkpoint), `results_best.md` / `results_best.csv` "
        "(best validation checkpoint), `val_dice.png` (validation Dice along training), `loss_shares.md` "
        "(which loss term drives the update), and per run its "
        "`done` marker and `metrics.json` (the notebook's), `run/config.yaml`, `run/log.jsonl`, `run/run.json` "
        "and `run/metrics.json` (the training loop's).",
        *(["", "Scored by the runner: per run `scores.json` (its checkpoint on val and test, student and EMA "
           "teacher, as the grid's `score` block asks), `results_test.md` / `results_test.csv` (the test split), "
           "`paired.md` / `paired.csv` / `paired.png` (methods compared per seed: `actionpp.replicate.paired`)."]
          if (dest / "paired.md").is_file() else []),
        *(["", "BatchNorm check (the grid's `batchnorm_check` block): per run `batchnorm.json`, `batchnorm.md` "
           "(each run's checkpoint scored with BatchNorm's running statistics as stored and re-estimated: "
           "`actionpp.replicate.batchnorm`)."]
          if (dest / "batchnorm.md").is_file() else []),
        *(["", "Per run `embeddings.npz`: a sample of its validation-pixel embeddings (head and decoder features, "
           "class-balanced and natural, fp16) from its last checkpoint, for notebook 05."]
          if any((dest / r.run_id / "embeddings.npz").is_file() for r in records) else []),
        "",
        "`minutes`: time in training iterations over all of the run's attempts (validation and checkpoint "
        "writes excluded; a run stopped and resumed counts the iterations it repeated after its last "
        "checkpoint once, not twice); `(resumed)`: more than one attempt; `commit`: the code of each of its starts "
        "(`not recorded`: a start on code from before each start recorded its commit); `CPU`: the CPU of each of "
        "its starts (`not recorded`: a start on code from before the CPU was recorded, 2026-12-07).",
        "",
        "| run | minutes | iterations / s (per phase) | commit | CPU | finished |",
        "|---|---|---|---|---|---|",
        *lines_runs,
        "",
    ]
    return "\n".join(out)


def docs_section(dest: Path, docs: Path, grid: Grid, scored: bool = False) -> str:
    """The Markdown that :func:`publish` writes into ``docs`` between ``<!-- grid:<name>:start/end -->``:
    the published tables (selected and best checkpoint), the validation-curve figure and the loss shares;
    for a scored grid first the paired analysis (verdicts, figure, tables) and the test-split table."""
    rel = Path(os.path.relpath(dest, docs.parent))

    def body(name: str) -> str:
        text = (dest / name).read_text().split("\n", 1)[1].strip()  # without its title line
        return text.replace("\n# ", "\n#### ")

    head: list[str] = []
    if scored and (dest / "paired.md").is_file():
        figure = [f"![paired differences per budget and class]({rel}/paired.png)", ""] if (
            dest / "paired.png").is_file() else []
        head = [(dest / "paired.md").read_text().strip().replace("\n### ", "\n#### ").replace("### ", "#### ", 1), "",
                *figure,
                "#### Test split (student, scored by the runner)", "", body("results_test.md"), ""]
    return "\n".join([*head,
        f"_Written by `actionpp replicate --publish {dest.name} --docs` from `{rel}/`; "
        f"provenance (commits, machine, wall times): [`{rel}/README.md`]({rel}/README.md)._",
        "",
        "#### Selected checkpoint (as the grid's profile selects it)",
        "",
        body("results.md"),
        "",
        "#### Best validation checkpoint",
        "",
        body("results_best.md"),
        "",
        f"![validation Dice along training]({rel}/val_dice.png)",
        "",
        f"Which loss term drives the update: [`{rel}/loss_shares.md`]({rel}/loss_shares.md).",
        *_shares_section(dest / "loss_shares.md"),
        *_batchnorm_section(dest / "batchnorm.md", rel),
    ])


def _shares_section(shares: Path) -> list[str]:
    """The loss-shares file's section setting ACTION++ beside ACTION (its sentences), for the docs; [] if none."""
    part = markdown_section(shares.read_text(), SHARES_HEADING) if shares.is_file() else None
    return ["", part] if part else []


def _batchnorm_section(path: Path, rel: Path) -> list[str]:
    """The BatchNorm check's per-budget lines for the docs, with a link to the file; [] without one."""
    part = markdown_section(path.read_text(), PER_BUDGET_HEADING) if path.is_file() else None
    if not part:
        return []
    return ["", f"BatchNorm's statistics, stored against re-estimated (a diagnostic): [`{rel}/batchnorm.md`]"
            f"({rel}/batchnorm.md).", "", part]


def _published_before(grid: Grid) -> Any:
    """Whether a folder without the marker is one an earlier version published ``grid`` into (its README)."""

    def recognise(folder: Path) -> bool:
        try:
            with open(folder / "README.md", encoding="utf-8") as fh:
                head = fh.read(400)
        except (OSError, UnicodeDecodeError):
            return False
        return head.startswith(f"# {grid.name}: published results\n") and "actionpp replicate --publish" in head

    return recognise


def _other_grid(grid: Grid) -> Any:
    def same(marker: dict[str, Any]) -> str | None:
        other = marker.get("grid")
        if other in (None, grid.name):
            return None
        return f"holds the published results of grid {other!r}, not {grid.name!r}"

    return same


def check_publish(out: str | Path, grid: Grid, dest: str | Path, docs: str | Path | None = None) -> None:
    """Refuse (:class:`~actionpp.atomic.OwnershipError` naming the path) a ``dest`` or ``docs`` that
    :func:`publish` may not write, before anything is run or written: ``dest`` equal to the grid folder
    ``out``, inside it or above it; a ``dest`` that is not a folder of this command for this grid (or new,
    or empty); a ``docs`` that is not Markdown (``.md``), not UTF-8 text, or holds no section this command
    wrote (nor is new), or whose section markers are broken."""
    out_r, dest_r = Path(out).resolve(), Path(dest).resolve()
    if out_r == dest_r or out_r in dest_r.parents or dest_r in out_r.parents:
        rel = "is" if out_r == dest_r else "is inside" if out_r in dest_r.parents else "contains"
        raise OwnershipError(f"{dest}: the publish folder {rel} the grid folder {out}; publish into a folder of its "
                             "own (e.g. results/<grid name>)")
    check_folder(dest, OWNER, recognise=_published_before(grid), same=_other_grid(grid))
    if docs is not None:
        _docs_text(Path(docs), grid)


def _docs_text(docs: Path, grid: Grid) -> str:
    """The current text of the ``--docs`` file (a new one: the benchmarks-style header), refused unless it is
    a Markdown file this command may write a section into."""
    from actionpp.benchdoc import HEADER, markers

    if docs.suffix.lower() != ".md":
        raise OwnershipError(f"{docs}: --docs rewrites a section of a Markdown file (.md), not this file")
    if docs.is_symlink() or (docs.exists() and not docs.is_file()):
        raise OwnershipError(f"{docs}: is not a plain file; --docs rewrites a section of a Markdown file")
    if not docs.exists():
        return HEADER
    try:
        text = docs.read_bytes().decode("utf-8")
    except OSError as exc:
        raise OwnershipError(f"{docs}: cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise OwnershipError(f"{docs}: is not UTF-8 text; --docs rewrites a section of a Markdown file") from None
    start, end = markers(f"grid:{grid.name}")
    if text.count(start) != text.count(end) or text.count(start) > 1 or \
            (start in text and text.index(start) > text.index(end)):
        raise OwnershipError(f"{docs}: the markers {start} / {end} are broken (one without the other, repeated or "
                             "out of order); mend them by hand")
    if start not in text and "<!-- grid:" not in text:
        raise OwnershipError(
            f"{docs}: holds no section written by actionpp replicate --publish; refusing to add one to a file "
            f"it does not write into (put the lines {start} and {end} where the section belongs)"
        )
    return text


def _write_docs_section(docs: Path, grid: Grid, body: str) -> None:
    """Replace (or append) the grid's section of ``docs`` atomically (:func:`actionpp.benchdoc.write_section`'s
    layout; a failed write leaves the file as it was)."""
    import re

    from actionpp.benchdoc import markers

    text = _docs_text(docs, grid)
    start, end = markers(f"grid:{grid.name}")
    block = f"{start}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    atomic_write_text(docs, text)


def publish(out: str | Path, runs: Sequence[Run], grid: Grid, dest: str | Path, command: str = "",
            docs: str | Path | None = None, embeddings: bool = True) -> Path:
    """Copy the finished runs' small files and write the tables, the curves and a README into ``dest``.

    Only runs that finished with valid metrics are published (:func:`~actionpp.replicate.tables.collect`).
    ``dest`` is created; files of runs published earlier are replaced by the current ones. With
    ``docs`` (a Markdown file, e.g. ``docs/results.md``) the grid's section of that file is rewritten
    (:func:`docs_section`); the rest of the file is left as it is. ``dest`` and ``docs`` are checked
    first (:func:`check_publish`): a path this command may not write is refused before anything is written.
    Runs the runner scored (``scores.json``) add ``results_test.{csv,md}`` and the paired analysis
    (``paired.{csv,md,png}``, :mod:`actionpp.replicate.paired`); with ``embeddings`` every 2D run with a
    checkpoint gets its ``embeddings.npz`` (what notebook 05 reads), and a run restored from a publish
    (:mod:`actionpp.replicate.restore`) the one it was restored with.
    """
    out, dest = Path(out), Path(dest)
    check_publish(out, grid, dest, docs)
    claim_folder(dest, OWNER, recognise=_published_before(grid), same=_other_grid(grid), info={"grid": grid.name})
    records = collect(out, runs)
    write_results(dest, records, title=f"{grid.name}: results (selected checkpoint)")
    best = best_records(records)
    rows = aggregate(best)
    note = ("Best validation checkpoint per run. When the runs are scored on the validation split, this is "
            "selected and scored on the same volumes: an optimistic number, shown because part of the field "
            "reports it; the selected-checkpoint table is the one to compare.")
    atomic_write_text(dest / "results_best.csv", results_csv(rows))
    md = results_markdown(rows, f"{grid.name}: results (best validation checkpoint)")
    atomic_write_text(dest / "results_best.md", md.replace("\n\n", f"\n\n{note}\n\n", 1))
    plot_validation_curves(records, dest / "val_dice.png", f"{grid.name}: validation Dice")
    atomic_write_text(dest / "loss_shares.md", loss_shares(records))
    for r in records:
        d = dest / r.run_id
        (d / TRAIN_DIR).mkdir(parents=True, exist_ok=True)
        for name in ("metrics.json", DONE):
            shutil.copyfile(r.path / name, d / name)
        for name in _COPIED:
            src = r.path / TRAIN_DIR / name
            if src.is_file():
                shutil.copyfile(src, d / TRAIN_DIR / name)
    _prune_stale(dest, records)
    scored = _publish_scores(records, dest, runs, grid)
    if grid.batchnorm is not None and grid.score is not None:
        _publish_batchnorm(records, dest, grid)
    if embeddings:
        _publish_embedding_samples(records, dest)
    atomic_write_text(dest / "README.md", _readme(grid, records, runs, command, dest))
    if docs is not None:
        _write_docs_section(Path(docs), grid, docs_section(dest, Path(docs), grid, scored=scored))
    return dest


def _prune_stale(dest: Path, records: Sequence[RunRecord]) -> None:
    """Remove the run folders an earlier publish wrote into ``dest`` whose runs are not among ``records`` (dropped
    from the grid, or stale): every reader of ``dest`` (tables, the paired analysis, notebooks 05 and 06) would
    otherwise count them. Only folders of this command's own layout are removed (``dest`` carries its marker)."""
    current = {r.run_id for r in records}
    for d in sorted(p.parent for p in dest.glob(f"*/{DONE}")):
        if d.name in current:
            continue
        names = {p.name for p in d.iterdir()}
        if names <= {"done", "metrics.json", "scores.json", "batchnorm.json", "embeddings.npz", TRAIN_DIR}:  # ours
            shutil.rmtree(d)


def _test_records(records: Sequence[RunRecord], split: str = "test") -> list[RunRecord]:
    """The runs as scored by the runner on ``split`` (student, ``scores.json``), in the tables' metrics schema."""
    from actionpp.replicate.score import SCORES, ScoresError, read_scores

    out = []
    for r in records:
        try:
            sc = read_scores(r.path / SCORES)
        except ScoresError:
            continue
        e = (sc["scores"].get(split) or {}).get("student")
        if not e:
            continue
        protocol = dict(r.metrics.get("protocol") or {})
        protocol["eval_split"] = f"{split} ({e.get('n_volumes')} volumes, scored by the runner)"
        protocol["model_selection"] = f"{sc.get('which')} checkpoint (scores.json)"
        m = {**{k: r.metrics.get(k) for k in ("dataset", "data", "method", "labelled_patients", "seed")},
             "classes": list(sc.get("classes") or e["dice"]), "protocol": protocol,
             **{k: e[k] for k in ("dice", "jaccard", "hd95", "asd")},
             **{f"{k}_mean": e.get(f"{k}_mean") for k in ("dice", "jaccard", "hd95", "asd")}}
        out.append(RunRecord(r.run_id, r.axes, m, r.path))
    return out


def _publish_scores(records: Sequence[RunRecord], dest: Path, runs: Sequence[Run] = (),
                    grid: Grid | None = None) -> bool:
    """Copy each run's ``scores.json``; when any run has one, the test-split tables and the paired analysis
    (whose verdicts say when a budget still has planned pairs to come: ``runs``, the whole grid; and whose
    ablation sentences say what each of ``grid``'s variants changes)."""
    from actionpp.replicate.analysis import write_paired
    from actionpp.replicate.paired import describe_variants, grid_design, planned_pairs
    from actionpp.replicate.score import SCORES

    copied = False
    for r in records:
        if (r.path / SCORES).is_file():
            shutil.copyfile(r.path / SCORES, dest / r.run_id / SCORES)
            copied = True
    if not copied:
        return False
    test = _test_records(records)
    rows = aggregate(test)
    which = " / ".join(sorted({str(r.metrics["protocol"]["model_selection"]).split(" ")[0] for r in test})) or "last"
    atomic_write_text(dest / "results_test.csv", results_csv(rows))
    atomic_write_text(dest / "results_test.md", results_markdown(rows, f"results on the test split ({which} "
                                                                       "checkpoint, student, scored by the runner)"))
    against = None
    if grid is not None and grid.describe_against:  # the other grid's published folder, beside this one
        against = (grid.name, grid.describe_against, dest.parent / grid.describe_against)
    write_paired(dest, only=[r.run_id for r in records], planned=planned_pairs(grid_design(runs)),
                 described=describe_variants(grid_variants(grid)) if grid is not None else None, against=against)
    return True


def _publish_batchnorm(records: Sequence[RunRecord], dest: Path, grid: Grid) -> None:
    """Each run's BatchNorm check (computed into its run folder when missing), copied, and ``batchnorm.md``;
    a run whose check fails is named there and on stderr, and the publish goes on."""
    import sys

    from actionpp.replicate.batchnorm import BATCHNORM, batchnorm_markdown, checks_for

    assert grid.batchnorm is not None and grid.score is not None
    problems: list[str] = []
    checks = checks_for(records, grid.score, grid.batchnorm, problems=problems)
    for r, _ in checks:
        shutil.copyfile(r.path / BATCHNORM, dest / r.run_id / BATCHNORM)
    for p in problems:
        print(f"warning: BatchNorm check not done for {p}", file=sys.stderr)
    atomic_write_text(dest / "batchnorm.md", batchnorm_markdown(checks, problems))


def _two_dimensional(dataset: Any) -> bool:
    """Whether runs of ``dataset`` (a registered name) train on slices: the embedding samples are 2D."""
    from actionpp.data.spec import dataset_spec

    try:
        return dataset_spec(str(dataset)).spatial_dims == 2
    except ValueError:  # not a registered dataset
        return False


def _publish_embedding_samples(records: Sequence[RunRecord], dest: Path) -> None:
    """Each 2D run's embedding sample (``embeddings.npz``, :func:`actionpp.embeddings.embedding_sample`) from its
    last checkpoint, written when missing or older than that checkpoint (a few seconds per run on a CPU); a run
    restored from a published folder (no checkpoint) gives the sample it was restored with."""
    from actionpp.embeddings import SAMPLE_FILE, write_embedding_sample

    for r in records:
        last = r.path / TRAIN_DIR / "last.pt"
        target = dest / r.run_id / SAMPLE_FILE
        if not last.is_file():  # a run restored from a publish keeps the sample that publish wrote
            kept = r.path / SAMPLE_FILE
            if kept.is_file() and not target.is_file():
                shutil.copyfile(kept, target)
            continue
        if not _two_dimensional(r.metrics.get("dataset")):
            continue
        if target.is_file() and target.stat().st_mtime >= last.stat().st_mtime:
            continue
        write_embedding_sample(r.path / TRAIN_DIR, target, device="cpu")
