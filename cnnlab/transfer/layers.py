"""The parts of a network that transfer strategies act on: its layers in order, its head, what
is frozen, and which learning rate each parameter gets; plus the input adapter in front of it.

Layers ("units")
    `units(model)` lists a network's parameterised top-level parts from input to output, with
    the containers cnnlab's families use for a trunk (`blocks`, `stages`, `features`) and for a
    classifier (`classifier`, `head`) opened one level: ResNet-18 gives stem, stages.0-3 and
    head.3 (the final Linear); EfficientNet-Lite0 its stem, 16 MBConv blocks, the 1x1 head conv
    and the classifier; VGG its eight convs and three Linears. A bare normalisation layer joins
    the unit before it (densenet's final BatchNorm belongs to its last dense block). The last
    unit is the head: it must be a Linear (`replace_head` swaps it for a new one sized for the
    target's classes). Auxiliary classifiers (children named aux*) are not units: their last
    Linear is replaced as well, and they train whenever the head does.

Freezing
    `freeze(module)` turns off gradients and pins every normalisation layer inside to eval mode
    (a frozen BatchNorm keeps its running statistics: with `requires_grad=False` alone,
    `model.train()` would still update them from the target's batches).

Discriminative learning rates
    `lr_multipliers(units, mults)`: mults[0] is the head's; the backbone's units, from the top
    down, are split into len(mults) - 1 contiguous groups as evenly as possible (upper groups
    take the remainder), group i getting mults[i + 1]. [1.0, 0.1, 0.01] on ResNet-18's five
    backbone units gives the head 1, stages.1-3 0.1 and stem + stages.0 0.01. Howard & Ruder
    2018 (ULMFiT) and CS231n's transfer-learning notes give the same advice.

Input adapter
    `InputAdapter` sits in front of a source network so target data fits it: the loader's
    batches (standardised with the target's statistics, at the target's size) are mapped back to
    [0, 1] pixels, grey is repeated to three channels when the source is RGB, the batch is
    resized (bilinear, antialiased) to the source's side, and normalised with the source's
    statistics (ImageNet's for ImageNet weights; the source run's training-split statistics for a
    cnnlab run). RGB targets for a grey source become grey (ITU-R BT.601 luma).
"""

from __future__ import annotations

import types
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import UsageError

TRUNKS = ("blocks", "stages", "features")
HEADS = ("classifier", "head")
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def _has_params(m: nn.Module) -> bool:
    return any(True for _ in m.parameters())


def units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(dotted name, module) of the network's layers in order, the head last (see above)."""
    found: list[tuple[str, list[nn.Module]]] = []
    for name, child in model.named_children():
        if name.startswith("aux") or not _has_params(child):
            continue
        container = isinstance(child, (nn.Sequential, nn.ModuleList)) and len(child) > 1
        if container and name in TRUNKS + HEADS:
            parts = [(f"{name}.{n}", c) for n, c in child.named_children() if _has_params(c)]
        else:
            parts = [(name, child)]
        for part_name, part in parts:
            if found and isinstance(part, NORMS):
                found[-1][1].append(part)  # a norm layer belongs to the layer before it
            else:
                found.append((part_name, [part]))
    out = [(n, ms[0] if len(ms) == 1 else _Joined(ms)) for n, ms in found]
    if not out or not isinstance(out[-1][1], nn.Linear):
        raise UsageError(f"{type(model).__name__} does not end in a Linear classifier; cnnlab "
                         "cannot find the head to replace")
    return out


class _Joined(nn.ModuleList):
    """A unit made of a layer and the normalisation layers after it: a handle for freezing and
    parameter groups, never registered in the network itself."""


def _set_child(model: nn.Module, dotted: str, module: nn.Module) -> None:
    parent = model
    *path, last = dotted.split(".")
    for p in path:
        parent = getattr(parent, p)
    setattr(parent, last, module)


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Swap the final Linear (and each aux classifier's last Linear) for a fresh one with
    `num_classes` outputs, initialised as torch's Linear default; returns the model."""
    name, head = units(model)[-1]
    _set_child(model, name, nn.Linear(head.in_features, num_classes))
    for aux_name, aux in model.named_children():
        if aux_name.startswith("aux") and aux is not None:
            linears = [n for n, m in aux.named_modules() if isinstance(m, nn.Linear)]
            if linears:
                old = aux.get_submodule(linears[-1])
                _set_child(aux, linears[-1], nn.Linear(old.in_features, num_classes))
    return model


def _eval_only(self, mode: bool = True):
    return nn.Module.train(self, False)


def freeze(module: nn.Module) -> None:
    """No gradients for `module`'s parameters; its normalisation layers stay in eval mode."""
    for p in module.parameters():
        p.requires_grad_(False)
    for m in module.modules():
        if isinstance(m, NORMS):
            m.train = types.MethodType(_eval_only, m)  # model.train() recurses through this
            m.eval()


def backbone_groups(n_units: int, n_groups: int) -> list[int]:
    """Group index (0 = top) of each backbone unit, bottom unit first, n_groups contiguous
    groups as even as possible with the upper groups taking the remainder."""
    n_groups = max(1, min(n_groups, n_units))
    base, extra = divmod(n_units, n_groups)
    sizes = [base + (1 if g < extra else 0) for g in range(n_groups)]  # top group first
    top_down = [g for g, size in enumerate(sizes) for _ in range(size)]
    return list(reversed(top_down))


def lr_multipliers(model: nn.Module, mults: Sequence[float]) -> dict[int, float]:
    """{id(parameter): multiplier} for every parameter (see the module docstring)."""
    mults = [float(m) for m in mults] or [1.0]  # positive: checked at compose (transfer.lr_mult)
    parts = units(model)
    out = {id(p): mults[0] for p in model.parameters()}  # head, aux heads, adapter (no params)
    if len(mults) > 1:
        backbone = parts[:-1]
        for (_, unit), g in zip(backbone, backbone_groups(len(backbone), len(mults) - 1)):
            for p in unit.parameters():
                out[id(p)] = mults[g + 1]
    return out


class InputAdapter(nn.Module):
    """Target batches -> what the source network expects (see the module docstring)."""

    def __init__(self, target_mean, target_std, source_mean=None, source_std=None,
                 in_chans: int = 3, source_chans: int = 3, size: Optional[int] = None):
        super().__init__()
        if in_chans != source_chans and (in_chans, source_chans) not in ((1, 3), (3, 1)):
            raise UsageError(f"cannot adapt {in_chans}-channel images to a {source_chans}-channel source")
        self.repeat = source_chans if (in_chans, source_chans) == (1, 3) else 1
        self.grey = (in_chans, source_chans) == (3, 1)
        if self.grey and source_mean is None:
            raise UsageError("an RGB target for a grey source needs the source's normalisation")
        self.size = int(size) if size else None
        self.renorm = source_mean is not None
        t = lambda v: torch.tensor([float(x) for x in v]).view(1, -1, 1, 1)  # noqa: E731
        self.register_buffer("t_mean", t(target_mean))
        self.register_buffer("t_std", t(target_std))
        self.register_buffer("s_mean", t(source_mean if self.renorm else [0.0] * source_chans))
        self.register_buffer("s_std", t(source_std if self.renorm else [1.0] * source_chans))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.renorm:
            x = x * self.t_std.to(x.dtype) + self.t_mean.to(x.dtype)  # back to [0, 1] pixels
        if self.repeat > 1:
            x = x.expand(-1, self.repeat, -1, -1)
        if self.grey:  # ITU-R BT.601 luma, as torchvision's rgb_to_grayscale
            x = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
        if self.size and min(x.shape[-2:]) != self.size:
            h, w = x.shape[-2:]
            out = (self.size, max(1, round(w * self.size / h))) if h <= w else \
                (max(1, round(h * self.size / w)), self.size)
            x = F.interpolate(x.float(), size=out, mode="bilinear", antialias=True,
                              align_corners=False).to(x.dtype)
        if self.renorm:
            x = (x - self.s_mean.to(x.dtype)) / self.s_std.to(x.dtype)
        return x

    def extra_repr(self) -> str:
        return f"size={self.size}, repeat={self.repeat}, grey={self.grey}, renormalise={self.renorm}"


class TransferNet(nn.Module):
    """`adapter` then `net` (the source architecture with a new head)."""

    def __init__(self, adapter: InputAdapter, net: nn.Module):
        super().__init__()
        self.adapter = adapter
        self.net = net

    def forward(self, x):
        return self.net(self.adapter(x))
