"""Normalisation and activation factories shared by every family."""

from __future__ import annotations

import torch.nn as nn

from cnnlab.errors import UsageError

NORMS = ("bn", "gn", "ln", "in", "lrn", "none")
ACTS = ("relu", "tanh", "sigmoid", "gelu")


def make_norm(kind: str, channels: int, groups: int = 32) -> nn.Module:
    """A normalisation layer over `channels` feature maps."""
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "gn":  # Wu & He 2018; fall back to fewer groups when channels are few
        g = min(groups, channels)
        while channels % g:
            g -= 1
        return nn.GroupNorm(g, channels)
    if kind == "ln":  # layer norm over (C, H, W) is group norm with one group
        return nn.GroupNorm(1, channels)
    if kind == "in":  # instance norm is group norm with one channel per group
        return nn.GroupNorm(channels, channels)
    if kind == "lrn":
        # AlexNet sec. 3.3: n=5, alpha=1e-4, beta=0.75, k=2. PyTorch divides alpha by n (as
        # cuda-convnet and Caffe do) and the paper's formula does not, so pass alpha * n.
        return nn.LocalResponseNorm(5, alpha=1e-4 * 5, beta=0.75, k=2.0)
    if kind == "none":
        return nn.Identity()
    raise UsageError(f"unknown norm '{kind}'; choose from: {', '.join(NORMS)}")


def make_act(kind: str) -> nn.Module:
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "tanh":
        return nn.Tanh()
    if kind == "sigmoid":
        return nn.Sigmoid()
    if kind == "gelu":
        return nn.GELU()
    raise UsageError(f"unknown activation '{kind}'; choose from: {', '.join(ACTS)}")


def scaled(channels: int, width: float) -> int:
    """Channels times the width multiplier, at least 1."""
    return max(1, int(round(channels * width)))
