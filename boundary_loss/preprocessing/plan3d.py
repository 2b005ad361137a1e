"""The 3D network plan: patch size, poolings and convolution kernels, and plan.json checked.

The planner follows nnU-Net's rule (Isensee et al., Nature Methods 2021; `get_pool_and_conv_props`
of nnU-Net's experiment planning), on a patch in voxels of the target spacing:

- stage by stage, an axis is pooled (stride 2) when its current size is at least
  2 x `min_feature` (4: the smallest edge of a feature map in the bottleneck), its current
  spacing is under 2 x the smallest current spacing of those axes, and it was pooled fewer than
  `max_pools` times; a single axis left to pool is pooled only while its size is at least
  3 x `min_feature`; a pooled axis' spacing doubles and its size halves (rounded up);
- the convolution kernel of a stage is 3 along the axes whose current spacing is under 2 x the
  smallest current spacing and 1 along the others (once 3, it stays 3); the bottleneck's is 3
  along every axis;
- the patch starts from the median shape of the cases, shrinks one voxel at a time along the
  axis of largest physical extent (size x spacing; ties: the first) until it holds at most
  `max_patch_voxels` voxels, and is then rounded down along each axis to a multiple of
  2^(its poolings), the poolings planned again for the rounded patch until both agree.

nnU-Net sizes its patch from an estimate of the GPU memory instead of a voxel budget, shrinking
the axis of largest patch / median ratio; the budget here (128^3 voxels by default) is the
patch of nnU-Net's isotropic 3d_fullres plans.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from boundary_loss.preprocessing.nnunet_format import SCHEMES as CHANNEL_SCHEMES

MIN_FEATURE = 4  # nnU-Net's UNet_featuremap_min_edge_length
MAX_POOLS = 5  # poolings along one axis, at most
MAX_PATCH_VOXELS = 128**3  # the patch of nnU-Net's 3d_fullres plans for isotropic data
SPACING_RATIO = 2.0  # axes under this ratio to the finest spacing are pooled and get kernel 3

# The normalisation schemes a plan may name: nnU-Net's, as dataset.json's channel names give them.
SCHEMES = tuple(sorted(set(CHANNEL_SCHEMES.values())))


def pool_and_kernels(
    spacing: Sequence[float], patch: Sequence[int], min_feature: int, max_pools: int
) -> tuple[list[list[int]], list[list[int]]]:
    """nnU-Net's poolings and kernels of a patch (see the module docstring).

    Args:
        spacing: the target spacing (mm), X Y Z.
        patch: the patch, X Y Z voxels.
        min_feature: the smallest edge of a bottleneck feature map.
        max_pools: the most poolings along one axis.

    Returns:
        (pools, kernels): pools[i] the stride into stage i+1, kernels[i] the kernel of stage i
        (one more than pools, the bottleneck's last).
    """
    ndim = len(spacing)
    current = [float(s) for s in spacing]
    size = [float(n) for n in patch]
    counts = [0] * ndim
    kernel = [1] * ndim
    pools: list[list[int]] = []
    kernels: list[list[int]] = []
    while True:
        axes = [a for a in range(ndim) if size[a] >= 2 * min_feature]
        if not axes:
            break
        finest = min(current[a] for a in axes)
        axes = [a for a in axes if current[a] / finest < SPACING_RATIO and counts[a] < max_pools]
        if not axes or (len(axes) == 1 and size[axes[0]] < 3 * min_feature):
            break
        smallest = min(current)
        kernel = [
            3 if k == 3 or current[a] / smallest < SPACING_RATIO else 1
            for a, k in enumerate(kernel)
        ]
        kernels.append(list(kernel))
        pools.append([2 if a in axes else 1 for a in range(ndim)])
        for a in axes:
            counts[a] += 1
            current[a] *= 2
            size[a] = math.ceil(size[a] / 2)
    kernels.append([3] * ndim)
    return pools, kernels


def pools_per_axis(pools: Sequence[Sequence[int]], ndim: int = 3) -> list[int]:
    """How many times each axis is pooled (strides of 2)."""
    return [sum(1 for stride in pools if stride[a] == 2) for a in range(ndim)]


def plan_network(
    target_spacing: Sequence[float],
    median_shape: Sequence[int],
    max_patch_voxels: int = MAX_PATCH_VOXELS,
    min_feature: int = MIN_FEATURE,
    max_pools: int = MAX_POOLS,
) -> dict[str, list]:
    """The patch size, poolings and kernels of the 3D network (nnU-Net's rule, module docstring).

    Args:
        target_spacing: the spacing of the preprocessed volumes (mm), X Y Z.
        median_shape: the median shape of the preprocessed volumes (voxels), X Y Z; or a
            patch chosen by hand, whose poolings and kernels are then planned.
        max_patch_voxels: the most voxels in a patch.
        min_feature: the smallest edge of a bottleneck feature map.
        max_pools: the most poolings along one axis.

    Returns:
        {"patch_size": [px, py, pz], "pools": [[sx, sy, sz], ...], "kernels": [[kx, ky, kz],
        ...]}, the patch divisible along each axis by 2^(its poolings).

    Raises:
        ValueError: a spacing not finite and positive, a shape or a budget not positive.
    """
    spacing = np.asarray(target_spacing, dtype=np.float64)
    patch = [int(n) for n in median_shape]
    if spacing.shape != (len(patch),) or not (np.isfinite(spacing).all() and (spacing > 0).all()):
        raise ValueError(f"target spacing {list(target_spacing)}: expected positive sizes (mm)")
    if not patch or min(patch) < 1 or max_patch_voxels < 1 or min_feature < 1 or max_pools < 0:
        raise ValueError(
            f"median shape {patch}, max_patch_voxels {max_patch_voxels}, min_feature "
            f"{min_feature}, max_pools {max_pools}: expected positive sizes"
        )
    while math.prod(patch) > max_patch_voxels and max(patch) > 1:
        extent = [n * s if n > 1 else 0.0 for n, s in zip(patch, spacing, strict=True)]
        patch[int(np.argmax(extent))] -= 1
    while True:
        pools, kernels = pool_and_kernels(spacing, patch, min_feature, max_pools)
        steps = [2**n for n in pools_per_axis(pools, len(patch))]
        rounded = [max(step, n // step * step) for n, step in zip(patch, steps, strict=True)]
        if rounded == patch:
            return {"patch_size": patch, "pools": pools, "kernels": kernels}
        patch = rounded


def plan_patch(
    target_spacing: Sequence[float],
    patch: Sequence[int],
    min_feature: int = MIN_FEATURE,
    max_pools: int = MAX_POOLS,
) -> dict[str, list]:
    """The poolings and kernels of a patch chosen by hand (`plan_network` with the patch as the
    median shape and no voxel budget), the patch kept as given.

    Raises:
        ValueError: the patch is not divisible along each axis by 2^(its poolings); the
            message gives the nearest patch that is.
    """
    planned = plan_network(target_spacing, patch, math.prod(patch), min_feature, max_pools)
    if planned["patch_size"] != [int(n) for n in patch]:
        raise ValueError(
            f"not divisible along each axis by 2^(its poolings) at the spacing "
            f"{[float(s) for s in target_spacing]} mm (poolings per axis "
            f"{pools_per_axis(planned['pools'], len(patch))}); expected a patch such as "
            f"{' '.join(map(str, planned['patch_size']))}"
        )
    return planned


def _fail(path: Path, key: str, expected: str, value: object) -> ValueError:
    return ValueError(f"{path}: {key} is {value!r}; expected {expected}")


def _ints(value: object, length: int | None, low: int) -> bool:
    """Whether `value` is a list of ints >= low (of `length` when given)."""
    return (
        isinstance(value, list)
        and (length is None or len(value) == length)
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= low for v in value)
    )


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_plan(plan: object, path: str | Path) -> dict:
    """Check a loaded plan.json: every key of the 3D chain's plan, its type and consistency.

    Args:
        plan: the loaded JSON.
        path: the file, named in messages.

    Returns:
        `plan`, checked.

    Raises:
        ValueError: naming the file and the key: a key missing or of the wrong type; n_class
            not the number of labels; a normalisation entry per channel; pools of strides 1 or
            2 and kernels of sizes 1 or 3, one kernel more than pools; a patch not divisible
            along an axis by the product of its strides.
    """
    path = Path(path)
    if not isinstance(plan, dict):
        raise ValueError(f"{path}: expected a JSON object (the 3D plan), got {type(plan).__name__}")
    required = {
        "dimensions": "3",
        "name": "the dataset's name",
        "channels": "a list of channel names",
        "labels": "a list of [name, value]",
        "n_class": "the number of labels",
        "target_spacing": "three positive sizes (mm)",
        "median_shape": "three positive sizes",
        "normalisation": "one entry per channel",
        "patch_size": "three positive sizes",
        "batch_size": "a positive integer",
        "network": "{'pools': [...], 'kernels': [...]}",
        "slice_axis": "0, 1 or 2",
        "oversample_foreground": "a fraction in [0, 1]",
        "resampling": "{'image': ..., 'labels': ..., 'maps': ...}",
    }
    for key, expected in required.items():
        if key not in plan:
            raise ValueError(f"{path}: key {key!r} missing; expected {expected}")
    checks = {
        "dimensions": plan["dimensions"] == 3 and isinstance(plan["dimensions"], int),
        "name": isinstance(plan["name"], str) and bool(plan["name"]),
        "channels": isinstance(plan["channels"], list)
        and bool(plan["channels"])
        and all(isinstance(c, str) for c in plan["channels"]),
        "labels": isinstance(plan["labels"], list)
        and len(plan["labels"]) >= 2
        and all(
            isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) and _ints(p[1:], 1, 0)
            for p in plan["labels"]
        ),
        "target_spacing": isinstance(plan["target_spacing"], list)
        and len(plan["target_spacing"]) == 3
        and all(_number(s) and s > 0 for s in plan["target_spacing"]),
        "median_shape": _ints(plan["median_shape"], 3, 1),
        "patch_size": _ints(plan["patch_size"], 3, 1),
        "batch_size": _ints([plan["batch_size"]], 1, 1),
        "slice_axis": _ints([plan["slice_axis"]], 1, 0) and plan["slice_axis"] <= 2,
        "oversample_foreground": _number(plan["oversample_foreground"])
        and 0 <= plan["oversample_foreground"] <= 1,
        "resampling": isinstance(plan["resampling"], dict)
        and all(isinstance(plan["resampling"].get(k), str) for k in ("image", "labels", "maps")),
    }
    for key, ok in checks.items():
        if not ok:
            raise _fail(path, key, required[key], plan[key])
    if plan["n_class"] != len(plan["labels"]) or not _ints([plan["n_class"]], 1, 2):
        raise _fail(path, "n_class", f"{len(plan['labels'])} (one per label)", plan["n_class"])
    check_normalisation(plan, path)
    _check_network(plan, path)
    return plan


def check_normalisation(plan: dict, path: str | Path) -> None:
    """Check a plan's `normalisation` against its `channels`: one entry per channel, in order,
    each naming its channel and a scheme of `SCHEMES`, a 'ct' one with its statistics ('clip'
    [low, high], 'mean' and 'std', finite numbers), as `plan_norms` reads them.

    Raises:
        ValueError: naming the file and the first entry that is wrong.
    """
    path = Path(path)
    entries = plan["normalisation"]
    if not isinstance(entries, list) or len(entries) != len(plan["channels"]):
        raise _fail(path, "normalisation", f"{len(plan['channels'])} entries", entries)
    for channel, entry in zip(plan["channels"], entries, strict=True):
        ok = isinstance(entry, dict) and entry.get("channel") == channel
        ok = ok and entry.get("scheme") in SCHEMES
        if ok and entry["scheme"] == "ct":
            clip = entry.get("clip")
            ok = isinstance(clip, list) and len(clip) == 2 and all(map(_number, clip))
            ok = ok and _number(entry.get("mean")) and _number(entry.get("std"))
        if not ok:
            raise _fail(
                path,
                "normalisation",
                f"{{'channel': {channel!r}, 'scheme': one of {list(SCHEMES)}}} (a 'ct' scheme "
                "with 'clip' [low, high], 'mean' and 'std')",
                entry,
            )


def _check_network(plan: dict, path: Path) -> None:
    network = plan["network"]
    expected = "{'pools': [[1|2] x 3, ...], 'kernels': [[1|3] x 3, ...]}, one kernel more"
    if not isinstance(network, dict) or not {"pools", "kernels"} <= set(network):
        raise _fail(path, "network", expected, network)
    pools, kernels = network["pools"], network["kernels"]
    ok = isinstance(pools, list) and isinstance(kernels, list) and len(kernels) == len(pools) + 1
    ok = ok and all(_ints(p, 3, 1) and set(p) <= {1, 2} for p in pools)
    ok = ok and all(_ints(k, 3, 1) and set(k) <= {1, 3} for k in kernels)
    if not ok:
        raise _fail(path, "network", expected, network)
    steps = [2**n for n in pools_per_axis(pools)]
    for axis, (size, step) in enumerate(zip(plan["patch_size"], steps, strict=True)):
        if size % step:
            raise _fail(
                path,
                "patch_size",
                f"a multiple of {step} along axis {axis} (its poolings, network.pools)",
                plan["patch_size"],
            )


def read_plan(path: str | Path) -> dict:
    """Load and check a plan.json (`check_plan`).

    Raises:
        ValueError: the file is missing, not JSON, or not a valid plan; the message names it.
    """
    path = Path(path)
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: file not found (expected the 3D plan, plan.json)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable JSON file ({error})") from None
    return check_plan(plan, path)


def norm_entry(channel: str, norm: tuple) -> dict:
    """A channel's normalisation as plan.json writes it, from its tuple (see
    `volumes.normalise_channel`): ("ct", low, high, mean, std) -> {"channel", "scheme": "ct",
    "clip": [low, high], "mean", "std"}; (scheme,) -> {"channel", "scheme"}."""
    entry: dict[str, object] = {"channel": channel, "scheme": norm[0]}
    if norm[0] == "ct":
        _, low, high, mean, std = norm
        entry.update(clip=[float(low), float(high)], mean=float(mean), std=float(std))
    return entry


def plan_norms(plan: dict) -> tuple[tuple, ...]:
    """The normalisation tuple of each channel of a checked plan, as `volumes.normalise_channel`
    takes them (the inverse of `norm_entry`)."""
    norms = []
    for entry in plan["normalisation"]:
        if entry["scheme"] == "ct":
            low, high = entry["clip"]
            norms.append(("ct", low, high, entry["mean"], entry["std"]))
        else:
            norms.append((entry["scheme"],))
    return tuple(norms)
