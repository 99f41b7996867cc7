"""Restore a grid folder's finished runs from the folder the grid was published to.

A grid folder (``replicate --out``) holds checkpoints and lives on scratch space; the published folder
(``replicate --publish``, e.g. ``results/<grid>``) is the small, committed record. When the grid folder is
lost (a purged scratch disk, a new machine, a fresh clone), ``actionpp replicate GRID --out NEW
--restore-from results/<grid>`` copies every run the published folder holds as finished (its ``done``
marker with this grid's parameters, valid ``metrics.json`` and, for a scored grid, ``scores.json``) into
``NEW``, so the runner counts it as finished and trains only the rest::

    actionpp replicate notebooks/grids/acdc_lite_power.yaml --out runs/acdc_lite_power \\
        --restore-from results/acdc_lite_power

A restored run has no checkpoint (a publish does not keep them). It carries ``restored.json`` (where it came
from and when) and keeps what the publish computed from its checkpoint: ``batchnorm.json`` (read back by the
BatchNorm check instead of being recomputed, :func:`actionpp.replicate.batchnorm.check_run`) and
``embeddings.npz`` (copied to the next publish). A run folder already in ``NEW`` (finished, partly trained or
failed) is never touched: a restore only adds folders. When a restored run must run again (``--force``, or
the grid's ``score`` block changed since so that its scores no longer count), the runner first moves the
restored copy aside into ``NEW/.restored/`` (:func:`set_aside`; the published folder still holds the original)
and trains the run from iteration 0. A restore refuses a source that is not this grid's published folder,
and one nested with ``NEW``, before it writes anything; ``--slurm`` does not restore (restore first, with
``--report-only`` to train nothing, then submit).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from actionpp.atomic import OwnershipError, folder_markers, read_marker, utc_now

if TYPE_CHECKING:
    from actionpp.replicate.grid import Grid, Run

__all__ = ["RESTORED", "ASIDE", "restorable", "restore", "set_aside"]

RESTORED = "restored.json"  # in a restored run folder: where it was restored from, and when
ASIDE = ".restored"  # in the grid folder: restored copies of runs that ran again (set_aside)
_TMP = ".restoring-"  # a folder being copied: .<run id>.restoring-XXXX beside its target


def _check_source(published: Path, out: Path, grid: Grid) -> None:
    """Refuse (:class:`~actionpp.atomic.OwnershipError` naming the folder) a ``published`` that is not a folder
    ``replicate --publish`` wrote for ``grid``, or that is the grid folder ``out``, inside it or above it."""
    from actionpp.replicate.publish import OWNER

    src_r, out_r = published.resolve(), out.resolve()
    if src_r == out_r or src_r in out_r.parents or out_r in src_r.parents:
        raise OwnershipError(f"{published}: --restore-from and --out ({out}) must be two separate folders")
    if not published.is_dir():
        raise OwnershipError(f"{published}: no such folder (--restore-from takes the folder the grid was published "
                             f"to, e.g. results/{grid.name})")
    if OWNER not in folder_markers(published):
        raise OwnershipError(f"{published}: not a folder written by actionpp replicate --publish (it has no "
                             f"publish marker); --restore-from takes the grid's published folder")
    other = read_marker(published, OWNER).get("grid")
    if other != grid.name:
        raise OwnershipError(f"{published}: holds the published results of grid {other!r}, not {grid.name!r}")


def restorable(published: str | Path, out: str | Path, runs: Sequence[Run], grid: Grid) -> list[Run]:
    """The runs of ``runs`` that ``published`` holds as finished for these parameters and ``out`` has no
    folder for, in grid order (reads only; refuses a ``published`` that is not this grid's publish folder)."""
    from actionpp.replicate.run import run_state

    published, out = Path(published), Path(out)
    _check_source(published, out, grid)
    return [r for r in runs if run_state(r, published)[0] == "done" and not os.path.lexists(r.run_dir(out))]


def restore(published: str | Path, out: str | Path, runs: Sequence[Run], grid: Grid) -> list[str]:
    """Copy each :func:`restorable` run folder from ``published`` into ``out`` (which the caller has claimed:
    :func:`~actionpp.replicate.run.claim_out`) and return their run ids. Each folder is copied under a
    temporary name and renamed into place, so a killed restore leaves no half-copied run that would count
    as finished."""
    from actionpp.replicate.run import DONE

    published, out = Path(published), Path(out)
    stamp = utc_now()
    done = []
    for r in restorable(published, out, runs, grid):
        target = r.run_dir(out)
        target.parent.mkdir(parents=True, exist_ok=True)
        for left in target.parent.glob(f".{target.name}{_TMP}*"):  # a killed restore's copy (ours, by its name)
            shutil.rmtree(left, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}{_TMP}", dir=target.parent))
        try:
            shutil.copytree(r.run_dir(published), tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns(DONE))
            shutil.copyfile(r.run_dir(published) / DONE, tmp / DONE)  # last: the marker that says finished
            (tmp / RESTORED).write_text(json.dumps(
                {"from": str(published.resolve() / r.run_id), "restored": stamp,
                 "note": "copied from the published folder; the checkpoints were not published"}, indent=1))
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # our own temporary copy
            raise
        done.append(r.run_id)
    return done


def set_aside(rd: Path, out: Path) -> Path:
    """Move what ``rd`` (a restored run folder: ``restored.json``) holds, its lock file excepted, into
    ``out/.restored/<run id>`` (``-2``, ``-3``, ... when that exists) so that the run trains again from nothing;
    returns that folder. The caller holds ``rd``'s lock (:func:`actionpp.replicate.run.run_lock`)."""
    from actionpp.replicate.run import LOCK

    base = Path(out) / ASIDE / rd.name
    aside, k = base, 1
    while aside.exists():
        k += 1
        aside = base.with_name(f"{base.name}-{k}")
    aside.mkdir(parents=True)
    for entry in sorted(rd.iterdir()):
        if entry.name != LOCK:
            shutil.move(str(entry), str(aside / entry.name))
    return aside
