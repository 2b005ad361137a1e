"""Generate stand-in ISLES 2018, WMH 2017 and ACDC 2017 zips with the real archive layouts.

Usage: python preprocess/synthetic.py --dataset {isles,wmh,acdc} --dest DIR [--seed 0]
       [--size quick|full]

The real datasets need registration and are never downloaded by the pipeline. This generator
writes zips under the real names, with the real folder layouts, file names, voxel dtypes, label
sets, in-plane sizes and spacings (SPEC section 4), including the parts the recipes drop after
unpacking (`__MACOSX/`, `CT_4DPWI`, `orig/`, `3DT1`, `_4d`), so that every recipe runs on them as
it will on the real data. The images are simple but learnable: a head or a thorax on a dark
background, smooth intensity fields and noise, with the structures to segment visible in them:

- ISLES 2018: a few small stroke lesions (a main one and satellites, well under 1% of the voxels,
  some slices without lesion) with raised Tmax and MTT and lowered CBF and CBV, inside a
  penumbra of moderately raised Tmax and MTT that is not labelled;
- WMH 2017: periventricular caps and punctate deep lesions, bright in FLAIR and slightly dark in
  T1, and sometimes an "other pathology" blob (label 2), dark in both;
- ACDC 2017: a bright left-ventricle cavity ringed by a darker myocardium, with the bright right
  ventricle beside it sharing the septum, smaller towards the apex and at end-systole, next to
  bright fat and a bright descending aorta that a weak model may take for a ventricle.

`--size quick` gives small cohorts for the quick start and the tests (ISLES 16 training and 4
testing cases of 2 to 12 slices, WMH 4 patients per site with fewer slices, ACDC 12 patients);
`--size full` gives the real cohort sizes (ISLES 94 + 62 cases, WMH 3 x 20, ACDC 100) for
benchmarks.

The output is byte-deterministic for a given seed and size: every random draw comes from a
`numpy.random.default_rng` seeded with (seed, dataset, patient); zip members are written in a
fixed order with fixed timestamps (1980-01-01), permissions and compression level; `.nii.gz`
files are serialised from a fixed NIfTI header and gzip-compressed with mtime 0 and no file name.
All stored values are quantised (integers, or floats on a 1/16 or 1/4 grid), so last-bit
differences in floating-point maths between machines almost never reach the bytes. The deflate
streams are zlib's: a Python built on zlib-ng compresses differently, and its zips then fail the
md5 check of lineage/*-synthetic.lineage although their contents are the same. Each zip is written
to `NAME.tmp` and renamed only when complete.
"""

from __future__ import annotations

import argparse
import math
import os
import struct
import sys
import time
import zipfile
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath

import nibabel as nib
import numpy as np
from scipy.ndimage import gaussian_filter

DATASETS = ("isles", "wmh", "acdc")
SIZES = ("quick", "full")

# Zip names per dataset, in the order they are written and listed in the lineage files.
ZIP_NAMES = {
    "isles": ("ISLES2018_Training.zip", "ISLES2018_Testing.zip"),
    "wmh": ("Amsterdam_GE3T.zip", "Singapore.zip", "Utrecht.zip"),
    "acdc": ("acdc.zip",),
}

ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip can hold
ZIP_LEVEL = 1  # deflate level of the zip members (noisy images: level 6 is 5x slower, ~3% smaller)
GZIP_LEVEL = 1  # deflate level of the .nii.gz files (nibabel's default too)
# gzip member header: magic, deflate, no flags, mtime 0, "fastest" (level 1), OS unknown.
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\xff"
FILE_MODE = 0o100644  # -rw-r--r--
DIR_MODE = 0o040755  # drwxr-xr-x
UNIX = 3  # zip "version made by" host system

_DATASET_KEY = {"isles": 1, "wmh": 2, "acdc": 3}  # part of every seed

# An AppleDouble `._` file as macOS puts under __MACOSX/: header and an empty Finder Info entry.
APPLEDOUBLE = struct.pack(
    ">II16sHIII32s", 0x00051607, 0x00020000, b"Mac OS X        ", 1, 9, 38, 32, bytes(32)
)

Member = tuple[str, bytes]  # (name inside the zip, content)
Array = np.ndarray
# A zip to write: its name, the function giving one patient's members, and the patient keys.
_ZipPlan = tuple[str, Callable[[int], list[Member]], Sequence[int]]


# --------------------------------------------------------------------------------------- writing


def _rng(seed: int, dataset: str, *key: int) -> np.random.Generator:
    """The random generator of one patient: seeded from (seed, dataset, patient key)."""
    return np.random.default_rng([seed, _DATASET_KEY[dataset], *key])


def nifti_bytes(data: Array, zooms: Sequence[float], time_unit: str = "sec") -> bytes:
    """Serialise `data` as a NIfTI-1 file with a fixed header.

    Args:
        data: X Y Z [T] voxel array; its dtype is the stored dtype (no scaling).
        zooms: voxel size per axis (mm, and the time step for a 4D array).
        time_unit: unit of the fourth zoom.

    Returns:
        The `.nii` bytes: the affine is diagonal (RAS, centred on the volume) and written as both
        qform and sform with code 1 (scanner), so the spacing reads back from either.
    """
    affine = np.diag([*map(float, zooms[:3]), 1.0])
    affine[:3, 3] = [-(n - 1) / 2 * z for n, z in zip(data.shape[:3], zooms[:3], strict=True)]
    header = nib.Nifti1Header()
    header.set_data_dtype(data.dtype)
    image = nib.Nifti1Image(data, affine, header)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_zooms(tuple(float(z) for z in zooms))
    image.header.set_xyzt_units("mm", time_unit)
    return image.to_bytes()


def gzip_bytes(raw: bytes) -> bytes:
    """gzip `raw` reproducibly: mtime 0, no file name, a fixed level, one deflate stream.

    The member is assembled here rather than by `gzip.GzipFile` so that its bytes do not depend on
    how a Python version buffers its writes; it is what `GzipFile(mtime=0, filename="")` writes.
    """
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS, zlib.DEF_MEM_LEVEL)
    body = compressor.compress(raw) + compressor.flush()
    return GZIP_HEADER + body + struct.pack("<II", zlib.crc32(raw), len(raw) & 0xFFFFFFFF)


def _zip_info(name: str) -> zipfile.ZipInfo:
    """A member header with the fixed date, host system and permissions."""
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
    info.create_system = UNIX
    if name.endswith("/"):
        info.external_attr = (DIR_MODE << 16) | 0x10  # 0x10: MS-DOS directory flag
        info.compress_type = zipfile.ZIP_STORED
    else:
        info.external_attr = FILE_MODE << 16
        info.compress_type = zipfile.ZIP_DEFLATED
    return info


def write_zip(path: str | Path, members: Iterable[Member]) -> Path:
    """Write `members` to the zip `path`, via `path`.tmp renamed only once complete.

    A directory entry is written before the first member inside each folder, as zip tools do.
    Members are deflated, except `.gz` files, which are stored as they are (they would not
    shrink; Info-ZIP's zip does the same). `members` may be a generator: each member is written
    as it comes.

    Returns:
        The zip's path.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with zipfile.ZipFile(tmp, "w") as archive:
            folders: set[str] = set()
            for name, data in members:
                for parent in reversed(PurePosixPath(name).parents[:-1]):
                    folder = f"{parent}/"
                    if folder not in folders:
                        folders.add(folder)
                        archive.writestr(_zip_info(folder), b"")
                info = _zip_info(name)
                if name.endswith(".gz"):
                    info.compress_type = zipfile.ZIP_STORED
                archive.writestr(info, data, compresslevel=ZIP_LEVEL)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _in_order(
    pool: ThreadPoolExecutor,
    function: Callable[[int], list[Member]],
    keys: Iterable[int],
    window: int,
) -> Iterator[Member]:
    """The members of every patient, in key order, computed `window` patients at a time.

    Each patient has its own random generator, so running them on threads changes no byte; numpy
    and zlib release the GIL, so the threads overlap. The window bounds the memory held.
    """
    pending: deque[Future[list[Member]]] = deque()
    for key in keys:
        pending.append(pool.submit(function, key))
        if len(pending) >= window:
            yield from pending.popleft().result()
    while pending:
        yield from pending.popleft().result()


# -------------------------------------------------------------------------------------- geometry


def _axes(shape: Sequence[int], zooms: Sequence[float]) -> tuple[Array, ...]:
    """Voxel centre coordinates (mm) along each axis, centred on the volume."""
    return tuple((np.arange(n) - (n - 1) / 2) * z for n, z in zip(shape, zooms, strict=True))


def _rotate(dx: Array | float, dy: Array | float, angle: float) -> tuple:
    """In-plane coordinates rotated by `angle` (radians): into the frame of a rotated shape."""
    c, s = math.cos(angle), math.sin(angle)
    return c * dx + s * dy, -s * dx + c * dy


def _unrotate(u: float, v: float, angle: float) -> tuple[float, float]:
    """The inverse of `_rotate`: from a shape's frame back to image axes."""
    c, s = math.cos(angle), math.sin(angle)
    return c * u - s * v, s * u + c * v


def _field(rng: np.random.Generator, coords: Sequence[Array], wavelengths: tuple[float, float]):
    """A smooth random field in [-1, 1]: three plane cosine waves of random direction and phase.

    Args:
        coords: coordinate arrays (mm) shaped X 1 1, 1 Y 1 and optionally 1 1 Z.
        wavelengths: range of the wave lengths (mm).

    Returns:
        The field, X Y 1 or X Y Z. The cosines are taken in-plane and along Z separately
        (cos(a + b) = cos a cos b - sin a sin b), which is much cheaper than on the volume.
    """
    total: Array | float = 0.0
    weights = 0.0
    for _ in range(3):
        direction = rng.normal(size=len(coords))
        direction /= np.linalg.norm(direction)
        k = 2 * np.pi / rng.uniform(*wavelengths) * direction
        weight = rng.uniform(0.5, 1.0)
        plane = k[0] * coords[0] + k[1] * coords[1] + rng.uniform(0, 2 * np.pi)  # X Y 1
        if len(coords) == 3:
            along = k[2] * coords[2]  # 1 1 Z
            wave = np.cos(plane) * np.cos(along) - np.sin(plane) * np.sin(along)
        else:
            wave = np.cos(plane)
        total = total + weight * wave
        weights += weight
    return total / weights


def _ellipsoid(
    rng: np.random.Generator,
    axes: Sequence[Array],
    centre: Sequence[float],
    radii: Sequence[float],
    reach: float = 1.3,
    wobble: float = 0.25,
) -> tuple[tuple[slice, slice, slice], Array]:
    """An irregular ellipsoid (rotated in-plane) on the bounding box where it can matter.

    Args:
        axes: the volume's 1-D voxel coordinates (mm) per axis.
        centre, radii: the ellipsoid (mm).
        reach: the box covers `reach` radii around the centre.
        wobble: relative amplitude of the boundary irregularity.

    Returns:
        The box as slices into the volume, and on it the normalised squared radius q (q < 1
        inside the irregular ellipsoid).
    """
    box = []
    for coord, c, r in zip(axes, centre, (max(radii[:2]), max(radii[:2]), radii[2]), strict=True):
        lo = int(np.searchsorted(coord, c - reach * r, side="left"))
        hi = int(np.searchsorted(coord, c + reach * r, side="right"))
        box.append(slice(lo, hi))
    x, y, z = axes
    dx = x[box[0], None, None] - centre[0]
    dy = y[None, box[1], None] - centre[1]
    dz = z[None, None, box[2]] - centre[2]
    u, v = _rotate(dx, dy, rng.uniform(0, np.pi))
    q = (u / radii[0]) ** 2 + (v / radii[1]) ** 2 + (dz / radii[2]) ** 2
    scale = 2.5 / min(radii[:2])  # a few bumps around the boundary
    bumps = np.cos(scale * u + rng.uniform(0, 2 * np.pi)) * np.cos(
        scale * v + rng.uniform(0, 2 * np.pi)
    )
    return (box[0], box[1], box[2]), q * (1 + wobble * bumps)


def _soft(q: Array, edge: float = 1.0) -> Array:
    """Partial-volume membership from a normalised squared radius: 1 inside, 0.5 at q = edge."""
    return np.clip((edge - q) * 2.0 + 0.5, 0.0, 1.0)


def _quantise(values: Array, step: float, dtype: type) -> Array:
    """Round to a multiple of `step` (a power of two: exact in binary) and cast."""
    return (np.round(values / step) * step).astype(dtype)


# ------------------------------------------------------------------------------------- ISLES 2018

ISLES_CASES = {"quick": (16, 4), "full": (94, 62)}  # (training, testing)
# Slices per case: the quick size stays in the lower part of the real range (about 8 on average,
# so that its 16 cases give a small network enough slices to learn from within a few epochs).
ISLES_SLICES = {
    "quick": ((2, 4, 6, 8, 10, 12), (0.05, 0.15, 0.2, 0.25, 0.2, 0.15)),
    "full": (
        (2, 4, 6, 8, 10, 12, 16, 18, 22),
        (0.22, 0.2, 0.14, 0.14, 0.06, 0.06, 0.06, 0.06, 0.06),
    ),
}
ISLES_FOV_MM = (200.0, 210.0, 220.0, 230.0, 240.0, 250.0)  # 256 pixels: 0.78 to 0.98 mm
ISLES_THICKNESS_MM = (5.0, 5.0, 8.0, 10.0)  # 5 mm twice as likely
ISLES_MAX_SLAB_MM = 120.0
# Folder order inside a case (alphabetical, as listed); IDs increase in this order.
ISLES_MODALITIES = ("CT", "CT_4DPWI", "CT_CBF", "CT_CBV", "CT_MTT", "CT_Tmax", "OT")
ISLES_ID_BASE = {"TRAINING": 345560, "TESTING": 371000}
ISLES_PWI_CURVES = ((0.0, 1.2, 1.8, 0.9), (0.0, 0.3, 0.9, 1.4))  # bolus: healthy, lesion


def _isles_case(rng: np.random.Generator, size: str) -> tuple[dict[str, Array], tuple]:
    """The seven volumes of one ISLES case, and its voxel size (X Y Z in mm)."""
    choices, weights = ISLES_SLICES[size]
    n_slices = int(rng.choice(choices, p=weights))
    thickness = [t for t in ISLES_THICKNESS_MM if t * n_slices <= ISLES_MAX_SLAB_MM]
    dz = float(thickness[int(rng.integers(len(thickness)))])
    dxy = float(rng.choice(ISLES_FOV_MM)) / 256
    shape, zooms = (256, 256, n_slices), (dxy, dxy, dz)
    axes = _axes(shape, zooms)
    x, y, z = axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]

    # Head: brain ellipse in a skull ring; the slab sits somewhere around the brain's middle.
    cx, cy, angle = rng.uniform(-6, 6), rng.uniform(-6, 6), rng.uniform(-0.15, 0.15)
    u, v = _rotate(x - cx, y - cy, angle)  # (X, Y, 1)
    offset = rng.uniform(-15, 15)
    zb = z + offset  # height above the brain's centre (1, 1, Z)
    scale = np.sqrt(np.clip(1 - (zb / 85.0) ** 2, 0.12, 1.0))
    a_lr, a_ap = rng.uniform(62, 70), rng.uniform(78, 88)
    rb = (u / (a_lr * scale)) ** 2 + (v / (a_ap * scale)) ** 2  # (X, Y, Z)
    brain = rb < 1
    skull = ((u / (a_lr * scale + 7)) ** 2 + (v / (a_ap * scale + 7)) ** 2 < 1) & ~brain
    field = _field(rng, (x, y, z), (60.0, 160.0))
    gyri = _field(rng, (x, y, z), (12.0, 25.0))
    grey = (brain & (rb > 0.62 + 0.15 * gyri)).astype(float)
    vx, vy, vz = rng.uniform(5, 9), rng.uniform(-2, 6), rng.uniform(0, 15)
    rvx, rvy = rng.uniform(3, 6), rng.uniform(14, 22)
    vent = ((np.abs(u) - vx) / rvx) ** 2 + ((v - vy) / rvy) ** 2 + ((zb - vz) / 25.0) ** 2 < 1

    # Lesions: a main one over a run of slices, and satellites over one or two slices.
    lesion = np.zeros(shape, bool)
    core = np.zeros(shape)  # soft lesion membership
    halo = np.zeros(shape)  # soft penumbra membership (not labelled)
    n_main = int(rng.integers(max(1, n_slices // 4), max(1, 2 * n_slices // 3) + 1))
    z0 = int(rng.integers(0, n_slices - n_main + 1))
    zc = float(axes[2][z0] + (n_main - 1) / 2 * dz)
    s_c = math.sqrt(min(max(1 - ((zc + offset) / 85.0) ** 2, 0.12), 1.0))
    phi, r_n = rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 0.55)
    main_u, main_v = r_n * math.cos(phi) * a_lr * s_c, r_n * math.sin(phi) * a_ap * s_c
    main_radius = (rng.uniform(7, 13), rng.uniform(7, 13))
    blobs = [((main_u, main_v, zc), (*main_radius, n_main * dz / 2))]
    for _ in range(int(rng.integers(1, 5))):
        r_sat = rng.uniform(2.5, 5.0)
        dist = max(main_radius) + r_sat + rng.uniform(3, 15)
        theta = rng.uniform(0, 2 * np.pi)
        k = int(np.clip(z0 + rng.integers(-1, n_main + 1), 0, n_slices - 1))
        span = int(rng.integers(1, 3))
        sat_z = float(axes[2][k]) + (span - 1) * dz / 2 * rng.choice((-1, 1))
        sat_u, sat_v = main_u + dist * math.cos(theta), main_v + dist * math.sin(theta)
        blobs.append(((sat_u, sat_v, sat_z), (r_sat, r_sat * rng.uniform(0.7, 1.3), span * dz / 2)))
    for (bu, bv, bz), radii in blobs:
        gx, gy = _unrotate(bu, bv, angle)
        centre = (cx + gx, cy + gy, bz)
        box, q = _ellipsoid(rng, axes, centre, radii, reach=1.9)  # the penumbra reaches 1.85
        lesion[box] |= q < 1
        np.maximum(core[box], _soft(q), out=core[box])
        np.maximum(halo[box], _soft(q, edge=2.3), out=halo[box])
    inside = brain & ~vent & (rb < 0.85)
    lesion &= inside
    core *= inside
    halo *= (1 - core) * inside
    severity = rng.uniform(0.8, 1.2)

    def noise(sd: float) -> Array:
        return sd * rng.standard_normal(shape, dtype=np.float32)

    ct = np.where(brain, 28 + 9 * grey + 2 * field - 20 * vent - 7 * core + noise(3.0), -1024.0)
    ct = np.where(skull, 1100 + 250 * field + noise(50.0), ct)
    tissue = (1 + 0.15 * field) * (1 - 0.9 * vent)
    cbf = (20 + 32 * grey) * tissue * (1 - 0.75 * core) * (1 - 0.3 * halo) + noise(3.0)
    cbv = (16 + 20 * grey) * tissue * (1 - 0.6 * core) * (1 + 0.1 * halo) + noise(2.0)
    mtt = (4.2 + 0.8 * (1 - grey) + 0.5 * field) * (1 - 0.9 * vent)
    mtt = mtt + 6.5 * severity * core + 2.5 * halo + noise(0.45)
    tmax = (0.9 + 0.4 * (1 - grey) + 0.4 * field) * (1 - 0.9 * vent)
    tmax = tmax + 9.0 * severity * core + 4.5 * halo + noise(0.5)
    healthy, delayed = ISLES_PWI_CURVES
    pwi = np.clip(ct, -1024, 3071)[..., None] + np.maximum(cbv, 0)[..., None] * (
        np.multiply.outer(1 - core, healthy) + np.multiply.outer(core, delayed)
    )
    volumes = {
        "CT": np.round(ct).astype(np.int32),
        "CT_4DPWI": np.round(pwi).astype(np.int16),
        "CT_CBF": np.round(np.where(brain, np.clip(cbf, 0, None), 0)).astype(np.uint16),
        "CT_CBV": np.round(np.where(brain, np.clip(cbv, 0, None), 0)).astype(np.uint16),
        "CT_MTT": _quantise(np.where(brain, np.clip(mtt, 0, None), 0), 1 / 16, np.float64),
        "CT_Tmax": _quantise(np.where(brain, np.clip(tmax, 0, None), 0), 1 / 16, np.float64),
        "OT": lesion.astype(np.uint8),
    }
    return volumes, zooms


def _isles_members(seed: int, size: str, top: str, number: int) -> list[Member]:
    """The members of case `number` of the ISLES `TRAINING/` or `TESTING/` zip."""
    split = 0 if top == "TRAINING" else 1
    volumes, zooms = _isles_case(_rng(seed, "isles", split, number), size)
    members = []
    for index, modality in enumerate(ISLES_MODALITIES):
        if modality == "OT" and top == "TESTING":
            continue
        stem = f"SMIR.Brain.XX.O.{modality}.{ISLES_ID_BASE[top] + 7 * (number - 1) + index}"
        folder = f"case_{number}/{stem}"
        volume = volumes[modality]
        frame_zooms = (*zooms, 1.0) if volume.ndim == 4 else zooms
        members.append((f"{top}/{folder}/{stem}.nii", nifti_bytes(volume, frame_zooms)))
        members.append((f"__MACOSX/{top}/{folder}/._{stem}.nii", APPLEDOUBLE))
    return members


def _isles_zips(seed: int, size: str) -> Iterator[_ZipPlan]:
    training, testing = ZIP_NAMES["isles"]
    n_training, n_testing = ISLES_CASES[size]
    yield training, partial(_isles_members, seed, size, "TRAINING"), range(1, n_training + 1)
    yield testing, partial(_isles_members, seed, size, "TESTING"), range(1, n_testing + 1)


# --------------------------------------------------------------------------------------- WMH 2017


@dataclass(frozen=True)
class WmhSite:
    """One WMH 2017 site: its zip, top folder, volume geometry and patient ids."""

    zip_name: str
    folder: str
    shape: tuple[int, int, int]  # X Y Z of the real volumes
    zooms: tuple[float, float, float]  # mm
    quick_slices: int  # slices per volume in the quick size (same in-plane size)
    ids: tuple[int, ...]  # the 20 patient ids of the full size; the quick size takes the first


WMH_SITES = (
    WmhSite(
        "Amsterdam_GE3T.zip",
        "GE3T",
        (132, 256, 83),
        (1.2, 0.977, 3.0),
        24,
        tuple(100 + (44 * i + 9) // 19 for i in range(20)),  # 100 to 144
    ),
    WmhSite(
        "Singapore.zip", "Singapore", (252, 232, 48), (0.96, 0.95, 3.0), 16, tuple(range(50, 70))
    ),
    WmhSite(
        "Utrecht.zip", "Utrecht", (240, 240, 48), (0.958, 0.958, 3.0), 16, tuple(range(0, 40, 2))
    ),
)
WMH_PATIENTS = {"quick": 4, "full": 20}
# The `orig/` folder holds the registration parameters (dropped after unpacking).
WMH_REGISTRATION = (
    '(Transform "EulerTransform")\n(NumberOfParameters 6)\n(TransformParameters 0 0 0 0 0 0)\n'
)


def _wmh_patient(rng: np.random.Generator, site: WmhSite, size: str) -> dict[str, tuple]:
    """The volumes of one WMH patient: name -> (array, zooms)."""
    n_slices = site.shape[2] if size == "full" else site.quick_slices
    shape, zooms = (*site.shape[:2], n_slices), site.zooms
    axes = _axes(shape, zooms)
    x, y, z = axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]

    # Head: brain ellipsoid, CSF rim, skull and scalp shells, a neck below.
    cx, cy, cz = rng.uniform(-3, 3), rng.uniform(-6, 6), rng.uniform(-4, 4)
    angle = rng.uniform(-0.12, 0.12)
    u, v = _rotate(x - cx, y - cy, angle)  # (X, Y, 1)
    w = z - cz  # (1, 1, Z)
    a, b, c = rng.uniform(58, 64), rng.uniform(76, 84), rng.uniform(60, 66)

    def shell(d: float) -> Array:
        return (u / (a + d)) ** 2 + (v / (b + d)) ** 2 + (w / (c + d)) ** 2

    rb = shell(0.0)
    brain = rb < 1
    rim = (shell(2.5) < 1) & ~brain
    skull = (shell(7.0) < 1) & ~brain & ~rim
    neck = (w < -35) & ((u / 48.0) ** 2 + (v / 55.0) ** 2 < 1)
    scalp = ((shell(12.0) < 1) | neck) & ~brain & ~rim & ~skull
    field = _field(rng, (x, y, z), (80.0, 200.0))
    gyri = _field(rng, (x, y, z), (12.0, 25.0))
    grey = brain & (rb > 0.6 + 0.15 * gyri)
    sulci = brain & (rb > 0.93 + 0.04 * gyri)
    atrophy = rng.uniform(1.0, 1.5)
    vx, vy, vz = rng.uniform(5, 8), rng.uniform(-4, 4), rng.uniform(4, 10)
    rvx, rvy, rvz = rng.uniform(3.5, 6) * atrophy, rng.uniform(20, 28), rng.uniform(14, 20)
    vent = ((np.abs(u) - vx) / rvx) ** 2 + ((v - vy) / rvy) ** 2 + ((w - vz) / rvz) ** 2 < 1
    csf = vent | sulci

    # Lesions, centred on slice centres inside the volume, above the lower slices.
    zmin, zmax = float(axes[2][1]), float(axes[2][-2])

    def centre(lu: float, lv: float, lw: float) -> tuple[float, float, float]:
        k = int(np.clip(np.round((np.clip(cz + lw, zmin, zmax) - axes[2][0]) / zooms[2]), 0, None))
        gx, gy = _unrotate(lu, lv, angle)
        return cx + gx, cy + gy, float(axes[2][k]) + rng.uniform(-0.4, 0.4)

    severity = rng.uniform(0.8, 1.4)
    blobs = []  # (centre, radii)
    for side in (-1, 1):
        for end in (-1, 1):
            if rng.random() < 0.65:
                at = centre(side * vx, vy + end * 0.85 * rvy, vz + rng.uniform(-3, 6))
                radii = (rng.uniform(5, 8) * severity, rng.uniform(6, 10) * severity)
                blobs.append((at, (*radii, rng.uniform(3, 6))))
    for _ in range(int(rng.integers(5, 13))):
        at = centre(
            rng.choice((-1, 1)) * rng.uniform(14, 38),
            rng.uniform(-45, 40),
            vz + rng.uniform(-6, 22),
        )
        radii = (rng.uniform(3, 6) * severity, rng.uniform(3, 6) * severity)
        blobs.append((at, (*radii, rng.uniform(2.0, 4.5))))
    label = np.zeros(shape, np.float32)
    bright = np.zeros(shape)
    for at, radii in blobs:
        box, q = _ellipsoid(rng, axes, at, radii)
        label[box][q < 1] = 1
        np.maximum(bright[box], _soft(q) * rng.uniform(0.8, 1.2), out=bright[box])
    allowed = brain & ~csf & (rb < 0.88)
    label *= allowed
    bright *= allowed
    other = np.zeros(shape, bool)
    if rng.random() < 0.4:
        at = centre(
            rng.choice((-1, 1)) * rng.uniform(10, 35),
            rng.uniform(-40, 40),
            vz + rng.uniform(-8, 16),
        )
        box, q = _ellipsoid(
            rng, axes, at, (rng.uniform(3, 6), rng.uniform(3, 6), rng.uniform(3, 5))
        )
        other[box] = q < 1
        other &= allowed & (label == 0)
        label[other] = 2

    def noise(sd: float) -> Array:
        return sd * rng.standard_normal(shape, dtype=np.float32)

    head = brain | rim | skull | scalp
    bias = 1 + 0.08 * field
    flair = np.select(
        [brain & csf, brain, rim, skull, scalp], [55.0, 250.0, 60.0, 25.0, 210.0], 0.0
    )
    flair = (flair + 55 * (grey & ~csf) + 320 * bright) * bias
    flair = np.where(other, 70.0, flair)
    flair = np.where(head, flair + noise(10.0), np.abs(noise(2.0)))
    t1 = np.select([brain & csf, brain, rim, skull, scalp], [135.0, 580.0, 140.0, 30.0, 330.0], 0.0)
    t1 = (t1 - 160 * (grey & ~csf) - 120 * bright) * bias
    t1 = np.where(other, 150.0, t1)
    t1 = np.where(head, t1 + noise(12.0), np.abs(noise(3.0)))
    t1 = np.round(np.clip(t1, 0, None)).astype(np.uint16)
    return {
        "FLAIR": (_quantise(np.clip(flair, 0, None), 1 / 4, np.float32), zooms),
        "T1": (t1, zooms),
        "3DT1": (np.ascontiguousarray(t1[::2, ::2, :]), (2 * zooms[0], 2 * zooms[1], zooms[2])),
        "wmh": (label, zooms),
    }


def _wmh_members(seed: int, size: str, site: WmhSite, pid: int) -> list[Member]:
    """The members of patient `pid` of one WMH site zip."""
    volumes = _wmh_patient(_rng(seed, "wmh", pid), site, size)
    folder = f"{site.folder}/{pid}"
    members = [
        (f"{folder}/orig/reg_3DT1_to_FLAIR.txt", WMH_REGISTRATION.encode()),
        (f"{folder}/orig/reg_T1_to_FLAIR.txt", WMH_REGISTRATION.encode()),
    ]
    for name in ("3DT1", "FLAIR", "T1"):
        members.append((f"{folder}/pre/{name}.nii.gz", gzip_bytes(nifti_bytes(*volumes[name]))))
    members.append((f"{folder}/wmh.nii.gz", gzip_bytes(nifti_bytes(*volumes["wmh"]))))
    return members


def _wmh_zips(seed: int, size: str) -> Iterator[_ZipPlan]:
    for site in WMH_SITES:
        yield site.zip_name, partial(_wmh_members, seed, size, site), site.ids[: WMH_PATIENTS[size]]


# -------------------------------------------------------------------------------------- ACDC 2017

ACDC_PATIENTS = {"quick": 12, "full": 100}
ACDC_GROUPS = ("DCM", "HCM", "MINF", "NOR", "RV")  # patients 1-20, 21-40, ..., 81-100
# Group -> (end-diastolic LV cavity radius at the base, wall thickness (mm), LV end-systolic
# radius ratio, RV size factor).
ACDC_HEARTS = {
    "DCM": (31.0, 6.5, 0.88, 1.0),
    "HCM": (21.0, 13.0, 0.50, 0.9),
    "MINF": (28.0, 8.0, 0.80, 1.0),
    "NOR": (24.0, 9.0, 0.62, 1.0),
    "RV": (23.0, 8.5, 0.65, 1.5),
}
ACDC_SHAPES = ((216, 256), (232, 256), (256, 216), (256, 256))  # in-plane X Y
ACDC_THICKNESS_MM = ((5.0, 6.5, 7.0, 10.0), (0.15, 0.15, 0.2, 0.5))
ACDC_FRAMES = (12, 15, 20, 25, 28, 30, 30, 30, 30, 35)  # NbFrame choices


def _acdc_ids(size: str) -> list[int]:
    """Patient numbers: all 100, or 12 spread over the five groups."""
    count = ACDC_PATIENTS[size]
    return [1 + (i * 100) // count for i in range(count)]


@dataclass(frozen=True)
class _Heart:
    """Per-patient geometry shared by both frames (mm, in-plane arrays X Y 1)."""

    rho: Array  # normalised radius around the LV axis
    wobble: tuple[Array, Array]  # cavity and epicardium boundary irregularity
    ur: Array  # coordinates in the RV's frame (ur towards the RV)
    vr: Array
    margin: float  # epicardium >= cavity of the neighbour slices + margin (no 3D contact)


def _acdc_labels(
    heart: _Heart, cavity: Array, epi: Array, rv_a: Array, rv_b: Array
) -> tuple[Array, Array]:
    """Label volume (X Y Z uint8) of one frame from per-slice radii (Z,) in mm.

    The epicardial radius is raised where needed so that it exceeds the cavity of the slices
    above and below by `heart.margin`: the cavity never touches background or RV, in 2D or 3D.

    Returns:
        The labels and the epicardial radius per slice actually used.
    """
    neighbours = np.maximum(np.r_[cavity[1:], 0.0], np.r_[0.0, cavity[:-1]])
    epi = np.maximum(epi, np.where(neighbours > 0, neighbours + heart.margin, 0.0))
    lv = heart.rho * (1 + 0.04 * heart.wobble[0]) < cavity
    ring = heart.rho * (1 + 0.03 * heart.wobble[1]) < epi
    offset = epi + 0.1 * rv_a
    rv = ((heart.ur - offset) / np.maximum(rv_a, 1e-3)) ** 2 + (heart.vr / rv_b) ** 2 < 1
    rv &= ~ring & (rv_a > 0)
    labels = np.zeros(lv.shape, np.uint8)
    labels[rv] = 1
    labels[ring] = 2
    labels[lv] = 3
    return labels, epi


def _acdc_patient(rng: np.random.Generator, number: int) -> tuple[str, dict[str, tuple]]:
    """Info.cfg text and the volumes of one ACDC patient: name -> (array, zooms)."""
    group = ACDC_GROUPS[(number - 1) // 20]
    r0, w0, contraction, rv_size = ACDC_HEARTS[group]
    r0 *= rng.uniform(0.9, 1.1)
    w0 *= rng.uniform(0.9, 1.1)
    contraction = min(contraction * rng.uniform(0.93, 1.07), 0.95)
    nx, ny = ACDC_SHAPES[int(rng.integers(len(ACDC_SHAPES)))]
    dxy = round(float(rng.uniform(1.3, 1.8)), 4)
    dz = float(rng.choice(ACDC_THICKNESS_MM[0], p=ACDC_THICKNESS_MM[1]))
    n_slices = int(np.clip(round(rng.uniform(65, 100) / dz), 6, 18))
    n_frames = int(rng.choice(ACDC_FRAMES))
    es = int(np.clip(round(n_frames * rng.uniform(0.3, 0.42)) + 1, 2, n_frames))
    height, weight = int(rng.integers(150, 196)), int(rng.integers(50, 111))
    info = (
        f"ED: 1\nES: {es}\nGroup: {group}\nHeight: {height:.1f}\nNbFrame: {n_frames}\n"
        f"Weight: {weight:.1f}\n"
    )
    shape, zooms = (nx, ny, n_slices), (dxy, dxy, dz)
    axes = _axes(shape, zooms)
    x, y, z = axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]

    # Heart: LV axis through the slices (base at slice 0, apex at the last), RV on one side.
    hx, hy = rng.uniform(-20, 20), rng.uniform(-15, 15)
    ellipticity, angle = rng.uniform(0.9, 1.1), rng.uniform(0, np.pi)
    lu, lv = _rotate(x - hx, y - hy, angle)
    theta = np.pi + rng.uniform(-0.5, 0.5)
    ur, vr = _rotate(x - hx, y - hy, theta)
    plane = (x, y)
    heart = _Heart(
        rho=np.sqrt((lu / ellipticity) ** 2 + (lv * ellipticity) ** 2),
        wobble=(_field(rng, plane, (12.0, 30.0)), _field(rng, plane, (15.0, 35.0))),
        ur=ur,
        vr=vr,
        margin=2 * dxy + 1.0,
    )
    f = np.arange(n_slices) / (n_slices - 1)  # 0 at the base, 1 at the apex
    cavity_ed = r0 * (1 - 0.45 * f**1.6)
    if rng.random() < 0.6:
        cavity_ed[-1] = 0.0  # apical slice: myocardium only
    epi_ed = cavity_ed + w0 * (1 - 0.2 * f)
    rv_end = rng.uniform(0.7, 0.9)
    profile = np.sqrt(np.clip(1 - (f / rv_end) ** 2, 0, 1))
    rv_a = rng.uniform(14, 20) * rv_size * profile
    rv_b = rng.uniform(1.2, 1.5) * (r0 + w0) * rv_size**0.5 * np.maximum(profile, 0.5)
    cavity_es = cavity_ed * contraction * (1 - 0.08 * f)
    epi_es = np.sqrt(cavity_es**2 + epi_ed**2 - cavity_ed**2)  # myocardial area kept
    rv_contraction = 0.85 if group == "RV" else rng.uniform(0.6, 0.75)
    frames = {
        "ed": _acdc_labels(heart, cavity_ed, epi_ed, rv_a, rv_b),
        "es": _acdc_labels(heart, cavity_es, epi_es, rv_a * rv_contraction, rv_b * 0.9),
    }

    # Surroundings: body with subcutaneous fat, lungs, a descending aorta, epicardial fat.
    body_a, body_b = rng.uniform(140, 170), rng.uniform(100, 125)
    bx, by = rng.uniform(-10, 10), rng.uniform(-10, 10)
    body_q = ((x - bx) / body_a) ** 2 + ((y - by) / body_b) ** 2  # (X, Y, 1)
    body = body_q < 1
    fat_layer = body & (((x - bx) / (body_a - 12)) ** 2 + ((y - by) / (body_b - 12)) ** 2 >= 1)
    pericardium = heart.rho < float(epi_ed.max()) + 2 * float(rv_a.max()) + 10
    lungs = np.zeros_like(body)
    for side in (-1, 1):
        lx, ly = hx + side * rng.uniform(60, 75), hy + rng.uniform(-15, 5)
        lungs |= ((x - lx) / rng.uniform(35, 45)) ** 2 + ((y - ly) / rng.uniform(55, 70)) ** 2 < 1
    lungs &= body & ~fat_layer & ~pericardium
    aorta_x, aorta_y = hx + rng.uniform(-10, 15), hy - float(epi_ed.max()) - rng.uniform(20, 28)
    aorta = ((x - aorta_x) ** 2 + (y - aorta_y) ** 2 < rng.uniform(9, 13) ** 2) & body
    fat_field = _field(rng, plane, (20.0, 50.0))
    blood_lv, blood_rv = rng.uniform(260, 320), rng.uniform(240, 300)
    muscle, tissue = rng.uniform(60, 85), rng.uniform(100, 130)
    bias = 1 + 0.25 * _field(rng, (x, y, z), (150.0, 400.0))
    # Papillary muscles: dark spots inside the cavity, labelled as cavity (ACDC convention).
    papillary = np.zeros(shape, bool)
    for _ in range(2):
        phi = rng.uniform(0, 2 * np.pi)
        radius = 0.55 * r0
        px, py = _unrotate(radius * math.cos(phi), radius * math.sin(phi), angle)
        spot = (x - hx - px) ** 2 + (y - hy - py) ** 2 < rng.uniform(2.0, 3.5) ** 2
        papillary |= spot & ((f > 0.25) & (f < 0.8))[None, None, :]

    images, labels = {}, {}
    for frame, (lab, epi) in frames.items():
        labels[frame] = lab
        epi_fat = (heart.rho < epi + 3.5) & (lab == 0) & (fat_field > 0.2) & ~lungs
        image = np.zeros(shape)
        image[...] = np.where(body, tissue, 0.0)
        image = np.where(fat_layer, 250.0, image)
        image = np.where(lungs, 18.0, image)
        image = np.where(aorta, 300.0, image)
        image = np.where(epi_fat, 240.0, image)
        image = np.select([lab == 3, lab == 2, lab == 1], [blood_lv, muscle, blood_rv], image)
        image = np.where(papillary & (lab == 3), muscle + 15, image)
        image = gaussian_filter(image * bias, sigma=(0.7, 0.7, 0.0))
        sigma = 9.0  # Rician noise: magnitude of a complex signal with Gaussian noise
        real = image + sigma * rng.standard_normal(shape, dtype=np.float32)
        imag = sigma * rng.standard_normal(shape, dtype=np.float32)
        images[frame] = np.round(np.sqrt(real**2 + imag**2)).astype(np.int16)
    middle = np.round((images["ed"].astype(np.int32) + images["es"]) / 2).astype(np.int16)
    sequence = np.stack([images["ed"], middle, images["es"]], axis=-1)
    pid = f"patient{number:03d}"
    volumes = {
        f"{pid}_4d.nii.gz": (sequence, (*zooms, 1.0)),
        f"{pid}_frame01.nii.gz": (images["ed"], zooms),
        f"{pid}_frame01_gt.nii.gz": (labels["ed"], zooms),
        f"{pid}_frame{es:02d}.nii.gz": (images["es"], zooms),
        f"{pid}_frame{es:02d}_gt.nii.gz": (labels["es"], zooms),
    }
    return info, volumes


def _acdc_members(seed: int, number: int) -> list[Member]:
    """The members of patient `number` of the ACDC zip."""
    info, volumes = _acdc_patient(_rng(seed, "acdc", number), number)
    folder = f"training/patient{number:03d}"
    members = [(f"{folder}/Info.cfg", info.encode())]
    for name, (array, zooms) in volumes.items():
        members.append((f"{folder}/{name}", gzip_bytes(nifti_bytes(array, zooms))))
    return members


def _acdc_zips(seed: int, size: str) -> Iterator[_ZipPlan]:
    yield ZIP_NAMES["acdc"][0], partial(_acdc_members, seed), _acdc_ids(size)


# ------------------------------------------------------------------------------------------ entry

_BUILDERS: dict[str, Callable[[int, str], Iterator[_ZipPlan]]] = {
    "isles": _isles_zips,
    "wmh": _wmh_zips,
    "acdc": _acdc_zips,
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
            write_zip(dest / name, _in_order(pool, patient_members, patients, 2 * workers))
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


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: generate one dataset's zips and print their paths and sizes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, choices=DATASETS, help="which dataset")
    parser.add_argument("--dest", required=True, type=Path, help="folder for the zips")
    parser.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--size", choices=SIZES, default="quick", help="cohort size (default quick)"
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        paths = generate(args.dataset, args.dest, args.seed, args.size)
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for path in paths:
        print(f"{path}: {path.stat().st_size / 2**20:.1f} MiB")
    print(f"generated {args.size} {args.dataset} (seed {args.seed}) in "
          f"{time.perf_counter() - start:.1f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
