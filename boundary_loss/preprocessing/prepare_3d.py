"""Preprocess an nnU-Net v2 or Decathlon dataset into whole 3D volumes for the 3D chain.

Usage: python preprocess/prepare_3d.py --source_dir DATASET --dest_dir DEST [--retain 0]
       [--seed 0] [--fold 0] [--patch X Y Z] [--max_patch_voxels 2097152] [--batch_size 2]
       (`--n_augment 0`, which the makefiles pass to every slicer, is accepted)

The source is read, checked and split as the 2D slicer (`slice_nnunet`) does for the same
arguments (fold `--fold` of splits_final.json, else fold `--fold`, 0 .. 4, of the five seeded
folds: fold 0 the seeded shuffle keeping `--retain` cases, by default a fifth, for validation,
folds 1 .. 4 the rest of that shuffle in four near-equal parts); then, as nnU-Net's 3d_fullres
(Isensee et al., 2021):

- the target spacing is the per-axis median spacing of the labelled cases;
- each channel is normalised on its source grid by the scheme its name chooses (`CT`: clipped to
  the 0.5 and 99.5 percentiles of the training split's foreground and z-scored with its mean and
  standard deviation; other names: z-scored per case, or nnU-Net's noNorm, rescale_to_0_1,
  rgb_to_0_1), then resampled (`resample.resample_image`: cubic, nnU-Net's separate z);
- the labels become class indices (the position of their value among dataset.json's labels),
  resampled by `resample.resample_labels` (one-hot, linear, argmax, no class lost);
- the signed distance maps are computed once per case on the whole resampled volume at the
  target spacing (`maps.distance.one_hot2dist`);
- the patch, poolings and kernels are planned (`plan3d.plan_network`) from the target spacing and
  the median resampled shape, or for `--patch`.

`DEST` (plan.json, split.json, spacing_3d.json, cases.json; per split `in_npy/`, `gt_npy/`,
`3d_distmap/`, one `<case>.npy` each) is built aside and put in place when complete
(`io.atomic.staged_folder`), replacing only an earlier output of this tool. Test images are
checked, not preprocessed: the predictions read them from the source (`prepare_images`). Bad
input raises `SliceError` naming the file: `error: <message>`, exit status 1.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from boundary_loss.io.atomic import FolderError, check_replaceable, staged_folder
from boundary_loss.io.console import ArgumentParser
from boundary_loss.maps.distance import one_hot2dist
from boundary_loss.maps.onehot import class2one_hot
from boundary_loss.preprocessing import plan3d, resample, slice_nnunet, volumes
from boundary_loss.preprocessing.nnunet_format import Case, DatasetDescription, read_dataset
from boundary_loss.preprocessing.slices import write_bytes
from boundary_loss.preprocessing.slicing import SEEDED_FOLDS
from boundary_loss.preprocessing.volumes import SliceError

# The name in the marker of a preprocessed folder: only a folder so marked is replaced.
TOOL = "prepare_3d.py"
SPLITS = ("train", "val")
FOLDERS = ("in_npy", "gt_npy", "3d_distmap")
OVERSAMPLE_FOREGROUND = 0.33  # nnU-Net's oversample_foreground_percent


def _check_arguments(patch: Sequence[int] | None, max_patch_voxels: int, batch_size: int) -> None:
    """Refuse a patch, voxel budget or batch size that cannot be used (SliceError)."""
    if patch is not None and (len(patch) != 3 or min(patch) < 1):
        raise SliceError(f"--patch {list(patch)}: expected three positive sizes, e.g. 64 16 48")
    if max_patch_voxels < 1:
        raise SliceError(f"--max_patch_voxels {max_patch_voxels}: expected a positive count")
    if batch_size < 1:
        raise SliceError(f"--batch_size {batch_size}: expected at least 1")


def _check_paths(source: Path, dest: Path) -> None:
    """Refuse a destination (or its _tmp) that holds, or lies inside, the source (SliceError)."""
    source = source.resolve()
    for target in (dest.resolve(), dest.resolve().with_name(dest.resolve().name + "_tmp")):
        if target == source or target in source.parents or source in target.parents:
            raise SliceError(
                f"--dest_dir {dest} overlaps --source_dir {source} (through {target}); "
                "expected separate folders, since the destination is replaced"
            )


def prepare_images(
    raw: Sequence[np.ndarray], spacing: Sequence[float], paths: Sequence[Path], plan: dict
) -> np.ndarray:
    """Normalise a case's channels as the plan says, then resample them to its target spacing:
    what is done to every training case, for the predictions to do it to theirs.

    Args:
        raw: the `X Y Z` channels as read (`volumes.load_images`), on one grid.
        spacing: their voxel size (mm).
        paths: the file of each channel, named in messages.
        plan: the checked plan (plan.json).

    Returns:
        `C X Y Z` float32 at the target spacing (`resample.target_shape`).

    Raises:
        SliceError: NaN or infinite voxels, or a constant channel for a min-max scheme.
    """
    norms = plan3d.plan_norms(plan)
    images = np.stack(
        [volumes.normalise_channel(*item) for item in zip(raw, paths, norms, strict=True)]
    )
    target = plan["target_spacing"]
    shape = resample.target_shape(images.shape[1:], spacing, target)
    return resample.resample_image(images, shape, spacing=spacing, target_spacing=target)


def load_case(
    case: Case, n_channels: int, values: Sequence[int]
) -> tuple[list[np.ndarray], np.ndarray, tuple[float, ...], np.ndarray, list[Path]]:
    """Load and check one labelled case on its source grid.

    Args:
        case: the case's image files and label file.
        n_channels: its channels.
        values: the label values of dataset.json, in class order.

    Returns:
        The `X Y Z` channels as read, the labels `X Y Z` uint8 class indices, the spacing (mm),
        the 4 x 4 affine, and the file of each channel.

    Raises:
        SliceError: an unreadable file, channels or label on other grids, label values not in
            dataset.json.
    """
    volume = volumes.Volume(case.cid, case.images, case.label, case.four_d)
    raw, spacing, affine, paths = volumes.load_images(volume, n_channels)
    data, label_spacing, label_affine = volumes.load_nifti(case.label)
    if data.shape != raw[0].shape:
        raise SliceError(
            f"{case.label}: label shape {data.shape} differs from {paths[0]} "
            f"{raw[0].shape}; expected the label on the image grid"
        )
    volumes.check_same_grid(case.label, label_spacing, label_affine, paths[0], spacing, affine)
    label_map = [(v, i) for i, v in enumerate(values) if v != i]
    return raw, volumes.to_classes(data, case.label, values, label_map), spacing, affine, paths


def _npy(path: Path, array: np.ndarray) -> None:
    """Write an .npy file (a full disk: SliceError naming it)."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    write_bytes(path, buffer.getvalue())


def _write_json(path: Path, data: dict, natural_order: bool = False) -> None:
    """Write a JSON object as the 2D slicer writes split.json: one key per line, compact values;
    the keys in `natural_order` (`volumes.natural_key`) or as given."""
    keys = sorted(data, key=volumes.natural_key) if natural_order else list(data)
    lines = ",\n".join(f" {json.dumps(k)}: {json.dumps(data[k])}" for k in keys)
    write_bytes(path, ("{\n" + lines + "\n}\n").encode())


def plan_dataset(
    description: DatasetDescription,
    train: Sequence[str],
    patch: Sequence[int] | None,
    max_patch_voxels: int,
    batch_size: int,
) -> tuple[dict, dict[str, tuple[int, ...]]]:
    """The plan of a dataset (plan.json) and the target shape of each labelled case.

    Every header is checked first (`slice_nnunet.check_headers`), then the CT statistics are
    taken over the `train` cases and the test images checked with the normalisations.

    Raises:
        SliceError: a bad header, test image or CT channel; a `patch` that does not fit.
    """
    spacings = slice_nnunet.check_headers(description)
    n_channels = len(description.channels)
    target = resample.median_spacing(spacings)
    shapes = {}
    for case, spacing in zip(description.training, spacings, strict=True):
        shape = volumes.read_header(case.images[0], n_channels if case.four_d else None)[0][-3:]
        shapes[case.cid] = resample.target_shape(shape, spacing, target)
    median = [max(1, int(n)) for n in np.round(np.median(list(shapes.values()), axis=0))]
    by_id = {case.cid: case for case in description.training}
    found = [volumes.Volume(c, by_id[c].images, by_id[c].label, by_id[c].four_d) for c in train]
    norms = [
        slice_nnunet.ct_statistics(found, channel, n_channels) if scheme == "ct" else (scheme,)
        for channel, scheme in enumerate(description.schemes)
    ]
    slice_nnunet.check_test_images(description, tuple(norms))
    if patch is None:
        network = plan3d.plan_network(target, median, max_patch_voxels)
    else:
        try:
            network = plan3d.plan_patch(target, patch)
        except ValueError as error:
            raise SliceError(f"--patch {' '.join(map(str, patch))}: {error}") from None
    plan = {
        "dimensions": 3,
        "name": description.name,
        "dataset": str(description.root.resolve()),
        "layout": description.layout,
        "channels": list(description.channels),
        "labels": [[name, value] for name, value in description.labels],
        "n_class": len(description.labels),
        "target_spacing": list(target),
        "median_shape": median,
        "normalisation": [
            plan3d.norm_entry(*pair) for pair in zip(description.channels, norms, strict=True)
        ],
        "patch_size": network["patch_size"],
        "batch_size": batch_size,
        "network": {"pools": network["pools"], "kernels": network["kernels"]},
        "slice_axis": slice_nnunet.choose_axis(spacings),
        "oversample_foreground": OVERSAMPLE_FOREGROUND,
        "resampling": dict(resample.RULES),
        "test": [case.cid for case in description.test],
    }
    return plan, shapes


def prepare_3d(
    source_dir: str | Path,
    dest_dir: str | Path,
    *,
    retain: int = 0,
    seed: int = 0,
    fold: int = 0,
    patch: Sequence[int] | None = None,
    max_patch_voxels: int = plan3d.MAX_PATCH_VOXELS,
    batch_size: int = 2,
    progress: bool = True,
) -> Path:
    """Preprocess a dataset folder into `dest_dir` (see the module docstring).

    Args:
        source_dir: the nnU-Net v2 or Decathlon dataset folder (holding dataset.json).
        dest_dir: the output folder: a new name, an empty folder, or an earlier output of this
            tool, replaced once the new one is complete.
        retain: validation cases of the seeded split (0: a fifth of the labelled cases).
        seed: seed of that split.
        fold: the fold of splits_final.json, when the dataset has one; else of the five seeded
            folds (0 .. 4; fold 0 is the seeded split, `slice_nnunet.split_cases`).
        patch: the network's patch (X Y Z voxels at the target spacing); None: planned.
        max_patch_voxels: the most voxels of a planned patch.
        batch_size: the training's patches per batch, recorded in plan.json.
        progress: show a progress bar.

    Returns:
        The destination folder.

    Raises:
        SliceError: bad arguments or input, a destination this tool may not replace, a full
            disk; `dest_dir` is then left as it was.
    """
    source, dest = Path(source_dir), Path(dest_dir)
    if dest.name in ("", ".", ".."):
        dest = dest.resolve()
    patch = None if patch is None else [int(n) for n in patch]
    _check_arguments(patch, max_patch_voxels, batch_size)
    _check_paths(source, dest)
    try:
        check_replaceable(dest, TOOL, "--dest_dir")
        description = read_dataset(source)
        ids = [case.cid for case in description.training]
        retain = retain or slice_nnunet.default_retain(len(ids))
        train, val, entries = slice_nnunet.split_cases(description, fold, ids, retain, seed)
        plan, shapes = plan_dataset(description, train, patch, max_patch_voxels, batch_size)
        with staged_folder(dest, TOOL, "--dest_dir") as build:
            splits = {"train": train, "val": val}
            cases = _write_cases(build, description, plan, shapes, splits, progress)
            split = {"dataset": description.name, "seed": seed, "retain": len(val)}
            _write_json(
                build / "split.json", {**split, "train": train, "val": val, **entries}, True
            )
            spacing = {
                cid: plan["target_spacing"] for cid in sorted(cases, key=volumes.natural_key)
            }
            _write_json(build / "spacing_3d.json", spacing, True)
            _write_json(build / "cases.json", cases, True)
            _write_json(build / "plan.json", plan)
    except FolderError as error:
        raise SliceError(str(error)) from None
    return dest


def _write_cases(
    build: Path,
    description: DatasetDescription,
    plan: dict,
    shapes: dict[str, tuple[int, ...]],
    splits: dict[str, list[str]],
    progress: bool,
) -> dict[str, dict]:
    """Resample every train/val case and write its arrays; returns cases.json's entries."""
    values = [value for _, value in description.labels]
    k, target = plan["n_class"], plan["target_spacing"]
    by_id = {case.cid: case for case in description.training}
    for split in SPLITS:
        for folder in FOLDERS:
            (build / split / folder).mkdir(parents=True)
    jobs = [(split, cid) for split in SPLITS for cid in splits[split]]
    cases = {}
    for split, cid in tqdm(jobs, desc=f"preparing {description.name}", disable=not progress):
        raw, labels, spacing, affine, paths = load_case(by_id[cid], len(plan["channels"]), values)
        cases[cid] = {
            "split": split,
            "images": [str(p.resolve()) for p in dict.fromkeys(paths)],
            "label": str(by_id[cid].label.resolve()),
            "shape": list(labels.shape),
            "affine": np.asarray(affine, dtype=np.float64).tolist(),
            "spacing": [float(s) for s in spacing],
            "target_shape": list(shapes[cid]),
        }
        images = prepare_images(raw, spacing, paths, plan)
        labels = resample.resample_labels(
            labels, shapes[cid], k, spacing=spacing, target_spacing=target
        )
        one_hot = class2one_hot(torch.from_numpy(labels[None]), k)[0]  # K X Y Z
        maps = one_hot2dist(one_hot, resolution=target, dtype=np.float32)  # K X Y Z
        for folder, array in zip(FOLDERS, (images, labels, maps), strict=True):
            _npy(build / split / folder / f"{cid}.npy", array)
    return cases


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry; returns the exit status (0, 1 on bad input, 130 on Ctrl-C)."""
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--source_dir", required=True, help="the dataset folder (holding dataset.json)")
    add("--dest_dir", required=True, help="output folder (an earlier output is replaced)")
    add("--retain", type=int, default=0, help="validation cases (default 0: a fifth of them)")
    add("--seed", type=int, default=0, help="seed of the split")
    add(
        "--fold",
        type=int,
        default=0,
        help=f"fold of splits_final.json, else of the {SEEDED_FOLDS} seeded folds: "
        f"0 .. {SEEDED_FOLDS - 1} (default 0)",
    )
    add("--patch", type=int, nargs="+", metavar="N", help="patch X Y Z (default: planned)")
    add(
        "--max_patch_voxels",
        type=int,
        default=plan3d.MAX_PATCH_VOXELS,
        help="voxel budget of a patch",
    )
    add("--batch_size", type=int, default=2, help="patches per batch (default 2)")
    add("--n_augment", type=int, default=0, choices=[0], help="0: augmented on the device")
    args = parser.parse_args(argv)
    try:
        dest = prepare_3d(
            args.source_dir,
            args.dest_dir,
            retain=args.retain,
            seed=args.seed,
            fold=args.fold,
            patch=args.patch,
            max_patch_voxels=args.max_patch_voxels,
            batch_size=args.batch_size,
        )
    except SliceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted: nothing written at {args.dest_dir}", file=sys.stderr)
        return 130
    print(f"prepared {dest.name} for the 3D chain in {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
