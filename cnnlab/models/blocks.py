"""Building blocks to inspect with `cnnlab models show` (not classifiers; `cnnlab train` refuses them).

They make the lecture's layer arithmetic checkable: a single convolution's output size
(W - F + 2P)/S + 1 and weight count k*k*Cin*Cout (40x50x128 -> 3x3 conv -> 64 channels: 73,728
weights, whatever the padding and stride), and stacked 3x3 convolutions against one larger filter
(three 3x3 layers see 7x7 with 27C^2 weights; one 7x7 layer needs 49C^2).
"""

from __future__ import annotations

import torch.nn as nn

from cnnlab.models.registry import register_model
from cnnlab.models.layers import make_act


@register_model("conv", family="block", default_input=(128, 40, 50), kind="block")
def conv(num_classes: int = 0, in_chans: int = 128, input_size=None, out: int = 64, kernel: int = 3,
         stride: int = 1, padding: int = 1, bias: bool = False):
    """One convolution layer."""
    return nn.Sequential(nn.Conv2d(in_chans, out, kernel, stride, padding, bias=bias))


@register_model("stack3x3", family="block", default_input=(64, 56, 56), kind="block")
def stack3x3(num_classes: int = 0, in_chans: int = 64, input_size=None, depth: int = 3,
             act: str = "relu"):
    """`depth` stacked 3x3 convolutions with C channels (VGG's design), a non-linearity after each."""
    layers = []
    for _ in range(depth):
        layers += [nn.Conv2d(in_chans, in_chans, 3, 1, 1, bias=False), make_act(act)]
    return nn.Sequential(*layers)


@register_model("conv7x7", family="block", default_input=(64, 56, 56), kind="block")
def conv7x7(num_classes: int = 0, in_chans: int = 64, input_size=None, act: str = "relu"):
    """One 7x7 convolution with C channels: the same receptive field as three stacked 3x3."""
    return nn.Sequential(nn.Conv2d(in_chans, in_chans, 7, 1, 3, bias=False), make_act(act))
