"""Any folder of class sub-folders (ImageNet layout, e.g. Imagenette).

Images are decoded to RGB, resized on the shorter side and centre-cropped to data.image_size.
A folder whose decoded uint8 tensor fits in data.max_memory_gb is decoded once (by a DataLoader
with data.workers processes) and held in memory like the small datasets; a larger one streams
through a DataLoader every epoch (cnnlab.data.loader.StreamLoader).
"""

from __future__ import annotations

from pathlib import Path

from cnnlab.data import register_dataset
from cnnlab.data.base import Pools, Split
from cnnlab.data.torchvision_sets import check_root
from cnnlab.errors import DataError


class DecodedFolder:
    """torchvision ImageFolder yielding uint8 (3, S, S) tensors; picklable for worker processes."""

    def __init__(self, root: Path, size: int):
        import torchvision.datasets as tvd
        from torchvision.transforms import v2

        self.transform = v2.Compose([
            v2.PILToTensor(),
            v2.Resize(size, antialias=True),
            v2.CenterCrop(size),
        ])
        try:
            self.folder = tvd.ImageFolder(str(root), loader=self._load)
        except (FileNotFoundError, RuntimeError) as exc:
            raise DataError(f"no images in class sub-folders of {root}: {exc}") from exc

    @staticmethod
    def _load(path: str):
        from PIL import Image

        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")

    @property
    def classes(self) -> list[str]:
        return self.folder.classes

    @property
    def targets(self) -> list[int]:
        return self.folder.targets

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, i: int):
        path, label = self.folder.samples[i]
        try:
            image = self._load(path)
        except Exception as exc:
            raise DataError(f"cannot decode image {path}: {exc}") from exc
        return self.transform(image), label


def _decode_all(ds: DecodedFolder, size: int, workers: int):
    import torch
    from torch.utils.data import DataLoader

    images = torch.empty(len(ds), 3, size, size, dtype=torch.uint8)
    # its own generator: worker seeding must not consume the global RNG that initialises models
    loader = DataLoader(ds, batch_size=64, num_workers=workers, shuffle=False,
                        generator=torch.Generator().manual_seed(0))
    i = 0
    for x, _ in loader:
        images[i:i + len(x)] = x
        i += len(x)
    return images


def _split_of(ds: DecodedFolder, size: int, cfg, in_memory: bool) -> Split:
    import torch

    labels = torch.as_tensor(ds.targets, dtype=torch.long)
    if in_memory:
        return Split(labels=labels, images=_decode_all(ds, size, cfg.workers))
    return Split(labels=labels, dataset=ds)


@register_dataset("imagefolder", "any folder of class sub-folders (data.root), e.g. Imagenette")
def load_folder(cfg) -> Pools:
    root = check_root(cfg.root, "imagefolder")
    size = int(cfg.image_size or 64)
    train_dir = root / "train" if (root / "train").is_dir() else root
    test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
    if train_dir == root:
        test_dir = None
    train = DecodedFolder(train_dir, size)
    test = DecodedFolder(test_dir, size) if test_dir is not None else None
    if test is not None and test.classes != train.classes:
        raise DataError(f"class folders of {test_dir} differ from those of {train_dir}")
    total = len(train) + (len(test) if test else 0)
    fits = total * 3 * size * size <= cfg.max_memory_gb * 2**30
    mode = str(cfg.in_memory).lower()  # a YAML true arrives as "True"
    in_memory = mode == "true" or (mode == "auto" and fits)
    return Pools(
        train=_split_of(train, size, cfg, in_memory),
        test=_split_of(test, size, cfg, in_memory) if test is not None else None,
        class_names=train.classes,
    )
