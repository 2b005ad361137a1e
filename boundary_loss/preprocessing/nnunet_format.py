"""Read a labelled 3D dataset in nnU-Net v2's raw format or in the Medical Segmentation Decathlon's.

Both layouts are described by a `dataset.json` at the dataset's root:

- nnU-Net v2 (Isensee et al., Nature Methods 2021; the `dataset_format.md` of MIC-DKFZ/nnUNet):
  `channel_names` (`{"0": "CT", "1": "T2"}`), `labels` as name -> integer
  (`{"background": 0, "tumour": 1}`), `numTraining`, `file_ending`; one file per channel
  `imagesTr/<case>_<XXXX><file_ending>` (XXXX the channel number, 0000 first), the labels in
  `labelsTr/<case><file_ending>`, optional test images in `imagesTs/` (same naming) and an optional
  `splits_final.json` (a list of folds, each `{"train": [...], "val": [...]}`).
- Medical Segmentation Decathlon (Antonelli et al., Nature Communications 2022), from which
  nnU-Net's format grew: `modality` (`{"0": "FLAIR", ...}`), `labels` as integer -> name
  (`{"0": "background", "1": "edema"}`), a `training.engine` list of `{"image":
  "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}` and a `test` list of image paths; each
  image is one 4D NIfTI holding the channels along its last axis (3D when there is one channel). A
  `splits_final.json` beside it (nnU-Net's folds of the same cases) is used as for nnU-Net. Its
  files belong inside its folder: a path that is absolute or holds `..` is refused, before any file
  is read.

In both layouts a test case may not share its name with a training case (their predictions would
be one file), and a case is listed once in each part of a fold of `splits_final.json`.

Supported: NIfTI files (`.nii.gz`, `.nii`) and one integer per label. Region-based labels
(nnU-Net's lists of integers with `regions_class_order`), nnU-Net's `ignore` label, other file
endings and nnU-Net's explicit `dataset` file list are refused with a message saying what is
supported. Every error is a `DatasetError` naming the file and what was expected.

Channel normalisation follows nnU-Net's choice from the channel's name (case-insensitive, its
`map_channel_name_to_normalization`): `CT` clips to the training set's foreground 0.5 and 99.5
percentiles and z-scores with the foreground mean and standard deviation; `noNorm` keeps the
values; `rescale_to_0_1` rescales each volume to [0, 1]; `rgb_to_0_1` divides by 255; any other
name (`zscore`, `T2`, `FLAIR`, ...) z-scores each volume on its own.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from boundary_loss.preprocessing.volumes import SliceError

SUPPORTED = (
    "supported: nnU-Net v2 raw datasets (dataset.json with channel_names, labels as name -> "
    "integer, file_ending .nii.gz or .nii) and Medical Segmentation Decathlon tasks "
    "(dataset.json with modality, labels as integer -> name, a training list of NIfTI files)"
)
ENDINGS = (".nii.gz", ".nii")
NNUNET, MSD = "nnU-Net v2", "MSD"

# nnU-Net's normalisation schemes by lower-cased channel name; any other name: "zscore".
SCHEMES = {
    "ct": "ct",
    "nonorm": "nonorm",
    "zscore": "zscore",
    "rescale_to_0_1": "rescale_to_0_1",
    "rgb_to_0_1": "rgb_to_0_1",
}


class DatasetError(SliceError):
    """A dataset.json or a file it points to cannot be used; the message names it."""


@dataclass(frozen=True)
class Case:
    """One case of the dataset.

    Attributes:
        cid: the case identifier (`hippocampus_001`).
        images: nnU-Net: one 3D file per channel, in channel order; MSD: the one 4D file.
        label: the label file; None for a test case.
        four_d: whether `images` is one file holding every channel along its last axis.
    """

    cid: str
    images: tuple[Path, ...]
    label: Path | None
    four_d: bool


@dataclass(frozen=True)
class DatasetDescription:
    """What `dataset.json` (and `splits_final.json`) say, checked against the files.

    Attributes:
        root: the dataset folder.
        layout: `NNUNET` or `MSD`.
        channels: the channel names, in channel order.
        labels: (name, integer value) per label, by value; the class index is the position.
        training: the labelled cases, sorted by id.
        test: the unlabelled cases (imagesTs), sorted by id.
        folds: nnU-Net's splits_final.json as (train ids, val ids) per fold; None without it.
    """

    root: Path
    layout: str
    channels: tuple[str, ...]
    labels: tuple[tuple[str, int], ...]
    training: tuple[Case, ...]
    test: tuple[Case, ...]
    folds: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] | None

    @property
    def name(self) -> str:
        """The dataset folder's name (`Dataset004_Hippocampus`, `Task04_Hippocampus`)."""
        return self.root.name

    @property
    def values(self) -> tuple[int, ...]:
        """The label values, in class order."""
        return tuple(value for _, value in self.labels)

    @property
    def schemes(self) -> tuple[str, ...]:
        """The normalisation scheme of each channel (see the module docstring)."""
        return tuple(SCHEMES.get(name.lower(), "zscore") for name in self.channels)

    def files(self) -> list[Path]:
        """Every file the pipeline reads: dataset.json, splits_final.json, images and labels."""
        found = [self.root / "dataset.json"]
        if self.folds is not None:
            found.append(self.root / "splits_final.json")
        for case in (*self.training, *self.test):
            found += [*case.images, *([case.label] if case.label else [])]
        return found


# ---------------------------------------------------------------------------------------------
# dataset.json
# ---------------------------------------------------------------------------------------------


def _read_json(path: Path, what: str) -> object:
    if not path.is_file():
        raise DatasetError(f"{path}: file not found (expected {what}); {SUPPORTED}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DatasetError(
            f"{path}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: cannot be read ({error})") from None


def _indexed_names(entry: object, path: Path, key: str) -> tuple[str, ...]:
    """`{"0": "CT", "1": "T2"}` -> ("CT", "T2"): keys 0..C-1, names non-empty strings."""
    if not isinstance(entry, dict) or not entry:
        raise DatasetError(f"{path}: {key} must map channel numbers to names, got {entry!r}")
    try:
        numbers = sorted(int(k) for k in entry)
    except ValueError:
        raise DatasetError(
            f"{path}: {key} keys must be channel numbers, got {list(entry)}"
        ) from None
    if numbers != list(range(len(entry))):
        raise DatasetError(f"{path}: {key} keys must be 0 .. {len(entry) - 1}, got {list(entry)}")
    names = tuple(entry[str(n)] if str(n) in entry else entry[n] for n in numbers)
    if not all(isinstance(n, str) and n for n in names):
        raise DatasetError(f"{path}: {key} names must be non-empty strings, got {list(names)}")
    return names


def _check_labels(pairs: list[tuple[str, object]], path: Path) -> tuple[tuple[str, int], ...]:
    """Check (name, value) pairs: one non-negative integer each, unique, background 0."""
    for name, value in pairs:
        if isinstance(value, (list, tuple)):
            raise DatasetError(
                f"{path}: label {name!r} is the region {value}: region-based labels are not "
                f"supported; expected one integer per label ({SUPPORTED})"
            )
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
            raise DatasetError(
                f"{path}: label {name!r} has the value {value!r}; expected an integer in 0 .. 255"
            )
    for name, _ in pairs:
        if str(name).lower() == "ignore":
            raise DatasetError(
                f"{path}: label {name!r} is nnU-Net's ignore label (for sparse annotations), which "
                f"is not supported: every voxel must be labelled ({SUPPORTED})"
            )
    values = [value for _, value in pairs]
    twice = sorted(v for v, n in Counter(values).items() if n > 1)
    if twice:
        raise DatasetError(f"{path}: label values {twice} are given to several labels")
    if 0 not in values:
        raise DatasetError(f"{path}: no label has the value 0; expected 0 for the background")
    if len(values) < 2:
        raise DatasetError(f"{path}: only the background is labelled; expected 2 labels or more")
    return tuple(sorted(((str(n), int(v)) for n, v in pairs), key=lambda p: p[1]))


def _check_count(spec: dict, key: str, found: int, path: Path, what: str) -> None:
    if key in spec and spec[key] != found:
        raise DatasetError(f"{path}: {key} is {spec[key]!r} but {found} {what} were found")


# ---------------------------------------------------------------------------------------------
# nnU-Net v2
# ---------------------------------------------------------------------------------------------


def _nnunet_cases(
    folder: Path, ending: str, n_channels: int, labels: Path | None
) -> tuple[Case, ...]:
    """The cases of `imagesTr` (with `labelsTr`) or `imagesTs`, each with every channel."""
    pattern = re.compile(rf"(?P<case>.+)_(?P<channel>\d{{4}}){re.escape(ending)}")
    channels: dict[str, set[int]] = {}
    for path in folder.iterdir():
        if path.name.startswith("."):
            continue
        match = pattern.fullmatch(path.name)
        if match is None:
            raise DatasetError(
                f"{path}: not named <case>_<XXXX>{ending}; expected one file per channel "
                f"(XXXX = 0000 .. {n_channels - 1:04d}) in {folder.name}/ ({SUPPORTED})"
            )
        channels.setdefault(match["case"], set()).add(int(match["channel"]))
    cases = []
    for cid in sorted(channels):
        for channel in range(n_channels):
            if channel not in channels[cid]:
                expected = folder / f"{cid}_{channel:04d}{ending}"
                raise DatasetError(
                    f"{expected}: file not found (channel {channel} of case {cid}; dataset.json "
                    f"declares {n_channels} channels)"
                )
        extra = sorted(c for c in channels[cid] if c >= n_channels)
        if extra:
            raise DatasetError(
                f"{folder / f'{cid}_{extra[0]:04d}{ending}'}: channel {extra[0]} of case {cid}, "
                f"but dataset.json declares only {n_channels} channels"
            )
        images = tuple(folder / f"{cid}_{c:04d}{ending}" for c in range(n_channels))
        label = None
        if labels is not None:
            label = labels / f"{cid}{ending}"
            if not label.is_file():
                raise DatasetError(f"{label}: file not found (the labels of case {cid})")
        cases.append(Case(cid, images, label, four_d=False))
    if labels is not None:
        known = {f"{c.cid}{ending}" for c in cases}
        for path in sorted(labels.iterdir()):
            if path.name not in known and not path.name.startswith("."):
                raise DatasetError(
                    f"{path}: labels without images (no {folder.name}/"
                    f"{path.name.removesuffix(ending)}_0000{ending})"
                )
    return tuple(cases)


def _folds(root: Path, training: tuple[Case, ...]) -> tuple | None:
    """nnU-Net's splits_final.json, checked: every id known and listed once in its part of a
    fold, train and val disjoint."""
    path = root / "splits_final.json"
    if not path.exists():
        return None
    folds = _read_json(path, "nnU-Net's folds")
    known = {c.cid for c in training}
    if not isinstance(folds, list) or not folds:
        raise DatasetError(f"{path}: expected a list of folds {{'train': [...], 'val': [...]}}")
    checked = []
    for number, fold in enumerate(folds):
        if not isinstance(fold, dict) or not {"train", "val"} <= set(fold):
            raise DatasetError(f"{path}: fold {number} is not {{'train': [...], 'val': [...]}}")
        train, val = fold["train"], fold["val"]
        for part, ids in (("train", train), ("val", val)):
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise DatasetError(f"{path}: fold {number} must list case ids, got {ids!r}")
            unknown = sorted(str(i) for i in ids if i not in known)
            if unknown:
                raise DatasetError(f"{path}: fold {number} names unknown cases {unknown[:5]}")
            twice = sorted(i for i, n in Counter(ids).items() if n > 1)
            if twice:
                raise DatasetError(
                    f"{path}: fold {number} lists case {twice[0]} {Counter(ids)[twice[0]]} times "
                    f"in '{part}'; expected each case once (a repeated case would be counted "
                    "twice)"
                )
        if set(train) & set(val) or not train or not val:
            raise DatasetError(
                f"{path}: fold {number} must have training and validation cases, disjoint"
            )
        checked.append((tuple(sorted(train)), tuple(sorted(val))))
    return tuple(checked)


def _read_nnunet(root: Path, spec: dict, path: Path) -> DatasetDescription:
    if "dataset" in spec:
        raise DatasetError(
            f"{path}: the explicit 'dataset' file list is not supported; expected the files in "
            f"imagesTr/ and labelsTr/ ({SUPPORTED})"
        )
    if "regions_class_order" in spec:
        raise DatasetError(f"{path}: region-based labels are not supported ({SUPPORTED})")
    channels = _indexed_names(spec["channel_names"], path, "channel_names")
    labels_spec = spec.get("labels")
    if not isinstance(labels_spec, dict):
        raise DatasetError(f"{path}: labels must map names to integers, got {labels_spec!r}")
    labels = _check_labels(list(labels_spec.items()), path)
    ending = spec.get("file_ending")
    if ending not in ENDINGS:
        raise DatasetError(
            f"{path}: file_ending {ending!r} is not supported: only NIfTI ({', '.join(ENDINGS)})"
        )
    for folder in ("imagesTr", "labelsTr"):
        if not (root / folder).is_dir():
            raise DatasetError(f"{root / folder}: folder not found (expected by {path.name})")
    training = _nnunet_cases(root / "imagesTr", ending, len(channels), root / "labelsTr")
    if not training:
        raise DatasetError(f"{root / 'imagesTr'}: no training case; expected <case>_0000{ending}")
    _check_count(spec, "numTraining", len(training), path, "training cases")
    test: tuple[Case, ...] = ()
    if (root / "imagesTs").is_dir():
        test = _nnunet_cases(root / "imagesTs", ending, len(channels), None)
    _check_test_names(training, test, None)
    return DatasetDescription(
        root, NNUNET, channels, labels, training, test, _folds(root, training)
    )


# ---------------------------------------------------------------------------------------------
# Medical Segmentation Decathlon
# ---------------------------------------------------------------------------------------------


def _msd_file(root: Path, entry: object, path: Path, what: str) -> Path:
    """The file a Decathlon dataset.json entry names, checked before anything reads it.

    A Decathlon dataset's files belong inside its folder: an absolute path, or one holding
    `..`, is refused here, in the reader both the lineage and the slicer use, so that no step
    reads a file the lineage does not pin under the dataset folder.
    """
    if not isinstance(entry, str) or not entry.endswith(ENDINGS):
        raise DatasetError(
            f"{path}: {what} {entry!r} is not a NIfTI path; only NIfTI ({', '.join(ENDINGS)}) "
            "is supported"
        )
    relative = PurePosixPath(entry)
    if relative.is_absolute() or ".." in relative.parts:
        reason = "is an absolute path" if relative.is_absolute() else "holds '..'"
        raise DatasetError(
            f"{path}: {what} {entry!r} {reason}; expected a path inside the dataset folder "
            f"{root}, relative to it (such as ./imagesTr/<case>.nii.gz)"
        )
    file = root / entry
    if not file.is_file():
        raise DatasetError(f"{file}: file not found ({what}, listed in {path.name})")
    return file


def _check_test_names(
    training: tuple[Case, ...], test: tuple[Case, ...], listed_in: Path | None
) -> None:
    """Refuse a test case named like a training case: boundary_loss_predict writes one file per case
    name, so their predictions would overwrite each other.

    Args:
        training: the training cases.
        test: the test cases.
        listed_in: the dataset.json listing the test cases (the Decathlon), None for imagesTs.
    """
    known = {case.cid: case for case in training}
    for case in test:
        if case.cid in known:
            where = f", listed in {listed_in}," if listed_in is not None else ""
            raise DatasetError(
                f"{case.images[0]}: test case {case.cid}{where} has the name of the training "
                f"case {known[case.cid].images[0]}; expected distinct case names (the "
                "predictions of both would be written to one file)"
            )


def _case_id(file: Path) -> str:
    name = file.name
    return name.removesuffix(".gz").removesuffix(".nii")


def _read_msd(root: Path, spec: dict, path: Path) -> DatasetDescription:
    channels = _indexed_names(spec["modality"], path, "modality")
    labels_spec = spec.get("labels")
    if not isinstance(labels_spec, dict):
        raise DatasetError(f"{path}: labels must map integers to names, got {labels_spec!r}")
    pairs = []
    for key, name in labels_spec.items():
        try:
            value: object = int(key)
        except ValueError:
            value = key
        pairs.append((name, value))
    labels = _check_labels(pairs, path)
    entries = spec.get("training")
    if not isinstance(entries, list) or not entries:
        raise DatasetError(f"{path}: the training list is empty or missing; expected cases")
    cases, seen = [], {}
    for number, entry in enumerate(entries):
        if not isinstance(entry, dict) or not {"image", "label"} <= set(entry):
            raise DatasetError(f"{path}: training entry {number} is not {{'image', 'label'}}")
        image = _msd_file(root, entry["image"], path, f"training entry {number}'s image")
        label = _msd_file(root, entry["label"], path, f"training entry {number}'s label")
        cid = _case_id(image)
        if cid in seen:
            raise DatasetError(
                f"{path}: case {cid} is listed twice (training entries {seen[cid]} and {number})"
            )
        seen[cid] = number
        cases.append(Case(cid, (image,), label, four_d=True))
    _check_count(spec, "numTraining", len(cases), path, "training entries")
    test, seen_test = [], set()
    entries = spec.get("test") or []
    if not isinstance(entries, list):
        raise DatasetError(f"{path}: the test list must be a list of image paths, got {entries!r}")
    for entry in entries:
        image = _msd_file(root, entry, path, "test image")
        cid = _case_id(image)
        if cid in seen_test:
            raise DatasetError(f"{path}: test case {cid} is listed twice")
        seen_test.add(cid)
        test.append(Case(cid, (image,), None, four_d=True))
    training = tuple(sorted(cases, key=lambda c: c.cid))
    test_cases = tuple(sorted(test, key=lambda c: c.cid))
    _check_test_names(training, test_cases, path)
    return DatasetDescription(
        root, MSD, channels, labels, training, test_cases, _folds(root, training)
    )


def read_dataset(root: str | Path) -> DatasetDescription:
    """Read and check a dataset folder's dataset.json and the files it names.

    Args:
        root: the dataset folder (holding dataset.json).

    Returns:
        The description, every file it names checked to exist.

    Raises:
        DatasetError: no dataset.json, invalid JSON, an unsupported layout or label form, a
            missing file or channel, a case listed twice (in the training list, in the test
            list, or in one part of a fold of splits_final.json), a test case named like a
            training case, a Decathlon file named by an absolute path or one holding `..`, or
            no training case.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: folder not found (expected a dataset folder); {SUPPORTED}")
    path = root / "dataset.json"
    spec = _read_json(path, "the dataset's description")
    if not isinstance(spec, dict):
        raise DatasetError(f"{path}: expected a JSON object; {SUPPORTED}")
    if "channel_names" in spec and "modality" not in spec:
        return _read_nnunet(root, spec, path)
    if "modality" in spec and "channel_names" not in spec:
        return _read_msd(root, spec, path)
    raise DatasetError(f"{path}: needs channel_names (nnU-Net v2) or modality (MSD); {SUPPORTED}")


# ---------------------------------------------------------------------------------------------
# Command line: the dataset's variables for dataset.make
# ---------------------------------------------------------------------------------------------


def make_variables(description: DatasetDescription) -> str:
    """The Make variables dataset.make derives from a dataset: K (classes), MODALITIES (channels),
    ALL_IDC and FG_IDC (class indices, all and foreground, as `0, 1, 2`), METRIC_AXIS (foreground
    class indices, space-separated) and the counts of cases."""
    k = len(description.labels)
    return "\n".join(
        [
            f"# {description.name} ({description.layout}), read from its dataset.json",
            f"K := {k}",
            f"MODALITIES := {len(description.channels)}",
            f"ALL_IDC := {', '.join(map(str, range(k)))}",
            f"FG_IDC := {', '.join(map(str, range(1, k)))}",
            f"METRIC_AXIS := {' '.join(map(str, range(1, k)))}",
            f"N_TRAINING := {len(description.training)}",
            f"N_TEST := {len(description.test)}",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Print a dataset's Make variables; 1 with one `error:` line when it cannot be read."""
    parser = argparse.ArgumentParser(description="The Make variables of an nnU-Net/MSD dataset")
    parser.add_argument("dataset", type=Path, help="the dataset folder (holding dataset.json)")
    args = parser.parse_args(argv)
    try:
        print(make_variables(read_dataset(args.dataset)), end="")
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
