"""training.py: which folders a loader reads, and where the losses and the metrics find them."""

from __future__ import annotations

from dataloader import FolderSpec, dist_map_transform, gt_transform, tensor_transform
from training import loader_targets

IN = FolderSpec("in_npy", tensor_transform, False)
GT = FolderSpec("gt_npy", gt_transform, True)
DIST = FolderSpec("gt_npy", dist_map_transform, False)
PNG_GT = FolderSpec("gt", gt_transform, True)


def test_a_ground_truth_that_is_also_a_loss_target_is_read_once():
    loaded, targets = loader_targets(IN, GT, [GT, DIST], on_device=False)
    assert loaded == [IN, GT, DIST]
    assert targets.gt_index == 0 and targets.n_losses == 2
    assert targets.device_fns == [None, None]


def test_a_ground_truth_folder_of_its_own_is_read_after_the_targets():
    loaded, targets = loader_targets(IN, PNG_GT, [DIST], on_device=False)
    assert loaded == [IN, DIST, PNG_GT]
    assert targets.gt_index == 1 and targets.n_losses == 1


def test_an_unlabelled_loader_has_no_ground_truth():
    loaded, targets = loader_targets(IN, None, [DIST], on_device=False)
    assert loaded == [IN, DIST] and targets.gt_index is None


def test_on_device_distance_maps_are_read_as_labels_and_transformed_there():
    loaded, targets = loader_targets(IN, GT, [GT, DIST], on_device=True)
    assert loaded[2].transform is gt_transform  # the labels travel; the map is made on device
    assert targets.device_fns[0] is None and targets.device_fns[1] is not None
