"""Lineage verification (md5sum -c style) and safe unpacking."""

from __future__ import annotations

import hashlib
import random
import stat
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest

from boundary_loss.preprocessing.unpack import UnpackError, unpack
from boundary_loss.preprocessing.verify_lineage import LineageError, read_lineage, verify
from tests.cli import assert_clean_error, on_small_disk, run_script, small_disk_available

ROOT = Path(__file__).resolve().parent.parent

REAL_SUMS = {
    "isles": {
        "ISLES2018_Training.zip": "b6d16c456e173743e30a3fbdb3bd29a5",
        "ISLES2018_Testing.zip": "932a493c105024942700fe589cd441a9",
    },
    "wmh": {
        "Amsterdam_GE3T.zip": "259938e3ba38ec77d878c6eaa7fa3c12",
        "Singapore.zip": "02658fd204a7d2526920f92c37f3d417",
        "Utrecht.zip": "7768dda529a00cdcf49d9f574bb146cd",
    },
    "acdc": {"acdc.zip": "8f88b442fce65a13f28e30bad4d1b6ce"},
}


@pytest.mark.parametrize("dataset", sorted(REAL_SUMS))
def test_real_lineage_holds_the_published_sums_and_source(dataset):
    lineage = read_lineage(ROOT / "lineage" / f"{dataset}.lineage")
    assert lineage.sums == REAL_SUMS[dataset]
    assert "registration" in lineage.notes["source"]


def write_lineage(folder: Path, files: dict[str, bytes], **notes: str) -> Path:
    lines = [f"# {key}: {value}" for key, value in notes.items()]
    lines += [f"{hashlib.md5(data).hexdigest()}  {name}" for name, data in files.items()]
    path = folder / "toy.lineage"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_verify_accepts_matching_files_like_md5sum(tmp_path, capsys):
    files = {"a.zip": b"first", "b.zip": b"second"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    lineage = write_lineage(tmp_path, files)
    assert verify(lineage, tmp_path) == [tmp_path / "a.zip", tmp_path / "b.zip"]
    assert capsys.readouterr().out.splitlines() == [
        f"{tmp_path}/a.zip: OK",
        f"{tmp_path}/b.zip: OK",
    ]
    # The lineage file is also valid input for md5sum -c (comment lines apart).
    md5sum = subprocess.run(
        ["md5sum", "-c", "--quiet", str(lineage)], cwd=tmp_path, capture_output=True, text=True
    )
    assert md5sum.returncode == 0, md5sum.stderr


def test_verify_names_file_expected_and_found_sum(tmp_path):
    lineage = write_lineage(tmp_path, {"a.zip": b"the real content"})
    (tmp_path / "a.zip").write_bytes(b"a corrupted download")
    expected = hashlib.md5(b"the real content").hexdigest()
    found = hashlib.md5(b"a corrupted download").hexdigest()
    with pytest.raises(LineageError, match=rf"a\.zip: FAILED.*expected {expected}, found {found}"):
        verify(lineage, tmp_path)


def test_missing_real_zip_says_where_to_get_it_and_the_synthetic_alternative(tmp_path):
    with pytest.raises(LineageError) as error:
        verify(ROOT / "lineage" / "isles.lineage", tmp_path)
    message = str(error.value)
    assert "ISLES2018_Training.zip: missing" in message
    assert "SMIR" in message
    assert "make -f isles.make DATA=synthetic" in message


def test_malformed_lineage_line_is_named(tmp_path):
    path = tmp_path / "bad.lineage"
    path.write_text("# source: x\nnot-a-sum  a.zip\n")
    with pytest.raises(LineageError, match=r"bad\.lineage:2: expected 'md5  file name'"):
        read_lineage(path)


def test_command_line_exit_codes(tmp_path):
    (tmp_path / "a.zip").write_bytes(b"x")
    lineage = write_lineage(tmp_path, {"a.zip": b"y"})
    script = ROOT / "preprocess" / "verify_lineage.py"
    bad = subprocess.run(
        [sys.executable, script, lineage, tmp_path], capture_output=True, text=True
    )
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: ") and "FAILED" in bad.stderr
    (tmp_path / "a.zip").write_bytes(b"y")
    good = subprocess.run(
        [sys.executable, script, lineage, tmp_path], capture_output=True, text=True
    )
    assert good.returncode == 0 and good.stdout.endswith(": OK\n")


# ---------------------------------------------------------------------------------------------
# Unpacking
# ---------------------------------------------------------------------------------------------


def make_zip(path: Path, members: dict[str, bytes], symlinks: tuple[str, ...] = ()) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        for name in symlinks:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    return path


def test_unpack_drops_what_the_recipes_remove(tmp_path):
    zip_path = make_zip(
        tmp_path / "ISLES2018_Training.zip",
        {
            "TRAINING/case_1/SMIR.Brain.XX.O.CT.1/SMIR.Brain.XX.O.CT.1.nii": b"ct",
            "TRAINING/case_1/SMIR.Brain.XX.O.CT_4DPWI.2/SMIR.Brain.XX.O.CT_4DPWI.2.nii": b"4d",
            "__MACOSX/TRAINING/case_1/._SMIR.Brain.XX.O.CT.1": b"apple",
            "GE3T/100/orig/FLAIR.nii.gz": b"orig",
            "GE3T/100/pre/3DT1.nii.gz": b"3dt1",
            "GE3T/100/pre/FLAIR.nii.gz": b"flair",
            "training/patient001/patient001_4d.nii.gz": b"4d",
            "training/patient001/patient001_frame01.nii.gz": b"frame",
        },
    )
    dest = unpack(
        [zip_path],
        tmp_path / "out",
        drop=["__MACOSX", "*CT_4DPWI*", "orig", "3DT1.nii.gz", "*_4d.nii.gz"],
    )
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert files == [
        ".unpacked.json",  # the zips it came from
        ".written_by.json",  # the mark of an unpack.py output
        "GE3T/100/pre/FLAIR.nii.gz",
        "TRAINING/case_1/SMIR.Brain.XX.O.CT.1/SMIR.Brain.XX.O.CT.1.nii",
        "training/patient001/patient001_frame01.nii.gz",
    ]
    assert not (tmp_path / "out_tmp").exists()


def test_unpack_merges_several_zips_and_replaces_an_old_result(tmp_path):
    a = make_zip(tmp_path / "Utrecht.zip", {"Utrecht/0/wmh.nii.gz": b"a"})
    b = make_zip(tmp_path / "Singapore.zip", {"Singapore/50/wmh.nii.gz": b"b"})
    unpack([a], tmp_path / "WMH")  # an earlier result, which `make -B` replaces
    (tmp_path / "WMH" / "stale").write_text("from an earlier run")
    dest = unpack([a, b], tmp_path / "WMH")
    names = sorted(p.name for p in dest.iterdir())
    assert names == [".unpacked.json", ".written_by.json", "Singapore", "Utrecht"]


def test_unpack_never_replaces_a_folder_it_did_not_create(tmp_path):
    """A user's folder given as --dest: refused before anything is written, left untouched."""
    zip_path = make_zip(tmp_path / "e.zip", {"TRAINING/a.nii": b"a"})
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "thesis.txt").write_text("x")
    proc = run_script("preprocess/unpack.py", zip_path, "--dest", keep)
    assert_clean_error(proc, f"--dest {keep}: a non-empty folder that unpack.py did not write")
    assert [p.name for p in keep.iterdir()] == ["thesis.txt"]
    assert not (tmp_path / "keep_tmp").exists()


@pytest.mark.parametrize(
    "member",
    ["../evil.txt", "/etc/evil.txt", "TRAINING/../../evil.txt", "C:/evil.txt", "a\\..\\..\\evil"],
)
def test_unpack_refuses_zip_slip_and_leaves_nothing(tmp_path, member):
    zip_path = make_zip(tmp_path / "bad.zip", {"TRAINING/ok.nii": b"fine", member: b"evil"})
    with pytest.raises(UnpackError, match=r"bad\.zip: refusing member .*zip-slip"):
        unpack([zip_path], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "out_tmp").exists()
    assert not (tmp_path.parent / "evil.txt").exists()


def test_unpack_refuses_symbolic_links(tmp_path):
    zip_path = make_zip(tmp_path / "bad.zip", {"a.nii": b"x"}, symlinks=("link",))
    with pytest.raises(UnpackError, match="symbolic"):
        unpack([zip_path], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unpack_names_missing_and_corrupt_zips(tmp_path):
    with pytest.raises(UnpackError, match=r"nothere\.zip: no such zip"):
        unpack([tmp_path / "nothere.zip"], tmp_path / "out")
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(UnpackError, match=r"broken\.zip: not a readable zip"):
        unpack([tmp_path / "broken.zip"], tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out_tmp").exists()


def test_unpack_command_line(tmp_path):
    zip_path = make_zip(tmp_path / "a.zip", {"../x": b"evil"})
    script = ROOT / "preprocess" / "unpack.py"
    run = subprocess.run(
        [sys.executable, script, zip_path, "--dest", tmp_path / "out"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1 and run.stderr.startswith("error: ") and "zip-slip" in run.stderr


def test_md5_failure_says_what_to_do_for_real_and_generated_data(tmp_path):
    """A wrong sum says: download again from the source (real), generate again (stand-in)."""
    zip_path = tmp_path / "ISLES2018_Training.zip"
    zip_path.write_bytes(b"cut short")
    (tmp_path / "ISLES2018_Testing.zip").write_bytes(b"")
    real = run_script("preprocess/verify_lineage.py", "lineage/isles.lineage", tmp_path)
    assert_clean_error(
        real, f"{zip_path}: FAILED md5 check", f"Delete {zip_path} and download it again", "SMIR"
    )
    synthetic = run_script(
        "preprocess/verify_lineage.py", "lineage/isles-synthetic.lineage", tmp_path
    )
    assert_clean_error(
        synthetic,
        f"{zip_path}: FAILED md5 check",
        f"Delete {zip_path} and generate it again: python preprocess/synthetic.py",
        "make -f isles.make DATA=synthetic",
    )
    quiet = run_script(
        "preprocess/verify_lineage.py", "--status", "lineage/isles.lineage", tmp_path
    )
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (1, "", "")
    assert zip_path.read_bytes() == b"cut short"  # checked, never touched
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ISLES2018_Testing.zip",
        "ISLES2018_Training.zip",
    ]


def damaged_zip(path: Path, method: int, offset: float) -> Path:
    """A zip whose member `TRAINING/big.bin` has 8 bytes flipped at `offset` (a fraction) of its
    compressed data; the central directory is intact, so the zip opens and the damage shows
    only when the member is decompressed."""
    rng = random.Random(0)
    data = bytes(rng.getrandbits(8) for _ in range(3000)) + bytes(100_000) + b"tail" * 1000
    with zipfile.ZipFile(path, "w", method) as archive:
        archive.writestr("TRAINING/ok.nii", b"fine")
        archive.writestr("TRAINING/big.bin", data)
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("TRAINING/big.bin")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    position = start + int(info.compress_size * offset)
    raw[position : position + 8] = bytes(b ^ 0xFF for b in raw[position : position + 8])
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize(
    ("method", "offset", "detail"),
    [
        (zipfile.ZIP_DEFLATED, 0.0, "Error -3 while decompressing"),  # zlib.error
        (zipfile.ZIP_DEFLATED, 0.5, "Bad CRC-32"),  # zipfile.BadZipFile
        (zipfile.ZIP_BZIP2, 0.5, "Invalid data stream"),  # OSError from bz2
        (zipfile.ZIP_LZMA, 0.5, "Corrupt input data"),  # lzma.LZMAError
    ],
)
def test_unpack_member_damaged_mid_stream(tmp_path, method, offset, detail):
    """One message naming the zip and the member; an earlier result is left as it was."""
    zip_path = damaged_zip(tmp_path / "bad.zip", method, offset)
    dest = tmp_path / "ISLES"
    dest.mkdir()
    (dest / ".unpacked.json").write_text('["an earlier zip"]\n')  # an earlier unpacking
    (dest / "earlier.nii").write_bytes(b"an earlier unpacking")
    proc = run_script("preprocess/unpack.py", zip_path, "--dest", dest)
    assert_clean_error(
        proc, f"{zip_path}: member 'TRAINING/big.bin' is corrupt", detail, f"Delete {zip_path}"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ISLES", "bad.zip"]  # no ISLES_tmp
    assert sorted(p.name for p in dest.iterdir()) == [".unpacked.json", "earlier.nii"]
    assert (dest / "earlier.nii").read_bytes() == b"an earlier unpacking"


@pytest.mark.parametrize(
    ("zips", "needles"),
    [
        # a file `a` and a file `a/b` under a folder of the same name
        ({"x.zip": ["case/a", "case/a/b"]}, ["'case/a/b' needs a folder", "'case/a' of"]),
        ({"x.zip": ["case/a/b", "case/a"]}, ["'case/a/b' needs a folder", "'case/a' of"]),
        # a folder entry where a file is
        ({"x.zip": ["case/a", "case/a/"]}, ["'case/a/' needs a folder", "'case/a' of"]),
        # the same file twice, written differently, in one zip or in two
        ({"x.zip": ["case/a", "case/a"]}, ["x.zip: member 'case/a' has the same path"]),
        ({"x.zip": ["case/a", "./case//a"]}, ["'./case//a' has the same path", "'case/a' of"]),
        ({"x.zip": ["case/a"], "y.zip": ["case/a"]}, ["y.zip: member 'case/a' has the same"]),
    ],
)
def test_unpack_refuses_members_landing_on_the_same_path(tmp_path, zips, needles):
    """Checked before anything is written: no dest, no dest_tmp, nothing overwritten."""
    paths = []
    for name, members in zips.items():
        paths.append(tmp_path / name)
        with zipfile.ZipFile(paths[-1], "w") as archive, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # zipfile warns of a duplicate name
            for member in members:
                archive.writestr(member, b"" if member.endswith("/") else member.encode())
    proc = run_script("preprocess/unpack.py", *paths, "--dest", tmp_path / "out")
    assert_clean_error(proc, *needles)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(zips)


@pytest.mark.skipif(not small_disk_available(), reason="needs unshare and mount (tmpfs)")
def test_unpack_on_a_full_disk_says_so_and_removes_its_work_folder(tmp_path):
    """Unpacking 1 MiB onto a 256 KiB disk: the disk is named full, with the file being
    written; ISLES_tmp is removed and the earlier ISLES is left as it was."""
    zip_path = tmp_path / "ISLES2018_Training.zip"
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("TRAINING/small.nii", b"fits")
        archive.writestr("TRAINING/big.nii", bytes(1 << 20))  # compresses to 1 KiB
    disk = tmp_path / "data"
    dest = disk / "ISLES"
    script = ROOT / "preprocess" / "unpack.py"
    command = (
        f"mkdir {dest} && echo earlier > {dest}/kept.nii && echo [] > {dest}/.unpacked.json && "
        f"{sys.executable} {script} {zip_path} --dest {dest}"
    )
    proc, left = on_small_disk(["bash", "-c", command], disk, size_kb=256)
    assert_clean_error(
        proc,
        f"{dest}_tmp/ISLES/TRAINING/big.nii: cannot be written, the disk is full (errno ENOSPC)",
        "'TRAINING/big.nii'",
        f"{dest}_tmp was removed",
        "need 1.0 MiB",
    )
    assert left == ["ISLES", "ISLES/.unpacked.json", "ISLES/kept.nii"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ISLES2018_Training.zip", "data"]
