"""Stand-in WMH 2017 zips: brain MRI with white matter hyperintensities.

The three site zips of the challenge, `Amsterdam_GE3T.zip`, `Singapore.zip` and `Utrecht.zip`,
with their layout: `<site>/<pid>/pre/{FLAIR,T1,3DT1}.nii.gz`, `<site>/<pid>/wmh.nii.gz` (labels
{0, 1, 2}) and the registration parameters under `orig/`, with each site's volume size, voxel
size and patient ids. Each head has periventricular caps and punctate deep lesions, bright in
FLAIR and slightly dark in T1, and sometimes an "other pathology" blob (label 2), dark in both.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np

from boundary_loss.preprocessing.reproducible_archives import (
    Member,
    ZipPlan,
    gzip_bytes,
    nifti_bytes,
)
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
    axes = voxel_axes(shape, zooms)
    x, y, z = axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]

    # Head: brain ellipsoid, CSF rim, skull and scalp shells, a neck below.
    cx, cy, cz = rng.uniform(-3, 3), rng.uniform(-6, 6), rng.uniform(-4, 4)
    angle = rng.uniform(-0.12, 0.12)
    u, v = rotate(x - cx, y - cy, angle)  # (X, Y, 1)
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
    field = random_field(rng, (x, y, z), (80.0, 200.0))
    gyri = random_field(rng, (x, y, z), (12.0, 25.0))
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
        gx, gy = unrotate(lu, lv, angle)
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
        box, q = irregular_ellipsoid(rng, axes, at, radii)
        label[box][q < 1] = 1
        np.maximum(bright[box], soft_membership(q) * rng.uniform(0.8, 1.2), out=bright[box])
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
        box, q = irregular_ellipsoid(
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
        "FLAIR": (quantise(np.clip(flair, 0, None), 1 / 4, np.float32), zooms),
        "T1": (t1, zooms),
        "3DT1": (np.ascontiguousarray(t1[::2, ::2, :]), (2 * zooms[0], 2 * zooms[1], zooms[2])),
        "wmh": (label, zooms),
    }


def _wmh_members(seed: int, size: str, site: WmhSite, pid: int) -> list[Member]:
    """The members of patient `pid` of one WMH site zip."""
    volumes = _wmh_patient(patient_rng(seed, "wmh", pid), site, size)
    folder = f"{site.folder}/{pid}"
    members = [
        (f"{folder}/orig/reg_3DT1_to_FLAIR.txt", WMH_REGISTRATION.encode()),
        (f"{folder}/orig/reg_T1_to_FLAIR.txt", WMH_REGISTRATION.encode()),
    ]
    for name in ("3DT1", "FLAIR", "T1"):
        members.append((f"{folder}/pre/{name}.nii.gz", gzip_bytes(nifti_bytes(*volumes[name]))))
    members.append((f"{folder}/wmh.nii.gz", gzip_bytes(nifti_bytes(*volumes["wmh"]))))
    return members


def wmh_zips(seed: int, size: str) -> Iterator[ZipPlan]:
    """The three site zips: their names, member functions and patient ids.

    Args:
        seed: the generator's seed.
        size: "quick" or "full", the cohort size (WMH_PATIENTS per site).

    Returns:
        One plan per site, in the order of WMH_SITES.
    """
    for site in WMH_SITES:
        yield site.zip_name, partial(_wmh_members, seed, size, site), site.ids[: WMH_PATIENTS[size]]


ZIPS = tuple(site.zip_name for site in WMH_SITES)
