"""Slice ACDC 2017 (cardiac cine MRI, 4 classes) into 2D training data.

Usage: python preprocess/slice_acdc.py --source_dir DIR --dest_dir DIR [--retain 25] [--seed 0]
       [--n_augment 0] [--shape 256 256] [--workers N]   (--retains is an alias of --retain)

The source is the unpacked `acdc.zip`: `training/patient<NNN>/patient<NNN>_frame<FF>.nii.gz` and
`patient<NNN>_frame<FF>_gt.nii.gz` (classes 0 background, 1 right ventricle, 2 myocardium, 3 left
ventricle cavity), two frames (end-diastole, end-systole) per patient; or its `training/` folder
itself (the `patient<NNN>/` folders directly in `--source_dir`, as the boundary-loss
repository's acdc.make passes it). `Info.cfg` and the `_4d` sequence are not used. One modality
(png folder `img`, the name the original's trainings read). The split is by patient (both frames
on the same side); each frame is a volume `patient<NNN>_<FF>`, with slice stems
`patient<NNN>_<FF>_<aug:02d>_<slice:04d>`. Slices are resized to `--shape`. The slicing itself is
in preprocess/slicing.py.
"""

from __future__ import annotations

import re
from pathlib import Path

from boundary_loss.preprocessing.slicing import Dataset, run_cli
from boundary_loss.preprocessing.volumes import (
    Patients,
    SliceError,
    Volume,
    natural_key,
    patient_folders,
    require_dir,
    require_file,
)


def find_frames(folder: Path) -> list[Volume]:
    """The frames of one `patient<NNN>` folder, each with its `_gt` labels.

    Args:
        folder: the `patient<NNN>` folder.

    Returns:
        One volume `patient<NNN>_<FF>` per frame, in frame order.

    Raises:
        SliceError: no frame, or a frame without its image or labels.
    """
    pid = folder.name
    frame = re.compile(rf"{pid}_frame(\d+)(_gt)?\.nii\.gz")
    numbers = {m[1] for p in folder.iterdir() if (m := frame.fullmatch(p.name))}
    if not numbers:
        raise SliceError(f"{folder}: no {pid}_frame<FF>.nii.gz file; expected two frames")
    volumes = []
    for number in sorted(numbers, key=natural_key):
        image = require_file(folder / f"{pid}_frame{number}.nii.gz", f"frame {number} of {pid}")
        label = require_file(
            folder / f"{pid}_frame{number}_gt.nii.gz", f"the labels of frame {number} of {pid}"
        )
        volumes.append(Volume(f"{pid}_{number}", (image,), label))
    return volumes


def find_patients(source: Path) -> Patients:
    """Every `patient<NNN>` of the ACDC source, one volume per frame.

    Args:
        source: the unpacked zip (holding `training/patient<NNN>/`), or its `training/` folder
            (holding `patient<NNN>/` directly).

    Returns:
        Patient name -> its frames, in natural order.

    Raises:
        SliceError: the source is missing, holds neither form or both, or a frame lacks a file.
    """
    require_dir(source, "the unpacked ACDC 2017 zip, or its training/ folder")
    patients = patient_folders(source, "training", r"patient\d+", "ACDC 2017", "patient<NNN>")
    return {p.name: find_frames(p) for p in patients}


ACDC = Dataset(
    name="ACDC",
    modalities=("img",),
    classes=(0, 1, 2, 3),
    n_classes=4,
    find_patients=find_patients,
    default_retain=25,
    retain_aliases=("retains",),
)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry; returns the exit status (0, 1 on bad input, 130 on Ctrl-C)."""
    return run_cli(ACDC, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
