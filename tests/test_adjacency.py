"""The adjacency constraint (Ganaye et al., MICCAI 2018): graph extraction, the soft adjacency
estimator, the NonAdjacencyLoss and the forbidden-adjacency metric, against brute-force loops
written here and values worked out by hand in the comments."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from boundary_loss.losses.idc_losses import LOSSES, AdjacencyEstimator, NonAdjacencyLoss, get_loss
from boundary_loss.maps.adjacency import count_adjacency, forbidden_pairs, read_graph
from boundary_loss.metrics import forbidden_adjacencies
from boundary_loss.preprocessing.extract_adjacency import extract, main
from tests.host_reads import assert_checked_once

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------------
# Brute-force references
# ---------------------------------------------------------------------------------------------


def window(ndim: int, n_size: int = 1) -> list[tuple[int, ...]]:
    """Every offset of the (2n+1)^d window but the centre."""
    offsets = itertools.product(range(-n_size, n_size + 1), repeat=ndim)
    return [o for o in offsets if any(o)]


def brute_counts(labels: np.ndarray, K: int, n_size: int = 1) -> np.ndarray:
    """counts[label(v), label(u)] += 1 for every voxel v and neighbour u inside the array."""
    counts = np.zeros((K, K), dtype=np.int64)
    for v in itertools.product(*(range(s) for s in labels.shape)):
        for o in window(labels.ndim, n_size):
            u = tuple(a + b for a, b in zip(v, o, strict=True))
            if all(0 <= c < s for c, s in zip(u, labels.shape, strict=True)):
                counts[labels[v], labels[u]] += 1
    return counts


def brute_adjacency(probs: np.ndarray) -> np.ndarray:
    """A[i, j] = sum over b, v of probs_i(v) * mean of probs_j over v's zero-padded 3^d window,
    divided by B x spatial size."""
    B, K, *xyz = probs.shape
    A = np.zeros((K, K))
    offsets = list(itertools.product((-1, 0, 1), repeat=len(xyz)))  # centre included
    for b in range(B):
        for v in itertools.product(*(range(s) for s in xyz)):
            means = np.zeros(K)
            for o in offsets:
                u = tuple(a + c for a, c in zip(v, o, strict=True))
                if all(0 <= c < s for c, s in zip(u, xyz, strict=True)):
                    means += probs[(b, slice(None), *u)]
            means /= len(offsets)
            A += np.outer(probs[(b, slice(None), *v)], means)
    return A / (B * math.prod(xyz))


def random_probs(shape: tuple[int, ...], seed: int = 0, requires_grad: bool = False):
    """Softmax of random float64 logits, and the logits."""
    logits = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    logits.requires_grad_(requires_grad)
    return torch.softmax(logits, dim=1), logits


def one_hot(labels: np.ndarray, K: int) -> torch.Tensor:
    """`*xyz` labels -> `1 K *xyz` float64 one-hot."""
    hot = np.moveaxis(np.eye(K)[labels], -1, 0)
    return torch.from_numpy(hot)[None]


def heart(size: int = 12) -> np.ndarray:
    """K=4 cardiac-like slice: LV cavity (3) ringed by myocardium (2), RV (1) beside, background.
    3 never meets 0 or 1 (the ring is 1 pixel wide at least, the window 3x3)."""
    labels = np.zeros((size, size), dtype=np.int64)
    labels[4:8, 2:4] = 1
    labels[4:8, 4:8] = 2
    labels[5:7, 5:7] = 3
    return labels


# ---------------------------------------------------------------------------------------------
# count_adjacency
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "K", "n_size"),
    [((6, 7), 3, 1), ((6, 7), 3, 2), ((5, 4, 3), 4, 1), ((5, 4, 3), 4, 2), ((9,), 2, 3)],
)
def test_count_adjacency_equals_brute_force(shape, K, n_size):
    labels = np.random.default_rng(sum(shape) + n_size).integers(0, K, shape)
    counts = count_adjacency(labels, K, n_size)
    assert counts.dtype == np.int64
    np.testing.assert_array_equal(counts, brute_counts(labels, K, n_size))
    np.testing.assert_array_equal(counts, counts.T)


def sliced_counts(labels: np.ndarray, K: int) -> np.ndarray:
    """The same counts for larger arrays: for every offset of the 3^d window, the pairs of the
    overlapping sub-arrays, added one by one with np.add.at."""
    counts = np.zeros((K, K), dtype=np.int64)
    for o in window(labels.ndim):
        centre = tuple(
            slice(max(0, -c), n - max(0, c)) for c, n in zip(o, labels.shape, strict=True)
        )
        other = tuple(
            slice(max(0, c), n - max(0, -c)) for c, n in zip(o, labels.shape, strict=True)
        )
        np.add.at(counts, (labels[centre].ravel(), labels[other].ravel()), 1)
    return counts


def test_count_adjacency_mostly_background():
    # over half the windows (padding included) all class 0: counted apart from the histogram
    labels = np.zeros((40, 40), dtype=np.int64)
    labels[2:5, 5:8] = 1
    labels[-1, 0] = 2
    np.testing.assert_array_equal(count_adjacency(labels, 3), brute_counts(labels, 3))
    volume = np.zeros((40, 36, 16), dtype=np.int64)
    volume[2:5, 5:8, 1:3] = 1
    volume[-1, 0, 15] = 2
    np.testing.assert_array_equal(sliced_counts(labels, 3), brute_counts(labels, 3))
    np.testing.assert_array_equal(count_adjacency(volume, 3), sliced_counts(volume, 3))


def test_count_adjacency_many_classes_equals_brute_force():
    # K=300: one offset per histogram (the packed codes would overflow), same counts
    labels = np.random.default_rng(1).integers(0, 300, (4, 5))
    np.testing.assert_array_equal(count_adjacency(labels, 300), brute_counts(labels, 300))


@pytest.mark.parametrize(
    ("shape", "pairs"),
    [
        # along an axis of size n, the valid offsets per coordinate sum to 3n - 2; the product
        # over the axes counts (voxel, offset) pairs, the centre offset included once per voxel
        ((4, 5), (3 * 4 - 2) * (3 * 5 - 2) - 4 * 5),  # 10 * 13 - 20 = 110
        ((3, 3, 3), 7**3 - 27),  # 316
        ((1, 1), 0),
    ],
)
def test_count_adjacency_sums_to_the_number_of_pairs(shape, pairs):
    labels = np.random.default_rng(0).integers(0, 3, shape)
    assert count_adjacency(labels, 3).sum() == pairs


def test_count_adjacency_by_hand():
    # [0 0 1]: the two 0s see each other (2 ordered pairs), the middle 0 and the 1 (1 each way)
    np.testing.assert_array_equal(count_adjacency(np.array([[0, 0, 1]]), 2), [[2, 1], [1, 0]])


@pytest.mark.parametrize(
    ("labels", "kwargs", "match"),
    [
        (np.array([[0, 3]]), {"K": 3}, r"values \[3\] outside the 3 classes"),
        (np.array([[0, -1]]), {"K": 3}, r"values \[-1\]"),
        (np.array([[0, 0.5]]), {"K": 3}, "integer class indices"),
        (np.zeros((0, 3), dtype=int), {"K": 3}, "non-empty"),
        (np.zeros((2, 2), dtype=int), {"K": 3, "n_size": 0}, "n_size"),
        (np.zeros((2, 2), dtype=int), {"K": 0}, "K must be"),
    ],
)
def test_count_adjacency_bad_input(labels, kwargs, match):
    with pytest.raises(ValueError, match=match):
        count_adjacency(labels, **kwargs)


# ---------------------------------------------------------------------------------------------
# AdjacencyEstimator
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (1, 3, 4, 3, 3)])
def test_estimator_equals_brute_force(shape):
    probs, _ = random_probs(shape)
    A = AdjacencyEstimator(3, dims=len(shape) - 2)(probs)
    assert A.shape == (3, 3) and A.dtype == torch.float64
    np.testing.assert_allclose(A.numpy(), brute_adjacency(probs.numpy()), rtol=1e-12)
    np.testing.assert_allclose(A.numpy(), A.numpy().T, rtol=1e-12)


@pytest.mark.parametrize("shape", [(2, 6, 7), (5, 4, 3)])
def test_estimator_on_one_hot_counts_the_pairs(shape):
    # one-hot: 3^d B N A[i, j] = pairs (voxel of i, neighbour of j) + the voxels of i on the
    # diagonal (each voxel is in its own window)
    K = 4
    labels = np.random.default_rng(3).integers(0, K, shape)
    batch = labels if len(shape) == 3 else labels[None]  # B *xyz
    probs = torch.cat([one_hot(lab, K) for lab in batch])
    B, _, *xyz = probs.shape
    A = AdjacencyEstimator(K, dims=len(xyz))(probs).numpy()
    counts = sum(brute_counts(lab, K) for lab in batch)
    sizes = np.diag(np.bincount(batch.ravel(), minlength=K))
    np.testing.assert_allclose(3 ** len(xyz) * B * math.prod(xyz) * A, counts + sizes, rtol=1e-12)


def test_estimator_is_zero_for_classes_far_apart():
    labels = np.zeros((8, 8), dtype=np.int64)
    labels[:2, :2] = 1  # top-left
    labels[6:, 6:] = 2  # bottom-right
    A = AdjacencyEstimator(3)(one_hot(labels, 3))
    assert A[1, 2].item() == 0.0 and A[2, 1].item() == 0.0
    assert A[0, 1].item() > 0 and A[0, 2].item() > 0


def test_estimator_gradients_flow():
    probs, logits = random_probs((2, 3, 5, 4), requires_grad=True)
    AdjacencyEstimator(3)(probs)[0, 1].backward()
    assert logits.grad is not None
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("args", "probs", "match"),
    [
        ((3,), torch.ones(1, 4, 3, 3) / 4, r"B K H W with K=3, got shape \(1, 4, 3, 3\)"),
        ((3, 3), torch.ones(1, 3, 3, 3) / 3, r"B K X Y Z with K=3"),
        ((3,), torch.ones(1, 3, 3, 3, dtype=torch.int64), "floating point"),
        ((0,), None, "K must be a positive integer"),
        ((3, 4), None, "dims must be 2 or 3"),
    ],
)
def test_estimator_bad_input(args, probs, match):
    with pytest.raises(ValueError, match=match):
        AdjacencyEstimator(*args)(probs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_estimator_and_loss_on_cuda():
    probs, _ = random_probs((2, 4, 12, 12))
    graph = count_adjacency(heart(), 4)
    on_cpu = NonAdjacencyLoss(idc=[0, 1, 2, 3], graph=graph)(probs)
    on_gpu = NonAdjacencyLoss(idc=[0, 1, 2, 3], graph=graph)(probs.cuda())
    assert on_gpu.device.type == "cuda"
    np.testing.assert_allclose(on_gpu.item(), on_cpu.item(), rtol=1e-5)
    A = AdjacencyEstimator(4)(probs.cuda())
    np.testing.assert_allclose(A.cpu().numpy(), AdjacencyEstimator(4)(probs).numpy(), rtol=1e-10)


# ---------------------------------------------------------------------------------------------
# NonAdjacencyLoss
# ---------------------------------------------------------------------------------------------

# classes 1 and 2 never adjacent: the forbidden pairs are (1, 2) and (2, 1)
GRAPH_12 = [[5, 3, 3], [3, 5, 0], [3, 0, 5]]


def test_loss_by_hand():
    # 1 x 3 x 1 x 2 image: pixel 0 = (0, .5, .5), pixel 1 = class 2. Box filter = sum / 9.
    # A[1, 2] = (.5 * (.5 + 1) / 9 + 0) / 2 = 1 / 24;  A[2, 1] = (.5 * .5 / 9 + 1 * .5 / 9) / 2
    # = 1 / 24; loss = (1/24 + 1/24) / 2 forbidden pairs = 1 / 24
    probs = torch.tensor([[0.0, 0.0], [0.5, 0.0], [0.5, 1.0]], dtype=torch.float64)[None, :, None]
    loss = NonAdjacencyLoss(idc=[0, 1, 2], graph=GRAPH_12)
    assert loss(probs, None).item() == pytest.approx(1 / 24, rel=1e-6)
    # one-hot 1 | 2: A[1, 2] = A[2, 1] = (1 / 9) / 2 pixels -> loss 1 / 18
    hard = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)[None, :, None]
    assert loss(hard, None).item() == pytest.approx(1 / 18, rel=1e-6)


@pytest.mark.parametrize("dims", [2, 3])
def test_loss_is_zero_when_the_graph_is_respected_and_positive_otherwise(dims):
    labels = heart() if dims == 2 else np.stack([heart()] * 3, axis=-1)
    graph = count_adjacency(labels, 4)  # 3 never meets 0 or 1
    assert forbidden_pairs(graph)[[0, 1, 3, 3], [3, 3, 0, 1]].all()
    loss = NonAdjacencyLoss(idc=[0, 1, 2, 3], graph=graph)
    assert loss(one_hot(labels, 4), None).item() == 0.0

    broken = labels.copy()
    broken[(0, 0) + (0,) * (dims - 2)] = 3  # a cavity pixel in the background corner
    assert loss(one_hot(broken, 4), None).item() > 0


def test_loss_lambda_scales_and_is_settable():
    probs, _ = random_probs((2, 3, 6, 5))
    base = NonAdjacencyLoss(idc=[0, 1, 2], graph=GRAPH_12)(probs).item()
    assert base > 0
    scaled = NonAdjacencyLoss(idc=[0, 1, 2], graph=GRAPH_12, lambda_=3.0)
    assert scaled(probs).item() == pytest.approx(3 * base, rel=1e-6)
    scaled.lambda_ = 0.5  # as a lambda scheduler does between epochs
    assert scaled(probs).item() == pytest.approx(0.5 * base, rel=1e-6)
    for bad in (-1.0, float("nan"), float("inf"), "1"):
        with pytest.raises(ValueError, match="lambda_"):
            scaled.lambda_ = bad


def test_loss_ignores_target_and_needs_no_ground_truth():
    probs, _ = random_probs((1, 3, 4, 4))
    loss = NonAdjacencyLoss(idc=[0, 1, 2], graph=GRAPH_12)
    assert loss(probs, None).item() == loss(probs, torch.zeros(7)).item() == loss(probs).item()


def test_loss_idc_restricts_the_forbidden_pairs():
    # classes 1 and 2 forbidden together; with idc [0, 1] no forbidden pair is left
    probs, _ = random_probs((1, 3, 4, 4), requires_grad=True)
    with pytest.warns(UserWarning, match="no forbidden pair"):
        loss = NonAdjacencyLoss(idc=[0, 1], graph=GRAPH_12)
    value = loss(probs)
    assert value.item() == 0.0
    value.backward()  # a zero that still backpropagates, alone or in a sum


def test_loss_gradients_flow_in_3d():
    probs, logits = random_probs((1, 3, 4, 4, 3), requires_grad=True)
    NonAdjacencyLoss(idc=[0, 1, 2], graph=GRAPH_12)(probs).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_loss_through_get_loss_with_a_graph_file(tmp_path):
    path = tmp_path / "graph.csv"
    path.write_text("".join(";".join(map(str, row)) + "\n" for row in GRAPH_12))
    np.testing.assert_array_equal(read_graph(path), GRAPH_12)
    assert "NonAdjacencyLoss" in LOSSES and "AdjacencyEstimator" not in LOSSES
    loss = get_loss("NonAdjacencyLoss", idc=[0, 1, 2], graph=str(path), lambda_=1.0)
    probs, _ = random_probs((2, 3, 5, 5))
    expected = NonAdjacencyLoss(idc=[0, 1, 2], graph=GRAPH_12)(probs).item()
    assert loss(probs, None).item() == expected
    assert "graph.csv" in repr(loss)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"graph": [[1, 0], [0, 1, 2]]}, "graph must be a K x K matrix"),
        ({"graph": [[1, 0, 2], [0, 1, 2]]}, r"square K x K matrix of counts, got \(2, 3\)"),
        ({"graph": [[1, -1], [-1, 1]]}, "non-negative integer counts"),
        ({"graph": "/nonexistent/graph.csv"}, "cannot read the adjacency graph /nonexistent"),
        (
            {"graph": GRAPH_12, "idc": [0, 3]},
            r"NonAdjacencyLoss: idc: \[3\] outside the 3 classes of the graph",
        ),
        ({"graph": GRAPH_12, "lambda_": -2}, "lambda_ must be a finite non-negative number"),
    ],
)
def test_loss_bad_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NonAdjacencyLoss(**{"idc": [0, 1, 2], **kwargs})


def test_loss_bad_graph_file(tmp_path):
    path = tmp_path / "graph.csv"
    path.write_text("1;0\n0;x\n")
    with pytest.raises(ValueError, match=f"cannot read the adjacency graph {path}"):
        get_loss("NonAdjacencyLoss", idc=[0, 1], graph=str(path))
    with pytest.raises(ValueError, match="bad arguments"):
        get_loss("NonAdjacencyLoss", idc=[0, 1], graph=GRAPH_12, weight=2)


@pytest.mark.parametrize(
    ("probs", "match"),
    [
        (torch.ones(1, 4, 3, 3) / 4, r"graph \(array\) has 3 classes but probs has 4"),
        (torch.ones(1, 3, 3, 3), "not a probability simplex"),
        (torch.ones(1, 3, 5) / 3, r"B K H W or B K X Y Z, got \(1, 3, 5\)"),
    ],
)
def test_loss_bad_probs(probs, match):
    with pytest.raises(ValueError, match=match):
        NonAdjacencyLoss(idc=[0, 1, 2], graph=GRAPH_12)(probs, None)


# ---------------------------------------------------------------------------------------------
# forbidden_adjacencies
# ---------------------------------------------------------------------------------------------

# 0 = background, 2 = wall, 3 = cavity; 3 may not touch 0
MAP = np.array(
    [
        [0, 0, 0, 0, 0, 0],
        [0, 3, 2, 2, 2, 2],
        [0, 2, 2, 2, 2, 2],
        [2, 2, 3, 2, 0, 2],
        [2, 2, 2, 2, 2, 2],
    ]
)
FORBID_03 = np.zeros((4, 4), dtype=bool)
FORBID_03[0, 3] = FORBID_03[3, 0] = True


def test_forbidden_adjacencies_by_hand():
    # the 3 at (1, 1) has five 0 neighbours, (0, 0) (0, 1) (0, 2) (1, 0) (2, 0): 5 pairs (3, 0)
    # and 5 pairs (0, 3). Components touching: that 3 and the outer background (row 0 and
    # column 0, connected); the other 3 at (3, 2) and the 0 island at (3, 4) touch only 2s.
    assert forbidden_adjacencies(MAP, FORBID_03) == (10, 2)


def test_forbidden_adjacencies_zero_on_a_valid_map():
    valid = MAP.copy()
    valid[1, 1] = 2
    assert forbidden_adjacencies(valid, FORBID_03) == (0, 0)
    assert forbidden_adjacencies(heart(), forbidden_pairs(count_adjacency(heart(), 4))) == (0, 0)


def test_forbidden_adjacencies_diagonal_and_3d():
    # 3 forbidden next to itself: the two 3s of a pair see each other (2 ordered pairs), and
    # form one component; in 3D the two cavity pixels are stacked along the last axis
    forbid_33 = np.zeros((4, 4), dtype=bool)
    forbid_33[3, 3] = True
    volume = np.full((3, 3, 4), 2)
    volume[1, 1, 1:3] = 3
    assert forbidden_adjacencies(volume, forbid_33) == (2, 1)
    assert forbidden_adjacencies(MAP, forbid_33) == (0, 0)


@pytest.mark.parametrize(
    ("pred", "forbidden", "match"),
    [
        (MAP, np.zeros((4, 3), dtype=bool), "square K x K"),
        (MAP, np.full((4, 4), 2), "bool matrix"),
        (MAP, np.zeros((3, 3), dtype=bool), r"pred has values \[3\] outside the 3 classes"),
    ],
)
def test_forbidden_adjacencies_bad_input(pred, forbidden, match):
    with pytest.raises(ValueError, match=match):
        forbidden_adjacencies(pred, forbidden)


# ---------------------------------------------------------------------------------------------
# preprocess/extract_adjacency.py
# ---------------------------------------------------------------------------------------------


def save_nii(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(labels.astype(np.uint8), np.eye(4)), path)


@pytest.fixture()
def volumes(tmp_path) -> tuple[Path, list[np.ndarray]]:
    """Two small label volumes, K=3, one in a sub-folder."""
    rng = np.random.default_rng(5)
    labels = [rng.integers(0, 3, (5, 4, 3)), rng.integers(0, 3, (4, 4, 2))]
    save_nii(tmp_path / "src" / "a_gt.nii.gz", labels[0])
    save_nii(tmp_path / "src" / "sub" / "b_gt.nii", labels[1])
    return tmp_path / "src", labels


def test_cli_writes_the_graph(volumes, tmp_path, capsys):
    source, labels = volumes
    dest = tmp_path / "graph"
    assert main([str(source), str(dest), "3"]) == 0
    expected = brute_counts(labels[0], 3) + brute_counts(labels[1], 3)
    np.testing.assert_array_equal(read_graph(dest / "graph.csv"), expected)
    with Image.open(dest / "graph.png") as image:
        assert image.format == "PNG" and image.size[0] > 100
    assert sorted(p.name for p in dest.iterdir()) == ["graph.csv", "graph.png"]
    assert "graph.csv" in capsys.readouterr().out


def test_cli_2d_neighbourhoods_and_n_size(volumes, tmp_path):
    source, labels = volumes
    counts = extract(source, tmp_path / "g2", 3, dims=2)
    expected = sum(brute_counts(lab[..., z], 3) for lab in labels for z in range(lab.shape[-1]))
    np.testing.assert_array_equal(counts, expected)
    counts = extract(source, tmp_path / "g3", 4, n_size=2)  # K larger than the labels need
    expected = brute_counts(labels[0], 4, 2) + brute_counts(labels[1], 4, 2)
    np.testing.assert_array_equal(counts, expected)
    assert forbidden_pairs(counts)[3].all()


def test_cli_png_and_npy_slices(tmp_path):
    rng = np.random.default_rng(6)
    slices = [rng.integers(0, 4, (6, 5)), rng.integers(0, 4, (5, 5))]
    (tmp_path / "gt").mkdir()
    Image.fromarray(slices[0].astype(np.uint8)).save(tmp_path / "gt" / "p_0000.png")
    Image.fromarray(slices[1].astype(np.uint8)).save(tmp_path / "gt" / "p_0001.png")
    np.save(tmp_path / "gt" / "p.npy", slices[0])
    expected = brute_counts(slices[0], 4) + brute_counts(slices[1], 4)
    assert main([str(tmp_path), str(tmp_path / "g"), "4", "--pattern", "*.png"]) == 0
    np.testing.assert_array_equal(read_graph(tmp_path / "g" / "graph.csv"), expected)
    np.testing.assert_array_equal(
        extract(tmp_path, tmp_path / "h", 4, pattern="*.npy"), brute_counts(slices[0], 4)
    )


def test_cli_out_of_range_labels(volumes, tmp_path, capsys):
    source, _ = volumes
    save_nii(source / "c_gt.nii.gz", np.full((3, 3, 3), 7))
    dest = tmp_path / "graph"
    assert main([str(source), str(dest), "3"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "c_gt.nii.gz" in err and "[7]" in err
    assert not dest.exists() or not any(dest.iterdir())


def test_cli_no_matching_file(volumes, tmp_path, capsys):
    source, _ = volumes
    assert main([str(source), str(tmp_path / "graph"), "3", "--pattern", "*.mha"]) == 1
    err = capsys.readouterr().err
    assert "error: no file matching '*.mha'" in err and str(source) in err
    assert not (tmp_path / "graph").exists()


def test_cli_as_a_script(volumes, tmp_path):
    source, _ = volumes
    script = ROOT / "preprocess" / "extract_adjacency.py"
    result = subprocess.run(
        [sys.executable, str(script), str(source), str(tmp_path / "graph"), "2"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 1
    assert "error: " in result.stderr and "outside the 2 classes" in result.stderr
    assert not (tmp_path / "graph").exists()


def test_loss_reads_nothing_back_after_its_first_call(monkeypatch):
    """The simplex check of probs reads the device on the first call (or every call with
    validate=True); the estimator and the penalty read nothing."""
    probs, _ = random_probs((2, 3, 6, 5))
    loss = NonAdjacencyLoss(idc=[0, 1, 2], graph=GRAPH_12)
    assert_checked_once(monkeypatch, lambda: loss(probs))
    with pytest.raises(ValueError, match="not a probability simplex"):
        NonAdjacencyLoss(idc=[0, 1, 2], graph=GRAPH_12, validate=True)(probs * 2)
    validating = NonAdjacencyLoss(idc=[0, 1, 2], graph=GRAPH_12, validate=True)
    validating(probs)
    with pytest.raises(ValueError, match="not a probability simplex"):
        validating(probs * 2)
