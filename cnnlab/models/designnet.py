"""DesignNet: one small classifier, its conv blocks swappable, to train the lecture's block
designs against each other at the same depth of stages and widths (C8, C9).

    stem 3x3 (C) -> stage 1 block (C) -> pool -> stage 2 block (2C) -> pool -> stage 3 block (4C)
    -> global average pool -> linear

`block` (model.block) picks what every stage does (each conv followed by batch norm and ReLU):
- `7x7`, `5x5`: one large filter;  `3x3x3`, `3x3x2`: three / two stacked 3x3 convs, the same
  receptive field (7x7, 5x5) with 27C^2 / 18C^2 weights instead of 49C^2 / 25C^2 (Simonyan &
  Zisserman 2015, sec. 2.3);
- `3x3`: one 3x3 conv, the plain baseline of the next three;
- `bottleneck`: 1x1 down to C/4, 3x3, 1x1 back up (He et al. 2016, Fig. 5);
- `1x7+7x1`: a 7x7 field factorised into 1x7 then 7x1 (Szegedy et al. 2016, sec. 3.2);
- `separable`: depthwise 3x3 then pointwise 1x1 (Howard et al. 2017, MobileNets sec. 3.1).
The block's first conv changes the channel count; the rest keep it.
"""

from __future__ import annotations

import torch.nn as nn

from cnnlab.models.registry import register_model
from cnnlab.models.layers import scaled

BLOCKS = ("7x7", "5x5", "3x3x3", "3x3x2", "3x3", "bottleneck", "1x7+7x1", "separable")


def _cbr(cin: int, cout: int, kernel, groups: int = 1) -> list[nn.Module]:
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    return [nn.Conv2d(cin, cout, (kh, kw), padding=(kh // 2, kw // 2), groups=groups, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def make_block(kind: str, cin: int, cout: int) -> nn.Sequential:
    """The layers of one stage in design `kind` (see the module docstring)."""
    if kind in ("7x7", "5x5", "3x3"):
        k = int(kind[0])
        return nn.Sequential(*_cbr(cin, cout, k))
    if kind in ("3x3x3", "3x3x2"):
        n = int(kind[-1])
        return nn.Sequential(*_cbr(cin, cout, 3), *[m for _ in range(n - 1) for m in _cbr(cout, cout, 3)])
    if kind == "bottleneck":
        mid = max(1, cout // 4)
        return nn.Sequential(*_cbr(cin, mid, 1), *_cbr(mid, mid, 3), *_cbr(mid, cout, 1))
    if kind == "1x7+7x1":
        return nn.Sequential(*_cbr(cin, cout, (1, 7)), *_cbr(cout, cout, (7, 1)))
    if kind == "separable":
        return nn.Sequential(*_cbr(cin, cin, 3, groups=cin), *_cbr(cin, cout, 1))
    from cnnlab.errors import UsageError

    raise UsageError(f"designnet: block must be one of {', '.join(BLOCKS)}, not '{kind}'")


@register_model("designnet", family="design", default_input=(3, 32, 32))
def designnet(num_classes: int = 10, in_chans: int = 3, input_size=None, block: str = "3x3x3",
              width: float = 1.0):
    """A 3-stage classifier whose stages all use block design `block` (see the module)."""
    c = [scaled(x, width) for x in (32, 64, 128)]
    return nn.Sequential(
        *_cbr(in_chans, c[0], 3),
        make_block(block, c[0], c[0]), nn.MaxPool2d(2),
        make_block(block, c[0], c[1]), nn.MaxPool2d(2),
        make_block(block, c[1], c[2]),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c[2], num_classes),
    )
