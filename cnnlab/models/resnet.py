"""CIFAR-style residual networks (He, Zhang, Ren & Sun 2016, "Deep residual learning", sec. 4.2).

A 3x3 stem with 16 channels, three stages of n basic blocks at 16/32/64 channels (strides 1, 2,
2), global average pooling and one linear layer: 6n + 2 weighted layers. Shortcuts that change
shape use the paper's option A for CIFAR (stride-2 subsampling and zero-padded channels, no
parameters), so resnet20 has the paper's 0.27M parameters.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlab.models import register_model
from cnnlab.models.layers import make_act, make_norm, scaled


class PadShortcut(nn.Module):
    """Option A: subsample by `stride` and zero-pad the new channels."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.stride, self.extra = stride, out_ch - in_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, norm: str, groups: int, act: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.norm1 = make_norm(norm, out_ch, groups)
        self.act1 = make_act(act)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.norm2 = make_norm(norm, out_ch, groups)
        self.act2 = make_act(act)
        self.shortcut = (nn.Identity() if stride == 1 and in_ch == out_ch
                         else PadShortcut(in_ch, out_ch, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth_n: int, num_classes: int, in_chans: int, norm: str = "bn",
                 norm_groups: int = 8, act: str = "relu", width: float = 1.0, dropout: float = 0.0):
        super().__init__()
        widths = [scaled(c, width) for c in (16, 32, 64)]
        self.stem = nn.Sequential(nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False),
                                  make_norm(norm, widths[0], norm_groups), make_act(act))
        blocks, in_ch = [], widths[0]
        for i, out_ch in enumerate(widths):
            for j in range(depth_n):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(BasicBlock(in_ch, out_ch, stride, norm, norm_groups, act))
                in_ch = out_ch
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(in_ch, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def _register(depth: int) -> None:
    n = (depth - 2) // 6

    def build(num_classes: int = 10, in_chans: int = 3, input_size=None, norm: str = "bn",
              norm_groups: int = 8, act: str = "relu", width: float = 1.0, dropout: float = 0.0):
        return CifarResNet(n, num_classes, in_chans, norm, norm_groups, act, width, dropout)

    build.__doc__ = f"CIFAR ResNet-{depth}: 3 stages of {n} basic blocks."
    register_model(f"resnet{depth}", family="resnet")(build)


for _depth in (8, 20, 32, 44, 56, 110):
    _register(_depth)
