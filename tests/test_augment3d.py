"""Tests for data/augment3d.py: the 3D augmentation of a batch of patches on its device.

Expectations: numpy's own flip and rot90 applied from the drawn decisions, one_hot2dist of the
moved labels (the moved maps must be exactly those), coordinate fields that tell which axis went
where, and tests/host_reads.py counting every read of a tensor's values.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from boundary_loss.data.augment3d import PLANES, augment_batch_3d, draw_3d
from boundary_loss.maps.distance import one_hot2dist
from tests.host_reads import host_reads

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def one_hot(labels: np.ndarray, K: int) -> np.ndarray:
    """`B X Y Z` class indices -> `B K X Y Z` int32 one-hot."""
    return np.moveaxis(np.eye(K, dtype=np.int32)[labels], -1, 1).copy()


def same_spacing(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * max(abs(a), abs(b))


def numpy_reference(array: np.ndarray, spacing, flips, turns) -> tuple[np.ndarray, list]:
    """`C X Y Z` mirrored along the drawn axes, then turned in each plane that allows it, with
    numpy; and the spacing carried along (an odd number of turns swaps the plane's two)."""
    spacing = list(spacing)
    for axis in range(3):
        if flips[axis]:
            array = np.flip(array, 1 + axis)
    for p, (a, b) in enumerate(PLANES):
        if array.shape[1 + a] == array.shape[1 + b] and same_spacing(spacing[a], spacing[b]):
            array = np.rot90(array, int(turns[p]), axes=(1 + a, 1 + b))
            if turns[p] % 2:
                spacing[a], spacing[b] = spacing[b], spacing[a]
    return array, spacing


SPACINGS = [
    [1.0, 1.0, 1.0],
    [1.0, 1.0, 2.0],
    [0.5, 2.0, 0.5],
    [1.0, 1.0, 1.0 + 1e-7],  # equal within 1e-6: turns, and the spacing moves with the axes
    [2.0, 1.0, 1.0],
    [0.8, 0.8, 0.8],
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(5, 5, 5), (5, 5, 3)])
def test_voxels_move_as_numpy_flips_and_turns(device, shape):
    rng = np.random.default_rng(0)
    B, K = len(SPACINGS), 3
    labels = rng.integers(0, K, size=(B, *shape))
    hot = torch.from_numpy(one_hot(labels, K))
    maps = torch.from_numpy(rng.standard_normal((B, 2, *shape)).astype(np.float32))
    image = torch.from_numpy(rng.standard_normal((B, 2, *shape)).astype(np.float32))
    spacing = torch.tensor(SPACINGS, dtype=torch.float32)
    seen_turns, spacing_moved = set(), False
    for seed in range(4):
        d = draw_3d(B, 2, torch.Generator().manual_seed(seed))
        _, (hot_out, maps_out), spacing_out = augment_batch_3d(
            image.to(device),
            [hot.to(device), maps.to(device)],
            [True, False],
            spacing,
            torch.Generator().manual_seed(seed),
        )
        assert hot_out.dtype == torch.int32 and maps_out.dtype == torch.float32
        for b in range(B):
            flips, turns = d.flips[b].numpy(), d.turns[b].numpy()
            for source, out in ((hot, hot_out), (maps, maps_out)):
                expected, moved = numpy_reference(source[b].numpy(), SPACINGS[b], flips, turns)
                np.testing.assert_array_equal(out[b].cpu().numpy(), expected)
            np.testing.assert_array_equal(spacing_out[b].numpy(), np.float32(moved))
            spacing_moved |= not torch.equal(spacing_out[b], spacing[b])
            seen_turns.add(tuple(turns))
    assert len(seen_turns) > 5  # the draws do vary
    # The nearly equal spacings of SPACINGS[3] were exchanged where the patch size allows it.
    assert spacing_moved == (shape[2] == shape[0])


@pytest.mark.parametrize("device", DEVICES)
def test_distance_maps_stay_exact_and_labels_one_hot(device):
    """Maps of known shapes, moved with their labels, equal one_hot2dist of the moved labels."""
    cases = []
    for shape, spacing in (((7, 7, 7), (1.0, 1.0, 1.0)), ((8, 8, 5), (0.7, 0.7, 1.5))):
        x, y, z = np.indices(shape)
        labels = np.zeros(shape, dtype=np.int64)
        labels[1:4, 2:6, 1:3] = 1  # an off-centre box
        labels[((x - 5) ** 2 + (y - 4) ** 2 + (z - 3) ** 2) <= 2] = 2  # a small ball
        hot = one_hot(labels[None], 3)
        maps = one_hot2dist(hot[0], spacing, dtype=np.float32)[None]
        cases.append((hot, maps, spacing))
    for hot, maps, spacing in cases:
        B = 4
        hot_b = torch.from_numpy(np.repeat(hot, B, 0)).to(device)
        maps_b = torch.from_numpy(np.repeat(maps, B, 0)).to(device)
        image = torch.rand(B, 1, *hot.shape[2:], device=device)
        space = torch.tensor([spacing] * B, dtype=torch.float32)
        for seed in range(3):
            _, (hot_out, maps_out), space_out = augment_batch_3d(
                image, [hot_b, maps_b], [True, False], space, torch.Generator().manual_seed(seed)
            )
            hot_np = hot_out.cpu().numpy()
            assert set(np.unique(hot_np).tolist()) == {0, 1} and (hot_np.sum(1) == 1).all()
            for b in range(B):
                expected = one_hot2dist(hot_np[b], space_out[b].tolist(), dtype=np.float32)
                np.testing.assert_allclose(maps_out[b].cpu().numpy(), expected, atol=1e-5)


def coordinate_fields(B: int, shape) -> torch.Tensor:
    """`B 3 X Y Z`: channel d holds each voxel's coordinate along axis d."""
    grids = torch.stack(torch.meshgrid(*(torch.arange(n) for n in shape), indexing="ij"))
    return grids.float().expand(B, 3, *shape).contiguous()


def reads_axis(field: torch.Tensor, axis: int, n: int) -> bool:
    """Whether a moved coordinate field `X Y Z` is the coordinate along output `axis`, maybe
    mirrored: the field then depends on that axis alone."""
    coords = coordinate_fields(1, field.shape)[0, axis]
    return torch.equal(field, coords) or torch.equal(field, n - 1 - coords)


def test_no_turn_in_a_plane_of_unequal_spacing_or_size():
    """Over many draws: a source axis only lands on an axis of the same spacing and size, and
    the planes that allow turns do turn."""
    settings = [  # (shape, spacing, the groups of axes that may exchange)
        ((4, 4, 4), (1.0, 1.0, 2.0), [{0, 1}, {2}]),
        ((4, 4, 4), (2.0, 1.0, 1.0), [{0}, {1, 2}]),
        ((4, 4, 6), (1.0, 1.0, 1.0), [{0, 1}, {2}]),
        ((4, 4, 4), (1.0, 3.0, 1.0), [{0, 2}, {1}]),
        ((4, 4, 4), (1.0, 1.0, 1.0), [{0, 1, 2}]),
    ]
    for shape, spacing, groups in settings:
        B = 8
        fields = coordinate_fields(B, shape)
        space = torch.tensor([spacing] * B)
        landed = set()
        for seed in range(25):
            _, (out,), space_out = augment_batch_3d(
                torch.zeros(B, 1, *shape),
                [fields],
                [False],
                space,
                torch.Generator().manual_seed(seed),
            )
            assert torch.equal(space_out, space)  # only equal spacings were exchanged
            for b in range(B):
                for source in range(3):
                    targets = [e for e in range(3) if reads_axis(out[b, source], e, shape[e])]
                    assert len(targets) == 1
                    landed.add((source, targets[0]))
        allowed = {(s, e) for g in groups for s in g for e in g}
        assert landed == allowed, (shape, spacing)


def test_seeded_generator_repeats_the_batch():
    rng = np.random.default_rng(1)
    image = torch.from_numpy(rng.standard_normal((8, 2, 6, 6, 6)).astype(np.float32))
    hot = torch.from_numpy(one_hot(rng.integers(0, 2, size=(8, 6, 6, 6)), 2))
    space = torch.ones(8, 3)

    def run(seed: int):
        torch.manual_seed(7)  # the noise's stream
        return augment_batch_3d(image, [hot], [True], space, torch.Generator().manual_seed(seed))

    first, again, other = run(3), run(3), run(4)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1][0], again[1][0])
    assert not torch.equal(first[1][0], other[1][0])


def test_intensity_changes_the_image_only_as_drawn():
    """With the image also moved as a target (no intensity there), each patch's image is the
    moved one, noised, brightened and contrasted exactly as its draw says."""
    rng = np.random.default_rng(2)
    B, C, shape = 64, 2, (8, 8, 8)
    image = torch.from_numpy(rng.standard_normal((B, C, *shape)).astype(np.float32) + 1)
    seed = 11
    d = draw_3d(B, C, torch.Generator().manual_seed(seed))
    out, (moved,), _ = augment_batch_3d(
        image, [image.clone()], [False], torch.ones(B, 3), torch.Generator().manual_seed(seed)
    )
    noise, bright, contrast = d.noise.numpy(), d.brightness.numpy(), d.contrast.numpy()
    assert noise.any() and bright.any() and contrast.any() and (~noise & ~bright & ~contrast).any()
    noise_only = 0
    for b in range(B):
        x, y = moved[b].numpy().astype(np.float64), out[b].numpy()
        if not noise[b]:
            if bright[b]:
                x = x * d.brightness_factor[b].numpy()[:, None, None, None]
            if contrast[b]:
                mean = x.mean(axis=(1, 2, 3), keepdims=True)
                x = (x - mean) * d.contrast_factor[b].numpy()[:, None, None, None] + mean
                np.testing.assert_allclose(y.mean(axis=(1, 2, 3)), mean[:, 0, 0, 0], atol=1e-5)
            np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-5)
        elif not bright[b] and not contrast[b]:
            noise_only += 1
            residual = y - x
            sigma = float(d.noise_sigma[b])
            assert abs(residual.mean()) < 4 * sigma / np.sqrt(residual.size) + 1e-7
            assert residual.std() == pytest.approx(sigma, rel=0.15)
    assert noise_only > 0
    untouched = ~noise & ~bright & ~contrast
    assert torch.equal(out[untouched], moved[untouched])


def test_reads_nothing_back(monkeypatch):
    """No value of any tensor is read by the host (a GPU would never be waited for)."""
    image = torch.rand(4, 2, 6, 6, 4)
    hot = torch.from_numpy(one_hot(np.random.default_rng(3).integers(0, 3, (4, 6, 6, 4)), 3))
    maps = torch.rand(4, 3, 6, 6, 4)
    space = torch.tensor([[1.0, 1.0, 2.0], [1.0, 1.0, 1.0], [0.5, 0.5, 0.5], [2.0, 1.0, 1.0]])
    generator = torch.Generator().manual_seed(0)
    with host_reads(monkeypatch) as reads:
        augment_batch_3d(image, [hot, maps], [True, False], space, generator)
    assert reads == []


@pytest.mark.parametrize(
    "change, message",
    [
        ({"image": torch.zeros(2, 1, 4, 4)}, "image must be B C X Y Z"),
        ({"labels": [torch.zeros(2, 2, 4, 4, 5)]}, r"labels\[0\] must be B K X Y Z"),
        ({"hot": [True, False]}, "hot has 2 flags for 1 targets"),
        ({"spacing": torch.ones(2, 2)}, "spacing must be B x 3"),
    ],
)
def test_bad_arguments(change, message):
    args = {
        "image": torch.zeros(2, 1, 4, 4, 4),
        "labels": [torch.zeros(2, 2, 4, 4, 4)],
        "hot": [False],
        "spacing": torch.ones(2, 3),
        "generator": torch.Generator().manual_seed(0),
    } | change
    with pytest.raises(ValueError, match=message):
        augment_batch_3d(**args)
