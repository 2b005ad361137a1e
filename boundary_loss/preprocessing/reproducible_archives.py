"""Byte-reproducible NIfTI, gzip and zip writing for the stand-in data generator.

The same content always gives the same bytes: NIfTI files are serialised from a fixed header;
`.nii.gz` files are gzip-compressed with mtime 0, no file name and a fixed level; zip members are
written in the order given with fixed timestamps (1980-01-01), permissions and compression level,
each folder's entry before its first member. The deflate streams are zlib's: a Python built on
zlib-ng compresses differently (the contents are the same, the bytes are not). Each zip is written
to `NAME.tmp` and renamed only when complete.
"""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path, PurePosixPath

import nibabel as nib
import numpy as np

ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip can hold
ZIP_LEVEL = 1  # deflate level of the zip members (noisy images: level 6 is 5x slower, ~3% smaller)
GZIP_LEVEL = 1  # deflate level of the .nii.gz files (nibabel's default too)
# gzip member header: magic, deflate, no flags, mtime 0, "fastest" (level 1), OS unknown.
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\xff"
FILE_MODE = 0o100644  # -rw-r--r--
DIR_MODE = 0o040755  # drwxr-xr-x
UNIX = 3  # zip "version made by" host system

Member = tuple[str, bytes]  # (name inside the zip, content)
# A zip to write: its name, the function giving one patient's members, and the patient keys.
ZipPlan = tuple[str, Callable[[int], list[Member]], Sequence[int]]


def nifti_bytes(data: np.ndarray, zooms: Sequence[float], time_unit: str = "sec") -> bytes:
    """Serialise `data` as a NIfTI-1 file with a fixed header.

    Args:
        data: X Y Z [T] voxel array; its dtype is the stored dtype (no scaling).
        zooms: voxel size per axis (mm, and the time step for a 4D array).
        time_unit: unit of the fourth zoom.

    Returns:
        The `.nii` bytes: the affine is diagonal (RAS, centred on the volume) and written as both
        qform and sform with code 1 (scanner), so the spacing reads back from either.
    """
    affine = np.diag([*map(float, zooms[:3]), 1.0])
    affine[:3, 3] = [-(n - 1) / 2 * z for n, z in zip(data.shape[:3], zooms[:3], strict=True)]
    header = nib.Nifti1Header()
    header.set_data_dtype(data.dtype)
    image = nib.Nifti1Image(data, affine, header)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_zooms(tuple(float(z) for z in zooms))
    image.header.set_xyzt_units("mm", time_unit)
    return image.to_bytes()


def gzip_bytes(raw: bytes) -> bytes:
    """gzip `raw` reproducibly: mtime 0, no file name, a fixed level, one deflate stream.

    The member is assembled here rather than by `gzip.GzipFile` so that its bytes do not depend on
    how a Python version buffers its writes; it is what `GzipFile(mtime=0, filename="")` writes.

    Args:
        raw: the bytes to compress.

    Returns:
        One gzip member.
    """
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS, zlib.DEF_MEM_LEVEL)
    body = compressor.compress(raw) + compressor.flush()
    return GZIP_HEADER + body + struct.pack("<II", zlib.crc32(raw), len(raw) & 0xFFFFFFFF)


def _zip_info(name: str) -> zipfile.ZipInfo:
    """A member header with the fixed date, host system and permissions."""
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
    info.create_system = UNIX
    if name.endswith("/"):
        info.external_attr = (DIR_MODE << 16) | 0x10  # 0x10: MS-DOS directory flag
        info.compress_type = zipfile.ZIP_STORED
    else:
        info.external_attr = FILE_MODE << 16
        info.compress_type = zipfile.ZIP_DEFLATED
    return info


def write_zip(path: str | Path, members: Iterable[Member]) -> Path:
    """Write `members` to the zip `path`, via `path`.tmp renamed only once complete.

    A directory entry is written before the first member inside each folder, as zip tools do.
    Members are deflated, except `.gz` files, which are stored as they are (they would not
    shrink; Info-ZIP's zip does the same). `members` may be a generator: each member is written
    as it comes.

    Args:
        path: the zip to write; replaced when it exists.
        members: (name inside the zip, content) pairs, in the order they are written.

    Returns:
        The zip's path.

    Raises:
        OSError: the zip cannot be written (its `.tmp` is removed first).
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with zipfile.ZipFile(tmp, "w") as archive:
            folders: set[str] = set()
            for name, data in members:
                for parent in reversed(PurePosixPath(name).parents[:-1]):
                    folder = f"{parent}/"
                    if folder not in folders:
                        folders.add(folder)
                        archive.writestr(_zip_info(folder), b"")
                info = _zip_info(name)
                if name.endswith(".gz"):
                    info.compress_type = zipfile.ZIP_STORED
                archive.writestr(info, data, compresslevel=ZIP_LEVEL)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def members_in_order(
    pool: ThreadPoolExecutor,
    function: Callable[[int], list[Member]],
    keys: Iterable[int],
    window: int,
) -> Iterator[Member]:
    """The members of every patient, in key order, computed `window` patients at a time.

    Each patient has its own random generator, so running them on threads changes no byte; numpy
    and zlib release the GIL, so the threads overlap. The window bounds the memory held.

    Args:
        pool: the threads computing the members.
        function: patient key -> its members.
        keys: the patients' keys, in the order their members are wanted.
        window: patients computed ahead of the one being yielded.

    Returns:
        The members, patient after patient.
    """
    pending: deque[Future[list[Member]]] = deque()
    for key in keys:
        pending.append(pool.submit(function, key))
        if len(pending) >= window:
            yield from pending.popleft().result()
    while pending:
        yield from pending.popleft().result()
