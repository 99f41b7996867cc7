"""The committed split files in data/splits equal the community convention (SSL4MIS / UA-MT)."""

from __future__ import annotations

from pathlib import Path

import pytest

from actionpp.data.acdc import first_patients, patient_of
from actionpp.data.core import read_list
from actionpp.paths import splits_dir


def _s(name: str) -> list[str]:
    return read_list(splits_dir() / name)


def test_acdc_patient_split_is_70_10_20_and_partitions_001_to_100() -> None:
    tr, va, te = _s("acdc_train_patients.txt"), _s("acdc_val_patients.txt"), _s("acdc_test_patients.txt")
    assert (len(tr), len(va), len(te)) == (70, 10, 20)
    assert sorted(tr + va + te) == [f"patient{i:03d}" for i in range(1, 101)]


def test_acdc_labelled_subsets_are_the_first_list_lines() -> None:
    slices = _s("acdc_train_slices.list")
    assert len(slices) == 1312
    l3, l7 = _s("acdc_labelled_3.txt"), _s("acdc_labelled_7.txt")
    assert l3 == ["patient099", "patient038", "patient050"] and l7[:3] == l3 and len(l7) == 7
    assert first_patients(slices, 3) == 68 and first_patients(slices, 7) == 136
    assert list(dict.fromkeys(patient_of(n) for n in slices[:68])) == l3
    assert list(dict.fromkeys(patient_of(n) for n in slices[:136])) == l7
    # no slice of a labelled patient appears later in the list (the subsets are whole patients)
    assert not {patient_of(n) for n in slices[136:]} & set(l7)
    assert list(dict.fromkeys(patient_of(n) for n in slices)) == _s("acdc_train_patients.txt")


def test_la_split_and_labelled_subsets() -> None:
    tr, te = _s("la_train.list"), _s("la_test.list")
    assert (len(tr), len(te)) == (80, 20) and not set(tr) & set(te) and len(set(tr + te)) == 100
    assert _s("la_labelled_4.txt") == tr[:4] and _s("la_labelled_8.txt") == tr[:8]


@pytest.mark.realdata
def test_committed_splits_equal_the_real_lists(acdc_root: Path, la_root: Path) -> None:
    assert read_list(acdc_root / "train_slices.list") == _s("acdc_train_slices.list")
    assert list(dict.fromkeys(patient_of(f) for f in read_list(acdc_root / "train.list"))) == _s(
        "acdc_train_patients.txt"
    )
    assert sorted({patient_of(f) for f in read_list(acdc_root / "val.list")}) == sorted(_s("acdc_val_patients.txt"))
    assert read_list(la_root / "train.list") == _s("la_train.list")
    assert read_list(la_root / "test.list") == _s("la_test.list")
