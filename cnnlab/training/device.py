"""Device helpers of a run: which device, its CPU threads, its seeding, its memory format and its
peak memory.
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


def thread_plan(cfg, ctx, device):
    """trainer.threads resolved by cnnlab.threads (auto: from the usable CPUs, the processes
    sharing them and the load at the start); None keeps torch's default (0, one process).
    ctx: a data-parallel run's cnnlab.training.distributed.Context, or None."""
    from cnnlab import threads

    setting = cfg.trainer.threads
    jobs = ctx.local_world if ctx is not None else _sweep_jobs()
    if setting == 0:
        if ctx is None or device.type != "cpu":
            return None
        setting = ctx.default_threads()  # N processes x all cores would oversubscribe
    return threads.plan(setting, jobs=jobs)


def keep_threads(cfg, state: dict):
    """A resumed CPU run under trainer.threads=auto takes the thread count its first sitting
    trained with (`state`, its checkpoint), whatever the load now: parallel reductions add in an
    order that depends on it, and a resumed run continues bit for bit. Returns why, or None when
    the count stays as planned."""
    import torch

    recorded = state.get("threads")
    if cfg.trainer.threads != "auto" or not recorded:
        return None
    torch.set_num_threads(int(recorded))
    return f"{int(recorded)} thread(s): as the run's first sitting (trainer.threads=auto)"


def _sweep_jobs():
    """The jobs a Hydra sweep runs side by side (its joblib launcher's n_jobs), None elsewhere."""
    try:
        from hydra.core.hydra_config import HydraConfig

        n = HydraConfig.get().launcher.get("n_jobs") if HydraConfig.initialized() else None
    except Exception:  # no Hydra job, or a launcher without n_jobs
        return None
    if not isinstance(n, int) or n == 0:
        return None
    return n if n > 0 else max(1, (os.cpu_count() or 1) + 1 + n)  # joblib: -1 is every CPU


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
