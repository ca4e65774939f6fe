"""Any folder of class sub-folders (ImageNet layout, e.g. Imagenette).

Images are decoded to RGB (`to_rgb`: grey is repeated, alpha is composited over white, CMYK
goes through PIL's plain conversion, 16-bit grey keeps its top 8 bits), resized on the shorter
side and centre-cropped to data.image_size. A file that does not decode raises a DataError naming
it, or with data.on_bad_image=skip is left out with a warning naming it.
A folder whose decoded uint8 tensor fits in data.max_memory_gb is decoded once (by a DataLoader
with data.workers processes) and held in memory like the small datasets; a larger one streams
through a DataLoader every epoch (cnnlab.data.loader.StreamLoader).
"""

from __future__ import annotations

import warnings
from pathlib import Path

from cnnlab.data.registry import register_dataset
from cnnlab.data.base import Pools, Split
from cnnlab.data.torchvision_sets import check_root
from cnnlab.errors import DataError

BAD = -1  # the label __getitem__ gives an undecodable image under on_bad_image=skip


class BadImageWarning(UserWarning):
    """An image that did not decode and was left out (data.on_bad_image=skip)."""


def to_rgb(image):
    """A PIL image as 8-bit RGB, by fixed rules: 1/L/P are expanded; RGBA, LA and palette
    transparency are composited over white; CMYK uses PIL's conversion (no ICC profile); 16-bit
    (I;16*) and 32-bit (I) grey are taken as 16-bit and keep their top 8 bits (v >> 8), where
    PIL's own convert would clip everything above 255 to white."""
    import numpy as np
    from PIL import Image

    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        grey = (np.asarray(image, dtype=np.int64) >> 8).clip(0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode == "F":
        return Image.fromarray(np.asarray(image).clip(0, 255).astype(np.uint8)).convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image if mode == "RGB" else image.convert("RGB")


class DecodedFolder:
    """torchvision ImageFolder yielding uint8 (3, S, S) tensors; picklable for worker processes.

    on_bad: raise (a DataError naming the file) | skip (label BAD, left out by the caller)."""

    def __init__(self, root: Path, size: int, on_bad: str = "raise"):
        self.root, self.size, self.on_bad = Path(root), size, on_bad
        self.skipped = 0  # files left out because they do not decode (on_bad_image=skip)
        import torchvision.datasets as tvd
        from torchvision.transforms import v2

        self.transform = v2.Compose([
            v2.PILToTensor(),
            v2.Resize(size, antialias=True),
            v2.CenterCrop(size),
        ])
        try:  # empty classes are allowed here so that the check below names the folder
            self.folder = tvd.ImageFolder(str(root), loader=self._load, allow_empty=True)
        except (FileNotFoundError, RuntimeError) as exc:
            raise DataError(f"no images in class sub-folders of {root}: {exc}") from exc
        self.check_classes(self.folder.targets)

    def check_classes(self, labels, after: str = "") -> None:
        """Every class folder holds an image (`after`: what left some out), else one line
        naming the first empty one: a class of 0 images would train a label never seen."""
        counts = [0] * len(self.classes)
        for label in labels:
            counts[int(label)] += 1
        if 0 not in counts:
            return
        folder = self.root / self.classes[counts.index(0)]
        if after:
            raise DataError(f"class folder {folder} has no image that decodes ({after}); "
                            "`cnnlab data verify` lists the bad files")
        raise DataError(f"class folder {folder} has no image (.jpg, .png, ... files); add "
                        "images or remove the folder")

    @staticmethod
    def _load(path: str):
        from PIL import Image

        with open(path, "rb") as f:
            image = Image.open(f)
            image.load()  # decode fully while the file is open (a truncated file fails here)
            return to_rgb(image)

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
            if self.on_bad == "skip":
                warnings.warn(f"skipping image {path}: {exc}", BadImageWarning, stacklevel=2)
                import torch

                return torch.zeros(3, self.size, self.size, dtype=torch.uint8), BAD
            raise DataError(f"cannot decode image {path}: {exc} (data.on_bad_image=skip leaves "
                            "such files out; `cnnlab data verify` lists them all)") from exc
        return self.transform(image), label

    def drop_bad(self, workers: int = 4) -> None:
        """Leave out every file that does not decode (a streamed folder cannot drop it later)."""
        from cnnlab.data.verify import check_image

        bad = {str(p.path) for p in _map_checks(check_image, [s for s, _ in self.folder.samples],
                                                 workers) if p is not None}
        for path in sorted(bad):
            warnings.warn(f"skipping image {path}: it does not decode", BadImageWarning, stacklevel=2)
        keep = [(s, t) for s, t in self.folder.samples if s not in bad]
        self.folder.samples = self.folder.imgs = keep
        self.folder.targets = [t for _, t in keep]
        self.skipped = len(bad)
        self.check_classes(self.folder.targets, after=f"data.on_bad_image=skip left out {len(bad)} file(s)")


def _map_checks(fn, paths, workers):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max(1, workers)) as pool:
        return list(pool.map(fn, paths))


def _decode_all(ds: DecodedFolder, size: int, workers: int):
    import torch
    from torch.utils.data import DataLoader

    images = torch.empty(len(ds), 3, size, size, dtype=torch.uint8)
    labels = torch.empty(len(ds), dtype=torch.long)
    # its own generator: worker seeding must not consume the global RNG that initialises models
    loader = DataLoader(ds, batch_size=64, num_workers=workers, shuffle=False,
                        generator=torch.Generator().manual_seed(0))
    i = 0
    for x, y in loader:
        images[i:i + len(x)] = x
        labels[i:i + len(x)] = y
        i += len(x)
    keep = labels != BAD  # on_bad_image=skip: the files that did not decode drop out here
    if bool(keep.all()):
        return images, labels
    ds.skipped = int((~keep).sum())
    ds.check_classes(labels[keep].tolist(),
                     after=f"data.on_bad_image=skip left out {ds.skipped} file(s)")
    return images[keep], labels[keep]


def _split_of(ds: DecodedFolder, size: int, cfg, in_memory: bool) -> Split:
    import torch

    if in_memory:
        images, labels = _decode_all(ds, size, cfg.workers)
        return Split(labels=labels, images=images)
    if ds.on_bad == "skip":
        ds.drop_bad()
    return Split(labels=torch.as_tensor(ds.targets, dtype=torch.long), dataset=ds)


@register_dataset("imagefolder", "any folder of class sub-folders (data.root), e.g. Imagenette",
                  size=64, channels=3, needs_root=True)  # decoded as RGB at data.image_size or 64
def load_folder(cfg) -> Pools:
    root = check_root(cfg.root, "imagefolder")
    size = int(cfg.image_size or 64)
    train_dir = root / "train" if (root / "train").is_dir() else root
    test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
    if train_dir == root:
        test_dir = None
    on_bad = cfg.get("on_bad_image", "raise")
    train = DecodedFolder(train_dir, size, on_bad)
    test = DecodedFolder(test_dir, size, on_bad) if test_dir is not None else None
    if test is not None and test.classes != train.classes:
        raise DataError(f"class folders of {test_dir} differ from those of {train_dir}")
    total = len(train) + (len(test) if test else 0)
    fits = total * 3 * size * size <= cfg.max_memory_gb * 2**30
    mode = str(cfg.in_memory).lower()  # a YAML true arrives as "True"
    in_memory = mode == "true" or (mode == "auto" and fits)
    train_split = _split_of(train, size, cfg, in_memory)
    test_split = _split_of(test, size, cfg, in_memory) if test is not None else None
    return Pools(train=train_split, test=test_split, class_names=train.classes,
                 skipped=train.skipped + (test.skipped if test is not None else 0))
