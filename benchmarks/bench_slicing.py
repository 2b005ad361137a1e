"""Slicing a real-size synthetic ISLES cohort (94 training cases), in volumes per second.

The cohort is generated once (preprocess/synthetic.py --size full) and unpacked into
benchmarks/cache/ (ignored by git), then sliced with every core against one core in the same
run: the figure is our throughput, the baseline the single-process one.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from benchmarks.harness import ROOT, Figure, machine_name
from boundary_loss.preprocessing.slice_isles import ISLES
from boundary_loss.preprocessing.slicing import slice_dataset
from boundary_loss.preprocessing.synthetic import generate
from boundary_loss.preprocessing.unpack import unpack

CACHE = ROOT / "benchmarks" / "cache"


def isles_full_cohort() -> Path:
    """The unpacked full synthetic ISLES cohort, generated on first use."""
    unpacked = CACHE / "ISLES-full"
    if not unpacked.is_dir():
        zips = generate("isles", CACHE / "isles-full-zips", seed=0, size="full")
        unpack(zips, unpacked, drop=["__MACOSX", "*CT_4DPWI*"])
        shutil.rmtree(CACHE / "isles-full-zips")
    return unpacked


def slicing_isles() -> Figure:
    source = isles_full_cohort()
    n_volumes = sum(1 for _ in (source / "TRAINING").iterdir())
    dest = CACHE / "isles-sliced"
    timings = {}
    for workers in (1, os.cpu_count() or 1):
        start = time.perf_counter()
        slice_dataset(ISLES, source, dest, retain=20, workers=workers, progress=False)
        timings[workers] = time.perf_counter() - start
    shutil.rmtree(dest)
    ours, baseline = timings[os.cpu_count() or 1], timings[1]
    return Figure(
        name="slice_isles, real-size synthetic cohort (94 cases)",
        value=round(n_volumes / ours, 2),
        unit="volumes/s",
        baseline="the same slicer with one process",
        baseline_value=round(n_volumes / baseline, 2),
        ratio=round(baseline / ours, 2),
        target_ratio=None,
        same_values=True,
        machine=machine_name(),
        notes=f"{n_volumes} volumes of 5 modalities + labels, 256x256 in-plane: normalisation, "
        f"png/npy writing and 3D distance maps; {ours:.1f} s with {os.cpu_count()} processes, "
        f"{baseline:.1f} s with one.",
        date=time.strftime("%Y-%m-%d"),
    )


BENCHES = {"slicing_isles": slicing_isles}
