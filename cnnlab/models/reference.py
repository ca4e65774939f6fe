"""Figures to check cnnlab's models and conv arithmetic against (C20, C21, C24).

Three independent sources: torchvision's constructors (built on the meta device, so counting a
138M-parameter VGG costs no memory), the parameter counts the lecture quotes, and the conv
arithmetic formulas worked by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

@dataclass(frozen=True)
class Reference:
    torchvision_options: dict  # cnnlab options that build torchvision's variant
    constructor: str  # torchvision.models.<constructor>
    constructor_kwargs: dict
    lecture_params: float  # the figure the lecture quotes
    source: str
    paper_options: dict = field(default_factory=dict)  # cnnlab options closest to the paper's net


REFERENCES: dict[str, Reference] = {
    # torchvision's AlexNet is Krizhevsky's "one weird trick" variant (arXiv:1404.5997), 61.1M;
    # the 2012 paper's net (cnnlab's default) has 62.4M. CS231n quotes "60M parameters".
    "alexnet": Reference({"variant": "owt"}, "alexnet", {}, 60e6, "Krizhevsky et al. 2012; CS231n"),
    "vgg16": Reference({}, "vgg16", {}, 138e6, "Simonyan & Zisserman 2015, Table 2"),
    # "12x fewer parameters than AlexNet" (Szegedy et al. 2015); the seeds quote 5-7M. torchvision
    # uses 3x3 in the "5x5" branch (pytorch/vision#906) and batch norm; the paper had neither.
    "googlenet": Reference({"variant": "torchvision", "aux": False}, "googlenet",
                           {"aux_logits": False, "init_weights": False}, 6e6,
                           "Szegedy et al. 2015", paper_options={"norm": "none"}),
    "resnet50": Reference({}, "resnet50", {}, 25.5e6, "He et al. 2016; torchvision's table"),
}


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def model_rows(name: str, options: dict | None = None, input_shape=None, classes: int = 1000,
               paper: bool = False) -> list[dict]:
    """Per layer kind and in total: parameters, MACs and their shares for one image; the total
    row adds torchvision's count for the same variant and the lecture's figure, where known.
    paper: build with the options closest to the paper's net (REFERENCES) under `options`."""
    import torch
    import torchvision

    from cnnlab import models
    from cnnlab.models.profile import profile

    entries = models.list_models()
    if name not in entries:
        from cnnlab.errors import UsageError

        raise UsageError(f"unknown model '{name}'; choose from: {', '.join(entries)}")
    shape = tuple(input_shape or entries[name].default_input)
    ref = REFERENCES.get(name)
    opts = {**(ref.paper_options if paper and ref else {}), **(options or {})}
    with torch.device("meta"):
        model = models.create(name, num_classes=classes, in_chans=shape[0], input_size=shape[1:], **opts)
    p = profile(model, shape)
    rows = [{"kind": k["kind"], "params": k["params"], "macs": k["macs"],
             "params_share": k["params_share"], "macs_share": k["macs_share"]} for k in p.by_kind()]
    total: dict[str, Any] = {"kind": "total", "params": p.total_params, "macs": p.total_macs,
                             "params_share": 1.0, "macs_share": 1.0}
    if ref is not None:
        with torch.device("meta"):
            ours = models.create(name, num_classes=classes, in_chans=3, input_size=shape[1:],
                                 **ref.torchvision_options)
            theirs = getattr(torchvision.models, ref.constructor)(weights=None, num_classes=classes,
                                                                  **ref.constructor_kwargs)
        total.update(torchvision_variant_params=_count(ours), reference_params=_count(theirs),
                     lecture_params=ref.lecture_params)
    return rows + [total]


# The lecture's worked examples and a spread of sizes, paddings and strides:
# (C_in, H, W, C_out, kernel, stride, padding)
ARITHMETIC_CASES = [
    (128, 40, 50, 64, 3, 1, 1),  # the lecture's 40x50x128 -> 3x3 -> 40x50x64: 73,728 weights
    (128, 40, 50, 64, 3, 2, 0),  # same weights, other stride and padding
    (3, 32, 32, 10, 5, 1, 2),  # CS231n: 32x32x3, ten 5x5 filters, pad 2 -> 32x32x10, 760 params
    (3, 227, 227, 96, 11, 4, 0),  # AlexNet conv1: (227 - 11)/4 + 1 = 55
    (3, 7, 7, 1, 3, 2, 0),  # CS231n's 7x7 input, 3x3 filter, stride 2 -> 3x3
    (64, 56, 56, 64, 1, 1, 0),  # a 1x1 conv
    (16, 33, 17, 8, 4, 3, 1),  # odd sizes, a stride that does not divide evenly (floor)
]


def arithmetic_rows() -> list[dict]:
    """Each case built as a real nn.Conv2d and run on a meta tensor, beside the formulas:
    output side (W - F + 2P)/S + 1 (floored) and weights F*F*C_in*C_out (+ C_out biases)."""
    import torch

    rows = []
    for cin, h, w, cout, k, s, pad in ARITHMETIC_CASES:
        with torch.device("meta"):
            conv = torch.nn.Conv2d(cin, cout, k, stride=s, padding=pad)
            out = conv(torch.empty(1, cin, h, w))
        rows.append({
            "case": f"{h}x{w}x{cin} -> {k}x{k}/{s} pad {pad} -> {cout}",
            "out_h": out.shape[2], "out_w": out.shape[3],
            "formula_out_h": (h - k + 2 * pad) // s + 1, "formula_out_w": (w - k + 2 * pad) // s + 1,
            "weights": conv.weight.numel(), "formula_weights": k * k * cin * cout,
            "params": _count(conv), "formula_params": k * k * cin * cout + cout,
        })
    return rows
