"""Generate stand-in ISLES 2018, WMH 2017 and ACDC 2017 zips, and nnU-Net and MSD dataset folders.

Usage: python preprocess/synthetic.py --dataset {isles,wmh,acdc,nnunet,msd} --dest DIR
       [--seed 0] [--size quick|full]

The real datasets need registration and are never downloaded by the pipeline. This generator
writes zips under the real names, with the real folder layouts, file names, voxel dtypes, label
sets, in-plane sizes and spacings (the layouts the slicers' docstrings describe,
preprocess/slice_<dataset>.py), including the parts the recipes drop after unpacking
(`__MACOSX/`, `CT_4DPWI`, `orig/`, `3DT1`, `_4d`), so that every recipe runs on them as it will
on the real data. The images are simple but learnable: a head or a thorax on a dark background,
smooth intensity fields and noise, with the structures to segment visible in them:

- ISLES 2018: several small stroke lesions (a main one and satellites, under 0.5% of the voxels,
  some slices without lesion) with raised Tmax and MTT and lowered CBF and CBV, faint (contrast
  drawn per case and per map, noise, a bias field, partial volume at their edges), inside a
  penumbra of raised Tmax and MTT that is not labelled (synthetic_isles.py);
- WMH 2017: periventricular caps and punctate deep lesions, bright in FLAIR and slightly dark in
  T1, and sometimes an "other pathology" blob (label 2), dark in both (synthetic_wmh.py);
- ACDC 2017: a bright left-ventricle cavity ringed by a darker myocardium, with the bright right
  ventricle beside it sharing the septum, smaller towards the apex and at end-systole, next to
  bright fat and a bright descending aorta that a weak model may take for a ventricle
  (synthetic_acdc.py).

`--dataset nnunet` and `--dataset msd` write folders, not zips: one stand-in cohort (an organ
with lesions and a vessel beside it, in a CT-like and a T2-like channel, 16 training and 4 test
cases of anisotropic voxels) in the nnU-Net v2 raw layout (`DEST/Dataset990_StandIn/`) or in the
Medical Segmentation Decathlon layout (`DEST/Task990_StandIn/`), with the same voxels in both
(synthetic_nnunet.py). They have one size only: `--size quick` (the default) is all they accept.

`--size quick` gives small cohorts for the quick start and the tests (ISLES 16 training and 4
testing cases of 2 to 12 slices, WMH 4 patients per site with fewer slices, ACDC 12 patients);
`--size full` gives the real cohort sizes (ISLES 94 + 62 cases, WMH 3 x 20, ACDC 100) for
benchmarks.

The output is byte-deterministic for a given seed and size: every random draw comes from a
`numpy.random.default_rng` seeded with (seed, dataset, patient) (synthetic_shapes.py); zip members
are written in a fixed order with fixed timestamps (1980-01-01), permissions and compression
level; `.nii.gz` files are serialised from a fixed NIfTI header and gzip-compressed with mtime 0
and no file name (reproducible_archives.py). All stored values are quantised (integers, or floats
on a 1/16 or 1/4 grid), so last-bit differences in floating-point maths between machines almost
never reach the bytes. The deflate streams are zlib's: a Python built on zlib-ng compresses
differently, and its zips then fail the md5 check of lineage/*-synthetic.lineage although their
contents are the same. Each zip is written to `NAME.tmp` and renamed only when complete (each
nnU-Net or MSD folder to `NAME_tmp`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from boundary_loss.io.atomic import FolderError
from boundary_loss.preprocessing import (
    synthetic_acdc,
    synthetic_isles,
    synthetic_nnunet,
    synthetic_wmh,
)
from boundary_loss.preprocessing.reproducible_archives import ZipPlan, members_in_order, write_zip

DATASETS = ("isles", "wmh", "acdc")  # written as zips
SIZES = ("quick", "full")
# Written as one dataset folder each, in the folder given; one size only (quick).
FOLDERS: dict[str, Callable[[Path, int], Path]] = {
    "nnunet": synthetic_nnunet.write_nnunet,
    "msd": synthetic_nnunet.write_msd,
}

# Zip names per dataset, in the order they are written and listed in the lineage files.
ZIP_NAMES = {
    "isles": synthetic_isles.ZIPS,
    "wmh": synthetic_wmh.ZIPS,
    "acdc": synthetic_acdc.ZIPS,
}

_BUILDERS: dict[str, Callable[[int, str], Iterator[ZipPlan]]] = {
    "isles": synthetic_isles.isles_zips,
    "wmh": synthetic_wmh.wmh_zips,
    "acdc": synthetic_acdc.acdc_zips,
}


def generate(dataset: str, dest: str | Path, seed: int = 0, size: str = "quick") -> list[Path]:
    """Write the stand-in zips of `dataset` into `dest`, under their real names.

    Args:
        dataset: "isles", "wmh" or "acdc".
        dest: folder for the zips (created if missing).
        seed: non-negative integer; the same seed and size give the same bytes.
        size: "quick" (small cohorts) or "full" (the real cohort sizes).

    Returns:
        The zip paths, in the order of ZIP_NAMES[dataset].

    Raises:
        ValueError: unknown dataset or size, or a seed that is not a non-negative integer.
    """
    if dataset not in DATASETS:
        raise ValueError(f"dataset: expected one of {', '.join(DATASETS)}, got {dataset!r}")
    if size not in SIZES:
        raise ValueError(f"size: expected one of {', '.join(SIZES)}, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    workers = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1, 4)
    with ThreadPoolExecutor(max_workers=max(workers, 1)) as pool:
        return [
            write_zip(dest / name, members_in_order(pool, patient_members, patients, 2 * workers))
            for name, patient_members, patients in _BUILDERS[dataset](int(seed), size)
        ]


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def _print_folder(folder: Path) -> None:
    """One line for a written dataset folder: its path, file count and size."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    print(f"{folder}/: {len(files)} files, {size / 2**20:.1f} MiB")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: generate one dataset's zips (or folder) and print paths and sizes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset",
        required=True,
        choices=(*DATASETS, *FOLDERS),
        help="which dataset: zips for isles, wmh, acdc; a folder DEST/Dataset990_StandIn for "
        "nnunet (nnU-Net v2 raw layout), DEST/Task990_StandIn for msd (Decathlon layout)",
    )
    parser.add_argument("--dest", required=True, type=Path, help="folder for the zips or folder")
    parser.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--size",
        choices=SIZES,
        default="quick",
        help="cohort size (default quick); nnunet and msd have one size and accept only quick",
    )
    args = parser.parse_args(argv)
    if args.dataset in FOLDERS and args.size != "quick":
        parser.error(f"--size {args.size}: --dataset {args.dataset} has one size, quick")
    start = time.perf_counter()
    try:
        if args.dataset in FOLDERS:
            _print_folder(FOLDERS[args.dataset](args.dest, args.seed))
        else:
            for path in generate(args.dataset, args.dest, args.seed, args.size):
                print(f"{path}: {path.stat().st_size / 2**20:.1f} MiB")
    except (OSError, FolderError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(
        f"generated {args.size} {args.dataset} (seed {args.seed}) in "
        f"{time.perf_counter() - start:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
