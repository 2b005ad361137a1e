"""Slice WMH 2017 (white matter hyperintensities, 2 classes) into 2D training data.

Usage: python preprocess/slice_wmh.py --source_dir DIR --dest_dir DIR [--retain 10] [--seed 0]
       [--n_augment 0] [--shape 256 256] [--workers N]

The source holds the three unpacked zips: `{GE3T,Singapore,Utrecht}/<pid>/pre/FLAIR.nii.gz`,
`pre/T1.nii.gz` and `wmh.nii.gz` (values {0, 1, 2}; 2, other pathology, becomes background 0).
`pre/3DT1.nii.gz` (not aligned) and `orig/` are not used. Two modalities, FLAIR and T1; the
numbered folder is the patient id (unique across sites); slice stems `<pid>_<aug:02d>_<slice:04d>`.
In-plane sizes differ by site, so slices are resized to `--shape`. The slicing itself is in
preprocess/slicing.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository's modules importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from preprocess.slicing import (  # noqa: E402
    Dataset,
    Patients,
    SliceError,
    Volume,
    require_dir,
    require_file,
    run_cli,
)

SITES = ("GE3T", "Singapore", "Utrecht")


def find_patients(source: Path) -> Patients:
    """Every numbered patient folder of the three sites, one volume each."""
    require_dir(source, "the unpacked WMH 2017 zips")
    sites = [source / site for site in SITES if (source / site).is_dir()]
    if not sites:
        raise SliceError(
            f"{source}: none of the site folders {', '.join(SITES)}; expected the unpacked "
            "WMH 2017 zips"
        )
    patients: Patients = {}
    for site in sites:
        for folder in sorted(p for p in site.iterdir() if p.is_dir()):
            pid = folder.name
            if not (pid.isascii() and pid.isdigit()):
                raise SliceError(f"{folder}: expected numbered patient folders in {site}")
            if pid in patients:
                raise SliceError(
                    f"{folder}: patient {pid} also in {patients[pid][0].label.parent.parent}; "
                    "expected patient ids unique across sites"
                )
            flair = require_file(folder / "pre" / "FLAIR.nii.gz", f"the FLAIR of patient {pid}")
            t1 = require_file(folder / "pre" / "T1.nii.gz", f"the T1 of patient {pid}")
            label = require_file(folder / "wmh.nii.gz", f"the labels of patient {pid}")
            patients[pid] = [Volume(pid, (flair, t1), label)]
    return patients


WMH = Dataset(
    name="WMH",
    modalities=("flair", "t1"),
    classes=(0, 1, 2),
    n_classes=2,
    find_patients=find_patients,
    label_map=((2, 0),),
    default_retain=10,
)


def main(argv: list[str] | None = None) -> int:
    return run_cli(WMH, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
