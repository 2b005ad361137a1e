"""Random 3D patches of preprocessed volumes, the training input of the 3D chain (nnU-Net style).

A split of a preprocessed 3D dataset (`<dest>/train`, written by
`boundary_loss.preprocessing.prepare_3d`) holds one file per case in each folder:

    in_npy/<case>.npy       float32  C X Y Z  the normalised image
    gt_npy/<case>.npy       uint8    X Y Z    class indices 0..K-1
    3d_distmap/<case>.npy   float32  K X Y Z  signed distance maps of the whole volume

read through the `--folders` specs of `boundary_loss.data.loader` (the input first):

    [('in_npy', tensor_transform, False), ('gt_npy', gt_transform, True),
     ('3d_distmap', raw_npy_transform, False)]

Every file is memory-mapped (`np.load(path, mmap_mode="r")`) and only the patch is copied, so a
dataset larger than the memory trains. Items have the form of the 2D loader's (`images` C *patch,
`labels` one tensor per target folder, `filename` the case, `spacing` (3,)), so
`loader.collate` batches them.

Sampling follows nnU-Net (Isensee et al., Nature Methods 2021; nnU-Net's data loader): a case
drawn uniformly; the last samples of each batch centred on a foreground voxel (its
`oversample_foreground_percent` = 0.33: sample j of a batch of B is forced when j >= round(B *
(1 - 0.33))), moved inside the volume where it is at least the patch, the others at a uniform
position inside the volume. Along an axis where the volume is smaller than the patch, the patch
is centred and padded: the image with 0, the labels with the background class, the distance maps
with 0, so that the boundary term leaves the padded voxels out (a distance there would contradict
the background label: the field of view ends, the structures need not).

The distance maps are cut from the whole-volume maps, never recomputed on the patch: a patch's
own maps would measure distances to the patch's border and miss every object outside it, which
is not the boundary loss of the volume (the refusal of `dist_map_transform` below).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from boundary_loss.data.loader import (
    DataError,
    FolderSpec,
    Resolution,
    collate,
    dist_map_transform,
    gt_transform,
    normalised_dist_map_transform,
)
from boundary_loss.maps.onehot import indices2one_hot

# nnU-Net's oversample_foreground_percent (nnUNetDataLoader, Isensee et al. 2021).
OVERSAMPLE_FOREGROUND = 0.33
# nnU-Net stores at most 10,000 voxel locations per class and case ("class_locations"), drawn
# with a fixed seed (1234).
MAX_LOCATIONS = 10_000
LOCATIONS_SEED = 1234
DEBUG_CASES = 2
# The seed of process `rank` is seed + RANK_SEED_STRIDE * rank, so that it meets none of the
# nearby seeds a training gives its other loaders.
RANK_SEED_STRIDE = 1_000_003

PATCH_MAPS_REFUSED = (dist_map_transform, normalised_dist_map_transform)


def describe_spec(spec: FolderSpec) -> str:
    """A spec as written in `--folders`, e.g. ('3d_distmap', raw_npy_transform, False)."""
    name = getattr(spec.transform, "__name__", repr(spec.transform))
    return f"({spec.folder!r}, {name}, {spec.is_hot})"


def one_hot_volume(resolution: Resolution, K: int) -> Callable[[object], Tensor]:
    """gt_transform of a label volume: `X Y Z` class indices -> one-hot int32 `K X Y Z`.

    loader.gt_transform checks `H W` slices one by one; the labels of a patch are checked once
    per case when the dataset is built, so their one-hot is the same encoding
    (`onehot.indices2one_hot`) without the per-item check.
    """

    def transform(item: object) -> Tensor:
        labels = torch.from_numpy(np.asarray(item).astype(np.int64))
        return indices2one_hot(labels[None], K)[0]

    return transform


def volume_transform(spec: FolderSpec) -> Callable[[Resolution, int], Callable[[object], Tensor]]:
    """The transform a spec applies to a patch: its own, gt_transform taking volumes."""
    return one_hot_volume if spec.transform is gt_transform else spec.transform


def check_patch_size(patch_size: Sequence[int]) -> tuple[int, int, int]:
    """`patch_size` as three positive ints.

    Raises:
        DataError: not three positive integers.
    """
    values = list(patch_size) if isinstance(patch_size, Sequence | np.ndarray) else [patch_size]
    valid = len(values) == 3 and all(
        isinstance(v, int | np.integer) and not isinstance(v, bool) and v > 0 for v in values
    )
    if not valid:
        raise DataError(f"patch_size must be three positive integers [px, py, pz], got {values}")
    return tuple(int(v) for v in values)


def crop(array: np.ndarray, lower: Sequence[int], patch: Sequence[int]) -> np.ndarray:
    """The box `lower` .. `lower + patch` of the last three axes of `array` (`... X Y Z`), copied.

    Only the part inside the volume is read (from a memory map, only its pages); the rest is
    padded with 0.

    Returns:
        `... *patch` array, a new array of array's dtype.
    """
    shape = array.shape[-3:]
    start = [max(lo, 0) for lo in lower]
    stop = [min(lo + p, s) for lo, p, s in zip(lower, patch, shape, strict=True)]
    region = array[(..., *(slice(a, b) for a, b in zip(start, stop, strict=True)))]
    before = [a - lo for a, lo in zip(start, lower, strict=True)]
    after = [lo + p - b for lo, p, b in zip(lower, patch, stop, strict=True)]
    if not any(before) and not any(after):
        return np.array(region)
    widths = [(0, 0)] * (array.ndim - 3) + list(zip(before, after, strict=True))
    return np.pad(np.asarray(region), widths)


class PatchDataset(Dataset):
    """Random patches of the cases of one split, one epoch being `iterations` batches.

    Item i of epoch e draws everything from `np.random.default_rng([seed, e, i])`: loading
    processes, a resume and another run with the same seed give the same patches.

    Args:
        root: the split folder (e.g. `<dest>/train`).
        specs: the folders and their transforms, the input first (`C X Y Z` arrays); targets are
            label volumes (`X Y Z` class indices, e.g. gt_npy with gt_transform) or maps
            (`K X Y Z`, e.g. 3d_distmap with raw_npy_transform).
        K: number of classes.
        patch_size: `[px, py, pz]` voxels.
        spacing: case -> voxel spacing [sx, sy, sz] (`spacing_3d.json`); None gives 1.
        batch_size: the batch size of the loader (the oversampling rule counts within a batch).
        iterations: batches per epoch; the length is batch_size * iterations.
        seed: base seed of the draws.
        oversample: share of each batch centred on foreground (nnU-Net's 0.33).
        debug: keep the first 2 cases only.

    The foreground voxels are those of the first label volume target (`X Y Z`): per case and
    class, at most 10,000 locations drawn with a fixed seed are kept, as nnU-Net does. Without
    a label volume target, or for a case without foreground, every patch is random.

    Raises:
        DataError: a folder or case file missing, cases differing between folders, an array of
            the wrong rank or shape for its case, maps without K channels, label values outside
            0..K-1, a spacing missing, a bad patch_size or count, or a transform computing
            distance maps on the patch (each naming the file, spec or argument).
    """

    def __init__(
        self,
        root: str | Path,
        specs: Sequence[FolderSpec],
        K: int,
        patch_size: Sequence[int],
        spacing: dict[str, Sequence[float]] | None,
        batch_size: int,
        iterations: int,
        seed: int,
        oversample: float = OVERSAMPLE_FOREGROUND,
        debug: bool = False,
    ) -> None:
        self.root = Path(root)
        self.specs = list(specs)
        if not self.specs:
            raise DataError(f"{self.root}: no folder to read (an input folder is needed)")
        for spec in self.specs:
            if spec.transform in PATCH_MAPS_REFUSED:
                raise DataError(
                    f"{describe_spec(spec)}: distance maps computed on a patch are wrong for the "
                    "boundary loss (they measure from the patch's border and miss the objects "
                    "outside it); read the whole-volume maps with "
                    "('3d_distmap', raw_npy_transform, False)"
                )
        self.K = K
        self.patch = np.asarray(check_patch_size(patch_size), dtype=np.int64)
        for name, value in (("batch_size", batch_size), ("iterations", iterations)):
            if not isinstance(value, int) or value < 1:
                raise DataError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(seed, int) or seed < 0:
            raise DataError(f"seed must be a non-negative integer, got {seed!r}")
        if not 0 <= oversample <= 1:
            raise DataError(f"oversample must be within 0..1, got {oversample}")
        self.batch_size, self.iterations, self.seed = batch_size, iterations, seed
        self.oversample = oversample
        # nnU-Net's rule: sample j of a batch is forced onto foreground when j >= this.
        self.first_forced = round(batch_size * (1 - oversample))
        self.epoch = 0

        self.files = self._match_files()
        if debug:
            self.files = self.files[:DEBUG_CASES]
        self.cases = [files[0].stem for files in self.files]
        self.spacing = self._check_spacing(spacing)
        self.transforms = [volume_transform(spec) for spec in self.specs]
        self._arrays: dict[tuple[int, int], np.ndarray] = {}
        self.shapes: list[tuple[int, int, int]] = []
        self.label_spec: int | None = None
        self.locations: list[dict[int, np.ndarray]] = []  # per case: class -> flat indices
        self._check_arrays()
        self._arrays.clear()  # reopened lazily, in each loading process

    # ------------------------------------------------------------------ construction checks

    def _match_files(self) -> list[list[Path]]:
        per_folder: list[dict[str, Path]] = []
        for spec in self.specs:
            folder = self.root / spec.folder
            if not folder.is_dir():
                raise DataError(f"{folder}: data folder not found (check the dataset and folders)")
            files = {p.stem: p for p in folder.iterdir() if p.suffix == ".npy"}
            if not files:
                raise DataError(f"{folder}: no .npy file")
            per_folder.append(files)
        cases = sorted(per_folder[0])
        for spec, files in zip(self.specs[1:], per_folder[1:], strict=True):
            if set(files) != set(cases):
                only_input = sorted(set(cases) - set(files))
                only_here = sorted(set(files) - set(cases))
                example = (
                    f"{self.root / spec.folder / only_input[0]}.npy is missing"
                    if only_input
                    else f"{self.root / spec.folder / only_here[0]}.npy has no input in "
                    f"{self.specs[0].folder}/"
                )
                raise DataError(
                    f"{self.root}: the cases of {self.specs[0].folder}/ ({len(cases)}) and "
                    f"{spec.folder}/ ({len(files)}) differ: {example}"
                )
        return [[files[case] for files in per_folder] for case in cases]

    def _check_spacing(self, spacing: dict[str, Sequence[float]] | None) -> list[Resolution]:
        if spacing is None:
            return [(1.0, 1.0, 1.0)] * len(self.cases)
        out = []
        for case in self.cases:
            if case not in spacing:
                raise DataError(f"spacing (spacing_3d.json) has no entry for the case {case}")
            values = list(spacing[case])
            if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
                raise DataError(
                    f"spacing (spacing_3d.json) of the case {case} must be three positive "
                    f"numbers, got {values}"
                )
            out.append(tuple(float(v) for v in values))
        return out

    def _check_arrays(self) -> None:
        """Shapes of every file, label values, and the foreground locations of each case."""
        channels = None
        for c, files in enumerate(self.files):
            image = self.array(c, 0)
            if image.ndim != 4:
                raise DataError(
                    f"{files[0]}: expected a C X Y Z image, got shape {tuple(image.shape)}"
                )
            if channels is not None and image.shape[0] != channels:
                raise DataError(
                    f"{files[0]}: {image.shape[0]} channels, the other cases have {channels}"
                )
            channels = image.shape[0]
            shape = tuple(int(s) for s in image.shape[1:])
            self.shapes.append(shape)
            locations: dict[int, np.ndarray] = {}
            for s, path in enumerate(files[1:], start=1):
                array = self.array(c, s)
                if array.ndim not in (3, 4):
                    raise DataError(
                        f"{path}: expected X Y Z class indices or K X Y Z maps, got shape "
                        f"{tuple(array.shape)}"
                    )
                if c > 0 and array.ndim != self.array(0, s).ndim:
                    raise DataError(
                        f"{path}: shape {tuple(array.shape)}, while {files[s].parent}/ holds "
                        f"arrays of {self.array(0, s).ndim} axes for {self.files[0][s].name}"
                    )
                if tuple(array.shape[-3:]) != shape:
                    raise DataError(
                        f"{path}: shape {tuple(array.shape)} does not match the image "
                        f"{tuple(image.shape)} of {files[0]}"
                    )
                if array.ndim == 4 and self.specs[s].transform is gt_transform:
                    raise DataError(
                        f"{path}: {describe_spec(self.specs[s])} reads X Y Z class indices, "
                        f"got shape {tuple(array.shape)}"
                    )
                if array.ndim == 4:
                    if array.shape[0] != self.K:
                        raise DataError(
                            f"{path}: {array.shape[0]} maps, expected one per class (K = "
                            f"{self.K}, K X Y Z)"
                        )
                    continue
                if self.label_spec is None:
                    self.label_spec = s
                counts = self._label_counts(array, path)
                if s == self.label_spec:
                    locations = self._class_locations(array, counts)
            self.locations.append(locations)

    def _label_counts(self, labels: np.ndarray, path: Path) -> np.ndarray:
        """Voxels of each class (`K`), the values checked to be class indices 0..K-1."""
        if not np.issubdtype(labels.dtype, np.integer):
            raise DataError(
                f"{path}: labels of dtype {labels.dtype}, expected integer class indices "
                f"0..{self.K - 1} (uint8)"
            )
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= self.K:
            raise DataError(
                f"{path}: label values {low}..{high} are outside the {self.K} classes "
                f"0..{self.K - 1}"
            )
        return np.bincount(np.asarray(labels).reshape(-1), minlength=self.K)

    def _class_locations(self, labels: np.ndarray, counts: np.ndarray) -> dict[int, np.ndarray]:
        """Flat indices of at most MAX_LOCATIONS voxels of each foreground class present,
        drawn with a fixed seed (per case, so that a case's locations do not depend on the
        others)."""
        flat = np.asarray(labels).reshape(-1)
        rng = np.random.default_rng(LOCATIONS_SEED)
        locations = {}
        for k in range(1, self.K):
            if counts[k]:
                where = np.flatnonzero(flat == k)
                if len(where) > MAX_LOCATIONS:
                    where = np.sort(rng.choice(where, MAX_LOCATIONS, replace=False))
                locations[k] = where
        return locations

    # ------------------------------------------------------------------ reading

    def array(self, case: int, spec: int) -> np.ndarray:
        """The memory map of one file (case index, spec index), opened once per process."""
        key = (case, spec)
        if key not in self._arrays:
            path = self.files[case][spec]
            try:
                self._arrays[key] = np.load(path, mmap_mode="r")
            except Exception as error:  # noqa: BLE001 - any unreadable file is the same user error
                raise DataError(f"{path}: unreadable ({error})") from None
        return self._arrays[key]

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_arrays"] = {}  # memory maps are not sent to loading processes
        return state

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose draws integer indices give (an index (epoch, i) names its own)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batch_size * self.iterations

    def forced(self, index: int) -> bool:
        """Whether item `index` is centred on foreground (nnU-Net's rule, within its batch)."""
        return index % self.batch_size >= self.first_forced

    def draw(self, epoch: int, index: int) -> tuple[int, np.ndarray]:
        """The case (index into `cases`) and the lower corner (`3` voxels, possibly outside the
        volume) of item `index` of `epoch`, from `default_rng([seed, epoch, index])`."""
        rng = np.random.default_rng([self.seed, epoch, index])
        case = int(rng.integers(len(self.cases)))
        shape = np.asarray(self.shapes[case], dtype=np.int64)
        locations = self.locations[case]
        if self.forced(index) and locations:
            classes = sorted(locations)
            voxels = locations[classes[int(rng.integers(len(classes)))]]
            voxel = np.unravel_index(voxels[int(rng.integers(len(voxels)))], tuple(shape))
            centred = np.asarray(voxel, dtype=np.int64) - self.patch // 2
            # kept inside the volume where it is at least the patch (nnU-Net does the same),
            # centred on it where it is smaller: the voxel stays inside the patch either way
            room = shape - self.patch
            return case, np.where(room >= 0, np.clip(centred, 0, np.maximum(room, 0)), room // 2)
        room = shape - self.patch
        lower = [int(rng.integers(r + 1)) if r >= 0 else r // 2 for r in room.tolist()]
        return case, np.asarray(lower, dtype=np.int64)

    def __getitem__(self, index: int | tuple[int, int]) -> dict:
        epoch, i = index if isinstance(index, tuple) else (self.epoch, index)
        if not 0 <= i < len(self):
            raise IndexError(f"item {i} of a dataset of {len(self)}")
        case, lower = self.draw(epoch, i)
        resolution = self.spacing[case]
        lower_list, patch = lower.tolist(), self.patch.tolist()
        tensors = []
        for s, spec in enumerate(self.specs):
            array = crop(self.array(case, s), lower_list, patch)
            try:
                tensors.append(self.transforms[s](resolution, self.K)(array))
            except (DataError, ValueError) as error:
                raise DataError(f"{self.files[case][s]} ({describe_spec(spec)}): {error}") from None
        return {
            "images": tensors[0],
            "labels": tensors[1:],
            "filename": self.cases[case],
            "spacing": torch.tensor(resolution, dtype=torch.float32),
        }


class EpochBatchSampler(Sampler[list[tuple[int, int]]]):
    """The batches of one epoch of a PatchDataset, in order, each index carrying its epoch.

    The epoch travels with the indices, so loading processes that persist across epochs draw the
    epoch's patches without being told (`set_epoch` runs in the main process only). Under
    torchrun each process draws its own batches; `position` places this process's j-th batch
    in the epoch's log of every process (batch j of rank r at j x world_size + r).
    """

    def __init__(self, dataset: PatchDataset, rank: int = 0, world_size: int = 1) -> None:
        self.dataset = dataset
        self.epoch = 0
        self.rank, self.world_size = rank, world_size

    def batches_of_all(self) -> int:
        """The batches of one epoch over every process."""
        return self.dataset.iterations * self.world_size

    def position(self, j: int) -> int:
        """The place of this process's j-th batch in the log of every process's batches."""
        return j * self.world_size + self.rank

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.dataset.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, size = self.epoch, self.dataset.batch_size
        for b in range(self.dataset.iterations):
            yield [(epoch, i) for i in range(b * size, (b + 1) * size)]

    def __len__(self) -> int:
        return self.dataset.iterations


def make_patch_loader(
    root: str | Path,
    specs: Sequence[FolderSpec],
    K: int,
    patch_size: Sequence[int],
    spacing: dict[str, Sequence[float]] | None,
    batch_size: int,
    iterations: int,
    seed: int,
    workers: int,
    rank: int = 0,
    world_size: int = 1,
    debug: bool = False,
    oversample: float = OVERSAMPLE_FOREGROUND,
) -> DataLoader:
    """The training loader of random patches: `iterations` batches of `batch_size` per epoch.

    Each process of a distributed training draws its own patches (seed + RANK_SEED_STRIDE *
    rank: far from the seeds of a training's other loaders, seed + 1, ...); the batches are
    already random, so nothing is shuffled. `loader.batch_sampler.set_epoch(epoch)` moves to the
    draws of another epoch. Loading processes persist across epochs, and batches are pinned
    when CUDA is available.

    Args:
        root, specs, K, patch_size, spacing, batch_size, iterations, seed, oversample, debug:
            as PatchDataset (batch_size per process).
        workers: loading processes (0: in this process).
        rank, world_size: this process among those of a distributed training.

    Returns:
        A DataLoader of `loader.collate` batches: `images` B C *patch, `labels` B K *patch each.

    Raises:
        DataError: as PatchDataset, or a rank outside 0..world_size-1.
    """
    if not 0 <= rank < world_size:
        raise DataError(f"rank {rank} is outside the {world_size} processes 0..{world_size - 1}")
    dataset = PatchDataset(
        root,
        specs,
        K,
        patch_size,
        spacing,
        batch_size,
        iterations,
        seed + RANK_SEED_STRIDE * rank,
        oversample=oversample,
        debug=debug,
    )
    return DataLoader(
        dataset,
        batch_sampler=EpochBatchSampler(dataset, rank, world_size),
        collate_fn=collate,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,
    )
