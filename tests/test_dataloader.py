"""Transforms, the slice dataset and the patient sampler."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from boundary_loss.data.loader import (
    TRANSFORMS,
    DataError,
    FolderSpec,
    PatientSampler,
    SliceDataset,
    dist_map_transform,
    dist_maps_on_device,
    gt_transform,
    make_loader,
    normalised_dist_map_transform,
    normalised_dist_maps_on_device,
    png_transform,
    raw_npy_transform,
    tensor_transform,
)
from boundary_loss.maps import distance
from boundary_loss.maps.distance import one_hot2dist
from boundary_loss.maps.onehot import class2one_hot
from tests.host_reads import assert_checked_once
from tests.sliced_data import make_sliced_dataset


def test_transform_registry_holds_the_original_names():
    assert {
        "png_transform",
        "npy_transform",
        "tensor_transform",
        "raw_npy_transform",
        "gt_transform",
        "dist_map_transform",
    } <= set(TRANSFORMS)


def test_png_and_npy_transforms():
    png = np.array([[0, 255], [51, 102]], dtype=np.uint8)
    out = png_transform((1, 1), 2)(png)
    assert out.shape == (1, 2, 2) and out.flatten().tolist() == pytest.approx([0, 1, 0.2, 0.4])
    stack = np.zeros((3, 4, 5), dtype=np.float64)
    out = tensor_transform((1, 1), 2)(stack)
    assert out.shape == (3, 4, 5) and out.dtype == torch.float32
    assert raw_npy_transform((1, 1), 2)(np.ones((2, 3, 3))).dtype == torch.float32


def test_gt_and_dist_map_transforms_with_spacing():
    labels = np.zeros((6, 7), dtype=np.uint8)
    labels[2:4, 1:5] = 1
    onehot = gt_transform((0.5, 2.0, 3.0), 2)(labels)
    assert onehot.shape == (2, 6, 7) and onehot.dtype == torch.int32
    assert onehot[1].sum() == 8 and onehot.sum(0).eq(1).all()
    dist = dist_map_transform((0.5, 2.0, 3.0), 2)(labels)
    expected = one_hot2dist(onehot.numpy(), (0.5, 2.0), dtype=np.float32)
    np.testing.assert_array_equal(dist.numpy(), expected)
    normalised = normalised_dist_map_transform((0.5, 2.0, 3.0), 2)(labels)
    assert normalised.abs().amax() == pytest.approx(1.0)


@pytest.mark.parametrize("fn", [dist_maps_on_device, normalised_dist_maps_on_device])
def test_device_transforms_read_nothing_back_without_validation(fn, monkeypatch):
    """The transforms of a batch on its device (--device_dist_maps, --augment): a training loop
    checks its first batch (validate=True, the default) and passes validate=False for the next,
    which read nothing back. Forced on CPU tensors: on the CPU the maps are computed on the host
    (edt per sample), host work on host data by design, not a wait for a device."""
    labels = np.zeros((2, 6, 7), dtype=np.int64)
    labels[0, 2:4, 1:5] = 1
    labels[1, 1:, 3:] = 1
    one_hot = torch.stack([gt_transform((1, 1), 2)(sample) for sample in labels])
    spacing = torch.tensor([[0.5, 2.0], [1.0, 1.0]])
    on_the_cpu = fn(one_hot, spacing)
    monkeypatch.setattr(distance, "on_device", lambda tensor: True)
    maps = assert_checked_once(
        monkeypatch, lambda: fn(one_hot, spacing), lambda: fn(one_hot, spacing, validate=False)
    )
    torch.testing.assert_close(maps, on_the_cpu)


def test_gt_transform_is_class2one_hot():
    labels = np.array([[0, 2, 1], [2, 2, 0]], dtype=np.uint8)
    onehot = gt_transform((1, 1), 3)(labels)
    expected = class2one_hot(torch.from_numpy(labels.astype(np.int64))[None], 3)[0]
    assert onehot.dtype == torch.int32 and torch.equal(onehot, expected)
    assert torch.equal(onehot, F.one_hot(torch.from_numpy(labels).long(), 3).movedim(-1, 0).int())


def test_gt_transform_refuses_0_255_masks_with_the_fix():
    with pytest.raises(DataError, match="divide the mask by 255"):
        gt_transform((1, 1), 2)(np.array([[0, 255]], dtype=np.uint8))
    with pytest.raises(DataError, match=r"outside the 3 classes"):
        gt_transform((1, 1), 3)(np.array([[0, 3]], dtype=np.uint8))


SPECS = [
    FolderSpec("in_npy", tensor_transform, False),
    FolderSpec("gt_npy", gt_transform, True),
    FolderSpec("gt_npy", dist_map_transform, False),
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_sliced_dataset(tmp_path_factory.mktemp("d") / "toy", n_train=4, slices=5)


def test_slice_dataset_items(data):
    spacing = json.loads((data / "train" / "spacing.json").read_text())
    dataset = SliceDataset(data / "train", SPECS, K=2, spacing=spacing)
    assert len(dataset) == 20
    item = dataset[0]
    assert item["images"].shape == (2, 32, 32)
    assert [t.shape for t in item["labels"]] == [(2, 32, 32), (2, 32, 32)]
    # the first target is the one-hot encoding of the gt_npy file
    gt = np.load(data / "train" / "gt_npy" / "case_1_00_0000.npy")
    assert np.array_equal(item["labels"][0].argmax(0).numpy(), gt)
    assert item["filename"] == "case_1_00_0000"
    assert item["spacing"].tolist() == pytest.approx([0.9, 0.9, 3.0])


def test_debug_keeps_ten_and_in_memory_gives_the_same_items(data):
    assert len(SliceDataset(data / "train", SPECS, K=2, debug=True)) == 10
    lazy = SliceDataset(data / "train", SPECS, K=2)
    cached = SliceDataset(data / "train", SPECS, K=2, in_memory=True)
    assert torch.equal(lazy[3]["images"], cached[3]["images"])


def test_png_inputs_are_read(tmp_path):
    split = tmp_path / "train"
    for folder in ("img", "gt"):
        (split / folder).mkdir(parents=True)
    Image.fromarray(np.full((8, 8), 128, np.uint8)).save(split / "img" / "a_0.png")
    Image.fromarray(np.eye(8, dtype=np.uint8)).save(split / "gt" / "a_0.png")
    specs = [FolderSpec("img", png_transform, False), FolderSpec("gt", gt_transform, True)]
    item = SliceDataset(split, specs, K=2)[0]
    assert item["images"].shape == (1, 8, 8) and item["labels"][0][1].sum() == 8


def test_patient_sampler_groups_whole_patients_in_slice_order():
    stems = ["case_2_00_0001", "case_1_00_0001", "case_2_00_0000", "case_1_00_0000"]
    sampler = PatientSampler(stems, r"(case_\d+_\d+)_\d+", shuffle=False)
    assert list(sampler) == [[3, 1], [2, 0]]
    shuffled = PatientSampler(stems, r"(case_\d+_\d+)_\d+", shuffle=True, seed=1)
    orders = set()
    for epoch in range(8):
        shuffled.set_epoch(epoch)
        orders.add(tuple(map(tuple, shuffled)))
    assert len(orders) == 2
    with pytest.raises(DataError, match="does not match the slice"):
        PatientSampler(["nope"], r"(case_\d+)_\d+", shuffle=False)


def test_grouped_loader_gives_one_patient_per_batch(data):
    loader = make_loader(
        data / "val",
        SPECS,
        2,
        batch_size=3,
        train=False,
        use_spacing=True,
        in_memory=False,
        debug=False,
        group=True,
        grp_regex=r"(case_\d+_\d+)_\d+",
        seed=0,
    )
    batches = list(loader)
    assert [len(b["filenames"]) for b in batches] == [5, 5]
    assert {f.rsplit("_", 2)[0] for f in batches[0]["filenames"]} == {"case_100"}


def test_missing_spacing_entry_is_named(data, tmp_path):
    with pytest.raises(DataError, match="has no spacing for 20 slice"):
        SliceDataset(data / "train", SPECS, K=2, spacing={})


def test_unreadable_file_is_named(tmp_path):
    data = make_sliced_dataset(tmp_path / "d", n_train=1, n_val=1, slices=2)
    (data / "train" / "in_npy" / "case_1_00_0000.npy").write_bytes(b"not numpy")
    dataset = SliceDataset(data / "train", SPECS, K=2)
    with pytest.raises(DataError, match=r"case_1_00_0000\.npy: unreadable"):
        dataset[0]
