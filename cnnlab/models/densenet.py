"""DenseNet-121 (Huang, Liu, van der Maaten & Weinberger 2017, "Densely connected convolutional
networks", Table 1): DenseNet-BC with growth rate k = 32 and dense blocks of 6, 12, 24 and 16
layers.

Every layer of a dense block sees the concatenation of all earlier feature maps of the block and
adds k new ones. A layer is BN-ReLU-conv 1x1 to 4k channels (the bottleneck, "DenseNet-B"), then
BN-ReLU-conv 3x3 to k channels (sec. 3, pre-activation ordering). Between blocks a transition
layer (BN-ReLU-conv 1x1, then 2x2 average pooling with stride 2) keeps floor(theta * m) of the m
channels, theta = 0.5 ("DenseNet-C"). The ImageNet stem is a 7x7/2 conv with 2k channels and a
3x3/2 max pool; after the last block come BN-ReLU, global average pooling and one linear layer.
At default options the parameter count equals torchvision.models.densenet121().

Options:
- `growth_rate` (k, default 32; the paper's CIFAR DenseNet-BC uses 12 or 24). `width` scales k.
- `bottleneck=False` drops the 1x1 bottleneck (a plain DenseNet layer: BN-ReLU-conv 3x3).
- `compression` (theta, default 0.5; 1.0 keeps every channel at the transitions).
- `dropout` is applied to each layer's new feature maps, as torchvision's drop_rate (sec. 4.2
  of the paper uses 0.2 after each conv on CIFAR without data augmentation); default 0.
- `memory_efficient=True` recomputes each layer's concatenation, norm and 1x1 conv in the
  backward pass (gradient checkpointing, Pleiss et al. 2017) instead of storing it: slower, but
  activation memory grows linearly rather than quadratically with block depth.
- `norm` defaults to "bn"; convs have no bias because a norm follows them (with norm none or lrn
  they get one back).

The cifar stem replaces the 7x7/2 conv and the max pool by one 3x3 stride-1 conv with 2k
channels, so the four blocks run at 32, 16, 8 and 4 pixels for a 32x32 input. Transitions pool
with ceil_mode, which changes nothing for the even sizes of 224 inputs and lets odd and 1x1 maps
through (an 8x8 input reaches the last block at 1x1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from torch import nn

from cnnlab.errors import UsageError
from cnnlab.models.registry import register_model
from cnnlab.models.layers import make_act, make_norm, scaled


class DenseLayer(nn.Module):
    def __init__(self, in_ch: int, growth: int, bn_size: int, bottleneck: bool, dropout: float,
                 norm: str, groups: int, act: str, memory_efficient: bool):
        super().__init__()
        bias = norm in ("none", "lrn")
        self.norm1, self.act1 = make_norm(norm, in_ch, groups), make_act(act)
        if bottleneck:  # Huang et al. 2017, sec. 3 "Bottleneck layers": 1x1 conv to 4k maps
            mid = bn_size * growth
            self.conv1 = nn.Conv2d(in_ch, mid, 1, bias=bias)
            self.norm2, self.act2 = make_norm(norm, mid, groups), make_act(act)
            self.conv2 = nn.Conv2d(mid, growth, 3, padding=1, bias=bias)
        else:
            self.conv1 = nn.Conv2d(in_ch, growth, 3, padding=1, bias=bias)
            self.conv2 = None
        self.dropout, self.memory_efficient = dropout, memory_efficient

    def _first(self, *features: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.act1(self.norm1(torch.cat(features, 1))))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        if self.memory_efficient and torch.is_grad_enabled() and any(
                f.requires_grad for f in features):
            out = cp.checkpoint(self._first, *features, use_reentrant=False)
        else:
            out = self._first(*features)
        if self.conv2 is not None:
            out = self.conv2(self.act2(self.norm2(out)))
        if self.dropout > 0:
            out = F.dropout(out, p=self.dropout, training=self.training)
        return out


class DenseBlock(nn.ModuleList):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # a list of maps, concatenated once per layer, instead of a growing tensor copied twice
        features = [x]
        for layer in self:
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, norm: str, groups: int, act: str):
        super().__init__(
            make_norm(norm, in_ch, groups), make_act(act),
            nn.Conv2d(in_ch, out_ch, 1, bias=norm in ("none", "lrn")),
            nn.AvgPool2d(2, stride=2, ceil_mode=True))  # sec. 3: 2x2 average pooling


class DenseNet(nn.Module):
    def __init__(self, blocks: tuple[int, ...], growth: int, num_classes: int, in_chans: int,
                 stem: str, norm: str, norm_groups: int, act: str, dropout: float,
                 bottleneck: bool, compression: float, memory_efficient: bool, bn_size: int = 4):
        super().__init__()
        ch = 2 * growth  # sec. 3 "Implementation details": 2k convolutions in the first layer
        bias = norm in ("none", "lrn")
        if stem == "imagenet":  # Table 1: 7x7 conv stride 2, 3x3 max pool stride 2
            layers = [nn.Conv2d(in_chans, ch, 7, 2, 3, bias=bias), make_norm(norm, ch, norm_groups),
                      make_act(act), nn.MaxPool2d(3, stride=2, padding=1)]
        elif stem == "cifar":
            layers = [nn.Conv2d(in_chans, ch, 3, 1, 1, bias=bias), make_norm(norm, ch, norm_groups),
                      make_act(act)]
        else:
            raise UsageError(f"densenet: stem must be imagenet or cifar, not '{stem}'")
        for i, n in enumerate(blocks):
            block = DenseBlock()
            for _ in range(n):
                block.append(DenseLayer(ch, growth, bn_size, bottleneck, dropout, norm,
                                        norm_groups, act, memory_efficient))
                ch += growth
            layers.append(block)
            if i < len(blocks) - 1:
                out_ch = int(compression * ch)  # sec. 3 "Compression": floor(theta * m)
                layers.append(Transition(ch, out_ch, norm, norm_groups, act))
                ch = out_ch
        layers += [make_norm(norm, ch, norm_groups), make_act(act)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(ch, num_classes))
        for m in self.modules():  # as torchvision's DenseNet
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register_model("densenet121", family="densenet", default_input=(3, 224, 224))
def densenet121(num_classes: int = 1000, in_chans: int = 3, input_size=None,
                stem: str = "imagenet", norm: str = "bn", norm_groups: int = 32,
                act: str = "relu", width: float = 1.0, dropout: float = 0.0,
                growth_rate: int = 32, bottleneck: bool = True, compression: float = 0.5,
                memory_efficient: bool = False):
    """DenseNet-121 (DenseNet-BC, k=32, blocks 6-12-24-16); see the module docstring."""
    if not (isinstance(growth_rate, int) and growth_rate >= 1):
        raise UsageError(f"densenet121: growth_rate must be a positive integer, not '{growth_rate}'")
    if not 0 < compression <= 1:
        raise UsageError(f"densenet121: compression must be in (0, 1], not '{compression}'")
    # Huang et al. 2017, Table 1: DenseNet-121 has 6, 12, 24 and 16 layers per block
    return DenseNet((6, 12, 24, 16), scaled(growth_rate, width), num_classes, in_chans, stem,
                    norm, norm_groups, act, dropout, bool(bottleneck), compression,
                    bool(memory_efficient))
