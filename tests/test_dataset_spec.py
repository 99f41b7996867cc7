"""A third dataset from one place (issue 20): its spec, its reader and its phantom are written in this file
and registered here, and the public commands phantom, check, pack, train, evaluate and the run report take
it without any module of the library naming it.

"dots": a small 2D, long-tailed phantom with three classes (background, a large disc, rare small dots)
in a layout of its own (``dots.json``, ``train_slices.txt``, ``<split>.txt``, ``slices/*.npz``,
``volumes/*.npz``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from actionpp import cli
from actionpp.config import ConfigError, load_config
from actionpp.data.core import DataError, Volume, read_list, validate_pair
from actionpp.data.phantom import write_info
from actionpp.data.spec import (
    DatasetReader,
    DatasetSpec,
    DataSettings,
    LabelledError,
    PhantomSpec,
    register_dataset,
    unregister_dataset,
)
from actionpp.data.tensors import load_slice_training

# =========================================================================== the dataset: spec, reader, phantom

NAME = "dots"
CLASS_NAMES = ("background", "disc", "dot")  # the dot is the tail class (~1 % of the pixels)
SIDE = 40  # slices are 40 x 40: training resizes them to data.size


class DotsReader:
    """Reader of one ``dots`` folder (the layout in the module docstring)."""

    kind = NAME
    num_classes = len(CLASS_NAMES)

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not (self.root / "dots.json").is_file():
            raise DataError(f"{self.root}: not a dots folder (no dots.json)")

    def slice_path(self, name: str) -> Path:
        return self.root / "slices" / f"{name}.npz"

    def volume_path(self, name: str) -> Path:
        return self.root / "volumes" / f"{name}.npz"

    @property
    def train_slices(self) -> list[str]:
        return read_list(self.root / "train_slices.txt", root=self.root, entry_path=self.slice_path)

    def has_split(self, split: str) -> bool:
        return (self.root / f"{split}.txt").is_file()

    def volumes(self, split: str) -> list[str]:
        return read_list(self.root / f"{split}.txt", root=self.root, entry_path=self.volume_path)

    def available(self, split: str) -> list[str]:
        return [n for n in self.volumes(split) if self.volume_path(n).is_file()]

    def _read(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        if not path.is_file():
            raise DataError(f"{path}: file missing")
        with np.load(path) as z:
            image, label = z["image"].astype(np.float32), z["label"].astype(np.uint8)
        validate_pair(image, label, self.num_classes, str(path))
        return image, label

    def read_slice(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        return self._read(self.slice_path(name))

    def read_volume(self, name: str) -> Volume:
        return Volume(name, *self._read(self.volume_path(name)))


def _case_of(name: str) -> str:
    return name.split("_slice_")[0]


def _split_labelled(reader: DatasetReader, labelled: int | None) -> tuple[list[str], list[str]]:
    """The first slices of ``train_slices.txt`` that cover ``labelled`` cases are labelled."""
    names = list(cast(DotsReader, reader).train_slices)
    cases = list(dict.fromkeys(_case_of(n) for n in names))
    if labelled is None:
        return names, []
    if labelled > len(cases):
        raise LabelledError(f"data.labelled: asked for {labelled} labelled cases, the data hold {len(cases)}")
    keep = set(cases[:labelled])
    return [n for n in names if _case_of(n) in keep], [n for n in names if _case_of(n) not in keep]


def _units(names: Sequence[str]) -> int:
    return len({_case_of(n) for n in names})


def _describe(reader: DatasetReader, settings: DataSettings) -> tuple[str, int, str]:
    labelled, _ = _split_labelled(reader, settings.labelled)
    slices = cast(DotsReader, reader).train_slices
    return (f"train {_units(slices)} cases ({len(slices)} slices), val {len(reader.volumes('val'))} volumes",
            len(labelled), f"{len(labelled)} slices ({settings.labelled} cases)")


def generate_dots(out: Path, *, preset: str = "", patients: int = 6, seed: int = 0, nifti: bool = False
                  ) -> dict[str, Any]:
    """``patients`` cases of three 40 x 40 slices: noise, a bright disc (class 1), a few tiny dots (class 2)."""
    rng = np.random.default_rng([seed, 20])
    (out / "slices").mkdir(parents=True)
    (out / "volumes").mkdir()
    cases = [f"case{i:03d}" for i in range(patients)]
    split = {"train": cases[: patients - 2], "val": cases[-2:-1], "test": cases[-1:]}  # one val, one test case
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    slices: list[str] = []
    for case in cases:
        images, labels = [], []
        for _ in range(3):
            label = np.zeros((SIDE, SIDE), np.uint8)
            cy, cx, r = rng.uniform(12, 28), rng.uniform(12, 28), rng.uniform(6, 10)
            label[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 1
            for _ in range(int(rng.integers(1, 3))):
                dy, dx = rng.integers(2, SIDE - 2, 2)
                label[dy - 1:dy + 1, dx - 1:dx + 1] = 2
            image = (0.1 + 0.5 * (label == 1) + 0.9 * (label == 2) + rng.normal(0, 0.05, label.shape))
            images.append(image.astype(np.float32))
            labels.append(label)
        if case in split["train"]:
            for k, (image, label) in enumerate(zip(images, labels)):
                slices.append(f"{case}_slice_{k}")
                np.savez(out / "slices" / f"{slices[-1]}.npz", image=image, label=label)
        else:
            np.savez(out / "volumes" / f"{case}.npz", image=np.stack(images), label=np.stack(labels))
    (out / "train_slices.txt").write_text("".join(f"{n}\n" for n in slices))
    for s, names in split.items():
        (out / f"{s}.txt").write_text("".join(f"{n}\n" for n in names))
    (out / "dots.json").write_text(json.dumps({"layout": NAME}) + "\n")
    write_info(out, kind=NAME, version=1, patients=patients, seed=seed)
    return {"kind": NAME, "root": str(out), "cases": {s: len(v) for s, v in split.items()},
            "train_slices": len(slices)}


DOTS = DatasetSpec(
    name=NAME,
    title="Dots",
    class_names=CLASS_NAMES,
    spatial_dims=2,
    arch="unet2d",
    evaluation="slice-wise",
    layout="dots",
    signature="dots.json (the dots phantom)",
    detect=lambda folder: (folder / "dots.json").is_file(),
    open=DotsReader,
    splits=("train", "val", "test"),
    required_splits=("train", "val"),
    training="slices",
    labelled_unit="cases",
    standard_labelled=(1, 2),
    split_labelled=_split_labelled,
    units=_units,
    load_training=functools.partial(load_slice_training, dataset=NAME),
    describe=_describe,
    phantom=PhantomSpec(generate_dots, default_patients=6, min_patients=3, version=1),
)


# =========================================================================== the public commands take it


@pytest.fixture
def dots() -> Iterator[DatasetSpec]:
    spec = register_dataset(DOTS)
    yield spec
    unregister_dataset(NAME)


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert rc == 0, err
    return out


def test_a_registered_dataset_is_generated_checked_packed_trained_evaluated_and_reported(
    dots: DatasetSpec, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    root, pack, run = tmp_path / "dots", tmp_path / "dots.pack", tmp_path / "run"
    _cli(capsys, "data", "phantom", "--kind", NAME, "--patients", "6", "--out", str(root), "--json")
    summary = json.loads(_cli(capsys, "data", "check", str(root), "--json"))
    assert (summary["kind"], summary["num_classes"], summary["layout"]) == (NAME, 3, "dots")
    assert summary["train_cases"] == 4 and summary["lists"] == {"train_slices": 12, "train": 4, "val": 1, "test": 1}
    assert summary["labelled"]["2_cases"] == {"labelled_slices": 6, "unlabelled_slices": 6}
    _cli(capsys, "data", "pack", str(root), str(pack))
    assert json.loads(_cli(capsys, "data", "check", str(pack), "--json"))["lists"]["train_slices"] == 12

    settings = ["--set", "data.dataset=dots", "--set", "data.num_classes=3", "--set", "data.labelled=2",
                "--set", "runtime.device=cpu", "--set", f"data.root={pack}"]
    result = json.loads(_cli(capsys, "train", "phantom_smoke", *settings, "--run-dir", str(run), "--no-progress"))
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    finetune = [e for e in log if e["kind"] == "train" and e["phase"] == "finetune"]
    assert {"loss/sup", "loss/unsup", "loss/anco", "loss/saacl", "tau", "tau_saacl"} <= set(finetune[-1])
    assert len(finetune[-1]["assignment"]) == 3  # one centre per class of the dataset
    assert set(result["final"]["dice_per_class"]) == {"disc", "dot"}  # validated slice-wise, named by the spec

    scored = json.loads(_cli(capsys, "evaluate", str(run), "--data", str(root), "--split", "test", "--json"))
    protocol = scored["result"]["protocol"]
    assert protocol["dataset"] == NAME and set(scored["summary"]["dice_per_class"]) == {"disc", "dot"}
    assert protocol["inference"]["method"] == "slice-wise (dots)"

    from actionpp.evaluate import evaluate_run
    from actionpp.report import read_run_metrics, run_metrics
    from actionpp.train import RunResult

    ev = evaluate_run(run, None, "test")
    metrics = run_metrics(ev.config, RunResult.from_summary(result, run), ev.result, "test", ev.root)
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    read_back = read_run_metrics(tmp_path / "metrics.json")
    assert read_back["dataset"] == NAME and read_back["classes"] == ["disc", "dot"]
    assert read_back["protocol"]["split"].endswith("train 4 cases (12 slices), val 1 volumes")
    assert read_back["labelled_slices"] == 6

    from actionpp import embeddings as E

    sample = E.embedding_sample(run, split="val", per_class=5, total=20)  # a 2D dataset: the embeddings too
    assert sample["class_pixels"].shape == (3,) and sample["centres"].shape[0] == 3


def test_the_config_checks_a_dataset_against_its_spec(dots: DatasetSpec) -> None:
    ok = load_config("phantom_smoke", ["data.dataset=dots", "data.num_classes=3"])
    assert ok.data.dataset == NAME
    from actionpp.plotting import class_colours

    assert list(class_colours(NAME)) == list(CLASS_NAMES)  # the notebooks' palette covers it too
    with pytest.raises(ConfigError, match="data.num_classes: data.dataset='dots' has 3 classes"):
        load_config("phantom_smoke", ["data.dataset=dots"])
    with pytest.raises(ConfigError, match="model.arch: data.dataset='dots' trains with unet2d"):
        load_config("phantom_smoke", ["data.dataset=dots", "data.num_classes=3", "model.arch=vnet3d"])
    with pytest.raises(ConfigError, match="data.phantom_patients: the Dots phantom needs at least 3"):
        load_config("phantom_smoke", ["data.dataset=dots", "data.num_classes=3", "data.phantom_patients=2"])


def test_an_unregistered_dataset_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"data.dataset: unknown dataset 'dots'; known: acdc, la"):
        load_config("phantom_smoke", ["data.dataset=dots", "data.num_classes=3"])
    with pytest.raises(ValueError, match="registered already"):
        register_dataset(DatasetSpec(**{**DOTS.__dict__, "name": "acdc"}))
