"""bench-conv measurements: time, throughput, extra memory and error of each conv algorithm.

`measure(...)` returns one tidy row per (layer, algo, precision); its `attrs` hold the machine
info and the measured matmul peak (also from `machine_info()` and `matmul_peak()`).

How each figure is made:
  median_ms, iqr_ms  warm-up calls, then `repeats` timed calls; the algorithms of a layer run
                     round-robin in rotating order, so a slow spell of the shared machine hits
                     them all alike and the ratios stay fair
  gflops             direct-equivalent 2*N*K*C*R*S*P*Q / time (x3 with --backward: forward,
                     input gradient, filter gradient); pct_peak against a square fp32/fp64
                     matmul (or one in the same dtype) measured at the start of the run
  extra_bytes        measured: on CPU the peak of bytes live in torch's allocator during the
                     first warm-up call (torch.profiler with profile_memory; op granularity),
                     less the output's bytes; on CUDA max_memory_allocated less the output.
                     Scratch a library keeps outside torch's allocator (oneDNN) is not seen.
  rel_err            ||y - ref|| / ||ref|| on the first image against an fp64 conv2d of the
                     same (already rounded) inputs, so it is the algorithm's arithmetic error
                     in that precision; library_rel_err is F.conv2d's own in that precision
  supported          False rows (e.g. winograd on a 5x5 layer, fft in bf16 on CPU, a library
                     kernel that fails) are kept, with NaN figures and the reason in `reason`
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time

from cnnlab.bench import convalgos, suites
from cnnlab.errors import UsageError

PRECISIONS = {"fp64": "float64", "fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")


def dtype_of(precision: str):
    import torch

    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision '{precision}'; precisions: {', '.join(PRECISIONS)}")
    return getattr(torch, PRECISIONS[precision])


def machine_info() -> dict:
    """CPU model, torch threads, selected CPU flags, load average, torch build facts."""
    import torch

    from cnnlab.machine import cpu_flags, cpu_name, device_name

    model, flags = cpu_name(), cpu_flags() or set()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {"cpu": model, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "cpu_flags": ",".join(f for f in FLAGS if f in flags),
            "load_avg": ",".join(f"{v:.2f}" for v in load), "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "nnpack": bool(torch.backends.nnpack.is_available()),
            "device_name": device_name("cuda" if torch.cuda.is_available() else "cpu")}


def matmul_peak(dtype, size: int = 1024, repeats: int = 5, device="cpu") -> float:
    """GFLOP/s of the best of `repeats` square matmuls: this machine's practical peak now."""
    import torch

    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = _now(device)
        a @ b
        best = min(best, _now(device) - t0)
    return 2 * size ** 3 / best / 1e9


def _now(device) -> float:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def _peak_bytes(fn, device) -> tuple[object, int]:
    """(fn(), peak bytes live in torch's allocator while fn ran, relative to the start)."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = fn()
        torch.cuda.synchronize()
        return out, torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile

    with _stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    steps = []
    for e in prof.events():  # allocations inside an op count to it; later frees are [memory]
        v = e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage
        if v:
            steps.append((e.time_range.start, v))
    live = peak = 0
    for _, v in sorted(steps, key=lambda t: t[0]):
        live += v
        peak = max(peak, live)
    return out, peak


@contextlib.contextmanager
def _stderr_silenced():
    """The profiler's C++ side prints "USDT ... profiler_start/stop" to file descriptor 2 on every
    use, with no switch to turn it off: point fd 2 at /dev/null while it runs (Python exceptions
    still propagate; only that window's raw writes are lost)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _rel(y, ref) -> tuple[float, float]:
    d = y.double() - ref
    return float(d.norm() / ref.norm().clamp_min(1e-300)), float(d.abs().max())


def _quiet_profiler():
    import logging

    logging.getLogger("torch.profiler").setLevel(logging.ERROR)
    os.environ.setdefault("KINETO_LOG_LEVEL", "5")


def measure(suite: str = "vgg16", algos: list[str] | None = None, precisions=("fp32",),
            batch: int = 8, shapes=None, repeats: int = 5, warmup: int = 2,
            backward: bool = False, quick: bool = False, device: str = "cpu",
            max_seconds: float = 2.0, progress=None):
    """Benchmark conv algorithms on a suite's layers: one row per (layer, algo, precision).

    suite: a name in cnnlab.bench.suites.SUITES (ignored when `shapes` is given); shapes:
    'N,C,H,W,K,R,S,stride,pad' strings or 9-int sequences; algos: names in
    convalgos.ALGOS (default: every available one but the naive reference); precisions: fp64,
    fp32, fp16, bf16. quick: maps 4x smaller per side, batch at most 2, 3 repeats, 1 warm-up,
    max_seconds 0.5 (a smoke run, ~30 s for a suite). max_seconds: a layer's timed calls per
    algorithm stop after this many seconds once 3 are in, or after one that alone took that
    long; the first warm-up call is the only one when it took max_seconds / 4 (the `repeats`
    column says how many timed calls ran). Unsupported combinations are kept as rows with
    supported False, NaN figures and a reason. df.attrs: machine (machine_info()), peak_gflops
    per precision, settings."""
    import pandas as pd
    import torch

    names, dtypes = _choices(algos, precisions, batch, repeats, warmup)
    plan = suites.layers(suite, shapes)
    if quick:
        plan = [(min(n or batch, 2), suites.shrink(layer)) for n, layer in plan]
        repeats, warmup = min(repeats, 3), min(warmup, 1)
        max_seconds = min(max_seconds, 0.5)
    _quiet_profiler()
    dev = torch.device(device)
    peaks = {p: matmul_peak(dt, 512 if quick or dt in (torch.float16, torch.bfloat16) else 1024,
                            device=dev) for p, dt in dtypes.items()}
    info = machine_info()
    timing = dict(names=names, dev=dev, repeats=repeats, warmup=warmup, backward=backward,
                  max_seconds=max_seconds)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for n, layer in plan:
        n = n or batch
        x32 = torch.randn(n, layer.C, layer.H, layer.W, generator=gen)
        w32 = torch.randn(layer.K, layer.C, layer.R, layer.S, generator=gen) / (layer.C * layer.R * layer.S) ** 0.5
        for prec, dt in dtypes.items():
            if progress:
                progress(f"{layer.name} {prec}")
            rows += _layer_rows(layer, x32.to(dev, dt), w32.to(dev, dt), "custom" if shapes else suite,
                                prec, peaks[prec], timing)
    df = _compare(pd.DataFrame(rows))
    df.attrs.update(machine=info, peak_gflops=peaks, repeats=repeats, warmup=warmup,
                    quick=quick, backward=backward)
    return df


def _choices(algos, precisions, batch: int, repeats: int, warmup: int):
    """(algorithm names, precision -> dtype) of a measure() call, checked."""
    if batch < 1 or repeats < 1 or warmup < 0:
        raise UsageError("--batch and --repeats must be at least 1, warm-up 0 or more")
    algos, precisions = _listed(algos), _listed(precisions)
    names = list(algos) if algos else convalgos.available()
    unknown = [a for a in names if a not in convalgos.ALGOS]
    if unknown:
        raise UsageError(f"unknown algorithm '{unknown[0]}'; algorithms: {', '.join(convalgos.ALGOS)}")
    return names, {p: dtype_of(p) for p in precisions}


def _listed(value):
    """'im2col,fft' (as experiment files may write a list) -> ['im2col', 'fft']; others as given."""
    return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value


def _layer_rows(layer, x, w, suite: str, prec: str, peak: float, timing: dict) -> list[dict]:
    """Every algorithm's row for one layer in one precision (x, w already in it); timing:
    _time_layer's names, dev, repeats, warmup, backward and max_seconds."""
    import torch

    n = x.shape[0]
    p, q = layer.out_hw()
    ref = torch.nn.functional.conv2d(x[:1].double(), w.double(), stride=layer.stride,
                                     padding=layer.pad)
    lib_err = _rel(torch.nn.functional.conv2d(x[:1], w, stride=layer.stride, padding=layer.pad), ref)[0]
    cells = _time_layer(x=x, w=w, layer=layer, dtype=x.dtype, ref=ref, **timing)
    backward = timing["backward"]
    base = dict(suite=suite, layer=layer.name, N=n, C=layer.C, H=layer.H, W=layer.W, K=layer.K,
                R=layer.R, S=layer.S, stride=layer.stride, pad=layer.pad, P=p, Q=q, precision=prec,
                kernel_area=layer.R * layer.S, input_bytes=x.numel() * x.element_size(),
                library_rel_err=lib_err, backward=backward, device=str(timing["dev"]))
    flops = 2 * n * layer.K * layer.C * layer.R * layer.S * p * q * (3 if backward else 1)
    return [_row(base, name, c, flops, peak) for name, c in cells.items()]


def _row(base: dict, name: str, cell: dict, flops: float, peak: float) -> dict:
    """One algorithm's figures from its timed calls (median, IQR, GFLOP/s, % of peak, error)."""
    times = cell["times"]
    ms = statistics.median(times) * 1e3 if times else float("nan")
    qs = statistics.quantiles(times, n=4) if len(times) > 1 else None
    nan2 = (float("nan"),) * 2
    return {**base, "algo": name, "supported": cell["reason"] is None,
            "reason": cell["reason"] or "", "median_ms": ms,
            "iqr_ms": (qs[2] - qs[0]) * 1e3 if qs else (0.0 if times else float("nan")),
            "repeats": len(times), "gflops": flops / ms / 1e6,
            "pct_peak": 100 * flops / ms / 1e6 / peak,
            "extra_bytes": cell.get("extra", float("nan")),
            "rel_err": cell.get("err", nan2)[0], "max_abs_err": cell.get("err", nan2)[1]}


def _compare(df):
    """The columns that compare rows: extra memory over the input, speed-ups against the
    library and im2col on the same layer and precision, and the fastest supported algorithm."""
    if not len(df):
        return df
    df["extra_over_input"] = df.extra_bytes / df.input_bytes
    key = ["layer", "precision"]
    for other in ("library", "im2col"):
        ref_ms = df[df.algo == other].set_index(key).median_ms
        df[f"speedup_vs_{other}"] = [ref_ms.get((lay, pr), float("nan")) / ms
                                     for lay, pr, ms in zip(df.layer, df.precision, df.median_ms)]
    best = df[df.supported].groupby(key).median_ms.transform("min")
    df["fastest"] = (df.median_ms == best.reindex(df.index)) & df.supported
    return df


def _time_layer(names, x, w, layer, dtype, dev, ref, repeats, warmup, backward, max_seconds):
    """Round-robin timing of the algorithms on one layer: name -> {times, reason, extra, err}."""
    import torch

    cells, calls = {}, {}
    for name in names:
        reason = convalgos.supported(name, layer.R, layer.S, layer.stride, dtype, dev)
        cells[name] = {"times": [], "reason": reason}
        if reason is None:
            calls[name] = _call(convalgos.ALGOS[name], x, w, layer, backward)
    # first warm-up call: measured memory and the error, and a probe that the kernel runs
    for name, fn in list(calls.items()):
        try:
            t0 = time.perf_counter()
            y, peak = _peak_bytes(fn, dev)
            cells[name]["first_s"] = time.perf_counter() - t0
        except (RuntimeError, NotImplementedError, convalgos.NotApplicable) as exc:
            cells[name]["reason"] = f"failed: {str(exc).strip().splitlines()[0][:120]}"
            del calls[name]
            continue
        cells[name]["extra"] = max(peak - y.numel() * y.element_size(), 0)
        with torch.no_grad():
            cells[name]["err"] = _rel(y[:1].detach(), ref)
        del y
    spent = dict.fromkeys(calls, 0.0)
    order = list(calls)
    for i in range(max(warmup - 1, 0) + repeats):
        timed = i >= max(warmup - 1, 0)
        k = i % max(len(order), 1)
        for name in order[k:] + order[:k]:  # rotate: each algorithm takes every place
            t = cells[name]["times"]
            # a slow algorithm (fft with 3x3 filters on 224x224 maps) gets fewer calls: no
            # more warm-up once a call took max_seconds / 4, no more timed calls once
            # max_seconds are spent (3 calls at least, 1 if one call alone takes that long)
            if spent[name] > max_seconds and (len(t) >= 3 or t[0] > max_seconds):
                continue
            if not timed and cells[name]["first_s"] > max_seconds / 4:
                continue
            t0 = _now(dev)
            calls[name]()
            dt = _now(dev) - t0
            if timed:
                t.append(dt)
                spent[name] += dt
    return cells


def _call(fn, x, w, layer, backward):
    import torch

    if not backward:
        def forward():
            with torch.no_grad():
                return fn(x, w, layer.stride, layer.pad)
        return forward
    xg, wg = x.detach().requires_grad_(), w.detach().requires_grad_()

    def both():
        xg.grad = wg.grad = None
        y = fn(xg, wg, layer.stride, layer.pad)
        y.backward(torch.ones_like(y))
        return y
    return both


def summary(df) -> dict:
    """The issue's performance targets, as numbers: see README / the CLI's last lines."""
    import math

    out = {}
    d = df[df.supported & (df.precision == "fp32")]
    piv = d.pivot_table(index="layer", columns="algo", values="median_ms", sort=False)
    info = d.drop_duplicates("layer").set_index("layer")
    if {"winograd2", "im2col"} <= set(piv.columns):
        big = info[(info.R == 3) & (info.S == 3) & (info.C >= 128) & (info.stride == 1)].index
        r = (piv.loc[big, "im2col"] / piv.loc[big, "winograd2"]).dropna()
        if len(r):
            out["winograd2_over_im2col_min"] = float(r.min())
            out["winograd2_over_im2col_median"] = float(r.median())
    if {"fft", "im2col"} <= set(piv.columns):
        big = info[(info.R >= 9) & (info.H >= 32)].index
        r = (piv.loc[big, "im2col"] / piv.loc[big, "fft"]).dropna()
        if len(r):
            out["fft_over_im2col_min"] = float(r.min())
    if "library" in piv.columns:
        ours = [a for a in piv.columns if a not in ("library", "nnpack")]
        if ours:
            best = piv[ours].min(axis=1) / piv["library"]
            best = best.dropna()
            if len(best):
                out["layers_within_1.5x_of_library"] = int((best <= 1.5).sum())
                out["layers"] = int(len(best))
    return {k: (round(v, 3) if isinstance(v, float) and not math.isnan(v) else v)
            for k, v in out.items()}
