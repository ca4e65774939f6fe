"""LeNet-5 (LeCun, Bottou, Bengio & Haffner 1998, "Gradient-based learning applied to document
recognition"): C1 5x5x6, S2, C3 5x5x16, S4, C5 5x5x120, F6 84, output.

The paper feeds 32x32 inputs (MNIST's 28x28 digits padded with background), so smaller inputs
are padded to 32x32 here by repeating their border pixels (the background; a zero pad would be
the dataset mean after normalisation); larger ones are average-pooled to 1x1 after C5. Defaults follow the paper (tanh,
average pooling); `act=relu pool=max` gives the modern variant. C3 is fully connected to S2
(the paper's sparse connection table is a 1998 compute saving, not kept).
"""

from __future__ import annotations

import torch.nn as nn

from cnnlab.models.registry import register_model
from cnnlab.models.layers import make_act, make_norm, scaled


@register_model("lenet5", family="lenet", default_input=(1, 32, 32))
def lenet5(num_classes: int = 10, in_chans: int = 1, input_size=None, act: str = "tanh",
           pool: str = "avg", norm: str = "none", norm_groups: int = 2, width: float = 1.0,
           dropout: float = 0.0):
    c1, c3, c5, f6 = (scaled(c, width) for c in (6, 16, 120, 84))
    h, w = input_size or (32, 32)
    pad_h, pad_w = max(0, 32 - h), max(0, 32 - w)
    pool_layer = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}.get(pool)
    if pool_layer is None:
        from cnnlab.errors import UsageError

        raise UsageError(f"lenet5: pool must be avg or max, not '{pool}'")
    return nn.Sequential(
        nn.ReplicationPad2d((pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)),
        nn.Conv2d(in_chans, c1, 5), make_norm(norm, c1, norm_groups), make_act(act), pool_layer(2),
        nn.Conv2d(c1, c3, 5), make_norm(norm, c3, norm_groups), make_act(act), pool_layer(2),
        nn.Conv2d(c3, c5, 5), make_act(act),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(c5, f6), make_act(act), nn.Dropout(dropout),
        nn.Linear(f6, num_classes),
    )
