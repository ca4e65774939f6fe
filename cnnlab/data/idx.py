"""The IDX files of MNIST and Fashion-MNIST, read directly (gzipped or not), and the system folders
where an OS package puts them: Debian and Ubuntu's `dataset-fashion-mnist` installs
/usr/share/datasets/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz.

IDX (LeCun et al., the MNIST page): two zero bytes, a type code (0x08: unsigned byte), the number
of dimensions, one big-endian int32 per dimension, then the values in C order.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import Optional

from cnnlab.errors import DataError

# dataset -> (folder an OS package installs, the package that installs it)
SYSTEM_FOLDERS = {
    "fashion_mnist": ("/usr/share/datasets/fashion-mnist", "dataset-fashion-mnist"),
}
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike):
    """An IDX file as a numpy array (a .gz file is decompressed on the fly)."""
    import numpy as np

    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    if len(raw) < 4 or raw[0] or raw[1] or raw[2] not in _DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    dtype = np.dtype(_DTYPES[raw[2]])
    count = int(np.prod(dims)) if dims else 1
    start = 4 + 4 * ndim
    if len(raw) - start != count * dtype.itemsize:
        raise DataError(f"{path} is truncated: its header promises {count} values of "
                        f"{dtype.itemsize} byte(s), the file holds {len(raw) - start} bytes")
    return np.frombuffer(raw, dtype=dtype, offset=start).reshape(dims).copy()


def find_file(folder: Path, name: str) -> Optional[Path]:
    """`name` or `name.gz` in folder."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def system_folder(dataset: str) -> Optional[Path]:
    """The OS package's folder for `dataset` when all four files are there, else None."""
    entry = SYSTEM_FOLDERS.get(dataset)
    if entry is None:
        return None
    folder = Path(entry[0])
    return folder if all(find_file(folder, f) for f in FILES) else None


def install_hint(dataset: str) -> str:
    """How to get `dataset` from the OS packages, for a missing-data message ('' if none)."""
    entry = SYSTEM_FOLDERS.get(dataset)
    if entry is None:
        return ""
    return f"`apt-get install {entry[1]}` (puts it in {entry[0]}/, where cnnlab finds it)"


def read_splits(folder: Path):
    """(train images, train labels, test images, test labels) as uint8 / int64 numpy arrays;
    images are (N, H, W)."""
    arrays = []
    for name in FILES:
        path = find_file(folder, name)
        if path is None:
            raise DataError(f"{folder} has no {name}(.gz)")
        arrays.append(read_idx(path))
    train_x, train_y, test_x, test_y = arrays
    for x, y, split in ((train_x, train_y, "train"), (test_x, test_y, "t10k")):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{folder}: the {split} images {x.shape} and labels {y.shape} do not match")
    return train_x, train_y.astype("int64"), test_x, test_y.astype("int64")
