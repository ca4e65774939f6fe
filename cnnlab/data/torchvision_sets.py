"""Standard datasets read from local files with torchvision's dataset classes.

cnnlab never downloads at run time: when the files are missing the error names them, where
they go (`data.root`) and how to fetch them on a connected machine (`cnnlab data fetch NAME`).
All of these fit in memory, so they are held as one uint8 tensor.
"""

from __future__ import annotations

from pathlib import Path

from cnnlab.data.registry import register_dataset
from cnnlab.data.base import Pools, Split
from cnnlab.errors import DataError, UsageError

# name: (torchvision class, how its two splits are asked for, description)
SOURCES = {
    "cifar10": ("CIFAR10", "train", "CIFAR-10: 60,000 32x32 colour images, 10 classes"),
    "cifar100": ("CIFAR100", "train", "CIFAR-100: 60,000 32x32 colour images, 100 classes"),
    "mnist": ("MNIST", "train", "MNIST: 70,000 28x28 grey handwritten digits"),
    "fashion_mnist": ("FashionMNIST", "train", "Fashion-MNIST: 70,000 28x28 grey clothing images"),
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


def missing(name: str, cfg) -> str | None:
    """Why `name`'s files cannot be read under cfg.root (the message a run would fail with), or None."""
    try:
        root = str(check_root(cfg.root, name))
        _open(name, root, train=True)
        _open(name, root, train=False)
    except (DataError, UsageError) as exc:
        return str(exc)
    except RuntimeError:
        return _not_found(name, root)
    except Exception as exc:  # a corrupt or unreadable file
        return f"{name} under data.root={cfg.root} cannot be read: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    return None


def load(name: str, cfg) -> Pools:
    root = str(check_root(cfg.root, name))
    try:
        train_ds = _open(name, root, train=True)
        test_ds = _open(name, root, train=False)
    except RuntimeError as exc:
        raise DataError(_not_found(name, root)) from exc
    classes = list(getattr(train_ds, "classes", None) or [str(i) for i in range(10)])
    return Pools(train=_to_split(train_ds), test=_to_split(test_ds), class_names=classes)


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
