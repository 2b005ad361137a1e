"""config.py: the literal parser's `+`, the two --folders conventions, targets of each loss."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from boundary_loss.data.loader import FolderSpec, dist_map_transform, gt_transform, tensor_transform
from boundary_loss.training.config import (
    Config,
    ConfigError,
    check_config,
    check_target,
    folders_meaning,
    get_args,
    parse_folders,
    parse_literal,
    parse_losses,
    split_folders,
)

IN = FolderSpec("in_npy", tensor_transform, False)
GT = FolderSpec("gt_npy", gt_transform, True)
DIST = FolderSpec("gt_npy", dist_map_transform, False)
B_DATA = "[('in_npy', tensor_transform, False), ('gt_npy', gt_transform, True)]"


@pytest.mark.parametrize(
    "text, expected",
    [("[1]+[2]", [1, 2]), ("[1]+[2]+[3]", [1, 2, 3]), ("[[1]+[2], [3]]", [[1, 2], [3]])],
)
def test_plus_joins_list_literals(text, expected):
    assert parse_literal(text, "--x") == expected


@pytest.mark.parametrize("text", ["[1]+2", "[1]+(2,)", "1+2", "'a'+'b'", "[1]-[2]"])
def test_plus_between_anything_else_is_refused(text):
    with pytest.raises(ConfigError, match="--x"):
        parse_literal(text, "--x")


def test_the_original_folders_line_parses_into_the_original_convention():
    targets = "[('gt_npy', gt_transform, True), ('gt_npy', dist_map_transform, False)]"
    folders = parse_folders(f"{B_DATA}+{targets}")
    assert folders == [[IN, GT, GT, DIST]]
    assert split_folders(folders[0], 2, 0) == (IN, GT, [GT, DIST])  # 2 losses: input, gt, 2


def test_the_short_convention_takes_the_first_one_hot_loss_folder_as_ground_truth():
    assert split_folders([IN, GT, DIST], 2, 0) == (IN, GT, [GT, DIST])
    assert split_folders([IN, DIST], 1, 0) == (IN, None, [DIST])  # unlabelled: no Dice


def test_a_count_fitting_neither_convention_is_refused():
    with pytest.raises(ConfigError, match="1 loss.*4 folder.*\\(3, as the original\\).*\\(2\\)"):
        split_folders([IN, GT, GT, DIST], 1, 0)


def test_the_original_ground_truth_must_be_one_hot():
    with pytest.raises(ConfigError, match="ground-truth folder 'gt_npy' of loader 0.*one-hot"):
        split_folders([IN, DIST, GT], 1, 0)


@pytest.mark.parametrize(
    "kind, spec, ok",
    [
        ("one-hot", GT, True),
        ("one-hot", DIST, False),
        ("distance map", DIST, True),
        ("distance map", GT, False),
        (None, GT, True),
        (None, DIST, True),
    ],
)
def test_each_loss_gets_the_kind_of_target_it_takes(kind, spec, ok):
    if ok:
        check_target("X", kind, spec)
    else:
        with pytest.raises(ConfigError, match=f"X takes a {kind} target"):
            check_target("X", kind, spec)


def test_both_conventions_mean_the_same_for_a_resume():
    losses = parse_losses(
        "[('GeneralizedDice', {'idc': [0, 1]}, 1), ('SurfaceLoss', {'idc': [1]}, 0.01)]"
    )
    short = parse_folders(f"{B_DATA[:-1]}, ('gt_npy', dist_map_transform, False)]")
    original = parse_folders(
        f"{B_DATA}+[('gt_npy', gt_transform, True), ('gt_npy', dist_map_transform, False)]"
    )
    assert folders_meaning(losses, short) == folders_meaning(losses, original)
    swapped = "[('gt_npy', dist_map_transform, False), ('gt_npy', gt_transform, True)]"
    other = parse_folders(f"{B_DATA}+{swapped}")  # the targets in another order
    assert folders_meaning(losses, other) != folders_meaning(losses, original)


def _args(*extra: str):
    return get_args(
        ["--dataset", "d", "--workdir", "w", "--network", "Dimwit", "--n_class", "2", *extra]
    )


def test_all_zero_weights_without_a_scheduler_are_refused():
    args = _args(
        "--losses",
        "[('GeneralizedDice', {'idc': [0, 1]}, 0)]",
        "--folders",
        f"{B_DATA}+[('gt_npy', gt_transform, True)]",
    )
    with pytest.raises(ConfigError, match="every weight of a loader is 0"):
        check_config(args)


def test_zero_weights_are_computed_for_the_adjacency_weight_controller(tmp_path):
    graph = tmp_path / "graph.csv"
    graph.write_text("4;0\n0;4\n")  # classes 0 and 1 never touch: a forbidden pair
    losses = (
        f"[('CrossEntropy', {{'idc': [0, 1]}}, 1), "
        f"('NonAdjacencyLoss', {{'idc': [0, 1], 'graph': '{graph}'}}, 0)]"
    )
    folders = f"{B_DATA}+[('gt_npy', gt_transform, True), ('gt_npy', gt_transform, True)]"
    plain = check_config(_args("--losses", losses, "--folders", folders))
    assert plain.loss_fns[0].skip_zero
    controlled = check_config(
        _args("--losses", losses, "--folders", folders, "--scheduler", "LambdaController")
    )
    assert not controlled.loss_fns[0].skip_zero


GDL_SURFACE = (
    "--losses",
    "[('GeneralizedDice', {'idc': [0, 1]}, 1), ('SurfaceLoss', {'idc': [1]}, 0.01)]",
    "--folders",
    f"{B_DATA}+[('gt_npy', gt_transform, True), ('gt_npy', dist_map_transform, False)]",
)


def test_the_configuration_is_typed_frozen_and_records_the_arguments_as_given():
    args = _args(*GDL_SURFACE, "--metric_axis", "0", "1", "--net_params", "{'nG': 4}")
    config = check_config(args)
    assert config.recorded == vars(args) and config.recorded is not vars(args)
    assert config.metric_axis == (0, 1) and config.net_params == {"nG": 4}
    assert config.dataset == Path("d") and config.workdir == Path("w")
    assert config.training_folders == ("train",)
    assert config.scheduler.handles_nan is False and len(config.loss_fns[0]) == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.n_class = 3
    # The other flags keep their name, type and value.
    parsed = {"dataset", "workdir", "training_folders", "metric_axis", "net_params", "losses"}
    plain = [f.name for f in dataclasses.fields(Config) if f.name in vars(args)]
    assert len(plain) > 30
    for name in set(plain) - parsed - {"scheduler"}:
        assert getattr(config, name) == getattr(args, name), name
        assert type(getattr(config, name)) is type(getattr(args, name)), name


def test_net_params_must_be_a_dict():
    with pytest.raises(ConfigError, match="--net_params must be a dict, got \\[4\\]"):
        check_config(_args(*GDL_SURFACE, "--net_params", "[4]"))
