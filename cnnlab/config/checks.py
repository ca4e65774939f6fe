"""Every check a config must pass, run at compose time before any data loads: value ranges a
type cannot express, combinations of keys, and no Hydra instantiate keys anywhere."""

from __future__ import annotations

from typing import Any

from cnnlab.errors import UsageError

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta")
SCHEDULES = ("none", "cosine", "step", "multistep", "onecycle", "plateau")


# Hydra's instantiate keys: a config holding one could name any importable callable (os.system)
INSTANTIATE_KEYS = ("_target_", "_partial_", "_args_", "_recursive_", "_convert_")


def check_no_targets(cfg: Any, where: str = "") -> None:
    """Refuse Hydra instantiate keys anywhere in a config: cnnlab builds optimizers and schedules
    from the allowlists OPTIMIZERS/SCHEDULES and everything else from registries, by name."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(cfg, (DictConfig, ListConfig)):
        cfg = OmegaConf.to_container(cfg, resolve=False)
    items = cfg.items() if isinstance(cfg, dict) else enumerate(cfg) if isinstance(cfg, list) else ()
    for key, value in items:
        name = f"{where}.{key}" if where else str(key)
        if key in INSTANTIATE_KEYS:
            raise UsageError(f"config key '{name}' is not allowed: cnnlab never instantiates classes "
                             f"from configs; choose optim.name from {', '.join(OPTIMIZERS)} and "
                             f"sched.name from {', '.join(SCHEDULES)}")
        check_no_targets(value, name)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# Ranges that types cannot express: (key, check, what it must be).
_RULES = [
    ("seed", lambda v: 0 <= v < 2**32, "in [0, 2**32)"),
    ("model.norm_groups", lambda v: v is None or v >= 1, "at least 1"),
    ("model.width", lambda v: v is None or v > 0, "positive"),
    ("model.dropout", lambda v: v is None or 0 <= v < 1, "in [0, 1)"),
    ("optim.eps", lambda v: v > 0, "positive"),
    ("optim.betas", lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "two values in [0, 1)"),
    ("optim.alpha", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("optim.rho", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("sched.factor", lambda v: 0 < v < 1, "in (0, 1)"),
    ("sched.min_lr", lambda v: v >= 0, "0 or more"),
    ("trainer.epochs", lambda v: v >= 1, "at least 1"),
    ("trainer.batch_size", lambda v: v >= 1, "at least 1"),
    ("trainer.eval_batch_size", lambda v: v >= 1, "at least 1"),
    ("trainer.devices", lambda v: v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1),
     "at least 1 or auto"),
    ("trainer.threads", lambda v: v >= 0, "0 (torch's default) or more"),
    ("trainer.early_stop", lambda v: v >= 0, "0 (off) or more"),
    ("trainer.grad_clip", lambda v: v >= 0, "0 (off) or more"),
    ("trainer.label_smoothing", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("trainer.monitor", lambda v: v in ("val_acc", "val_loss"), "val_acc or val_loss"),
    ("trainer.test_on", lambda v: v in ("best", "last"), "best or last"),
    ("trainer.channels_last", lambda v: v in (True, False, "auto"), "true, false or auto"),
    ("trainer.compile_mode", lambda v: v in ("default", "reduce-overhead", "max-autotune"),
     "default, reduce-overhead or max-autotune"),
    ("trainer.progress", lambda v: v in ("auto", "rich", "plain", "none"), "auto, rich, plain or none"),
    ("trainer.on_nan", lambda v: v in ("stop", "skip", "rollback"), "stop, skip or rollback"),
    ("trainer.max_rollbacks", lambda v: v >= 0, "0 or more"),
    ("data.on_bad_image", lambda v: v in ("raise", "skip"), "raise or skip"),
    ("data.val_fraction", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("data.test_fraction", lambda v: 0 < v < 1, "in (0, 1)"),
    ("data.train_per_class", lambda v: v is None or v >= 1, "at least 1"),
    ("data.train_fraction", lambda v: v is None or 0 < v <= 1, "in (0, 1]"),
    ("data.image_size", lambda v: v is None or v >= 1, "at least 1"),
    ("data.num_train", lambda v: v is None or v >= 1, "at least 1"),
    ("data.num_test", lambda v: v is None or v >= 1, "at least 1"),
    ("data.in_memory", lambda v: str(v).lower() in ("auto", "true", "false"), "auto, true or false"),
    ("data.max_memory_gb", lambda v: v > 0, "positive"),
    ("data.workers", lambda v: v >= 0, "0 or more"),
    ("optim.lr", lambda v: v > 0, "positive"),
    ("optim.weight_decay", lambda v: v >= 0, "0 or more"),
    ("optim.momentum", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("sched.warmup_epochs", lambda v: v >= 0, "0 or more"),
    ("sched.step_size", lambda v: v >= 1, "at least 1"),
    ("sched.gamma", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("sched.pct_start", lambda v: 0 < v < 1, "in (0, 1)"),
    ("sched.patience", lambda v: v >= 0, "0 or more"),
]


def validate(cfg: Any) -> None:
    """Check value ranges; raise UsageError naming the key and what it must be."""
    from omegaconf import OmegaConf

    try:
        OmegaConf.resolve(cfg)  # interpolations such as ${oc.env:X} fail here, not mid-run
    except Exception as exc:
        raise UsageError(f"cannot resolve the config: {first_line(exc)}") from exc
    check_no_targets(cfg)  # no Hydra _target_: registries and allowlists only
    for key, ok, must in _RULES:
        value = OmegaConf.select(cfg, key)
        if not ok(value):
            raise UsageError(f"{key}={value} is not allowed: it must be {must}")
    if cfg.data.train_per_class is not None and cfg.data.train_fraction is not None:
        raise UsageError("set data.train_per_class or data.train_fraction, not both")
