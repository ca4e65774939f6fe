"""Residual networks and their plain twins (He, Zhang, Ren & Sun 2016, "Deep residual learning
for image recognition").

CIFAR ResNets `resnet8/20/32/44/56/110` (sec. 4.2): a 3x3 stem with 16 channels, three stages
of n basic blocks at 16/32/64 channels (strides 1, 2, 2), global average pooling and one linear
layer: 6n + 2 weighted layers. Shortcuts that change shape use the paper's option A for CIFAR
(stride-2 subsampling and zero-padded channels, no parameters), so resnet20 has the paper's
0.27M parameters. Their stem defaults to "cifar" (the published network); `stem=imagenet`
(which `models.create` picks for inputs of 96 pixels or more) swaps the 3x3 stride-1 stem conv
for a 7x7 stride-2 conv plus a 3x3 stride-2 max pool, still with 16*width channels, so a
224-pixel input reaches the first stage at 56x56 as in the ImageNet layouts.

ImageNet ResNets `resnet18/34` (basic blocks) and `resnet50/101/152` (bottleneck blocks,
expansion 4) follow Table 1: a 7x7/2 stem conv with 64 channels, a 3x3/2 max pool, four
stages at 64/128/256/512 (x4 for bottlenecks) channels, global average pooling and one FC.
Shortcuts that change shape are projections, a 1x1 conv + norm (option B, sec. 3.3); the
others are identities. Parameter counts equal torchvision's resnet18..152.

Plain networks (sec. 4.1, Fig. 3 middle and Table 2; sec. 4.2 for CIFAR) are the same layers
with the shortcut removed: `plain18/34` (ImageNet layouts, so no projection convs either) and
`plain20/32/44/56/110` (CIFAR layouts, same parameter count as their resnet twins because option
A shortcuts have no parameters).

Options: `norm`/`norm_groups` (every norm layer, including the projection's), `act` (every
activation), `width` (multiplies every stage's channels and the stem's), `dropout` (before the
FC, default 0, as the paper uses none), `stem`: "imagenet" or "cifar". For the ImageNet layouts
the cifar stem is a 3x3 stride-1 conv with 64*width channels and no max pool, so a 32x32 input
reaches the first stage at 32x32 (not 8x8) and the last at 4x4; inputs down to 8x8 still run.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlab.errors import UsageError
from cnnlab.models.registry import register_model
from cnnlab.models.layers import make_act, make_norm, scaled

STEMS = ("imagenet", "cifar")


class PadShortcut(nn.Module):
    """Option A: subsample by `stride` and zero-pad the new channels."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.stride, self.extra = stride, out_ch - in_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


def _projection(in_ch: int, out_ch: int, stride: int, norm: str, groups: int) -> nn.Module:
    """Option B (sec. 3.3): a 1x1 conv + norm where the shape changes."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False),
                         make_norm(norm, out_ch, groups))


def _shortcut(in_ch: int, out_ch: int, stride: int, norm: str, groups: int, residual: bool,
              projection: bool):
    if not residual:
        return None  # plain network: no path around the block at all
    if stride == 1 and in_ch == out_ch:
        return nn.Identity()
    if projection:
        return _projection(in_ch, out_ch, stride, norm, groups)
    return PadShortcut(in_ch, out_ch, stride)


class BasicBlock(nn.Module):
    """Two 3x3 convs (Fig. 2); `residual=False` drops the shortcut (a plain-network block)."""

    expansion = 1

    def __init__(self, in_ch: int, out_ch: int, stride: int, norm: str, groups: int, act: str,
                 residual: bool = True, projection: bool = False):
        super().__init__()
        self.residual = residual
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.norm1 = make_norm(norm, out_ch, groups)
        self.act1 = make_act(act)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.norm2 = make_norm(norm, out_ch, groups)
        self.act2 = make_act(act)
        self.shortcut = _shortcut(in_ch, out_ch, stride, norm, groups, residual, projection)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        if self.residual:
            out = out + self.shortcut(x)
        return self.act2(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand by 4 (Fig. 5 right).

    The stride sits on the 3x3 conv as in torchvision ("ResNet v1.5"); the paper puts it on the
    first 1x1 conv, which skips three quarters of the input pixels. Parameter counts are equal.
    """

    expansion = 4  # He et al. 2016, Table 1: 64-d -> 256-d

    def __init__(self, in_ch: int, planes: int, stride: int, norm: str, groups: int, act: str,
                 residual: bool = True, projection: bool = True):
        super().__init__()
        out_ch = planes * self.expansion
        self.residual = residual
        self.conv1 = nn.Conv2d(in_ch, planes, 1, bias=False)
        self.norm1 = make_norm(norm, planes, groups)
        self.act1 = make_act(act)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.norm2 = make_norm(norm, planes, groups)
        self.act2 = make_act(act)
        self.conv3 = nn.Conv2d(planes, out_ch, 1, bias=False)
        self.norm3 = make_norm(norm, out_ch, groups)
        self.act3 = make_act(act)
        self.shortcut = _shortcut(in_ch, out_ch, stride, norm, groups, residual, projection)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.norm1(self.conv1(x)))
        out = self.act2(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        if self.residual:
            out = out + self.shortcut(x)
        return self.act3(out)


def _check_stem(stem: str) -> None:
    if stem not in STEMS:
        raise UsageError(f"resnet: stem must be one of {', '.join(STEMS)}, not '{stem}'")


def _make_stem(stem: str, in_chans: int, channels: int, norm: str, groups: int, act: str):
    _check_stem(stem)
    if stem == "cifar":  # sec. 4.2: 3x3 stride 1, no pooling, keeps 32x32 maps
        return nn.Sequential(nn.Conv2d(in_chans, channels, 3, 1, 1, bias=False),
                             make_norm(norm, channels, groups), make_act(act))
    # Table 1, conv1: 7x7/2, then a 3x3/2 max pool
    return nn.Sequential(nn.Conv2d(in_chans, channels, 7, 2, 3, bias=False),
                         make_norm(norm, channels, groups), make_act(act),
                         nn.MaxPool2d(3, 2, 1))


def _init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):  # He et al. 2015 ("Delving deep"), as the paper uses
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


class CifarResNet(nn.Module):
    def __init__(self, depth_n: int, num_classes: int, in_chans: int, norm: str = "bn",
                 norm_groups: int = 8, act: str = "relu", width: float = 1.0, dropout: float = 0.0,
                 stem: str = "cifar", residual: bool = True):
        super().__init__()
        widths = [scaled(c, width) for c in (16, 32, 64)]  # sec. 4.2: 16, 32, 64 filters
        self.stem = _make_stem(stem, in_chans, widths[0], norm, norm_groups, act)
        blocks, in_ch = [], widths[0]
        for i, out_ch in enumerate(widths):
            for j in range(depth_n):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(BasicBlock(in_ch, out_ch, stride, norm, norm_groups, act,
                                         residual=residual, projection=False))
                in_ch = out_ch
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(in_ch, num_classes))
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


class ResNet(nn.Module):
    """ImageNet layout (Table 1): stem, four stages at 64/128/256/512 planes, pool, FC."""

    def __init__(self, block, layers, num_classes: int = 1000, in_chans: int = 3,
                 stem: str = "imagenet", norm: str = "bn", norm_groups: int = 32,
                 act: str = "relu", width: float = 1.0, dropout: float = 0.0,
                 residual: bool = True):
        super().__init__()
        planes = [scaled(c, width) for c in (64, 128, 256, 512)]  # Table 1, conv2_x..conv5_x
        in_ch = planes[0]
        self.stem = _make_stem(stem, in_chans, in_ch, norm, norm_groups, act)
        stages = []
        for i, (p, n) in enumerate(zip(planes, layers)):
            blocks = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1  # Table 1: conv3_1, conv4_1, conv5_1
                blocks.append(block(in_ch, p, stride, norm, norm_groups, act,
                                    residual=residual, projection=True))
                in_ch = p * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(in_ch, num_classes))
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


def _register_cifar(depth: int, residual: bool) -> None:
    n = (depth - 2) // 6
    name = f"{'resnet' if residual else 'plain'}{depth}"

    def build(num_classes: int = 10, in_chans: int = 3, input_size=None, stem: str = "cifar",
              norm: str = "bn", norm_groups: int = 8, act: str = "relu", width: float = 1.0,
              dropout: float = 0.0):
        return CifarResNet(n, num_classes, in_chans, norm, norm_groups, act, width, dropout,
                           stem=stem, residual=residual)

    kind = "basic blocks" if residual else "plain blocks (no shortcuts)"
    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"CIFAR {name}: 3 stages of {n} {kind}, 6n+2 = {depth} layers."
    register_model(name, family="resnet")(build)


# He et al. 2016, Table 1: blocks per stage
IMAGENET_LAYOUTS = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


def _register_imagenet(depth: int, residual: bool) -> None:
    block, layers = IMAGENET_LAYOUTS[depth]
    name = f"{'resnet' if residual else 'plain'}{depth}"

    def build(num_classes: int = 1000, in_chans: int = 3, input_size=None, stem: str = "imagenet",
              norm: str = "bn", norm_groups: int = 32, act: str = "relu", width: float = 1.0,
              dropout: float = 0.0):
        return ResNet(block, layers, num_classes, in_chans, stem, norm, norm_groups, act, width,
                      dropout, residual=residual)

    kind = block.__name__ + ("s with projection shortcuts" if residual else "s, no shortcuts")
    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"ImageNet {name}: stages of {layers} {kind}."
    register_model(name, family="resnet", default_input=(3, 224, 224))(build)


for _depth in (8, 20, 32, 44, 56, 110):
    _register_cifar(_depth, residual=True)
for _depth in (20, 32, 44, 56, 110):  # He et al. 2016, sec. 4.2 / Fig. 6 left
    _register_cifar(_depth, residual=False)
for _depth in (18, 34, 50, 101, 152):
    _register_imagenet(_depth, residual=True)
for _depth in (18, 34):  # He et al. 2016, Table 2
    _register_imagenet(_depth, residual=False)
