"""Bad inputs at the Python level: list entries leaving ROOT, pack header digest, pack / prepare-acdc outputs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from actionpp.data import DataError, open_dataset
from actionpp.data.acdc import ACDCDataset, prepare_acdc
from actionpp.data.check import check_dataset
from actionpp.data.core import read_list
from actionpp.data.la import LADataset
from actionpp.data.pack import MAGIC, load_pack, pack_dataset
from actionpp.data.tensors import load_acdc_training, load_la_training

MARKER = ".actionpp-prepare-acdc.json"


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from actionpp.data.phantom import generate_acdc_phantom, generate_la_phantom

    base = tmp_path_factory.mktemp("bad_inputs_api")
    acdc = base / "acdc"
    generate_acdc_phantom(acdc, patients=3, seed=1, nifti=True)
    raw = base / "raw"
    shutil.move(str(acdc / "raw"), raw)
    la = base / "la"
    generate_la_phantom(la, patients=2, seed=1)
    pack = base / "acdc.pack"
    pack_dataset(acdc, pack)
    return {"acdc": acdc, "raw": raw, "la": la, "pack": pack}


def _copy(p: Path, dst: Path) -> Path:
    (shutil.copytree if p.is_dir() else shutil.copy2)(p, dst)
    return dst


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- list entries (item 4)


# slices live in ROOT/data/slices/<name>.h5: three ".." leave ROOT
@pytest.mark.parametrize("entry", ["../../../../outside/evil", "/etc/passwd", "../../../x", "a/../../../../b"])
def test_slice_entry_outside_root_is_refused_with_line_number(src: dict[str, Path], tmp_path: Path, entry: str) -> None:
    ds = _copy(src["acdc"], tmp_path / "ds")
    lst = ds / "train_slices.list"
    lines = lst.read_text().splitlines()
    lst.write_text("\n".join(lines[:2] + ["", entry] + lines[2:]) + "\n")  # a blank line still counts
    with pytest.raises(DataError) as exc:
        _ = ACDCDataset(ds).train_slices
    assert str(exc.value) == f"{lst}:4: entry {entry!r} points outside the dataset folder {ds}"
    with pytest.raises(DataError, match=f"{lst}:4: entry"):
        load_acdc_training(ds, 1, 32, "cpu")  # never trained on
    with pytest.raises(DataError, match=f"{lst}:4: entry"):
        pack_dataset(ds, tmp_path / "p.pack")
    assert not (tmp_path / "p.pack").exists()


def test_split_list_entries_outside_root_are_refused(src: dict[str, Path], tmp_path: Path) -> None:
    ds = _copy(src["acdc"], tmp_path / "ds")
    (ds / "val.list").write_text("../../../elsewhere/patient001_frame01\n")
    with pytest.raises(
        DataError, match=r"val\.list:1: entry '\.\./\.\./\.\./elsewhere/patient001_frame01' points outside"
    ):
        ACDCDataset(ds).volumes("val")
    la = _copy(src["la"], tmp_path / "la")
    case = (la / "train.list").read_text().split()[0]
    (la / "train.list").write_text(f"{case}\n../../{case}\n")
    with pytest.raises(
        DataError, match=rf"{la}/train\.list:2: entry '\.\./\.\./{case}' points outside the dataset folder {la}"
    ):
        LADataset(la).volumes("train")
    with pytest.raises(DataError, match=r"train\.list:2"):
        load_la_training(la, 1, "cpu")


def test_plain_names_and_symlinked_data_folders_are_still_accepted(src: dict[str, Path], tmp_path: Path) -> None:
    store = _copy(src["acdc"] / "data", tmp_path / "store" / "data")  # data kept elsewhere, linked in
    ds = tmp_path / "ds"
    ds.mkdir()
    for name in ("train_slices.list", "train.list", "val.list", "test.list"):
        shutil.copy2(src["acdc"] / name, ds / name)
    os.symlink(store, ds / "data")
    s = check_dataset(ds)
    assert s["lists"]["train_slices"] == len(read_list(ds / "train_slices.list"))
    assert read_list(ds / "val.list", root=ds) == read_list(ds / "val.list")  # the root check changes nothing here


# ----------------------------------------------------------------------------- pack header digest (item 3)


def _header(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    start = len(MAGIC) + 8
    hlen = int.from_bytes(data[len(MAGIC) : start], "little")
    return json.loads(data[start : start + hlen]), data[start + hlen :]


def _write(path: Path, header: dict, payload: bytes) -> None:
    hb = json.dumps(header, separators=(",", ":")).encode()
    path.write_bytes(MAGIC + len(hb).to_bytes(8, "little") + hb + payload)


def test_pack_header_is_covered_by_a_digest(src: dict[str, Path], tmp_path: Path) -> None:
    header, payload = _header(src["pack"])
    assert header["version"] == 2 and len(header["header_sha256"]) == 64
    assert load_pack(src["pack"]).num_classes == 4
    for key, value in (("num_classes", 5), ("kind", "la"), ("lists", {"train_slices": []})):
        bad = tmp_path / f"{key}.pack"
        _write(bad, {**header, key: value}, payload)
        with pytest.raises(DataError) as exc:
            load_pack(bad)
        assert str(exc.value).startswith(f"{bad}: pack header SHA-256 does not match") and "\n" not in str(exc.value)
    items = [dict(it) for it in header["items"]]
    items[0]["n"] += 1
    bad = tmp_path / "n.pack"
    _write(bad, {**header, "items": items}, payload)
    with pytest.raises(DataError, match="pack header SHA-256 does not match"):
        open_dataset(bad)
    flipped = bytearray(payload)
    flipped[0] ^= 1
    bad = tmp_path / "payload.pack"
    _write(bad, header, bytes(flipped))
    with pytest.raises(DataError, match=f"{bad}: payload SHA-256 .* does not match"):
        load_pack(bad)


def test_old_format_and_malformed_headers_say_what_to_do(src: dict[str, Path], tmp_path: Path) -> None:
    header, payload = _header(src["pack"])
    old = {k: v for k, v in header.items() if k != "header_sha256"}
    old["version"] = 1
    p = tmp_path / "old.pack"
    _write(p, old, payload)
    with pytest.raises(DataError) as exc:
        load_pack(p)
    assert str(exc.value) == (
        f"{p}: pack format version 1 has no header checksum; re-pack the dataset with this version "
        f"(actionpp data pack ROOT {p} --overwrite)"
    )
    p = tmp_path / "future.pack"
    future = {k: v for k, v in header.items() if k != "header_sha256"}
    future["version"] = 9  # a consistent header from a later writer
    future["header_sha256"] = hashlib.sha256(json.dumps(future, separators=(",", ":")).encode()).hexdigest()
    _write(p, future, payload)
    with pytest.raises(DataError, match="pack format version 9 is not readable by this version"):
        load_pack(p)
    p = tmp_path / "list.pack"
    _write(p, [1, 2], payload)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=f"{p}: corrupt pack header"):
        load_pack(p)


# ----------------------------------------------------------------------------- pack output (item 2)


def test_pack_refuses_existing_output_and_anything_inside_root(src: dict[str, Path], tmp_path: Path) -> None:
    ds = _copy(src["acdc"], tmp_path / "ds")
    before = _tree(ds)
    for out in (ds / "train_slices.list", ds / "new.pack", ds / "data" / "slices" / "x.pack", ds):
        with pytest.raises(DataError, match=f"{out}: refusing to write the pack inside the dataset {ds}"):
            pack_dataset(ds, out, overwrite=True)
    with pytest.raises(DataError, match="refusing to write the pack inside"):
        pack_dataset(ds, tmp_path / "elsewhere" / ".." / "ds" / "val.list", overwrite=True)
    assert _tree(ds) == before and not (tmp_path / "elsewhere").exists()
    out = tmp_path / "p.pack"
    out.write_bytes(b"keep me")
    for overwrite in (False, True):  # not a pack: never replaced (issue 16, item 5)
        with pytest.raises(DataError, match=f"{out}: refusing to replace this file: it is not a pack"):
            pack_dataset(ds, out, overwrite=overwrite)
    assert out.read_bytes() == b"keep me"
    out.unlink()
    pack_dataset(ds, out)
    with pytest.raises(DataError, match=rf"{out}: output file exists \(pass --overwrite to replace it\)"):
        pack_dataset(ds, out)
    pack_dataset(ds, out, overwrite=True)  # its own pack, asked to replace it
    assert load_pack(out).train_slices == ACDCDataset(ds).train_slices
    with pytest.raises(DataError, match="already a pack"):
        pack_dataset(out, tmp_path / "q.pack")


# ----------------------------------------------------------------------------- prepare-acdc output (item 1)


def test_prepare_replaces_only_its_own_output_atomically(src: dict[str, Path], tmp_path: Path) -> None:
    raw = _copy(src["raw"], tmp_path / "raw")
    out = tmp_path / "conv"
    prepare_acdc(raw, out)
    marker = json.loads((out / MARKER).read_text())
    assert marker["source"] == str(raw.resolve()) and "time" in marker
    first = _tree(out)
    # a conversion that fails half way through leaves the previous output exactly as it was
    gt = sorted(raw.rglob("*_gt.nii.gz"))[-1]
    kept = gt.read_bytes()
    gt.unlink()
    with pytest.raises(DataError, match="ground truth missing"):
        prepare_acdc(raw, out, overwrite=True)
    assert _tree(out) == first and sorted(p.name for p in tmp_path.iterdir()) == ["conv", "raw"]
    gt.write_bytes(kept)
    prepare_acdc(raw, out, overwrite=True)
    assert ACDCDataset(out).train_slices == ACDCDataset(src["acdc"]).train_slices
    # a link to a marked folder is not followed
    os.symlink(out, tmp_path / "link")
    with pytest.raises(DataError, match=f"{tmp_path / 'link'}: is a symbolic link"):
        prepare_acdc(raw, tmp_path / "link", overwrite=True)
    assert (out / MARKER).is_file()


def test_prepare_refuses_overlap_in_python_too(src: dict[str, Path], tmp_path: Path) -> None:
    raw = _copy(src["raw"], tmp_path / "raw")
    before = _tree(raw)
    for out, rel in (
        (raw, "is the raw folder"),
        (raw / "patient001", "is inside the raw folder"),
        (tmp_path, "contains the raw folder"),
    ):
        with pytest.raises(DataError) as exc:
            prepare_acdc(raw, out, overwrite=True)
        assert str(exc.value) == f"{out}: output folder {rel} {raw}; choose an output folder outside it"
    assert _tree(raw) == before


# ----------------------------------------------------------------------------- issue 16: lists and phantoms


def _dup(ds: Path, lst: str) -> tuple[Path, str]:
    p = ds / lst
    lines = p.read_text().splitlines()
    p.write_text("\n".join(lines + lines[:1]) + "\n")
    return p, f"{p}:{len(lines) + 1}: entry {lines[0]!r} repeats line 1"


def _folder(ds: Path, lst: str) -> tuple[Path, str]:
    p = ds / lst
    frame = p.read_text().split()[0]
    h5 = ds / "data" / f"{frame}.h5"
    h5.unlink()
    h5.mkdir()
    return p, f"{p}:1: entry {frame!r}: {h5} is a folder, not a file"


def _loop(ds: Path, lst: str) -> tuple[Path, str]:
    p = ds / lst
    frame = p.read_text().split()[0]
    h5 = ds / "data" / f"{frame}.h5"
    h5.unlink()
    os.symlink(h5.name, h5)
    return p, f"{p}:1: entry {frame!r}: {h5} cannot be opened (a loop of symbolic links)"


def _long(ds: Path, lst: str) -> tuple[Path, str]:
    p = ds / lst
    p.write_text("y" * 300 + "\n")
    return p, f"{p}:1: entry {'y' * 300!r}: the file name is too long for the file system"


@pytest.mark.parametrize("make", [_dup, _folder, _loop, _long], ids=["duplicate", "folder", "link-loop", "too-long"])
@pytest.mark.parametrize("lst", ["val.list", "test.list"])
def test_unusable_split_entries_are_named_with_their_list_and_line(src: dict[str, Path], tmp_path: Path, make,
                                                                    lst: str) -> None:
    ds = _copy(src["acdc"], tmp_path / "ds")
    path, message = make(ds, lst)
    before = _tree(ds)
    with pytest.raises(DataError) as exc:
        ACDCDataset(ds).volumes(lst.split(".")[0])
    assert str(exc.value).startswith(message) and "\n" not in str(exc.value), str(exc.value)
    with pytest.raises(DataError, match=f"{path}:"):
        check_dataset(ds)
    assert _tree(ds) == before


def test_a_repeated_training_slice_is_refused_before_training(src: dict[str, Path], tmp_path: Path) -> None:
    ds = _copy(src["acdc"], tmp_path / "ds")
    lst, message = _dup(ds, "train_slices.list")
    with pytest.raises(DataError, match=f"{lst}:.*repeats line 1"):
        load_acdc_training(ds, 1, 32, "cpu")


def test_ensure_phantom_never_replaces_a_folder_it_did_not_write(tmp_path: Path) -> None:
    from actionpp.data.phantom import ensure_phantom

    mine = tmp_path / "ph"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(DataError, match=f"{mine}: exists and is not a phantom this generator wrote"):
        ensure_phantom("acdc", patients=3, seed=5, root=mine)
    assert (mine / "thesis.tex").read_text() == "years of work" and sorted(p.name for p in tmp_path.iterdir()) == ["ph"]
