"""Tests for the stand-in data generator, preprocess/synthetic.py and its modules.

Each quick cohort is generated once per session. The layouts are checked member by member
against regexes written from the real archives' layouts (as the slicers' docstrings describe
them, preprocess/slice_<dataset>.py); the volumes are read back with nibabel from the zip
members and checked against the properties the generator promises (dtypes, label sets,
spacings, lesion sizes). The md5 sums of the committed lineage files are a regression pin only:
they were produced by the generator itself, not independently, so they say that its bytes have
not changed, not that they are right.
"""

from __future__ import annotations

import gzip
import re
import subprocess
import sys
import zipfile
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from boundary_loss.preprocessing.reproducible_archives import write_zip
from boundary_loss.preprocessing.synthetic import ZIP_NAMES, generate, main
from boundary_loss.preprocessing.verify_lineage import read_lineage, verify

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "preprocess" / "synthetic.py"
DATASETS = ("isles", "wmh", "acdc")


@pytest.fixture(scope="module")
def quick(quick_zips: Callable[[str], Path]) -> Callable[[str], Path]:
    """The folder holding a dataset's quick cohort (seed 0), generated once per session on first
    use (tests/conftest.py); read-only for these tests."""
    return quick_zips


def read_nifti(archive: zipfile.ZipFile, name: str) -> nib.Nifti1Image:
    """A NIfTI image read from a zip member (`.nii` or `.nii.gz`)."""
    data = archive.read(name)
    if name.endswith(".gz"):
        data = gzip.decompress(data)
    return nib.Nifti1Image.from_bytes(data)


def voxels(image: nib.Nifti1Image) -> np.ndarray:
    """The stored voxel array, in its stored dtype."""
    return np.asanyarray(image.dataobj)


def lesion_stats(mask: np.ndarray) -> tuple[float, int, int]:
    """(fraction of voxels, 3D connected components, slices without lesion) of a binary mask."""
    _, components = ndimage.label(mask)
    empty = int((mask.sum(axis=(0, 1)) == 0).sum())
    return float(mask.mean()), components, empty


# ------------------------------------------------------------------------------ lineage and CLI


@pytest.mark.parametrize("dataset", DATASETS)
def test_quick_cohort_matches_lineage(quick: Callable[[str], Path], dataset: str) -> None:
    """The generated zips have the md5 sums committed in lineage/<dataset>-synthetic.lineage.

    A regression pin, not an independent check: those sums were computed from an earlier run of
    this generator, so they pin its bytes (and the lineage files the recipes check the zips
    against) and fail on any change to them, intended or not. A deliberate change to the
    generated data must regenerate the lineage files' sums.
    """
    folder = quick(dataset)
    lineage = ROOT / "lineage" / f"{dataset}-synthetic.lineage"
    checked = verify(lineage, folder)
    assert [p.name for p in checked] == list(ZIP_NAMES[dataset])
    assert sorted(p.name for p in folder.iterdir()) == sorted(ZIP_NAMES[dataset])  # no .tmp left
    notes = read_lineage(lineage).notes
    assert "not real patients" in notes["source"]
    assert notes["generate"] == (
        f"python preprocess/synthetic.py --dataset {dataset} --dest data/{dataset}-synthetic"
    )
    assert notes["place"] == f"data/{dataset}-synthetic/"


@pytest.mark.parametrize("dataset", DATASETS)
def test_full_lineage_parses(dataset: str) -> None:
    """The full-size lineage files list the same zips, with a --size full generate line."""
    lineage = read_lineage(ROOT / "lineage" / f"{dataset}-synthetic-full.lineage")
    assert list(lineage.sums) == list(ZIP_NAMES[dataset])
    assert "--size full" in lineage.notes["generate"]


def test_cli_writes_same_bytes_under_real_names(
    quick: Callable[[str], Path], tmp_path: Path
) -> None:
    """A second generation, through the command line, gives the same bytes."""
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--dataset", "acdc", "--dest", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["acdc.zip"]
    first = (quick("acdc") / "acdc.zip").read_bytes()
    assert (tmp_path / "out" / "acdc.zip").read_bytes() == first


def test_other_seed_gives_other_bytes(quick: Callable[[str], Path], tmp_path: Path) -> None:
    (path,) = generate("acdc", tmp_path, seed=1)
    assert path.name == "acdc.zip"
    reference = quick("acdc") / "acdc.zip"
    assert path.read_bytes() != reference.read_bytes()
    with zipfile.ZipFile(path) as other, zipfile.ZipFile(reference) as first:
        gt = "training/patient001/patient001_frame01_gt.nii.gz"
        assert not np.array_equal(voxels(read_nifti(other, gt)), voxels(read_nifti(first, gt)))


def test_cli_refuses_unknown_dataset(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--dataset", "brats", "--dest", "x"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode != 0
    assert "--dataset: invalid choice: 'brats'" in result.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dataset", "isles"], "the following arguments are required: --dest"),
        (["--dataset", "isles", "--dest", "x", "--size", "huge"], "invalid choice: 'huge'"),
        (["--dataset", "isles", "--dest", "x", "--seed", "-1"], "non-negative integer"),
        (["--dataset", "isles", "--dest", "x", "--seed", "one"], "non-negative integer"),
    ],
)
def test_main_refuses_bad_arguments(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code != 0
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dataset": "brats"}, "dataset"),
        ({"dataset": "isles", "size": "huge"}, "size"),
        ({"dataset": "isles", "seed": -1}, "seed"),
        ({"dataset": "isles", "seed": 1.5}, "seed"),
    ],
)
def test_generate_refuses_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate(dest=tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_interrupted_zip_leaves_nothing(tmp_path: Path) -> None:
    """A failure while writing leaves neither the zip nor its .tmp behind."""

    def members():
        yield "top/a.txt", b"a"
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_zip(tmp_path / "data.zip", members())
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------ zip headers


@pytest.mark.parametrize("dataset", DATASETS)
def test_zip_members_have_fixed_headers(quick: Callable[[str], Path], dataset: str) -> None:
    for name in ZIP_NAMES[dataset]:
        with zipfile.ZipFile(quick(dataset) / name) as archive:
            assert archive.testzip() is None
            for info in archive.infolist():
                assert info.date_time == (1980, 1, 1, 0, 0, 0), info.filename
                assert info.extra == b"", info.filename
                mode = info.external_attr >> 16
                assert mode == (0o40755 if info.is_dir() else 0o100644), info.filename


# ---------------------------------------------------------------------------------------- ISLES

ISLES_MODALITIES = {"CT", "CT_4DPWI", "CT_CBF", "CT_CBV", "CT_MTT", "CT_Tmax", "OT"}
ISLES_DTYPES = {
    "CT": np.int32,
    "CT_CBF": np.uint16,
    "CT_CBV": np.uint16,
    "CT_MTT": np.float64,
    "CT_Tmax": np.float64,
    "OT": np.uint8,
}
MOD = r"(?P<mod>CT|CT_4DPWI|CT_CBF|CT_CBV|CT_MTT|CT_Tmax|OT)"


def isles_files(archive: zipfile.ZipFile, top: str) -> dict[int, dict[str, str]]:
    """case number -> modality -> member name, checking every member's name on the way."""
    folder = re.compile(rf"(__MACOSX/)?({top}/(case_\d+/(SMIR\.Brain\.XX\.O\.\w+\.\d+/)?)?)?")
    volume = re.compile(
        rf"{top}/case_(?P<case>\d+)/SMIR\.Brain\.XX\.O\.{MOD}\.(?P<id>\d+)/"
        r"SMIR\.Brain\.XX\.O\.(?P=mod)\.(?P=id)\.nii"
    )
    apple = re.compile(
        rf"__MACOSX/{top}/case_\d+/SMIR\.Brain\.XX\.O\.{MOD}\.(?P<id>\d+)/"
        r"\._SMIR\.Brain\.XX\.O\.(?P=mod)\.(?P=id)\.nii"
    )
    cases: dict[int, dict[str, str]] = defaultdict(dict)
    names = set(archive.namelist())
    for name in names:
        if folder.fullmatch(name):
            continue
        if apple.fullmatch(name):
            continue
        match = volume.fullmatch(name)
        assert match is not None, f"unexpected member {name}"
        assert match["mod"] not in cases[int(match["case"])], name
        cases[int(match["case"])][match["mod"]] = name
        stem = name.split("/")[-1]
        assert f"__MACOSX/{name.rsplit('/', 1)[0]}/._{stem}" in names  # AppleDouble sibling
    return dict(cases)


def test_isles_layout(quick: Callable[[str], Path]) -> None:
    folder = quick("isles")
    ids = []
    for zip_name, top, count, modalities in (
        ("ISLES2018_Training.zip", "TRAINING", 16, ISLES_MODALITIES),
        ("ISLES2018_Testing.zip", "TESTING", 4, ISLES_MODALITIES - {"OT"}),
    ):
        with zipfile.ZipFile(folder / zip_name) as archive:
            cases = isles_files(archive, top)
            assert sorted(cases) == list(range(1, count + 1))
            for files in cases.values():
                assert set(files) == modalities
                ids += [int(name.rsplit(".", 2)[1]) for name in files.values()]
            assert any(name.startswith("__MACOSX/") for name in archive.namelist())
    assert len(ids) == len(set(ids)), "SMIR ids must be unique"


def ring_contrast(values: np.ndarray, lesion: np.ndarray, brain: np.ndarray) -> float:
    """(ring mean - lesion mean) / ring std: a lesion's drop against the tissue around it.

    The ring is the brain 3 to 6 pixels from the lesion in-plane, past its partial-volume edge.
    """
    step = np.ones((3, 3, 1), bool)  # in-plane only
    near = ndimage.binary_dilation(lesion, step, iterations=2)
    ring = ndimage.binary_dilation(lesion, step, iterations=6) & ~near & brain
    return float((values[ring].mean() - values[lesion].mean()) / values[ring].std())


def test_isles_volumes(quick: Callable[[str], Path]) -> None:
    with zipfile.ZipFile(quick("isles") / "ISLES2018_Training.zip") as archive:
        cases = isles_files(archive, "TRAINING")
        several, with_empty, drops = 0, 0, []
        for number, files in cases.items():
            images = {mod: read_nifti(archive, name) for mod, name in files.items()}
            shape = images["OT"].shape
            assert shape[:2] == (256, 256) and 2 <= shape[2] <= 22, (number, shape)
            zooms = images["OT"].header.get_zooms()
            assert zooms[0] == zooms[1] and 0.75 <= zooms[0] <= 1.0, (number, zooms)
            assert 4.0 <= zooms[2] <= 12.0, (number, zooms)
            for mod, dtype in ISLES_DTYPES.items():
                assert images[mod].shape == shape, (number, mod)
                assert images[mod].get_data_dtype() == dtype, (number, mod)
                assert voxels(images[mod]).dtype == dtype, (number, mod)
                assert images[mod].header.get_zooms() == zooms, (number, mod)
            pwi = images["CT_4DPWI"]
            assert pwi.ndim == 4 and pwi.shape[:3] == shape and 2 <= pwi.shape[3] <= 8
            mask = voxels(images["OT"])
            assert set(np.unique(mask)) <= {0, 1}
            # Small: under 0.5% of the case's voxels, in several components.
            fraction, components, empty = lesion_stats(mask == 1)
            assert 0 < fraction < 0.005, (number, fraction)
            several += components >= 3
            with_empty += empty >= 1
            # On average the lesion has raised Tmax and MTT and lowered CBF and CBV (the
            # unlabelled penumbra raises Tmax and MTT too).
            lesion, brain = mask == 1, voxels(images["CT_CBF"]) > 0
            healthy = brain & ~lesion
            maps = {mod: voxels(images[mod]).astype(float) for mod in ISLES_DTYPES}
            assert maps["CT_Tmax"][lesion].mean() > 1.5 * maps["CT_Tmax"][healthy].mean(), number
            assert maps["CT_MTT"][lesion].mean() > maps["CT_MTT"][healthy].mean(), number
            assert maps["CT_CBF"][lesion].mean() < maps["CT_CBF"][healthy].mean(), number
            assert maps["CT_CBV"][lesion].mean() < maps["CT_CBV"][healthy].mean(), number
            drops.append([ring_contrast(maps[mod], lesion, brain) for mod in ("CT_CBF", "CT_CBV")])
        assert several >= 0.75 * len(cases)
        assert with_empty >= 0.5 * len(cases)
        # The contrast varies between cases: in CBF and in CBV some lesions stand out from the
        # tissue around them by half its spread or more, others are barely there.
        for column, mod in enumerate(("CT_CBF", "CT_CBV")):
            values = [drop[column] for drop in drops]
            assert max(values) > 0.5 and min(values) < 0.2, (mod, values)


# ------------------------------------------------------------------------------------------ WMH

WMH_SITES = {  # zip -> (top folder, in-plane size, real slices, zooms, id range)
    "Amsterdam_GE3T.zip": ("GE3T", (132, 256), 83, (1.2, 0.977, 3.0), range(100, 145)),
    "Singapore.zip": ("Singapore", (252, 232), 48, (0.96, 0.95, 3.0), range(50, 70)),
    "Utrecht.zip": ("Utrecht", (240, 240), 48, (0.958, 0.958, 3.0), range(0, 50)),
}
WMH_FILES = {"pre/3DT1.nii.gz", "pre/FLAIR.nii.gz", "pre/T1.nii.gz", "wmh.nii.gz"}


def wmh_files(archive: zipfile.ZipFile, top: str) -> dict[int, set[str]]:
    """patient id -> its files (relative to the patient folder), checking every member's name."""
    folder = re.compile(rf"{top}/(\d+/((pre|orig)/)?)?")
    member = re.compile(rf"{top}/(?P<pid>\d+)/(?P<file>(pre|orig)/[\w.]+|wmh\.nii\.gz)")
    patients: dict[int, set[str]] = defaultdict(set)
    for name in archive.namelist():
        if folder.fullmatch(name):
            continue
        match = member.fullmatch(name)
        assert match is not None, f"unexpected member {name}"
        patients[int(match["pid"])].add(match["file"])
    return dict(patients)


def test_wmh_layout(quick: Callable[[str], Path]) -> None:
    folder = quick("wmh")
    all_ids = []
    for zip_name, (top, *_, id_range) in WMH_SITES.items():
        with zipfile.ZipFile(folder / zip_name) as archive:
            patients = wmh_files(archive, top)
        assert 3 <= len(patients) <= 6
        for pid, files in patients.items():
            assert pid in id_range, (zip_name, pid)
            assert files & WMH_FILES == WMH_FILES, (zip_name, pid)
            assert any(f.startswith("orig/") for f in files), (zip_name, pid)
            assert not files - WMH_FILES - {f for f in files if f.startswith("orig/")}
        all_ids += list(patients)
    assert len(all_ids) == len(set(all_ids)), "patient ids must be unique across sites"


def test_wmh_volumes(quick: Callable[[str], Path]) -> None:
    folder = quick("wmh")
    volumes = several = with_empty = 0
    for zip_name, (top, plane, real_slices, zooms, _) in WMH_SITES.items():
        with zipfile.ZipFile(folder / zip_name) as archive:
            for pid in wmh_files(archive, top):
                flair = read_nifti(archive, f"{top}/{pid}/pre/FLAIR.nii.gz")
                t1 = read_nifti(archive, f"{top}/{pid}/pre/T1.nii.gz")
                label = read_nifti(archive, f"{top}/{pid}/wmh.nii.gz")
                assert flair.shape[:2] == plane and 16 <= flair.shape[2] <= real_slices
                assert t1.shape == flair.shape == label.shape, (top, pid)
                for image, dtype in ((flair, np.float32), (t1, np.uint16), (label, np.float32)):
                    assert voxels(image).dtype == dtype, (top, pid)
                    assert np.allclose(image.header.get_zooms(), zooms, atol=1e-5), (top, pid)
                wmh = voxels(label)
                assert set(np.unique(wmh)) <= {0.0, 1.0, 2.0}, (top, pid)
                fraction, components, empty = lesion_stats(wmh == 1)
                assert 0 < fraction < 0.005, (top, pid, fraction)
                volumes += 1
                several += components >= 3
                with_empty += empty >= 1
                # Bright in FLAIR: above the 95th percentile of the head.
                values = voxels(flair)
                head = values > 0.1 * values.max()
                assert values[wmh == 1].mean() > np.percentile(values[head], 95), (top, pid)
    assert several >= 0.75 * volumes and with_empty >= 0.75 * volumes


# ----------------------------------------------------------------------------------------- ACDC

INFO = re.compile(
    r"ED: (?P<ed>\d+)\nES: (?P<es>\d+)\nGroup: (?P<group>DCM|HCM|MINF|NOR|RV)\n"
    r"Height: \d+\.\d\nNbFrame: (?P<frames>\d+)\nWeight: \d+\.\d\n"
)


def acdc_patients(archive: zipfile.ZipFile) -> dict[str, set[str]]:
    """patient folder -> its file names, checking every member's name."""
    folder = re.compile(r"training/(patient\d{3}/)?")
    member = re.compile(
        r"training/(?P<pid>patient\d{3})/(?P<file>Info\.cfg|(?P=pid)_(4d|frame\d\d(_gt)?)\.nii\.gz)"
    )
    patients: dict[str, set[str]] = defaultdict(set)
    for name in archive.namelist():
        if folder.fullmatch(name):
            continue
        match = member.fullmatch(name)
        assert match is not None, f"unexpected member {name}"
        patients[match["pid"]].add(match["file"])
    return dict(patients)


def test_acdc_layout(quick: Callable[[str], Path]) -> None:
    with zipfile.ZipFile(quick("acdc") / "acdc.zip") as archive:
        patients = acdc_patients(archive)
        assert 10 <= len(patients) <= 14
        groups = set()
        for pid, files in patients.items():
            info = INFO.fullmatch(archive.read(f"training/{pid}/Info.cfg").decode())
            assert info is not None, pid
            ed, es, frames = int(info["ed"]), int(info["es"]), int(info["frames"])
            assert 1 <= ed < es <= frames, pid
            groups.add(info["group"])
            expected = {"Info.cfg", f"{pid}_4d.nii.gz"}
            for frame in (ed, es):
                expected |= {f"{pid}_frame{frame:02d}.nii.gz", f"{pid}_frame{frame:02d}_gt.nii.gz"}
            assert files == expected, pid
    assert len(groups) >= 3


def lv_ringed(gt: np.ndarray) -> tuple[int, int]:
    """(slices with LV cavity, those where every pixel touching the cavity is myocardium)."""
    with_lv = ringed = 0
    for k in range(gt.shape[2]):
        lv = gt[..., k] == 3
        if lv.any():
            with_lv += 1
            border = ndimage.binary_dilation(lv, np.ones((3, 3), bool)) & ~lv
            ringed += bool((gt[..., k][border] == 2).all())
    return with_lv, ringed


def test_acdc_volumes(quick: Callable[[str], Path]) -> None:
    with zipfile.ZipFile(quick("acdc") / "acdc.zip") as archive:
        for pid in acdc_patients(archive):
            info = INFO.fullmatch(archive.read(f"training/{pid}/Info.cfg").decode())
            assert info is not None
            lv_voxels = []
            for frame in (int(info["ed"]), int(info["es"])):
                image = read_nifti(archive, f"training/{pid}/{pid}_frame{frame:02d}.nii.gz")
                label = read_nifti(archive, f"training/{pid}/{pid}_frame{frame:02d}_gt.nii.gz")
                assert voxels(image).dtype == np.int16 and voxels(label).dtype == np.uint8
                assert image.shape == label.shape
                nx, ny, nz = image.shape
                assert 200 <= min(nx, ny) and max(nx, ny) == 256 and 6 <= nz <= 18, image.shape
                zooms = image.header.get_zooms()
                assert zooms == label.header.get_zooms()
                assert zooms[0] == zooms[1] and 1.3 <= zooms[0] <= 1.8, zooms
                assert float(zooms[2]) in (5.0, 6.5, 7.0, 10.0), zooms
                gt = voxels(label)
                present = set(np.unique(gt).tolist())
                assert present <= {0, 1, 2, 3}
                if frame == int(info["ed"]):
                    assert present == {0, 1, 2, 3}, pid
                with_lv, ringed = lv_ringed(gt)
                assert ringed >= 0.9 * with_lv, (pid, frame, ringed, with_lv)
                assert (gt == 1).any(axis=(0, 1)).sum() >= nz // 2, pid  # RV in most slices
                lv_voxels.append(int((gt == 3).sum()))
                # Blood pools bright, myocardium dark.
                values = voxels(image).astype(float)
                assert values[gt == 3].mean() > 1.8 * values[gt == 2].mean(), (pid, frame)
            assert lv_voxels[1] < lv_voxels[0], f"{pid}: ES cavity not smaller than ED"
            sequence = read_nifti(archive, f"training/{pid}/{pid}_4d.nii.gz")
            assert sequence.ndim == 4 and sequence.shape[:3] == image.shape
