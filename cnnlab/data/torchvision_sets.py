"""Standard datasets read from local files with torchvision's dataset classes.

cnnlab never downloads at run time: when the files are missing the error names them, where
they go (`data.root`) and how to fetch them on a connected machine (`cnnlab data fetch NAME`).
A dataset that an OS package ships (Fashion-MNIST: Debian/Ubuntu's `dataset-fashion-mnist`, see
cnnlab/data/idx.py) is read from the package's folder when data.root does not hold it: the same
splits, labels, class names and uint8 tensors, and the bundle's info["source"] says which.
All of these fit in memory, so they are held as one uint8 tensor.
"""

from __future__ import annotations

from pathlib import Path

import cnnlab.data.idx as idx
from cnnlab.data.registry import register_dataset
from cnnlab.data.base import Pools, Split
from cnnlab.errors import DataError, UsageError

# name: (torchvision class, how its two splits are asked for, description)
SOURCES = {
    "cifar10": ("CIFAR10", "train", "CIFAR-10: 60,000 32x32 colour images, 10 classes"),
    "cifar100": ("CIFAR100", "train", "CIFAR-100: 60,000 32x32 colour images, 100 classes"),
    "mnist": ("MNIST", "train", "MNIST: 70,000 28x28 grey handwritten digits"),
    "fashion_mnist": ("FashionMNIST", "train", "Fashion-MNIST: 70,000 28x28 grey clothing images "
                      "(data.root, or the OS package dataset-fashion-mnist)"),
    "svhn": ("SVHN", "split", "SVHN: 99,289 32x32 house-number digits (train + test)"),
    "stl10": ("STL10", "split", "STL-10: 13,000 labelled 96x96 colour images, 10 classes"),
}


def _tv_class(name: str):
    import torchvision.datasets as tvd

    return getattr(tvd, SOURCES[name][0])


def _open(name: str, root: str, train: bool, download: bool = False):
    cls = _tv_class(name)
    split_kw = SOURCES[name][1]
    kwargs = {"train": train} if split_kw == "train" else {"split": "train" if train else "test"}
    return cls(root=root, download=download, **kwargs)


def expected_files(name: str) -> str:
    """Where torchvision looks for a dataset's files, read from its class (not hard-coded)."""
    cls = _tv_class(name)
    if hasattr(cls, "base_folder") and hasattr(cls, "filename"):
        return f"{cls.base_folder}/ (from {cls.url})"
    if hasattr(cls, "resources"):
        files = ", ".join(Path(f).name for f, _ in cls.resources)
        return f"{cls.__name__}/raw/{{{files}}}"
    if hasattr(cls, "split_list"):
        return ", ".join(f"{v[1]} (from {v[0]})" for v in cls.split_list.values() if v[1] != "extra_32x32.mat")
    return cls.__name__


def check_root(root: str | None, name: str) -> Path:
    if not root:
        raise UsageError(f"data={name} needs data.root=<folder>")
    path = Path(root).expanduser()
    if not path.exists():
        raise DataError(
            f"data.root '{root}' does not exist; create it and put {name} there "
            f"(on a connected machine: cnnlab data fetch {name} data.root={root})")
    if not path.is_dir():
        raise DataError(f"data.root '{root}' is not a folder")
    try:
        next(path.iterdir(), None)
    except PermissionError as exc:
        raise DataError(f"data.root '{root}' is not readable: {exc.strerror}") from exc
    return path


def _to_split(ds) -> Split:
    import numpy as np
    import torch

    data = ds.data
    data = torch.from_numpy(np.asarray(data)) if not isinstance(data, torch.Tensor) else data
    if data.ndim == 3:  # (N, H, W) grey
        data = data.unsqueeze(1)
    elif data.shape[-1] in (1, 3) and data.shape[1] not in (1, 3):  # (N, H, W, C)
        data = data.permute(0, 3, 1, 2)
    targets = getattr(ds, "targets", None)
    if targets is None:
        targets = ds.labels
    labels = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    return Split(labels=labels, images=data.contiguous().to(torch.uint8))


def _not_found(name: str, root: str) -> str:
    return (f"{name} not found or incomplete under data.root={root}: expected {expected_files(name)}. "
            f"On a connected machine run `cnnlab data fetch {name} data.root=<folder>` and copy "
            f"that folder here")


class _NotThere(DataError):
    """data.root does not hold the dataset (as opposed to holding a file that cannot be read):
    `original` is the error to report when there is nothing else to try, `where` says it in a
    few words for a message that also names the OS package."""

    def __init__(self, original: Exception, where: str):
        super().__init__(str(original))
        self.original = original
        self.where = where


def _open_root(name: str, cfg):
    """torchvision's (train, test) datasets under cfg.root, and the root."""
    try:
        root = str(check_root(cfg.root, name))
    except (DataError, UsageError) as exc:
        if not cfg.root:
            where = "data.root is not set"
        elif not Path(cfg.root).expanduser().exists():
            where = f"data.root={cfg.root} does not exist"
        else:
            where = f"data.root={cfg.root} is not a readable folder"
        raise _NotThere(exc, where) from exc
    try:
        return _open(name, root, train=True), _open(name, root, train=False), root
    except RuntimeError as exc:  # torchvision: "Dataset not found"
        raise _NotThere(DataError(_not_found(name, root)),
                        f"data.root={root} has no {expected_files(name)}") from exc
    except Exception as exc:  # a corrupt or unreadable file
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{name} under data.root={root} cannot be read: {first}") from exc


def _nowhere(name: str, exc: _NotThere) -> DataError:
    """Neither data.root nor the OS package's folder holds `name`: one line naming both ways."""
    return DataError(
        f"{name} not found: {exc.where}, and {idx.package_folder(name)}/ does not exist. "
        f"Install it with {idx.install_hint(name)}, or on a connected machine run "
        f"`cnnlab data fetch {name} data.root=<folder>` and copy that folder here")


def _system_pools(name: str, folder: Path) -> Pools:
    """The dataset read from an OS package's gzipped IDX files, as torchvision would give it."""
    import torch

    train_x, train_y, test_x, test_y = idx.read_splits(folder)
    size, _ = SHAPES[name]
    classes = list(_tv_class(name).classes)
    for x, y in ((train_x, train_y), (test_x, test_y)):
        if x.shape[1:] != (size, size):
            raise DataError(f"{folder}: {name} images are {size}x{size}, "
                            f"these are {x.shape[1]}x{x.shape[2]}")
        if len(y) and (y.min() < 0 or y.max() >= len(classes)):
            raise DataError(f"{folder}: labels must lie in 0..{len(classes) - 1}, "
                            f"found {y.min()}..{y.max()}")

    def split(x, y) -> Split:
        images = torch.from_numpy(x).unsqueeze(1).contiguous()
        return Split(labels=torch.from_numpy(y), images=images)

    return Pools(train=split(train_x, train_y), test=split(test_x, test_y), class_names=classes,
                 source=f"OS package {idx.package_name(name)} ({folder})")


def missing(name: str, cfg) -> str | None:
    """Why `name`'s files cannot be read under cfg.root nor, where an OS package ships it, in the
    package's folder (the message a run would fail with), or None. The package's files are
    checked by their headers and lengths, without decompressing them."""
    try:
        _open_root(name, cfg)
    except _NotThere as exc:
        folder = idx.package_folder(name)
        if folder is None:
            return str(exc.original)
        if not folder.is_dir():
            return str(_nowhere(name, exc))
        try:
            idx.check_splits(folder)
        except DataError as bad:
            return str(bad)
    except (DataError, UsageError) as exc:
        return str(exc)
    return None


def load(name: str, cfg) -> Pools:
    """From data.root in torchvision's layout, else from the OS package's folder (if any)."""
    try:
        train_ds, test_ds, root = _open_root(name, cfg)
    except _NotThere as exc:
        folder = idx.package_folder(name)
        if folder is None:
            raise exc.original from exc.__cause__
        if not folder.is_dir():
            raise _nowhere(name, exc) from exc
        return _system_pools(name, folder)
    classes = list(getattr(train_ds, "classes", None) or [str(i) for i in range(10)])
    return Pools(train=_to_split(train_ds), test=_to_split(test_ds), class_names=classes,
                 source=f"torchvision files under data.root={root}")


def fetch(name: str, root: str) -> Path:
    """Download a dataset with torchvision's downloader (the one command that uses the network)."""
    if name not in SOURCES:
        raise UsageError(f"cannot fetch '{name}'; fetchable: {', '.join(SOURCES)}")
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    try:
        _open(name, str(path), train=True, download=True)
        _open(name, str(path), train=False, download=True)
    except Exception as exc:  # urllib errors, checksum failures
        raise DataError(f"could not fetch {name} into {path}: {exc}") from exc
    return path


# name: (image side, channels), for the config checks before any file is read
SHAPES = {"cifar10": (32, 3), "cifar100": (32, 3), "mnist": (28, 1), "fashion_mnist": (28, 1),
          "svhn": (32, 3), "stl10": (96, 3)}


def _register(name: str) -> None:
    size, channels = SHAPES[name]
    register_dataset(name, SOURCES[name][2], size=size, channels=channels,
                     needs_root=True)(lambda cfg: load(name, cfg))


for _name in SOURCES:
    _register(_name)
