"""`cnnlab train`: compose -> build parts from registries -> run folder -> engine -> table row.

trainer.devices > 1 (or a torchrun/srun rank) goes through cnnlab.training.distributed: `train` either
launches N processes that each call it again, or runs as one rank of a process group (`ctx`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnlab.errors import UsageError
from cnnlab.training.device import peak_memory_mb, resolve_device, seed_everything, use_channels_last


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
    channels_last: bool = False  # trainer.channels_last, resolved for this device and precision

    @property
    def eval_crop(self):
        """The side val and test views are cut at (None: the whole image, as the loader yields)."""
        return None if tuple(self.input_size) == tuple(self.bundle.image_size) else min(self.input_size)


def build_parts(cfg, ctx=None) -> Parts:
    """Everything a run needs, built before its folder exists so bad input leaves no folder.

    ctx: this rank's cnnlab.training.distributed.Context in a data-parallel run (its device, its shard of
    the training data, its own augmentation stream); None for one process."""
    import torch

    from cnnlab import data, models, transfer
    from cnnlab.data import augment
    from cnnlab.training import precision
    from cnnlab.data.loader import make_loader

    device = resolve_device(cfg.trainer.device) if ctx is None else ctx.device
    threads = cfg.trainer.threads or (ctx.default_threads() if ctx and device.type == "cpu" else 0)
    if threads:
        torch.set_num_threads(threads)
    seed_everything(cfg.seed, cfg.trainer.deterministic)
    bundle = data.create(cfg.data)
    entry = models.list_models().get(cfg.model.name)
    if entry is not None and entry.kind != "classifier":
        raise UsageError(f"{cfg.model.name} is a building block for `cnnlab models show`, not a classifier")
    torch.manual_seed(cfg.seed)  # model init must not depend on what data loading drew
    size = augment.input_size(cfg.aug, bundle.image_size)
    transfer.check(cfg)
    if transfer.uses_source(cfg):
        if ctx is None:
            transfer.resolve(cfg, train)  # sets cfg.model to the source's architecture
        else:  # rank 0 first: a `pretrain` source trains once, the others find it cached
            if not ctx.is_main:
                ctx.barrier()
            transfer.resolve(cfg, train)
            if ctx.is_main:
                ctx.barrier()
        model = transfer.build(cfg, bundle)
    else:
        opts = {k: v for k, v in cfg.model.items() if k != "name"}
        model = models.create(cfg.model.name, num_classes=bundle.num_classes, in_chans=bundle.in_chans,
                              input_size=size, **opts)
    prec = precision.create(cfg.precision, device)
    model = model.to(device=device, dtype=prec.param_dtype)
    channels_last = use_channels_last(cfg.trainer.channels_last, device, prec)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.trainer.compile:
        backend = cfg.trainer.compile_backend
        # in place (nn.Module.compile): state_dict keys stay the same; modes are inductor's
        model.compile(backend=backend, mode=cfg.trainer.compile_mode if backend == "inductor" else None)
    aug = augment.create(cfg.aug, train_images=bundle.train.images if bundle.train.in_memory
                         else bundle.train.dataset)
    common = dict(bundle=bundle, device=device, seed=cfg.seed, channels_last=channels_last,
                  workers=cfg.data.workers, dtype=prec.param_dtype)
    shard = {}
    if ctx is not None:
        from cnnlab.training.distributed import rank_seed

        if cfg.trainer.sync_bn:  # batch statistics over the global batch (same parameters)
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        # init above was the run seed's on every rank; dropout and augmentation now draw from
        # the rank's own stream (the epoch permutation still comes from cfg.seed)
        seed = rank_seed(cfg.seed, ctx.rank)
        if ctx.rank:
            torch.manual_seed(seed)
        shard = dict(rank=ctx.rank, world=ctx.world, aug_seed=seed + 1)
    parts = Parts(
        bundle=bundle, model=model, device=device, precision=prec,
        train_loader=make_loader(bundle.train, cfg.trainer.batch_size, train=True, augment=aug,
                                 num_classes=bundle.num_classes, **shard, **common),
        val_loader=make_loader(bundle.val, cfg.trainer.eval_batch_size, train=False, **common),
        test_loader=make_loader(bundle.test, cfg.trainer.eval_batch_size, train=False, **common),
        input_size=size, channels_last=channels_last,
    )
    if len(bundle.train) < 2 or len(parts.train_loader) == 0:
        # batch norm needs two samples per batch; one image cannot train anything useful anyway
        raise UsageError(f"the training split has {len(bundle.train)} image(s): too few for one batch")
    return parts


def train(cfg, console=None, run_dir=None, job_started: float | None = None) -> dict:
    """Train one config; returns the summary (also in summary.json and outputs/results.csv).

    run_dir: where the run folder goes (a sweep job's); default outputs/runs/<time>-<id>.
    job_started: time.time() when the calling job started, to measure its overhead.
    trainer.devices=N > 1 launches N processes and returns rank 0's summary; under torchrun or
    srun this process is one rank (cnnlab.training.distributed) and only rank 0 writes anything.
    """
    from cnnlab.training import distributed

    plan = distributed.plan(cfg)  # single | launch | join; what N processes cannot do fails here
    if plan.mode == "launch":
        from cnnlab import transfer
        from cnnlab.run import ensure_writable

        ensure_writable(Path(cfg.outputs))  # before any process starts
        if transfer.uses_source(cfg):
            transfer.resolve(cfg, train)  # once, here: a `pretrain` source trains before the workers start
        cfg.trainer.devices = plan.world  # the config records the count `auto` resolved to
        started = time.time()  # the workers' overhead_seconds and wall_seconds count from here
        return distributed.launch(cfg, plan.world, train, run_dir=run_dir,
                                  job_started=job_started or started, started=started)
    ctx = distributed.setup(plan, cfg) if plan.mode == "join" else None
    try:
        return _train(cfg, console, run_dir, job_started, ctx)
    finally:
        distributed.teardown(ctx)


def _train(cfg, console, run_dir, job_started, ctx) -> dict:
    """train()'s body, for one process or for one rank of a process group (`ctx`)."""
    import torch
    from omegaconf import OmegaConf

    from cnnlab import models, results, transfer
    from cnnlab.machine import device_name
    from cnnlab.training import engine
    from cnnlab.training import optim
    from cnnlab.training import resume
    from cnnlab.evaluation.evaluate import evaluate
    from cnnlab.training.signals import Interrupted
    from cnnlab.training.progress import make_progress
    from cnnlab.run import Run, ensure_writable

    t0 = time.perf_counter()
    entered = time.time()
    main = ctx is None or ctx.is_main  # rank 0 writes every file; the other ranks write nothing
    world = 1 if ctx is None else ctx.world
    cfg.trainer.devices = world
    if main:
        ensure_writable(Path(cfg.outputs))  # fail before the data loads, not after
    parts = build_parts(cfg, ctx)
    setup_seconds = time.perf_counter() - t0
    model = parts.model
    base_lr = cfg.optim.lr
    # linear scaling: k times the batch, k times the lr (Goyal et al. 2017, sec. 2.1)
    lr = base_lr * world if cfg.trainer.lr_scaling == "linear" else base_lr
    optim_cfg = cfg.optim if lr == base_lr else OmegaConf.merge(cfg.optim, {"lr": lr})
    optimizer = optim.build_optimizer(model, optim_cfg, lr_mult=transfer.lr_multipliers(model, cfg))
    monitor_mode = "max" if cfg.trainer.monitor.endswith("acc") else "min"
    scheduler, when = optim.build_scheduler(optimizer, cfg.sched, cfg.trainer.epochs,
                                            len(parts.train_loader), monitor_mode)
    trained = ctx.wrap(model) if ctx is not None else model  # DDP averages the gradients
    run = None
    resumed = resume.find(cfg, ctx) if cfg.get("resume") else None  # last.pt of an earlier run
    if main:
        if resumed is not None:  # the same folder: metrics.csv and checkpoints continue
            run = resumed.run
        else:
            run = Run.create_at(run_dir) if run_dir is not None else Run.create(cfg.outputs)
            run.write_config(cfg)
    cfg_dict = OmegaConf.to_container(cfg, resolve=True)
    b = parts.bundle
    batch = cfg.trainer.batch_size
    if run is not None:
        run.log(f"data {b.name}: train {len(b.train)} val {len(b.val)} test {len(b.test)}, "
                f"{b.num_classes} classes, {b.in_chans}x{b.image_size[0]}x{b.image_size[1]}")
        if ctx is not None:
            run.log(f"data-parallel: {world} processes ({ctx.backend}, {ctx.source}), batch "
                    f"{batch} per process = {world * batch} global, "
                    f"{torch.get_num_threads()} thread(s) each")
        if cfg.trainer.lr_scaling == "linear":
            run.log(f"lr_scaling=linear: optim.lr {base_lr:g} x {world} process(es) = {lr:g}")
    run_id, path = (run.id, str(run.root)) if run else (None, None)
    if ctx is not None:  # every rank's summary names the run
        run_id, path = ctx.from_main(lambda: (run_id, path))
    summary: dict[str, Any] = {"run_id": run_id, "status": "running", "path": path}
    progress = make_progress(cfg.trainer.progress if main else "none", cfg.trainer.epochs, console)
    try:
        if cfg.transfer.name in transfer.PROBES:
            from cnnlab.training import probing

            fit, model = probing.fit(cfg, parts, model, run=run)
        else:
            fit = engine.fit(trained, parts.train_loader, parts.val_loader, optimizer, scheduler,
                             when, cfg.trainer, parts.precision, progress, run=run,
                             eval_crop=parts.eval_crop, group=ctx,
                             state=resumed.state if resumed is not None else None)
    except (KeyboardInterrupt, Interrupted):
        summary["status"] = "interrupted"
        if run is not None:
            run.write_summary(summary)
            run.log("interrupted")
        raise
    except Exception as exc:
        summary.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        if run is not None:
            run.write_summary(summary)
            run.log(f"failed: {type(exc).__name__}: {exc}")
        raise
    finally:
        progress.close()

    if cfg.trainer.test_on == "best" and fit.best_state is not None:
        model.load_state_dict(fit.best_state)

    def test_pass():
        return evaluate(model, parts.test_loader, views=cfg.eval.views,
                        autocast=parts.precision.autocast, crop=parts.eval_crop)

    test = test_pass() if ctx is None else ctx.from_main(test_pass)  # rank 0, shared
    last = fit.history[-1] if fit.history else {}
    # a launched run's wall time counts from the parent's start, spawning the workers included
    launched = ctx.launched_at if ctx is not None else None
    wall = time.perf_counter() - t0 if launched is None else time.time() - launched
    metrics = {
        "test_acc": test["acc"], "test_top5": test["top5"], "test_loss": test["loss"],
        "best_val_acc": max((r["val_acc"] for r in fit.history), default=float("nan")),
        "val_acc": last.get("val_acc"), "train_acc": last.get("train_acc"),
        "train_loss": last.get("train_loss"), "best_epoch": fit.best_epoch,
        "epochs_run": len(fit.history), "stopped_early": fit.stopped_early,
        "params": models.count_params(model), "train_seconds": round(fit.train_seconds, 3),
        "images_per_sec": round(fit.images_seen / max(fit.train_seconds, 1e-9), 1),
        "test_ms_per_image": round(1000 * test["seconds"] / max(test["n"], 1), 4),
        "peak_mem_mb": round(peak_memory_mb(parts.device), 1),  # rank 0's process
        "wall_seconds": round(wall, 3),
        "setup_seconds": round(setup_seconds, 3),
        # from the job's start to its first batch, less its own data and model set-up
        "overhead_seconds": round(fit.first_batch_at - (job_started or entered) - setup_seconds, 3),
        "n_train": len(b.train), "n_val": len(b.val), "n_test": len(b.test),
        # fp16 with a dynamic loss scaler: optimizer steps skipped on overflow, the final scale
        "skipped_steps": getattr(fit, "skipped_steps", 0), "loss_scale": getattr(fit, "loss_scale", 1.0),
        # data-parallel: processes, the batch one optimizer step sees, the lr after lr_scaling
        "world_size": world, "global_batch_size": world * batch, "effective_lr": lr,
    }
    status = "diverged" if fit.diverged else "done"
    env = {"torch": torch.__version__, "device": str(parts.device),
           "device_name": device_name(parts.device),
           "threads": torch.get_num_threads(), "channels_last": parts.channels_last,
           "compiled": bool(cfg.trainer.compile)}
    summary.update(status=status, **metrics, **env, num_classes=b.num_classes, in_chans=b.in_chans,
                   input_size=list(parts.input_size), data_mean=[float(v) for v in b.mean],
                   data_std=[float(v) for v in b.std])
    if getattr(fit, "probe", None):
        summary["probe"] = fit.probe
    if run is not None:
        run.write_summary(summary)
        head = {"run_id": run.id, "time": time.strftime("%Y-%m-%d %H:%M:%S"), "status": status}
        results.append_row(cfg.outputs, results.make_row(cfg_dict, head, {**metrics, **env}))
        run.log(f"finished: {status}, test acc {test['acc']:.4f}")
    return summary
