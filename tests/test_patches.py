"""Tests for data/patches.py: random 3D patches of memory-mapped volumes.

Expectations are worked out independently: each patch against the whole-volume arrays indexed
at its voxels (coordinates outside the volume clamped for the maps, zero or background for the
image and labels), one_hot2dist of the whole volume, and nnU-Net's oversampling rule written out
by hand for a few batch sizes.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.bench_patches import WholeFileDataset
from boundary_loss.data.loader import (
    DataError,
    FolderSpec,
    dist_map_transform,
    gt_transform,
    normalised_dist_map_transform,
    raw_npy_transform,
    tensor_transform,
)
from boundary_loss.data.patches import PatchDataset, make_patch_loader
from boundary_loss.maps.distance import one_hot2dist

K, C = 3, 2
SHAPE = (24, 10, 20)
PATCH = (8, 12, 8)  # wider than the volume along Y: every patch is padded there
SPECS = [
    FolderSpec("in_npy", tensor_transform, False),
    FolderSpec("gt_npy", gt_transform, True),
    FolderSpec("3d_distmap", raw_npy_transform, False),
]
SPACING = {"case_0": [0.8, 1.0, 1.5], "case_1": [1.0, 1.0, 1.0], "case_2": [0.5, 0.5, 2.0]}


def one_hot(labels: np.ndarray) -> np.ndarray:
    return np.moveaxis(np.eye(K, dtype=np.int32)[labels], -1, 0)


def case_labels() -> dict[str, np.ndarray]:
    """Foreground only at x <= 2 or x >= 21: a random patch's centre (x in 4..20 with a patch of
    8 in 24) never lands on it, a forced one always does."""
    labels = {name: np.zeros(SHAPE, dtype=np.uint8) for name in SPACING}
    labels["case_0"][0:3, 2:6, 3:8] = 1
    labels["case_0"][21:24, 4:9, 10:16] = 2
    labels["case_1"][22:24, 0:3, 0:20] = 1
    return labels  # case_2: background only


def write_split(root: Path, labels: dict[str, np.ndarray] | None = None) -> Path:
    """A split folder of the prepared layout: in_npy, gt_npy and the whole-volume 3d_distmap."""
    rng = np.random.default_rng(0)
    for folder in ("in_npy", "gt_npy", "3d_distmap"):
        (root / folder).mkdir(parents=True)
    for name, lab in (labels or case_labels()).items():
        image = rng.standard_normal((C, *lab.shape)).astype(np.float32)
        maps = one_hot2dist(one_hot(lab), SPACING[name], dtype=np.float32)
        np.save(root / "in_npy" / f"{name}.npy", image)
        np.save(root / "gt_npy" / f"{name}.npy", lab)
        np.save(root / "3d_distmap" / f"{name}.npy", maps)
    return root


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    return write_split(tmp_path_factory.mktemp("patches") / "train")


def dataset(root: Path, batch_size: int = 3, iterations: int = 10, seed: int = 0, **kw):
    return PatchDataset(root, SPECS, K, PATCH, SPACING, batch_size, iterations, seed, **kw)


def expected_patch(root: Path, case: str, lower) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The image, one-hot labels and maps of the box at `lower`, from the whole volumes: image 0,
    labels background and maps 0 outside."""
    image = np.load(root / "in_npy" / f"{case}.npy")
    labels = np.load(root / "gt_npy" / f"{case}.npy")
    maps = np.load(root / "3d_distmap" / f"{case}.npy")
    coords = [lo + np.arange(p) for lo, p in zip(lower, PATCH, strict=True)]
    inside = [(c >= 0) & (c < s) for c, s in zip(coords, SHAPE, strict=True)]
    clamped = np.ix_(*[np.clip(c, 0, s - 1) for c, s in zip(coords, SHAPE, strict=True)])
    inside_box = inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :]
    return (
        np.where(inside_box, image[(slice(None), *clamped)], 0),
        one_hot(np.where(inside_box, labels[clamped], 0)),
        np.where(inside_box, maps[(slice(None), *clamped)], 0),
    )


def centre_class(item: dict) -> int:
    hot = item["labels"][0]
    return int(hot[(slice(None), *(p // 2 for p in PATCH))].argmax())


# ---------------------------------------------------------------------------------------------
# What a patch holds
# ---------------------------------------------------------------------------------------------


def test_patches_are_the_whole_volumes_cut_and_padded(split):
    data = dataset(split, iterations=12)
    forced = 0
    for i in range(len(data)):
        item = data[i]
        case, lower = data.draw(0, i)
        assert item["filename"] == data.cases[case]
        image, hot, maps = expected_patch(split, item["filename"], lower.tolist())
        assert item["images"].dtype == torch.float32 and item["images"].shape == (C, *PATCH)
        assert item["labels"][0].dtype == torch.int32 and item["labels"][0].shape == (K, *PATCH)
        assert item["labels"][1].dtype == torch.float32
        np.testing.assert_array_equal(item["images"].numpy(), image)
        np.testing.assert_array_equal(item["labels"][0].numpy(), hot)
        np.testing.assert_array_equal(item["labels"][1].numpy(), maps)
        torch.testing.assert_close(item["spacing"], torch.tensor(SPACING[item["filename"]]))
        # inside the volume along X and Z, which hold the patch; centred along Y, which does not
        assert 0 <= lower[0] <= SHAPE[0] - PATCH[0] and 0 <= lower[2] <= SHAPE[2] - PATCH[2]
        assert lower[1] == -1  # 10 voxels centred in 12: one padded on each side
        forced += data.forced(i)
    assert forced > 0  # forced patches, centred near a border, were moved inside too


def test_padding_values(split):
    """Outside the volume: image 0, labels background, maps 0 (out of the boundary term)."""
    data = dataset(split)
    item = data[0]
    case, lower = data.draw(0, 0)
    assert not data.forced(0) and lower[1] == -1
    maps = np.load(split / "3d_distmap" / f"{data.cases[case]}.npy")
    x, z = slice(lower[0], lower[0] + PATCH[0]), slice(lower[2], lower[2] + PATCH[2])
    for y_patch, y_volume in ((0, 0), (PATCH[1] - 1, SHAPE[1] - 1)):  # the padded rows
        assert (item["images"][:, :, y_patch] == 0).all()
        assert (item["labels"][0][0, :, y_patch] == 1).all()
        assert (item["labels"][0][1:, :, y_patch] == 0).all()
        assert (item["labels"][1][:, :, y_patch] == 0).all()
        row = 1 if y_patch == 0 else PATCH[1] - 2  # the volume's first and last rows: cut
        np.testing.assert_array_equal(item["labels"][1][:, :, row].numpy(), maps[:, x, y_volume, z])


def test_a_background_patch_carries_the_whole_volume_distances(split):
    """A patch without foreground keeps the true (positive) distances to the objects outside
    it, which maps recomputed on the patch would lose."""
    data = dataset(split, iterations=20)
    found = 0
    for i in range(len(data)):
        item = data[i]
        hot, maps = item["labels"][0].numpy(), item["labels"][1].numpy()
        if item["filename"] != "case_0" or hot[1:].any():
            continue
        found += 1
        inside = maps[:, :, 1:-1]  # Y: 10 voxels centred in 12, one row padded with 0 each side
        assert (inside[1] > 0).all() and (inside[2] > 0).all()
        assert (maps[:, :, [0, -1]] == 0).all()
        spacing = SPACING["case_0"]
        on_patch = one_hot2dist(hot, spacing, dtype=np.float32)
        assert (on_patch[1:] == 0).all()  # what a patch's own maps would say: nothing
        assert np.abs(inside[1:] - on_patch[1:, :, 1:-1]).min() > 0.5
    assert found > 0


@pytest.mark.parametrize("batch_size, forced", [(1, []), (2, [1]), (3, [2]), (6, [4, 5])])
def test_exactly_the_forced_samples_are_centred_on_foreground(split, batch_size, forced):
    """nnU-Net's rule, worked out by hand: sample j is forced when j >= round(B * 0.67); a
    forced patch holds the foreground voxel it was centred on (moved inside the volume)."""
    data = dataset(split, batch_size=batch_size, iterations=max(60 // batch_size, 10))
    present = {name: set(np.unique(lab).tolist()) - {0} for name, lab in case_labels().items()}
    chosen = set()
    for i in range(len(data)):
        item = data[i]
        held = {k for k in range(1, K) if item["labels"][0][k].any()}
        if i % batch_size in forced and present[item["filename"]]:
            assert held & present[item["filename"]]
            chosen |= {(item["filename"], k) for k in held}
        else:  # random patches, and forced ones of the background-only case
            assert centre_class(item) == 0
    if forced:
        assert {("case_0", 1), ("case_0", 2), ("case_1", 1)} <= chosen


def test_collated_batches(split):
    loader = make_patch_loader(split, SPECS, K, PATCH, SPACING, 3, 2, seed=0, workers=0)
    batches = list(loader)
    assert len(batches) == 2
    batch = batches[0]
    assert batch["images"].shape == (3, C, *PATCH)
    assert [t.shape for t in batch["labels"]] == [(3, K, *PATCH)] * 2
    assert batch["spacing"].shape == (3, 3) and len(batch["filenames"]) == 3


# ---------------------------------------------------------------------------------------------
# Reproducibility
# ---------------------------------------------------------------------------------------------


def same_item(a: dict, b: dict) -> bool:
    return (
        a["filename"] == b["filename"]
        and torch.equal(a["images"], b["images"])
        and all(torch.equal(x, y) for x, y in zip(a["labels"], b["labels"], strict=True))
    )


def test_items_depend_on_seed_epoch_and_index_only(split):
    first, again = dataset(split, seed=4), dataset(split, seed=4)
    again.set_epoch(1)
    assert all(same_item(first[(1, i)], again[i]) for i in (5, 0, 29))  # any order
    assert all(same_item(first[(1, i)], first[(1, i)]) for i in range(3))
    assert not all(same_item(first[(0, i)], first[(1, i)]) for i in range(6))
    assert not all(same_item(first[(0, i)], dataset(split, seed=5)[(0, i)]) for i in range(6))
    with pytest.raises(IndexError):
        first[len(first)]


def test_loading_processes_and_epochs_give_the_same_batches(split):
    def batches(workers: int, rank: int = 0) -> list[dict]:
        loader = make_patch_loader(
            split, SPECS, K, PATCH, SPACING, 2, 2, seed=1, workers=workers, rank=rank, world_size=2
        )
        out = []
        for epoch in (0, 1):
            loader.batch_sampler.set_epoch(epoch)  # as the training does
            out += list(loader)
        return out

    def equal(a: dict, b: dict) -> bool:
        return (
            a["filenames"] == b["filenames"]
            and torch.equal(a["images"], b["images"])
            and all(torch.equal(x, y) for x, y in zip(a["labels"], b["labels"], strict=True))
        )

    inline, worker = batches(0), batches(1)
    assert all(equal(a, b) for a, b in zip(inline, worker, strict=True))
    assert not equal(inline[0], inline[2])  # epoch 1 draws other patches
    other_rank = batches(0, rank=1)
    assert not all(equal(a, b) for a, b in zip(inline, other_rank, strict=True))


def test_the_benchmark_baseline_reads_the_same_patches(split):
    """benchmarks/bench_patches.py times whole-file loading against the memory maps: the same
    items either way."""
    whole = WholeFileDataset(split, SPECS, K, PATCH, SPACING, 3, 2, 0)
    data = dataset(split, iterations=2)
    assert all(same_item(whole[i], data[i]) for i in range(len(data)))


def test_debug_keeps_two_cases(split):
    assert dataset(split, debug=True).cases == ["case_0", "case_1"]


# ---------------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transform", [dist_map_transform, normalised_dist_map_transform])
def test_maps_computed_on_the_patch_are_refused(split, transform):
    specs = [*SPECS[:2], FolderSpec("gt_npy", transform, False)]
    message = (
        rf"\('gt_npy', {transform.__name__}, False\): distance maps computed on a patch are "
        r"wrong for the boundary loss.*\('3d_distmap', raw_npy_transform, False\)"
    )
    with pytest.raises(DataError, match=message):
        PatchDataset(split, specs, K, PATCH, SPACING, 2, 2, 0)


def broken(tmp_path: Path, folder: str, case: str, array: np.ndarray | None) -> Path:
    """A fresh split with one file replaced by `array` (removed when None)."""
    root = write_split(tmp_path / "train")
    path = root / folder / f"{case}.npy"
    path.unlink()
    if array is not None:
        np.save(path, array)
    return path


def refused(root: Path, message: str, **kw) -> None:
    args = {"patch_size": PATCH, "spacing": SPACING} | kw
    with pytest.raises(DataError, match=message):
        PatchDataset(root, SPECS, K, args["patch_size"], args["spacing"], 2, 2, 0)


def test_missing_folder(tmp_path):
    root = write_split(tmp_path / "train")
    for path in (root / "3d_distmap").iterdir():
        path.unlink()
    (root / "3d_distmap").rmdir()
    refused(root, re.escape(f"{root / '3d_distmap'}: data folder not found"))


def test_missing_and_extra_case_files(tmp_path):
    path = broken(tmp_path / "a", "gt_npy", "case_1", None)
    refused(path.parent.parent, re.escape(f"{path} is missing"))
    root = write_split(tmp_path / "b" / "train")
    extra = root / "3d_distmap" / "case_9.npy"
    np.save(extra, np.zeros((K, *SHAPE), dtype=np.float32))
    refused(root, re.escape(f"{extra} has no input in in_npy/"))


@pytest.mark.parametrize(
    "folder, array, message",
    [
        ("gt_npy", np.zeros((24, 10, 19), np.uint8), "does not match the image"),
        ("3d_distmap", np.zeros((K, 24, 9, 20), np.float32), "does not match the image"),
        ("3d_distmap", np.zeros((2, *SHAPE), np.float32), r"2 maps, expected one per class \(K"),
        ("gt_npy", np.full(SHAPE, 3, np.uint8), r"label values 3\.\.3 are outside the 3 classes"),
        ("gt_npy", np.zeros(SHAPE, np.float32), "expected integer class indices"),
        ("in_npy", np.zeros(SHAPE, np.float32), "expected a C X Y Z image"),
        ("in_npy", np.zeros((3, *SHAPE), np.float32), "3 channels, the other cases have 2"),
    ],
)
def test_bad_files_are_named(tmp_path, folder, array, message):
    path = broken(tmp_path, folder, "case_2", array)
    refused(path.parent.parent, re.escape(str(path)) + ".*" + message)


@pytest.mark.parametrize("patch_size", [(8, 8), (8, 0, 8), (8.0, 8, 8), (8, 8, 8, 8), 8])
def test_bad_patch_size(split, patch_size):
    refused(split, "patch_size must be three positive integers", patch_size=patch_size)


def test_labels_read_one_hot_must_be_class_indices(split):
    specs = [*SPECS[:2], FolderSpec("3d_distmap", gt_transform, True)]
    message = r"3d_distmap/case_0\.npy: \('3d_distmap', gt_transform, True\) reads X Y Z class"
    with pytest.raises(DataError, match=message):
        PatchDataset(split, specs, K, PATCH, SPACING, 2, 2, 0)


def test_missing_spacing(split):
    spacing = {k: v for k, v in SPACING.items() if k != "case_1"}
    refused(split, "spacing_3d.json.* no entry for the case case_1", spacing=spacing)
