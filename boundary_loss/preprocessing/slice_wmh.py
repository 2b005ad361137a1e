"""Slice WMH 2017 (white matter hyperintensities, 2 classes) into 2D training data.

Usage: python preprocess/slice_wmh.py --source_dir DIR --dest_dir DIR [--retain 10] [--seed 0]
       [--n_augment 0] [--shape 256 256] [--workers N]

The source holds the three unpacked zips: `{GE3T,Singapore,Utrecht}/<pid>/pre/FLAIR.nii.gz`,
`pre/T1.nii.gz` and `wmh.nii.gz` (values {0, 1, 2}; 2, other pathology, becomes background 0);
or the numbered patient folders directly (`<pid>/pre/FLAIR.nii.gz`, ...), as the boundary-loss
repository's wmh.make leaves them after moving every site's patients up one level.
`pre/3DT1.nii.gz` (not aligned) and `orig/` are not used. Two modalities, FLAIR and T1; the
numbered folder is the patient id (unique across sites); slice stems `<pid>_<aug:02d>_<slice:04d>`.
In-plane sizes differ by site, so slices are resized to `--shape`. The slicing itself is in
preprocess/slicing.py.
"""

from __future__ import annotations

from pathlib import Path

from boundary_loss.preprocessing.slicing import Dataset, run_cli
from boundary_loss.preprocessing.volumes import (
    Patients,
    SliceError,
    Volume,
    require_dir,
    require_file,
)

SITES = ("GE3T", "Singapore", "Utrecht")


def _numbered(name: str) -> bool:
    """Whether a folder name is a patient id: ASCII digits only."""
    return name.isascii() and name.isdigit()


def find_patients(source: Path) -> Patients:
    """Every numbered patient folder of the WMH source, one volume each.

    Args:
        source: the unpacked zips (holding the site folders GE3T/, Singapore/, Utrecht/, each
            holding numbered patient folders), or a folder holding the numbered patient folders
            of every site directly.

    Returns:
        Patient id -> its one volume.

    Raises:
        SliceError: the source is missing, holds neither form or both, a folder is not
            numbered, a patient id is in two sites, or a file is missing.
    """
    require_dir(source, "the unpacked WMH 2017 zips, or their patient folders")
    sites = [source / site for site in SITES if (source / site).is_dir()]
    direct = sorted(p.name for p in source.iterdir() if p.is_dir() and _numbered(p.name))
    if sites and direct:
        raise SliceError(
            f"{source}: holds both site folders ({sites[0].name}) and patient folders "
            f"({direct[0]}); expected one form: the unpacked zips (<site>/<pid>/) or the "
            "patient folders directly (<pid>/)"
        )
    if not sites and not direct:
        raise SliceError(
            f"{source}: none of the site folders {', '.join(SITES)} and no numbered patient "
            "folder; expected the unpacked WMH 2017 zips, or their patient folders directly"
        )
    patients: Patients = {}
    for site in sites or [source]:
        for folder in sorted(p for p in site.iterdir() if p.is_dir()):
            pid = folder.name
            if not _numbered(pid):
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
    """Command-line entry; returns the exit status (0, 1 on bad input, 130 on Ctrl-C)."""
    return run_cli(WMH, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
