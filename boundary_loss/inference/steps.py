"""The steps every prediction command shares: the network of a run's best.pt, its softmax
probabilities (2D: slice by slice; 3D: by sliding windows), the way back to a scan's own grid,
and the written folder of NIfTI label files with its records.

The predictions of a dataset's own cases (boundary_loss.inference.predict for 2D runs,
boundary_loss.inference.predict3d for 3D runs) and those of new scans
(boundary_loss.inference.predict_new) are built from these.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from boundary_loss.io.atomic import DISK_FULL, FolderError, disk_full_message, staged_folder
from boundary_loss.metrics import hd_hd95
from boundary_loss.networks.registry import get_network
from boundary_loss.preprocessing.nnunet_format import Case
from boundary_loss.preprocessing.resample import resample_probabilities
from boundary_loss.preprocessing.volumes import (
    SliceError,
    load_nifti,
    read_header,
    resize_labels,
    slice_order,
)
from boundary_loss.training.checkpoint import (
    CheckpointError,
    fit_state,
    model_state,
    read_checkpoint,
)
from boundary_loss.training.config import parse_literal
from boundary_loss.training.validate3d import predict_case


class PredictError(Exception):
    """The run, the sliced data or the source cannot give predictions; the message says why."""


METRICS_COLUMNS = ["case", "class", "value", "dice", "hd", "hd95"]  # of metrics.csv
# The default --batch_size of every prediction command, by dimensions: slices (2D), windows (3D)
# per forward pass.
BATCH_SIZES = {2: 32, 3: 2}
DEFAULT_BATCH_SIZES = f"default {BATCH_SIZES[2]} in 2D, {BATCH_SIZES[3]} in 3D"  # for --help


def batch_size_flag(text: str) -> int:
    """The type of every prediction command's --batch_size: a whole number of at least 1 (0 is
    refused, not taken for the default: leaving the flag out gives the default).

    Raises:
        argparse.ArgumentTypeError: argparse's one `error:` line, exit status 2.
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"{value}: expected at least 1 (leave the flag out for the default)"
        )
    return value


def device_of(args: argparse.Namespace) -> torch.device:
    """CUDA when present, unless --cpu."""
    return torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")


def run_command(predict: Callable[[], Path], what: str) -> int:
    """Run a prediction command (`predict`: its call on the parsed flags, returning the folder
    written): 0 after one line `<what> written to <folder>`, or 1 with one `error:` line on
    anything a user can cause (ValueError: a network's input checks)."""
    try:
        dest = predict()
    except (PredictError, SliceError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{what} written to {dest}")
    return 0


def to_source_grid(
    classes: np.ndarray, source_shape: Sequence[int], axis: int, values: Sequence[int]
) -> np.ndarray:
    """Class indices of the slices (`H W Z`, Z along the sliced axis) -> label values on the
    source grid.

    Args:
        classes: `H W Z` class indices, as the slicer's gt_npy slices stacked in order.
        source_shape: the source volume's shape (X, Y, Z).
        axis: the source axis that was sliced.
        values: the label value of each class index (dataset.json's labels, by value).

    Returns:
        The source-shaped label volume (uint8: label values are at most 255). Exact for the
        slicer's own labels when the slice shape is at least the source's in-plane size.
    """
    order = slice_order(axis)
    in_plane = tuple(int(source_shape[a]) for a in order[:2])
    if classes.shape[2] != source_shape[order[2]]:
        raise PredictError(
            f"{classes.shape[2]} slices for a source of {source_shape[order[2]]} along axis {axis}"
        )
    resized = resize_labels(classes.astype(np.uint8), in_plane)
    volume = np.transpose(resized, np.argsort(order))
    return np.asarray(values, dtype=np.uint8)[volume]


def write_labels(volume: np.ndarray, reference: Path, dest: Path) -> Path:
    """Write a label volume with the affine and header of its source image.

    Args:
        volume: `X Y Z` label values on the source grid.
        reference: the source image (its first channel file, or the Decathlon's 4D file).
        dest: the NIfTI file to write (`.nii.gz` or `.nii`).
    """
    image = nib.load(str(reference))
    spacing = read_header(reference, None if image.ndim == 3 else image.shape[3])[1]
    header = image.header.copy()
    header.set_data_dtype(volume.dtype)
    header.set_slope_inter(1.0, 0.0)
    header.set_intent("none")  # a Decathlon 4D image may say "vector"
    header["cal_min"], header["cal_max"] = 0, int(volume.max())  # not the image's window
    out = nib.Nifti1Image(volume, image.affine, header)
    out.set_qform(image.get_qform(), code=int(image.header["qform_code"]))
    out.set_sform(image.get_sform(), code=int(image.header["sform_code"]))
    out.header.set_xyzt_units(*image.header.get_xyzt_units())
    out.header.set_zooms(spacing)  # the source's spacing, also where its pixdim was left unset
    nib.save(out, str(dest))
    return dest


def source_shape(case: Case) -> tuple[int, int, int]:
    """The 3D shape of a case's images, from the header of its first file."""
    shape = nib.load(str(case.images[0])).shape
    return tuple(int(s) for s in shape[:3])


def load_network(
    run: Path, device: torch.device, dimensions: int = 2, plan: dict | None = None
) -> tuple[torch.nn.Module, dict]:
    """The network of `run/best.pt`, rebuilt from the arguments recorded in it (a PlainUNet3D
    from its plan's pools and kernels too).

    Raises:
        PredictError: no best.pt, one that does not rebuild, or a network of other dimensions
            than this command's.
    """
    path = run / "best.pt"
    if not path.is_file():
        raise PredictError(f"{path}: file not found (expected the best weights of a training)")
    try:
        best = read_checkpoint(path, "--run")
        state = model_state(best, path, "--run")
        params = parse_literal(best["args"].get("net_params", "{}"), "net_params")
        if plan is not None and best["network"] == "PlainUNet3D":
            params = dict(plan["network"]) | params
        net = get_network(best["network"], best["n_in"], best["n_class"], **params)
        fit_state(net, state, path, "--run")
    except (CheckpointError, KeyError, TypeError, ValueError) as error:
        raise PredictError(f"{path}: cannot rebuild the network ({error})") from None
    found = getattr(net, "dimensions", 2)
    if found != dimensions:
        other = "boundary_loss.inference.predict" + ("3d" if found == 3 else "")
        raise PredictError(f"{path}: a {found}D network; predict a {found}D training with {other}")
    return net.to(device).eval(), best


def slice_logits(
    net: torch.nn.Module, images: np.ndarray, device: torch.device, batch_size: int
) -> Iterator[torch.Tensor]:
    """The network's logits (`B K H W`, on `device`, float32) of a prepared `C H W Z` volume,
    batch by batch of `batch_size` slices, in slice order (call under `torch.no_grad`)."""
    slices = torch.from_numpy(np.ascontiguousarray(images.transpose(3, 0, 1, 2)))  # Z C H W
    for start in range(0, len(slices), batch_size):
        yield net(slices[start : start + batch_size].to(device)).float()


@torch.no_grad()
def predict_probabilities(
    net: torch.nn.Module, images: np.ndarray, device: torch.device, batch_size: int
) -> torch.Tensor:
    """Softmax probabilities `Z K H W` (on `device`) of a prepared `C H W Z` volume, slice by
    slice; nothing is brought back to the host."""
    logits = slice_logits(net, images, device, batch_size)
    return torch.cat([torch.softmax(batch, dim=1) for batch in logits])


@torch.no_grad()
def predict_volume(
    net: torch.nn.Module, images: np.ndarray, device: torch.device, batch_size: int
) -> np.ndarray:
    """Class indices `H W Z` (on the host, uint8) of a prepared `C H W Z` volume, slice by
    slice: the argmax of each batch's logits (no softmax: the same classes)."""
    classes = [logits.argmax(dim=1) for logits in slice_logits(net, images, device, batch_size)]
    # One copy to the host per case, not one per batch.
    return torch.cat(classes).cpu().numpy().transpose(1, 2, 0).astype(np.uint8)  # H W Z


def run_patch(best: dict, plan: dict) -> tuple[int, ...]:
    """The sliding window of a run: its training patch (best.pt's `patch_size`, else the
    plan's)."""
    return tuple(best["args"].get("patch_size") or plan["patch_size"])


def case_probabilities(
    net: torch.nn.Module,
    image: np.ndarray,
    device: torch.device,
    patch: Sequence[int],
    batch_size: int,
    mirror: bool = False,
) -> torch.Tensor:
    """Softmax probabilities `K X Y Z` (on `device`) of a case prepared at the plan's target
    spacing (`prepare_images`), by sliding windows of `patch` (`validate3d.predict_case`);
    `mirror`: test-time mirroring along the three axes."""
    mirror_axes = (0, 1, 2) if mirror else ()
    tensor = torch.from_numpy(image)[None].to(device)
    return predict_case(net, tensor, tuple(patch), batch_size, mirror_axes=mirror_axes)[0]


def labels_on_source_grid(
    probs: np.ndarray,
    shape: Sequence[int],
    target_spacing: Sequence[float],
    spacing: Sequence[float],
    values: Sequence[int],
) -> np.ndarray:
    """Label values on a case's own grid from its probabilities at the target spacing:
    resampled back per class (linear, nnU-Net's separate z), argmax there, then dataset.json's
    label value of each class.

    Args:
        probs: `K X Y Z` probabilities at `target_spacing`.
        shape: the case's own shape (X, Y, Z).
        target_spacing: the plan's target spacing (mm).
        spacing: the case's own spacing (mm).
        values: the label value of each class index.

    Returns:
        `X Y Z` uint8 label values.
    """
    back = resample_probabilities(
        probs, tuple(shape), spacing=target_spacing, target_spacing=spacing
    )
    return np.asarray(values, dtype=np.uint8)[back.argmax(axis=0)]


def case_metrics(prediction: Path, label: Path, labels: dict[str, int]) -> list[dict]:
    """3D Dice, HD and HD95 (mm, at the label file's spacing) per class of one written
    prediction against its label file."""
    truth, spacing, _ = load_nifti(label)
    pred = load_nifti(prediction)[0]
    rows = []
    for name, value in labels.items():
        p, t = pred == value, truth == value
        dice = (2 * float((p & t).sum()) + 1e-8) / (float(p.sum() + t.sum()) + 1e-8)
        hd, hd95 = hd_hd95(p, t, voxelspacing=spacing)
        rows.append({"class": name, "value": value, "dice": dice, "hd": hd, "hd95": hd95})
    return rows


def write_cases(
    dest: Path,
    cases: dict[str, Case],
    labels_of: Callable[[str, Case], np.ndarray],
    label_values: dict[str, int],
    record: dict,
    *,
    tool: str,
    flag: str,
    legacy: Sequence[str] = (),
    metrics: bool = True,
    timings: dict[str, float] | None = None,
) -> Path:
    """Write the predictions folder: each case's labels (`labels_of`: label values on the
    source grid) as NIfTI in its image's geometry, the metrics of the labelled ones
    (metrics.csv) and `record` with the files (predictions.json), staged and moved into `dest`.

    Args:
        dest: the output folder.
        cases: the cases, by id, in the order written.
        labels_of: a case's label volume on its source grid.
        label_values: dataset.json's labels (name -> value), for the metrics.
        record: what predictions.json holds besides the files.
        tool: the name in the folder's marker: only an earlier output of `tool` is replaced.
        flag: how the user named `dest`, for messages.
        legacy: the record files of `tool`'s outputs made before the marker existed.
        metrics: write metrics.csv (False: cases without labels, no metrics.csv at all).
        timings: seconds added under "write" (the NIfTI files and the records), when given.

    Raises:
        PredictError: `dest` is not replaceable, or a file cannot be read or written.
    """
    writing = 0.0
    try:
        with staged_folder(dest, tool, flag, legacy) as tmp:
            rows, files = [], {}
            for cid, case in cases.items():
                labels = labels_of(cid, case)
                start = time.perf_counter()
                ending = ".nii.gz" if str(case.images[0]).endswith(".gz") else ".nii"
                path = write_labels(labels, case.images[0], tmp / f"{cid}{ending}")
                files[cid] = path.name
                if metrics and case.label is not None:
                    for row in case_metrics(path, case.label, label_values):
                        rows.append({"case": cid, **row})
                writing += time.perf_counter() - start
            start = time.perf_counter()
            if metrics:
                with open(tmp / "metrics.csv", "w", newline="") as handle:
                    writer = csv.DictWriter(handle, METRICS_COLUMNS)
                    writer.writeheader()
                    writer.writerows(rows)
            text = json.dumps(record | {"files": files}, indent=1)
            (tmp / "predictions.json").write_text(text + "\n")
            writing += time.perf_counter() - start
    except FolderError as error:
        raise PredictError(str(error)) from None
    except OSError as error:
        if error.errno in DISK_FULL:
            raise PredictError(disk_full_message(error, dest.parent)) from None
        where = error.filename or dest
        raise PredictError(f"{where}: cannot be read or written ({error.strerror})") from None
    if timings is not None:
        timings["write"] = timings.get("write", 0.0) + writing
    return dest


def check_counts(run: Path, best: dict, channels: int, classes: int, data: Path) -> None:
    """Refuse a network (`best`: run/best.pt's record) for other channel or class counts than
    those of `data` (its prepared data or its plan).

    Raises:
        PredictError: naming both counts.
    """
    if (best["n_in"], best["n_class"]) != (channels, classes):
        raise PredictError(
            f"{run / 'best.pt'}: a network for {best['n_in']} channels and {best['n_class']} "
            f"classes, but {data} has {channels} channels and {classes} classes"
        )
