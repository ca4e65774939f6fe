"""VGG (Simonyan & Zisserman 2015, "Very deep convolutional networks for large-scale image
recognition", ICLR): stacks of 3x3 stride-1 convolutions (padding 1) separated by five 2x2/2
max-pools, then FC 4096, 4096, classes with dropout 0.5 on the first two (sec. 3.1).
vgg11/13/16/19 are Table 1's configurations A, B, D and E (133M, 133M, 138M and 144M
parameters, Table 2).

Modules and parameter names match torchvision.models.vgg* (including its 7x7 adaptive average
pool before the classifier, an identity at 224x224) and its initialisation (He normal convs,
N(0, 0.01) linears), so default options give torchvision's vgg* and `norm=bn` gives its
vgg*_bn, parameter for parameter.
Options:
  norm     "none" by default (the paper has no normalisation); bn/gn/ln/in/lrn go after every
           conv, before the activation.
  lrn      local response normalisation after the first conv's activation: True with vgg11 is
           Table 1's configuration A-LRN (which, sec. 4.1, did not help).
  width    scales every conv's filters and the FC hidden units.
  dropout  on the outputs of the first two FC layers (0.5 in the paper).

cifar stem (small inputs): the conv stack is unchanged (five pools take 32x32 to 1x1; the pools
use ceil mode so 8x8 inputs still work), then global average pooling and a small classifier:
Linear(512w, 512w), activation, dropout, Linear(512w, classes) (w = width), since the 4096-unit
layers were sized for a 7x7x512 map.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.errors import UsageError
from cnnlab.models.registry import register_model
from cnnlab.models.layers import make_act, make_norm, scaled

# Simonyan & Zisserman 2015, Table 1; "M" is a 2x2/2 max-pool
CONFIGS = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
          512, 512, 512, 512, "M"],
}
_FC = 4096  # sec. 2.1
_MAP = 7  # 224 / 2**5
_CIFAR_FC = 512  # cifar stem: one 512-vector after global pooling feeds the classifier


class VGG(nn.Module):
    """features -> avgpool -> flatten -> classifier, named as torchvision's VGG."""

    def __init__(self, features: nn.Sequential, avgpool: nn.Module, classifier: nn.Sequential):
        super().__init__()
        self.features, self.avgpool, self.classifier = features, avgpool, classifier
        for m in self.modules():  # torchvision's VGG initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def build_vgg(config: str, num_classes: int = 1000, in_chans: int = 3, stem: str = "imagenet",
              norm: str = "none", norm_groups: int = 32, act: str = "relu", width: float = 1.0,
              dropout: float = 0.5, lrn: bool = False) -> VGG:
    if stem not in ("imagenet", "cifar"):
        raise UsageError(f"vgg stem: must be imagenet or cifar, not '{stem}'")
    layers: list[nn.Module] = []
    in_ch, n_convs = in_chans, 0
    for v in CONFIGS[config]:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=stem == "cifar"))
            continue
        out_ch = scaled(v, width)
        # conv bias kept even before a norm layer, as torchvision's vgg*_bn does
        layers.append(nn.Conv2d(in_ch, out_ch, 3, padding=1))
        if norm != "none":  # no Identity: keep module indices (and weight names) as torchvision's
            layers.append(make_norm(norm, out_ch, norm_groups))
        layers.append(make_act(act))
        if lrn and n_convs == 0:  # Table 1, A-LRN: after the first conv only
            layers.append(make_norm("lrn", out_ch))
        n_convs += 1
        in_ch = out_ch
    if stem == "cifar":
        hidden = scaled(_CIFAR_FC, width)
        return VGG(nn.Sequential(*layers), nn.AdaptiveAvgPool2d(1), nn.Sequential(
            nn.Linear(in_ch, hidden), make_act(act), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes)))
    hidden = scaled(_FC, width)
    return VGG(nn.Sequential(*layers), nn.AdaptiveAvgPool2d((_MAP, _MAP)), nn.Sequential(
        nn.Linear(in_ch * _MAP * _MAP, hidden), make_act(act), nn.Dropout(dropout),
        nn.Linear(hidden, hidden), make_act(act), nn.Dropout(dropout),
        nn.Linear(hidden, num_classes)))


def _register(name: str, config: str) -> None:
    def build(num_classes: int = 1000, in_chans: int = 3, input_size=None, stem: str = "imagenet",
              norm: str = "none", norm_groups: int = 32, act: str = "relu", width: float = 1.0,
              dropout: float = 0.5, lrn: bool = False):
        return build_vgg(config, num_classes, in_chans, stem, norm, norm_groups, act, width,
                         dropout, lrn)

    n_weight = sum(v != "M" for v in CONFIGS[config]) + 3
    build.__name__ = name
    build.__doc__ = (f"VGG configuration {config} (Simonyan & Zisserman 2015, Table 1): "
                     f"{n_weight} weight layers.")
    register_model(name, family="vgg", default_input=(3, 224, 224))(build)


for _name, _config in (("vgg11", "A"), ("vgg13", "B"), ("vgg16", "D"), ("vgg19", "E")):
    _register(_name, _config)
