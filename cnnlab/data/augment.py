"""Batched tensor augmentations for training batches.

Each op works on a whole float batch (N, C, H, W) in [0, 1] on the training device: it draws every
sample's random parameters in one call from the given `torch.Generator` (which lives on the same
device) and applies them with tensor ops, so there is no per-image Python and CPU and CUDA run the
same code. Every op keeps shape, dtype, device and the [0, 1] range.

Calling convention
------------------
`create(cfg.aug, train_images=None)` returns None when the preset has no ops, else a callable

    augment(x, gen, y=None, num_classes=None)

that runs the preset's ops in list order and returns
  * `x` when no op in the preset mixes images (everything except mixup and cutmix), and
  * `(x, y_soft)` when one does: `y` is the int64 (N,) labels (or already-soft (N, K) float
    targets) and `y_soft` is float (N, num_classes), every row summing to 1, to be used with
    cross-entropy on probabilities (`F.cross_entropy(logits, y_soft)`).
`augment.mixes` tells in advance which of the two it is; `augment.ops` lists the op names.

Ops (parameters are `cfg` fields, defaults and sources in cnnlab.config.AugConfig)
----
flip     horizontal mirror with probability flip_p.
crop     zero-pad by crop_padding, random crop back to H x W (He et al. 2016, sec. 4.2), or with
         crop_size N > 0 a random N x N crop, so the batch shrinks to N x N (AlexNet's random
         224 crops of 256 images; `input_size` tells the training input size).
scale    random-resized-crop: a box of area fraction U[scale_min, scale_max] and log-uniform aspect
         ratio in [ratio_min, ratio_max], drawn as torchvision's RandomResizedCrop does (10 tries,
         then a centre crop), resampled back to H x W with bilinear interpolation in one
         `grid_sample`. The box never exceeds the image, so this only ever upsamples and needs no
         antialiasing; it matches torchvision's `resized_crop` on the same box.
color    brightness, contrast and saturation factors ~ U[max(0, 1-s), 1+s] per image, defined as in
         torchvision's ColorJitter (contrast blends with the image's grey mean, saturation with its
         grey image, ITU-R 601 luma); applied in a random order drawn once per batch (torchvision
         draws one per image). Saturation is a no-op for 1-channel images. No hue jitter.
pca      PCA lighting (Krizhevsky et al. 2012, sec. 4.1): add eigvecs @ (alpha * eigvals) to every
         pixel, alpha ~ N(0, pca_std) per image and component; eigen-decomposition of the training
         set's RGB covariance (pixels in [0, 1]) from cnnlab.data.pca. Clamped to [0, 1].
cutout   one square of side cutout_size zeroed at a uniformly random centre per image; it may
         cross the border and is then clipped (DeVries & Taylor 2017). Zero means black here,
         because augmentation runs before normalisation (the paper zeroes normalised pixels).
mixup    x = lam * x + (1 - lam) * x[perm], same for targets, lam ~ Beta(mixup_alpha, mixup_alpha)
         (Zhang et al. 2018); perm is a random permutation of the batch.
cutmix   paste a box of area fraction 1 - lam from x[perm], lam ~ Beta(cutmix_alpha, cutmix_alpha),
         box centre uniform, clipped at the border; the target weight is the exact pixel fraction
         kept after clipping (Yun et al. 2019).
mix_mode: sample draws a lambda per image; batch draws one lambda per batch as Zhang et al.'s code.

`cnnlab aug bench` (cnnlab.bench.aug) measures a preset's throughput beside two baselines.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from cnnlab.errors import UsageError
from cnnlab.registry import Registry

OPS = Registry("augmentation op")  # name -> factory(cfg, train_images=) -> batch function
_MIXING: set[str] = set()  # ops that mix images and labels (mixup, cutmix)
_PER_BATCH: set[str] = set()  # ops with a draw for the whole batch (mixing partners, colour order)


def register_op(name: str, mixes: bool = False, per_batch: bool = False):
    if mixes:
        _MIXING.add(name)
    if mixes or per_batch:
        _PER_BATCH.add(name)
    return OPS.register(name)


def list_ops() -> list[str]:
    return OPS.names()


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UsageError(message)


def _rand(n: int, x: torch.Tensor, gen) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=x.device, dtype=torch.float32)


def _box_mask(y1, y2, x1, x2, h: int, w: int) -> torch.Tensor:
    """Boolean (N, 1, H, W) mask of the per-sample boxes [y1, y2) x [x1, x2)."""
    rows = torch.arange(h, device=y1.device)
    cols = torch.arange(w, device=y1.device)
    rm = (rows >= y1[:, None]) & (rows < y2[:, None])
    cm = (cols >= x1[:, None]) & (cols < x2[:, None])
    return (rm[:, :, None] & cm[:, None, :])[:, None]


def _centred_boxes(side_h, side_w, h: int, w: int, x: torch.Tensor, gen):
    """Boxes of per-sample sides (int64 (N,)) at uniform random centres, clipped to the image."""
    n = side_h.shape[0]
    cy = torch.randint(0, h, (n,), generator=gen, device=x.device)
    cx = torch.randint(0, w, (n,), generator=gen, device=x.device)
    y1, x1 = cy - side_h // 2, cx - side_w // 2
    y2, x2 = y1 + side_h, x1 + side_w
    return y1.clamp(0, h), y2.clamp(0, h), x1.clamp(0, w), x2.clamp(0, w)


# --------------------------------------------------------------------------- geometric ops

@register_op("flip")
def make_flip(cfg: Any, **_):
    p = float(cfg.flip_p)  # parameters are range-checked at compose (cnnlab.config.checks)

    def flip(x, gen):
        mask = _rand(x.shape[0], x, gen) < p
        return torch.where(mask.view(-1, 1, 1, 1), x.flip(3), x)

    return flip


FULL_TABLE_BYTES = 16 << 20  # the crop's pixel indices for every offset, kept when this small


def _crop_tables(h: int, w: int, pad: int, oh: int, ow: int, device):
    """Per-offset source rows and columns of a crop of the zero-padded image: rows (H + 2 pad -
    oh + 1, oh) holds r * w for the crop's rows at each y offset, cols (2 (W + 2 pad - ow + 1),
    ow) its columns at each x offset, plain then mirrored. A row or column in the padding holds
    h * w, so a row plus a column at or above h * w is a padding pixel. full: every offset's
    (oh * ow) pixel indices, row y * 2 (W + 2 pad - ow + 1) + x, when that fits FULL_TABLE_BYTES
    (32x32 images, pad 4: 1.3 MB), else None."""
    ny, nx = h + 2 * pad - oh + 1, w + 2 * pad - ow + 1
    r = torch.arange(ny, device=device).view(-1, 1) + torch.arange(oh, device=device) - pad
    rows = torch.where((r >= 0) & (r < h), r * w, h * w)
    q = torch.arange(ow, device=device)
    c = torch.arange(nx, device=device).view(-1, 1) + torch.cat((q, ow - 1 - q)).view(2, 1, ow) - pad
    cols = torch.where((c >= 0) & (c < w), c, h * w).view(2 * nx, ow)
    full = None
    if ny * 2 * nx * oh * ow * 8 <= FULL_TABLE_BYTES:
        full = (rows.view(ny, 1, oh, 1) + cols.view(1, 2 * nx, 1, ow)).clamp_(max=h * w)
        full = full.view(ny * 2 * nx, oh * ow)
    return rows, cols, full


def _crop_pixels(n: int, h: int, w: int, gen, device, pad: int, size: int,
                 flip_p: float | None = None, tables: dict | None = None,
                 draw_offsets: bool = True, separable: bool = False):
    """Random crops of the zero-padded images as source-pixel indices: ((N, oh * ow) int64, oh, ow).

    Index r * w + c is pixel (r, c) of an image; index h * w stands for the padding, a zero pixel
    the caller appends to each image's h * w (`with_pad_pixel`), so one gather crops, mirrors and
    pads. Draws: offsets y, offsets x, then the mirror mask when flip_p is given, as separate
    crop and flip ops draw. `tables`: a dict to keep the offset tables in between calls;
    draw_offsets=False: no offsets drawn (pad 0, size 0: the image itself, mirrored or not).
    separable: the same crops as tables and offsets, ((Y, oh) rows, (X, ow) columns, (N,) oy,
    (N,) ox) int64, pixel (r, c) of crop i being rows[oy[i], r] + cols[ox[i], c], a padding
    pixel when that is h * w or more (the same draws)."""
    oh, ow = (size, size) if size else (h, w)
    _check(oh <= h + 2 * pad and ow <= w + 2 * pad,
           f"aug.crop_size={size} is larger than the {h}x{w} images plus aug.crop_padding={pad} on "
           f"each side")
    key = (h, w, torch.device(device))
    tables = {} if tables is None else tables
    if key not in tables:
        tables[key] = _crop_tables(h, w, pad, oh, ow, device)
    rows, cols, full = tables[key]
    ny, nx = rows.shape[0], cols.shape[0] // 2
    if draw_offsets:
        oy = torch.randint(0, ny, (n,), generator=gen, device=device)
        ox = torch.randint(0, nx, (n,), generator=gen, device=device)
    else:  # the whole image (a flip or pca alone, fused as a crop of size 0 and padding 0)
        oy = ox = torch.zeros(n, dtype=torch.long, device=device)
    if flip_p is not None:  # a mirrored crop's columns are the second half of the table
        mirror = torch.rand(n, generator=gen, device=device, dtype=torch.float32) < flip_p
        ox = torch.add(ox, mirror, alpha=nx)
    if separable:
        return (rows, cols, oy, ox), oh, ow
    if full is not None:  # one row gather of precomputed indices
        return full.index_select(0, torch.add(ox, oy, alpha=2 * nx)), oh, ow
    pix = rows.index_select(0, oy).view(n, oh, 1) + cols.index_select(0, ox).view(n, 1, ow)
    if pad:
        pix = pix.clamp_(max=h * w)
    return pix.view(n, oh * ow), oh, ow


def with_pad_pixel(x: torch.Tensor, pad: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """(N, C, H * W [+ 1]): the images' pixels, then (when pad > 0) one zero pixel for the
    padding, in a fresh buffer (of `dtype`, default x's) that the caller may change in place."""
    n, c, h, w = x.shape
    src = x.new_empty((n, c, h * w + (1 if pad else 0)), dtype=dtype or x.dtype)
    src[:, :, :h * w] = x.reshape(n, c, h * w)
    if pad:
        src[:, :, h * w] = 0
    return src


def gather_pixels(src: torch.Tensor, pix: torch.Tensor, oh: int, ow: int,
                  channels_last: bool = False) -> torch.Tensor:
    """(N, C, oh, ow) from (N, C, P) `src` and (N, oh * ow) pixel indices into P, in one gather;
    channels_last: written straight into an NHWC buffer (no copy after)."""
    n, c, _ = src.shape
    index = pix.view(n, 1, oh * ow).expand(n, c, oh * ow)
    if not channels_last:
        return src.gather(2, index).view(n, c, oh, ow)
    out = torch.empty((n, c, oh, ow), dtype=src.dtype, device=src.device,
                      memory_format=torch.channels_last)
    torch.gather(src, 2, index, out=out.as_strided((n, c, oh * ow), (c * oh * ow, 1, c)))
    return out


@register_op("crop")
def make_crop(cfg: Any, **_):
    pad = int(cfg.crop_padding)
    size = int(getattr(cfg, "crop_size", 0) or 0)

    tables: dict = {}

    def pixels(n: int, h: int, w: int, gen, device, flip_p: float | None = None,
               separable: bool = False):
        return _crop_pixels(n, h, w, gen, device, pad, size, flip_p, tables, separable=separable)

    def crop(x, gen):
        n, c, h, w = x.shape
        pix, oh, ow = pixels(n, h, w, gen, x.device)
        return gather_pixels(with_pad_pixel(x, pad), pix, oh, ow)

    crop.pixels = pixels
    crop.pad = pad
    return crop


def _rrc_boxes(n: int, h: int, w: int, gen, device, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
               tries: int = 10):
    """Per-sample (top, left, height, width) int64 boxes drawn as torchvision's RandomResizedCrop.

    torchvision tries up to 10 (area, ratio) draws and takes the first that fits, else falls back
    to a centre crop with the aspect ratio clamped into range; here all tries are drawn at once.
    """
    area = float(h * w)
    u = torch.rand(2, n, tries, generator=gen, device=device, dtype=torch.float64)
    off = torch.rand(2, n, generator=gen, device=device, dtype=torch.float64)
    target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
    lr = (math.log(ratio[0]), math.log(ratio[1]))
    aspect = torch.exp(lr[0] + (lr[1] - lr[0]) * u[1])
    cw = torch.sqrt(target * aspect).round().long()
    ch = torch.sqrt(target / aspect).round().long()
    ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = torch.where(ok, torch.arange(tries, device=device), tries).amin(1)
    found = first < tries
    pick = first.clamp(max=tries - 1)[:, None]
    cw, ch = cw.gather(1, pick)[:, 0], ch.gather(1, pick)[:, 0]
    # fallback: centre crop, whole image unless its ratio is outside the range
    in_ratio = w / h
    if in_ratio < min(ratio):
        fw, fh = w, round(w / min(ratio))
    elif in_ratio > max(ratio):
        fw, fh = round(h * max(ratio)), h
    else:
        fw, fh = w, h
    cw = torch.where(found, cw, fw)
    ch = torch.where(found, ch, fh)
    # offsets uniform on the integers [0, H - h] and [0, W - w]
    top = (off[0] * (h - ch + 1)).floor().long().clamp(max=h - ch)
    left = (off[1] * (w - cw + 1)).floor().long().clamp(max=w - cw)
    top = torch.where(found, top, (h - ch) // 2)
    left = torch.where(found, left, (w - cw) // 2)
    return top, left, ch, cw


def _resample_boxes(x: torch.Tensor, top, left, bh, bw) -> torch.Tensor:
    """Bilinear resize of each sample's box back to (H, W) in one grid_sample.

    Source coordinates are those of F.interpolate(align_corners=False) within the box, clamped to
    the box's outer pixel centres, so the result equals torchvision's resized_crop on that box.
    """
    n, _, h, w = x.shape
    dt = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    oy = torch.arange(h, device=x.device, dtype=dt) + 0.5
    ox = torch.arange(w, device=x.device, dtype=dt) + 0.5
    top, left, bh, bw = (t.to(dt)[:, None] for t in (top, left, bh, bw))
    sy = torch.minimum(torch.maximum(top + oy * bh / h - 0.5, top), top + bh - 1)
    sx = torch.minimum(torch.maximum(left + ox * bw / w - 0.5, left), left + bw - 1)
    gy = (2 * sy + 1) / h - 1  # pixel centre -> normalised coordinate (align_corners=False)
    gx = (2 * sx + 1) / w - 1
    grid = torch.stack((gx[:, None, :].expand(n, h, w), gy[:, :, None].expand(n, h, w)), dim=-1)
    out = F.grid_sample(x.to(dt), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.to(x.dtype).clamp_(0, 1)


@register_op("scale")
def make_scale(cfg: Any, **_):
    scale = (float(cfg.scale_min), float(cfg.scale_max))
    ratio = (float(cfg.ratio_min), float(cfg.ratio_max))

    def scale_op(x, gen):
        n, _, h, w = x.shape
        return _resample_boxes(x, *_rrc_boxes(n, h, w, gen, x.device, scale, ratio))

    return scale_op


# --------------------------------------------------------------------------- photometric ops

def _grey(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma, as torchvision's rgb_to_grayscale; (N, 1, H, W)."""
    if x.shape[1] == 1:
        return x
    return (0.2989 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).to(x.dtype)


def _factors(strength: float, x, gen) -> torch.Tensor:
    lo, hi = max(0.0, 1 - strength), 1 + strength
    return (lo + (hi - lo) * _rand(x.shape[0], x, gen)).to(x.dtype).view(-1, 1, 1, 1)


@register_op("color", per_batch=True)
def make_color(cfg: Any, **_):
    strengths = {"brightness": float(cfg.brightness), "contrast": float(cfg.contrast),
                 "saturation": float(cfg.saturation)}
    active = [k for k, v in strengths.items() if v > 0]

    def brightness(x, f):
        return (x * f).clamp_(0, 1)

    def contrast(x, f):
        m = _grey(x).mean(dim=(1, 2, 3), keepdim=True)
        return (f * x + (1 - f) * m).clamp_(0, 1)

    def saturation(x, f):
        if x.shape[1] != 3:
            return x
        return (f * x + (1 - f) * _grey(x)).clamp_(0, 1)

    fns = {"brightness": brightness, "contrast": contrast, "saturation": saturation}

    def color(x, gen):
        if not active:
            return x
        # per-image factors for every active op, then one batch-wide order (torchvision: random order)
        factors = {k: _factors(strengths[k], x, gen) for k in active}
        order = torch.randperm(len(active), generator=gen, device=gen.device).tolist()
        for i in order:
            k = active[i]
            x = fns[k](x, factors[k])
        return x

    return color


@register_op("pca")
def make_pca(cfg: Any, train_images=None, **_):
    std = float(cfg.pca_std)  # Krizhevsky et al. 2012, sec. 4.1: alpha ~ N(0, 0.1)
    if train_images is None:
        raise UsageError("aug op 'pca' needs the training images to compute its RGB statistics "
                         "(augment.create(cfg, train_images=...))")
    if isinstance(train_images, torch.Tensor) and (train_images.dim() != 4 or train_images.shape[1] != 3):
        raise UsageError(f"aug op 'pca' needs 3-channel (RGB) images; the training images have shape "
                         f"{tuple(train_images.shape)}")
    from cnnlab.data.pca import rgb_pca

    eigvals, eigvecs = rgb_pca(train_images)
    # delta = eigvecs @ (alpha * eigvals) = alpha @ (eigvecs * eigvals).T for a batch of alphas
    proj = (eigvecs * eigvals).T.contiguous()  # (3 components, 3 channels)
    cache: dict = {}

    def delta(n: int, c: int, gen, device, dtype=torch.float32):
        """(N, 3) lighting shift per image: eigvecs @ (alpha * eigvals), alpha ~ N(0, std)."""
        if c != 3:
            raise UsageError(f"aug op 'pca' needs 3-channel (RGB) images; got {c} channels")
        if device not in cache:
            cache[device] = proj.to(device=device, dtype=torch.float32)
        alpha = torch.randn(n, 3, generator=gen, device=device) * std
        return (alpha @ cache[device]).to(dtype)

    def pca(x, gen):
        d = delta(x.shape[0], x.shape[1], gen, x.device, x.dtype)
        return (x + d.view(-1, 3, 1, 1)).clamp_(0, 1)

    pca.delta = delta
    return pca


# --------------------------------------------------------------------------- occlusion

@register_op("cutout")
def make_cutout(cfg: Any, **_):
    size = int(cfg.cutout_size)

    def cutout(x, gen):
        n, _, h, w = x.shape
        side = torch.full((n,), size, device=x.device, dtype=torch.long)
        mask = _box_mask(*_centred_boxes(side, side, h, w, x, gen), h, w)
        return x.masked_fill(mask, 0)

    return cutout


# --------------------------------------------------------------------------- mixing ops

def _gamma(shape: torch.Tensor, n: int, gen, device, tries: int = 8) -> torch.Tensor:
    """Gamma(shape, 1) float64 samples by Marsaglia & Tsang (2000), all tries drawn at once.

    Shapes below 1 use Gamma(a) = Gamma(a + 1) * U ** (1 / a). Acceptance is above 95% per try
    for a >= 1, so 8 tries leave a failure probability below 1e-10 (then the mode d is used).
    """
    a = shape
    boost = a < 1
    a1 = a + 1 if boost else a
    d = a1 - 1 / 3
    c = 1 / math.sqrt(9 * d)
    z = torch.randn(n, tries, generator=gen, device=device, dtype=torch.float64)
    u = torch.rand(n, tries + 1, generator=gen, device=device, dtype=torch.float64)
    v = (1 + c * z) ** 3
    ok = (v > 0) & (torch.log(u[:, :tries]) < 0.5 * z * z + d - d * v + d * torch.log(v.clamp(min=1e-300)))
    first = torch.where(ok, torch.arange(tries, device=device), tries).amin(1)
    val = (d * v).gather(1, first.clamp(max=tries - 1)[:, None])[:, 0]
    g = torch.where(first < tries, val, torch.full_like(val, d))
    if boost:
        g = g * u[:, tries].clamp(min=1e-300) ** (1 / a)
    return g


def sample_beta(alpha: float, n: int, gen, device) -> torch.Tensor:
    """n samples of Beta(alpha, alpha) as float64, from the given generator."""
    if alpha == 1.0:
        return torch.rand(n, generator=gen, device=device, dtype=torch.float64)
    g1 = _gamma(alpha, n, gen, device)
    g2 = _gamma(alpha, n, gen, device)
    s = g1 + g2
    return torch.where(s > 0, g1 / s.clamp(min=1e-300), torch.full_like(s, 0.5))


def _lambdas(alpha: float, mode: str, x, gen) -> torch.Tensor:
    n = x.shape[0]
    lam = sample_beta(alpha, 1 if mode == "batch" else n, gen, x.device)
    return lam.expand(n) if mode == "batch" else lam


def _partners(x, gen) -> torch.Tensor:
    return torch.argsort(_rand(x.shape[0], x, gen))


def _mix_params(cfg, field: str) -> tuple[float, str]:
    return float(getattr(cfg, field)), str(cfg.mix_mode)


@register_op("mixup", mixes=True)
def make_mixup(cfg: Any, **_):
    alpha, mode = _mix_params(cfg, "mixup_alpha")

    def mixup(x, y, gen):
        lam = _lambdas(alpha, mode, x, gen)
        perm = _partners(x, gen)
        lx = lam.to(x.dtype).view(-1, 1, 1, 1)
        x = (lx * x + (1 - lx) * x[perm]).clamp_(0, 1)
        ly = lam.to(y.dtype).view(-1, 1)
        return x, ly * y + (1 - ly) * y[perm]

    return mixup


@register_op("cutmix", mixes=True)
def make_cutmix(cfg: Any, **_):
    alpha, mode = _mix_params(cfg, "cutmix_alpha")

    def cutmix(x, y, gen):
        _, _, h, w = x.shape
        lam = _lambdas(alpha, mode, x, gen)
        cut = torch.sqrt(1 - lam)  # box side ratio (Yun et al. 2019, sec. 3.1)
        y1, y2, x1, x2 = _centred_boxes((h * cut).floor().long(), (w * cut).floor().long(), h, w, x, gen)
        perm = _partners(x, gen)
        mask = _box_mask(y1, y2, x1, x2, h, w)
        x = torch.where(mask, x[perm], x)
        kept = 1 - ((y2 - y1) * (x2 - x1)).to(y.dtype) / (h * w)  # the exact fraction after clipping
        ly = kept.view(-1, 1)
        return x, ly * y + (1 - ly) * y[perm]

    return cutmix


# --------------------------------------------------------------------------- composition

def input_size(cfg: Any, image_size) -> tuple[int, int]:
    """The (H, W) a preset trains the model on: aug.crop_size when the crop op shrinks images,
    else the dataset's image size. Evaluation takes its centre (or ten) crops at this size."""
    size = int(getattr(cfg, "crop_size", 0) or 0)
    if size and "crop" in list(cfg.ops):
        pad = int(cfg.crop_padding)
        if size > min(image_size) + 2 * pad:
            raise UsageError(f"aug.crop_size={size} is larger than the {image_size[0]}x{image_size[1]} "
                             f"images plus aug.crop_padding={pad} on each side")
        return size, size
    return int(image_size[0]), int(image_size[1])


def _fuse_crops(ops: list[str], fns: list, flip_p: float) -> list:
    """crop, flip and pca, each optional but in this order, as one op: one gather crops, mirrors
    and pads, and the lighting is added in place to the fresh crops (a flip or pca without a crop
    gathers with a crop of size 0 and padding 0, which draws nothing). The random draws and the
    result are those of the ops run one by one. The fused op's `plan` gives the same draws as
    data (`pixel_plan`), for a loader that does the pixelwise work before the gather."""
    out, i = [], 0
    while i < len(ops):
        if ops[i] not in ("crop", "flip", "pca"):
            out.append(fns[i])
            i += 1
            continue
        pixels, pad = _identity_pixels, 0
        if ops[i] == "crop":
            pixels, pad, i = fns[i][1].pixels, fns[i][1].pad, i + 1
        p = None
        if i < len(ops) and ops[i] == "flip":
            p, i = flip_p, i + 1
        delta = None
        if i < len(ops) and ops[i] == "pca":
            delta, i = fns[i][1].delta, i + 1
        out.append((False, _fused_crop(pixels, pad, p, delta)))
    return out


_IDENTITY_TABLES: dict = {}  # _identity_pixels' offset tables, by image size and device


def _identity_pixels(n: int, h: int, w: int, gen, device, flip_p: float | None = None,
                     separable: bool = False):
    return _crop_pixels(n, h, w, gen, device, 0, 0, flip_p, _IDENTITY_TABLES, draw_offsets=False,
                        separable=separable)


def _fused_crop(pixels, pad: int, flip_p: float | None, delta):
    def plan(shape, gen, device, dtype=torch.float32, separable: bool = False):
        """(pixels (N, oh * ow), (oh, ow), shift (N, C) or None): see `pixel_plan` in create;
        separable: pixels as (row table, column table, row offsets, column offsets), see
        _crop_pixels."""
        n, c, h, w = shape
        pix, oh, ow = pixels(n, h, w, gen, device, flip_p, separable)
        return pix, (oh, ow), (None if delta is None else delta(n, c, gen, device, dtype))

    def fused(x, gen):
        n, c = x.shape[:2]
        pix, (oh, ow), shift = plan(x.shape, gen, x.device, x.dtype)
        crops = gather_pixels(with_pad_pixel(x, pad), pix, oh, ow)
        return crops if shift is None else crops.add_(shift.view(n, c, 1, 1)).clamp_(0, 1)

    plan.pad = pad
    fused.plan = plan
    return fused


def create(cfg: Any, train_images=None) -> Callable | None:
    """The preset's ops composed in order, or None for no augmentation (see the module docstring).

    train_images: the training split's uint8 (N, 3, H, W) tensor (or a Dataset of (uint8 CHW,
    label) when streamed); only the pca op uses it, to compute its RGB statistics.
    """
    ops = list(cfg.ops)
    factories = [OPS.get(o) for o in ops]  # an unknown op fails here, naming the choices
    if not ops:
        return None
    fns = [(o in _MIXING, f(cfg, train_images=train_images)) for o, f in zip(ops, factories)]
    fns = _fuse_crops(ops, fns, float(cfg.flip_p))
    mixes = any(m for m, _ in fns)

    def augment(x, gen, y=None, num_classes=None):
        if mixes:
            if y is None:
                raise TypeError(f"aug ops {ops} mix targets: call augment(x, gen, y, num_classes)")
            if y.dim() == 1:
                if num_classes is None:
                    raise TypeError("augment needs num_classes to turn integer labels into soft targets")
                y = F.one_hot(y.long(), num_classes).to(device=x.device, dtype=torch.float32)
            else:
                y = y.to(device=x.device, dtype=torch.float32)
        for is_mix, fn in fns:
            if is_mix:
                x, y = fn(x, y, gen)
            else:
                x = fn(x, gen)
        return (x, y) if mixes else x

    augment.mixes = mixes
    augment.ops = ops
    # every draw is per image: a loader may augment several batches in one call
    augment.per_image = not any(o in _PER_BATCH for o in ops)
    # The whole preset is one fused crop: a gather of source pixels, then a clamped per-image
    # channel shift. Pixelwise work commutes with a gather, so a loader may shift, clamp and
    # normalise the source images (and their one padding pixel) first, then gather straight
    # into the model's memory order: the same values, two passes less over the batch.
    # (plan.pad: the crop's padding, so the loader knows to append the padding pixel)
    augment.pixel_plan = getattr(fns[0][1], "plan", None) if len(fns) == 1 else None
    return augment
