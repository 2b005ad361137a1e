"""Lineage of a dataset the project has never seen (preprocess/dataset_lineage.py).

The first run pins the md5 of every file read; later runs check them before anything else, and
a changed, missing or added file stops with its name until the data is restored or pinned again.
The stamp Make depends on changes only when the pinned data does.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from boundary_loss.preprocessing.synthetic_nnunet import write_nnunet
from boundary_loss.preprocessing.verify_lineage import read_lineage
from tests.cli import assert_clean_error, run_script
from tests.test_slice_nnunet import make_msd, read_json, save_nii, tiny_case, write_json

SCRIPT = "preprocess/dataset_lineage.py"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_nnunet(tmp_path_factory.mktemp("standin"))


@pytest.fixture
def dataset(pristine: Path, tmp_path: Path) -> Path:
    """A private copy of the stand-in, free to be changed."""
    return Path(shutil.copytree(pristine, tmp_path / pristine.name))


def lineage_of(dataset: Path, tmp_path: Path, *flags: str):
    lineage, stamp = tmp_path / "own.lineage", tmp_path / "own.checked"
    return run_script(SCRIPT, dataset, lineage, "--stamp", stamp, *flags), lineage, stamp


def test_first_run_pins_every_file_read_and_later_runs_check_them(dataset, tmp_path):
    first, lineage, stamp = lineage_of(dataset, tmp_path)
    assert first.returncode == 0, first.stderr
    assert "pinned 57 files" in first.stdout
    sums = read_lineage(lineage).sums
    assert "dataset.json" in sums and "labelsTr/standin_001.nii.gz" in sums
    assert "imagesTs/standin_101_0001.nii.gz" in sums
    # every file but the generator's own marker (.written_by.json), which no step reads
    assert len(sums) == sum(1 for p in dataset.rglob("*") if p.is_file()) - 1
    assert ".written_by.json" not in sums and (dataset / ".written_by.json").is_file()
    os.utime(stamp, (1, 1))
    second, _, _ = lineage_of(dataset, tmp_path)
    assert second.returncode == 0 and "57 files match" in second.stdout
    assert stamp.stat().st_mtime == 1  # nothing changed: the stamp is left alone


@pytest.mark.parametrize("change", ["changed", "missing", "added", "changed dataset.json"])
def test_a_change_stops_with_the_file_named(dataset, tmp_path, change):
    lineage_of(dataset, tmp_path)
    label = dataset / "labelsTr" / "standin_002.nii.gz"
    if change == "changed":
        data = bytearray(label.read_bytes())
        data[len(data) // 2] ^= 0xFF
        label.write_bytes(bytes(data))
        named = f"{label}: changed since it was pinned"
    elif change == "missing":
        label.unlink()
        named = f"{label}: missing, but pinned"
    elif change == "added":
        extra = dataset / "imagesTs" / "standin_200_0000.nii.gz"
        shutil.copy(dataset / "imagesTs" / "standin_101_0000.nii.gz", extra)
        named = f"{extra}: added since the dataset was pinned"
    else:
        (dataset / "dataset.json").write_text("{not json")  # checked before it is parsed
        named = f"{dataset / 'dataset.json'}: changed since it was pinned"
    proc, _, _ = lineage_of(dataset, tmp_path)
    assert_clean_error(proc, named, "--repin")


def test_repin_accepts_the_new_data_and_changes_the_stamp(dataset, tmp_path):
    _, lineage, stamp = lineage_of(dataset, tmp_path)
    before = stamp.read_text()
    (dataset / "labelsTr" / "standin_003.nii.gz").unlink()
    for channel in ("0000", "0001"):
        (dataset / "imagesTr" / f"standin_003_{channel}.nii.gz").unlink()
    (dataset / "dataset.json").write_text(
        (dataset / "dataset.json").read_text().replace('"numTraining": 16', '"numTraining": 15')
    )
    repinned, _, _ = lineage_of(dataset, tmp_path, "--repin")
    assert repinned.returncode == 0, repinned.stderr
    assert "pinned 54 files" in repinned.stdout
    assert stamp.read_text() != before
    assert lineage_of(dataset, tmp_path)[0].returncode == 0


def test_a_dataset_that_cannot_be_read_is_not_pinned(tmp_path):
    (tmp_path / "empty").mkdir()
    proc, lineage, stamp = lineage_of(tmp_path / "empty", tmp_path)
    assert_clean_error(proc, f"{tmp_path / 'empty' / 'dataset.json'}: file not found")
    assert not lineage.exists() and not stamp.exists()


@pytest.mark.parametrize("form", ["absolute", ".."])
def test_a_decathlon_file_outside_the_dataset_folder_is_refused(tmp_path, form):
    """A training image named outside the folder is neither pinned nor read: the reader the
    slicer also uses refuses it, with the entry named."""
    root = make_msd(tmp_path / "Task01_Tiny")
    ct, t2, _ = tiny_case(2)
    outside = save_nii(tmp_path / "elsewhere" / "case_002.nii.gz", np.stack([ct, t2], axis=-1))
    named = str(outside) if form == "absolute" else "../elsewhere/case_002.nii.gz"
    spec = read_json(root / "dataset.json")
    spec["training"][1]["image"] = named
    write_json(root / "dataset.json", spec)
    proc, lineage, stamp = lineage_of(root, tmp_path)
    reason = "is an absolute path" if form == "absolute" else "holds '..'"
    assert_clean_error(
        proc,
        f"{root / 'dataset.json'}: training entry 1's image {named!r} {reason}",
        "expected a path inside the dataset folder",
    )
    assert not lineage.exists() and not stamp.exists()
