"""MobileNetV2 (Sandler, Howard, Zhu, Zhmoginov & Chen 2018, "MobileNetV2: Inverted residuals
and linear bottlenecks").

A 3x3 stride-2 stem with 32 channels, the 17 inverted-residual bottlenecks of Table 2 (1x1
expansion by t, 3x3 depthwise conv, linear 1x1 projection with no activation after it; an
identity shortcut when stride is 1 and the channel count is unchanged), a 1x1 conv to 1280
channels, global average pooling, dropout and one linear layer. The module tree and parameter
names follow torchvision's `mobilenet_v2` (features.N..., classifier.1), so at default options
`stem=imagenet` has exactly torchvision's 3,504,872 parameters (the paper's Table 4 rounds to 3.4M).

Options:
- `width`: the width multiplier alpha. Every channel count is multiplied by it and rounded to
  the nearest multiple of 8 (never below 8, never more than 10% down), as torchvision's
  `_make_divisible` does; the last 1x1 conv keeps 1280 channels for width < 1 (sec. 5.1).
- `act`: "relu6" (the paper's, default) or any `make_act` kind (relu, tanh, sigmoid, gelu).
  ReLU6 is built here because cnnlab's shared factory does not offer it.
- `expansion`: the expansion factor t of every bottleneck except the first (Table 2: 6; the
  first bottleneck keeps t=1 as in the paper).
- `dropout`: before the classifier (torchvision's default 0.2).
- `norm`/`norm_groups`: every BatchNorm after a conv is `make_norm(norm, ...)`.

`stem="cifar"` (32x32 inputs): the first conv has stride 1 instead of 2, and the first
bottleneck of the 24-channel stage (Table 2, third row; the network's second stride-2 layer,
counting the stem conv as the first) has stride 1 instead of 2, as in the common CIFAR
adaptation of MobileNetV2 (e.g. kuangliu/pytorch-cifar). The total
stride drops from 32 to 8, so a 32x32 input ends in 4x4 maps before global average pooling
(an 8x8 input ends in 1x1). Nothing else changes, so the parameter count is the same.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.errors import UsageError
from cnnlab.models.registry import register_model
from cnnlab.models.layers import make_act, make_norm

# Sandler et al. 2018, Table 2: expansion t, output channels c, repeats n, first stride s
MOBILENET_V2_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round to the nearest multiple of `divisor`, at least `divisor`, and not below 90% of
    `value` (torchvision's and the TF reference's `_make_divisible`)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def act_layer(kind: str) -> nn.Module:
    """ReLU6 (not in the shared factory) or any `make_act` kind."""
    if kind == "relu6":
        return nn.ReLU6(inplace=True)
    return make_act(kind)


def conv_norm_act(in_ch: int, out_ch: int, kernel: int, stride: int, groups: int, norm: str,
                  norm_groups: int, act: str) -> nn.Sequential:
    """Conv (no bias: a norm follows) + norm + activation, indexed 0/1/2 like torchvision."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        make_norm(norm, out_ch, norm_groups), act_layer(act))


class InvertedResidual(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, expand: int, norm: str,
                 norm_groups: int, act: str):
        super().__init__()
        hidden = in_ch * expand
        self.use_res = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_norm_act(in_ch, hidden, 1, 1, 1, norm, norm_groups, act))
        layers += [
            conv_norm_act(hidden, hidden, 3, stride, hidden, norm, norm_groups, act),
            # sec. 3.2: linear bottleneck, no activation after the projection
            nn.Conv2d(hidden, out_ch, 1, 1, 0, bias=False),
            make_norm(norm, out_ch, norm_groups),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int, in_chans: int, stem: str, norm: str, norm_groups: int,
                 act: str, width: float, dropout: float, expansion: int):
        super().__init__()
        in_ch = make_divisible(32 * width)  # Table 2: 32-channel stem
        last = make_divisible(1280 * max(1.0, width))  # sec. 5.1: 1280 kept for alpha < 1
        cifar = stem == "cifar"
        features: list[nn.Module] = [
            conv_norm_act(in_chans, in_ch, 3, 1 if cifar else 2, 1, norm, norm_groups, act)]
        for row, (t, c, n, s) in enumerate(MOBILENET_V2_SETTING):
            out_ch = make_divisible(c * width)
            t = t if row == 0 else expansion
            if cifar and row == 1:  # keep 32x32 inputs at 16x16 through the 24-channel stage
                s = 1
            for i in range(n):
                features.append(InvertedResidual(in_ch, out_ch, s if i == 0 else 1, t, norm,
                                                 norm_groups, act))
                in_ch = out_ch
        features.append(conv_norm_act(in_ch, last, 1, 1, 1, norm, norm_groups, act))
        self.features = nn.Sequential(*features)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


@register_model("mobilenet_v2", family="mobilenet", default_input=(3, 224, 224))
def mobilenet_v2(num_classes: int = 1000, in_chans: int = 3, input_size=None,
                 stem: str = "imagenet", norm: str = "bn", norm_groups: int = 32,
                 act: str = "relu6", width: float = 1.0, dropout: float = 0.2,
                 expansion: int = 6):
    """MobileNetV2 (Sandler et al. 2018, Table 2); torchvision's layout and parameter names."""
    if stem not in ("imagenet", "cifar"):
        raise UsageError(f"mobilenet_v2: stem must be imagenet or cifar, not '{stem}'")
    if not width > 0:
        raise UsageError(f"mobilenet_v2: width must be positive, not {width}")
    if int(expansion) != expansion or expansion < 1:
        raise UsageError(f"mobilenet_v2: expansion must be a whole number >= 1, not {expansion}")
    return MobileNetV2(num_classes, in_chans, stem, norm, norm_groups, act, width, dropout,
                       int(expansion))
