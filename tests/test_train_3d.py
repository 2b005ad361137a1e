"""main.py --dimensions 3 on the prepared stand-in: the patch maps, the run folder, resume,
deep supervision, augmentation and the refusals.

The stand-in cohort (synthetic_nnunet: 0.9 x 3.0 x 1.1 mm, about 56 x 12 x 46 voxels, a lesion
absent from some cases and small in the others) is prepared once by prepare_3d.py with patches of
32 x 8 x 32 voxels, smaller than its volumes: many patches hold no lesion, and there the maps
computed on the patch (all zero for an absent class, the original's convention) differ from the
whole-volume maps the loader must give (the true distances to the lesion outside the patch).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from boundary_loss.data.loader import FolderSpec, gt_transform, raw_npy_transform, tensor_transform
from boundary_loss.data.patches import PatchDataset
from boundary_loss.maps.distance import one_hot2dist
from boundary_loss.preprocessing.prepare_3d import prepare_3d
from boundary_loss.preprocessing.synthetic_nnunet import write_nnunet
from boundary_loss.training import main

PATCH = (32, 8, 32)
LESION = 2
GDL_SURFACE = (
    "[('GeneralizedDice', {'idc': [0, 1, 2, 3]}, 1), ('SurfaceLoss', {'idc': [1, 2, 3]}, 0.01)]"
)
FOLDERS = (
    "[('in_npy', tensor_transform, False), ('gt_npy', gt_transform, True)]"
    "+[('gt_npy', gt_transform, True), ('3d_distmap', raw_npy_transform, False)]"
)
SPECS = [
    FolderSpec("in_npy", tensor_transform, False),
    FolderSpec("gt_npy", gt_transform, True),
    FolderSpec("3d_distmap", raw_npy_transform, False),
]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("standin3d")
    source = write_nnunet(root / "source")
    return prepare_3d(source, root / "prepared", patch=PATCH, progress=False)


def argv(prepared: Path, workdir: Path, *extra: str, n_epoch: int = 2) -> list[str]:
    """A small 3D training of PlainUNet3D (width 4) on the CPU: 2 batches of 2 patches per
    epoch, GDL + boundary loss on the whole-volume maps."""
    return [
        *("--dataset", str(prepared), "--workdir", str(workdir), "--cpu"),
        *("--network", "PlainUNet3D", "--net_params", "{'features': 4}"),
        *("--n_class", "4", "--modalities", "2", "--metric_axis", "1", "2", "3"),
        *("--dimensions", "3", "--compute_3d_dice", "--grp_regex", r"(.+_\d+)_\d+"),
        *("--batch_size", "2", "--iterations", "2", "--n_epoch", str(n_epoch)),
        *("--losses", GDL_SURFACE, "--folders", FOLDERS),
        *extra,
    ]


def whole_volume_crop(prepared: Path, case: str, lower, patch) -> np.ndarray:
    """The box of a case's whole-volume maps, 0 past the volume: cut here with numpy."""
    whole = np.load(prepared / "train" / "3d_distmap" / f"{case}.npy")
    padded = np.pad(whole, [(0, 0), *[(p, p) for p in patch]])
    box = tuple(slice(lo + p, lo + 2 * p) for lo, p in zip(lower, patch, strict=True))
    return padded[(slice(None), *box)]


def test_standin_patches_carry_the_whole_volume_maps(prepared):
    """At the stand-in's patch size every patch's maps are the crop of the whole-volume maps,
    and maps recomputed on the patch (what the loader must not do) differ in most patches: the
    organ, the lesion or the vessel reaches past the patch."""
    spacing = json.loads((prepared / "spacing_3d.json").read_text())
    data = PatchDataset(prepared / "train", SPECS, 4, PATCH, spacing, 2, 20, seed=0)
    differ = 0
    for index in range(len(data)):
        item = data[index]
        case, maps = item["filename"], item["labels"][1].numpy()
        np.testing.assert_array_equal(
            maps, whole_volume_crop(prepared, case, data.draw(0, index)[1], PATCH)
        )
        on_patch = one_hot2dist(item["labels"][0].numpy(), spacing[case], dtype=np.float32)
        differ += bool(np.abs(on_patch - maps).max() > 1.0)  # mm
    assert differ > len(data) // 2


def test_standin_patches_without_the_lesion_carry_its_distances(prepared):
    """Where a case has a lesion and a smaller patch does not, the loader's lesion map holds the
    true, positive distances to the lesion outside the patch; recomputed on the patch it would be
    all zero (an absent class, the original's convention): no signal against a false lesion."""
    spacing = json.loads((prepared / "spacing_3d.json").read_text())
    small = (16, 8, 16)
    data = PatchDataset(prepared / "train", SPECS, 4, small, spacing, 2, 20, seed=0)
    found = 0
    for index in range(len(data)):
        item = data[index]
        case = item["filename"]
        labels = np.load(prepared / "train" / "gt_npy" / f"{case}.npy")
        one_hot, maps = item["labels"][0].numpy(), item["labels"][1].numpy()
        if not (labels == LESION).any() or one_hot[LESION].any():
            continue
        lower = data.draw(0, index)[1]
        np.testing.assert_array_equal(maps, whole_volume_crop(prepared, case, lower, small))
        inside = np.load(prepared / "train" / "gt_npy" / f"{case}.npy").shape
        assert all(0 <= lo <= n - p for lo, n, p in zip(lower, inside, small, strict=True))
        assert (maps[LESION] > 0).all()
        assert not one_hot2dist(one_hot, spacing[case], dtype=np.float32)[LESION].any()
        found += 1
    assert found >= 3, "the stand-in should give patches without the lesion of their case"


def test_run_folder_of_a_3d_training(prepared, tmp_path):
    workdir = tmp_path / "run"
    assert main.main(argv(prepared, workdir)) == 0
    split = json.loads((prepared / "split.json").read_text())
    val = sorted(split["val"])
    slices = [np.load(prepared / "val" / "gt_npy" / f"{c}.npy").shape[1] for c in val]
    assert np.load(workdir / "val_3d_dsc.npy").shape == (2, len(val), 4)
    assert np.load(workdir / "val_3d_hd95.npy").shape == (2, len(val), 4)
    assert np.load(workdir / "val_dice.npy").shape == (2, sum(slices), 4)
    assert np.load(workdir / "val_loss.npy").shape == (2, len(val), 2)  # one row per volume
    assert np.load(workdir / "tra_loss.npy").shape == (2, 2, 2)  # one row per batch
    assert np.load(workdir / "tra_dice.npy").shape == (2, 4, 4)  # one row per patch
    dsc = np.load(workdir / "val_3d_dsc.npy")
    assert ((dsc >= 0) & (dsc <= 1)).all()
    # the predicted slices, named as the 2D slicer names its slices, along the plan's axis
    saved = sorted(p.name for p in (workdir / "iter001" / "val").glob("*.png"))
    assert saved[0] == f"{val[0]}_00_0000.png"
    assert len(saved) == sum(slices)
    best = torch.load(workdir / "best.pt", weights_only=True)
    assert best["network"] == "PlainUNet3D"


def test_resume_continues_as_an_uninterrupted_run(prepared, tmp_path):
    straight, parts = tmp_path / "straight", tmp_path / "parts"
    assert main.main(argv(prepared, straight, "--augment")) == 0
    assert main.main(argv(prepared, parts, "--augment", n_epoch=1)) == 0
    assert main.main(argv(prepared, parts, "--augment", "--resume")) == 0
    for name in ("tra_loss", "val_loss", "val_3d_dsc", "val_dice"):
        np.testing.assert_array_equal(
            np.load(straight / f"{name}.npy"), np.load(parts / f"{name}.npy"), err_msg=name
        )


def test_deep_supervision_trains(prepared, tmp_path):
    params = "{'features': 4, 'deep_supervision': True}"
    extra = ["--net_params", params, "--scheduler", "StealWeight"]
    extra += ["--scheduler_params", "{'to_steal': 0.01}"]
    assert main.main([*argv(prepared, tmp_path / "ds", n_epoch=1), *extra]) == 0
    assert np.isfinite(np.load(tmp_path / "ds" / "tra_loss.npy")).all()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            [
                "--folders",
                FOLDERS.replace(
                    "('3d_distmap', raw_npy_transform", "('gt_npy', dist_map_transform"
                ),
            ],
            "would compute the distance maps on each 3D patch",
        ),
        (["--patch_size", "30", "8", "32"], r"--patch_size \[30, 8, 32\]: each size must be"),
        (["--save_train"], "--save_train is for 2D slices"),
        (["--modalities", "3"], "--modalities 3, but .*plan.json has 2 channels"),
    ],
)
def test_refusals(prepared, tmp_path, capsys, change, message):
    assert main.main([*argv(prepared, tmp_path / "run"), *change]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert re.search(message, err), err
    assert not (tmp_path / "run").exists()


def test_a_folder_without_plan_is_refused(prepared, tmp_path, capsys):
    assert main.main(argv(tmp_path, tmp_path / "run")) == 1
    assert "plan.json" in capsys.readouterr().err
