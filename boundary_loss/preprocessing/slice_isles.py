"""Slice ISLES 2018 (CT perfusion stroke lesions, 2 classes) into 2D training data.

Usage: python preprocess/slice_isles.py --source_dir DIR --dest_dir DIR [--retain 20] [--seed 0]
       [--n_augment 0] [--shape 256 256] [--workers N]

The source is the unpacked training zip: `TRAINING/case_<N>/SMIR.Brain.XX.O.<MOD>.<ID>/
SMIR.Brain.XX.O.<MOD>.<ID>.nii` with MOD in CT, CT_CBF, CT_CBV, CT_MTT, CT_Tmax and OT (the lesion
mask, {0, 1}), or its `TRAINING/` folder itself (the `case_<N>/` folders directly in
`--source_dir`, as the boundary-loss repository's isles.make passes it). `CT_4DPWI`, `__MACOSX/`
and `TESTING/` (no OT) are not used. Five input modalities,
in this order: CT, CBF, CBV, MTT, Tmax; patient id and volume id `case_<N>`; slice stems
`case_<N>_<aug:02d>_<slice:04d>`. The slicing itself is in preprocess/slicing.py.
"""

from __future__ import annotations

import re
from pathlib import Path

from boundary_loss.preprocessing.slicing import Dataset, run_cli
from boundary_loss.preprocessing.volumes import (
    Patients,
    SliceError,
    Volume,
    patient_folders,
    require_dir,
)

# Source modality -> png folder, in the channel order of in_npy.
MODALITIES = {"CT": "ct", "CT_CBF": "cbf", "CT_CBV": "cbv", "CT_MTT": "mtt", "CT_Tmax": "tmax"}
LABEL = "OT"
MODALITY_DIR = re.compile(r"SMIR\.Brain\.XX\.O\.(?P<mod>\w+)\.(?P<id>\d+)")


def find_case(case: Path) -> Volume:
    """The five modality files and the lesion mask of one `case_<N>` folder.

    Args:
        case: the `case_<N>` folder.

    Returns:
        Its volume, the modalities in the order of MODALITIES.

    Raises:
        SliceError: a modality or the mask missing, or one given twice.
    """
    found: dict[str, Path] = {}
    for folder in sorted(case.iterdir()):
        match = MODALITY_DIR.fullmatch(folder.name)
        if not folder.is_dir() or match is None:
            continue
        mod = match["mod"]
        if mod not in MODALITIES and mod != LABEL:
            continue  # CT_4DPWI
        if mod in found:
            raise SliceError(
                f"{case}: two {mod} folders, {found[mod].parent.name} and {folder.name}; "
                "expected one per modality"
            )
        found[mod] = folder / f"{folder.name}.nii"
        if not found[mod].is_file():
            raise SliceError(f"{found[mod]}: file not found (expected the {mod} volume)")
    for mod in (*MODALITIES, LABEL):
        if mod not in found:
            raise SliceError(
                f"{case}: no {mod} volume (expected a folder SMIR.Brain.XX.O.{mod}.<ID> holding "
                f"SMIR.Brain.XX.O.{mod}.<ID>.nii)"
            )
    return Volume(case.name, tuple(found[mod] for mod in MODALITIES), found[LABEL])


def find_patients(source: Path) -> Patients:
    """Every `case_<N>` of the ISLES source, one volume each.

    Args:
        source: the unpacked training zip (holding `TRAINING/case_<N>/`), or its `TRAINING/`
            folder (holding `case_<N>/` directly).

    Returns:
        Case name -> its one volume, in natural order.

    Raises:
        SliceError: the source is missing, holds neither form or both, or a case lacks a file.
    """
    require_dir(source, "the unpacked ISLES 2018 training zip, or its TRAINING/ folder")
    cases = patient_folders(source, "TRAINING", r"case_\d+", "ISLES 2018", "case_<N>")
    return {case.name: [find_case(case)] for case in cases}


ISLES = Dataset(
    name="ISLES",
    modalities=tuple(MODALITIES.values()),
    classes=(0, 1),
    n_classes=2,
    find_patients=find_patients,
    default_retain=20,
)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry; returns the exit status (0, 1 on bad input, 130 on Ctrl-C)."""
    return run_cli(ISLES, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
