"""Batched tensor augmentations: each op takes a float batch (N, C, H, W) in [0, 1] on the
training device and a generator, draws per-sample parameters in one call and applies them with
tensor ops (no per-image Python).

`create(cfg.aug)` composes the preset's ops in order; `None` means no augmentation.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from cnnlab.errors import UsageError

_OPS: dict[str, Callable[..., Callable]] = {}


def register_op(name: str):
    def wrap(fn):
        _OPS[name] = fn
        return fn

    return wrap


def list_ops() -> list[str]:
    return sorted(_OPS)


@register_op("flip")
def make_flip(cfg: Any):
    p = float(cfg.flip_p)

    def flip(x, gen):
        import torch

        mask = torch.rand(x.shape[0], generator=gen, device=x.device) < p
        return torch.where(mask.view(-1, 1, 1, 1), x.flip(3), x)

    return flip


@register_op("crop")
def make_crop(cfg: Any):
    pad = int(cfg.crop_padding)

    def crop(x, gen):
        import torch
        import torch.nn.functional as F

        n, c, h, w = x.shape
        padded = F.pad(x, (pad, pad, pad, pad))
        oy = torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=x.device)
        ox = torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=x.device)
        rows = (oy.view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1)
        cols = (ox.view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w)
        chans = torch.arange(c, device=x.device).view(1, c, 1, 1)
        return padded[torch.arange(n, device=x.device).view(n, 1, 1, 1), chans, rows, cols]

    return crop


def create(cfg: Any) -> Optional[Callable]:
    """The preset's ops composed in order, or None for no augmentation."""
    ops = list(cfg.ops)
    unknown = [o for o in ops if o not in _OPS]
    if unknown:
        raise UsageError(f"unknown augmentation op '{unknown[0]}'; choose from: {', '.join(list_ops())}")
    if not ops:
        return None
    fns = [_OPS[o](cfg) for o in ops]

    def augment(x, gen):
        for fn in fns:
            x = fn(x, gen)
        return x

    return augment
