"""Optimisers and learning-rate schedules, built by name from an allowlist (no arbitrary classes).

Every schedule but `plateau` is a per-step multiplier, so warm-up and decay are smooth and a
resumed run lands on the same learning rate; `plateau` steps once per epoch on the monitored
validation metric.
"""

from __future__ import annotations

import math
from typing import Any

from cnnlab.errors import UsageError

from cnnlab.config.checks import OPTIMIZERS, SCHEDULES  # noqa: F401  (the allowlists)


def param_groups(model, weight_decay: float, no_decay_norm_bias: bool, lr: float | None = None,
                 lr_mult: dict | None = None) -> list[dict]:
    """Groups of the trainable parameters: one, or two when norm weights and biases (1-d
    tensors) are kept free of decay; with `lr_mult` ({id(param): multiplier}, transfer's
    discriminative rates) each is split further by multiplier and gets lr * multiplier."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise UsageError("the model has no trainable parameters (everything is frozen)")
    split = no_decay_norm_bias and weight_decay != 0
    groups: dict[tuple, list] = {}
    for p in params:
        decay = 0.0 if split and p.ndim <= 1 else weight_decay
        mult = lr_mult.get(id(p), 1.0) if lr_mult else None
        groups.setdefault((decay, mult), []).append(p)
    out = []
    for (decay, mult), ps in groups.items():
        group = {"params": ps, "weight_decay": decay}
        if mult is not None:
            group["lr"] = lr * mult
            group["lr_mult"] = mult
        out.append(group)
    return out


def build_optimizer(model, cfg: Any, lr_mult: dict | None = None):
    import torch

    groups = param_groups(model, cfg.weight_decay, cfg.no_decay_norm_bias, cfg.lr, lr_mult)
    name = cfg.name
    if name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                               nesterov=cfg.nesterov and cfg.momentum > 0)
    if name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps,
                                   momentum=cfg.momentum)
    if name == "adagrad":
        return torch.optim.Adagrad(groups, lr=cfg.lr, eps=cfg.eps)
    if name == "adadelta":
        return torch.optim.Adadelta(groups, lr=cfg.lr, rho=cfg.rho, eps=cfg.eps)
    raise UsageError(f"unknown optimizer '{name}'; choose from: {', '.join(OPTIMIZERS)}")


def lr_multiplier(cfg: Any, epochs: int, steps_per_epoch: int):
    """The per-step learning-rate multiplier of a step-driven schedule, as a function of step."""
    steps_per_epoch = max(1, steps_per_epoch)
    total = epochs * steps_per_epoch
    warm = int(round(cfg.warmup_epochs * steps_per_epoch))

    def warmup(step: int) -> float | None:
        return (step + 1) / warm if step < warm else None

    if cfg.name == "none":
        return lambda step: warmup(step) or 1.0
    if cfg.name == "cosine":
        def cosine(step: int) -> float:
            w = warmup(step)
            if w is not None:
                return w
            progress = min(1.0, (step - warm) / max(1, total - warm))
            return 0.5 * (1 + math.cos(math.pi * progress))
        return cosine
    if cfg.name == "step":
        return lambda step: warmup(step) or cfg.gamma ** ((step // steps_per_epoch) // cfg.step_size)
    if cfg.name == "multistep":
        marks = sorted(cfg.milestones)
        return lambda step: warmup(step) or cfg.gamma ** sum(
            step // steps_per_epoch >= m for m in marks)
    raise UsageError(f"unknown schedule '{cfg.name}'; choose from: {', '.join(SCHEDULES)}")


def build_scheduler(optimizer, cfg: Any, epochs: int, steps_per_epoch: int, monitor_mode: str):
    """Returns (scheduler, when): when is 'step' or 'epoch' (plateau, stepped on the metric)."""
    import torch

    if cfg.name == "onecycle":
        max_lr = [g["lr"] for g in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=max_lr, total_steps=max(2, epochs * steps_per_epoch),
            # cycle_momentum=False: the optimiser's own momentum/betas stay as configured (and
            # Adagrad/Adadelta, which have neither, work)
            pct_start=cfg.pct_start, cycle_momentum=False), "step"
    if cfg.name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode=monitor_mode, factor=cfg.factor, patience=cfg.patience), "epoch"
    base = lr_multiplier(cfg, epochs, steps_per_epoch)
    if cfg.min_lr > 0:
        lr0 = max(g["lr"] for g in optimizer.param_groups)
        if cfg.min_lr >= lr0:
            raise UsageError(f"sched.min_lr={cfg.min_lr} must be below optim.lr={lr0}")
        floor = cfg.min_lr / lr0

        def mult(step: int, _base=base) -> float:
            return floor + (1 - floor) * _base(step)
    else:
        mult = base
    return torch.optim.lr_scheduler.LambdaLR(optimizer, mult), "step"
