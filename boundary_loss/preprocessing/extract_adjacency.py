"""Extract the class adjacency graph of a set of label volumes (Ganaye et al., MICCAI 2018).

Usage: python preprocess/extract_adjacency.py SOURCE DEST N_LABELS [--pattern GLOB] [--n-size 1]
       [--dims 3]

For every voxel of every label file under SOURCE (searched recursively for `--pattern`), and every
other voxel of its (2n+1)^d window inside the array, counts[class of the voxel, class of the
neighbour] += 1, summed over the files (`maps.adjacency.count_adjacency`). The class pairs with a
count of 0 are the forbidden adjacencies of the NonAdjacencyLoss (`losses.idc_losses`), which
reads the graph.

Label files: NIfTI volumes (`*.nii`, `*.nii.gz`, read with nibabel), 2D ground-truth pngs of the
sliced data (class index per pixel) and `*.npy` arrays (2D or 3D). d is the dimensionality of the
array (2 for pngs, 3 for volumes); `--dims 2` counts 2D neighbourhoods on volumes, slice by slice
along the last axis (the axis the pipeline slices along).

Writes DEST/graph.csv (K x K integer counts, `;` separated, no header) and DEST/graph.png (a heat
map of log(1 + counts), forbidden pairs marked), each atomically. Bad input (no matching file,
labels outside 0..N_LABELS-1, unreadable file) prints one `error: ...` line naming the file and
exits with status 1, having written nothing.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from boundary_loss.io.atomic import atomic_write, write_text_atomic
from boundary_loss.maps.adjacency import (
    check_labels,
    count_adjacency,
    forbidden_pairs,
    graph_csv,
    read_graph,
)

__all__ = [
    "AdjacencyError",
    "count_adjacency",
    "extract",
    "forbidden_pairs",
    "load_labels",
    "main",
    "read_graph",
    "volume_adjacency",
]

DEFAULT_PATTERN = "*.nii*"


class AdjacencyError(ValueError):
    """Bad input to the extraction, with the file or argument named."""


def load_labels(path: Path) -> np.ndarray:
    """Read one label file as an integer-valued array.

    Args:
        path: a `.nii` / `.nii.gz` volume, a `.png` slice (one channel) or a `.npy` array.

    Returns:
        The labels, 2D or 3D (trailing singleton axes of NIfTI volumes dropped).

    Raises:
        AdjacencyError: unsupported extension, unreadable file, not 2D / 3D, or a multi-channel
            png.
    """
    name = path.name.lower()
    try:
        if name.endswith((".nii", ".nii.gz")):
            labels = np.asanyarray(nib.load(path).dataobj)
            while labels.ndim > 3 and labels.shape[-1] == 1:
                labels = labels[..., 0]
        elif name.endswith(".png"):
            with Image.open(path) as image:
                if image.mode not in ("1", "L", "I", "I;16", "P"):
                    raise AdjacencyError(
                        f"{path}: a {image.mode} png; expected one channel of class indices"
                    )
                labels = np.asarray(image)
        elif name.endswith(".npy"):
            labels = np.load(path, allow_pickle=False)
        else:
            raise AdjacencyError(f"{path}: unsupported file type; expected .nii(.gz), .png, .npy")
    except AdjacencyError:
        raise
    except Exception as error:  # nibabel, PIL, gzip and numpy raise many kinds on corrupt files
        raise AdjacencyError(f"{path}: cannot read the labels: {error}") from None
    if labels.ndim not in (2, 3):
        raise AdjacencyError(f"{path}: labels must be 2D or 3D, got shape {labels.shape}")
    return labels


def volume_adjacency(labels: np.ndarray, K: int, n_size: int = 1, dims: int = 3) -> np.ndarray:
    """Counts of one label array: `count_adjacency` in min(dims, labels.ndim) dimensions.

    Args:
        labels: `H W` or `X Y Z` class indices in 0..K-1.
        K: number of classes.
        n_size: half width of the window.
        dims: 3 for 3D neighbourhoods on volumes; 2 for 2D ones, slice by slice (last axis).

    Returns:
        `K K` int64 counts.

    Raises:
        ValueError: labels not integer class indices in 0..K-1.
    """
    if labels.ndim <= dims:
        return count_adjacency(labels, K, n_size)
    labels = check_labels(labels, K)
    slices = [count_adjacency(labels[..., z], K, n_size) for z in range(labels.shape[-1])]
    return np.sum(slices, axis=0, dtype=np.int64)


def find_label_files(source: Path, pattern: str) -> list[Path]:
    """The files under `source` (recursively) matching `pattern`, sorted.

    Raises:
        AdjacencyError: source not a folder, or no matching file.
    """
    if not source.is_dir():
        raise AdjacencyError(f"SOURCE {source} is not a folder")
    files = sorted(p for p in source.rglob(pattern) if p.is_file())
    if not files:
        raise AdjacencyError(f"no file matching {pattern!r} under SOURCE {source}")
    return files


def graph_png(counts: np.ndarray) -> bytes:
    """Heat map of log(1 + counts), class indices on the axes, forbidden pairs (0) crossed."""
    K = len(counts)
    size = min(4.0 + 0.3 * K, 16.0)
    fig = Figure(figsize=(size + 1.0, size))
    ax = fig.add_subplot()
    shown = ax.imshow(np.log1p(counts), cmap="viridis", interpolation="nearest")
    fig.colorbar(shown, ax=ax, label="log(1 + count)")
    ticks = np.arange(K) if K <= 40 else np.arange(0, K, max(1, K // 20))
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xlabel("class of the neighbour (j)")
    ax.set_ylabel("class of the voxel (i)")
    rows, cols = np.nonzero(counts == 0)
    ax.scatter(cols, rows, marker="x", color="red", s=max(8.0, 400.0 / K))
    ax.set_title(f"adjacency graph of {K} classes\n{rows.size} forbidden pairs (x: count 0)")
    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buffer)
    return buffer.getvalue()


def extract(
    source: str | Path,
    dest: str | Path,
    K: int,
    pattern: str = DEFAULT_PATTERN,
    n_size: int = 1,
    dims: int = 3,
) -> np.ndarray:
    """Count the adjacencies of every label file under `source`; write the graph to `dest`.

    Args:
        source: folder searched recursively for `pattern`.
        dest: folder receiving `graph.csv` and `graph.png` (created when missing).
        K: number of classes; labels must lie in 0..K-1.
        pattern: glob of the label files (`*.nii*`, `*.png`, `*.npy`, ...).
        n_size: half width of the neighbourhood window.
        dims: 3 for 3D neighbourhoods on volumes, 2 for 2D ones (slice by slice).

    Returns:
        `K K` int64 counts summed over the files.

    Raises:
        AdjacencyError: bad arguments, no matching file, an unreadable file, or labels outside
            0..K-1 (naming the file and the values). Nothing is written then.
    """
    source, dest = Path(source), Path(dest)
    for value, name in ((K, "N_LABELS"), (n_size, "--n-size")):
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
            raise AdjacencyError(f"{name} must be a positive integer, got {value!r}")
    if dims not in (2, 3):
        raise AdjacencyError(f"--dims must be 2 or 3, got {dims!r}")
    if dest.exists() and not dest.is_dir():
        raise AdjacencyError(f"DEST {dest} exists and is not a folder")

    counts = np.zeros((K, K), dtype=np.int64)
    for path in find_label_files(source, pattern):
        labels = load_labels(path)
        try:
            counts += volume_adjacency(labels, K, n_size, dims)
        except ValueError as error:
            hint = ""
            if K == 2 and set(np.unique(labels).tolist()) <= {0, 255}:
                hint = " The mask looks saved as 0/255: divide it by 255 to get class indices."
            raise AdjacencyError(f"{path}: {error}.{hint}") from None

    image = graph_png(counts)  # rendered before anything is written
    atomic_write(dest / "graph.png", lambda handle: handle.write(image))
    write_text_atomic(dest / "graph.csv", graph_csv(counts))  # last: its presence means done
    return counts


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and extract; `error: <message>` and status 1 on bad input."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", metavar="SOURCE", help="folder of label files (recursive)")
    parser.add_argument("dest", metavar="DEST", help="folder for graph.csv and graph.png")
    parser.add_argument("n_labels", metavar="N_LABELS", type=int, help="number of classes K")
    parser.add_argument(
        "--pattern", default=DEFAULT_PATTERN, help=f"glob of the label files ({DEFAULT_PATTERN})"
    )
    parser.add_argument("--n-size", type=int, default=1, help="half width of the window (1)")
    parser.add_argument(
        "--dims",
        type=int,
        default=3,
        choices=(2, 3),
        help="3: 3D neighbourhoods on volumes; 2: 2D ones, slice by slice (default 3)",
    )
    args = parser.parse_args(argv)
    try:
        counts = extract(
            args.source, args.dest, args.n_labels, args.pattern, args.n_size, args.dims
        )
    except (AdjacencyError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    n_forbidden = int((counts == 0).sum())
    print(
        f"{args.n_labels} classes, {n_forbidden} forbidden pairs of {counts.size}: "
        f"{Path(args.dest) / 'graph.csv'}, {Path(args.dest) / 'graph.png'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
