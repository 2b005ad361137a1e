"""Pictures of the trainings' predictions for the report: contours on the image, and GIFs of the
prediction over the epochs (matplotlib and Pillow only).

Usage: python -m boundary_loss.report.pictures --folders RUN [RUN ...] --dest DIR [--classes 1]

For each run, its best, median and worst validation patient by 3D Dice at the epoch of best.pt
(`report.patients`; the mean over `--classes`) are chosen. For each chosen patient, one picture
`DIR/patient_<name>.png` shows, side by side across the runs, two slices of the validation image
(its first channel): the slice with the largest ground-truth area of the classes, and the slice
where the runs' predictions disagree most with the ground truth. Each panel is cropped around
what it shows (the ground truth and every run's prediction of the classes, with a margin of half
their extent, at least 8 pixels, as a square) and drawn 400 pixels wide; the ground truth is a
solid orange contour, each run's prediction at its best epoch a dashed blue one, with a legend
(orange and blue from Okabe and Ito's palette, told apart by colour-blind readers). For the
patients chosen for the first run, `DIR/<run>_<name>.gif` animates each run's prediction of the
largest slice over the epochs, cropped the same way, one frame per epoch with its number written
on it (from `iter<NNN>/val/`, which every epoch saves; the bar at the bottom fills with the
epochs), as the original project did with ImageMagick's `convert`.
A diverged run (every value of its 3D metrics NaN, `runfolder.schema.divergence`) has nothing to
show and may have saved no predictions: it is left out, named in `pictures.json` (`diverged`) and in
a warning. `DIR/pictures.json` lists the files with what they show. Everything is written in
`DIR_tmp/DIR` and moved into place when complete; `DIR` is only ever replaced when it is empty
or an earlier output of report.pictures (marked by `.written_by.json`, or holding `pictures.json`),
so a folder of the user's given as `--dest` is refused, untouched (`io.atomic.staged_folder`).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D
from PIL import Image, ImageDraw
from scipy.ndimage import binary_erosion

from boundary_loss.io.atomic import FolderError, check_replaceable, staged_folder
from boundary_loss.io.console import ArgumentParser
from boundary_loss.report.patients import at_checkpoint, patient_names, validation_stems
from boundary_loss.runfolder.schema import divergence, read_json

PANEL_INCHES, DPI = 4.0, 100  # each panel of a picture: 400 x 400 pixels
GIF_WIDTH, GIF_MS = 256, 400  # GIF frames: the crop scaled to about 256 pixels wide, 0.4 s each
# Okabe and Ito's orange and blue (Color Universal Design, 2008): apart for colour-blind readers.
TRUTH_COLOUR, PREDICTION_COLOUR = (230, 159, 0), (0, 114, 178)
CONTEXT, MIN_MARGIN = 0.5, 8  # the crop's margin: half the structure's extent, at least 8 pixels
# The name in the marker of a pictures folder, and the record file of those made before the
# marker existed: report.pictures replaces only those (atomic.staged_folder).
TOOL, LEGACY = "pictures.py", ("pictures.json",)


def choose(names: list[str], dice: np.ndarray) -> dict[str, str]:
    """The best, median and worst patient by 3D Dice (NaN last)."""
    order = sorted(range(len(names)), key=lambda i: (np.nan_to_num(dice[i], nan=-1.0), names[i]))
    return {
        "best": names[order[-1]],
        "median": names[order[len(order) // 2]],
        "worst": names[order[0]],
    }


def slices_of(run: Path, patient: str) -> list[str]:
    """The validation stems of one patient, in slice order."""
    regex = read_json(run / "args.json")[0]["grp_regex"]
    return [s for s in validation_stems(run) if re.match(regex, s).group(1) == patient]


def dataset_of(run: Path) -> Path:
    return Path(read_json(run / "args.json")[0]["dataset"])


def slice_arrays(dataset: Path, stem: str) -> tuple[np.ndarray, np.ndarray]:
    """The first channel of a validation slice and its ground truth: the slice's own files
    (2D data), or the slice of the whole volume along the plan's slice axis (3D data, holding a
    plan.json; stems `<case>_00_<slice>`, as a 3D training saves its predicted slices)."""
    plan = dataset / "plan.json"
    if not plan.is_file():
        image = np.load(dataset / "val" / "in_npy" / f"{stem}.npy")[0]
        return image, np.load(dataset / "val" / "gt_npy" / f"{stem}.npy")
    case, index = stem.rsplit("_00_", 1)
    axis = int(read_json(plan)[0]["slice_axis"])
    volume = np.load(dataset / "val" / "in_npy" / f"{case}.npy", mmap_mode="r")[0]
    truth = np.load(dataset / "val" / "gt_npy" / f"{case}.npy", mmap_mode="r")
    return np.take(volume, int(index), axis=axis), np.take(truth, int(index), axis=axis)


def image_and_truth(dataset: Path, stem: str) -> tuple[np.ndarray, np.ndarray]:
    """The first channel of a validation slice (scaled to [0, 1]) and its ground truth."""
    image, truth = slice_arrays(dataset, stem)
    image = image.astype(np.float64)
    low, high = image.min(), image.max()
    image = (image - low) / (high - low) if high > low else np.zeros_like(image)
    return image, np.asarray(truth)


def prediction(run: Path, stem: str, epoch: int | None = None) -> np.ndarray:
    """A run's predicted classes of a slice: at its best epoch, or at `epoch`."""
    folder = run / "best_epoch" if epoch is None else run / f"iter{epoch:03d}"
    return np.asarray(Image.open(folder / "val" / f"{stem}.png"))


def pick_slices(runs: list[Path], patient: str, classes: list[int]) -> tuple[str, str]:
    """The slice with the largest ground truth of `classes`, and the one with the most errors."""
    stems = slices_of(runs[0], patient)
    dataset = dataset_of(runs[0])
    truths = {s: image_and_truth(dataset, s)[1] for s in stems}
    largest = max(stems, key=lambda s: (np.isin(truths[s], classes).sum(), s))
    errors = {s: sum(int((prediction(r, s) != truths[s]).sum()) for r in runs) for s in stems}
    return largest, max(stems, key=lambda s: (errors[s], s))


def crop_box(masks: list[np.ndarray], context: float = CONTEXT) -> tuple[slice, slice]:
    """The square box around everything the masks hold (`H W` each), with a margin of `context`
    times its extent (at least MIN_MARGIN pixels), moved inside the image; the whole image when
    the masks are empty or the box would not fit."""
    shape = masks[0].shape
    union = np.logical_or.reduce(masks)
    if not union.any():
        return slice(0, shape[0]), slice(0, shape[1])
    found = [np.flatnonzero(union.any(axis=1 - a)) for a in (0, 1)]
    extent = max(int(f[-1] - f[0]) + 1 for f in found)
    side = extent + 2 * max(MIN_MARGIN, int(np.ceil(context * extent)))
    box = []
    for f, size in zip(found, shape, strict=True):
        if side >= size:
            box.append(slice(0, size))
            continue
        start = (int(f[0]) + int(f[-1]) + 1 - side) // 2
        start = min(max(start, 0), size - side)
        box.append(slice(start, start + side))
    return box[0], box[1]


def legend_handles() -> list[Line2D]:
    return [
        Line2D([], [], color=np.array(TRUTH_COLOUR) / 255, linestyle="solid", label="ground truth"),
        Line2D(
            [], [], color=np.array(PREDICTION_COLOUR) / 255, linestyle="dashed", label="prediction"
        ),
    ]


def contour_picture(runs: list[Path], patient: str, classes: list[int], dest: Path) -> Path:
    """Two slices of a patient (rows) for every run (columns), each cropped around the structure:
    the ground truth's contours solid orange, the run's prediction dashed blue."""
    dataset = dataset_of(runs[0])
    largest, worst = pick_slices(runs, patient, classes)
    figure, axes = plt.subplots(
        2, len(runs), figsize=(PANEL_INCHES * len(runs), 2 * PANEL_INCHES), squeeze=False, dpi=DPI
    )
    truth_colour, prediction_colour = (
        np.array(TRUTH_COLOUR) / 255,
        np.array(PREDICTION_COLOUR) / 255,
    )
    for row, (stem, what) in enumerate(((largest, "largest lesion"), (worst, "most errors"))):
        image, truth = image_and_truth(dataset, stem)
        preds = {run: prediction(run, stem) for run in runs}
        box = crop_box([np.isin(m, classes) for m in (truth, *preds.values())])
        for col, run in enumerate(runs):
            ax = axes[row, col]
            ax.imshow(image[box], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            for k in classes:
                for mask, colour, style in (
                    (truth[box] == k, truth_colour, "solid"),
                    (preds[run][box] == k, prediction_colour, "dashed"),
                ):
                    if mask.any() and not mask.all():
                        ax.contour(
                            mask, levels=[0.5], colors=[colour], linestyles=style, linewidths=1.5
                        )
            rows, cols = box
            where = f"rows {rows.start}-{rows.stop - 1}, columns {cols.start}-{cols.stop - 1}"
            ax.set_title(f"{run.name}\n{stem} ({what})\n{where}", fontsize=8)
            ax.axis("off")
    figure.legend(handles=legend_handles(), loc="upper right", fontsize=8, framealpha=0.9)
    figure.subplots_adjust(left=0.01, right=0.99, top=0.88, bottom=0.01, wspace=0.02, hspace=0.2)
    figure.savefig(dest, dpi=DPI)
    plt.close(figure)
    return dest


def epochs_of(run: Path) -> int:
    return len([p for p in run.glob("iter[0-9][0-9][0-9]") if p.is_dir()])


def frame(
    image: np.ndarray, pred: np.ndarray, truth: np.ndarray, epoch: int, epochs: int
) -> Image.Image:
    """One GIF frame: the image with the prediction tinted blue, the ground truth's border in
    orange, the epoch's number written at the top, and a bar at the bottom filled to the share of
    epochs done (so that no two epochs give the same frame); scaled to about GIF_WIDTH pixels."""
    rgb = np.repeat((image * 255)[..., None], 3, axis=-1)
    tinted = pred > 0
    rgb[tinted] = 0.5 * rgb[tinted] + 0.5 * np.array(PREDICTION_COLOUR)
    mask = truth > 0
    rgb[mask & ~binary_erosion(mask)] = TRUTH_COLOUR
    bar = np.zeros((4, rgb.shape[1], 3))
    bar[:, : max(1, round((epoch + 1) / epochs * rgb.shape[1]))] = (255, 255, 255)
    out = np.concatenate([rgb, bar]).clip(0, 255).astype(np.uint8)
    scale = max(1, round(GIF_WIDTH / out.shape[1]))
    picture = Image.fromarray(out).resize(
        (out.shape[1] * scale, out.shape[0] * scale), Image.NEAREST
    )
    ImageDraw.Draw(picture).text((3, 2), f"epoch {epoch}", fill=(255, 255, 255))
    return picture


def epoch_gif(run: Path, stem: str, dest: Path) -> Path:
    """The prediction of one slice at every epoch, one frame each, cropped around the ground
    truth and the predictions."""
    image, truth = image_and_truth(dataset_of(run), stem)
    n = epochs_of(run)
    preds = [prediction(run, stem, e) for e in range(n)]
    box = crop_box([truth > 0, *(p > 0 for p in preds)])
    frames = [frame(image[box], p[box], truth[box], e, n) for e, p in enumerate(preds)]
    frames[0].save(dest, save_all=True, append_images=frames[1:], duration=GIF_MS, loop=0)
    return dest


def make_pictures(runs: list[Path], dest: Path, classes: list[int]) -> dict:
    """Write the pictures and GIFs into `dest` (built in `dest`_tmp); returns pictures.json.

    Raises:
        FolderError: `dest` is not pictures.py's to replace, or another process is writing it.
        ValueError, OSError: a run lacks what the pictures need.
    """
    check_replaceable(dest, TOOL, "--dest", LEGACY)  # before any work
    diverged = [run for run in runs if divergence(run).diverged]
    runs = [run for run in runs if run not in diverged]  # nothing of theirs to show
    names = patient_names(runs[0]) if runs else []
    for run in runs[1:]:  # every run's predictions are there, of the same patients
        if patient_names(run) != names:
            raise ValueError(f"{run}: other validation patients than {runs[0]}")
    chosen = {run.name: choose(names, at_checkpoint(run, "val_3d_dsc", classes)) for run in runs}
    with staged_folder(dest, TOOL, "--dest", LEGACY) as tmp:
        record: dict = {"chosen": chosen, "pictures": [], "gifs": []}
        record["diverged"] = [run.name for run in diverged]
        for patient in dict.fromkeys(p for c in chosen.values() for p in c.values()):
            roles = [
                f"{role} of {run}"
                for run, c in chosen.items()
                for role, p in c.items()
                if p == patient
            ]
            path = contour_picture(runs, patient, classes, tmp / f"patient_{patient}.png")
            record["pictures"].append({"file": path.name, "patient": patient, "roles": roles})
        for role, patient in (chosen[runs[0].name] if runs else {}).items():
            largest, _ = pick_slices(runs, patient, classes)
            for run in runs:
                path = epoch_gif(run, largest, tmp / f"{run.name}_{patient}.gif")
                record["gifs"].append(
                    {
                        "file": path.name,
                        "run": run.name,
                        "patient": patient,
                        "slice": largest,
                        "role": f"{role} of {runs[0].name}",
                        "epochs": epochs_of(run),
                    }
                )
        (tmp / "pictures.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def main(argv: list[str] | None = None) -> int:
    """Command-line entry; 0, or 1 with one `error:` line."""
    parser: argparse.ArgumentParser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folders", nargs="+", required=True, type=Path, help="run folders")
    parser.add_argument("--dest", required=True, type=Path, help="folder for the pictures")
    parser.add_argument("--classes", nargs="+", type=int, default=[1], help="classes shown")
    args = parser.parse_args(argv)
    try:
        record = make_pictures(args.folders, args.dest, args.classes)
    except FileNotFoundError as error:
        where = error.filename or ""
        print(f"error: {where}{': ' if where else ''}{error.strerror or error}", file=sys.stderr)
        return 1
    except (FolderError, OSError, ValueError, KeyError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for name in record["diverged"]:
        print(
            f"warning: run {name} diverged (all its 3D metrics are NaN): not drawn", file=sys.stderr
        )
    print(f"wrote {len(record['pictures'])} pictures and {len(record['gifs'])} GIFs in {args.dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
