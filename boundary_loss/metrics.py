"""Surface distance metrics on binary masks: Hausdorff distance (HD) and its 95th percentile (HD95).

The definitions are those of medpy (`medpy.metric.binary.hd` / `hd95`), which the segmentation
literature, the boundary-loss papers (Kervadec et al., MIDL 2019 / MedIA 2021) included, reports:

- the border of a mask is `mask XOR binary_erosion(mask, generate_binary_structure(ndim, c))`,
  with connectivity c = 1 by default and voxels outside the volume counted as background;
- the directed surface distances from A to B are, for each border voxel of A, the Euclidean
  distance (in mm, with the voxel spacing) to the nearest border voxel of B;
- HD is the largest directed distance either way; HD95 is the 95th percentile (numpy's linear
  interpolation) of both directed sets pooled.

Two differences from medpy, both chosen so a validation loop never crashes on an empty mask:
both masks empty gives 0, exactly one empty gives the diagonal of the volume in mm (medpy raises).

Speed: medpy computes a distance transform of the whole volume for each direction, twice (once
for hd, once for hd95). Here the borders are extracted on the bounding box of both masks (grown by
one voxel so the erosion sees the same background), and the nearest-border distances come from
k-d trees over the border voxels (in mm), once for both metrics: the cost follows the size of the
surfaces, not of the volume. The distances are the same Euclidean distances (float64).

Every metric of the pipeline lives here:

- per slice, on one-hot `B K *xyz` tensors: `dice_coef` (B x K), `dice_batch` (K, the batch as
  one volume), `hausdorff` (B x K in mm) and the set helpers `intersection`, `union`,
  `inter_sum`, `union_sum`, with the names and conventions of the original `utils.py`;
- per volume: `hd`, `hd95`, `hd_hd95` (numpy, k-d trees) and `hd_hd95_torch` (on the device),
  and `metrics_3d`, the 3D Dice, HD and HD95 of every validation patient;
- the forbidden adjacencies of a prediction (Ganaye et al., MICCAI 2018): `forbidden_adjacencies`
  for one label map and `adjacency_violations` per patient; the graph itself is in `adjacency.py`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from scipy.ndimage import binary_dilation, binary_erosion, generate_binary_structure, label
from scipy.spatial import cKDTree
from torch import Tensor, einsum

from boundary_loss.io.distributed import Context
from boundary_loss.maps.adjacency import check_labels, count_adjacency
from boundary_loss.maps.distance import (
    Spacing,
    as_numpy,
    bounding_box,
    diagonal,
    normalise_spacing,
    on_device,
)
from boundary_loss.maps.distance_torch import distance_to
from boundary_loss.maps.onehot import check_one_hot, check_same_shape, sset, uniq


def _check_pair(result: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    result = np.atleast_1d(np.asarray(result)).astype(bool)
    reference = np.atleast_1d(np.asarray(reference)).astype(bool)
    if result.shape != reference.shape:
        raise ValueError(
            f"result and reference must have the same shape, got {result.shape} and "
            f"{reference.shape}"
        )
    return result, reference


def surface_distances(
    result: np.ndarray, reference: np.ndarray, voxelspacing: Spacing = None, connectivity: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances both ways between two non-empty binary masks.

    Args:
        result, reference: binary arrays of the same shape (any number of dimensions).
        voxelspacing: voxel size per axis in mm (scalar or sequence); None means 1.
        connectivity: neighbourhood defining the border (1 = faces only, as medpy's default).

    Returns:
        (d_result_to_reference, d_reference_to_result): float64 vectors, one value per border voxel.

    Raises:
        ValueError: shapes differ, bad spacing, or either mask is empty.
    """
    result, reference = _check_pair(result, reference)
    spacing = normalise_spacing(voxelspacing, result.ndim)
    if not result.any() or not reference.any():
        raise ValueError("surface_distances needs two non-empty masks (see hd for the convention)")

    box = bounding_box(result | reference, margin=1)
    result, reference = result[box], reference[box]
    footprint = generate_binary_structure(result.ndim, connectivity)
    result_border = result ^ binary_erosion(result, structure=footprint, iterations=1)
    reference_border = reference ^ binary_erosion(reference, structure=footprint, iterations=1)

    result_points = np.argwhere(result_border) * spacing  # N x ndim, in mm
    reference_points = np.argwhere(reference_border) * spacing  # M x ndim
    to_reference, _ = cKDTree(reference_points).query(result_points, k=1)
    to_result, _ = cKDTree(result_points).query(reference_points, k=1)
    return to_reference, to_result


def hd_hd95(
    result: np.ndarray, reference: np.ndarray, voxelspacing: Spacing = None, connectivity: int = 1
) -> tuple[float, float]:
    """Hausdorff distance and its 95th percentile from one pair of distance transforms.

    Args:
        result, reference: binary arrays of the same shape (prediction and ground truth).
        voxelspacing: voxel size per axis in mm (scalar or sequence); None means 1.
        connectivity: neighbourhood defining the border (1, medpy's default).

    Returns:
        (hd, hd95) in mm. Both masks empty: (0, 0). Exactly one empty: the volume diagonal twice.

    Raises:
        ValueError: shapes differ, or the spacing has the wrong length or a non-positive value.
    """
    result, reference = _check_pair(result, reference)
    spacing = normalise_spacing(voxelspacing, result.ndim)
    has_result, has_reference = result.any(), reference.any()
    if not has_result and not has_reference:
        return 0.0, 0.0
    if not has_result or not has_reference:
        worst = diagonal(result.shape, spacing)
        return worst, worst

    d_ab, d_ba = surface_distances(result, reference, spacing, connectivity)
    hd = float(max(d_ab.max(), d_ba.max()))
    hd95 = float(np.percentile(np.hstack((d_ab, d_ba)), 95))
    return hd, hd95


def hd(
    result: np.ndarray, reference: np.ndarray, voxelspacing: Spacing = None, connectivity: int = 1
) -> float:
    """Symmetric Hausdorff distance in mm, as `medpy.metric.binary.hd` (see `hd_hd95`)."""
    return hd_hd95(result, reference, voxelspacing, connectivity)[0]


def hd95(
    result: np.ndarray, reference: np.ndarray, voxelspacing: Spacing = None, connectivity: int = 1
) -> float:
    """95th percentile Hausdorff distance in mm, as `medpy.metric.binary.hd95` (see `hd_hd95`)."""
    return hd_hd95(result, reference, voxelspacing, connectivity)[1]


def surface_hd_hd95(
    result: np.ndarray | Tensor, reference: np.ndarray | Tensor, voxelspacing: Spacing = None
) -> tuple[float, float]:
    """HD and HD95 where the masks are: `hd_hd95_torch` for tensors on an accelerator
    (`utils.on_device`, the rule of every distance computation), else `hd_hd95` on the CPU
    (k-d trees: faster there). Both give the same values."""
    if on_device(result):
        return hd_hd95_torch(result, reference, voxelspacing=voxelspacing)
    if torch.is_tensor(result):
        result, reference = result.numpy(), as_numpy(reference)
    return hd_hd95(result, reference, voxelspacing=voxelspacing)


def _border_torch(mask: Tensor) -> Tensor:
    """`mask XOR erosion(mask)` with face connectivity; `mask` is padded with False already."""
    eroded = mask.clone()
    for axis in range(mask.ndim):
        for shift in (1, -1):
            eroded &= torch.roll(mask, shift, axis)  # the False padding stops the wrap-around
    return mask & ~eroded


def _percentile_linear(values: Tensor, q: float) -> float:
    """numpy.percentile(values, q) with its default linear interpolation, for a 1D tensor."""
    ordered = values.sort().values
    position = q / 100 * (len(ordered) - 1)
    low = int(np.floor(position))
    high = min(low + 1, len(ordered) - 1)
    fraction = position - low
    a, b = float(ordered[low]), float(ordered[high])
    return b - (b - a) * (1 - fraction) if fraction >= 0.5 else a + (b - a) * fraction


def hd_hd95_torch(
    result: Tensor, reference: Tensor, voxelspacing: Spacing = None
) -> tuple[float, float]:
    """`hd_hd95` on the tensors' device (the GPU during validation): same definitions, same
    conventions for empty masks, face connectivity.

    The borders are taken on the bounding box of both masks padded with one background voxel,
    and each directed distance is read from an exact float64 distance transform of the other
    border (`distance_torch.distance_to`) instead of a k-d tree.

    Args:
        result, reference: binary tensors of the same shape (prediction and ground truth).
        voxelspacing: voxel size per axis in mm (scalar or sequence); None means 1.

    Returns:
        (hd, hd95) in mm, as `hd_hd95` (to float64 rounding).
    """
    if result.shape != reference.shape:
        raise ValueError(
            f"result and reference must have the same shape, got {tuple(result.shape)} and "
            f"{tuple(reference.shape)}"
        )
    result, reference = result.bool(), reference.bool()
    spacing = normalise_spacing(voxelspacing, result.ndim)
    has_result, has_reference = bool(result.any()), bool(reference.any())
    if not has_result and not has_reference:
        return 0.0, 0.0
    if not has_result or not has_reference:
        worst = diagonal(tuple(result.shape), spacing)
        return worst, worst

    hits = (result | reference).nonzero()
    low, high = hits.amin(0).tolist(), (hits.amax(0) + 1).tolist()
    box = tuple(slice(a, b) for a, b in zip(low, high, strict=True))
    pad = [1, 1] * result.ndim
    borders = [
        _border_torch(torch.nn.functional.pad(m[box].to(torch.uint8), pad).bool())
        for m in (result, reference)
    ]
    to_border = distance_to(
        torch.stack(borders)[:, None], spacing.tolist(), result.ndim, dtype=torch.float64
    )  # 2 1 *xyz: distance to the result's border, to the reference's border
    d_ab = to_border[1, 0][borders[0]]  # result border -> reference border
    d_ba = to_border[0, 0][borders[1]]
    hd = float(torch.maximum(d_ab.max(), d_ba.max()))
    return hd, _percentile_linear(torch.cat((d_ab, d_ba)), 95)


# ---------------------------------------------------------------------------------------------
# Per-slice metrics (the original utils.py names)
# ---------------------------------------------------------------------------------------------


def meta_dice(
    sum_str: str, label: Tensor, pred: Tensor, smooth: float = 1e-8, *, validate: bool = True
) -> Tensor:
    """Dice of one-hot tensors reduced by the einsum string `sum_str` (float32).

    Their shapes are checked on every call; `validate` also checks that both are one-hot, which
    reads their values back from the device (a synchronisation): a training loop checks its
    first batch and passes False for the next ones.
    """
    check_same_shape(label, pred, ("label", "pred"))
    if validate:
        check_one_hot(label, "label")
        check_one_hot(pred, "pred")

    label64, pred64 = label.to(torch.float64), pred.to(torch.float64)
    inter_size = einsum(sum_str, label64 * pred64).to(torch.float32)
    sum_sizes = (einsum(sum_str, label64) + einsum(sum_str, pred64)).to(torch.float32)
    return (2 * inter_size + smooth) / (sum_sizes + smooth)


def dice_coef(
    label: Tensor, pred: Tensor, smooth: float = 1e-8, *, validate: bool = True
) -> Tensor:
    """Dice per slice and class: one-hot `B K *xyz` pair -> `B K` float32 (`validate`: as
    `meta_dice`, False skips the one-hot check and reads nothing back from the device)."""
    return meta_dice("bk...->bk", label, pred, smooth, validate=validate)


def dice_batch(
    label: Tensor, pred: Tensor, smooth: float = 1e-8, *, validate: bool = True
) -> Tensor:
    """Dice per class over the whole batch taken as one volume: `B K *xyz` pair -> `K` float32
    (`validate`: as `dice_coef`)."""
    return meta_dice("bk...->k", label, pred, smooth, validate=validate)


def _check_binary_pair(a: Tensor, b: Tensor) -> None:
    check_same_shape(a, b, ("a", "b"))
    for name, t in (("a", a), ("b", b)):
        if not sset(t, [0, 1]):
            raise ValueError(f"{name} must be binary (0/1), got values {sorted(uniq(t))}")


def intersection(a: Tensor, b: Tensor) -> Tensor:
    """Element-wise AND of two binary tensors of the same shape (their dtype kept)."""
    _check_binary_pair(a, b)
    return a * b if a.is_floating_point() else a & b


def union(a: Tensor, b: Tensor) -> Tensor:
    """Element-wise OR of two binary tensors of the same shape (their dtype kept)."""
    _check_binary_pair(a, b)
    return a + b - a * b if a.is_floating_point() else a | b


def inter_sum(a: Tensor, b: Tensor) -> Tensor:
    """Size of the intersection per image and class: `B K *xyz` pair -> `B K` float32."""
    return einsum("bk...->bk", intersection(a, b).to(torch.float32))


def union_sum(a: Tensor, b: Tensor) -> Tensor:
    """Size of the union per image and class: `B K *xyz` pair -> `B K` float32."""
    return einsum("bk...->bk", union(a, b).to(torch.float32))


def hausdorff(
    preds: Tensor, target: Tensor, spacing: Tensor | np.ndarray | Sequence | None = None
) -> Tensor:
    """Hausdorff distance per slice and class, in mm (medpy's surface definition, metrics.hd).

    Args:
        preds, target: one-hot `B K *xyz` tensors.
        spacing: `B D` voxel spacing of each slice (D spatial axes), or one `D` row for all;
            None means 1.

    Returns:
        `B K` float32 on preds' device. Both masks empty: 0. Exactly one empty: the image
        diagonal in mm, the worst possible value.
    """
    check_same_shape(preds, target, ("preds", "target"))
    check_one_hot(preds, "preds")
    check_one_hot(target, "target")
    B, K, *img_shape = preds.shape
    D = len(img_shape)
    if spacing is None:
        spacings = np.ones((B, D))
    else:
        spacings = np.asarray(as_numpy(spacing), dtype=np.float64)
        if spacings.shape == (D,):
            spacings = np.tile(spacings, (B, 1))
        if spacings.shape != (B, D):
            raise ValueError(f"spacing must have shape ({B}, {D}) or ({D},), got {spacings.shape}")
        for row in spacings:
            normalise_spacing(row, D, "spacing")

    n_pred = preds.detach().cpu().numpy().astype(bool)
    n_target = target.detach().cpu().numpy().astype(bool)
    res = torch.zeros((B, K), dtype=torch.float32)
    for b in range(B):
        for k in range(K):
            p, t = n_pred[b, k], n_target[b, k]
            if p.any() and t.any():
                res[b, k] = hd(p, t, voxelspacing=spacings[b])
            elif p.any() or t.any():
                res[b, k] = diagonal(img_shape, spacings[b])
    return res.to(preds.device)


# ---------------------------------------------------------------------------------------------
# Per volume: 3D Dice, HD and HD95 of every validation patient
# ---------------------------------------------------------------------------------------------


def metrics_3d(
    volumes: Mapping[str, Mapping[str, np.ndarray]],
    K: int,
    spacing_3d: Mapping[str, Sequence],
    device: torch.device | None = None,
    context: Context | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """3D Dice, HD and HD95 per patient (sorted by name) and class: three `P K` arrays.

    Spacing: the patient's entry in spacing_3d.json when present, else its slices' spacing.
    The volumes are moved to `device` (when given) and `surface_hd_hd95` chooses the transform
    there; under torchrun each process measures its share of the patients.
    """
    context = context or Context()
    keys = sorted(volumes)
    mine = {}
    for key in keys[context.rank :: context.world_size]:
        pred, gt = volumes[key]["pred"], volumes[key]["gt"]  # X Y Z
        spacing = spacing_3d.get(key, volumes[key]["spacing"])
        if device is not None and device.type != "cpu":  # measured where the network runs
            pred, gt = torch.from_numpy(pred).to(device), torch.from_numpy(gt).to(device)
        rows = np.zeros((3, K), dtype=np.float32)  # dsc, hd, hd95
        for k in range(K):
            p, t = pred == k, gt == k
            rows[0, k] = (2 * float((p & t).sum()) + 1e-8) / (float(p.sum() + t.sum()) + 1e-8)
            rows[1:, k] = surface_hd_hd95(p, t, spacing)
        mine[key] = rows
    merged = {k: v for part in context.gather(mine) for k, v in part.items()}
    table = np.stack([merged[key] for key in keys]) if keys else np.zeros((0, 3, K), np.float32)
    return table[:, 0], table[:, 1], table[:, 2]


# ---------------------------------------------------------------------------------------------
# Forbidden adjacencies (Ganaye et al., MICCAI 2018)
# ---------------------------------------------------------------------------------------------


def forbidden_adjacencies(
    pred: np.ndarray, forbidden: np.ndarray, n_size: int = 1
) -> tuple[int, int]:
    """How often a label map breaks the adjacency graph (Ganaye et al., MICCAI 2018).

    Args:
        pred: `*xyz` predicted class indices (2D or 3D), in 0..K-1.
        forbidden: `K K` bool, True for the forbidden pairs (`forbidden_pairs(graph)`).
        n_size: half width of the neighbourhood, as in `count_adjacency`.

    Returns:
        (pairs, components): pairs is the number of ordered (voxel, neighbour) pairs whose classes
        form a forbidden pair, as counted by `count_adjacency` (a contact between classes i and j
        counts from both sides when both (i, j) and (j, i) are forbidden); components is the
        number of connected components (`scipy.ndimage.label` per class, full connectivity)
        with at least one voxel having a forbidden neighbour: both sides of a contact count.
        A map respecting the graph gives (0, 0).

    Raises:
        ValueError: forbidden not a square bool matrix, or pred not class indices 0..K-1.
    """
    forbidden = np.asarray(forbidden)
    if forbidden.ndim != 2 or forbidden.shape[0] != forbidden.shape[1] or forbidden.size == 0:
        raise ValueError(f"forbidden must be a square K x K matrix, got shape {forbidden.shape}")
    if forbidden.dtype != bool:
        if not np.all((forbidden == 0) | (forbidden == 1)):
            raise ValueError(f"forbidden must be a bool matrix, got dtype {forbidden.dtype}")
        forbidden = forbidden.astype(bool)
    K = forbidden.shape[0]
    labels = check_labels(pred, K, "pred")
    counts = count_adjacency(labels, K, n_size)
    pairs = int(counts[forbidden].sum())
    if pairs == 0:
        return 0, 0

    window = np.ones((2 * n_size + 1,) * labels.ndim, dtype=bool)
    window[(n_size,) * labels.ndim] = False  # the neighbours, not the voxel itself
    connectivity = generate_binary_structure(labels.ndim, labels.ndim)
    components = 0
    for k in range(K):
        mask = labels == k
        if not forbidden[k].any() or not mask.any():
            continue
        has_bad_neighbour = binary_dilation(forbidden[k][labels], structure=window)
        touching = mask & has_bad_neighbour
        if touching.any():
            regions, _ = label(mask, structure=connectivity)
            components += np.unique(regions[touching]).size
    return pairs, components


def adjacency_violations(
    volumes: Mapping[str, Mapping[str, np.ndarray]], forbidden: np.ndarray, dims: int = 2
) -> np.ndarray:
    """Forbidden adjacencies in each patient's prediction (sorted by name): `P 2` array of the
    forbidden voxel pairs and the connected components involved, counted slice by slice with
    `dims` 2 (2D neighbourhoods, as the graph of the 2D training slices and the 2D estimator),
    or in the whole volume with `dims` 3 (3D neighbourhoods, as a 3D training's graph)."""
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims!r}")
    keys = sorted(volumes)
    res = np.zeros((len(keys), 2), dtype=np.float32)
    for i, key in enumerate(keys):
        pred = volumes[key]["pred"]  # X Y Z
        if dims == 3:
            res[i] = forbidden_adjacencies(pred, forbidden)
            continue
        for z in range(pred.shape[-1]):
            res[i] += forbidden_adjacencies(pred[..., z], forbidden)
    return res
