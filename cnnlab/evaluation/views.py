"""Test-time views of a float batch (N, C, H, W), made with batched tensor ops on its device.

Modes
- `center`: one view, the centre `crop` x `crop` square (the whole image when crop equals its
  size, so an image of the crop size is returned unchanged).
- `fivecrop`: the four corner crops and the centre crop, in torchvision.transforms.v2.FiveCrop's
  order and with its boxes: ten-crop without the mirror, for a model that never trained on
  mirrored images (no flip in its aug preset), which mirrored views may cost accuracy.
- `tencrop`: the four corner crops and the centre crop, then the same five boxes on the
  horizontally mirrored image, in torchvision.transforms.v2.TenCrop's order and with its exact
  boxes (the centre box's offset is `int(round((H - crop) / 2))`, Python's rounding included).
  Krizhevsky, Sutskever & Hinton 2012, Sec. 4.1: "averaging the predictions made by the
  network's softmax layer on the ten patches".
- `multiscale`: the batch resized to each scale S (shorter side to S, antialiased bilinear), then
  ten crops at each scale: 10 * len(scales) views. A scale smaller than the crop is resized up
  to the crop size instead of being skipped, so every scale still gives ten views (its corner
  crops then coincide with its centre crop). Simonyan & Zisserman 2015, Sec. 3.2 evaluate over
  several test scales in the same spirit (they use dense evaluation; crops here).

Crop rule (`geometry`): what the centre view is, per dataset image size (shorter side `side`)
- the crop is the model's training input size: the whole stored image, or aug.crop_size when
  the run trained on random crops (28 of 32 as cuda-convnet's CIFAR recipe, AlexNet's 224 of
  256). `cnnlab eval` reads it from the run's config; `--crop N` overrides it.
- small images (side <= 64, the CIFAR / MNIST / digits range): the crop is taken straight from
  the stored image. With a crop equal to the image, the five boxes coincide and ten-crop
  reduces to the image and its mirror image.
- large images (side > 64, ImageNet-style folders): resize-then-crop as in the ImageNet
  protocol: the shorter side goes to round(crop / 0.875) (224 -> 256), then the crop is taken.

`make_views` returns (N, V, C, crop, crop); `iter_view_chunks` yields at most `chunk` views at a
time (whole images' views together), so a model sees all views of a batch in few forward passes
with memory bounded by `chunk`.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional, Sequence

import torch
import torch.nn.functional as F

from cnnlab.errors import UsageError

MODES = ("center", "fivecrop", "tencrop", "multiscale")
MIRRORING = ("tencrop", "multiscale")  # the modes with mirrored views
VIEW_COUNTS = {"center": 1, "fivecrop": 5, "tencrop": 10}  # multiscale: 10 per scale
SMALL_MAX = 64  # images up to this side are "small": crop from the stored image
CROP_FRACTION = 0.875  # large images: shorter side to crop / 0.875 (224 of 256)


def geometry(image_size: Sequence[int], crop: Optional[int] = None) -> tuple[int, Optional[int]]:
    """(crop, resize) for a dataset's (H, W): the crop side, and the shorter side to resize to
    before cropping (None: crop from the stored image). See the module docstring for the rule."""
    side = int(min(image_size))
    if side <= SMALL_MAX:
        if crop is None:
            crop = side
        if not 1 <= int(crop) <= side:
            raise UsageError(f"--crop must be between 1 and the image size {side} for "
                             f"{image_size[0]}x{image_size[1]} images, not {crop}")
        return int(crop), None
    crop = side if crop is None else int(crop)
    if crop < 1:
        raise UsageError(f"--crop must be at least 1, not {crop}")
    return crop, max(crop, round(crop / CROP_FRACTION))


def resize_shorter(x: torch.Tensor, size: int) -> torch.Tensor:
    """The batch with its shorter side resized to `size` (aspect kept), antialiased bilinear."""
    h, w = x.shape[-2:]
    if min(h, w) == size:
        return x
    if h <= w:
        out = (size, max(size, round(w * size / h)))
    else:
        out = (max(size, round(h * size / w)), size)
    dtype = x.dtype
    # antialiased bilinear has float32 kernels everywhere; half batches go through float32
    y = F.interpolate(x.float(), size=out, mode="bilinear", antialias=True, align_corners=False)
    return y.to(dtype)


def five_boxes(h: int, w: int, crop: int) -> list[tuple[int, int]]:
    """(top, left) of torchvision's five_crop: tl, tr, bl, br, centre."""
    if crop > h or crop > w:
        raise UsageError(f"crop {crop} is bigger than the {h}x{w} image")
    top_c, left_c = int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))
    return [(0, 0), (0, w - crop), (h - crop, 0), (h - crop, w - crop), (top_c, left_c)]


def center(x: torch.Tensor, crop: int) -> torch.Tensor:
    """(N, 1, C, crop, crop): the centre crop (torchvision's CenterCrop box)."""
    t, l = five_boxes(x.shape[-2], x.shape[-1], crop)[4]
    return x[..., t:t + crop, l:l + crop].unsqueeze(1)


def fivecrop(x: torch.Tensor, crop: int) -> torch.Tensor:
    """(N, 5, C, crop, crop): torchvision FiveCrop's views (tl, tr, bl, br, centre), unmirrored."""
    boxes = five_boxes(x.shape[-2], x.shape[-1], crop)
    return torch.stack([x[..., t:t + crop, l:l + crop] for t, l in boxes], dim=1)


def tencrop(x: torch.Tensor, crop: int) -> torch.Tensor:
    """(N, 10, C, crop, crop): torchvision TenCrop's views, in its order."""
    boxes = five_boxes(x.shape[-2], x.shape[-1], crop)
    mirrored = x.flip(-1)
    views = [img[..., t:t + crop, l:l + crop] for img in (x, mirrored) for t, l in boxes]
    return torch.stack(views, dim=1)


def multiscale(x: torch.Tensor, crop: int, scales: Sequence[int]) -> torch.Tensor:
    """(N, 10 * len(scales), C, crop, crop): ten crops of the batch resized to each scale."""
    if not scales:
        raise UsageError("multiscale needs at least one scale, e.g. --multiscale 28,32,40")
    return torch.cat([tencrop(resize_shorter(x, max(int(s), crop)), crop) for s in scales], dim=1)


def num_views(mode: str, scales: Sequence[int] = ()) -> int:
    check_mode(mode)
    return 10 * len(scales) if mode == "multiscale" else VIEW_COUNTS[mode]


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise UsageError(f"unknown view mode '{mode}'; choose from: {', '.join(MODES)}")


def make_views(x: torch.Tensor, mode: str, crop: int, scales: Sequence[int] = (),
               resize: Optional[int] = None) -> torch.Tensor:
    """(N, V, C, crop, crop) views of a float batch; `resize` first sets the shorter side
    (the large-image rule; multiscale resizes the original batch to each scale instead)."""
    check_mode(mode)
    if mode == "multiscale":
        return multiscale(x, crop, scales)
    if resize is not None:
        x = resize_shorter(x, resize)
    return {"center": center, "fivecrop": fivecrop, "tencrop": tencrop}[mode](x, crop)


def iter_view_chunks(x: torch.Tensor, mode: str, crop: int, scales: Sequence[int] = (),
                     resize: Optional[int] = None, chunk: int = 1024) -> Iterator[torch.Tensor]:
    """(n, V, C, crop, crop) blocks covering the batch in order, each with at most max(chunk, V)
    views, so memory stays bounded by `chunk` views whatever the loader's batch size. The blocks
    are balanced (no small remainder pass): 512 images x 10 views at chunk 512 are 11 blocks of
    at most 47 images."""
    most = max(1, int(chunk) // num_views(mode, scales))
    blocks = -(-x.shape[0] // most)
    per = -(-x.shape[0] // max(blocks, 1))
    for i in range(0, x.shape[0], per):
        yield make_views(x[i:i + per], mode, crop, scales, resize)


def parse_views(views: Any) -> list[str]:
    """eval.views as a list of modes: 'center', 'fivecrop', 'tencrop' or 'multiscale:S1,S2,...' (each once,
    in order). Takes one mode or a list of them; in a list, sizes Hydra split off a multiscale
    mode join it again: [center, 'multiscale:28', 32, 36] -> ['center', 'multiscale:28,32,36'],
    so `eval.views=[center,multiscale:28,32,36]` needs no quotes."""
    items = [views] if isinstance(views, str) else list(views or [])
    modes: list[str] = []
    for item in items:
        text = str(item).strip()
        if text.isdigit():  # a size that belongs to the multiscale mode before it
            if not modes or not modes[-1].startswith("multiscale:"):
                raise UsageError(f"eval.views: the size {text} follows no multiscale mode; write "
                                 "multiscale:28,32,40")
            modes[-1] += f",{text}"
        else:
            modes.append(text)
    out = [_canonical(m) for m in modes]
    if not out:
        raise UsageError("eval.views names no mode; e.g. eval.views=[center,tencrop]")
    return list(dict.fromkeys(out))


def _canonical(mode: str) -> str:
    """One mode, checked, its scales written without spaces."""
    name, colon, scale_text = mode.partition(":")
    name = name.strip()
    if name == "multiscale":
        if not parse_scales(scale_text):
            raise UsageError("multiscale needs its scales, e.g. multiscale:28,32,40")
        return f"multiscale:{','.join(map(str, parse_scales(scale_text)))}"
    if name not in MODES or colon:
        raise UsageError(f"unknown view mode '{mode}'; choose from: center, fivecrop, tencrop, "
                         "multiscale:S1,S2,...")
    return name


def split_mode(mode: str) -> tuple[str, list[int]]:
    """'multiscale:28,32' -> ('multiscale', [28, 32]); 'tencrop' -> ('tencrop', [])."""
    name, _, scale_text = mode.partition(":")
    return name, parse_scales(scale_text)


def parse_scales(text: Optional[str]) -> list[int]:
    """'28,32,40' -> [28, 32, 40]; a one-line UsageError for anything else."""
    if not text:
        return []
    try:
        scales = [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise UsageError(f"--multiscale takes comma-separated sizes like 28,32,40, not '{text}'") from None
    if not scales or min(scales) < 1:
        raise UsageError(f"--multiscale takes positive sizes like 28,32,40, not '{text}'")
    return scales


def mirroring(modes: Sequence[str]) -> list[str]:
    """The modes among `modes` (whole modes, as parse_views gives) that include mirrored views."""
    return [m for m in modes if split_mode(m)[0] in MIRRORING]


def trains_mirrored(aug: Any) -> bool:
    """Whether an aug config (a run's `aug` group: ops and flip_p) mirrors training images: a
    `flip` op with a probability above 0. flip_p alone is not a flip (every preset carries it)."""
    ops = [str(op) for op in (aug.get("ops") or [])]
    return "flip" in ops and float(aug.get("flip_p", 0.5)) > 0


def mirror_warning(aug: Any, modes: Sequence[str]) -> Optional[str]:
    """One line when a mirroring mode will test a run whose aug never mirrored (None otherwise)."""
    if not mirroring(modes) or trains_mirrored(aug):
        return None
    return (f"this run never saw mirrored images (aug {aug.get('name', '?')} has no flip): "
            "ten-crop's mirrored views may cost accuracy; --fivecrop keeps the five unmirrored crops")
