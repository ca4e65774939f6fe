"""GoogLeNet / Inception v1 (Szegedy et al. 2015, "Going deeper with convolutions", Table 1).

A 7x7/2 conv, 3x3/2 max pool, a 1x1 reduce and a 3x3 conv to 192 channels, 3x3/2 max pool,
inception modules 3a-3b, max pool, 4a-4e, max pool, 5a-5b, global average pooling, 40% dropout
and one linear classifier. Each inception module (Figure 2b) concatenates four branches: a 1x1
conv, a 1x1 reduction then 3x3 conv, a 1x1 reduction then 5x5 conv, and a 3x3/1 max pool then a
1x1 projection.

Options:
- `bottleneck=False` builds the naive module of Figure 2a instead: the 1x1, 3x3 and 5x5 convs
  straight on the input and the max-pool branch with no projection, so every module's output
  grows by its input channels (3a: 64+128+32+192 = 416, ...). It exists to show what the 1x1
  reductions save; parameters and compute are several times larger.
- `aux=True` adds the two auxiliary classifiers on 4a and 4d (sec. 5: 5x5/3 average pool to
  4x4, 1x1 conv to 128, FC 1024, 70% dropout, linear). In training mode the forward then returns
  `GoogLeNetOutputs(logits, aux1, aux2)` (the paper adds the auxiliary losses with weight 0.3);
  in eval mode, and always when aux=False, it returns the logits alone, as torchvision does.
- `variant="torchvision"` reproduces torchvision's googlenet, whose "5x5" branch is a 3x3 conv
  (a known bug kept for its pretrained weights, pytorch/vision#906); its parameter count then
  equals torchvision.models.googlenet(aux_logits=aux). The default `variant="paper"` uses 5x5.
- `norm` defaults to "bn": every conv is conv-BN-ReLU with eps 0.001 and no conv bias, as in
  torchvision's BasicConv2d. The paper had no batch norm (it predates it) and used local response
  normalisation twice in the stem instead; that is not reproduced. With norm none or lrn the
  convs get their biases back, since nothing after them shifts.

The cifar stem replaces the 7x7/2 conv by a 3x3 stride-1 conv and drops the two stem max pools,
so 3a-3b see 32x32, 4a-4e 16x16 and 5a-5b 8x8 maps for a 32x32 input (the max pools between the
inception groups stay). Global average pooling already makes the head size-independent, and the
auxiliary heads pool adaptively to 4x4 so they run on any size.

Module 3a alone is also registered as the block `inception` (input 192x28x28) for
`cnnlab models show inception [bottleneck=false]`: 128M multiply-adds (Table 1) against 303M.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from cnnlab.errors import UsageError
from cnnlab.models.registry import register_model
from cnnlab.models.layers import make_act, make_norm, scaled

# Szegedy et al. 2015, Table 1: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj
INCEPTION_CFG = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}
VARIANTS = ("paper", "torchvision")


class GoogLeNetOutputs(NamedTuple):
    """Training-mode outputs with aux=True; the loss is logits + 0.3 * (aux1 + aux2) (sec. 5)."""

    logits: torch.Tensor
    aux1: torch.Tensor
    aux2: torch.Tensor


class ConvNormAct(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, norm: str = "bn",
                 groups: int = 32, act: str = "relu"):
        norm_layer = make_norm(norm, out_ch, groups)
        if isinstance(norm_layer, nn.BatchNorm2d):
            norm_layer.eps = 1e-3  # torchvision's BasicConv2d (from the TF Inception port)
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, bias=norm in ("none", "lrn")),
            norm_layer, make_act(act))


class Inception(nn.Module):
    """One inception module: Figure 2b with `bottleneck`, the naive Figure 2a without.

    Channel arguments follow Table 1's columns; the naive module ignores the reductions and the
    pool projection, so its pool branch passes all `in_ch` input channels through.
    """

    def __init__(self, in_ch: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, pool_proj: int,
                 bottleneck: bool = True, kernel5: int = 5, norm: str = "bn", groups: int = 32,
                 act: str = "relu"):
        super().__init__()

        def conv(i, o, k):
            return ConvNormAct(i, o, k, 1, norm, groups, act)

        # ceil_mode as torchvision; with stride 1 and padding 1 it changes nothing
        pool = nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True)
        self.branch1 = conv(in_ch, c1, 1)
        if bottleneck:
            self.branch2 = nn.Sequential(conv(in_ch, c3r, 1), conv(c3r, c3, 3))
            self.branch3 = nn.Sequential(conv(in_ch, c5r, 1), conv(c5r, c5, kernel5))
            self.branch4 = nn.Sequential(pool, conv(in_ch, pool_proj, 1))
            self.out_channels = c1 + c3 + c5 + pool_proj
        else:
            self.branch2 = conv(in_ch, c3, 3)
            self.branch3 = conv(in_ch, c5, kernel5)
            self.branch4 = pool
            self.out_channels = c1 + c3 + c5 + in_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    """Auxiliary classifier, Szegedy et al. 2015, sec. 5."""

    def __init__(self, in_ch: int, num_classes: int, width: float, norm: str, groups: int,
                 act: str):
        super().__init__()
        red, hidden = scaled(128, width), scaled(1024, width)  # sec. 5: 128 filters, 1024 units
        # 5x5/3 average pooling gives 4x4 on the 14x14 maps of 4a/4d; adaptive keeps 4x4 anywhere
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.conv = ConvNormAct(in_ch, red, 1, 1, norm, groups, act)
        self.fc1 = nn.Linear(red * 16, hidden)
        self.act = make_act(act)
        self.dropout = nn.Dropout(0.7)  # sec. 5: 70% ratio of dropped outputs
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.conv(self.pool(x)), 1)
        return self.fc2(self.dropout(self.act(self.fc1(x))))


class GoogLeNet(nn.Module):
    def __init__(self, num_classes: int, in_chans: int, stem: str, norm: str, norm_groups: int,
                 act: str, width: float, dropout: float, bottleneck: bool, aux: bool,
                 kernel5: int):
        super().__init__()
        if stem not in ("imagenet", "cifar"):
            raise UsageError(f"googlenet: stem must be imagenet or cifar, not '{stem}'")
        c64, c192 = scaled(64, width), scaled(192, width)

        def conv(i, o, k, s=1):
            return ConvNormAct(i, o, k, s, norm, norm_groups, act)

        def maxpool():  # Table 1: 3x3/2 max pools; ceil_mode as torchvision (112 -> 56, 14 -> 7)
            return nn.MaxPool2d(3, stride=2, ceil_mode=True)

        if stem == "imagenet":  # Table 1: conv 7x7/2, max pool, conv 3x3 (1x1 reduce 64), max pool
            self.stem = nn.Sequential(conv(in_chans, c64, 7, 2), maxpool(), conv(c64, c64, 1),
                                      conv(c64, c192, 3), maxpool())
        else:
            self.stem = nn.Sequential(conv(in_chans, c64, 3), conv(c64, c64, 1),
                                      conv(c64, c192, 3))

        ch, out = c192, {}
        for name, cfg in INCEPTION_CFG.items():
            module = Inception(ch, *(scaled(c, width) for c in cfg), bottleneck=bottleneck,
                               kernel5=kernel5, norm=norm, groups=norm_groups, act=act)
            setattr(self, f"inception{name}", module)
            ch = out[name] = module.out_channels
        self.maxpool3, self.maxpool4 = maxpool(), maxpool()  # after 3b and after 4e

        self.aux = aux
        if aux:
            self.aux1 = InceptionAux(out["4a"], num_classes, width, norm, norm_groups, act)
            self.aux2 = InceptionAux(out["4d"], num_classes, width, norm, norm_groups, act)
        # Table 1: avg pool 7x7/1 then dropout (40%) and linear; adaptive for any input size
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(ch, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor):
        x = self.stem(x)
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        with_aux = self.aux and self.training
        aux1 = self.aux1(x) if with_aux else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if with_aux else None
        x = self.maxpool4(self.inception4e(x))
        logits = self.head(self.inception5b(self.inception5a(x)))
        if with_aux:
            return GoogLeNetOutputs(logits, aux1, aux2)
        return logits


@register_model("googlenet", family="googlenet", default_input=(3, 224, 224))
def googlenet(num_classes: int = 1000, in_chans: int = 3, input_size=None,
              stem: str = "imagenet", norm: str = "bn", norm_groups: int = 32,
              act: str = "relu", width: float = 1.0,
              dropout: float = 0.4,  # Szegedy et al. 2015, sec. 5: 40% before the classifier
              bottleneck: bool = True, aux: bool = False, variant: str = "paper"):
    """GoogLeNet (Inception v1); see the module docstring for the options."""
    if variant not in VARIANTS:
        raise UsageError(f"googlenet: variant must be one of {', '.join(VARIANTS)}, not '{variant}'")
    kernel5 = 5 if variant == "paper" else 3  # pytorch/vision#906: torchvision's 5x5 is a 3x3
    return GoogLeNet(num_classes, in_chans, stem, norm, norm_groups, act, width, dropout,
                     bool(bottleneck), bool(aux), kernel5)


@register_model("inception", family="block", default_input=(192, 28, 28), kind="block")
def inception(num_classes: int = 0, in_chans: int = 192, input_size=None,
              bottleneck: bool = True, norm: str = "bn", norm_groups: int = 32,
              act: str = "relu"):
    """Inception module 3a (Table 1: 128M multiply-adds on 28x28x192); bottleneck=False is the
    naive Figure 2a module (303M, and 416 output channels instead of 256)."""
    return Inception(in_chans, *INCEPTION_CFG["3a"], bottleneck=bool(bottleneck), norm=norm,
                     groups=norm_groups, act=act)
