"""``actionpp demo``: run the notebook sequence 00..06 on the phantom and summarise it.

Every ``notebooks/NN_*.ipynb`` runs in order through the strict papermill front door
(:func:`actionpp.notebook.execute`) with the chosen parameter profile (``lab`` by default:
the parameters cells' own values, sized for a laptop CPU) and ``OUT_DIR = OUT/<stem>``.
The executed notebooks and their HTML exports land in ``OUT`` (``runs/demo``); a failed
notebook is reported and the sequence goes on. At the end a table gives each notebook's
status, wall time and key metrics (also written to ``OUT/summary.md`` and ``summary.json``).
The runs ``05_embeddings`` compares (its METHODS x SEEDS, lab: three methods, one seed) are trained in a background
process on the second core while ``04_train`` trains on the first; 05 waits for them.
Notebooks in :data:`OPTIONAL` (07: a few CPU minutes on its own) are left out of the full
sequence and run when ``--only`` names them.

Examples::

    actionpp demo                          # everything, lab profile, runs/demo
    actionpp demo --only 04,05             # two notebooks
    actionpp demo --only 07                # an optional notebook (not in the full sequence)
    actionpp demo --profile smoke --out runs/demo-smoke

OUT is new, empty, or a folder an earlier demo wrote (its ``.actionpp-demo.json`` marker, or the
``summary.json`` an earlier version left); the demo never writes into any other folder.

Exit code: 0 when every notebook ran, 1 when any failed, 2 for bad arguments (an unknown profile,
an OUT the demo did not write).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

# Numbers worth a glance in the summary, per notebook stem (dotted paths into metrics.json).
# A notebook not listed here shows its first few top-level numbers.
KEY_METRICS: dict[str, list[str]] = {
    "04_train": ["method", "dice_mean", "asd_mean", "train_seconds"],
    "05_embeddings": ["map"],
    "06_replication_report": ["n_runs", "n_groups"],
    "07_beyond_medical": ["n_runs", "train_wall_seconds"],
}

# Notebooks the full sequence leaves out, and why; ``--only`` runs them. 07's lab profile trains
# 7 arms x 3 imbalance ratios x 5 seeds: minutes on one core, beyond the demo's ~60 s per notebook.
OPTIONAL: dict[str, str] = {
    "07_beyond_medical": "optional, a few CPU minutes (105 small trainings): actionpp demo --only 07",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the notebook sequence 00..06 on the phantom (CPU) and summarise it",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--profile", default="lab", help="parameter profile: smoke, lab (default), paper_acdc, paper_la")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: runs/demo)")
    p.add_argument("--only", default=None, help="comma-separated notebook numbers or stems, e.g. 00,04,05")
    p.add_argument("--no-html", action="store_true", help="skip the HTML exports")
    p.add_argument(
        "--cell-timeout", type=float, default=3600.0,
        help="seconds one cell may run before its notebook is failed (default 3600: 04's training cell "
             "takes about 4 min on an idle 2-core CPU and several times that on a busy one; a hung kernel "
             "must not stall the sequence forever)",
    )
    p.set_defaults(func=_main)


def select_notebooks(folder: Path, only: str | None) -> list[Path]:
    """``NN_*.ipynb`` in ``folder`` sorted by name, filtered by ``only`` ("04,05" or stems).

    Without ``only``, the notebooks of :data:`OPTIONAL` are left out; ``only`` may name them.
    Raises ValueError naming an ``only`` entry that matches no notebook.
    """
    nbs = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb") if p.is_file())
    if only is None:
        return [p for p in nbs if p.stem not in OPTIONAL]
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    chosen = []
    for w in wanted:
        hits = [p for p in nbs if (p.stem[:2] == w.zfill(2) if w.isdigit() else p.stem == w)]
        if not hits:
            raise ValueError(f"--only {w!r} matches no notebook in {folder} (have {[p.stem for p in nbs]})")
        chosen += [h for h in hits if h not in chosen]
    return sorted(chosen)


def _dig(d: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def _leaves(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if not isinstance(d, dict):
        return [(prefix, d)]
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        out += _leaves(v, f"{prefix}.{k}" if prefix else str(k))
    return out


def key_metrics(stem: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """The summary numbers of one notebook's ``metrics.json`` (see :data:`KEY_METRICS`)."""
    keys = KEY_METRICS.get(stem)
    if keys is None:
        keys = [k for k, v in _leaves(metrics) if isinstance(v, (int, float)) and not isinstance(v, bool)
                and k != "seconds" and not k.startswith("_")][:3]
    out = {k: _dig(metrics, k) for k in keys}
    if stem == "05_embeddings" and isinstance(metrics.get("runs"), dict):
        for label, r in metrics["runs"].items():
            tail = r.get("tail")
            per = _dig(r, f"per_class.{tail}") if tail else None
            per = per if isinstance(per, dict) else {}
            # the nearest-class-mean accuracy: the same rule for every method (05 since issue 12)
            out[f"{label} tail acc"] = per.get("accuracy_class_means", per.get("accuracy"))
            if "dice" in per:
                out[f"{label} tail Dice"] = per["dice"]
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.3g}"
    return str(v)


def background_runs(nbs: list[Path], out: Path, profile: str | None, log: Any) -> Any:
    """Start training the runs ``05_embeddings`` will compare, in a background process, when
    ``04_train`` comes before it in this sequence; None otherwise (or when they are finished).

    04 trains on one core for most of the demo's time; these runs use the other one (an idle
    2-core CPU does both in about 04's time), and 05 then finds them finished (``train`` returns a
    finished run of the same configuration at once). The plan is the one 05 computes from the
    same parameters (:func:`actionpp.lab.runs.plan_of_notebook`): its defaults, the profile's file
    and ``OUT_DIR``. Any problem here only means that 05 trains its runs itself.
    """
    from actionpp import notebook as nbmod
    from actionpp.lab import runs as R

    stems = [nb.stem for nb in nbs]
    nb05 = next((nb for nb in nbs if nb.stem.startswith("05")), None)
    if nb05 is None or not any(s.startswith("04") for s in stems[: stems.index(nb05.stem)]):
        return None
    try:
        params: dict[str, Any] = {n: p.default for n, p in nbmod.parameters_of(nb05).items()}
        if profile is not None and nbmod.profile_path(nb05, profile).is_file():
            params.update(nbmod.load_profile(nb05, profile))
        params["OUT_DIR"] = str(out / nb05.stem)
        plan = R.plan_of_notebook(params)
        bg = R.start_background(plan) if plan else None
    except Exception as exc:  # noqa: BLE001 - only an optimisation: 05 trains its runs itself
        log(f"   ({nb05.stem}'s runs not started in the background: {exc}; it trains them itself)")
        return None
    if bg is not None:
        log(f"   training the {len(bg.plan)} runs {nb05.stem} compares in the background (second core)")
    return bg


def run_sequence(
    nbs: list[Path],
    out: Path,
    profile: str = "lab",
    html: bool = True,
    cwd: Path | None = None,
    log: Any = print,
    cell_timeout: float | None = None,
) -> list[dict[str, Any]]:
    """Execute ``nbs`` in order into ``out`` (``OUT/<stem>.ipynb``, ``OUT_DIR = OUT/<stem>``).

    Never raises for a notebook error: each row is ``{"notebook", "status" ("ok" | "FAILED"),
    "seconds", "metrics" (see :func:`key_metrics`), "error"}``. A notebook without a file for
    ``profile`` runs with its parameters-cell values when ``profile`` is ``lab`` (they are the
    same by convention) and fails otherwise. HTML pages are exported for every executed
    notebook, failed ones included (they show the traceback). ``cell_timeout``: seconds per
    cell (None = no limit); a cell over it fails its notebook and the sequence goes on.
    The runs ``05_embeddings`` compares are trained in a background process while the notebooks
    before it run (:func:`background_runs`); 05 waits for them before it starts.
    """
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    background = background_runs(nbs, out, profile, log)
    try:
        for nb in nbs:
            if background is not None and nb.stem.startswith("05"):
                t_wait = time.perf_counter()
                ok = background.wait()
                log(f"   background runs of {nb.stem}: {'done' if ok else 'FAILED (it trains them itself)'}, "
                    f"waited {time.perf_counter() - t_wait:.1f} s")
                background = None
            rows.append(_run_one(nb, out, profile, html, cwd, log, cell_timeout))
    finally:
        if background is not None:
            background.stop()
    return rows


def _run_one(
    nb: Path, out: Path, profile: str, html: bool, cwd: Path | None, log: Any, cell_timeout: float | None,
) -> dict[str, Any]:
    """One notebook of :func:`run_sequence`: execute, read its metrics, export HTML; its row."""
    from actionpp import notebook as nbmod

    stem = nb.stem
    output = out / f"{stem}.ipynb"
    nb_out = out / stem
    prof: str | None = profile
    if profile == "lab" and not nbmod.profile_path(nb, profile).is_file():
        prof = None
    row: dict[str, Any] = {"notebook": stem, "status": "ok", "seconds": 0.0, "metrics": {}, "error": None}
    log(f"-> {stem} ...")
    t0 = time.perf_counter()
    try:
        declared = nbmod.parameters_of(nb)
        params = {"OUT_DIR": str(nb_out)} if "OUT_DIR" in declared else {}
        nbmod.execute(nb, output, params, prof, cwd=cwd, timeout=cell_timeout)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - report and go on with the next notebook
        row["status"] = "FAILED"
        row["error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    row["seconds"] = time.perf_counter() - t0
    if row["status"] == "ok":
        try:
            row["metrics"] = key_metrics(stem, nbmod.read_metrics(nb_out))
        except (OSError, ValueError) as exc:
            row["status"] = "FAILED"
            row["error"] = f"no readable metrics.json in {nb_out}: {exc}"
    if html and output.is_file():
        try:
            nbmod.export_html(output, out / f"{stem}.html")
        except Exception as exc:  # noqa: BLE001 - a missing HTML page is not a failed notebook
            row["html_error"] = str(exc)
    log(f"   {stem}: {row['status']}{': ' + row['error'] if row['error'] else ''} ({row['seconds']:.1f} s)")
    return row


def summary_markdown(rows: list[dict[str, Any]], profile: str, total: float, out: Path) -> str:
    """The summary table: notebook, status, seconds, key metrics (or the error)."""
    lines = [f"# actionpp demo ({profile} "
             f"profile)", "", "| notebook | status | seconds | key metrics |", "|---|---|---|---|"]
    for r in rows:
        km = ", ".join(f"{k}={_fmt(v)}" for k, v in r["metrics"].items()) or (r["error"] or "")
        lines.append(f"| {r['notebook']} | {r['status']} | {r['seconds']:.1f} | {km} |")
    lines += ["", f"total wall time: {total:.1f} s; executed notebooks and HTML pages in {out}", ""]
    return "\n".join(lines)


OWNER = "demo"  # the demo folder's marker: OUT/.actionpp-demo.json (actionpp.atomic)


def _demo_folder(out: Path) -> bool:
    """Whether ``out`` (without the marker) is a folder an earlier version of the demo wrote (its summary)."""
    try:
        data = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "profile" in data and isinstance(data.get("notebooks"), list)


def _main(args: argparse.Namespace) -> int:
    from actionpp.atomic import claim_folder
    from actionpp.cli import UsageError
    from actionpp.paths import repo_root, runs_dir

    folder = repo_root() / "notebooks"
    try:
        nbs = select_notebooks(folder, args.only)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if not nbs:
        raise UsageError(f"no notebooks in {folder}")
    profiles = sorted(p.name for p in (folder / "params").iterdir() if p.is_dir()) if (folder / "params").is_dir() \
        else []
    if args.profile != "lab" and args.profile not in profiles:
        raise UsageError(f"--profile {args.profile!r}: no such parameter profile (have {', '.join(profiles)})")
    if not args.cell_timeout > 0:
        raise UsageError(f"--cell-timeout must be > 0 seconds, got {args.cell_timeout}")
    out = (args.out or runs_dir() / "demo").resolve()
    claim_folder(out, OWNER, recognise=_demo_folder)  # before the first byte (actionpp.atomic's rule)
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(f"demo: {len(nbs)} notebooks, profile {args.profile} -> {out}", flush=True)
    if args.only is None:
        for stem, why in OPTIONAL.items():
            if (folder / f"{stem}.ipynb").is_file():
                print(f"   not in the sequence: {stem} ({why})", flush=True)
    t_all = time.perf_counter()
    rows = run_sequence(
        nbs,
        out,
        args.profile,
        html=not args.no_html,
        cwd=repo_root(),
        log=lambda m: print(m, flush=True),
        cell_timeout=args.cell_timeout,
    )
    total = time.perf_counter() - t_all
    from actionpp.atomic import atomic_write_text

    text = summary_markdown(rows, args.profile, total, out)
    atomic_write_text(out / "summary.md", text)
    atomic_write_text(out / "summary.json",
                      json.dumps({"profile": args.profile, "seconds": total, "notebooks": rows}, indent=2, default=str))
    print()
    print(text)
    failed = [r for r in rows if r["status"] != "ok"]
    for r in failed:
        print(
            f"FAILED {r['notebook']}: {r['error']}\n    notebook: {out / (r['notebook'] + '.ipynb')}", file=sys.stderr
        )
    return 1 if failed else 0
