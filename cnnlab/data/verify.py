"""`cnnlab data verify PATH`: decode every image of an image folder and report what would break
training: zero-byte, truncated, corrupt and non-image files, and empty class folders.

A check fully decodes the image (PIL's `load`, not just the header `verify`), since a truncated
JPEG has a valid header and only fails when its last rows are read.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from cnnlab.errors import DataError

SPLITS = ("train", "val", "test")


@dataclass
class Problem:
    kind: str  # zero-byte | truncated | corrupt | not-an-image | ignored | empty-class
    path: Path
    detail: str = ""

    def line(self) -> str:
        return f"{self.kind:<13} {self.path}" + (f"  ({self.detail})" if self.detail else "")


@dataclass
class Report:
    root: Path
    images: int = 0  # files with an image extension that were decoded
    classes: int = 0
    problems: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def image_extensions() -> tuple:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return IMG_EXTENSIONS


def check_image(path: str | Path) -> Optional[Problem]:
    """None when the file decodes completely; otherwise what is wrong with it."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        if path.stat().st_size == 0:
            return Problem("zero-byte", path)
        with Image.open(path) as image:
            image.load()  # the whole image: a truncated file fails only here
    except UnidentifiedImageError:
        return Problem("not-an-image", path, "no image format recognises its contents")
    except OSError as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Problem("truncated" if "truncated" in text else "corrupt", path, text)
    except Exception as exc:  # noqa: BLE001 - decoders raise anything on malformed input
        return Problem("corrupt", path, f"{type(exc).__name__}: {exc}")
    return None


def _class_folders(root: Path) -> list[Path]:
    split_dirs = [root / s for s in SPLITS if (root / s).is_dir()]
    parents = split_dirs or [root]
    return sorted(d for p in parents for d in p.iterdir() if d.is_dir())


def verify_folder(root: str | Path, workers: int = 4) -> Report:
    """Check every file under the class folders of `root` (or of its train/val/test splits)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder")
    report = Report(root)
    exts = image_extensions()
    to_check = []
    folders = _class_folders(root)
    if not folders:
        raise DataError(f"{root} has no class sub-folders")
    for folder in folders:
        report.classes += 1
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        images = [p for p in files if p.suffix.lower() in exts]
        report.problems += [Problem("ignored", p, "not an image file name; training skips it")
                            for p in files if p.suffix.lower() not in exts]
        if not images:
            report.problems.append(Problem("empty-class", folder, "no image files"))
        to_check += images
    with ThreadPoolExecutor(max(1, workers)) as pool:  # PIL decodes outside the GIL
        found = list(pool.map(check_image, to_check))
    report.images = len(to_check)
    report.problems += [p for p in found if p is not None]
    report.problems.sort(key=lambda p: str(p.path))
    return report
