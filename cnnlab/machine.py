"""What machine this is: the CPU's model name and feature flags from /proc/cpuinfo (no torch
import), the name of a training device, and the record each sweep keeps in sweep.yaml. Read by the
precision warnings, bench-conv, bench-train, every run's summary and the sweeps."""

from __future__ import annotations

import os
import platform
from typing import Any


def _cpuinfo_value(prefixes: tuple[str, ...]) -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(prefixes):
                    return line.partition(":")[2].strip()
    except OSError:
        return None
    return ""


def cpu_flags() -> set | None:
    """The CPU's feature flags (None where /proc/cpuinfo does not exist)."""
    value = _cpuinfo_value(("flags", "Features"))
    return None if value is None else set(value.split())


# /proc/cpuinfo flags of native 16-bit arithmetic: x86 AVX-512 BF16 (Intel Cooper Lake and
# Sapphire Rapids on, AMD Zen 4 on), AMX-BF16 tiles (Intel Sapphire Rapids on), AVX-512 FP16
# (Sapphire Rapids on), AMX-FP16 (Granite Rapids on); Linux aarch64 names bf16 and asimdhp
NATIVE_16BIT = {"bfloat16": ("amx_bf16", "avx512_bf16", "bf16"),
                "float16": ("amx_fp16", "avx512_fp16", "asimdhp")}


def native_16bit(flags: set | None = None) -> dict[str, list[str]]:
    """dtype name -> the CPU flags of native arithmetic in it that this CPU has ([]: emulated)."""
    flags = cpu_flags() if flags is None else flags
    return {dtype: [f for f in names if f in (flags or set())] for dtype, names in NATIVE_16BIT.items()}


def cpu_summary() -> str:
    """The CPU and its 16-bit arithmetic, for tables and rules: "AMD EPYC (bf16: avx512_bf16;
    fp16: emulated)"."""
    native = native_16bit()
    parts = [f"{'bf16' if d == 'bfloat16' else 'fp16'}: {', '.join(f) or 'emulated'}" for d, f in native.items()]
    return f"{cpu_name()} ({'; '.join(parts)})"


def cpu_name() -> str:
    """The CPU's model name, or what platform knows where /proc/cpuinfo has none."""
    return _cpuinfo_value(("model name",)) or platform.processor() or platform.machine()


def device_name(device: Any) -> str:
    """What a torch device is, for tables: the GPU's name, or the CPU's model with its native
    16-bit arithmetic (cpu_summary), which a speed figure depends on."""
    device_type = getattr(device, "type", str(device).split(":")[0])
    if device_type == "cuda":
        import torch

        return torch.cuda.get_device_name(device)
    return cpu_summary()


def machine_info() -> dict:
    """Where a sweep ran: CPU, cores, load, accelerator and versions (recorded in sweep.yaml)."""
    import sys

    info: dict[str, Any] = {"host_cpu": cpu_name(), "cores": os.cpu_count(),
                            "native_16bit": {d: f for d, f in native_16bit().items() if f},
                            "python": sys.version.split()[0], "platform": platform.platform()}
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    try:
        import torch

        info["torch"] = str(torch.__version__)
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        info["cnnlab"] = version("cnnlab")
    except PackageNotFoundError:
        pass
    return info
