"""bench-conv --design: small-filter block designs side by side (the lecture's C8, C9).

Each comparison has a baseline design and one or more alternatives with the same input and
output size: parameters (weights, no biases), MACs per image, receptive field (the side of the
input window one output sees) and the measured forward time of the block (F.conv2d via
torch.nn, ReLU between stacked convolutions, batch `batch`).

  7x7 vs 3x(3x3)           49C^2 vs 27C^2, both see 7x7 (Simonyan & Zisserman 2015, sec. 2.3)
  5x5 vs 2x(3x3)           25C^2 vs 18C^2, both see 5x5
  3x3 vs bottleneck        9C^2 vs 1x1 C->C/2, 3x3 C/2->C/2, 1x1 C/2->C = 3.25C^2 (CS231n
                           2016 lecture 11, "CNNs in practice": the bottleneck sandwich)
  NxN vs 1xN+Nx1           N^2 C^2 vs 2N C^2 (Szegedy et al. 2016, "Rethinking the Inception
                           Architecture", sec. 3.2), N = 3 and 7
  full vs depthwise-sep.   9C^2 vs 9C + C^2 (Howard et al. 2017, MobileNets, sec. 3.1)
  inception naive vs 1x1   GoogLeNet's module at 28x28x256 (Szegedy et al. 2015; the CS231n
                           lecture's example): branches 1x1 128, 3x3 192, 5x5 96 and a 3x3 max
                           pool; with reductions 1x1 64 before the 3x3 and the 5x5 and after the
                           pool. Naive: 854.2M MACs, as the lecture says. With reductions the
                           lecture's own six terms add up to 271.35M, not the 358M it prints
                           (358.1M is the sum with the 86.7M 3x3 term counted twice); this module
                           recomputes the terms and reports 271.4M.
"""

from __future__ import annotations

import statistics
import time

INCEPTION = dict(size=28, cin=256, b1=128, b3=192, b5=96, red=64)  # the lecture's example


def _stack(*convs):
    """nn.Sequential of bias-free Conv2d (cin, cout, (kh, kw), groups) with ReLU between."""
    import torch.nn as nn

    layers = []
    for i, (cin, cout, k, groups) in enumerate(convs):
        kh, kw = (k, k) if isinstance(k, int) else k
        layers.append(nn.Conv2d(cin, cout, (kh, kw), padding=(kh // 2, kw // 2), groups=groups,
                                bias=False))
        if i < len(convs) - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _conv_stats(convs, hw: int) -> tuple[int, int, int]:
    """(params, MACs per image, receptive field) of a stride-1 'same' chain of convs."""
    params = sum(cout * (cin // g) * _area(k) for cin, cout, k, g in convs)
    # per axis: 1x7 then 7x1 sees 7x7, not 13
    rf = max(1 + sum(_side(k)[axis] - 1 for _, _, k, _ in convs) for axis in (0, 1))
    return params, params * hw * hw, rf


def _area(k) -> int:
    kh, kw = _side(k)
    return kh * kw


def _side(k) -> tuple[int, int]:
    return (k, k) if isinstance(k, int) else tuple(k)


class Inception:
    """GoogLeNet's inception module, naive (reduce=False) or with 1x1 reductions."""

    def __init__(self, reduce: bool, cin=256, b1=128, b3=192, b5=96, red=64):
        import torch.nn as nn

        self.reduce = reduce
        self.branches = [
            [(cin, b1, 1, 1)],
            [(cin, red, 1, 1), (red, b3, 3, 1)] if reduce else [(cin, b3, 3, 1)],
            [(cin, red, 1, 1), (red, b5, 5, 1)] if reduce else [(cin, b5, 5, 1)],
        ]
        self.pool_proj = [(cin, red, 1, 1)] if reduce else []
        self.mods = nn.ModuleList([_stack(*b) for b in self.branches])
        self.proj = _stack(*self.pool_proj) if reduce else None

    def __call__(self, x):
        import torch
        import torch.nn.functional as F

        outs = [m(x) for m in self.mods]
        pooled = F.max_pool2d(x, 3, stride=1, padding=1)
        outs.append(self.proj(pooled) if self.proj is not None else pooled)
        return torch.cat(outs, 1)

    def stats(self, hw: int) -> tuple[int, int, int]:
        convs = [c for b in self.branches for c in b] + self.pool_proj
        params = sum(cout * cin * _area(k) for cin, cout, k, _ in convs)
        rf = max(1 + sum(_side(k)[0] - 1 for _, _, k, _ in b) for b in self.branches)
        return params, params * hw * hw, rf


def designs(channels: int = 64) -> list[tuple[str, str, list]]:
    """(comparison, design, convs) for the chain designs; the first of a comparison is its
    baseline. convs: (cin, cout, kernel, groups)."""
    c, h = channels, max(channels // 2, 1)
    out = [
        ("7x7 vs 3x(3x3)", "one 7x7", [(c, c, 7, 1)]),
        ("7x7 vs 3x(3x3)", "three 3x3", [(c, c, 3, 1)] * 3),
        ("5x5 vs 2x(3x3)", "one 5x5", [(c, c, 5, 1)]),
        ("5x5 vs 2x(3x3)", "two 3x3", [(c, c, 3, 1)] * 2),
        ("3x3 vs bottleneck", "3x3", [(c, c, 3, 1)]),
        ("3x3 vs bottleneck", "1x1 C/2, 3x3 C/2, 1x1 C", [(c, h, 1, 1), (h, h, 3, 1), (h, c, 1, 1)]),
    ]
    for n in (3, 7):
        out += [(f"{n}x{n} vs 1x{n}+{n}x1", f"{n}x{n}", [(c, c, n, 1)]),
                (f"{n}x{n} vs 1x{n}+{n}x1", f"1x{n} then {n}x1", [(c, c, (1, n), 1), (c, c, (n, 1), 1)])]
    out += [("full vs depthwise-separable", "full 3x3", [(c, c, 3, 1)]),
            ("full vs depthwise-separable", "depthwise 3x3 + pointwise 1x1", [(c, c, 3, c), (c, c, 1, 1)])]
    return out


def _time(fn, x, repeats: int) -> float:
    import torch

    with torch.no_grad():
        fn(x)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def compare(batch: int = 8, channels: int = 64, size: int = 32, repeats: int = 5):
    """One row per design: comparison, design, params, macs (per image), receptive_field,
    median_ms (forward, batch `batch`), and params_ratio / macs_ratio / ms_ratio to the
    comparison's baseline (its first design). The inception pair always runs at the lecture's
    28x28x256 input."""
    import pandas as pd
    import torch

    from cnnlab.errors import UsageError

    if min(batch, channels, size, repeats) < 1:
        raise UsageError("batch, channels, size and repeats must be at least 1")
    torch.manual_seed(0)
    rows = []
    x = torch.randn(batch, channels, size, size)
    for comparison, design, convs in designs(channels):
        params, macs, rf = _conv_stats(convs, size)
        net = _stack(*convs).eval()
        rows.append(dict(comparison=comparison, design=design, input=f"{channels}x{size}x{size}",
                         params=params, macs=macs, receptive_field=rf,
                         median_ms=_time(net, x, repeats)))
    xi = torch.randn(batch, INCEPTION["cin"], INCEPTION["size"], INCEPTION["size"])
    for reduce, name in ((False, "naive"), (True, "with 1x1 reductions")):
        block = Inception(reduce, **{k: v for k, v in INCEPTION.items() if k != "size"})
        params, macs, rf = block.stats(INCEPTION["size"])
        rows.append(dict(comparison="inception naive vs 1x1 reductions", design=name,
                         input=f"{INCEPTION['cin']}x{INCEPTION['size']}x{INCEPTION['size']}",
                         params=params, macs=macs, receptive_field=rf,
                         median_ms=_time(block, xi, repeats)))
    df = pd.DataFrame(rows)
    base = df.groupby("comparison", sort=False).transform("first")
    for col, name in (("params", "params_ratio"), ("macs", "macs_ratio"), ("median_ms", "ms_ratio")):
        df[name] = df[col] / base[col]
    return df
