"""Stand-in ISLES 2018 zips: CT perfusion cases with small, faint stroke lesions.

The two zips of the challenge, `ISLES2018_Training.zip` and `ISLES2018_Testing.zip`, with their
layout: `TRAINING/case_<N>/SMIR.Brain.XX.O.<MOD>.<ID>/SMIR.Brain.XX.O.<MOD>.<ID>.nii` for MOD in
CT, CT_4DPWI, CT_CBF, CT_CBV, CT_MTT, CT_Tmax and OT (the lesion mask, absent from TESTING), and
an AppleDouble file for each under `__MACOSX/`. Each case is 256 x 256 pixels of 0.78 to 0.98 mm
over 2 to 22 slices of 5 to 10 mm, a head with several small lesions: a main one of 4 to 10 mm
in-plane radius over a run of slices and 2 to 6 satellites of 1.8 to 4 mm, under 0.5% of the
case's voxels in all, some slices without lesion. They are hard to segment in the ways real stroke
lesions are:

- low contrast that varies between cases: each case draws how strongly its lesion lowers CBF, CBV
  and CT and raises MTT and Tmax, and each map its own share of that, so that a lesion can be
  plain in one map and barely there in another;
- a penumbra that is not labelled, raising Tmax and MTT over the lesion and a ring around it, so
  that the lesion stands out from it by its lowered CBF and CBV and a further rise of Tmax and
  MTT only;
- noise, white and blotchy (correlated over a few pixels), at a level drawn per case, and a smooth
  multiplicative bias field of its own in each perfusion map;
- partial volume: lesion edges fade over about two pixels in-plane, and each slice is the average
  of four thinner ones, so that lesions cut by a thick slice are faint in it; a voxel is labelled
  where the lesion fills at least half of it.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from functools import partial

import numpy as np

from boundary_loss.preprocessing.reproducible_archives import Member, ZipPlan, nifti_bytes
from boundary_loss.preprocessing.synthetic_shapes import (
    Array,
    irregular_ellipsoid,
    patient_rng,
    quantise,
    random_field,
    rotate,
    soft_membership,
    unrotate,
    voxel_axes,
)

ZIPS = ("ISLES2018_Training.zip", "ISLES2018_Testing.zip")

# An AppleDouble `._` file as macOS puts under __MACOSX/: header and an empty Finder Info entry.
APPLEDOUBLE = struct.pack(
    ">II16sHIII32s", 0x00051607, 0x00020000, b"Mac OS X        ", 1, 9, 38, 32, bytes(32)
)

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
# Lesion geometry: each slice is sampled this many times through-plane, and a voxel is labelled
# when the lesion fills half of it (the partial volume of thick slices); the lesion of a case is
# kept under ISLES_MAX_LESION of its voxels (shrunk in-plane and drawn again when over).
ISLES_SUBSLICES = 4
ISLES_MAX_LESION = 0.0045
ISLES_SATELLITES = (2, 6)  # small lesions besides the main one
# Per case: the lesion's contrast (1: the full drop or rise of the core), then each map's share
# of it (a lesion can be plain in Tmax and barely there in CBV); the noise scale over the base
# standard deviations; the amplitude of the smooth multiplicative bias field of each map.
ISLES_CONTRAST = (0.15, 0.6)
ISLES_MAP_SHARE = (0.15, 1.0)
ISLES_NOISE = (2.0, 3.5)
ISLES_BIAS = (0.08, 0.25)


def _mottle(rng: np.random.Generator, shape: tuple[int, ...], cell: int) -> Array:
    """Blotchy noise of about unit standard deviation: a coarse normal grid, bilinear in-plane.

    Args:
        shape: the volume's shape (X, Y, Z).
        cell: the coarse grid's spacing in pixels.

    Returns:
        The noise, float32, shaped `shape`.
    """
    nx, ny, nz = shape
    out = rng.standard_normal((nx // cell + 2, ny // cell + 2, nz), dtype=np.float32)
    for axis, n in ((0, nx), (1, ny)):
        t = (np.arange(n) + 0.5) / cell
        i = t.astype(int)
        f = (t - i).astype(np.float32).reshape((-1, 1, 1) if axis == 0 else (1, -1, 1))
        out = np.take(out, i, axis=axis) * (1 - f) + np.take(out, i + 1, axis=axis) * f
    return out * np.float32(1.5)  # bilinear mixing keeps about 2/3 of the standard deviation


def _soft_edge(q: Array) -> Array:
    """In-plane partial volume of a lesion: 1 for q <= 0.5, one half at its boundary, 0 from 1.5."""
    return np.clip(1.5 - q, 0.0, 1.0)


def _lesion_maps(
    rng: np.random.Generator,
    axes: tuple[Array, ...],
    dz: float,
    blobs: list[tuple[tuple[float, float, float], tuple[float, float, float]]],
    frame: tuple[float, float, float],
) -> tuple[Array, Array, Array]:
    """The label, the core and the penumbra memberships of lesion blobs, with partial volume.

    Args:
        axes: the volume's voxel coordinates (mm).
        dz: the slice thickness (mm).
        blobs: ((u, v, z) centre in the head's frame, (ru, rv, rz) radii), in mm.
        frame: the head's centre and in-plane rotation (cx, cy, angle).

    Returns:
        The label (where the lesion fills at least half of a voxel), the lesion membership and
        the penumbra's (not labelled), each averaged over ISLES_SUBSLICES samples per slice.
    """
    nx, ny, nz = len(axes[0]), len(axes[1]), len(axes[2])
    sub = ISLES_SUBSLICES
    offsets = dz * ((np.arange(sub) + 0.5) / sub - 0.5)
    fine = (axes[0], axes[1], (axes[2][:, None] + offsets[None, :]).ravel())
    inside = np.zeros((nx, ny, nz * sub))
    core = np.zeros((nx, ny, nz * sub))
    halo = np.zeros((nx, ny, nz * sub))
    cx, cy, angle = frame
    for (bu, bv, bz), radii in blobs:
        gx, gy = unrotate(bu, bv, angle)
        # The box reaches 1.9 radii: the penumbra reaches 1.6.
        box, q = irregular_ellipsoid(rng, fine, (cx + gx, cy + gy, bz), radii, reach=1.9)
        np.maximum(inside[box], q < 1, out=inside[box])
        np.maximum(core[box], _soft_edge(q), out=core[box])
        np.maximum(halo[box], soft_membership(q, edge=2.3), out=halo[box])

    def thick(values: Array) -> Array:
        return values.reshape(nx, ny, nz, sub).mean(axis=3)

    return thick(inside) >= 0.5, thick(core), thick(halo)


def _isles_case(rng: np.random.Generator, size: str) -> tuple[dict[str, Array], tuple]:
    """The seven volumes of one ISLES case, and its voxel size (X Y Z in mm)."""
    choices, weights = ISLES_SLICES[size]
    n_slices = int(rng.choice(choices, p=weights))
    thickness = [t for t in ISLES_THICKNESS_MM if t * n_slices <= ISLES_MAX_SLAB_MM]
    dz = float(thickness[int(rng.integers(len(thickness)))])
    dxy = float(rng.choice(ISLES_FOV_MM)) / 256
    shape, zooms = (256, 256, n_slices), (dxy, dxy, dz)
    axes = voxel_axes(shape, zooms)
    x, y, z = axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]

    # Head: brain ellipse in a skull ring; the slab sits somewhere around the brain's middle.
    cx, cy, angle = rng.uniform(-6, 6), rng.uniform(-6, 6), rng.uniform(-0.15, 0.15)
    u, v = rotate(x - cx, y - cy, angle)  # (X, Y, 1)
    offset = rng.uniform(-15, 15)
    zb = z + offset  # height above the brain's centre (1, 1, Z)
    scale = np.sqrt(np.clip(1 - (zb / 85.0) ** 2, 0.12, 1.0))
    a_lr, a_ap = rng.uniform(62, 70), rng.uniform(78, 88)
    rb = (u / (a_lr * scale)) ** 2 + (v / (a_ap * scale)) ** 2  # (X, Y, Z)
    brain = rb < 1
    skull = ((u / (a_lr * scale + 7)) ** 2 + (v / (a_ap * scale + 7)) ** 2 < 1) & ~brain
    field = random_field(rng, (x, y, z), (60.0, 160.0))
    gyri = random_field(rng, (x, y, z), (12.0, 25.0))
    grey = (brain & (rb > 0.62 + 0.15 * gyri)).astype(float)
    vx, vy, vz = rng.uniform(5, 9), rng.uniform(-2, 6), rng.uniform(0, 15)
    rvx, rvy = rng.uniform(3, 6), rng.uniform(14, 22)
    vent = ((np.abs(u) - vx) / rvx) ** 2 + ((v - vy) / rvy) ** 2 + ((zb - vz) / 25.0) ** 2 < 1
    inside = brain & ~vent & (rb < 0.85)

    # Lesions: a small main one over a run of slices, and satellites over one or two slices,
    # their centres anywhere through-plane (partial volume).
    n_main = int(rng.integers(max(1, n_slices // 4), max(1, 2 * n_slices // 3) + 1))
    z0 = int(rng.integers(0, n_slices - n_main + 1))
    zc = float(axes[2][z0] + (n_main - 1) / 2 * dz)
    s_c = math.sqrt(min(max(1 - ((zc + offset) / 85.0) ** 2, 0.12), 1.0))
    phi, r_n = rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 0.55)
    main_u, main_v = r_n * math.cos(phi) * a_lr * s_c, r_n * math.sin(phi) * a_ap * s_c
    main_radius = (rng.uniform(4, 10), rng.uniform(4, 10))
    blobs = [((main_u, main_v, zc), (*main_radius, n_main * dz / 2))]
    for _ in range(int(rng.integers(ISLES_SATELLITES[0], ISLES_SATELLITES[1] + 1))):
        r_sat = rng.uniform(1.8, 4.0)
        dist = max(main_radius) + r_sat + rng.uniform(2, 20)
        theta = rng.uniform(0, 2 * np.pi)
        k = int(np.clip(z0 + rng.integers(-1, n_main + 1), 0, n_slices - 1))
        sat_z = float(axes[2][k]) + rng.uniform(-0.3, 0.3) * dz
        sat_u, sat_v = main_u + dist * math.cos(theta), main_v + dist * math.sin(theta)
        radii = (r_sat, r_sat * rng.uniform(0.7, 1.3), rng.uniform(0.5, 1.0) * dz)
        blobs.append(((sat_u, sat_v, sat_z), radii))
    shrink = 1.0
    while True:
        drawn = [(c, (ru * shrink, rv * shrink, rz)) for c, (ru, rv, rz) in blobs]
        lesion, core, halo = _lesion_maps(rng, axes, dz, drawn, (cx, cy, angle))
        lesion &= inside
        if lesion.mean() <= ISLES_MAX_LESION:
            break
        shrink *= 0.85
    core *= inside
    halo *= (1 - core) * inside

    # Contrast: the core's drop (CBF, CBV, CT) and rise (MTT, Tmax) over the penumbra's, each map
    # its own share of the case's contrast; the penumbra raises MTT and Tmax in core and ring.
    contrast = rng.uniform(*ISLES_CONTRAST)
    c_ct, c_cbf, c_cbv, c_mtt, c_tmax = contrast * rng.uniform(*ISLES_MAP_SHARE, size=5)
    penumbra = rng.uniform(0.5, 1.0) * (core + halo)
    noise_scale = rng.uniform(*ISLES_NOISE)

    def noise(sd: float) -> Array:
        white = rng.standard_normal(shape, dtype=np.float32)
        return sd * noise_scale * (0.6 * white + 0.8 * _mottle(rng, shape, 3))

    def bias() -> Array:
        return 1 + rng.uniform(*ISLES_BIAS) * random_field(rng, (x, y, z), (150.0, 400.0))

    ct = 28 + 9 * grey + 2 * field + 4 * random_field(rng, (x, y, z), (150.0, 400.0))
    ct = np.where(brain, ct - 20 * vent - 7 * c_ct * core + noise(3.0), -1024.0)
    ct = np.where(skull, 1100 + 250 * field + noise(50.0), ct)
    tissue = (1 + 0.15 * field) * (1 - 0.9 * vent)
    cbf = (20 + 32 * grey) * tissue * (1 - 0.75 * c_cbf * core) * (1 - 0.3 * halo)
    cbf = cbf * bias() + noise(3.0)
    cbv = (16 + 20 * grey) * tissue * (1 - 0.6 * c_cbv * core) * (1 + 0.1 * halo)
    cbv = cbv * bias() + noise(2.0)
    mtt = (4.2 + 0.8 * (1 - grey) + 0.5 * field) * (1 - 0.9 * vent)
    mtt = (mtt + 2.5 * penumbra + 4.0 * c_mtt * core) * bias() + noise(0.45)
    tmax = (0.9 + 0.4 * (1 - grey) + 0.4 * field) * (1 - 0.9 * vent)
    tmax = (tmax + 4.5 * penumbra + 4.5 * c_tmax * core) * bias() + noise(0.5)
    healthy, delayed = ISLES_PWI_CURVES
    pwi = np.clip(ct, -1024, 3071)[..., None] + np.maximum(cbv, 0)[..., None] * (
        np.multiply.outer(1 - core, healthy) + np.multiply.outer(core, delayed)
    )
    volumes = {
        "CT": np.round(ct).astype(np.int32),
        "CT_4DPWI": np.round(pwi).astype(np.int16),
        "CT_CBF": np.round(np.where(brain, np.clip(cbf, 0, None), 0)).astype(np.uint16),
        "CT_CBV": np.round(np.where(brain, np.clip(cbv, 0, None), 0)).astype(np.uint16),
        "CT_MTT": quantise(np.where(brain, np.clip(mtt, 0, None), 0), 1 / 16, np.float64),
        "CT_Tmax": quantise(np.where(brain, np.clip(tmax, 0, None), 0), 1 / 16, np.float64),
        "OT": lesion.astype(np.uint8),
    }
    return volumes, zooms


def _isles_members(seed: int, size: str, top: str, number: int) -> list[Member]:
    """The members of case `number` of the ISLES `TRAINING/` or `TESTING/` zip."""
    split = 0 if top == "TRAINING" else 1
    volumes, zooms = _isles_case(patient_rng(seed, "isles", split, number), size)
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


def isles_zips(seed: int, size: str) -> Iterator[ZipPlan]:
    """The training and the testing zip: their names, member functions and case numbers.

    Args:
        seed: the generator's seed.
        size: "quick" or "full", the cohort size (ISLES_CASES).

    Returns:
        One plan per zip, training first.
    """
    training, testing = ZIPS
    n_training, n_testing = ISLES_CASES[size]
    yield training, partial(_isles_members, seed, size, "TRAINING"), range(1, n_training + 1)
    yield testing, partial(_isles_members, seed, size, "TESTING"), range(1, n_testing + 1)
