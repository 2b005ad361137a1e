"""Tests for augment.py and the device transforms main.py applies after it.

Expectations: numpy's own flips and rotations, hand-made spacings, and utils.one_hot2dist of the
augmented labels (the distance maps are recomputed, never resampled).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from boundary_loss.data.augment import _rotate, augment_batch, draw
from boundary_loss.data.loader import (
    dist_map_transform,
    dist_maps_on_device,
    normalised_dist_map_transform,
    normalised_dist_maps_on_device,
)
from boundary_loss.maps.distance import one_hot2dist
from boundary_loss.training import main
from tests.sliced_data import make_sliced_dataset, training_argv

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _batch(B: int = 6, H: int = 12, W: int = 12, K: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, K, size=(B, H, W))
    one_hot = torch.from_numpy(np.moveaxis(np.eye(K, dtype=np.int32)[labels], -1, 1).copy())
    images = torch.from_numpy(rng.random((B, 2, H, W)).astype(np.float32))
    spacing = torch.tensor([[0.5, 2.0, 3.0]] * B)
    return images, one_hot, spacing


def _numpy_exact(array: np.ndarray, flip_h: bool, flip_v: bool, turns: int) -> np.ndarray:
    if flip_h:
        array = array[..., ::-1]
    if flip_v:
        array = array[..., ::-1, :]
    return np.rot90(array, turns, axes=(-2, -1))


def test_flips_and_quarter_turns_move_pixels_exactly_and_swap_the_spacing():
    images, one_hot, spacing = _batch()
    generator = torch.Generator().manual_seed(5)
    d = draw(len(images), True, 0.0, torch.Generator().manual_seed(5))
    out, (hot,), new_spacing = augment_batch(images, [one_hot], [True], spacing, 0.0, generator)
    for b in range(len(images)):
        args = (bool(d.flip_h[b]), bool(d.flip_v[b]), int(d.quarter_turns[b]))
        np.testing.assert_array_equal(out[b].numpy(), _numpy_exact(images[b].numpy(), *args))
        np.testing.assert_array_equal(hot[b].numpy(), _numpy_exact(one_hot[b].numpy(), *args))
        expected = [2.0, 0.5, 3.0] if args[2] % 2 else [0.5, 2.0, 3.0]
        assert new_spacing[b].tolist() == expected
    assert len({int(t) for t in d.quarter_turns}) > 1  # the draw does vary


def test_non_square_slices_keep_their_shape():
    images, one_hot, spacing = _batch(H=8, W=12)
    generator = torch.Generator().manual_seed(0)
    out, (hot,), new_spacing = augment_batch(images, [one_hot], [True], spacing, 10.0, generator)
    assert out.shape == images.shape and hot.shape == one_hot.shape
    assert torch.equal(new_spacing, spacing)  # only half turns


@pytest.mark.parametrize("device", DEVICES)
def test_small_rotations_keep_labels_one_hot(device: str):
    images, one_hot, spacing = _batch(H=32, W=32)
    generator = torch.Generator().manual_seed(1)
    out, (hot, real), _ = augment_batch(
        images.to(device),
        [one_hot.to(device), one_hot.float().to(device)],
        [True, False],
        spacing,
        15.0,
        generator,
    )
    assert hot.dtype == torch.int32 and out.dtype == torch.float32
    assert torch.all(hot.sum(1) == 1) and set(hot.unique().tolist()) <= {0, 1}
    assert not torch.equal(hot.cpu(), one_hot)  # something moved
    assert real.min() >= 0 and real.max() <= 1  # bilinear stays within the range


def test_small_rotation_turns_pixels_of_a_non_square_slice():
    """A centred 20 x 2 bar in a 32 x 64 slice, turned by 90 degrees, stands 20 x 2."""
    bar = torch.zeros(1, 1, 32, 64)
    bar[..., 15:17, 22:42] = 1
    turned = _rotate(bar, torch.tensor([math.pi / 2]), "nearest")[0, 0]
    rows, cols = turned.nonzero().T
    assert rows.max() - rows.min() + 1 in (19, 20, 21)
    assert cols.max() - cols.min() + 1 in (1, 2, 3)


def test_draws_are_reproducible_from_the_generator():
    images, one_hot, spacing = _batch()
    runs = [
        augment_batch(images, [one_hot], [True], spacing, 10.0, torch.Generator().manual_seed(3))
        for _ in range(2)
    ]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1][0], runs[1][1][0])


@pytest.mark.parametrize("device", DEVICES)
def test_device_dist_maps_equal_the_loader_transforms(device: str):
    """The batch transforms give what the per-slice loader transforms give, on any device."""
    _, one_hot, spacing = _batch(K=2, H=20, W=16)
    spacing[::2, :2] = torch.tensor([0.9, 1.7])
    for batch_fn, slice_fn in (
        (dist_maps_on_device, dist_map_transform),
        (normalised_dist_maps_on_device, normalised_dist_map_transform),
    ):
        got = batch_fn(one_hot.to(device), spacing[:, :2].to(device)).cpu()
        labels = one_hot.argmax(1).numpy()
        expected = torch.stack(
            [slice_fn(tuple(s.tolist()), 2)(lab) for lab, s in zip(labels, spacing, strict=True)]
        )
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_augmented_dist_maps_are_recomputed_from_the_augmented_labels():
    images, one_hot, spacing = _batch(K=2, H=24, W=24)
    _, (hot,), new_spacing = augment_batch(
        images, [one_hot], [True], spacing, 20.0, torch.Generator().manual_seed(2)
    )
    maps = dist_maps_on_device(hot, new_spacing[:, :2])
    for b in range(len(hot)):
        expected = one_hot2dist(hot[b].numpy(), new_spacing[b, :2].tolist(), dtype=np.float32)
        np.testing.assert_allclose(maps[b].numpy(), expected, atol=1e-5)


# ----------------------------------------------------------- through main.py (options, --evaluate)


def _argv(dataset, workdir, *extra):
    return training_argv(dataset, workdir, *extra, batch_size=3)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_sliced_dataset(tmp_path_factory.mktemp("aug") / "data", n_train=2, n_val=2)


def test_device_dist_maps_train_like_the_loader_transform(dataset, tmp_path):
    """Same seed, same run: the surface loss values agree to float rounding."""
    runs = {}
    for name, extra in (("cpu", ()), ("device", ("--device_dist_maps",))):
        assert main.main(_argv(dataset, tmp_path / name, *extra)) == 0
        runs[name] = np.load(tmp_path / name / "tra_loss.npy")
    np.testing.assert_allclose(runs["device"], runs["cpu"], rtol=1e-4, atol=1e-5)


def test_augment_bf16_channels_last_run_and_record_timing(dataset, tmp_path):
    workdir = tmp_path / "run"
    extra = ("--augment", "--bf16", "--channels_last", "--in_memory")
    assert main.main(_argv(dataset, workdir, *extra)) == 0
    assert np.isfinite(np.load(workdir / "tra_loss.npy")).all()
    timing = __import__("json").loads((workdir / "timing.json").read_text())
    assert [t["epoch"] for t in timing] == [0, 1]
    for t in timing:
        assert 0 <= t["data_seconds"] <= t["train_seconds"] and t["train_slices"] == 8


def test_augmentation_changes_training_but_not_validation_inputs(dataset, tmp_path):
    plain, augmented = tmp_path / "plain", tmp_path / "aug"
    assert main.main(_argv(dataset, plain, "--n_epoch", "1")) == 0
    assert main.main(_argv(dataset, augmented, "--n_epoch", "1", "--augment")) == 0
    assert not np.array_equal(np.load(plain / "tra_loss.npy"), np.load(augmented / "tra_loss.npy"))
    # Validating the augmented run's network without --augment gives exactly the metrics of its
    # own validation: the validation batches were not augmented.
    check = tmp_path / "check"
    extra = ("--n_epoch", "1", "--weights", str(augmented / "best.pt"), "--evaluate")
    assert main.main(_argv(dataset, check, *extra)) == 0
    for name in ("val_dice", "val_loss", "val_3d_dsc"):
        np.testing.assert_array_equal(
            np.load(check / f"{name}.npy"), np.load(augmented / f"{name}.npy")
        )


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--evaluate",), "--evaluate needs --weights"),
        (("--iterations", "0"), "--iterations must be at least 1"),
        (("--augment_degrees", "200"), "within 0..180"),
    ],
)
def test_bad_option_combinations(dataset, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit):
        main.main(_argv(dataset, tmp_path / "run", *extra))
    assert message in capsys.readouterr().err


def test_evaluate_refuses_a_training_folder(dataset, tmp_path, capsys):
    workdir = tmp_path / "run"
    assert main.main(_argv(dataset, workdir, "--n_epoch", "1")) == 0
    before = np.load(workdir / "val_dice.npy")
    extra = ("--weights", str(workdir / "best.pt"), "--evaluate")
    assert main.main(_argv(dataset, workdir, *extra)) == 1
    assert "holds a training" in capsys.readouterr().err
    np.testing.assert_array_equal(np.load(workdir / "val_dice.npy"), before)
