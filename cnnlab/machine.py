"""What CPU this is, from /proc/cpuinfo: its model name and feature flags (no torch import).
Read by the precision warnings, bench-conv's machine record and each sweep's sweep.yaml."""

from __future__ import annotations

import platform


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
