"""Every check a config must pass, run at compose time before any data loads: value ranges a
type cannot express, names from allowlists and registries (optimisers, schedules, precisions,
augmentation ops, model options), combinations of keys, what the dataset registry declares
(image size, channels, data.root), and no Hydra instantiate keys anywhere. Only what needs the
machine or the loaded data is checked later (a CUDA device, the files of a dataset)."""

from __future__ import annotations

import re
from typing import Any

from cnnlab.errors import UsageError

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta")
SCHEDULES = ("none", "cosine", "step", "multistep", "onecycle", "plateau")
DTYPES = ("float64", "float32", "bfloat16", "float16")  # precision.dtype: the weights'
AMP_DTYPES = ("bfloat16", "float16")  # precision.amp_dtype (or null); also the "pure" dtypes
SCALERS = ("none", "dynamic")
ROUNDINGS = ("nearest", "stochastic")
LR_SCALINGS = ("none", "linear")
STRATEGIES = ("scratch", "linear_probe", "finetune_top", "finetune_all", "multi_probe")
PROBES = ("linear_probe", "multi_probe")  # fit on cached features, in one process
ACCELERATOR = re.compile(r"auto|(cpu|cuda|mps)(:\d+)?")


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


# filled in by cnnlab itself (the source a transfer run resolved), not a setting
_NOT_SETTINGS = ("transfer.resolved",)


def check_finite(cfg: Any) -> None:
    """Every number of the config is finite: optim.lr=inf (or a nan anywhere) would train
    non-finite weights, and no key reads inf as "no limit" (0 means off where there is one)."""
    import math

    from omegaconf import OmegaConf

    def walk(node: Any, where: str) -> None:
        if where in _NOT_SETTINGS:
            return
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{where}.{key}" if where else str(key))
        elif isinstance(node, list):
            if any(isinstance(v, float) and not math.isfinite(v) for v in node):
                shown = "[" + ",".join(str(v) for v in node) + "]"
                raise UsageError(f"{where}={shown} is not allowed: every value must be a finite number")
            for i, value in enumerate(node):
                if isinstance(value, (dict, list)):
                    walk(value, f"{where}[{i}]")
        elif isinstance(node, float) and not math.isfinite(node):
            raise UsageError(f"{where}={node} is not allowed: it must be a finite number")

    walk(OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg, "")


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
    ("trainer.threads", lambda v: v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 0),
     "auto, or 0 (torch's default) or more"),
    ("trainer.early_stop", lambda v: v >= 0, "0 (off) or more"),
    ("trainer.grad_clip", lambda v: v >= 0, "0 (off) or more"),
    ("trainer.label_smoothing", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("trainer.monitor", lambda v: v in ("val_acc", "val_loss"), "val_acc or val_loss"),
    ("trainer.test_on", lambda v: v in ("best", "last"), "best or last"),
    ("trainer.channels_last", lambda v: v in (True, False, "auto"), "true, false or auto"),
    ("trainer.compile_mode", lambda v: v in ("default", "reduce-overhead", "max-autotune"),
     "default, reduce-overhead or max-autotune"),
    ("trainer.progress", lambda v: v in ("auto", "rich", "plain", "none"), "auto, rich, plain or none"),
    ("trainer.logger", lambda v: v in ("auto", "tensorboard", "csv", "none"),
     "auto, tensorboard, csv or none"),
    ("trainer.on_nan", lambda v: v in ("stop", "skip", "rollback"), "stop, skip or rollback"),
    ("trainer.max_rollbacks", lambda v: v >= 0, "0 or more"),
    ("trainer.train_eval_size",
     lambda v: v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 0),
     "auto, 0 (off) or more"),
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
    ("trainer.accelerator", lambda v: ACCELERATOR.fullmatch(str(v)) is not None,
     "auto, cpu, cuda, cuda:N or mps"),
    ("precision.init_scale", lambda v: v > 0, "positive"),
    ("precision.growth_interval", lambda v: v >= 1, "at least 1"),
    ("aug.flip_p", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("aug.crop_padding", lambda v: v >= 0, "0 or more"),
    ("aug.crop_size", lambda v: v >= 0, "0 (the image size) or more"),
    ("aug.scale_min", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("aug.scale_max", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("aug.ratio_min", lambda v: v > 0, "positive"),
    ("aug.ratio_max", lambda v: v > 0, "positive"),
    ("aug.brightness", lambda v: v >= 0, "0 or more"),
    ("aug.contrast", lambda v: v >= 0, "0 or more"),
    ("aug.saturation", lambda v: v >= 0, "0 or more"),
    ("aug.pca_std", lambda v: v >= 0, "0 or more"),
    ("aug.cutout_size", lambda v: v >= 0, "0 or more"),
    ("aug.mixup_alpha", lambda v: v > 0, "positive"),
    ("aug.cutmix_alpha", lambda v: v > 0, "positive"),
    ("transfer.unfreeze", lambda v: v >= 0, "0 or more"),
    ("transfer.resize", lambda v: v is None or v >= 1, "at least 1"),
    ("transfer.probe_c", lambda v: len(v) > 0 and all(c > 0 for c in v), "positive values"),
    ("transfer.probe_layers", lambda v: v >= 1, "at least 1"),
    ("transfer.lr_mult", lambda v: all(m > 0 for m in v), "positive values"),
    ("data.std", lambda v: v is None or all(s > 0 for s in v), "positive values"),
]

# Names from an allowlist: (key, choices).
_CHOICES = [
    ("optim.name", OPTIMIZERS),
    ("sched.name", SCHEDULES),
    ("precision.dtype", DTYPES),
    ("precision.scaler", SCALERS),
    ("precision.rounding", ROUNDINGS),
    ("trainer.lr_scaling", LR_SCALINGS),
    ("aug.mix_mode", ("sample", "batch")),
]


def check_logger(cfg: Any) -> None:
    """trainer.logger=tensorboard asked in so many words needs its package (auto falls back)."""
    import importlib.util

    if cfg.trainer.logger == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
        raise UsageError("trainer.logger=tensorboard needs the tensorboard package: pip install "
                         "tensorboard (or trainer.logger=csv: metrics.csv alone)")


def validate(cfg: Any) -> None:
    """Every check of a composed config (see the module docstring); raise a one-line UsageError
    naming the key and what it must be. Renamed keys are moved to their new names first."""
    from omegaconf import OmegaConf

    from cnnlab.config.migration import migrate

    migrate(cfg)
    try:
        OmegaConf.resolve(cfg)  # interpolations such as ${oc.env:X} fail here, not mid-run
    except Exception as exc:
        raise UsageError(f"cannot resolve the config: {first_line(exc)}") from exc
    check_no_targets(cfg)  # no Hydra _target_: registries and allowlists only
    check_finite(cfg)  # inf/nan pass most range rules (inf > 0), and no setting means them
    for key, ok, must in _RULES:
        value = OmegaConf.select(cfg, key)
        if not ok(value):
            raise UsageError(f"{key}={value} is not allowed: it must be {must}")
    for key, choices in _CHOICES:
        value = OmegaConf.select(cfg, key)
        if value not in choices:
            raise UsageError(f"unknown {key} '{value}'; choose from: {', '.join(choices)}")
    if cfg.data.train_per_class is not None and cfg.data.train_fraction is not None:
        raise UsageError("set data.train_per_class or data.train_fraction, not both")
    check_logger(cfg)
    check_precision(cfg.precision)
    check_sched(cfg)
    devices = cfg.trainer.devices
    if isinstance(devices, int) and not isinstance(devices, bool):
        check_processes(cfg, devices)  # auto: cnnlab.training.distributed asks once it is resolved
    check_model(cfg)
    check_data(cfg.data)
    check_aug(cfg)
    check_transfer(cfg)


def check_precision(p: Any) -> None:
    """Combinations of precision keys (cnnlab/training/precision.py builds them)."""
    amp, dtype = p.amp_dtype, p.dtype
    if amp is not None and amp not in AMP_DTYPES:
        raise UsageError(f"unknown precision.amp_dtype '{amp}'; choose from: {', '.join(AMP_DTYPES)}, "
                         "or null (no autocast)")
    if amp is not None and dtype != "float32":
        raise UsageError(f"precision.amp_dtype={amp} mixes into float32 weights, not {dtype}; "
                         "for 16-bit weights use precision=bf16_pure or fp16_pure")
    if p.scaler == "dynamic" and dtype != "float32":
        raise UsageError(f"precision.scaler=dynamic needs float32 weights (GradScaler refuses "
                         f"{dtype} gradients); use precision=fp16_mixed")
    if p.rounding == "stochastic" and dtype not in AMP_DTYPES:
        raise UsageError("precision.rounding=stochastic rounds 16-bit weights; use it with "
                         "precision=bf16_pure or fp16_pure")


def start_lr(cfg: Any) -> float | None:
    """The largest learning rate the optimiser starts from, where the config alone tells it:
    optim.lr times transfer's largest multiplier and, under lr_scaling=linear, the process
    count (None: trainer.devices=auto, the machine's)."""
    lr = float(cfg.optim.lr)
    mults = list(cfg.transfer.lr_mult)
    if cfg.transfer.source and cfg.transfer.name != "scratch" and mults not in ([], [1.0]):
        lr *= max(mults)  # transfer's per-group multipliers
    if cfg.trainer.lr_scaling == "linear":
        if not isinstance(cfg.trainer.devices, int):
            return None  # devices=auto: the process count is the machine's
        lr *= cfg.trainer.devices
    return lr


def check_sched(cfg: Any) -> None:
    """The starting lr is finite (each factor is, but their product may not be), and
    sched.min_lr is below it (the step-driven schedules decay towards it)."""
    import math

    lr = start_lr(cfg)
    if lr is not None and not math.isfinite(lr):
        raise UsageError(f"optim.lr={cfg.optim.lr} is not allowed: with transfer.lr_mult and "
                         f"trainer.lr_scaling the optimiser would start from {lr}, not a finite number")
    s = cfg.sched
    if not s.min_lr > 0 or s.name in ("onecycle", "plateau") or lr is None:
        return
    if s.min_lr >= lr:
        raise UsageError(f"sched.min_lr={s.min_lr} must be below optim.lr={lr}")


def check_processes(cfg: Any, world: int) -> None:
    """What a run of `world` processes cannot do, from the config alone. Compose runs it when
    trainer.devices is a number; cnnlab.training.distributed runs it again once auto is resolved
    and adds what needs the machine (CUDA GPUs)."""
    if world == 1:
        return
    if cfg.transfer.name in PROBES:
        raise UsageError(f"transfer={cfg.transfer.name} fits its probes in one process; "
                         "use trainer.devices=1")
    accelerator = str(cfg.trainer.accelerator)
    if accelerator == "mps" or ":" in accelerator:
        raise UsageError(f"trainer.accelerator={accelerator} names one device; with trainer.devices={world} "
                         "use trainer.accelerator=auto, cuda or cpu")
    if cfg.trainer.sync_bn and accelerator == "cpu":
        raise UsageError("trainer.sync_bn=true needs CUDA (torch's SyncBatchNorm refuses CPU "
                         "tensors); on CPU use model.norm=group or a net without batch norm")
    if cfg.resume:
        raise UsageError("resume works with one process (trainer.devices=1) for now")


def check_model(cfg: Any) -> None:
    """The model is a registered classifier and takes the options set (cnnlab.models)."""
    from cnnlab import models

    opts = {k: v for k, v in cfg.model.items() if k != "name"}
    models.check_options(cfg.model.name, opts)
    entry = models.list_models().get(cfg.model.name)
    if entry is not None and entry.kind != "classifier":
        raise UsageError(f"{cfg.model.name} is a building block for `cnnlab models show`, not a classifier")


def dataset_facts(data: Any) -> tuple[int | None, int | None]:
    """(image side, channels) of data=`data.name` as the dataset registry declares them, with
    data.image_size applied; None where only the files can tell."""
    from cnnlab.data import DATASETS

    if data.name not in DATASETS:
        return None, None
    entry = DATASETS.get(data.name)
    return data.image_size or entry.size, entry.channels


def check_data(data: Any) -> None:
    """Normalisation and data.root against what the dataset registry declares."""
    from cnnlab.data import DATASETS

    entry = DATASETS.get(data.name)  # an unknown dataset fails here, naming the choices
    if entry.needs_root and not data.root:
        raise UsageError(f"data={data.name} needs data.root=<folder>")
    check_classes(data)
    if (data.mean is None) != (data.std is None):
        raise UsageError("set both data.mean and data.std, or neither")
    channels = entry.channels
    if data.mean is not None and channels and (len(data.mean) != channels or len(data.std) != channels):
        raise UsageError(f"data.mean and data.std need {channels} values for {data.name} "
                         f"({channels} channels), got {len(data.mean)} and {len(data.std)}")


def check_classes(data: Any) -> None:
    """data.classes: at least two distinct class indices, none negative. Whether each is below
    the dataset's class count only its files tell (cnnlab.data.create checks it at load)."""
    if data.get("classes") is None:
        return
    classes = list(data.classes)
    shown = "[" + ",".join(str(c) for c in classes) + "]"
    if len(classes) < 2:
        raise UsageError(f"data.classes={shown} is not allowed: it must name at least 2 classes")
    if any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in classes):
        raise UsageError(f"data.classes={shown} is not allowed: class indices are integers, 0 or more")
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
        raise UsageError(f"data.classes={shown} names class {repeated[0]} more than once")


def check_aug(cfg: Any) -> None:
    """The ops are registered, their parameters fit together and fit the dataset's images, and a
    reg preset that selects an augmentation op (reg=cutout) still has it."""
    from cnnlab.data import augment

    a = cfg.aug
    ops = list(a.ops)
    for op in ops:
        augment.OPS.get(op)  # an unknown op fails here, naming the choices
    if "scale" in ops and not a.scale_min <= a.scale_max:
        raise UsageError(f"aug.scale_min={a.scale_min} must be at most aug.scale_max={a.scale_max}")
    if "scale" in ops and not a.ratio_min <= a.ratio_max:
        raise UsageError(f"aug.ratio_min={a.ratio_min} must be at most aug.ratio_max={a.ratio_max}")
    side, channels = dataset_facts(cfg.data)
    if "crop" in ops and a.crop_size and side and a.crop_size > side + 2 * a.crop_padding:
        raise UsageError(f"aug.crop_size={a.crop_size} is larger than the {side}x{side} images "
                         f"of data={cfg.data.name} plus aug.crop_padding={a.crop_padding} on each side")
    if "pca" in ops and channels is not None and channels != 3:
        raise UsageError(f"aug op 'pca' needs 3-channel (RGB) images; data={cfg.data.name} has "
                         f"{channels} channel(s)")
    if cfg.reg in augment.list_ops() and cfg.reg not in ops:
        raise UsageError(f"reg={cfg.reg} selects aug={cfg.reg}, but aug={a.name} replaced it; "
                         f"combine them as aug=[{a.name.replace('+', ',')},{cfg.reg}]")


def check_transfer(cfg: Any) -> None:
    """transfer.* settings that need no source: strategy, a source where one is needed, the
    form of a torchvision source, the pretraining overrides (compose also composes them), and
    no augmentation for the probes."""
    t = cfg.transfer
    if t.name not in STRATEGIES:
        raise UsageError(f"unknown transfer strategy '{t.name}'; choose from: {', '.join(STRATEGIES)}")
    if t.name != "scratch" and not t.source:
        raise UsageError(f"transfer={t.name} needs transfer.source: a run folder, "
                         "torchvision:<arch>.<WEIGHTS>, imagenet_lite0 or pretrain")
    if t.name in PROBES and list(cfg.aug.ops):
        raise UsageError(f"transfer={t.name} trains on cached features of un-augmented "
                         "images; use aug=none")
    source = str(t.source or "")
    if source.startswith("torchvision:"):
        from cnnlab.models.torchvision_weights import parse

        parse(source.split(":", 1)[1])
    if source == "pretrain":
        check_pretrain(list(t.pretrain))


def check_pretrain(overrides: list[str]) -> None:
    """transfer.source=pretrain: overrides of the pretraining run that leave the model (the
    job's) and transfer alone."""
    if not overrides:
        raise UsageError("transfer.source=pretrain needs transfer.pretrain, the overrides of the "
                         "source run (e.g. transfer.pretrain=[data=shapes,trainer.epochs=15])")
    bad = [o for o in overrides if o.split("=")[0].lstrip("+") in ("transfer", "model")
           or o.startswith(("transfer.", "model."))]
    if bad:
        raise UsageError(f"transfer.pretrain sets '{bad[0]}': the source's model is the job's "
                         "model, and a pretraining run cannot transfer itself")
