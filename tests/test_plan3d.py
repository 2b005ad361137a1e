"""Tests of the 3D network plan (boundary_loss.preprocessing.plan3d).

Every plan below is worked out by hand in the comments, stage by stage, with nnU-Net's rule
(`get_pool_and_conv_props` of nnU-Net's experiment planning): an axis is pooled while its size is
at least 8 (2 x the smallest feature map, 4), its spacing under 2 x the smallest spacing of the
axes still that large, and its poolings under 5; a lone axis only while its size is at least 12;
a pooled axis' spacing doubles and its size halves, rounded up. A stage's kernel is 3 where the
spacing is under 2 x the smallest, else 1 (once 3, always 3); the bottleneck's is 3 everywhere.
"""

from __future__ import annotations

import json

import pytest

from boundary_loss.preprocessing.plan3d import (
    check_plan,
    norm_entry,
    plan_network,
    plan_norms,
    plan_patch,
    read_plan,
)

ALL = [2, 2, 2]
THREES = [3, 3, 3]


def test_isotropic_128_cube_pools_five_times():
    # 1 mm, 128^3 = the budget: sizes 128 -> 64 -> 32 -> 16 -> 8 -> 4 along every axis (each
    # size >= 8 before its pooling), the fifth pooling reaching max_pools; 128 is divisible by
    # 2^5. Kernels: 3 everywhere at every stage, and the bottleneck's.
    plan = plan_network((1.0, 1.0, 1.0), (128, 128, 128))
    assert plan == {"patch_size": [128, 128, 128], "pools": [ALL] * 5, "kernels": [THREES] * 6}


def test_standin_anisotropy_skips_the_thick_axis_first():
    # Spacing (0.9, 3.0, 1.1), median shape (56, 12, 46): 30912 voxels, within the budget.
    # Stage 0: sizes (56, 12, 46) all >= 8; spacing ratios to 0.9: 1, 3.33, 1.22 -> pool axes 0
    #   and 2 only; kernel (3, 1, 3). Spacing (1.8, 3.0, 2.2), sizes (28, 12, 23).
    # Stage 1: all >= 8; ratios to 1.8: 1, 1.67, 1.22 -> pool all; kernel (3, 3, 3).
    #   Spacing (3.6, 6.0, 4.4), sizes (14, 6, 12).
    # Stage 2: axis 1 (6) too small; ratios of axes 0, 2 to 3.6: 1, 1.22 -> pool (2, 1, 2);
    #   kernel (3, 3, 3) (6.0 / 3.6 < 2). Sizes (7, 6, 6): none >= 8, stop.
    # Poolings per axis (3, 1, 3): the patch must be divisible by (8, 2, 8): 56 and 12 are, 46
    # rounds down to 40; planned again for (56, 12, 40): sizes (28, 12, 20), (14, 6, 10),
    # (7, 6, 5) -> the same poolings.
    plan = plan_network((0.9, 3.0, 1.1), (56, 12, 46))
    assert plan["pools"] == [[2, 1, 2], ALL, [2, 1, 2]]
    assert plan["kernels"] == [[3, 1, 3], THREES, THREES, THREES]
    assert plan["patch_size"] == [56, 12, 40]


def test_a_spacing_ratio_of_two_is_not_pooled():
    # Spacing (1, 1, 2), median (96, 96, 96), budget 96 x 96 x 48 = 442368: extents (96, 96, 192)
    # mm; axis 2 has the largest extent until it is 48 voxels (96 mm), where the patch fits.
    # Stage 0: ratio of axis 2 is 2, not under 2 (nnU-Net's strict '<'): pool (2, 2, 1),
    #   kernel (3, 3, 1). Spacing (2, 2, 2), sizes (48, 48, 48).
    # Stages 1-3: all pooled, sizes 24, 12, 6; then 6 < 8 stops. Poolings (4, 4, 3): 96 and 48
    # are divisible by 16 and 8.
    plan = plan_network((1.0, 1.0, 2.0), (96, 96, 96), max_patch_voxels=96 * 96 * 48)
    assert plan["patch_size"] == [96, 96, 48]
    assert plan["pools"] == [[2, 2, 1], ALL, ALL, ALL]
    assert plan["kernels"] == [[3, 3, 1], THREES, THREES, THREES, THREES]


def test_the_patch_shrinks_to_the_budget_then_rounds_down():
    # 300^3 at 1 mm: the axis of largest extent (ties: the first) loses one voxel at a time,
    # x, y, z in turn, down to 128^3 = the budget.
    assert plan_network((1.0, 1.0, 1.0), (300, 300, 300))["patch_size"] == [128, 128, 128]
    # 57^3: sizes 57, 29, 15, 8, 4 -> 4 poolings, 57 rounds down to 48; planned again for 48:
    # 48, 24, 12, 6 -> 3 poolings, and 48 is divisible by 8.
    plan = plan_network((1.0, 1.0, 1.0), (57, 57, 57))
    assert plan == {"patch_size": [48, 48, 48], "pools": [ALL] * 3, "kernels": [THREES] * 4}


def test_a_lone_axis_is_pooled_only_while_at_least_12():
    # Spacing (1, 4, 4), median (40, 10, 10). Stage 0: ratios 1, 4, 4 -> axis 0 alone, 40 >= 12:
    # pool (2, 1, 1), kernel (3, 1, 1). Spacing (2, 4, 4), sizes (20, 10, 10). Stage 1: ratios
    # 1, 2, 2 -> axis 0 alone, 20 >= 12: pool (2, 1, 1), kernel (3, 1, 1) (4 / 2 is not under 2).
    # Spacing (4, 4, 4), sizes (10, 10, 10). Stage 2: pool all, kernel 3. Sizes 5: stop.
    plan = plan_network((1.0, 4.0, 4.0), (40, 10, 10))
    assert plan["pools"] == [[2, 1, 1], [2, 1, 1], ALL]
    assert plan["kernels"] == [[3, 1, 1], [3, 1, 1], THREES, THREES]
    assert plan["patch_size"] == [40, 10, 10]  # divisible by 8, 2, 2
    # (11, 10, 10): axis 0 alone at stage 0, but 11 < 12: no pooling at all.
    assert plan_network((1.0, 4.0, 4.0), (11, 10, 10)) == {
        "patch_size": [11, 10, 10],
        "pools": [],
        "kernels": [THREES],
    }


def test_a_patch_chosen_by_hand():
    assert plan_patch((0.9, 3.0, 1.1), (56, 12, 40)) == plan_network((0.9, 3.0, 1.1), (56, 12, 40))
    # (56, 12, 46): 3 poolings along axis 2 need a multiple of 8.
    with pytest.raises(ValueError, match=r"poolings per axis \[3, 1, 3\].*56 12 40"):
        plan_patch((0.9, 3.0, 1.1), (56, 12, 46))


def a_plan(**changes: object) -> dict:
    """A valid plan.json, the stand-in's, with `changes`."""
    plan = {
        "dimensions": 3,
        "name": "Dataset990_StandIn",
        "channels": ["CT", "T2"],
        "labels": [["background", 0], ["organ", 1], ["lesion", 2], ["vessel", 3]],
        "n_class": 4,
        "target_spacing": [0.9, 3.0, 1.1],
        "median_shape": [56, 12, 44],
        "normalisation": [
            {"channel": "CT", "scheme": "ct", "clip": [-3.0, 230.0], "mean": 107.7, "std": 45.1},
            {"channel": "T2", "scheme": "zscore"},
        ],
        "patch_size": [56, 12, 40],
        "batch_size": 2,
        "network": {"pools": [[2, 1, 2], ALL, [2, 1, 2]], "kernels": [[3, 1, 3], *[THREES] * 3]},
        "slice_axis": 1,
        "oversample_foreground": 0.33,
        "resampling": {"image": "cubic", "labels": "linear", "maps": "whole volume"},
    }
    plan.update(changes)
    return plan


def test_a_valid_plan_reads_back(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(a_plan()))
    assert read_plan(path) == a_plan()


@pytest.mark.parametrize(
    "changes, key",
    [
        ({"patch_size": [56, 12, 44]}, "patch_size"),  # 44 is not a multiple of 8
        ({"dimensions": 2}, "dimensions"),
        ({"n_class": 3}, "n_class"),
        ({"patch_size": [56, 12]}, "patch_size"),
        ({"target_spacing": [0.9, -3.0, 1.1]}, "target_spacing"),
        ({"network": {"pools": [[3, 1, 2]], "kernels": [THREES, THREES]}}, "network"),
        ({"network": {"pools": [ALL], "kernels": [THREES]}}, "network"),
        ({"normalisation": [{"channel": "CT", "scheme": "ct"}, {}]}, "normalisation"),
        ({"batch_size": True}, "batch_size"),
        ({"slice_axis": 3}, "slice_axis"),
        ({"labels": [["background", "0"], ["a", 1]], "n_class": 2}, "labels"),
    ],
)
def test_bad_plans_name_the_file_and_key(changes, key, tmp_path):
    path = tmp_path / "plan.json"
    with pytest.raises(ValueError, match=rf"{path}: {key} is"):
        check_plan(a_plan(**changes), path)


def test_missing_keys_and_unreadable_files(tmp_path):
    plan = a_plan()
    del plan["network"]
    with pytest.raises(ValueError, match=r"plan.json: key 'network' missing"):
        check_plan(plan, tmp_path / "plan.json")
    with pytest.raises(ValueError, match="file not found"):
        read_plan(tmp_path / "plan.json")
    (tmp_path / "plan.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a readable JSON file"):
        read_plan(tmp_path / "plan.json")


def test_normalisation_entries_round_trip():
    norms = (("ct", -3.0, 230.0, 107.5, 45.0), ("zscore",), ("nonorm",))
    entries = [norm_entry(name, norm) for name, norm in zip(("CT", "T2", "x"), norms, strict=True)]
    assert entries[0] == {
        "channel": "CT",
        "scheme": "ct",
        "clip": [-3.0, 230.0],
        "mean": 107.5,
        "std": 45.0,
    }
    assert entries[1] == {"channel": "T2", "scheme": "zscore"}
    assert plan_norms({"normalisation": entries}) == norms
