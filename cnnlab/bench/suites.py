"""Layer suites for bench-conv: the conv layer shapes of well-known networks, and custom shapes.

A layer is (name, C, H, W, K, R, S, stride, pad); the batch N is chosen at run time. Suites list
unique shapes only (VGG-16's 13 conv layers have 9 distinct shapes; the names say which layers
share one).
"""

from __future__ import annotations

from typing import NamedTuple

from cnnlab.errors import UsageError


class Layer(NamedTuple):
    name: str
    C: int
    H: int
    W: int
    K: int
    R: int
    S: int
    stride: int
    pad: int

    def out_hw(self) -> tuple[int, int]:
        return ((self.H + 2 * self.pad - self.R) // self.stride + 1,
                (self.W + 2 * self.pad - self.S) // self.stride + 1)


def _sq(name, c, hw, k, r, stride=1, pad=None):
    return Layer(name, c, hw, hw, k, r, r, stride, r // 2 if pad is None else pad)


SUITES: dict[str, list[Layer]] = {
    # Simonyan & Zisserman 2015, Table 1 config D, 224x224 input: 3x3 pad 1 everywhere
    "vgg16": [
        _sq("conv1_1", 3, 224, 64, 3), _sq("conv1_2", 64, 224, 64, 3),
        _sq("conv2_1", 64, 112, 128, 3), _sq("conv2_2", 128, 112, 128, 3),
        _sq("conv3_1", 128, 56, 256, 3), _sq("conv3_2-3", 256, 56, 256, 3),
        _sq("conv4_1", 256, 28, 512, 3), _sq("conv4_2-3", 512, 28, 512, 3),
        _sq("conv5_1-3", 512, 14, 512, 3),
    ],
    # He et al. 2016 (Table 1, 224x224), torchvision's v1.5 layout (stride on the 3x3): the
    # unique conv shapes of the stem and of each stage's bottleneck
    "resnet50": [
        _sq("conv1", 3, 224, 64, 7, 2, 3),
        _sq("conv2_x.1x1a", 64, 56, 64, 1), _sq("conv2_x.3x3", 64, 56, 64, 3),
        _sq("conv2_x.1x1b", 64, 56, 256, 1), _sq("conv2_x.1x1in", 256, 56, 64, 1),
        _sq("conv3_1.3x3s2", 128, 56, 128, 3, 2), _sq("conv3_x.3x3", 128, 28, 128, 3),
        _sq("conv3_x.1x1b", 128, 28, 512, 1), _sq("conv3_x.1x1in", 512, 28, 128, 1),
        _sq("conv4_1.3x3s2", 256, 28, 256, 3, 2), _sq("conv4_x.3x3", 256, 14, 256, 3),
        _sq("conv4_x.1x1b", 256, 14, 1024, 1), _sq("conv4_x.1x1in", 1024, 14, 256, 1),
        _sq("conv5_1.3x3s2", 512, 14, 512, 3, 2), _sq("conv5_x.3x3", 512, 7, 512, 3),
        _sq("conv5_x.1x1b", 512, 7, 2048, 1), _sq("conv5_x.1x1in", 2048, 7, 512, 1),
    ],
    # torchvision's AlexNet (the single-tower variant, 224x224 input)
    "alexnet": [
        _sq("conv1", 3, 224, 64, 11, 4, 2), _sq("conv2", 64, 27, 192, 5),
        _sq("conv3", 192, 13, 384, 3), _sq("conv4", 384, 13, 256, 3),
        _sq("conv5", 256, 13, 256, 3),
    ],
    # soumith/convnet-benchmarks README, layer-wise table (batch 128 there): stride 1, no pad
    "convnet-benchmarks": [
        _sq("L1", 3, 128, 96, 11, 1, 0), _sq("L2", 64, 64, 128, 9, 1, 0),
        _sq("L3", 128, 32, 128, 9, 1, 0), _sq("L4", 128, 16, 128, 7, 1, 0),
        _sq("L5", 384, 13, 384, 3, 1, 0),
    ],
}


def parse_shape(text: str) -> tuple[int, Layer]:
    """'N,C,H,W,K,R,S,stride,pad' -> (N, Layer); UsageError on anything else."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 9:
        raise UsageError(f"--shape takes nine integers N,C,H,W,K,R,S,stride,pad; got '{text}'")
    n, c, h, w, k, r, s, stride, pad = values
    if min(n, c, h, w, k, r, s, stride) < 1 or pad < 0:
        raise UsageError(f"--shape '{text}': sizes and stride must be at least 1, pad 0 or more")
    if h + 2 * pad < r or w + 2 * pad < s:
        raise UsageError(f"--shape '{text}': the {r}x{s} filter is larger than the padded "
                         f"{h + 2 * pad}x{w + 2 * pad} input")
    return n, Layer(f"{c}x{h}x{w}>{k}@{r}x{s}/s{stride}p{pad}", c, h, w, k, r, s, stride, pad)


def layers(suite: str, shapes=None) -> list[tuple[int | None, Layer]]:
    """(batch or None, Layer) pairs: the custom shapes if given (strings or 9-int sequences),
    else the suite's layers with batch None (the run's --batch)."""
    if shapes:
        return [parse_shape(",".join(str(v) for v in s) if not isinstance(s, str) else s)
                for s in shapes]
    if suite not in SUITES:
        raise UsageError(f"unknown suite '{suite}'; suites: {', '.join(SUITES)} (or --shape)")
    return [(None, layer) for layer in SUITES[suite]]


def shrink(layer: Layer, factor: int = 4) -> Layer:
    """--quick: the same layer on a map `factor` times smaller per side (at least the filter)."""
    h = max(layer.H // factor, layer.R)
    w = max(layer.W // factor, layer.S)
    return layer._replace(H=h, W=w)
