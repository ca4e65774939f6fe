"""Per-layer accounting of a model: output shape, parameters, multiply-accumulates, receptive field.

One forward pass on a meta tensor (no memory, no arithmetic) with two instruments:
- forward hooks on every leaf module record its output shape, its own parameters and its MACs
  (convolutions: output elements x input channels per group x kernel area; linear layers:
  output elements x input features; everything else counts as 0 MACs);
- a TorchFunctionMode follows every tensor through every torch call and carries its receptive
  field and jump (the distance in input pixels between neighbouring outputs), per axis:
  convolution and pooling grow the field by (kernel - 1) x jump and multiply the jump by the
  stride (Araujo et al. 2019, "Computing receptive fields of convolutional neural networks");
  element-wise ops, additions and concatenations take the largest field of their inputs;
  global pooling and flattening make the field the whole input map.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

RF = tuple  # (rf_h, rf_w, jump_h, jump_w)


def _pair(v) -> tuple[int, int]:
    if isinstance(v, (list, tuple)):
        return (int(v[0]), int(v[-1]))
    return (int(v), int(v))


def _arg(args, kwargs, index: int, name: str, default=None):
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else default


def _grow(rf: RF, kernel, stride, dilation=(1, 1)) -> RF:
    (kh, kw), (sh, sw), (dh, dw) = _pair(kernel), _pair(stride), _pair(dilation)
    rh, rw, jh, jw = rf
    return (rh + (dh * (kh - 1)) * jh, rw + (dw * (kw - 1)) * jw, jh * sh, jw * sw)


def _whole(rf: RF, h: int, w: int) -> RF:
    rh, rw, jh, jw = rf
    return (rh + (h - 1) * jh, rw + (w - 1) * jw, jh * h, jw * w)


class ReceptiveFieldMode(TorchFunctionMode):
    """Carries (rf_h, rf_w, jump_h, jump_w) from input tensors to output tensors of every call."""

    def __init__(self):
        super().__init__()
        self.info: dict[int, RF] = {}
        self._alive: list[torch.Tensor] = []  # keep tensors alive so their ids stay unique

    def mark(self, t: torch.Tensor, rf: RF) -> None:
        self.info[id(t)] = rf
        self._alive.append(t)

    def get(self, t) -> RF | None:
        return self.info.get(id(t)) if isinstance(t, torch.Tensor) else None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        flat = [a for a in args if isinstance(a, torch.Tensor)]
        flat += [t for a in args if isinstance(a, (list, tuple)) for t in a if isinstance(t, torch.Tensor)]
        known = [self.info[id(t)] for t in flat if id(t) in self.info]
        if not known:
            return out
        rf = tuple(max(r[i] for r in known) for i in range(4))
        name = getattr(func, "__name__", "")
        x = flat[0]
        if name in ("conv2d", "conv1d"):
            weight = args[1] if len(args) > 1 else kwargs["weight"]
            rf = _grow(rf, tuple(weight.shape[2:]) or 1, _arg(args, kwargs, 3, "stride", 1),
                       _arg(args, kwargs, 5, "dilation", 1))
        elif name in ("max_pool2d", "avg_pool2d", "max_pool2d_with_indices", "lp_pool2d"):
            kernel = _arg(args, kwargs, 1, "kernel_size")
            stride = _arg(args, kwargs, 2, "stride") or kernel
            dilation = _arg(args, kwargs, 4, "dilation", 1) if "max" in name else 1
            rf = _grow(rf, kernel, stride, dilation)
        elif name in ("adaptive_avg_pool2d", "adaptive_max_pool2d") and x.dim() == 4:
            h, w = x.shape[-2:]
            oh, ow = _pair(_arg(args, kwargs, 1, "output_size"))
            oh, ow = oh or h, ow or w
            if (oh, ow) == (1, 1):
                rf = _whole(rf, h, w)
            elif (oh, ow) != (h, w):
                rf = _grow(rf, (-(-h // oh), -(-w // ow)), (max(1, h // oh), max(1, w // ow)))
        elif name in ("flatten", "view", "reshape") and x.dim() == 4 and \
                isinstance(out, torch.Tensor) and out.dim() < 4:
            rf = _whole(rf, *x.shape[-2:])
        for o in (out if isinstance(out, (list, tuple)) else [out]):
            if isinstance(o, torch.Tensor):
                self.mark(o, rf)
        return out


def _macs(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    per_image = out.numel() // max(1, out.shape[0])
    if isinstance(module, nn.modules.conv._ConvNd):
        k = 1
        for s in module.kernel_size:
            k *= s
        return per_image * (module.in_channels // module.groups) * k
    if isinstance(module, nn.Linear):
        return per_image * module.in_features
    return 0


def layer_kind(module: nn.Module) -> str:
    if isinstance(module, nn.modules.conv._ConvNd):
        return "conv"
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm,
                           nn.LocalResponseNorm)):
        return "norm"
    return "other"


@dataclass
class Profile:
    rows: list[dict]
    input_shape: tuple[int, int, int]

    @property
    def total_params(self) -> int:
        return sum(r["params"] for r in self.rows)

    @property
    def total_macs(self) -> int:
        return sum(r["macs"] for r in self.rows)

    def by_kind(self) -> list[dict]:
        """Parameters and MACs per layer kind (conv, linear, norm, other) with their shares."""
        out = []
        for kind in ("conv", "linear", "norm", "other"):
            rows = [r for r in self.rows if r["kind"] == kind]
            if not rows:
                continue
            p, m = sum(r["params"] for r in rows), sum(r["macs"] for r in rows)
            out.append({"kind": kind, "layers": len(rows), "params": p, "macs": m,
                        "params_share": p / max(1, self.total_params),
                        "macs_share": m / max(1, self.total_macs)})
        return out


def profile(model: nn.Module, input_shape: tuple[int, int, int], device: Any = "meta") -> Profile:
    """Trace one image through `model` (in eval mode) and account for every leaf layer."""
    model = model.to(device).eval()
    rows: list[dict] = []
    called: set[int] = set()
    mode = ReceptiveFieldMode()
    handles = []

    def hook(name):
        def record(module, inputs, output):
            out = output[0] if isinstance(output, (list, tuple)) else output
            if not isinstance(out, torch.Tensor):
                return
            rf = mode.get(out)
            first_call = id(module) not in called  # a module used twice holds its weights once
            called.add(id(module))
            rows.append({
                "layer": name, "type": type(module).__name__, "kind": layer_kind(module),
                "output": "x".join(str(s) for s in out.shape[1:]),
                "params": sum(p.numel() for p in module.parameters(recurse=False)) if first_call else 0,
                "macs": _macs(module, inputs[0] if inputs else out, out),
                "rf": f"{rf[0]}x{rf[1]}" if rf else "", "jump": f"{rf[2]}x{rf[3]}" if rf else "",
            })
        return record

    seen = set()
    for name, module in model.named_modules():
        if id(module) in seen or (len(list(module.children())) and not _has_own_params(module)):
            continue
        seen.add(id(module))
        handles.append(module.register_forward_hook(hook(name or type(module).__name__)))
    x = torch.zeros(1, *input_shape, device=device)
    try:
        with torch.no_grad(), mode:
            mode.mark(x, (1, 1, 1, 1))
            model(x)
    finally:
        for h in handles:
            h.remove()
    # parameters held directly by a container (rare) would otherwise be missed
    counted = sum(r["params"] for r in rows)
    total = sum(p.numel() for p in model.parameters())
    if counted != total:
        rows.append({"layer": "(unhooked parameters)", "type": "-", "kind": "other", "output": "",
                     "params": total - counted, "macs": 0, "rf": "", "jump": ""})
    total_p = max(1, sum(r["params"] for r in rows))
    total_m = max(1, sum(r["macs"] for r in rows))
    for r in rows:
        r["params_share"] = r["params"] / total_p
        r["macs_share"] = r["macs"] / total_m
    return Profile(rows=rows, input_shape=tuple(input_shape))


def _has_own_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


def parse_input(text: str) -> tuple[int, int, int]:
    """'3x224x224' -> (3, 224, 224)."""
    from cnnlab.errors import UsageError

    try:
        parts = tuple(int(p) for p in text.lower().split("x"))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) < 1:
        raise UsageError(f"--input takes CxHxW, e.g. 3x224x224; got '{text}'")
    return parts
