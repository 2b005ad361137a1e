"""Validation of a 3D training: whole volumes by sliding windows, every epoch.

Each validation case of the prepared data (`<dataset>/val`, written by preprocess/prepare_3d.py)
is predicted whole, by windows of the training patch with an overlap of 0.5 and a Gaussian
importance map (`networks.sliding_window`, as MONAI's and nnU-Net's). The run folder gets the
same arrays as a 2D training's, so that the plots, the report, the per-patient tables, the
pictures and the paired statistics read a 3D run unchanged:

- `val_loss`: the raw loss terms of each whole volume (one "iteration" per case), the distance
  maps being the whole-volume ones;
- `val_dice`: the 2D Dice of every slice along the plan's slice axis (the 2D chain's axis);
- `val_3d_dsc`, `val_3d_hausdorff`, `val_3d_hd95`: per case, at the target spacing (`metrics`);
- `val_adjacency`: forbidden adjacencies counted in 3D neighbourhoods;
- `iter<NNN>/val/<case>_00_<slice>.png`: the predicted slices, named as the 2D slicer names its
  slices (`<volume>_<augmentation>_<slice>`, 00 for the volume itself), so that the patients
  are the same under the same `--grp_regex`.

Under torchrun each process predicts its share of the cases; the results of every process are
gathered, so each takes the same decisions and rank 0 writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from boundary_loss.data.loader import DataError, FolderSpec, group_key, gt_transform
from boundary_loss.data.patches import volume_transform
from boundary_loss.io.distributed import Context
from boundary_loss.losses.idc_losses import CompoundLoss
from boundary_loss.metrics import dice_coef
from boundary_loss.networks.sliding_window import sliding_window
from boundary_loss.runfolder.writer import save_predictions

OVERLAP = 0.5  # of neighbouring windows, as nnU-Net's and MONAI's default


@dataclass
class VolumeValidation:
    """The validation cases of a 3D training and what feeds their losses.

    Attributes:
        root: the validation split folder (`<dataset>/val`).
        specs: the folders read per case: the input, the loss targets, then the ground truth
            when no target holds it (`engine.loader_targets`).
        n_losses: how many of `specs[1:]` are loss targets.
        gt_index: the ground truth's place in `specs[1:]`.
        losses: the validation loader's losses.
        cases: the case ids, sorted.
    """

    root: Path
    specs: list[FolderSpec]
    n_losses: int
    gt_index: int
    losses: CompoundLoss
    cases: list[str]


def volume_validation(
    root: Path, specs: list[FolderSpec], n_losses: int, gt_index: int | None, losses: CompoundLoss
) -> VolumeValidation:
    """The validation of `root`, its cases listed from the input folder.

    Raises:
        DataError: no ground truth among the folders, a missing folder, no case, or a case
            missing from one of the folders.
    """
    if gt_index is None:
        raise DataError(f"{root}: a 3D validation needs a one-hot ground-truth folder (gt_npy)")
    found = []
    for spec in specs:
        folder = root / spec.folder
        if not folder.is_dir():
            raise DataError(f"{folder}: data folder not found (check --dataset and --folders)")
        found.append({p.stem for p in folder.glob("*.npy")})
    cases = sorted(found[0])
    if not cases:
        raise DataError(f"{root / specs[0].folder}: no .npy volume")
    for spec, stems in zip(specs[1:], found[1:], strict=True):
        missing = sorted(set(cases) - stems)
        if missing:
            raise DataError(f"{root / spec.folder}: no volume for case {missing[0]}")
    return VolumeValidation(root, specs, n_losses, gt_index, losses, cases)


def slice_stems(case: str, n_slices: int) -> list[str]:
    """The stems of a case's slices, as the 2D slicer names them."""
    return [f"{case}_00_{s:04d}" for s in range(n_slices)]


def _load(v: VolumeValidation, case: str, spacing: tuple, K: int) -> list[torch.Tensor]:
    """The input (`C X Y Z`) and the targets of a case through the folders' transforms (label
    volumes one-hot encoded once their values are checked)."""
    tensors = []
    for spec in v.specs:
        path = v.root / spec.folder / f"{case}.npy"
        try:
            array = np.load(path)
            if spec.transform is gt_transform and (array.ndim != 3 or array.max() >= K):
                raise DataError(
                    f"expected an X Y Z volume of class indices 0..{K - 1}, got shape "
                    f"{array.shape} with values up to {array.max()}"
                )
            tensors.append(volume_transform(spec)(spacing, K)(array))
        except (OSError, ValueError, DataError) as error:
            raise DataError(f"{path}: {error}") from None
    return tensors


@torch.no_grad()
def predict_case(
    net: nn.Module,
    image: torch.Tensor,
    patch: tuple[int, ...],
    batch_size: int,
    temperature: float = 1.0,
    bf16: bool = False,
    mirror_axes: tuple[int, ...] = (),
) -> torch.Tensor:
    """Softmax probabilities `1 K X Y Z` of a whole `1 C X Y Z` volume, by sliding windows."""

    def predict(windows: torch.Tensor) -> torch.Tensor:
        with torch.autocast(windows.device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = net(windows)
        return F.softmax(temperature * logits.float(), dim=1)

    return sliding_window(predict, image, patch, OVERLAP, batch_size, mirror_axes)


def validate_volumes(
    net: nn.Module,
    v: VolumeValidation,
    weights: list[float],
    *,
    config,
    device: torch.device,
    context: Context,
    save_dir: Path | None,
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]:
    """One validation: the `val_loss` and `val_dice` arrays and every case's predicted and true
    classes with its spacing (`{patient: {"pred", "gt", "spacing"}}`, for `metrics.metrics_3d`),
    the patients named by `--grp_regex` on the slice stems.

    Raises:
        DataError: a case unreadable or not as prepared.
    """
    K, axis = config.n_class, int(config.plan["slice_axis"])
    spacing = tuple(float(s) for s in config.plan["target_spacing"])
    net.eval()
    mine = []
    for case in v.cases[context.rank :: context.world_size]:
        image, *labels = (t.to(device)[None] for t in _load(v, case, spacing, K))
        probs = predict_case(
            net, image, config.patch_size, config.batch_size, config.temperature, config.bf16
        )
        _, terms = v.losses(probs, labels[: v.n_losses], weights)
        gt = labels[v.gt_index]  # 1 K X Y Z
        classes = probs.argmax(dim=1)  # 1 X Y Z
        predicted = F.one_hot(classes, K).movedim(-1, 1).to(gt.dtype)
        # the 2D Dice of each slice along the slice axis: slices as a batch
        per_slice = dice_coef(gt[0].movedim(axis + 1, 0), predicted[0].movedim(axis + 1, 0))
        mine.append(
            (
                case,
                CompoundLoss.raw_tensor(terms).cpu().numpy(),
                per_slice.cpu().numpy(),
                classes[0].to(torch.uint8).cpu().numpy(),
                gt[0].argmax(dim=0).to(torch.uint8).cpu().numpy(),
            )
        )
    results = sorted((r for part in context.gather(mine) for r in part), key=lambda r: r[0])
    volumes = {}
    for case, _, _, pred, truth in results:
        stems = slice_stems(case, pred.shape[axis])
        volumes[group_key(stems[0], config.grp_regex)] = {
            "pred": pred,
            "gt": truth,
            "spacing": np.asarray(spacing, dtype=np.float32),
        }
        if save_dir is not None and context.writes:
            save_predictions(np.moveaxis(pred, axis, 0), stems, save_dir)
    width = len(v.losses)
    losses = np.stack([r[1] for r in results]) if results else np.zeros((0, width), np.float32)
    dices = np.concatenate([r[2] for r in results]) if results else np.zeros((0, K), np.float32)
    return {"val_loss": losses.astype(np.float32), "val_dice": dices.astype(np.float32)}, volumes
