"""Slice an nnU-Net v2 or Medical Segmentation Decathlon dataset into 2D training data.

Usage: python preprocess/slice_nnunet.py --source_dir DATASET --dest_dir DIR [--fold 0]
       [--retain N] [--seed 0] [--axis auto|0|1|2] [--shape 256 256] [--n_augment 0]
       [--workers N]

The source is a dataset folder holding `dataset.json` in either layout (preprocess/nnunet_format.py
says which forms are read). Its labelled cases are split into training and validation: by fold
`--fold` of its `splits_final.json` when it has one, else by fold `--fold` (0 .. 4) of five seeded
folds cut from the seeded shuffle of the other slicers: fold 0 validates its first `--retain` cases
(by default a fifth of them; the other slicers' split), folds 1 .. 4 the rest, in four parts whose
sizes differ by at most one (`slicing.seeded_folds`). Then, as nnU-Net's 2D configuration does
(Isensee et al., Nature Methods 2021):

- the slices are taken along the axis of coarsest spacing: the largest median voxel size of the
  training cases (`--axis auto`; a tie goes to the last of the tied axes, so an isotropic dataset
  is sliced along its last axis as the other slicers do); `--axis 0|1|2` forces one;
- each channel is normalised as nnU-Net chooses from its name (`CT`: clipped to the training
  set's foreground 0.5 and 99.5 percentiles and z-scored with its foreground mean and standard
  deviation, from every foreground voxel of a case or, above 10^8 / cases voxels, a seeded
  sample; `noNorm`, `rescale_to_0_1`, `rgb_to_0_1`; anything else: z-scored per volume);
- the in-plane axes keep their order; slices are resized to `--shape` (images linearly, labels by
  nearest neighbour, the in-plane spacing scaled), the 3D distance maps computed on the resized
  volume, and everything written as the other slicers write it (preprocess/slicing.py), one png
  folder per channel (its name in lower case), the labels as class indices: the position of
  their value among dataset.json's labels, sorted by value.

`source.json`, beside `split.json`, records what the predictions need to be written back in the
source geometry (boundary_loss_predict): the dataset folder, its layout, channels and their
normalisation, the labels, the axis sliced and the slice shape. Test images (`imagesTs`) are not
sliced: boundary_loss_predict reads them from the source. They are read once here all the same, and
checked as boundary_loss_predict will read them (one grid per case, finite voxels), so that a bad
test image stops the slicing rather than the predictions after every training. Before the axis is
chosen, the header of every image and label file is checked (three dimensions, three finite positive
voxel sizes).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from boundary_loss.preprocessing.nnunet_format import DatasetDescription, DatasetError, read_dataset
from boundary_loss.preprocessing.slices import OUTPUT_FOLDERS
from boundary_loss.preprocessing.slicing import (
    SEEDED_FOLDS,
    Dataset,
    run_cli,
    seeded_folds,
    split_patients,
)
from boundary_loss.preprocessing.volumes import (
    Geometry,
    Patients,
    SliceError,
    Spacing3D,
    Volume,
    check_finite,
    load_images,
    load_nifti,
    natural_key,
    normalise_channel,
    read_header,
)

# nnU-Net's budget of foreground voxels for the CT statistics, shared among the training cases.
CT_VOXELS = 10**8
CT_PERCENTILES = (0.5, 99.5)


def png_folders(channels: tuple[str, ...]) -> tuple[str, ...]:
    """One png folder name per channel: its name in lower case, letters, digits and `_` only;
    followed by its number when two would be equal or one is an output folder (`gt`)."""
    slugs = [re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "channel" for name in channels]
    return tuple(
        f"{slug}{c}" if slugs.count(slug) > 1 or slug in OUTPUT_FOLDERS else slug
        for c, slug in enumerate(slugs)
    )


def check_headers(description: DatasetDescription) -> list[Spacing3D]:
    """Read and check the header of every image and label file, training and test cases, before
    the axis is chosen: each one is a readable NIfTI of three dimensions (a Decathlon image: four,
    its last holding every channel) with three finite positive voxel sizes, read as every later
    step reads them (`volumes.read_header`, the header side of `load_nifti`).

    Returns:
        The voxel spacing of each training case's first image file, in case order.

    Raises:
        SliceError: naming the first file that fails, and what was expected.
    """
    n_channels = len(description.channels)
    spacings = []
    for case in (*description.training, *description.test):
        for number, path in enumerate(case.images):
            _, spacing = read_header(path, n_channels if case.four_d else None)
            if number == 0 and case.label is not None:
                spacings.append(spacing)
        if case.label is not None:
            read_header(case.label)
    return spacings


def choose_axis(spacings: list[Spacing3D]) -> int:
    """The axis of coarsest median spacing over the training cases (ties: the last of them)."""
    median = np.median(np.array(spacings, dtype=np.float64), axis=0)
    return int(np.flatnonzero(np.isclose(median, median.max(), rtol=1e-3))[-1])


def check_test_images(description: DatasetDescription, norms: tuple[tuple, ...]) -> None:
    """Read every test image (imagesTs, or the Decathlon's test list) once and check it as
    boundary_loss_predict will after the trainings, with the same functions: its channels on one
    grid (`load_images`) and each normalisable by its scheme (`normalise_channel`: finite voxels,
    and not constant for a min-max one).

    Raises:
        SliceError: naming the file and what was expected.
    """
    for case in description.test:
        volume = Volume(case.cid, case.images, None, case.four_d)
        images, _, _, paths = load_images(volume, len(norms))
        for image, path, norm in zip(images, paths, norms, strict=True):
            normalise_channel(image, path, norm)


def ct_statistics(volumes: list[Volume], channel: int, n_channels: int) -> tuple:
    """nnU-Net's CT normalisation of one channel from the foreground of the training volumes.

    Returns:
        ("ct", 0.5th percentile, 99.5th percentile, mean, standard deviation) of the voxels
        whose label is not background (0), over every training volume.

    Raises:
        SliceError: unreadable files, NaN / infinite voxels in the channel, or no foreground
            voxel in any training volume.
    """
    per_case = CT_VOXELS // max(len(volumes), 1)
    samples = []
    for number, volume in enumerate(volumes):
        images, _, _, paths = load_images(volume, n_channels)
        labels = load_nifti(volume.label)[0]
        if labels.shape != images[channel].shape:
            raise SliceError(
                f"{volume.label}: label shape {labels.shape} differs from {paths[channel]} "
                f"{images[channel].shape}; expected the label on the image grid"
            )
        check_finite(images[channel], paths[channel])  # names the file, not the folder
        voxels = np.asarray(images[channel][labels != 0], dtype=np.float64)
        if voxels.size > per_case:
            voxels = np.random.default_rng(number).choice(voxels, per_case, replace=False)
        samples.append(voxels)
    voxels = np.concatenate(samples)
    if not voxels.size:
        raise SliceError(
            f"{volumes[0].images[0].parent}: no foreground voxel in the training cases; "
            "the CT normalisation needs labelled foreground"
        )
    low, high = (float(v) for v in np.percentile(voxels, CT_PERCENTILES))
    return ("ct", low, high, float(voxels.mean()), float(voxels.std()))


def default_retain(n_cases: int) -> int:
    """The validation cases of the seeded split by default: a fifth of the labelled cases, at
    least one."""
    return max(1, round(n_cases / 5))


def split_cases(
    description: DatasetDescription, fold: int, cases: Iterable[str], retain: int, seed: int
) -> tuple[list[str], list[str], dict]:
    """The train/val split of a dataset's labelled cases, as every tool of the chain makes it.

    Args:
        description: the dataset (its splits_final.json folds, when it has them).
        fold: the fold of splits_final.json; without that file, one of the `SEEDED_FOLDS`
            seeded folds (`slicing.seeded_folds`): fold 0 is the seeded split of
            `slicing.split_patients` (`retain` cases), folds 1 .. 4 share the other cases.
        cases: the labelled case ids.
        retain: validation cases of the seeded split (fold 0).
        seed: seed of that split.

    Returns:
        (train ids, val ids), each in natural order, and the entries split.json adds
        ({"fold": fold} for a fold of splits_final.json, {"fold": fold, "folds": 5} for a
        seeded fold 1 .. 4, none for the seeded fold 0, which is the split of every slicer).

    Raises:
        DatasetError: a fold not in splits_final.json, or, without it, not in 0 .. 4, or 1 .. 4
            refused by `slicing.seeded_folds` (fewer cases than folds, or a `retain` leaving
            fewer than four cases to folds 1 .. 4), its message after the fold and dataset.
        SliceError: `retain` not in 1 .. cases - 1 (fold 0).
    """
    source = description.root
    if description.folds is None:
        if not 0 <= fold < SEEDED_FOLDS:
            raise DatasetError(
                f"--fold {fold}: {source} has no splits_final.json, so its folds are the "
                f"{SEEDED_FOLDS} seeded ones (--seed, --retain): expected 0 .. {SEEDED_FOLDS - 1}"
            )
        if fold == 0:
            train, val = split_patients(cases, retain, seed)
            return train, val, {}
        ids = sorted(cases)
        try:
            val = seeded_folds(ids, retain, seed, SEEDED_FOLDS)[fold]
        except SliceError as error:  # too few cases, or a `retain` leaving too few
            raise DatasetError(f"--fold {fold}: {source}: {error}") from None
        train = sorted(set(ids) - set(val), key=natural_key)
        return train, val, {"fold": fold, "folds": SEEDED_FOLDS}
    if not 0 <= fold < len(description.folds):
        raise DatasetError(
            f"{source / 'splits_final.json'}: no fold {fold}; it holds folds 0 .. "
            f"{len(description.folds) - 1}"
        )
    train, val = description.folds[fold]
    return sorted(train, key=natural_key), sorted(val, key=natural_key), {"fold": fold}


def nnunet_dataset(source: Path, fold: int, axis: str) -> Dataset:
    """The `Dataset` of an nnU-Net v2 or MSD folder, read from its dataset.json.

    Raises:
        DatasetError: see `nnunet_format.read_dataset`; a fold not in splits_final.json; an axis
            other than auto, 0, 1 or 2.
    """
    description = read_dataset(source)
    if axis not in ("auto", "0", "1", "2"):
        raise SliceError(f"--axis {axis}: expected auto, 0, 1 or 2")
    values = description.values
    patients = {
        case.cid: [Volume(case.cid, case.images, case.label, case.four_d)]
        for case in description.training
    }
    n_channels = len(description.channels)

    def split(found: Patients, retain: int, seed: int) -> tuple[list, list, dict]:
        return split_cases(description, fold, found, retain, seed)

    def plan(found: Patients, train: list[str]) -> tuple[Geometry, dict[str, object]]:
        spacings = check_headers(description)
        chosen = choose_axis(spacings) if axis == "auto" else int(axis)
        norms = []
        for channel, scheme in enumerate(description.schemes):
            if scheme == "ct":
                volumes = [found[cid][0] for cid in train]
                norms.append(ct_statistics(volumes, channel, n_channels))
            else:
                norms.append((scheme,))
        geometry = Geometry(chosen, tuple(norms))
        check_test_images(description, geometry.norms)
        record = {
            "dataset": str(description.root.resolve()),
            "name": description.name,
            "layout": description.layout,
            "channels": list(description.channels),
            "normalisation": [list(n) for n in norms],
            "labels": {name: value for name, value in description.labels},
            "axis": chosen,
            "test": [case.cid for case in description.test],
        }
        return geometry, {"source.json": record}

    return Dataset(
        name=description.name,
        modalities=png_folders(description.channels),
        classes=values,
        n_classes=len(values),
        find_patients=lambda _: patients,
        label_map=tuple((v, i) for i, v in enumerate(values) if v != i),
        default_retain=default_retain(len(patients)),
        split=split,
        plan=plan,
    )


def _own_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--fold",
        type=int,
        default=0,
        help=f"fold of splits_final.json, else of the {SEEDED_FOLDS} seeded folds: "
        f"0 .. {SEEDED_FOLDS - 1} (default 0)",
    )
    parser.add_argument(
        "--axis", default="auto", help="axis sliced along: auto (coarsest spacing), 0, 1 or 2"
    )


def _build(args: argparse.Namespace) -> tuple[Dataset, int]:
    dataset = nnunet_dataset(Path(args.source_dir), args.fold, args.axis)
    return dataset, args.retain or dataset.default_retain


def main(argv: list[str] | None = None) -> int:
    """Command-line entry; returns the exit status (0, 1 on bad input, 130 on Ctrl-C)."""
    # `--retain 0` (the default here): a fifth of the cases, known once dataset.json is read.
    template = Dataset("", (), (0,), 1, lambda _: {}, default_retain=0)
    return run_cli(template, __doc__.splitlines()[0], argv, _own_flags, _build)


if __name__ == "__main__":
    raise SystemExit(main())
