"""Device helpers of a run: which device, its seeding, its memory format and its peak memory.
(The device's name for tables is cnnlab.machine.device_name.)"""

from __future__ import annotations

import os
import random

from cnnlab.errors import UsageError


def seed_everything(seed: int, deterministic: bool) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS needs this workspace setting for deterministic matmuls (CUDA docs, "Reproducibility").
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def resolve_device(name: str, what: str = "trainer.accelerator"):
    """The torch device `name` names (auto: cuda, mps, else cpu); `what` is the setting errors name."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device '{name}'; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"{what}={name} but this machine has no CUDA device")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError(f"{what}={name} but this machine has no MPS device")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"{what}={name} is not supported; use auto, cpu, cuda, cuda:N or mps")
    return device


def peak_memory_mb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def use_channels_last(setting, device, prec) -> bool:
    """trainer.channels_last: true/false as given; auto: on for CPU (oneDNN's NHWC convolutions,
    measured faster here) and for CUDA under 16-bit weights or autocast (tensor cores run NHWC);
    off for float64 (no oneDNN kernels) and CUDA fp32."""
    import torch

    if setting != "auto":
        return bool(setting)
    if prec.param_dtype == torch.float64:
        return False
    if device.type == "cpu":
        return True
    sixteen = prec.param_dtype in (torch.float16, torch.bfloat16) or prec.amp_dtype is not None
    return device.type == "cuda" and sixteen
