"""Numeric precision of a run: weight dtype, autocast, loss scaling and 16-bit weight rounding.

The engine reads `param_dtype`, wraps forward+loss in `autocast()` and hands backward+update to
`step()`, which says whether the optimizer really stepped (a loss scaler skips steps whose
gradients overflowed; the engine then leaves the lr scheduler alone). The presets:

  fp64, fp32          weights and arithmetic in 64 / 32 bits
  tf32                CUDA: fp32 weights, matmuls and convs on TF32 tensor cores (10-bit mantissa)
  bf16_mixed          fp32 weights, forward+loss under autocast(bfloat16)
  fp16_mixed          the same in float16, with a dynamic loss scale (Micikevicius et al. 2018)
  fp16_mixed_noscale  float16 autocast without scaling: small gradients underflow to zero
  bf16_pure, fp16_pure  weights stored in 16 bits; each update is computed in fp32 (the
                      optimizer's state stays fp32) and rounded back to the 16-bit grid, to
                      nearest or stochastically (Gupta et al. 2015)
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Any

from cnnlab.config.checks import AMP_DTYPES, DTYPES, ROUNDINGS, SCALERS  # noqa: F401  (checked at compose)
from cnnlab.machine import NATIVE_16BIT, cpu_flags, native_16bit


class PrecisionWarning(UserWarning):
    """A precision setting that runs, but not the way its name suggests (slow, or a no-op)."""


@dataclass
class Precision:
    name: str
    param_dtype: Any
    device_type: str
    amp_dtype: Any = None  # autocast dtype around forward+loss; None: no autocast
    scaler: Any = None  # torch.amp.GradScaler under precision.scaler=dynamic
    rounding: str = "nearest"  # how updates of 16-bit weights land on the 16-bit grid
    generator: Any = None  # the stochastic rounding's random bits, seeded: runs repeat
    skipped_steps: int = 0  # optimizer steps the scaler skipped (inf/nan gradients)
    steps: int = 0  # optimizer steps taken
    pure: bool = False  # 16-bit weights: updates go through fp32 copies and `rounding`
    _scale: Any = None  # the loss scale after the last update (None: read it from the scaler)

    @property
    def loss_scale(self) -> float:
        """The current loss scale (1.0 when the loss is not scaled)."""
        return float(self.scaler.get_scale()) if self.scaler is not None else 1.0

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        import torch

        return torch.autocast(self.device_type, dtype=self.amp_dtype)

    def step(self, loss, optimizer, model, grad_clip: float = 0.0) -> bool:
        """Backward, optional clipping of the global grad norm, optimizer step; False when the
        loss scaler found inf/nan gradients and skipped the step (grads are zeroed by the caller)."""
        import torch

        if self.scaler is not None:
            taken = self._scaled_step(loss, optimizer, model, grad_clip)
        elif self.pure:
            loss.backward()
            self._pure_step(optimizer, grad_clip)
            taken = True
        else:
            loss.backward()
            if grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            taken = True
        self.steps += taken
        self.skipped_steps += not taken
        return taken

    def _scaled_step(self, loss, optimizer, model, grad_clip: float) -> bool:
        import torch

        scaler = self.scaler
        scaler.scale(loss).backward()
        if grad_clip > 0:  # clip the true gradients, not the scaled ones
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        # the scale the last update left (get_scale() copies it to the host: on CUDA a wait for
        # the device, so it is read once per step, after the update, not before it too)
        before = self._scale if self._scale is not None else scaler.get_scale()
        scaler.step(optimizer)  # skipped when the gradients hold inf/nan
        scaler.update()  # ...and then the scale backs off: a smaller scale means a skip
        self._scale = scaler.get_scale()
        return self._scale >= before

    def _pure_step(self, optimizer, grad_clip: float) -> None:
        """The optimizer updates fp32 copies of the 16-bit weights (its state is created and kept
        in fp32), then each new weight is rounded into the weight's own 16-bit storage."""
        import torch

        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        low = [(p.data, p.grad) for p in params]
        for p in params:
            p.data = p.data.float()
            p.grad = p.grad.float()
        try:
            if grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            optimizer.step()
            for p, (w16, _) in zip(params, low):
                w16.copy_(round_to(p.data, w16.dtype, self.rounding, self.generator))
        finally:
            for p, (w16, g16) in zip(params, low):
                p.data, p.grad = w16, g16

    def state_dict(self) -> dict:
        """What a resumed run needs: the counters, the scaler and the rounding generator."""
        return {"skipped_steps": self.skipped_steps, "steps": self.steps,
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "generator": self.generator.get_state() if self.generator is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.skipped_steps, self.steps = state["skipped_steps"], state["steps"]
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
            self._scale = None  # read again from the loaded scaler
        if self.generator is not None and state.get("generator") is not None:
            self.generator.set_state(state["generator"])


def round_to(x, dtype, mode: str = "nearest", generator=None):
    """fp32 `x` on the grid of `dtype`: to nearest (ties to even), or stochastically, rounding
    up with probability (x - below) / (above - below), so the result is unbiased: E = x."""
    import torch

    if mode == "nearest" or dtype not in (torch.bfloat16, torch.float16):
        return x.to(dtype)
    if dtype == torch.bfloat16:
        return stochastic_round_bf16(x, generator)
    return stochastic_round(x, dtype, generator)


def stochastic_round_bf16(x, generator=None):
    """bfloat16 is the top half of a float32: add 16 uniform random bits below its mantissa,
    then cut them off. The carry reaches the kept bits with probability equal to the cut-off
    fraction of a bf16 step (for either sign: the bits are a sign-magnitude pattern)."""
    import torch

    x = x.float()
    noise = torch.randint(0, 1 << 16, x.shape, dtype=torch.int32, device=x.device, generator=generator)
    bits = (x.view(torch.int32) + noise) & -65536  # -65536 = 0xFFFF0000 as int32
    out = bits.view(torch.float32)
    return torch.where(torch.isfinite(x), out, x).to(torch.bfloat16)  # exact: low bits are zero


def stochastic_round(x, dtype, generator=None):
    """Any 16-bit float dtype: find x's two neighbours on its grid with nextafter, and pick the
    upper one with probability proportional to x's distance from the lower one."""
    import torch

    x = x.float()
    near = x.to(dtype)
    n32 = near.float()
    inf = torch.tensor(float("inf"), dtype=dtype, device=x.device)
    below = torch.where(n32 <= x, near, torch.nextafter(near, -inf))
    above = torch.where(n32 >= x, near, torch.nextafter(near, inf))
    lo = below.float()
    p_up = (x - lo) / (above.float() - lo)  # nan when x is on the grid: keeps `below` = x
    u = torch.rand(x.shape, device=x.device, generator=generator)
    out = torch.where(u < p_up, above, below)
    return torch.where(near.isinf() | x.isnan(), near, out)  # overflow as round-to-nearest does


def _warn(message: str) -> None:
    # one line: no source line under it (lineno 0), and repeated per run rather than once
    warnings.warn_explicit(message, PrecisionWarning, "cnnlab.training.precision", 0)


def create(cfg: Any, device) -> Precision:
    """The Precision of a PrecisionConfig on `device` (sets the process-wide CUDA TF32 flags).
    Names and combinations are checked at compose (cnnlab.config.checks.check_precision); what
    depends on the device (TF32 off CUDA, a CPU without native 16-bit) warns here."""
    import torch

    get = cfg.get if hasattr(cfg, "get") else lambda k, d=None: getattr(cfg, k, d)
    dtype, amp = get("dtype", "float32"), get("amp_dtype", None)
    scaling, rounding = get("scaler", "none"), get("rounding", "nearest")
    pure = dtype in AMP_DTYPES

    device = torch.device(device)
    name = get("name", dtype)
    if device.type == "cuda":
        # set both ways, so an fp32 run after a tf32 one in the same process is true fp32
        # (cuDNN's own default allows TF32 convolutions)
        torch.backends.cuda.matmul.allow_tf32 = bool(get("tf32", False))
        torch.backends.cudnn.allow_tf32 = bool(get("tf32", False))
    elif get("tf32", False):
        _warn(f"precision={name}: TF32 is a CUDA tensor-core mode; on {device.type} this run is plain fp32")
    low = amp or (dtype if pure else None)
    if device.type == "cpu" and low is not None:
        flags = cpu_flags()
        if flags is not None and not native_16bit(flags)[low]:
            _warn(f"precision={name}: this CPU has no native {low} arithmetic "
                  f"({'/'.join(NATIVE_16BIT[low])} not found); expect much slower training than fp32")

    scaler = None
    if scaling == "dynamic":
        scaler = torch.amp.GradScaler(device.type, init_scale=float(get("init_scale", 2.0 ** 16)),
                                      growth_interval=int(get("growth_interval", 2000)))
    generator = None
    if rounding == "stochastic":
        # the run's seed (train seeds torch before it builds the precision): reproducible runs
        generator = torch.Generator(device=device).manual_seed(torch.initial_seed())
    return Precision(name, getattr(torch, dtype), device.type,
                     amp_dtype=getattr(torch, amp) if amp else None, scaler=scaler,
                     rounding=rounding, generator=generator, pure=pure)
