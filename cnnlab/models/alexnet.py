"""AlexNet (Krizhevsky, Sutskever & Hinton 2012, "ImageNet classification with deep
convolutional neural networks", NeurIPS) and ZFNet (Zeiler & Fergus 2014, "Visualizing and
understanding convolutional networks", ECCV).

`alexnet` (variant "paper", input 3x227x227): conv 96 11x11/4, 256 5x5, 384 3x3, 384 3x3,
256 3x3, then FC 4096, 4096, classes; ReLU everywhere; local response normalisation after the
ReLU of conv1 and conv2; overlapping 3x3/2 max pooling after conv1, conv2 and conv5; dropout on
the outputs of the first two FC layers (sec. 4.2). 62,378,344 parameters (60,965,224 with
`groups=2`; the paper says "60 million").
Options:
  lrn       local response normalisation after conv1 and conv2 (sec. 3.3; size 5, alpha 1e-4,
            beta 0.75, k 2). None = the variant's own: on for "paper", off for "owt".
            nn.LocalResponseNorm divides alpha by the size, as cuda-convnet and Caffe do, and
            the paper's formula does not, so cnnlab's LRN passes alpha * 5 (layers.make_norm).
  pool      "overlap" = 3x3 stride 2 (sec. 3.4), "nonoverlap" = 2x2 stride 2 (the paper's
            comparison: overlapping pooling lowers the top-1 error by 0.4%).
  groups    2 = the paper's two-GPU split (sec. 3.2, Fig. 2): conv2, conv4 and conv5 only see
            the kernel maps on their own GPU; conv1, conv3 and the FC layers see all of them.
  variant   "paper" as above; "owt" = torchvision's alexnet (Krizhevsky 2014, "One weird
            trick for parallelizing convolutional neural networks"): 64-192-384-256-256
            filters, no LRN, dropout before fc6 and fc7; same modules and parameter names as
            torchvision.models.alexnet (61,100,840 parameters).
  norm      "none" by default (LRN is its own option); bn/gn/ln/in go after every conv,
            before the activation.
  width     scales every conv's filters and the FC hidden units.
Both variants end with AdaptiveAvgPool2d((6, 6)) as torchvision does, so other input sizes
work (the paper variant's maps are already 6x6 at 227x227, where it is an identity). Weights
are initialised He-normal where a ReLU follows (convs, fc6, fc7), N(0, 0.01) for the last
layer, zero biases (see _init_weights), not the paper's N(0, 0.01) everywhere with biases of 1.

`zfnet` (input 3x224x224, Zeiler & Fergus 2014, Fig. 3): AlexNet with a 7x7 stride-2 conv1 of
96 filters (the paper's fix for the aliasing it saw in AlexNet's 11x11/4 filters), a 5x5
stride-2 conv2 of 256, dense conv3-5 (384, 384, 256), 3x3/2 max pooling after conv1, conv2 and
conv5, and contrast normalisation across feature maps (LRN) after the pooling of layers 1 and 2
(the paper's order: relu, pool, normalise). Maps are 110, 55, 26, 13, 13, 13, 6 as in Fig. 3,
which needs ceil-mode pooling (Caffe's convention). 62,357,608 parameters. Options lrn, pool,
groups, norm and width work as for alexnet.

cifar stem (small inputs): conv1 becomes 3x3 stride 1 (ZFNet's conv2 becomes stride 1 too),
the three max-pools pad so 32x32 goes 16, 8, 4 (and 8x8 still reaches 1x1), global average
pooling replaces the 6x6 map, and the FC hidden layers shrink from 4096 to 512 units since they
see one 256-vector instead of 6x6x256. Filter counts, LRN, grouping and dropout are unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.errors import UsageError
from cnnlab.models.registry import register_model
from cnnlab.models.layers import make_act, make_norm, scaled

VARIANTS = ("paper", "owt")
POOLS = ("overlap", "nonoverlap")
STEMS = ("imagenet", "cifar")

# (filters, kernel, stride, padding, grouped on two GPUs, pool after)
_PAPER = [  # Krizhevsky et al. 2012, sec. 3.5 and Fig. 2 (conv1 padding 0 at 227x227 gives 55x55)
    (96, 11, 4, 0, False, True),
    (256, 5, 1, 2, True, True),  # sec. 3.5: conv2 sees only conv1's maps on its own GPU
    (384, 3, 1, 1, False, False),  # sec. 3.2: conv3 takes all of conv2's maps
    (384, 3, 1, 1, True, False),
    (256, 3, 1, 1, True, True),
]
_OWT = [  # Krizhevsky 2014, as in torchvision.models.alexnet
    (64, 11, 4, 2, False, True),
    (192, 5, 1, 2, True, True),
    (384, 3, 1, 1, False, False),
    (256, 3, 1, 1, True, False),
    (256, 3, 1, 1, True, True),
]
_ZF = [  # Zeiler & Fergus 2014, Fig. 3: 224 -> 110 -> (pool) 55 -> 26 -> (pool) 13 -> 6
    (96, 7, 2, 1, False, True),
    (256, 5, 2, 0, True, True),
    (384, 3, 1, 1, False, False),
    (384, 3, 1, 1, True, False),
    (256, 3, 1, 1, True, True),
]
_LRN_LAYERS = 2  # LRN after conv1 and conv2 (Krizhevsky et al. sec. 3.5; Zeiler & Fergus Fig. 3)
_FC = 4096  # Krizhevsky et al. sec. 3.5; Zeiler & Fergus Fig. 3
_CIFAR_FC = 512  # cifar stem: the FC layers see a 256-vector after global pooling, not 6x6x256
_MAP = 6  # the 6x6 map conv5 leaves at 227x227 (Krizhevsky) / 224x224 (Zeiler & Fergus)


class AlexNet(nn.Module):
    """features -> avgpool -> flatten -> classifier, named as torchvision's AlexNet."""

    def __init__(self, features: nn.Sequential, avgpool: nn.Module, classifier: nn.Sequential):
        super().__init__()
        self.features, self.avgpool, self.classifier = features, avgpool, classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _check(name: str, value, allowed) -> None:
    if value not in allowed:
        raise UsageError(f"{name}: must be one of {', '.join(map(str, allowed))}, not '{value}'")


def _pool(pool: str, stem: str, ceil: bool) -> nn.Module:
    if stem == "cifar":  # padded/ceil pooling: 32 -> 16 -> 8 -> 4, and 1x1 maps stay 1x1
        if pool == "overlap":
            return nn.MaxPool2d(3, 2, padding=1)
        return nn.MaxPool2d(2, 2, ceil_mode=True)
    k = 3 if pool == "overlap" else 2  # Krizhevsky et al. sec. 3.4: z=3, s=2 vs z=s=2
    return nn.MaxPool2d(k, 2, ceil_mode=ceil)


def _build(arch: str, spec, num_classes: int, in_chans: int, stem: str, norm: str,
           norm_groups: int, act: str, width: float, dropout: float, lrn: bool, pool: str,
           groups: int, variant: str) -> AlexNet:
    _check(f"{arch} stem", stem, STEMS)
    _check(f"{arch} pool", pool, POOLS)
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise UsageError(f"{arch} groups: must be a whole number >= 1, not '{groups}'")
    zf = arch == "zfnet"
    layers: list[nn.Module] = []
    in_ch = in_chans
    for i, (filters, k, s, p, grouped, pool_after) in enumerate(spec):
        # round up so every grouped conv splits its input and output maps evenly
        out_ch = -(-scaled(filters, width) // groups) * groups
        if stem == "cifar" and i == 0:
            k, s, p = 3, 1, 1  # 11x11/4 (7x7/2) would leave almost nothing of a 32x32 image
        if stem == "cifar" and zf and i == 1:
            s, p = 1, 2
        layers.append(nn.Conv2d(in_ch, out_ch, k, s, p, groups=groups if grouped else 1))
        if norm != "none":  # no Identity: keep module indices (and weight names) as torchvision's
            layers.append(make_norm(norm, out_ch, norm_groups))
        layers.append(make_act(act))
        lrn_here = lrn and i < _LRN_LAYERS
        if lrn_here and not zf:  # Krizhevsky et al. sec. 3.5: LRN after the ReLU, before pooling
            layers.append(make_norm("lrn", out_ch))
        if pool_after:
            layers.append(_pool(pool, stem, ceil=zf))
        if lrn_here and zf:  # Zeiler & Fergus Fig. 3: relu, pool, then contrast normalisation
            layers.append(make_norm("lrn", out_ch))
        in_ch = out_ch

    if stem == "cifar":
        avgpool, flat, hidden = nn.AdaptiveAvgPool2d(1), in_ch, scaled(_CIFAR_FC, width)
    else:
        avgpool, flat = nn.AdaptiveAvgPool2d((_MAP, _MAP)), in_ch * _MAP * _MAP
        hidden = scaled(_FC, width)
    if variant == "owt":  # torchvision: dropout on the inputs of fc6 and fc7
        classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(flat, hidden), make_act(act),
            nn.Dropout(dropout), nn.Linear(hidden, hidden), make_act(act),
            nn.Linear(hidden, num_classes))
    else:  # Krizhevsky et al. sec. 4.2, Zeiler & Fergus sec. 3: dropout on fc6 and fc7 outputs
        classifier = nn.Sequential(
            nn.Linear(flat, hidden), make_act(act), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), make_act(act), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes))
    model = AlexNet(nn.Sequential(*layers), avgpool, classifier)
    _init_weights(model)
    return model


def _init_weights(model: nn.Module) -> None:
    """He et al. 2015 normal init for every layer a ReLU follows (the convs, fan-out as
    torchvision initialises VGG; the hidden FC layers fc6 and fc7, fan-in), N(0, 0.01) for the
    last layer (the paper's std), zero biases.

    The paper's N(0, 0.01) for all FC layers suits fc6's 9,216 inputs (He's std there is
    sqrt(2 / 9216) = 0.0147), but it does not scale with width: at width 0.25 with the
    small-image stem fc6 sees 64 inputs, N(0, 0.01) shrinks the signal ~20x per layer, the logits
    come out near 1e-4 and plain SGD stays at chance (tests/models/test_models_alexnet_vgg.py checks the
    signal survives). With PyTorch's default init (uniform, gain 1/sqrt(3)) the signal also
    shrinks through these 8 unnormalised layers."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    for m in linears[:-1]:  # fc6, fc7: a ReLU follows
        nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(m.bias)
    nn.init.normal_(linears[-1].weight, 0, 0.01)
    nn.init.zeros_(linears[-1].bias)


@register_model("alexnet", family="alexnet", default_input=(3, 227, 227))
def alexnet(num_classes: int = 1000, in_chans: int = 3, input_size=None, stem: str = "imagenet",
            norm: str = "none", norm_groups: int = 32, act: str = "relu", width: float = 1.0,
            dropout: float = 0.5, lrn: bool | None = None, pool: str = "overlap",
            groups: int = 1, variant: str = "paper"):
    """Krizhevsky et al. 2012 (variant paper) or torchvision's one-weird-trick AlexNet (owt)."""
    _check("alexnet variant", variant, VARIANTS)
    if lrn is None:
        lrn = variant == "paper"  # Krizhevsky 2014 dropped LRN
    spec = _PAPER if variant == "paper" else _OWT
    return _build("alexnet", spec, num_classes, in_chans, stem, norm, norm_groups, act, width,
                  dropout, lrn, pool, groups, variant)


@register_model("zfnet", family="alexnet", default_input=(3, 224, 224))
def zfnet(num_classes: int = 1000, in_chans: int = 3, input_size=None, stem: str = "imagenet",
          norm: str = "none", norm_groups: int = 32, act: str = "relu", width: float = 1.0,
          dropout: float = 0.5, lrn: bool = True, pool: str = "overlap", groups: int = 1):
    """Zeiler & Fergus 2014, Fig. 3 (dense conv3-5; `groups=2` splits conv2, conv4, conv5)."""
    return _build("zfnet", _ZF, num_classes, in_chans, stem, norm, norm_groups, act, width,
                  dropout, lrn, pool, groups, "paper")
