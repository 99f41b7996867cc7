"""Bad inputs to ``actionpp data check | pack | prepare-acdc``: one table of cases.

Each case builds its bad input in ``tmp_path`` (from small phantoms generated once for the module),
runs the console entry in-process and expects an exit code and a fragment of stderr. Exit 1 is a data
problem (one ``error: ...`` line naming the file), exit 2 a usage problem (argparse). A second test
hashes every file under ``tmp_path`` before and after each failing case: a refused command leaves its
inputs byte-for-byte unchanged, deletes nothing and leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from fixtures_data import tree_snapshot

from actionpp.cli import main
from actionpp.data.la import LA_FOLDER
from actionpp.data.pack import MAGIC

MARKER = ".actionpp-prepare-acdc.json"


# ----------------------------------------------------------------------------- sources


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 3-patient ACDC phantom (+ its raw NIfTI layout), a 2-case LA phantom and a pack: built once."""
    from actionpp.data.pack import pack_dataset
    from actionpp.data.phantom import generate_acdc_phantom, generate_la_phantom

    base = tmp_path_factory.mktemp("bad_inputs_sources")
    acdc = base / "acdc"
    generate_acdc_phantom(acdc, patients=3, seed=0, nifti=True)
    raw = base / "raw"
    shutil.move(str(acdc / "raw"), raw)
    la = base / "la"
    generate_la_phantom(la, patients=2, seed=0)
    pack = base / "acdc.pack"
    pack_dataset(acdc, pack)
    return {"acdc": acdc, "raw": raw, "la": la, "pack": pack}


class Env:
    """Copies of the module's sources into one test's ``tmp_path``."""

    def __init__(self, tmp: Path, src: dict[str, Path]) -> None:
        self.tmp, self.src = tmp, src

    def _copy(self, key: str, rel: str) -> Path:
        dst = self.tmp / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if self.src[key].is_dir():
            shutil.copytree(self.src[key], dst)
        else:
            shutil.copy2(self.src[key], dst)
        return dst

    def acdc(self, rel: str = "ds") -> Path:
        return self._copy("acdc", rel)

    def raw(self, rel: str = "raw") -> Path:
        return self._copy("raw", rel)

    def la(self, rel: str = "la") -> Path:
        return self._copy("la", rel)

    def pack(self, rel: str = "acdc.pack") -> Path:
        return self._copy("pack", rel)


def _set_line(path: Path, lineno: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[lineno - 1] = text
    path.write_text("\n".join(lines) + "\n")


def _edit_header(pack: Path, edit: Callable[[bytes], bytes]) -> None:
    """Rewrite a pack's JSON header in place with a same-length edit (payload untouched)."""
    data = pack.read_bytes()
    start = len(MAGIC) + 8
    hlen = int.from_bytes(data[len(MAGIC):start], "little")
    old = data[start:start + hlen]
    new = edit(old)
    assert len(new) == len(old) and new != old
    pack.write_bytes(data[:start] + new + data[start + hlen:])


def _bump_first_n(h: bytes) -> bytes:
    def one(m: re.Match[bytes]) -> bytes:
        digits = m.group(1)
        last = b"8" if digits[-1:] == b"9" else bytes([digits[-1] + 1])
        return b'"n":' + digits[:-1] + last

    return re.sub(rb'"n":([1-9]\d*)', one, h, count=1)


def _as_version_1(pack: Path) -> None:
    """Rewrite a pack the way version 1 wrote it: no header digest, ``"version": 1``."""
    data = pack.read_bytes()
    start = len(MAGIC) + 8
    hlen = int.from_bytes(data[len(MAGIC):start], "little")
    header = json.loads(data[start:start + hlen])
    header.pop("header_sha256", None)
    header["version"] = 1
    hb = json.dumps(header, separators=(",", ":")).encode()
    pack.write_bytes(MAGIC + len(hb).to_bytes(8, "little") + hb + data[start + hlen:])


# ----------------------------------------------------------------------------- case setups
# Each returns the argv after ``actionpp``; ``{tmp}`` in a case's message stands for tmp_path.


def _slice_list_escapes(e: Env) -> list[str]:
    ds = e.acdc("a/ds")  # ds/data/slices/../../../../outside/evil.h5 is tmp/outside/evil.h5
    first = (ds / "train_slices.list").read_text().split()[1]
    (e.tmp / "outside").mkdir()
    shutil.copy2(ds / "data" / "slices" / f"{first}.h5", e.tmp / "outside" / "evil.h5")  # a valid slice
    _set_line(ds / "train_slices.list", 2, "../../../../outside/evil")
    return ["data", "check", str(ds)]


def _val_list_absolute(e: Env) -> list[str]:
    ds = e.acdc()
    frame = (ds / "val.list").read_text().split()[0]
    (e.tmp / "outside").mkdir()
    shutil.copy2(ds / "data" / f"{frame}.h5", e.tmp / "outside" / "vol.h5")  # a valid volume
    _set_line(ds / "val.list", 1, str(e.tmp / "outside" / "vol"))
    return ["data", "check", str(ds)]


def _test_list_escapes(e: Env) -> list[str]:
    ds = e.acdc()
    frame = (ds / "test.list").read_text().split()[0]
    (e.tmp / "outside").mkdir()
    shutil.copy2(ds / "data" / f"{frame}.h5", e.tmp / "outside" / "vol.h5")
    _set_line(ds / "test.list", 1, "../../outside/vol")
    return ["data", "check", str(ds)]


def _train_list_escapes(e: Env) -> list[str]:
    ds = e.acdc()
    _set_line(ds / "train.list", 1, "../../elsewhere/patient009_frame01")
    return ["data", "check", str(ds)]


def _la_list_escapes(e: Env) -> list[str]:
    la = e.la()
    case = (la / "train.list").read_text().split()[0]
    shutil.copytree(la / LA_FOLDER / case, e.tmp / "outside" / case)  # a valid case outside the folder
    _set_line(la / "train.list", 1, f"../../outside/{case}")
    return ["data", "check", str(la)]


def _la_list_absolute(e: Env) -> list[str]:
    la = e.la()
    case = (la / "test.list").read_text().split()[0]
    shutil.copytree(la / LA_FOLDER / case, e.tmp / "outside" / case)
    _set_line(la / "test.list", 1, str(e.tmp / "outside" / case))
    return ["data", "check", str(la)]


def _pack_header_n(e: Env) -> list[str]:
    p = e.pack()
    _edit_header(p, _bump_first_n)
    return ["data", "check", str(p)]


def _pack_header_classes(e: Env) -> list[str]:
    p = e.pack()
    _edit_header(p, lambda h: h.replace(b'"num_classes":4', b'"num_classes":5'))
    return ["data", "check", str(p)]


def _pack_payload(e: Env) -> list[str]:
    p = e.pack()
    data = bytearray(p.read_bytes())
    data[-50] ^= 0xFF
    p.write_bytes(bytes(data))
    return ["data", "check", str(p)]


def _pack_version_1(e: Env) -> list[str]:
    p = e.pack()
    _as_version_1(p)
    return ["data", "check", str(p)]


def _pack_over_list(e: Env) -> list[str]:
    ds = e.acdc("out2")
    return ["data", "pack", str(ds), str(ds / "train_slices.list")]


def _pack_over_list_overwrite(e: Env) -> list[str]:
    return _pack_over_list(e) + ["--overwrite"]


def _pack_new_file_inside_root(e: Env) -> list[str]:
    ds = e.acdc()
    return ["data", "pack", str(ds), str(ds / "data" / "cache.pack"), "--overwrite"]


def _pack_over_root(e: Env) -> list[str]:
    ds = e.acdc()
    return ["data", "pack", str(ds), str(ds), "--overwrite"]


def _pack_existing_out(e: Env) -> list[str]:
    ds = e.acdc()
    e.pack("old.pack")  # an older pack the user wants to keep
    return ["data", "pack", str(ds), str(e.tmp / "old.pack")]


def _pack_overwrite_foreign(e: Env) -> list[str]:
    ds = e.acdc()
    (e.tmp / "thesis.pack").write_bytes(b"years of work, in a file that happens to end in .pack")
    return ["data", "pack", str(ds), str(e.tmp / "thesis.pack"), "--overwrite"]


def _pack_overwrite_link(e: Env) -> list[str]:
    ds = e.acdc()
    target = e.pack("kept/acdc.pack")
    os.symlink(target, e.tmp / "link.pack")
    return ["data", "pack", str(ds), str(e.tmp / "link.pack"), "--overwrite"]


def _val_list_duplicate(e: Env) -> list[str]:
    ds = e.acdc()
    lines = (ds / "val.list").read_text().splitlines()
    (ds / "val.list").write_text("\n".join(lines + lines[:1]) + "\n")
    return ["data", "check", str(ds)]


def _val_entry_is(kind: str) -> Callable[[Env], list[str]]:
    def setup(e: Env) -> list[str]:
        ds = e.acdc()
        frame = (ds / "val.list").read_text().split()[0]
        h5 = ds / "data" / f"{frame}.h5"
        h5.unlink()
        if kind == "folder":
            h5.mkdir()
        else:
            os.symlink(h5.name, h5)  # a link to itself
        return ["data", "check", str(ds)]

    return setup


def _slice_entry_too_long(e: Env) -> list[str]:
    ds = e.acdc()
    _set_line(ds / "train_slices.list", 1, "x" * 300)
    return ["data", "check", str(ds)]


def _phantom(*args: str) -> Callable[[Env], list[str]]:
    def setup(e: Env) -> list[str]:
        (e.tmp / "keep.txt").write_text("keep")
        return ["data", "phantom", *args, "--out", str(e.tmp / "ph")]

    return setup


def _pack_out_is_folder(e: Env) -> list[str]:
    ds = e.acdc()
    (e.tmp / "folder").mkdir()
    (e.tmp / "folder" / "keep.txt").write_text("keep")
    return ["data", "pack", str(ds), str(e.tmp / "folder"), "--overwrite"]


def _pack_missing_out_arg(e: Env) -> list[str]:
    return ["data", "pack", str(e.acdc())]


def _pack_overwrite_own(e: Env) -> list[str]:
    ds = e.acdc()
    p = e.pack("old.pack")
    return ["data", "pack", str(ds), str(p), "--overwrite"]


def _prepare_out_is_raw(e: Env) -> list[str]:
    raw = e.raw()
    return ["data", "prepare-acdc", str(raw), str(raw), "--overwrite"]


def _prepare_out_above_raw(e: Env) -> list[str]:
    raw = e.raw("w/raw")
    return ["data", "prepare-acdc", str(raw), str(e.tmp / "w"), "--overwrite"]


def _prepare_out_inside_raw(e: Env) -> list[str]:
    raw = e.raw()
    return ["data", "prepare-acdc", str(raw), str(raw / "conv")]


def _prepare_out_dotdot_raw(e: Env) -> list[str]:
    raw = e.raw()
    (e.tmp / "sub").mkdir()
    return ["data", "prepare-acdc", str(raw), str(e.tmp / "sub" / ".." / "raw"), "--overwrite"]


def _prepare_out_link_to_raw(e: Env) -> list[str]:
    raw = e.raw()
    os.symlink(raw, e.tmp / "link")
    return ["data", "prepare-acdc", str(raw), str(e.tmp / "link"), "--overwrite"]


def _prepare_out_unmarked(e: Env) -> list[str]:
    raw = e.raw()
    (e.tmp / "mine").mkdir()
    (e.tmp / "mine" / "thesis.tex").write_text("years of work")
    return ["data", "prepare-acdc", str(raw), str(e.tmp / "mine"), "--overwrite"]


def _prepare_out_unmarked_dataset(e: Env) -> list[str]:
    raw = e.raw()
    ds = e.acdc("acdc")  # an SSL4MIS folder from elsewhere (no marker)
    return ["data", "prepare-acdc", str(raw), str(ds), "--overwrite"]


def _prepare_out_exists(e: Env) -> list[str]:
    raw = e.raw()
    (e.tmp / "conv").mkdir()
    return ["data", "prepare-acdc", str(raw), str(e.tmp / "conv")]


def _prepare_out_file(e: Env) -> list[str]:
    raw = e.raw()
    (e.tmp / "notes.txt").write_text("not a folder")
    return ["data", "prepare-acdc", str(raw), str(e.tmp / "notes.txt"), "--overwrite"]


def _prepare_out_file_no_overwrite(e: Env) -> list[str]:
    return _prepare_out_file(e)[:-1]


def _prepare_missing_gt(e: Env) -> list[str]:
    raw = e.raw()
    gt = sorted(raw.rglob("*_gt.nii.gz"))[-1]
    gt.unlink()
    return ["data", "prepare-acdc", str(raw), str(e.tmp / "conv")]


def _prepare_overwrite_own(e: Env) -> list[str]:
    raw = e.raw()
    assert main(["data", "prepare-acdc", str(raw), str(e.tmp / "conv")]) == 0
    return ["data", "prepare-acdc", str(raw), str(e.tmp / "conv"), "--overwrite"]


@dataclass(frozen=True)
class Case:
    id: str
    setup: Callable[[Env], list[str]]
    code: int
    message: str  # fragment of stderr; "{tmp}" is tmp_path


CASES = [
    # check: list entries that leave the dataset folder (item 4)
    Case(
        "check-slice-list-dotdot",
        _slice_list_escapes,
        1,
        "{tmp}/a/ds/train_slices.list:2: entry '../../../../outside/evil' points outside the dataset folder {tmp}/a/ds",
    ),
    Case(
        "check-val-list-absolute",
        _val_list_absolute,
        1,
        "{tmp}/ds/val.list:1: entry '{tmp}/outside/vol' points outside the dataset folder",
    ),
    Case(
        "check-test-list-dotdot",
        _test_list_escapes,
        1,
        "{tmp}/ds/test.list:1: entry '../../outside/vol' points outside",
    ),
    Case("check-train-list-dotdot", _train_list_escapes, 1, "{tmp}/ds/train.list:1: entry '../../elsewhere/"),
    Case("check-la-train-dotdot", _la_list_escapes, 1, "{tmp}/la/train.list:1: entry '../../outside/"),
    Case("check-la-test-absolute", _la_list_absolute, 1, "{tmp}/la/test.list:1: entry '{tmp}/outside/"),
    # check: pack header and payload covered by digests (item 3)
    Case("check-pack-header-n", _pack_header_n, 1, "{tmp}/acdc.pack: pack header SHA-256 does not match"),
    Case(
        "check-pack-header-num-classes", _pack_header_classes, 1, "{tmp}/acdc.pack: pack header SHA-256 does not match"
    ),
    Case("check-pack-payload", _pack_payload, 1, "{tmp}/acdc.pack: payload SHA-256"),
    Case(
        "check-pack-version-1",
        _pack_version_1,
        1,
        "{tmp}/acdc.pack: pack format version 1 has no header checksum; re-pack",
    ),
    # pack: never over an existing file without --overwrite, never inside the dataset (item 2)
    Case(
        "pack-over-list",
        _pack_over_list,
        1,
        "{tmp}/out2/train_slices.list: refusing to write the pack inside the dataset {tmp}/out2",
    ),
    Case("pack-over-list-overwrite", _pack_over_list_overwrite, 1, "refusing to write the pack inside the dataset"),
    Case(
        "pack-new-file-inside-root",
        _pack_new_file_inside_root,
        1,
        "{tmp}/ds/data/cache.pack: refusing to write the pack inside",
    ),
    Case("pack-over-root", _pack_over_root, 1, "{tmp}/ds: refusing to write the pack inside the dataset {tmp}/ds"),
    Case(
        "pack-existing-out",
        _pack_existing_out,
        1,
        "{tmp}/old.pack: output file exists (pass --overwrite to replace it)",
    ),
    Case("pack-out-is-folder", _pack_out_is_folder, 1, "{tmp}/folder: is a folder, not a pack file"),
    Case("pack-missing-out-arg", _pack_missing_out_arg, 2, "the following arguments are required: out"),
    Case("pack-overwrite-own-pack", _pack_overwrite_own, 0, ""),
    # issue 16: --overwrite replaces only a pack (item 5); a repeated or unusable list entry is named (item 8);
    # data phantom's arguments are checked, exit 2 (item 10)
    Case("pack-overwrite-foreign-file", _pack_overwrite_foreign, 1,
         "{tmp}/thesis.pack: refusing to replace this file: it is not a pack written by actionpp data pack"),
    Case("pack-overwrite-link", _pack_overwrite_link, 1, "{tmp}/link.pack: is a symbolic link, not a pack"),
    Case("check-val-list-duplicate", _val_list_duplicate, 1, "{tmp}/ds/val.list:3: entry '"),
    Case("check-val-entry-is-a-folder", _val_entry_is("folder"), 1, "{tmp}/ds/val.list:1: entry '"),
    Case("check-val-entry-link-loop", _val_entry_is("loop"), 1, "cannot be opened (a loop of symbolic links)"),
    Case("check-slice-entry-too-long", _slice_entry_too_long, 1,
         "{tmp}/ds/train_slices.list:1: entry 'xxxx"),
    Case("phantom-patients-zero", _phantom("--patients", "0"), 2, "--patients: an ACDC phantom needs at least 3"),
    Case("phantom-patients-one", _phantom("--patients", "1"), 2, "--patients: an ACDC phantom needs at least 3"),
    Case("phantom-patients-negative", _phantom("--patients", "-3"), 2, "needs at least 3 patients"),
    Case("phantom-la-patients-one", _phantom("--kind", "la", "--patients", "1"), 2, "an LA phantom needs at least 2"),
    Case("phantom-seed-negative", _phantom("--seed", "-1"), 2, "--seed must be >= 0"),
    # prepare-acdc: OUT never the raw folder, inside it or above it; replace only its own output (item 1)
    Case("prepare-out-is-raw", _prepare_out_is_raw, 1, "{tmp}/raw: output folder is the raw folder {tmp}/raw"),
    Case(
        "prepare-out-above-raw", _prepare_out_above_raw, 1, "{tmp}/w: output folder contains the raw folder {tmp}/w/raw"
    ),
    Case(
        "prepare-out-inside-raw",
        _prepare_out_inside_raw,
        1,
        "{tmp}/raw/conv: output folder is inside the raw folder {tmp}/raw",
    ),
    Case("prepare-out-dotdot-is-raw", _prepare_out_dotdot_raw, 1, "output folder is the raw folder {tmp}/raw"),
    Case(
        "prepare-out-link-to-raw", _prepare_out_link_to_raw, 1, "{tmp}/link: output folder is the raw folder {tmp}/raw"
    ),
    Case(
        "prepare-out-unmarked",
        _prepare_out_unmarked,
        1,
        "{tmp}/mine: refusing to replace this folder: it was not written by prepare-acdc (no "
        ".actionpp-prepare-acdc.json marker in it)",
    ),
    Case(
        "prepare-out-unmarked-dataset", _prepare_out_unmarked_dataset, 1, "{tmp}/acdc: refusing to replace this folder"
    ),
    Case("prepare-out-exists", _prepare_out_exists, 1, "{tmp}/conv: output folder exists (pass --overwrite"),
    Case("prepare-out-file", _prepare_out_file, 1, "{tmp}/notes.txt: exists and is a file, not a folder"),
    Case(
        "prepare-out-file-no-overwrite",
        _prepare_out_file_no_overwrite,
        1,
        "{tmp}/notes.txt: exists and is a file, not a folder",
    ),
    Case("prepare-missing-gt", _prepare_missing_gt, 1, "ground truth missing"),
    Case("prepare-overwrite-own-output", _prepare_overwrite_own, 0, ""),
]
FAILING = [c for c in CASES if c.code != 0]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse usage errors
        rc = exc.code if isinstance(exc.code, int) else 2
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_exit_code_and_message(
    case: Case, sources: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = case.setup(Env(tmp_path, sources))
    rc, err = _run(argv, capsys)
    assert rc == case.code, err
    assert case.message.format(tmp=tmp_path) in err
    if case.code == 1:  # one line: "error: <file>: <problem>"
        assert err.startswith("error: ") and err.count("\n") == 1, err


@pytest.mark.parametrize("case", FAILING, ids=[c.id for c in FAILING])
def test_failing_command_leaves_inputs_unchanged(
    case: Case, sources: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = case.setup(Env(tmp_path, sources))
    before = tree_snapshot(tmp_path)
    assert before
    rc, _ = _run(argv, capsys)
    assert rc == case.code
    assert tree_snapshot(tmp_path) == before  # nothing changed, deleted or left behind


def test_prepare_writes_marker_and_replaces_only_its_own_output(
    sources: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    e = Env(tmp_path, sources)
    raw, out = e.raw(), tmp_path / "conv"
    assert _run(["data", "prepare-acdc", str(raw), str(out)], capsys)[0] == 0
    marker = json.loads((out / MARKER).read_text())
    assert marker["source"] == str(raw.resolve()) and marker["written_by"] == "actionpp data prepare-acdc"
    (out / "stale.txt").write_text("from the old run")
    assert _run(["data", "prepare-acdc", str(raw), str(out), "--overwrite"], capsys)[0] == 0
    assert not (out / "stale.txt").exists() and (out / MARKER).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conv", "raw"]  # no temporary folder left
    assert _run(["data", "check", str(out)], capsys)[0] == 0


def test_pack_overwrite_replaces_an_existing_pack(
    sources: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    e = Env(tmp_path, sources)
    ds, p = e.acdc(), e.pack("p.pack")  # a pack written earlier
    assert _run(["data", "pack", str(ds), str(p), "--overwrite"], capsys)[0] == 0
    assert p.read_bytes().startswith(MAGIC)
    assert _run(["data", "check", str(p)], capsys)[0] == 0
    assert sorted(x.name for x in tmp_path.iterdir()) == ["ds", "p.pack"]
