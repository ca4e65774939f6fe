"""`cnnlab train`: compose -> build parts from registries -> run folder -> engine -> table row."""

from __future__ import annotations

import os
import platform
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def resolve_device(name: str):
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
        raise UsageError(f"trainer.device={name} but this machine has no CUDA device")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError(f"trainer.device={name} but this machine has no MPS device")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"trainer.device={name} is not supported; use auto, cpu, cuda, cuda:N or mps")
    return device


def peak_memory_mb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


@dataclass
class Parts:
    bundle: Any
    model: Any
    device: Any
    precision: Any
    train_loader: Any
    val_loader: Any
    test_loader: Any
    input_size: tuple = ()  # what the model trains on: the image size, or aug.crop_size

    @property
    def eval_crop(self):
        """The side val and test views are cut at (None: the whole image, as the loader yields)."""
        return None if tuple(self.input_size) == tuple(self.bundle.image_size) else min(self.input_size)


def build_parts(cfg) -> Parts:
    """Everything a run needs, built before its folder exists so bad input leaves no folder."""
    import torch

    from cnnlab import augment, data, models, precision, transfer
    from cnnlab.data.loader import make_loader

    if cfg.trainer.devices != 1:
        raise UsageError("trainer.devices > 1 (data-parallel training) is not available yet; use 1")
    device = resolve_device(cfg.trainer.device)
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    seed_everything(cfg.seed, cfg.trainer.deterministic)
    bundle = data.create(cfg.data)
    entry = models.list_models().get(cfg.model.name)
    if entry is not None and entry.kind != "classifier":
        raise UsageError(f"{cfg.model.name} is a building block for `cnnlab models show`, not a classifier")
    torch.manual_seed(cfg.seed)  # model init must not depend on what data loading drew
    size = augment.input_size(cfg.aug, bundle.image_size)
    transfer.check(cfg)
    if transfer.uses_source(cfg):
        transfer.resolve(cfg)  # sets cfg.model to the source's architecture
        model = transfer.build(cfg, bundle)
    else:
        opts = {k: v for k, v in cfg.model.items() if k != "name"}
        model = models.create(cfg.model.name, num_classes=bundle.num_classes, in_chans=bundle.in_chans,
                              input_size=size, **opts)
    prec = precision.create(cfg.precision, device)
    model = model.to(device=device, dtype=prec.param_dtype)
    if cfg.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    aug = augment.create(cfg.aug, train_images=bundle.train.images if bundle.train.in_memory
                         else bundle.train.dataset)
    common = dict(bundle=bundle, device=device, seed=cfg.seed, channels_last=cfg.trainer.channels_last,
                  workers=cfg.data.workers, dtype=prec.param_dtype)
    parts = Parts(
        bundle=bundle, model=model, device=device, precision=prec,
        train_loader=make_loader(bundle.train, cfg.trainer.batch_size, train=True, augment=aug,
                                 num_classes=bundle.num_classes, **common),
        val_loader=make_loader(bundle.val, cfg.trainer.eval_batch_size, train=False, **common),
        test_loader=make_loader(bundle.test, cfg.trainer.eval_batch_size, train=False, **common),
        input_size=size,
    )
    if len(bundle.train) < 2 or len(parts.train_loader) == 0:
        # batch norm needs two samples per batch; one image cannot train anything useful anyway
        raise UsageError(f"the training split has {len(bundle.train)} image(s): too few for one batch")
    return parts


def train(cfg, console=None, run_dir=None, job_started: float | None = None) -> dict:
    """Train one config; returns the summary (also in summary.json and outputs/results.csv).

    run_dir: where the run folder goes (a sweep job's); default outputs/runs/<time>-<id>.
    job_started: time.time() when the calling job started, to measure its overhead.
    """
    import torch
    from omegaconf import OmegaConf

    from cnnlab import engine, models, optim, results, transfer
    from cnnlab.evaluate import evaluate
    from cnnlab.progress import make_progress
    from cnnlab.run import Run, ensure_writable

    t0 = time.perf_counter()
    entered = time.time()
    ensure_writable(Path(cfg.outputs))  # fail before the data loads, not after
    parts = build_parts(cfg)
    setup_seconds = time.perf_counter() - t0
    model = parts.model
    optimizer = optim.build_optimizer(model, cfg.optim, lr_mult=transfer.lr_multipliers(model, cfg))
    monitor_mode = "max" if cfg.trainer.monitor.endswith("acc") else "min"
    scheduler, when = optim.build_scheduler(optimizer, cfg.sched, cfg.trainer.epochs,
                                            len(parts.train_loader), monitor_mode)
    run = Run.create_at(run_dir) if run_dir is not None else Run.create(cfg.outputs)
    run.write_config(cfg)
    cfg_dict = OmegaConf.to_container(cfg, resolve=True)
    b = parts.bundle
    run.log(f"data {b.name}: train {len(b.train)} val {len(b.val)} test {len(b.test)}, "
            f"{b.num_classes} classes, {b.in_chans}x{b.image_size[0]}x{b.image_size[1]}")
    summary: dict[str, Any] = {"run_id": run.id, "status": "running", "path": str(run.root)}
    progress = make_progress(cfg.trainer.progress, cfg.trainer.epochs, console)
    try:
        if cfg.transfer.name in transfer.PROBES:
            from cnnlab.transfer import probe

            fit, model = probe.fit(cfg, parts, model, run=run)
        else:
            fit = engine.fit(model, parts.train_loader, parts.val_loader, optimizer, scheduler, when,
                             cfg.trainer, parts.precision, progress, run=run, eval_crop=parts.eval_crop)
    except KeyboardInterrupt:
        summary["status"] = "interrupted"
        run.write_summary(summary)
        run.log("interrupted")
        raise
    except Exception as exc:
        summary.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        run.write_summary(summary)
        run.log(f"failed: {type(exc).__name__}: {exc}")
        raise
    finally:
        progress.close()

    if cfg.trainer.test_on == "best" and fit.best_state is not None:
        model.load_state_dict(fit.best_state)
    test = evaluate(model, parts.test_loader, views=cfg.eval.views, autocast=parts.precision.autocast,
                    crop=parts.eval_crop)
    last = fit.history[-1] if fit.history else {}
    metrics = {
        "test_acc": test["acc"], "test_top5": test["top5"], "test_loss": test["loss"],
        "best_val_acc": max((r["val_acc"] for r in fit.history), default=float("nan")),
        "val_acc": last.get("val_acc"), "train_acc": last.get("train_acc"),
        "train_loss": last.get("train_loss"), "best_epoch": fit.best_epoch,
        "epochs_run": len(fit.history), "stopped_early": fit.stopped_early,
        "params": models.count_params(model), "train_seconds": round(fit.train_seconds, 3),
        "images_per_sec": round(fit.images_seen / max(fit.train_seconds, 1e-9), 1),
        "test_ms_per_image": round(1000 * test["seconds"] / max(test["n"], 1), 4),
        "peak_mem_mb": round(peak_memory_mb(parts.device), 1),
        "wall_seconds": round(time.perf_counter() - t0, 3),
        "setup_seconds": round(setup_seconds, 3),
        # from the job's start to its first batch, less its own data and model set-up
        "overhead_seconds": round(fit.first_batch_at - (job_started or entered) - setup_seconds, 3),
        "n_train": len(b.train), "n_val": len(b.val), "n_test": len(b.test),
        # fp16 with a dynamic loss scaler: optimizer steps skipped on overflow, the final scale
        "skipped_steps": getattr(fit, "skipped_steps", 0), "loss_scale": getattr(fit, "loss_scale", 1.0),
    }
    status = "diverged" if fit.diverged else "done"
    env = {"torch": torch.__version__, "device": str(parts.device),
           "device_name": (torch.cuda.get_device_name(parts.device) if parts.device.type == "cuda"
                           else platform.processor() or platform.machine()),
           "threads": torch.get_num_threads()}
    summary.update(status=status, **metrics, **env, num_classes=b.num_classes, in_chans=b.in_chans,
                   input_size=list(parts.input_size), data_mean=[float(v) for v in b.mean],
                   data_std=[float(v) for v in b.std])
    if getattr(fit, "probe", None):
        summary["probe"] = fit.probe
    run.write_summary(summary)
    head = {"run_id": run.id, "time": time.strftime("%Y-%m-%d %H:%M:%S"), "status": status}
    results.append_row(cfg.outputs, results.make_row(cfg_dict, head, {**metrics, **env}))
    run.log(f"finished: {status}, test acc {test['acc']:.4f}")
    return summary
