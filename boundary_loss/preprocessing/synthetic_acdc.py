"""Stand-in ACDC 2017 zip: cardiac cine MRI with both ventricles and the myocardium.

The challenge's `acdc.zip` with its layout: `training/patient<NNN>/Info.cfg`,
`patient<NNN>_4d.nii.gz` and, for the end-diastolic frame 01 and the end-systolic frame,
`patient<NNN>_frame<FF>.nii.gz` and `patient<NNN>_frame<FF>_gt.nii.gz` (0 background, 1 right
ventricle, 2 myocardium, 3 left ventricle cavity), patients 1-100 in the five groups of 20. Each
thorax has a bright left-ventricle cavity ringed by a darker myocardium, with the bright right
ventricle beside it sharing the septum, smaller towards the apex and at end-systole, next to
bright fat and a bright descending aorta that a weak model may take for a ventricle.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np
from scipy.ndimage import gaussian_filter

from boundary_loss.preprocessing.reproducible_archives import (
    Member,
    ZipPlan,
    gzip_bytes,
    nifti_bytes,
)
from boundary_loss.preprocessing.synthetic_shapes import (
    Array,
    patient_rng,
    random_field,
    rotate,
    unrotate,
    voxel_axes,
)

ZIPS = ("acdc.zip",)

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
    axes = voxel_axes(shape, zooms)
    x, y, z = axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]

    # Heart: LV axis through the slices (base at slice 0, apex at the last), RV on one side.
    hx, hy = rng.uniform(-20, 20), rng.uniform(-15, 15)
    ellipticity, angle = rng.uniform(0.9, 1.1), rng.uniform(0, np.pi)
    lu, lv = rotate(x - hx, y - hy, angle)
    theta = np.pi + rng.uniform(-0.5, 0.5)
    ur, vr = rotate(x - hx, y - hy, theta)
    plane = (x, y)
    heart = _Heart(
        rho=np.sqrt((lu / ellipticity) ** 2 + (lv * ellipticity) ** 2),
        wobble=(random_field(rng, plane, (12.0, 30.0)), random_field(rng, plane, (15.0, 35.0))),
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
    fat_field = random_field(rng, plane, (20.0, 50.0))
    blood_lv, blood_rv = rng.uniform(260, 320), rng.uniform(240, 300)
    muscle, tissue = rng.uniform(60, 85), rng.uniform(100, 130)
    bias = 1 + 0.25 * random_field(rng, (x, y, z), (150.0, 400.0))
    # Papillary muscles: dark spots inside the cavity, labelled as cavity (ACDC convention).
    papillary = np.zeros(shape, bool)
    for _ in range(2):
        phi = rng.uniform(0, 2 * np.pi)
        radius = 0.55 * r0
        px, py = unrotate(radius * math.cos(phi), radius * math.sin(phi), angle)
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
    info, volumes = _acdc_patient(patient_rng(seed, "acdc", number), number)
    folder = f"training/patient{number:03d}"
    members = [(f"{folder}/Info.cfg", info.encode())]
    for name, (array, zooms) in volumes.items():
        members.append((f"{folder}/{name}", gzip_bytes(nifti_bytes(array, zooms))))
    return members


def acdc_zips(seed: int, size: str) -> Iterator[ZipPlan]:
    """The one zip: its name, member function and patient numbers.

    Args:
        seed: the generator's seed.
        size: "quick" or "full", the cohort size (ACDC_PATIENTS).

    Returns:
        The plan of `acdc.zip`.
    """
    yield ZIPS[0], partial(_acdc_members, seed), _acdc_ids(size)
