"""The runner's scoring step (actionpp.replicate.score): val and test, student and EMA teacher, before ``done``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from actionpp import replicate as rp
from actionpp.config import load_config
from actionpp.evaluate import evaluate_run
from actionpp.models.segmodel import load_model
from actionpp.replicate.run import DONE, METRICS, run_state
from actionpp.replicate.score import SCORES, ScoresError, ScoreSpec, parse_score_spec, read_scores, score_run
from actionpp.train import train

FAST = ["train.pretrain_iters=2", "train.finetune_iters=4", "runtime.checkpoint_every=2"]


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder holding a finished ACTION++ smoke run in ``run/`` (it has an EMA teacher)."""
    folder = tmp_path_factory.mktemp("scored")
    train(load_config("phantom_smoke", ["method.name=actionpp", *FAST]), run_dir=folder / "run", progress=False)
    return folder


def test_scores_every_split_with_every_weight_set_and_equal_evaluate(scored_run: Path) -> None:
    spec = ScoreSpec(splits=("val", "test"), weights=("student", "teacher"))
    out = score_run(scored_run, spec, device="cpu")
    assert read_scores(scored_run / SCORES, spec) == json.loads((scored_run / SCORES).read_text()) == out
    assert out["iteration"] == 6 and out["which"] == "last" and out["checkpoint"].endswith("last.pt")
    assert out["classes"] == ["RV", "Myo", "LV"]
    for split in ("val", "test"):
        for weights in ("student", "teacher"):
            ev = evaluate_run(scored_run / "run", None, split=split, which="last", device="cpu", weights=weights)
            entry = out["scores"][split][weights]
            assert entry["n_volumes"] == len(ev.volumes)
            assert entry["dice"] == {c: ev.summary["dice_per_class"][c] for c in ("RV", "Myo", "LV")}
            assert entry["dice_mean"] == pytest.approx(ev.summary["dice"])
    # the teacher entries come from the teacher's weights (equal to evaluate_run(weights="teacher") above),
    # which are not the student's: the EMA copy lags it
    student, _ = load_model(scored_run / "run", "last", weights="student")
    teacher, _ = load_model(scored_run / "run", "last", weights="teacher")
    assert any(not torch.equal(a, b) for a, b in zip(student.state_dict().values(), teacher.state_dict().values()))


def test_each_entry_counts_missed_structures_per_class_and_keeps_every_volumes_dice(scored_run: Path) -> None:
    """Per class: the structures missed (gt present, nothing predicted) and each volume's Dice, which average to the
    entry's per-class Dice; and on a hand-made split of three volumes (the RV lost in one, an LV invented in another,
    the RV absent from both masks of the third), the counts by hand: RV missed once, LV spurious once."""
    from actionpp.evaluate import EvalResult
    from actionpp.metrics import summarise
    from actionpp.replicate.score import score_entry

    out = score_run(scored_run, ScoreSpec(splits=("val",), weights=("student",)), device="cpu")
    entry = out["scores"]["val"]["student"]
    ev = evaluate_run(scored_run / "run", None, split="val", which="last", device="cpu", weights="student")
    assert [v["name"] for v in entry["volumes"]] == [v.name for v in ev.volumes] and len(ev.volumes) > 1
    for c in ("RV", "Myo", "LV"):
        assert sum(v["dice"][c] for v in entry["volumes"]) / len(ev.volumes) == pytest.approx(entry["dice"][c])
    assert sum(entry["missed"].values()) == entry["empty"]["missed"]
    assert sum(entry["spurious"].values()) == entry["empty"]["spurious"]

    def r(dice: float, pred_empty: bool, gt_empty: bool) -> dict:
        return {"dice": dice, "jaccard": dice, "hd95_vox": 1.0, "asd_vox": 1.0, "hd95_mm": math.nan, "asd_mm": math.nan,
                "pred_empty": pred_empty, "gt_empty": gt_empty}

    vols = [{"name": "a", "metrics": {1: r(0.0, True, False), 2: r(0.8, False, False), 3: r(0.9, False, False)}},
            {"name": "b", "metrics": {1: r(0.6, False, False), 2: r(0.7, False, False), 3: r(0.0, False, True)}},
            {"name": "c", "metrics": {1: r(1.0, True, True), 2: r(0.5, False, False), 3: r(0.6, False, False)}}]
    made = score_entry(EvalResult(per_volume=vols, summary=summarise(vols)), "acdc")
    # volume c's RV is absent in both masks: a correct absence, neither missed nor spurious
    assert made["missed"] == {"RV": 1, "Myo": 0, "LV": 0} and made["spurious"] == {"RV": 0, "Myo": 0, "LV": 1}
    assert made["empty"] == {"both_empty": 1, "missed": 1, "spurious": 1}
    assert made["volumes"] == [{"name": "a", "dice": {"RV": 0.0, "Myo": 0.8, "LV": 0.9}},
                               {"name": "b", "dice": {"RV": 0.6, "Myo": 0.7, "LV": 0.0}},
                               {"name": "c", "dice": {"RV": 1.0, "Myo": 0.5, "LV": 0.6}}]
    # per class, the mean over the three volumes: RV (0 + 0.6 + 1) / 3, Myo (0.8 + 0.7 + 0.5) / 3, LV 1.5 / 3
    assert made["dice"] == {"RV": pytest.approx(1.6 / 3), "Myo": pytest.approx(2 / 3), "LV": pytest.approx(0.5)}
    # a Dice the policy leaves out (NaN) is stored as null, so the entry stays strict JSON
    vols[2]["metrics"][2] = r(math.nan, False, False)
    made = score_entry(EvalResult(per_volume=vols, summary=summarise(vols)), "acdc")
    assert made["volumes"][2]["dice"] == {"RV": 1.0, "Myo": None, "LV": 0.6}
    assert made["dice"]["Myo"] == pytest.approx(0.75)  # the mean of the two Myo values kept
    json.dumps(made["volumes"], allow_nan=False)
    # policy "nan" gives no HD95 / ASD where one mask is empty: with the Myo lost in every volume, its HD95 and
    # ASD have no mean, stored as null, not NaN (json.dumps would write NaN, which strict JSON readers refuse)
    for v in vols:
        v["metrics"][2] = {**r(0.0, True, False), "hd95_vox": math.nan, "asd_vox": math.nan}
    made = score_entry(EvalResult(per_volume=vols, summary=summarise(vols)), "acdc")
    assert made["hd95"]["Myo"] is None and made["asd"]["Myo"] is None and made["dice"]["Myo"] == 0.0
    assert made["hd95"]["RV"] == 1.0 and made["missed"]["Myo"] == 3
    json.dumps(made, allow_nan=False)


def test_missing_or_incomplete_scores_name_the_file(tmp_path: Path, scored_run: Path) -> None:
    spec = ScoreSpec(splits=("test",), weights=("student",))
    with pytest.raises(ScoresError, match="scores.json: missing"):
        read_scores(tmp_path / SCORES, spec)
    (tmp_path / SCORES).write_text("{trunc")
    with pytest.raises(ScoresError, match="unreadable"):
        read_scores(tmp_path / SCORES)
    score_run(scored_run, spec, device="cpu")
    with pytest.raises(ScoresError, match="no teacher score on test"):
        read_scores(scored_run / SCORES, ScoreSpec(splits=("test",), weights=("student", "teacher")))
    with pytest.raises(ScoresError, match="'best'"):
        read_scores(scored_run / SCORES, ScoreSpec(which="best"))


def test_a_method_without_teacher_gets_its_teacher_entries_recorded_as_absent(tmp_path: Path) -> None:
    """A grid asks for teacher scores of every method; supervised has none: recorded, not a failed run."""
    train(load_config("phantom_smoke", ["method.name=supervised", *FAST]), run_dir=tmp_path / "run", progress=False)
    spec = ScoreSpec(splits=("val", "test"), weights=("student", "teacher"))
    out = score_run(tmp_path, spec, device="cpu")
    assert out["has_teacher"] is False
    assert out["scores"]["test"]["teacher"] is None and out["scores"]["val"]["teacher"] is None
    assert out["scores"]["test"]["student"]["n_volumes"] > 0
    assert read_scores(tmp_path / SCORES, spec)["has_teacher"] is False  # complete as the grid asked
    broken = json.loads((tmp_path / SCORES).read_text())
    broken["scores"]["test"]["student"] = None
    (tmp_path / SCORES).write_text(json.dumps(broken))
    with pytest.raises(ScoresError, match="no student score on test"):
        read_scores(tmp_path / SCORES, spec)


@pytest.mark.parametrize("raw, needle", [
    ("test", "must be a mapping"),
    ({"splits": ["train"]}, "score.splits must list distinct values of val, test"),
    ({"splits": ["test", "test"]}, "score.splits"),
    ({"weights": []}, "score.weights"),
    ({"which": "auto"}, "score.which must be last or best"),
    ({"run": "../elsewhere"}, "score.run must be a folder inside the run folder"),
    ({"split": ["test"]}, "unknown key(s) ['split']"),
])
def test_bad_score_blocks_name_the_key(raw: object, needle: str) -> None:
    with pytest.raises(ValueError, match=__import__("re").escape(needle)):
        parse_score_spec(raw, "g.yaml")


def test_grid_score_block_reaches_every_run_and_a_done_run_without_scores_is_broken(tmp_path: Path) -> None:
    grid = rp.load_grid({
        "name": "g", "notebooks": ["04_train"], "profile": "smoke",
        "score": {"splits": ["val", "test"], "weights": ["student"]},
        "blocks": [{"axes": {"SEED": [0], "METHOD": ["supervised"]}},
                   {"axes": {"SEED": [1], "METHOD": ["supervised"]}}],
    })
    runs = rp.expand(grid)
    assert [r.score for r in runs] == [ScoreSpec(splits=("val", "test"))] * 2
    rd = runs[0].run_dir(tmp_path)
    rd.mkdir(parents=True)
    (rd / DONE).write_text(json.dumps({"parameters": [json.loads(json.dumps(p, default=str))
                                                      for p in runs[0].parameters]}))
    one = {"RV": 0.5}
    (rd / METRICS).write_text(json.dumps({"dataset": "acdc", "classes": ["RV"], "dice": one, "jaccard": one,
                                          "hd95": one, "asd": one, "protocol": {}}))
    status, problem = run_state(runs[0], tmp_path)
    assert status == "broken" and problem is not None and "scores.json: missing" in problem
    with pytest.raises(rp.GridError, match="score.which"):
        rp.load_grid({"name": "g", "notebooks": ["04_train"], "axes": {"SEED": [0]}, "score": {"which": "first"}})


def test_publishing_a_scored_grid_adds_scores_test_tables_paired_analysis_and_embedding_samples(tmp_path: Path) -> None:
    """A scored grid's published folder: per run scores.json, batchnorm.json and embeddings.npz (from the last
    checkpoint), the test-split tables, paired.{csv,md,png}, batchnorm.md; notebooks 05 and 06 read it back."""
    from actionpp import headtail
    from actionpp.embeddings import SAMPLE_FILE
    from actionpp.replicate.paired import collect_scored
    from actionpp.replicate.publish import publish
    from actionpp.replicate.run import run_grid

    def executor(notebook: Path, output: Path, params: dict) -> None:
        """04_train in process: train the smoke profile into OUT_DIR/run and write the notebook's metrics.json."""
        from actionpp.evaluate import evaluate_run
        from actionpp.notebook import write_metrics
        from actionpp.report import run_metrics

        output.write_text("{}")
        cfg = load_config("phantom_smoke", [f"method.name={params['METHOD']}", f"runtime.seed={params['SEED']}",
                                            *FAST])
        res = train(cfg, run_dir=Path(params["OUT_DIR"]) / "run", progress=False)
        ev = evaluate_run(Path(params["OUT_DIR"]) / "run", None, split="val", which="last", device="cpu")
        write_metrics(params["OUT_DIR"], run_metrics(cfg, res, ev.result, "val", ev.root))

    grid = rp.load_grid({"name": "g", "notebooks": ["04_train"], "profile": "smoke",
                         "score": {"splits": ["val", "test"], "weights": ["student", "teacher"]},
                         "batchnorm_check": {"images": 8},
                         "axes": {"METHOD": ["action", "actionpp"], "SEED": [0, 1]}})
    runs = rp.expand(grid)
    out = tmp_path / "runs"
    assert {o.status for o in run_grid(runs, out, executor=executor, log=None)} == {"done"}
    dest = publish(out, runs, grid, tmp_path / "results" / "g", command="test")
    for r in runs:
        names = {p.name for p in (dest / r.run_id).iterdir()}
        assert {"scores.json", "batchnorm.json", SAMPLE_FILE, "metrics.json", "done", "run"} <= names
        assert "last.pt" not in names
    assert {"results_test.md", "results_test.csv", "paired.md", "paired.csv", "paired.png"} <= {
        p.name for p in dest.iterdir()}
    assert "results on the test split" in (dest / "results_test.md").read_text()
    # the BatchNorm check: one line per run, and the per-budget line naming both methods
    bn = (dest / "batchnorm.md").read_text()
    assert all(f"| {r.run_id} |" in bn for r in runs) and "ACTION++" in bn and "ACTION " in bn
    assert "`batchnorm.md`" in (dest / "README.md").read_text()
    # the published folder is what notebooks 05 and 06 read
    assert len(collect_scored(dest)) == 4
    pub = headtail.load_published(dest, methods=["action", "actionpp"])
    assert [(r.method, r.seed) for r in pub] == [("action", 0), ("action", 1), ("actionpp", 0), ("actionpp", 1)]
    assert "ACTION++" in (dest / "paired.md").read_text() and "Scored by the runner" in (dest / "README.md").read_text()
    # a second publish does not extract the samples again (they are newer than the checkpoints)
    stamp = (dest / runs[0].run_id / SAMPLE_FILE).stat().st_mtime_ns
    publish(out, runs, grid, dest, command="test")
    assert (dest / runs[0].run_id / SAMPLE_FILE).stat().st_mtime_ns == stamp

    # the grid folder is lost (scratch purged, new machine): restoring from the published folder gives back every
    # finished run, and a publish from the restored folder writes the same analysis (no checkpoint left to read)
    from actionpp.atomic import OwnershipError
    from actionpp.replicate.restore import RESTORED, restorable, restore
    from actionpp.replicate.run import claim_out

    lost = tmp_path / "lost"
    claim_out(lost, grid.name)
    assert restore(dest, lost, runs, grid) == [r.run_id for r in runs]
    assert [run_state(r, lost)[0] for r in runs] == ["done"] * 4
    assert all((r.run_dir(lost) / RESTORED).is_file() and not (r.run_dir(lost) / "run" / "last.pt").exists()
               for r in runs)
    assert restorable(dest, lost, runs, grid) == [] and restore(dest, lost, runs, grid) == []  # nothing twice
    # the tables a publish writes from the restored folder equal the first publish's, BatchNorm rows included
    again = publish(lost, runs, grid, tmp_path / "results" / "g2", command="test")
    for name in ("batchnorm.md", "paired.md", "paired.csv", "results_test.md", "results.md", "loss_shares.md"):
        assert (again / name).read_text() == (dest / name).read_text(), name
    assert all((again / r.run_id / SAMPLE_FILE).read_bytes() == (dest / r.run_id / SAMPLE_FILE).read_bytes()
               for r in runs)
    # the restored check stands in for the checkpoint the grid scores only: another checkpoint, or a folder that
    # was not restored, is still an error naming the missing checkpoint
    from actionpp.checkpoint import CheckpointError
    from actionpp.replicate.batchnorm import check_run

    one = runs[0].run_dir(lost)
    assert check_run(one, grid.score, grid.batchnorm)["checkpoint_in_run"] == "run/last.pt"
    with pytest.raises(CheckpointError):
        check_run(one, ScoreSpec(which="best"), grid.batchnorm)
    (one / RESTORED).rename(one / "was_restored.json")
    with pytest.raises(CheckpointError):
        check_run(one, grid.score, grid.batchnorm)
    (one / "was_restored.json").rename(one / RESTORED)
    # a run folder already there is never replaced, and only a publish folder of this grid is a source
    claim_out(tmp_path / "mixed", grid.name)
    partial = runs[0].run_dir(tmp_path / "mixed")
    partial.mkdir(parents=True)
    (partial / "note.txt").write_text("mine")
    assert restore(dest, tmp_path / "mixed", runs, grid) == [r.run_id for r in runs[1:]]
    assert [p.name for p in partial.iterdir()] == ["note.txt"]
    with pytest.raises(OwnershipError, match="not a folder written by actionpp replicate --publish"):
        restorable(out, lost, runs, grid)
    with pytest.raises(OwnershipError, match="must be two separate folders"):
        restorable(dest, dest / "runs", runs, grid)
    other = rp.load_grid({"name": "h", "notebooks": ["04_train"], "profile": "smoke", "axes": {"SEED": [0]}})
    with pytest.raises(OwnershipError, match="grid 'g', not 'h'"):
        restorable(dest, lost, rp.expand(other), other)
