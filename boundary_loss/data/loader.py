"""Slice datasets, transforms and samplers for training on the sliced data of preprocess/.

A dataset split (e.g. `data/isles/train`) holds one folder per kind of file (`in_npy/`, `gt_npy/`,
`3d_distmap/`, `gt/`, one png folder per modality), each with one file per slice stem, and
`spacing.json` (stem -> [dx, dy, dz] in mm). A training reads several folders of a split in
parallel, each through a transform, as the original's `--folders` option says:

    [('in_npy', tensor_transform, False), ('gt_npy', gt_transform, True),
     ('gt_npy', dist_map_transform, False)]

the first folder being the network input, the others the targets of the losses, in order; the
boolean marks one-hot targets (the first of them is the ground truth the metrics use).

Transforms are built per slice with its spacing and the number of classes, `transform(resolution,
K)`, and turn a loaded file (a PIL image for png, an array for npy) into a tensor.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
)

from boundary_loss.maps.distance import distance_maps, one_hot2dist
from boundary_loss.maps.onehot import indices2one_hot

Resolution = tuple[float, ...]
Transform = Callable[[Resolution, int], Callable[[object], Tensor]]


class DataError(Exception):
    """The data on disk does not fit what the training was asked to read."""


# ---------------------------------------------------------------------------------------------
# Transforms: registry of name -> factory(resolution, K) -> (loaded file -> tensor)
# ---------------------------------------------------------------------------------------------


def _as_array(item: object) -> np.ndarray:
    return np.asarray(item)


def png_transform(resolution: Resolution, K: int) -> Callable[[object], Tensor]:
    """uint8 image (H W or H W C) -> float32 tensor `C H W` in [0, 1]."""

    def transform(item: object) -> Tensor:
        array = _as_array(item).astype(np.float32) / 255
        array = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
        return torch.from_numpy(np.ascontiguousarray(array))

    return transform


def npy_transform(resolution: Resolution, K: int) -> Callable[[object], Tensor]:
    """Stack of modalities (`C H W`, or `H W` for one) -> float32 tensor `C H W`."""

    def transform(item: object) -> Tensor:
        array = _as_array(item).astype(np.float32)
        return torch.from_numpy(array[None] if array.ndim == 2 else array)

    return transform


tensor_transform = npy_transform  # the original's name for the same transform


def raw_npy_transform(resolution: Resolution, K: int) -> Callable[[object], Tensor]:
    """An array kept as it is (e.g. the precomputed `3d_distmap` slices, `K H W`) as float32."""

    def transform(item: object) -> Tensor:
        return torch.from_numpy(_as_array(item).astype(np.float32))

    return transform


def _labels(item: object, K: int) -> Tensor:
    labels = _as_array(item)
    if labels.ndim == 3 and labels.shape[-1] in (3, 4):  # an RGB(A) png: all channels equal
        labels = labels[..., 0]
    if labels.ndim != 2:
        raise DataError(f"expected an H x W label map, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) and not np.issubdtype(labels.dtype, np.bool_):
        integral = np.isfinite(labels) & (labels == np.round(labels))
        if not integral.all():
            odd = np.unique(labels[~integral])[:5].tolist()
            raise DataError(
                f"label values must be class indices (integers 0..{K - 1}), found {odd}; "
                "store the labels as integers (e.g. uint8)"
            )
    values = np.unique(labels)
    if values.min() < 0 or values.max() >= K:
        hint = ""
        if set(values.tolist()) <= {0, 255}:
            hint = " It looks saved as 0/255: store class indices (divide the mask by 255)."
        raise DataError(
            f"label values {values.tolist()} are outside the {K} classes 0..{K - 1}.{hint}"
        )
    return torch.from_numpy(labels.astype(np.int64))


def _one_hot(item: object, K: int) -> Tensor:
    """Checked labels (`_labels`) one-hot encoded: `K H W` int32, the encoding of
    utils.class2one_hot (`onehot.indices2one_hot`, the labels being checked already)."""
    return indices2one_hot(_labels(item, K)[None], K)[0]


def gt_transform(resolution: Resolution, K: int) -> Callable[[object], Tensor]:
    """Label map (`H W` class indices, png or npy) -> one-hot int32 tensor `K H W`."""

    def transform(item: object) -> Tensor:
        return _one_hot(item, K)

    return transform


def dist_map_transform(resolution: Resolution, K: int) -> Callable[[object], Tensor]:
    """Label map -> signed distance map `K H W` float32 (utils.one_hot2dist, in-plane spacing).

    The distances are exact (float32). The original's loader passed an int32 one-hot to
    one_hot2dist with dtype=None, which truncated them to integers.
    """
    in_plane = tuple(float(r) for r in resolution[:2])

    def transform(item: object) -> Tensor:
        onehot = _one_hot(item, K).numpy()
        return torch.from_numpy(one_hot2dist(onehot, in_plane, dtype=np.float32))

    return transform


def _normalise(dist: Tensor) -> Tensor:
    """Each class map (`... K H W`) divided by its largest absolute value (into [-1, 1])."""
    scale = dist.flatten(-2).abs().amax(dim=-1).clamp_min(1e-12)
    return dist / scale[..., None, None]


def normalised_dist_map_transform(resolution: Resolution, K: int) -> Callable[[object], Tensor]:
    """As dist_map_transform, each class map divided by its largest absolute value (in [-1, 1])."""
    base = dist_map_transform(resolution, K)

    def transform(item: object) -> Tensor:
        return _normalise(base(item))

    return transform


TRANSFORMS: dict[str, Transform] = {
    "png_transform": png_transform,
    "npy_transform": npy_transform,
    "tensor_transform": tensor_transform,
    "raw_npy_transform": raw_npy_transform,
    "gt_transform": gt_transform,
    "dist_map_transform": dist_map_transform,
    "normalised_dist_map_transform": normalised_dist_map_transform,
}


# Transforms of a whole batch on its device (main.py --device_dist_maps, --augment): the loader
# reads the one-hot labels (gt_transform) and the distance maps are computed after augmentation.


def dist_maps_on_device(one_hot: Tensor, spacing: Tensor, validate: bool = True) -> Tensor:
    """dist_map_transform of a batch: `B K H W` one-hot and `B 2` in-plane spacing -> `B K H W`
    float32 on the same device (`utils.distance_maps` chooses the transform).

    `validate`: on an accelerator, check that the batch is one-hot and the spacing's values,
    which reads them back (a synchronisation): a training loop checks its first batch and
    passes False for the next. On the CPU the maps are host work, checked either way.
    """
    return distance_maps(one_hot, spacing, dtype=np.float32, validate=validate)


def normalised_dist_maps_on_device(
    one_hot: Tensor, spacing: Tensor, validate: bool = True
) -> Tensor:
    """normalised_dist_map_transform of a batch (see dist_maps_on_device)."""
    return _normalise(dist_maps_on_device(one_hot, spacing, validate))


DEVICE_TRANSFORMS: dict[Transform, Callable[[Tensor, Tensor], Tensor]] = {
    dist_map_transform: dist_maps_on_device,
    normalised_dist_map_transform: normalised_dist_maps_on_device,
}


# ---------------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FolderSpec:
    """One entry of `--folders`: a folder of the split, its transform, whether it is one-hot."""

    folder: str
    transform: Transform
    is_hot: bool


def _load(path: Path) -> object:
    try:
        if path.suffix == ".npy":
            return np.load(path)
        with Image.open(path) as image:
            return np.asarray(image)
    except Exception as error:  # noqa: BLE001 - any unreadable file is the same user error
        raise DataError(f"{path}: unreadable ({error})") from None


class SliceDataset(Dataset):
    """The slices of one split, read through the `--folders` transforms.

    Args:
        root: the split folder (e.g. `data/isles/train`).
        specs: the folders to read and their transforms; the first is the input.
        K: number of classes.
        spacing: stem -> spacing; None gives unit spacing (the original without --use_spacing).
        in_memory: load every file once at construction.
        debug: keep the first 10 slices only.

    Items are dicts: `images` (`C H W`), `labels` (one tensor per target folder, in order),
    `filename` (the stem), `spacing` (float32 vector).

    Raises:
        DataError: a folder is missing or empty, folders hold different stems (naming the folder
            and an example stem), or a file is unreadable or holds bad labels (naming the file).
    """

    def __init__(
        self,
        root: str | Path,
        specs: Sequence[FolderSpec],
        K: int,
        spacing: dict[str, Sequence[float]] | None = None,
        in_memory: bool = False,
        debug: bool = False,
    ) -> None:
        self.root = Path(root)
        self.specs = list(specs)
        self.K = K
        # Without a one-hot target the split is unlabelled (semi-supervised): no Dice on it.
        self.labelled = any(spec.is_hot for spec in self.specs[1:])
        self.files = self._match_files()
        if debug:
            self.files = self.files[:10]
        self.stems = [files[0].stem for files in self.files]
        missing = [s for s in self.stems if spacing is not None and s not in spacing]
        if missing:
            raise DataError(
                f"{self.root}/spacing.json has no spacing for {len(missing)} slice(s), e.g. "
                f"{missing[0]}"
            )
        self.spacing = spacing
        self.cache: list[list[object]] | None = None
        if in_memory:
            self.cache = [[_load(path) for path in files] for files in self.files]

    def _match_files(self) -> list[list[Path]]:
        per_folder: list[dict[str, Path]] = []
        for spec in self.specs:
            folder = self.root / spec.folder
            if not folder.is_dir():
                raise DataError(f"{folder}: data folder not found (check --dataset and --folders)")
            files = {p.stem: p for p in folder.iterdir() if p.suffix in (".png", ".npy")}
            if not files:
                raise DataError(f"{folder}: no .png or .npy file")
            per_folder.append(files)
        stems = sorted(per_folder[0])
        for spec, files in zip(self.specs[1:], per_folder[1:], strict=True):
            if set(files) != set(stems):
                only_input = sorted(set(stems) - set(files))
                only_here = sorted(set(files) - set(stems))
                example = (
                    f"{only_input[0]} has no file in {spec.folder}"
                    if only_input
                    else f"{only_here[0]} has no input in {self.specs[0].folder}"
                )
                raise DataError(
                    f"{self.root}: images and labels do not match between {self.specs[0].folder}/"
                    f" ({len(stems)} files) and {spec.folder}/ ({len(files)} files): {example}"
                )
        return [[files[stem] for files in per_folder] for stem in stems]

    def __len__(self) -> int:
        return len(self.files)

    def resolution(self, index: int) -> Resolution:
        if self.spacing is None:
            return (1.0, 1.0, 1.0)
        return tuple(float(s) for s in self.spacing[self.stems[index]])

    def __getitem__(self, index: int) -> dict:
        resolution = self.resolution(index)
        loaded = (
            self.cache[index] if self.cache is not None else [_load(p) for p in self.files[index]]
        )
        tensors = []
        for spec, item, path in zip(self.specs, loaded, self.files[index], strict=True):
            try:
                tensors.append(spec.transform(resolution, self.K)(item))
            except (DataError, ValueError) as error:
                raise DataError(f"{path}: {error}") from None
        image, labels = tensors[0], tensors[1:]
        for t, path in zip(labels, self.files[index][1:], strict=True):
            if t.shape[-2:] != image.shape[-2:]:
                raise DataError(
                    f"{path}: shape {tuple(t.shape)} does not match the input "
                    f"{tuple(image.shape)} of {self.files[index][0]}"
                )
        return {
            "images": image,
            "labels": labels,
            "filename": self.stems[index],
            "spacing": torch.tensor(resolution, dtype=torch.float32),
        }


def collate(items: list[dict]) -> dict:
    """Stack a list of items into a batch (labels stay a list, one tensor per target folder; the
    training knows which of them feed the losses and which is the ground truth)."""
    return {
        "images": torch.stack([item["images"] for item in items]),
        "labels": [
            torch.stack(group) for group in zip(*(item["labels"] for item in items), strict=True)
        ],
        "filenames": [item["filename"] for item in items],
        "spacing": torch.stack([item["spacing"] for item in items]),
    }


# ---------------------------------------------------------------------------------------------
# Grouping slices by patient
# ---------------------------------------------------------------------------------------------


def group_key(stem: str, grp_regex: str) -> str:
    """The group (patient or volume) of a slice stem: the first group of `grp_regex`.

    Raises:
        DataError: the regex does not match the stem.
    """
    match = re.match(grp_regex, stem)
    if match is None:
        raise DataError(f"--grp_regex {grp_regex!r} does not match the slice {stem!r}")
    return match.group(1) if match.groups() else match.group(0)


class PatientSampler(Sampler[list[int]]):
    """Batches that hold every slice of one group (`--group`), in slice order.

    Args:
        stems: the dataset's slice stems.
        grp_regex: regex whose first group is the patient (or volume) of a stem.
        shuffle: shuffle the order of the groups each epoch (training).
        seed: base seed of the shuffling; the epoch is added so each epoch differs.
    """

    def __init__(self, stems: Sequence[str], grp_regex: str, shuffle: bool, seed: int = 0) -> None:
        groups: dict[str, list[int]] = defaultdict(list)
        for index, stem in enumerate(stems):
            groups[group_key(stem, grp_regex)].append(index)
        self.groups = [sorted(groups[key], key=lambda i: stems[i]) for key in sorted(groups)]
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        order = list(range(len(self.groups)))
        if self.shuffle:
            random.Random(self.seed + self.epoch).shuffle(order)
        return iter([self.groups[i] for i in order])

    def __len__(self) -> int:
        return len(self.groups)


class ShardedBatchSampler(Sampler[list[int]]):
    """The batches of `base` dealt to one of `world_size` processes (DistributedDataParallel).

    The base sampler draws the same batches in every process (same seed), and process `rank`
    takes batches rank, rank + world_size, ...: every batch is exactly a single-process batch.
    With `pad` (training) every process gets the same number of batches, the last ones repeating
    the first, since each step synchronises the gradients; `position(j)` is then None for a
    repeat, which is trained on but not logged. Without `pad` (validation) nothing repeats.
    """

    def __init__(self, base: Sampler[list[int]], rank: int, world_size: int, pad: bool) -> None:
        self.base, self.rank, self.world_size, self.pad = base, rank, world_size, pad

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def position(self, j: int) -> int | None:
        """Index in the base order of this process's j-th batch; None for a padding repeat."""
        position = self.rank + j * self.world_size
        return position if position < len(self.base) else None

    def __iter__(self) -> Iterator[list[int]]:
        # A generator: the base draws its order at the first batch, after the DataLoader drew
        # its worker seed from the same generator, as in a single process.
        batches = list(self.base)
        mine = batches[self.rank :: self.world_size]
        if self.pad:
            mine += batches[: len(self) - len(mine)]
        yield from mine

    def __len__(self) -> int:
        n = len(self.base)
        if self.pad:
            return -(-n // self.world_size)
        return len(range(self.rank, n, self.world_size))


def read_spacing(split: Path) -> dict[str, list[float]]:
    """The split's `spacing.json` (stem -> [dx, dy, dz]).

    Raises:
        DataError: missing or malformed file.
    """
    path = split / "spacing.json"
    try:
        spacing = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(
            f"{path}: not found (--use_spacing needs the slicer's spacing.json)"
        ) from None
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(spacing, dict):
        raise DataError(f"{path}: expected an object mapping slice stems to spacings")
    return spacing


def read_spacing_3d(path: Path) -> dict[str, list[float]]:
    """The slicer's `spacing_3d.json` (volume id -> [dx, dy, dz] in mm); {} when absent, the
    slices' own spacing being used then.

    Raises:
        DataError: unreadable JSON, or entries that are not three positive numbers.
    """
    if not path.exists():
        return {}
    try:
        spacing = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: not a readable JSON file ({error}); re-slice the data") from None
    valid = isinstance(spacing, dict) and all(
        isinstance(v, list)
        and len(v) == 3
        and all(
            isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and x > 0
            for x in v
        )
        for v in spacing.values()
    )
    if not valid:
        raise DataError(
            f"{path}: expected an object mapping volume ids to three positive voxel sizes "
            "[dx, dy, dz]; re-slice the data"
        )
    return spacing


def make_loader(
    split: Path,
    specs: Sequence[FolderSpec],
    K: int,
    *,
    batch_size: int,
    train: bool,
    use_spacing: bool,
    in_memory: bool,
    debug: bool,
    group: bool,
    grp_regex: str,
    seed: int,
    num_workers: int = 0,
    pin_memory: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """One DataLoader over a split: shuffled batches for training, ordered ones for validation,
    whole patients per batch with `group` (PatientSampler); with `world_size` > 1, this
    process's share of the batches (ShardedBatchSampler)."""
    if not split.is_dir():
        raise DataError(
            f"{split}: data folder not found (check --dataset, --training_folders and "
            "--validation_folder)"
        )
    spacing = read_spacing(split) if use_spacing else None
    dataset = SliceDataset(split, specs, K, spacing=spacing, in_memory=in_memory, debug=debug)
    if not train and not dataset.labelled:
        raise DataError(
            f"{split}: validation needs a one-hot target (a True flag in --folders) for its metrics"
        )
    common = {
        "collate_fn": collate,
        "num_workers": num_workers,
        "pin_memory": pin_memory,
        "persistent_workers": num_workers > 0,
    }
    if group:
        sampler = PatientSampler(dataset.stems, grp_regex, shuffle=train, seed=seed)
        if world_size > 1:
            sampler = ShardedBatchSampler(sampler, rank, world_size, pad=train)
        return DataLoader(dataset, batch_sampler=sampler, **common)
    generator = torch.Generator().manual_seed(seed) if train else None
    if world_size == 1:
        return DataLoader(
            dataset, batch_size=batch_size, shuffle=train, generator=generator, **common
        )
    order = RandomSampler(dataset, generator=generator) if train else SequentialSampler(dataset)
    batches = ShardedBatchSampler(
        BatchSampler(order, batch_size, drop_last=False), rank, world_size, pad=train
    )
    return DataLoader(dataset, batch_sampler=batches, generator=generator, **common)
