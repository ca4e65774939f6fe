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


def cpu_name() -> str:
    """The CPU's model name, or what platform knows where /proc/cpuinfo has none."""
    return _cpuinfo_value(("model name",)) or platform.processor() or platform.machine()


def device_name(device: Any) -> str:
    """What a torch device is, for tables: the GPU's name, or the CPU's model."""
    device_type = getattr(device, "type", str(device).split(":")[0])
    if device_type == "cuda":
        import torch

        return torch.cuda.get_device_name(device)
    return cpu_name()


def machine_info() -> dict:
    """Where a sweep ran: CPU, cores, load, accelerator and versions (recorded in sweep.yaml)."""
    import sys

    info: dict[str, Any] = {"host_cpu": cpu_name(), "cores": os.cpu_count(),
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
