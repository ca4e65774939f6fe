"""The IDX files of MNIST and Fashion-MNIST, read directly (gzipped or not), and the system folders
where an OS package puts them: Debian and Ubuntu's `dataset-fashion-mnist` installs
/usr/share/datasets/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz.

IDX (LeCun et al., the MNIST page): two zero bytes, a type code (0x08: unsigned byte), the number
of dimensions, one big-endian uint32 per dimension, then the values in C order.

$CNNLAB_SYSTEM_DATASETS replaces /usr/share/datasets (e.g. a package unpacked without root with
`dpkg -x dataset-fashion-mnist_*.deb DIR`: then DIR/usr/share/datasets); the tests point it at
an empty folder so they see the package only where they ask for it.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path
from typing import Optional

from cnnlab.errors import DataError

SYSTEM_ROOT = "/usr/share/datasets"
SYSTEM_ROOT_ENV = "CNNLAB_SYSTEM_DATASETS"
# dataset -> (its folder under the system root, the OS package that installs it)
SYSTEM_PACKAGES = {
    "fashion_mnist": ("fashion-mnist", "dataset-fashion-mnist"),
}
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_SIZES = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _header(path: Path, head: bytes) -> tuple[int, tuple[int, ...], int]:
    """(type code, dims, header length) from the first bytes of an IDX file."""
    if len(head) < 4 or head[0] or head[1] or head[2] not in _DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    ndim = head[3]
    start = 4 + 4 * ndim
    if len(head) < start:
        raise DataError(f"{path} is truncated: it ends inside its header")
    return head[2], struct.unpack(f">{ndim}I", head[4:start]), start


def _payload(code: int, dims: tuple[int, ...]) -> tuple[int, int]:
    """(values, bytes) after the header of an IDX file with this type and dims."""
    count = 1
    for d in dims:
        count *= d
    return count, count * _SIZES[code]


def _expected(path: Path, code: int, dims: tuple[int, ...], held: int) -> None:
    count, want = _payload(code, dims)
    if held != want:
        what = "truncated" if held < want else "longer than its header says"
        raise DataError(f"{path} is {what}: its header promises {count} values of {_SIZES[code]} "
                        f"byte(s) ({want} bytes after the header), the file holds {held}")


def read_idx(path: str | os.PathLike):
    """An IDX file as a numpy array (a .gz file is decompressed on the fly). A file that is not
    IDX, is truncated or does not decompress fails with one line (DataError)."""
    import numpy as np

    path = Path(path)
    try:
        with _open(path) as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as exc:  # missing, unreadable, bad or cut-off gzip
        raise DataError(f"cannot read {path}: {exc}") from exc
    code, dims, start = _header(path, raw[:4 + 4 * 255])
    _expected(path, code, dims, len(raw) - start)
    return np.frombuffer(raw, dtype=np.dtype(_DTYPES[code]), offset=start).reshape(dims).copy()


def check_idx(path: str | os.PathLike) -> tuple[int, ...]:
    """The dims of an IDX file, checked without decompressing it all: its header, and its length
    against the header (a gzip file's own trailer records its uncompressed length; when that
    disagrees, as for a multi-member gzip, the file is read in full to be sure)."""
    path = Path(path)
    try:
        with _open(path) as f:
            head = f.read(4 + 4 * 255)
        code, dims, start = _header(path, head)
        if path.suffix == ".gz":
            with open(path, "rb") as f:
                f.seek(-4, os.SEEK_END)
                total = struct.unpack("<I", f.read(4))[0]
            if (start + _payload(code, dims)[1]) % 2**32 != total:
                return tuple(read_idx(path).shape)  # the full read says what is wrong
        else:
            _expected(path, code, dims, path.stat().st_size - start)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    return dims


def find_file(folder: Path, name: str) -> Optional[Path]:
    """`name` or `name.gz` in folder."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def system_root() -> Path:
    """Where OS packages put datasets: $CNNLAB_SYSTEM_DATASETS, else /usr/share/datasets."""
    return Path(os.environ.get(SYSTEM_ROOT_ENV) or SYSTEM_ROOT).expanduser()


def package_folder(dataset: str) -> Optional[Path]:
    """The folder `dataset`'s OS package installs (present or not), None when it has none."""
    entry = SYSTEM_PACKAGES.get(dataset)
    return None if entry is None else system_root() / entry[0]


def system_folder(dataset: str) -> Optional[Path]:
    """The OS package's folder for `dataset` when all four files are there, else None."""
    folder = package_folder(dataset)
    if folder is None:
        return None
    return folder if all(find_file(folder, f) for f in FILES) else None


def install_hint(dataset: str) -> str:
    """How to get `dataset` from the OS packages, for a missing-data message ('' if none)."""
    entry = SYSTEM_PACKAGES.get(dataset)
    if entry is None:
        return ""
    installed = f"{SYSTEM_ROOT}/{entry[0]}"
    folder = package_folder(dataset)
    where = ("where cnnlab finds it" if str(folder) == installed
             else f"cnnlab looks in {folder}/ as ${SYSTEM_ROOT_ENV} says")
    return f"`apt-get install {entry[1]}` (puts it in {installed}/, {where})"


def package_name(dataset: str) -> Optional[str]:
    entry = SYSTEM_PACKAGES.get(dataset)
    return None if entry is None else entry[1]


def _split_files(folder: Path) -> list[Path]:
    """The four files in FILES order (each plain or .gz); DataError naming the first missing."""
    paths = []
    for name in FILES:
        path = find_file(folder, name)
        if path is None:
            raise DataError(f"{folder} has no {name}(.gz)")
        paths.append(path)
    return paths


def _check_pairs(folder: Path, shapes: list) -> None:
    """Images (N, H, W) and labels (N,) of each split fit together."""
    for (x, y), split in zip((shapes[:2], shapes[2:]), ("train", "t10k")):
        if len(x) != 3 or len(y) != 1 or x[0] != y[0]:
            raise DataError(f"{folder}: the {split} images {tuple(x)} and labels {tuple(y)} "
                            f"do not match")


def check_splits(folder: Path) -> None:
    """The four files are there, and their headers and lengths fit together (cheap: no full
    decompression of intact files). DataError (one line) otherwise."""
    _check_pairs(folder, [check_idx(path) for path in _split_files(folder)])


def read_splits(folder: Path):
    """(train images, train labels, test images, test labels) as uint8 / int64 numpy arrays;
    images are (N, H, W)."""
    import numpy as np

    train_x, train_y, test_x, test_y = arrays = [read_idx(path) for path in _split_files(folder)]
    _check_pairs(folder, [a.shape for a in arrays])
    for x, y, split in ((train_x, train_y, "train"), (test_x, test_y, "t10k")):
        if x.dtype != np.uint8 or y.dtype != np.uint8:
            raise DataError(f"{folder}: the {split} images and labels must be unsigned bytes "
                            f"(IDX type 0x08), got {x.dtype} and {y.dtype}")
    return train_x, train_y.astype("int64"), test_x, test_y.astype("int64")
