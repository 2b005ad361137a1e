"""Tests for runfolder.py: the schema of the per-epoch arrays of a run folder, and reading it.

The schema is checked against a table written out here by hand; the metrics.csv headers against
the header rule main.py applied before the schema existed, copied below as `header_before`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from boundary_loss.runfolder.schema import (
    ADJACENCY,
    ARRAYS,
    COUNT,
    DICE,
    DISTANCE,
    RunData,
    better,
    check_comparable,
    check_values,
    class_columns,
    column_name,
    csv_columns,
    divergence,
    load_metric,
    nan_from,
    read_int,
    read_json,
    resolve_columns,
    run_data,
    spec_of,
)

# name: (axes, columns, better, value kind, unit, at the checkpoint's epoch)
EXPECTED = {
    "tra_loss": (("epoch", "iteration", "loss term"), "loss", "min", None, "", False),
    "val_loss": (("epoch", "iteration", "loss term"), "loss", "min", None, "", False),
    "tra_dice": (("epoch", "2D image", "class"), "class", "max", "dice", "", False),
    "val_dice": (("epoch", "2D image", "class"), "class", "max", "dice", "", False),
    "val_3d_dsc": (("epoch", "patient", "class"), "class", "max", "dice", "", False),
    "val_3d_hausdorff": (("epoch", "patient", "class"), "class", "min", "distance", "mm", False),
    "val_3d_hd95": (("epoch", "patient", "class"), "class", "min", "distance", "mm", False),
    "val_adjacency": (("epoch", "patient", "count"), "adjacency", "min", "count", "count", True),
}


def summary(name: str | Path) -> tuple:
    """The checked attributes of `spec_of(name)`, in the order of EXPECTED."""
    spec = spec_of(name)
    kind = None if spec.values is None else spec.values.kind
    return spec.axes, spec.columns, spec.better, kind, spec.unit, spec.at_checkpoint


def test_the_table_holds_every_array_main_writes() -> None:
    assert list(ARRAYS) == list(EXPECTED)
    assert ADJACENCY == "val_adjacency"
    for name, spec in ARRAYS.items():
        assert spec.name == name and spec.description, name


@pytest.mark.parametrize("name", list(EXPECTED))
def test_spec_of_every_known_array(name: str) -> None:
    """A name, a file name and a path give the table's entry; the name's case does not matter."""
    for given in (name, f"{name}.npy", f"results/isles/gdl/{name}.npy", name.upper()):
        assert spec_of(given) is ARRAYS[name], given
    assert summary(name) == EXPECTED[name]
    assert better(Path("results") / f"{name}.npy") == EXPECTED[name][2]


@pytest.mark.parametrize("name", list(EXPECTED))
def test_the_table_agrees_with_the_rule_on_names(name: str) -> None:
    """A renamed copy of a known array (not in the table) is described as the original: the
    table and the rule for unknown names cannot drift apart."""
    copy = spec_of(f"old_{name}")
    assert copy.name == f"old_{name}" and copy is not ARRAYS[name]
    _, columns, mode, kind, unit, at_checkpoint = summary(f"old_{name}")
    assert (columns, mode, kind, unit, at_checkpoint) == EXPECTED[name][1:]
    assert copy.column_names == ARRAYS[name].column_names
    assert copy.column_labels == ARRAYS[name].column_labels


@pytest.mark.parametrize(
    ("name", "columns", "mode", "kind", "unit"),
    [
        ("test_dice.npy", "class", "max", "dice", ""),
        ("results/x/test_3d_DSC.npy", "class", "max", "dice", ""),
        ("surface_loss", "loss", "min", None, ""),
        ("dice_loss", "loss", "max", None, ""),  # `dice` gives the direction, `loss` the rest
        ("test_hd95", "class", "min", "distance", "mm"),
        ("tra_hausdorff.npy", "class", "min", "distance", "mm"),
        ("test_adjacency", "adjacency", "min", "count", "count"),
        ("dsc_adjacency", "adjacency", "max", "dice", ""),
        ("val_accuracy", "class", "min", None, ""),  # no known word: unchecked, lower is better
    ],
)
def test_spec_of_other_names_follows_the_words_in_them(
    name: str, columns: str, mode: str, kind: str | None, unit: str
) -> None:
    spec = spec_of(name)
    assert (spec.columns, spec.better, spec.unit) == (columns, mode, unit)
    assert (None if spec.values is None else spec.values.kind) == kind
    assert spec.at_checkpoint == ("adjacency" in name)
    assert spec.name == Path(name).name.removesuffix(".npy")


@pytest.mark.parametrize(
    ("name", "column", "loss_names", "label"),
    [
        ("val_dice", 0, None, "class 0"),
        ("val_3d_hd95.npy", 3, None, "class 3"),
        ("tra_loss", 1, None, "loss 1"),
        ("tra_loss", 1, ["GeneralizedDice", "SurfaceLoss"], "SurfaceLoss"),
        ("val_loss", 2, ["GeneralizedDice", "SurfaceLoss"], "loss 2"),  # past the names
        ("val_dice", 1, ["GeneralizedDice", "SurfaceLoss"], "class 1"),  # not a loss array
        ("val_adjacency", 0, None, "forbidden pairs"),
        ("val_adjacency.npy", 1, None, "components"),
        ("val_adjacency", 2, None, "adjacency 2"),
        ("other_metric", 4, None, "class 4"),
    ],
)
def test_column_name(name: str, column: int, loss_names: list[str] | None, label: str) -> None:
    assert column_name(name, column, loss_names) == label


def header_before(name: str, n_columns: int, loss_names: Sequence[str]) -> list[str]:
    """The header rule of main.write_csv before the schema (one array's part of the header)."""
    if name.endswith("loss"):
        return [f"{name}_{n}" for n in loss_names][:n_columns]
    if name == "val_adjacency":
        return [f"{name}_pairs", f"{name}_components"]
    return [f"{name}_class{j}" for j in range(n_columns)]


def test_csv_columns_as_main_wrote_them() -> None:
    losses = ["GeneralizedDice", "SurfaceLoss"]
    assert csv_columns("tra_loss", 2, losses) == [
        "tra_loss_GeneralizedDice",
        "tra_loss_SurfaceLoss",
    ]
    assert csv_columns("val_loss", 1, losses) == ["val_loss_GeneralizedDice"]
    assert csv_columns("val_dice", 3) == ["val_dice_class0", "val_dice_class1", "val_dice_class2"]
    assert csv_columns("val_3d_hd95", 2, losses) == ["val_3d_hd95_class0", "val_3d_hd95_class1"]
    assert csv_columns("val_adjacency", 2) == ["val_adjacency_pairs", "val_adjacency_components"]
    for name in ARRAYS:
        for n_columns in (1, 2, 4):
            if name.endswith("loss"):
                names = ["CrossEntropy", "GeneralizedDice", "SurfaceLoss", "NonAdjLoss"]
            else:
                names = losses
            if name == ADJACENCY and n_columns != 2:
                continue  # two counts, always
            expected = header_before(name, n_columns, names)
            assert csv_columns(name, n_columns, names) == expected, (name, n_columns)


def test_csv_columns_never_fall_short_of_the_values() -> None:
    """One header per column even where names run out (the old rule wrote fewer headers than
    values, shifting every later column)."""
    assert csv_columns("tra_loss", 3, ["GeneralizedDice"]) == [
        "tra_loss_GeneralizedDice",
        "tra_loss_loss1",
        "tra_loss_loss2",
    ]
    assert csv_columns("val_adjacency", 3)[2] == "val_adjacency_adjacency2"


@pytest.mark.parametrize(
    ("name", "n_columns", "default"),
    [
        ("val_dice", 3, [1, 2]),
        ("val_3d_dsc", 1, [0]),  # a single class is used, background or not
        ("tra_loss", 3, [0, 1, 2]),
        ("val_adjacency", 2, [0]),  # forbidden pairs only
        ("test_hd95", 2, [1]),
    ],
)
def test_default_columns(name: str, n_columns: int, default: list[int]) -> None:
    assert resolve_columns(f"{name}.npy", n_columns, None) == default


def test_resolve_columns_checks_the_choice() -> None:
    assert resolve_columns("val_dice.npy", 3, [2, 0]) == [2, 0]
    with pytest.raises(ValueError, match=r"column\(s\) \[3\] out of range for val_dice\.npy"):
        resolve_columns("val_dice.npy", 3, [1, 3])
    with pytest.raises(ValueError, match="no column chosen for val_dice.npy"):
        resolve_columns("val_dice.npy", 3, [])


def test_class_columns_apply_to_class_indexed_arrays_only() -> None:
    for name in ("val_dice", "tra_dice.npy", "val_3d_dsc", "val_3d_hausdorff", "val_3d_hd95"):
        assert class_columns(name, [1, 2]) == [1, 2]
    for name in ("tra_loss", "val_loss.npy", "val_adjacency"):
        assert class_columns(name, [1, 2]) is None
    assert class_columns("val_dice", None) is None


@pytest.mark.parametrize(
    ("value_range", "allowed", "refused"),
    [
        (DICE, [0.0, 0.5, 1.0, np.nan], [-1e-9, 1.0 + 1e-9, np.inf, -np.inf]),
        (DISTANCE, [0.0, 3.5, 1e6, np.nan], [-1e-9, np.inf, -np.inf]),
        (COUNT, [0.0, 7.0, np.nan], [-1.0, np.inf]),
    ],
)
def test_value_ranges(value_range, allowed: list[float], refused: list[float]) -> None:
    assert not value_range.outside(np.array(allowed)).any()
    assert value_range.outside(np.array(refused)).all()


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("val_dice.npy", 1.5, "class 1 (1 such value(s)): a Dice score lies in [0, 1]"),
        ("val_3d_dsc.npy", -0.5, "class 1 (1 such value(s)): a Dice score"),
        ("val_3d_hd95.npy", np.inf, "class 1 (1 such value(s)): a distance is a finite number"),
        ("val_3d_hausdorff.npy", -2.0, "class 1 (1 such value(s)): a distance"),
        ("val_adjacency.npy", -1.0, "components (1 such value(s)): an adjacency count"),
    ],
)
def test_check_values_refuses_impossible_values(name: str, value: float, needle: str) -> None:
    data = np.zeros((2, 3, 2))
    data[1, 2, 1] = value
    with pytest.raises(ValueError) as info:
        check_values(f"run/{name}", data)
    message = str(info.value)
    assert message.startswith(f"metric file run/{name} holds {value!r} at epoch 1, sample 2, ")
    assert needle in message and message.endswith("its run cannot be ranked")


def test_check_values_leaves_losses_and_unknown_metrics_unchecked() -> None:
    data = np.array([[[-5.0, np.inf, -np.inf, np.nan]]])  # E=1 x N=1 x K=4
    for name in ("tra_loss.npy", "val_loss.npy", "val_accuracy.npy"):
        check_values(name, data)
    check_values("val_dice.npy", np.full((1, 2, 2), np.nan))  # NaN: undefined, allowed


def test_load_metric_reads_float64_and_checks_values(tmp_path: Path) -> None:
    np.save(tmp_path / "val_adjacency.npy", np.array([[[3, 1]], [[0, 0]]], dtype=np.int32))
    data = load_metric(tmp_path, "val_adjacency")
    assert data.dtype == np.float64 and data.shape == (2, 1, 2)
    np.save(tmp_path / "val_dice.npy", np.full((1, 1, 2), 2.0, dtype=np.float32))
    with pytest.raises(ValueError, match=r"val_dice\.npy holds 2\.0 at epoch 0, sample 0, class 0"):
        load_metric(tmp_path, "val_dice.npy")


def test_read_json_and_read_int(tmp_path: Path) -> None:
    assert read_json(tmp_path / "args.json") == (None, "args.json is missing")
    (tmp_path / "args.json").write_text("{not json")
    content, note = read_json(tmp_path / "args.json")
    assert content is None and note.startswith("args.json could not be read (")
    (tmp_path / "args.json").write_text("[1, 2]")
    assert read_json(tmp_path / "args.json") == (
        None,
        "args.json holds a list, expected a JSON object",
    )
    (tmp_path / "args.json").write_text(json.dumps({"n_class": 2}))
    assert read_json(tmp_path / "args.json") == ({"n_class": 2}, None)
    assert read_int(tmp_path / "best_epoch.txt") is None
    (tmp_path / "best_epoch.txt").write_text("12\n")
    assert read_int(tmp_path / "best_epoch.txt") == 12
    (tmp_path / "best_epoch.txt").write_text("twelve")
    assert read_int(tmp_path / "best_epoch.txt") is None


def test_run_data_keeps_the_class_axes_only(tmp_path: Path) -> None:
    arrays = {
        "val_dice.npy": np.zeros((2, 3, 4)),
        "val_3d_hd95": np.zeros((2, 2, 4)),
        "tra_loss": np.zeros((2, 5, 2)),
        "val_adjacency.npy": np.zeros((2, 2, 2)),
    }
    data = run_data(tmp_path, {"dataset": "data/acdc", "n_class": 4}, arrays)
    assert data == RunData(tmp_path, "data/acdc", 4, {"val_dice": 4, "val_3d_hd95": 4})
    assert run_data(tmp_path, {"n_class": True}, {}).n_class is None  # a flag is not a count
    assert run_data(tmp_path, None, {}) == RunData(tmp_path, None, None, {})


def test_check_comparable(tmp_path: Path) -> None:
    a = RunData(tmp_path / "a", "data/isles/", 2, {"val_dice": 2})
    b = RunData(tmp_path / "b", None, None, {"val_dice": 2, "val_3d_dsc": 2})
    c = RunData(tmp_path / "c", "./data/isles", 2, {"val_3d_dsc": 2})
    check_comparable([a, b, c])  # the same data written differently; b records no args
    d = RunData(tmp_path / "d", None, None, {"val_3d_dsc": 3})
    with pytest.raises(ValueError, match=r"runs .*b and .*d have different class counts"):
        check_comparable([a, b, c, d])
    e = RunData(tmp_path / "e", "data/isles", 3, {})
    with pytest.raises(ValueError, match=r"n_class 2 and 3 in their args\.json"):
        check_comparable([a, e])


def test_the_run_folder_page_documents_every_array():
    """docs/run-folder.md, the schema's page for readers, names every array of the schema."""
    page = (Path(__file__).resolve().parent.parent / "docs" / "run-folder.md").read_text()
    for name in ARRAYS:
        assert f"`{name}.npy`" in page, name


def test_runs_are_compared_by_their_data_not_by_the_path_they_were_given(tmp_path):
    """provenance.json's md5 of split.json decides when both runs record it: the same data
    reached by two paths is comparable, other data behind the same path is not."""

    def run(name: str, dataset: str, md5: str | None) -> RunData:
        folder = tmp_path / name
        folder.mkdir()
        if md5 is not None:
            data = {"path": "/x", "split_md5": md5}
            (folder / "provenance.json").write_text(json.dumps({"data": data}))
        return run_data(folder, {"dataset": dataset, "n_class": 2}, {})

    check_comparable([run("a", "data/isles", "1" * 32), run("b", "/srv/x/isles", "1" * 32)])
    with pytest.raises(ValueError, match="different data"):
        check_comparable([run("c", "data/isles", "1" * 32), run("d", "data/isles", "2" * 32)])
    # without the md5 (older runs): the last two components of the path
    check_comparable([run("e", "data/isles/", None), run("f", "/home/u/repo/data/isles", None)])
    with pytest.raises(ValueError, match="different data"):
        check_comparable(
            [run("g", "data/isles", None), run("h", "data/isles-synthetic/isles", None)]
        )


def test_nan_from_is_the_epoch_from_which_every_value_is_nan() -> None:
    """Every value of every array NaN from that epoch to the last; a NaN epoch followed by a
    finite one, or one finite value at the last epoch, is no divergence."""
    finite = np.full((4, 2, 2), 0.5)
    late = finite.copy()
    late[2:] = np.nan  # epochs 2 and 3 entirely NaN
    assert nan_from([np.full((4, 2, 2), np.nan)]) == 0
    assert nan_from([late]) == 2
    assert nan_from([late, np.full((4, 2, 2), np.nan)]) == 2  # the latest of the arrays
    one_left = late.copy()
    one_left[3, 1, 0] = 0.1  # a single finite value at the last epoch
    assert nan_from([one_left]) is None
    middle = finite.copy()
    middle[1] = np.nan  # NaN at epoch 1 only
    assert nan_from([middle]) is None
    assert nan_from([late, finite]) is None
    assert nan_from([]) is None


def test_divergence_reads_the_3d_arrays_of_the_folder(tmp_path: Path) -> None:
    """The 3D arrays decide (val_3d_dsc, val_3d_hausdorff, val_3d_hd95), every class included;
    val_dice does not; a folder without 3D arrays is never diverged."""
    run = tmp_path / "boundary"
    run.mkdir()
    for name in ("val_3d_dsc", "val_3d_hausdorff", "val_3d_hd95"):
        np.save(run / f"{name}.npy", np.full((3, 2, 2), np.nan))
    np.save(run / "val_dice.npy", np.full((3, 5, 2), 0.5))
    found = divergence(run)
    assert (found.nan_from, found.n_epochs, found.diverged, found.late) == (0, 3, True, False)
    assert found.metrics == ("val_3d_dsc", "val_3d_hausdorff", "val_3d_hd95")
    assert found.describe() == (
        f"run {run} diverged: all its 3D metrics (val_3d_dsc, val_3d_hausdorff, val_3d_hd95) are "
        "NaN from epoch 0 to its last epoch 2, every patient and class"
    )
    # An array already read is used as given (here: finite background at the last epoch).
    background = np.full((3, 2, 2), np.nan)
    background[:, :, 0] = 1.0
    assert divergence(run, {"val_3d_dsc.npy": background}).nan_from is None
    late = np.full((3, 2, 2), 0.5)
    late[1:] = np.nan
    found = divergence(run, {"val_3d_dsc": late})
    assert (found.nan_from, found.diverged, found.late) == (1, False, True)
    assert found.describe().endswith(
        "(diverged at epoch 1); its best epochs are chosen among epoch 0"
    )
    empty = tmp_path / "no_3d"
    empty.mkdir()
    np.save(empty / "val_dice.npy", np.full((3, 5, 2), np.nan))
    found = divergence(empty)
    assert (found.nan_from, found.diverged, found.metrics, found.describe()) == (
        None,
        False,
        (),
        "",
    )


# ---------------------------------------------------------------------------------------------
# The run's plan (plan.json): what preprocesses a new scan
# ---------------------------------------------------------------------------------------------


def test_run_plan_of_sliced_nnunet_data_has_the_slicers_records(tmp_path: Path) -> None:
    """2D: channels, labels in class order, each normalisation as the 3D plan writes it, the
    slice axis and shape; the CT statistics survive as numbers."""
    from boundary_loss.preprocessing.plan3d import plan_norms
    from boundary_loss.runfolder.writer import run_plan

    norms = [["ct", -10.5, 200.25, 40.125, 12.0625], ["zscore"]]
    source = {
        "dataset": "/data/Dataset001_X",
        "name": "Dataset001_X",
        "channels": ["CT", "T2"],
        "normalisation": norms,
        "labels": {"background": 0, "organ": 1, "lesion": 3},
        "axis": 1,
        "test": [],
    }
    (tmp_path / "source.json").write_text(json.dumps(source))
    (tmp_path / "split.json").write_text(json.dumps({"shape": [64, 48], "train": [], "val": []}))
    plan = run_plan(tmp_path)
    assert plan["dimensions"] == 2 and plan["name"] == "Dataset001_X"
    assert plan["channels"] == ["CT", "T2"]
    assert list(plan["labels"].items()) == [("background", 0), ("organ", 1), ("lesion", 3)]
    assert plan["grid"] == {"axis": 1, "shape": [64, 48]}
    assert plan_norms(plan) == tuple(tuple(n) for n in norms)
    assert json.loads(json.dumps(plan)) == plan  # plain JSON


def test_run_plan_of_3d_data_is_its_whole_plan(tmp_path: Path) -> None:
    from boundary_loss.runfolder.writer import run_plan

    grid = {
        "dimensions": 3,
        "name": "Dataset001_X",
        "channels": ["T2"],
        "labels": [["background", 0], ["organ", 2]],
        "n_class": 2,
        "target_spacing": [1.0, 1.0, 2.5],
        "median_shape": [40, 40, 20],
        "normalisation": [{"channel": "T2", "scheme": "zscore"}],
        "patch_size": [32, 32, 16],
        "batch_size": 2,
        "network": {"pools": [[2, 2, 2]], "kernels": [[3, 3, 3], [3, 3, 3]]},
        "slice_axis": 2,
        "oversample_foreground": 0.33,
        "resampling": {"image": "cubic", "labels": "linear", "maps": "edt"},
    }
    (tmp_path / "plan.json").write_text(json.dumps(grid))
    (tmp_path / "split.json").write_text(json.dumps({"train": [], "val": []}))
    plan = run_plan(tmp_path)
    assert plan["dimensions"] == 3 and plan["grid"] == grid
    assert plan["labels"] == {"background": 0, "organ": 2}
    assert plan["normalisation"] == grid["normalisation"] and plan["channels"] == ["T2"]


def test_no_run_plan_without_the_records_and_a_message_for_damaged_ones(tmp_path: Path) -> None:
    from boundary_loss.runfolder.writer import run_plan

    (tmp_path / "split.json").write_text(json.dumps({"train": [], "val": []}))
    assert run_plan(tmp_path) is None  # the ISLES, WMH and ACDC slicers write no source.json
    (tmp_path / "source.json").write_text(json.dumps({"channels": ["CT"]}))
    with pytest.raises(ValueError, match="source.json or split.json is not as slice_nnunet.py"):
        run_plan(tmp_path)
