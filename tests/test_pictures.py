"""The report's pictures, per-patient table and seed aggregation (pictures.py, patients.py,
report_sections.py), on hand-made run folders whose every value is known.

A run folder here holds what main.py writes and these tools read: args.json (the data and the
patient regex), the per-epoch predictions `iter<NNN>/val/*.png`, `best_epoch/`, `best_epoch.txt`
and the 3D arrays; the sliced data holds `val/in_npy` and `val/gt_npy`.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from boundary_loss.io.atomic import MARKER
from boundary_loss.report import patients, pictures
from boundary_loss.report import sections as report_sections
from boundary_loss.report.summary import summarise, write_report
from tests.cli import assert_clean_error, run_module

PICTURES = "boundary_loss.report.pictures"

EPOCHS, SIZE, PATIENTS = 4, 16, ("p1", "p2", "p3")
REGEX = r"(p\d+)_\d+"


def make_data(root: Path) -> Path:
    """Sliced data: three patients of three 16 x 16 slices, a square lesion (class 1)."""
    for folder in ("in_npy", "gt_npy"):
        (root / "val" / folder).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for p, patient in enumerate(PATIENTS):
        for z in range(3):
            gt = np.zeros((SIZE, SIZE), np.uint8)
            gt[4 : 6 + 2 * z + p, 5:11] = 1
            image = (gt + rng.normal(0, 0.3, gt.shape))[None].astype(np.float32)
            np.save(root / "val" / "in_npy" / f"{patient}_{z:04d}.npy", image)
            np.save(root / "val" / "gt_npy" / f"{patient}_{z:04d}.npy", gt)
    return root


def make_run(root: Path, data: Path, name: str, shift: int) -> Path:
    """A run whose prediction is the ground truth shifted by `shift` rows; 3D Dice chosen so
    that p1 is the best patient, p2 the median and p3 the worst."""
    run = root / name
    for epoch in range(EPOCHS):
        (run / f"iter{epoch:03d}" / "val").mkdir(parents=True)
    for stem in (p.stem for p in (data / "val" / "gt_npy").glob("*.npy")):
        gt = np.load(data / "val" / "gt_npy" / f"{stem}.npy")
        for epoch in range(EPOCHS):
            pred = np.roll(gt, shift + EPOCHS - 1 - epoch, axis=0)
            Image.fromarray(pred).save(run / f"iter{epoch:03d}" / "val" / f"{stem}.png")
    shutil.copytree(run / f"iter{EPOCHS - 1:03d}", run / "best_epoch")
    (run / "best_epoch.txt").write_text(f"{EPOCHS - 1}\n")
    args = {"dataset": str(data), "grp_regex": REGEX, "n_epoch": EPOCHS}
    (run / "args.json").write_text(json.dumps(args))
    dice = np.zeros((EPOCHS, 3, 2), np.float32)
    dice[:, :, 1] = [0.9 - 0.1 * shift, 0.7 - 0.1 * shift, 0.5 - 0.1 * shift]  # p1 > p2 > p3
    dice[:, :, 0] = 1.0
    np.save(run / "val_3d_dsc.npy", dice)
    np.save(run / "val_3d_hausdorff.npy", np.full((EPOCHS, 3, 2), 2.0 + shift, np.float32))
    np.save(run / "val_3d_hd95.npy", np.full((EPOCHS, 3, 2), 1.0 + shift, np.float32))
    np.save(run / "val_dice.npy", np.full((EPOCHS, 9, 2), 0.8, np.float32))
    return run


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    data = make_data(tmp_path / "data")
    return [
        make_run(tmp_path / "results", data, "gdl", 0),
        make_run(tmp_path / "results", data, "gdl_surface_steal", 1),
    ]


def test_patient_names_and_values_at_the_checkpoint(runs):
    assert patients.patient_names(runs[0]) == list(PATIENTS)
    names, values = patients.table(runs, [1])
    dice = np.load(runs[1] / "val_3d_dsc.npy")[EPOCHS - 1, :, 1]
    np.testing.assert_array_equal(values["gdl_surface_steal"]["val_3d_dsc"], dice)
    header, rows = patients.rows(names, values)
    assert header[1] == "gdl: Dice / HD / HD95"
    assert rows[2] == ["p3", "0.5000 / 2.0000 / 1.0000", "0.4000 / 3.0000 / 2.0000"]


def test_pictures_and_gifs(runs, tmp_path):
    dest = tmp_path / "pictures"
    proc = run_module(PICTURES, "--folders", *runs, "--dest", dest, "--classes", "1")
    assert proc.returncode == 0, proc.stderr
    record = json.loads((dest / "pictures.json").read_text())
    assert record["chosen"]["gdl"] == {"best": "p1", "median": "p2", "worst": "p3"}
    assert {p["patient"] for p in record["pictures"]} == set(PATIENTS)
    for picture in record["pictures"]:
        with Image.open(dest / picture["file"]) as image:
            # two rows of slices, one column per run, 400 x 400 pixels each
            assert image.size == (2 * 400, 2 * 400)
    assert len(record["gifs"]) == 3 * len(runs)
    for gif in record["gifs"]:
        with Image.open(dest / gif["file"]) as image:
            assert image.n_frames == EPOCHS  # one frame per epoch
            # the crop (the whole 16 x 16 slice: the margin of 8 pixels reaches its borders)
            # and its 4-pixel bar, scaled by round(256 / 16) = 16
            assert image.size == (16 * SIZE, 16 * (SIZE + 4))
    assert not (tmp_path / "pictures_tmp").exists()


def test_pictures_never_replace_a_users_folder(runs, tmp_path):
    """A folder of the user's as --dest, or as the DEST_tmp beside it: refused, untouched; the
    user's DEST_old is never touched; an earlier output of pictures.py is replaced."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "figure.png").write_bytes(b"mine")
    proc = run_module(PICTURES, "--folders", *runs, "--dest", mine)
    assert_clean_error(proc, f"--dest {mine}:", "pictures.py did not write", "not replaced")
    assert [p.name for p in mine.iterdir()] == ["figure.png"] and not (
        tmp_path / "mine_tmp"
    ).exists()
    proc = run_module(PICTURES, "--folders", *runs, "--dest", runs[0])  # a run folder
    assert_clean_error(proc, f"--dest {runs[0]}:", "not replaced")
    assert (runs[0] / "best.pt").is_file() or (runs[0] / "args.json").is_file()
    dest, old = tmp_path / "pictures", tmp_path / "pictures_old"
    old.mkdir()
    (old / "keep.txt").write_text("keep")
    for _ in range(2):  # the second run replaces the first one's output
        proc = run_module(PICTURES, "--folders", *runs, "--dest", dest)
        assert proc.returncode == 0, proc.stderr
    assert (old / "keep.txt").read_text() == "keep"
    assert json.loads((dest / MARKER).read_text()) == {"tool": "pictures.py"}
    stage = tmp_path / "pictures_tmp"
    stage.mkdir()
    (stage / "draft.png").write_bytes(b"draft")
    proc = run_module(PICTURES, "--folders", *runs, "--dest", dest)
    assert_clean_error(proc, f"--dest {dest}:", f"{stage} is a folder without", "not removed")
    assert [p.name for p in stage.iterdir()] == ["draft.png"]


def test_a_diverged_run_is_left_out_of_the_pictures_and_named(runs, tmp_path):
    """A run whose 3D metrics are all NaN saved no predictions (no best.pt epoch): the others
    are drawn, it is named in pictures.json, a warning and the report's pictures section."""
    diverged = shutil.copytree(runs[1], runs[1].with_name("diverged"))
    shutil.rmtree(diverged / "best_epoch")
    (diverged / "best_epoch.txt").unlink()
    for name in ("val_3d_dsc", "val_3d_hausdorff", "val_3d_hd95"):
        np.save(diverged / f"{name}.npy", np.full((EPOCHS, 3, 2), np.nan, np.float32))
    dest = tmp_path / "pictures"
    proc = run_module(PICTURES, "--folders", runs[0], diverged, "--dest", dest)
    assert proc.returncode == 0, proc.stderr
    assert "warning: run diverged diverged (all its 3D metrics are NaN): not drawn" in proc.stderr
    record = json.loads((dest / "pictures.json").read_text())
    assert record["diverged"] == ["diverged"] and list(record["chosen"]) == ["gdl"]
    assert {g["run"] for g in record["gifs"]} == {"gdl"} and len(record["gifs"]) == 3
    assert len(record["pictures"]) == 3  # best, median and worst of gdl: p1, p2, p3
    alone = tmp_path / "alone"
    proc = run_module(PICTURES, "--folders", diverged, "--dest", alone)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((alone / "pictures.json").read_text())
    assert record["pictures"] == [] and record["gifs"] == [] and record["diverged"] == ["diverged"]
    blocks = report_sections.picture_blocks(alone, tmp_path)
    assert any("Not drawn, diverged (all 3D metrics NaN): diverged." in b.text for b in blocks)


def test_pictures_name_a_run_without_predictions(runs, tmp_path):
    shutil.rmtree(runs[1] / "best_epoch")
    proc = run_module(PICTURES, "--folders", *runs, "--dest", tmp_path / "pictures")
    assert_clean_error(proc, f"{runs[1] / 'best_epoch' / 'val'}: folder not found")
    assert not (tmp_path / "pictures").exists() and not (tmp_path / "pictures_tmp").exists()


def test_report_holds_the_table_the_csv_the_comparison_and_the_pictures(runs, tmp_path):
    pictures.make_pictures(runs, tmp_path / "pictures", [1])
    summaries = summarise(runs, ["val_3d_dsc", "val_3d_hd95"], [1])
    pages = write_report(
        summaries,
        tmp_path / "report" / "report.md",
        html_page=True,
        patient_columns=[1],
        baseline="gdl",
        pictures=tmp_path / "pictures",
    )
    html = pages[1].read_text()
    for needle in (
        "Per patient",
        "Against gdl: did it help?",
        "against gdl, over 3 patients: no detectable difference on 3D Dice",
        "Wilcoxon",
        "percentile bootstrap",
        "patient_p1.png",
        "gdl_p1.gif",
    ):
        assert needle in html, needle
    with open(tmp_path / "report" / "per_patient.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 * len(runs)
    for row in rows:
        run = runs[0] if row["run"] == "gdl" else runs[1]
        i = PATIENTS.index(row["patient"])
        for metric in patients.METRICS_3D:
            expected = np.load(run / f"{metric}.npy")[EPOCHS - 1, i, 1]
            assert float(row[metric]) == pytest.approx(float(expected), rel=1e-6)


def test_seeds_are_aggregated(runs, tmp_path):
    seeded = []
    for run in runs:
        for seed in (0, 1):
            copy = shutil.copytree(run, tmp_path / "seeded" / f"{run.name}-seed{seed}")
            seeded.append(Path(copy))
    dice = np.load(seeded[1] / "val_3d_dsc.npy")
    dice[:, :, 1] -= 0.2
    np.save(seeded[1] / "val_3d_dsc.npy", dice)  # gdl-seed1 is 0.2 lower everywhere
    summaries = summarise(seeded, ["val_3d_dsc"], [1])
    pages = write_report(
        summaries, tmp_path / "r" / "report.md", patient_columns=[1], baseline="gdl"
    )
    text = pages[0].read_text()
    # gdl: per-run means 0.7 and 0.5 -> 0.6 +- 0.1 over its 2 seeds
    assert "| gdl | 2 | 0.6000 +- 0.1000 (min 0.5000, max 0.7000) |" in text
    assert "over 3 patients and 2 seeds" in text


def test_crop_box_by_hand():
    """A 6 x 6 square (rows 30-35, columns 30-35) and a prediction 2 rows lower (32-37): their
    union spans 8 rows, so the square box has a margin of max(8, 0.5 x 8) = 8 pixels: 24 wide,
    centred on the union (rows (30 + 38 - 24) // 2 = 22 .. 45, columns (30 + 36 - 24) // 2 = 21
    .. 44)."""
    truth = np.zeros((64, 64), bool)
    truth[30:36, 30:36] = True
    pred = np.roll(truth, 2, axis=0)
    assert pictures.crop_box([truth, pred]) == (slice(22, 46), slice(21, 45))
    # at the border the box moves inside the image; an empty one keeps the whole image
    corner = np.zeros((64, 64), bool)
    corner[0:4, 60:64] = True
    assert pictures.crop_box([corner]) == (slice(0, 20), slice(44, 64))
    assert pictures.crop_box([np.zeros((64, 64), bool)]) == (slice(0, 64), slice(0, 64))


def near(picture: np.ndarray, colour: tuple[int, int, int], tolerance: int = 40) -> int:
    """How many pixels of an RGB(A) picture are within `tolerance` of `colour`, channel by
    channel."""
    return int((np.abs(picture[..., :3].astype(int) - colour) <= tolerance).all(axis=-1).sum())


def test_truth_and_prediction_in_two_colours_with_a_legend(tmp_path):
    """On a known case, the picture draws the ground truth in orange and the prediction in blue
    (Okabe and Ito's), and says which is which; the GIF frame does too, with its epoch."""
    data = tmp_path / "data"
    for folder in ("in_npy", "gt_npy"):
        (data / "val" / folder).mkdir(parents=True)
    gt = np.zeros((64, 64), np.uint8)
    gt[30:36, 30:36] = 1
    np.save(data / "val" / "in_npy" / "p1_0000.npy", np.full((1, 64, 64), 0.5, np.float32))
    np.save(data / "val" / "gt_npy" / "p1_0000.npy", gt)
    run = tmp_path / "run"
    (run / "best_epoch" / "val").mkdir(parents=True)
    Image.fromarray(np.roll(gt, 2, axis=0)).save(run / "best_epoch" / "val" / "p1_0000.png")
    (run / "args.json").write_text(json.dumps({"dataset": str(data), "grp_regex": REGEX}))
    dest = pictures.contour_picture([run], "p1", [1], tmp_path / "picture.png")
    drawn = np.asarray(Image.open(dest).convert("RGB"))
    assert near(drawn, pictures.TRUTH_COLOUR) > 50
    assert near(drawn, pictures.PREDICTION_COLOUR) > 50
    assert near(drawn, (230, 60, 60)) == 0  # no third colour: one per role, not per class
    truth = gt[22:46, 21:45]  # the crop of the picture's box
    frame = np.asarray(
        pictures.frame(np.full((24, 24), 0.5), np.roll(truth, 2, axis=0), truth, 3, 5)
    )
    assert (frame == pictures.TRUTH_COLOUR).all(axis=-1).sum() > 0  # the truth's border
    tinted = np.round(0.5 * 127.5 + 0.5 * np.array(pictures.PREDICTION_COLOUR))
    assert near(frame, tuple(tinted.astype(int)), 1) > 0  # the prediction, tinted blue
    assert frame.shape[:2] == (11 * (24 + 4), 11 * 24)  # scaled by round(256 / 24) = 11
