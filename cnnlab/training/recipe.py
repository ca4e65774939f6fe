"""`cnnlab train`: compose -> build parts from registries -> run folder -> engine -> table row.

trainer.devices > 1 (or a torchrun/srun rank) goes through cnnlab.training.distributed: `train` either
launches N processes that each call it again, or runs as one rank of a process group (`ctx`).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnlab.errors import UsageError
from cnnlab.training.device import (keep_threads, peak_memory_mb, resolve_device, seed_everything,
                                    thread_plan, use_channels_last)


@dataclass
class RunParts:
    """Everything a run is built from: data, model, device, precision and loaders."""
    bundle: Any
    model: Any
    device: Any
    precision: Any
    train_loader: Any
    val_loader: Any
    test_loader: Any
    input_size: tuple = ()  # what the model trains on: the image size, or aug.crop_size
    channels_last: bool = False  # trainer.channels_last, resolved for this device and precision
    # the fixed training subset train_loss/train_acc are measured on, un-augmented, like the
    # validation split (None: trainer.train_eval_size=0)
    train_eval_loader: Any = None
    aug: Any = None  # the training augmentation (cnnlab.data.augment.create), None without ops
    threads_why: str = ""  # how trainer.threads was resolved (cnnlab.threads), for train.log

    @property
    def eval_crop(self):
        """The side val and test views are cut at (None: the whole image, as the loader yields)."""
        return None if tuple(self.input_size) == tuple(self.bundle.image_size) else min(self.input_size)


@dataclass
class Optimization:
    """The optimizer, its schedule (stepped per `when`: step | epoch) and the lr it starts from."""
    optimizer: Any
    scheduler: Any
    when: str
    lr: float  # optim.lr after trainer.lr_scaling


def build_parts(cfg, ctx=None) -> RunParts:
    """Everything a run needs, built before its folder exists so bad input leaves no folder.

    ctx: this rank's cnnlab.training.distributed.Context in a data-parallel run (its device, its shard of
    the training data, its own augmentation stream); None for one process."""
    import torch

    from cnnlab import data
    from cnnlab.data import augment
    from cnnlab.training import precision

    device = resolve_device(cfg.trainer.accelerator) if ctx is None else ctx.device
    plan = thread_plan(cfg, ctx, device)
    if plan is not None:
        torch.set_num_threads(plan.threads)
    seed_everything(cfg.seed, cfg.trainer.deterministic)
    bundle = data.create(cfg.data)
    torch.manual_seed(cfg.seed)  # model init must not depend on what data loading drew
    size = augment.input_size(cfg.aug, bundle.image_size)
    model = _create_model(cfg, bundle, size, ctx)
    prec = precision.create(cfg.precision, device)
    model, channels_last = _place_model(model, cfg, device, prec)
    aug = augment.create(cfg.aug, train_images=bundle.train.images if bundle.train.in_memory
                         else bundle.train.dataset)
    model, shard = _join_ranks(model, cfg, ctx)
    parts = RunParts(bundle=bundle, model=model, device=device, precision=prec,
                     **_loaders(cfg, bundle, aug, device, channels_last, prec.param_dtype, shard),
                     input_size=size, channels_last=channels_last, aug=aug,
                     threads_why=plan.describe() if plan is not None else "torch's default (trainer.threads=0)")
    if len(bundle.train) < 2 or len(parts.train_loader) == 0:
        # batch norm needs two samples per batch; one image cannot train anything useful anyway
        raise UsageError(f"the training split has {len(bundle.train)} image(s): too few for one batch")
    return parts


def _create_model(cfg, bundle, size, ctx):
    """The configured network, or transfer's from its source (which may train one first)."""
    from cnnlab import models, transfer

    if not transfer.uses_source(cfg):
        opts = {k: v for k, v in cfg.model.items() if k != "name"}
        return models.create(cfg.model.name, num_classes=bundle.num_classes, in_chans=bundle.in_chans,
                             input_size=size, **opts)
    if ctx is None:
        transfer.resolve(cfg, train)  # sets cfg.model to the source's architecture
    else:  # rank 0 first: a `pretrain` source trains once, the others find it cached
        if not ctx.is_main:
            ctx.barrier()
        transfer.resolve(cfg, train)
        if ctx.is_main:
            ctx.barrier()
    return transfer.build(cfg, bundle)


def _place_model(model, cfg, device, prec):
    """(model on the device in the precision's dtype and memory format, compiled if asked;
    whether it is channels_last)."""
    import torch

    model = model.to(device=device, dtype=prec.param_dtype)
    channels_last = use_channels_last(cfg.trainer.channels_last, device, prec)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.trainer.compile:
        backend = cfg.trainer.compile_backend
        # in place (nn.Module.compile): state_dict keys stay the same; modes are inductor's
        model.compile(backend=backend, mode=cfg.trainer.compile_mode if backend == "inductor" else None)
    return model, channels_last


def _join_ranks(model, cfg, ctx):
    """(model, the training loader's shard arguments) for this rank; unchanged for one process."""
    if ctx is None:
        return model, {}
    import torch

    from cnnlab.training.distributed import rank_seed

    if cfg.trainer.sync_bn:  # batch statistics over the global batch (same parameters)
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    # init above was the run seed's on every rank; dropout and augmentation now draw from
    # the rank's own stream (the epoch permutation still comes from cfg.seed)
    seed = rank_seed(cfg.seed, ctx.rank)
    if ctx.rank:
        torch.manual_seed(seed)
    return model, dict(rank=ctx.rank, world=ctx.world, aug_seed=seed + 1)


def _loaders(cfg, bundle, aug, device, channels_last: bool, dtype, shard: dict) -> dict:
    from cnnlab.data.loader import make_loader

    common = dict(bundle=bundle, device=device, seed=cfg.seed, channels_last=channels_last,
                  workers=cfg.data.workers, dtype=dtype)
    subset = train_eval_subset(cfg, bundle)
    return dict(
        train_loader=make_loader(bundle.train, cfg.trainer.batch_size, train=True, augment=aug,
                                 num_classes=bundle.num_classes, **shard, **common),
        val_loader=make_loader(bundle.val, cfg.trainer.eval_batch_size, train=False, **common),
        test_loader=make_loader(bundle.test, cfg.trainer.eval_batch_size, train=False, **common),
        # never sharded: rank 0 scores all of it, as it does the validation split
        train_eval_loader=None if subset is None else make_loader(
            subset, cfg.trainer.eval_batch_size, train=False, **common))


def train_eval_size(setting, n_train: int, n_val: int) -> int:
    """How many training images train_loss/train_acc are measured on (trainer.train_eval_size):
    auto is as many as the validation split has but at least 1000, never more than n_train."""
    if setting == "auto":
        return min(n_train, max(n_val, 1000))
    return min(n_train, int(setting))


def train_eval_subset(cfg, bundle):
    """The training images train_loss/train_acc are measured on (None: trainer.train_eval_size=0):
    the first N of a permutation drawn from data.split_seed (not the run seed, so every run of a
    sweep and every epoch scores the same images), in training-split order. A plain seeded draw,
    not a stratified one: at N >= 1000 the class shares are close, and the rule is one line to
    reproduce."""
    import torch

    size = train_eval_size(cfg.trainer.train_eval_size, len(bundle.train), len(bundle.val))
    if size <= 0:
        return None
    gen = torch.Generator().manual_seed(int(cfg.data.split_seed))
    index = torch.randperm(len(bundle.train), generator=gen)[:size].sort().values
    return bundle.train.take(index)


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
    from cnnlab.training import resume
    from cnnlab.run import ensure_writable

    t0 = time.perf_counter()
    entered = time.time()
    main = ctx is None or ctx.is_main  # rank 0 writes every file; the other ranks write nothing
    world = 1 if ctx is None else ctx.world
    cfg.trainer.devices = world
    if main and cfg.get("resume"):
        recorded = _resume_target(cfg)
        if recorded is not None:  # a finished run that lacked its row: appended, nothing to train
            return recorded
    if main:
        ensure_writable(Path(cfg.outputs))  # fail before the data loads, not after
    parts = build_parts(cfg, ctx)
    setup_seconds = time.perf_counter() - t0
    opt = _optimization(cfg, parts, world)
    trained = ctx.wrap(parts.model) if ctx is not None else parts.model  # DDP averages the gradients
    resumed = resume.find(cfg, ctx) if cfg.get("resume") else None  # last.pt of an earlier run
    if resumed is not None and parts.device.type == "cpu":
        parts.threads_why = keep_threads(cfg, resumed.state) or parts.threads_why
    run = _open_run(cfg, run_dir, resumed) if main else None
    try:
        return _train_in(cfg, console, run, parts, opt, trained, resumed, ctx,
                         (t0, entered, job_started, setup_seconds))
    finally:
        if run is not None:  # on every path out: the next writer may have the folder
            run.close()


def _train_in(cfg, console, run, parts, opt, trained, resumed, ctx, clocks) -> dict:
    """Train, test and record in an open run folder (`run`: None on ranks other than 0)."""
    from omegaconf import OmegaConf

    from cnnlab.training.progress import make_progress

    t0, entered, job_started, setup_seconds = clocks
    main = ctx is None or ctx.is_main
    world = 1 if ctx is None else ctx.world
    cfg_dict = OmegaConf.to_container(cfg, resolve=True)
    if run is not None:
        _log_start(run, cfg, parts, ctx, world, opt.lr)
    summary = _running_summary(run, ctx)
    progress = make_progress(cfg.trainer.progress if main else "none", cfg.trainer.epochs, console)
    if run is not None:
        line = start_line(run, cfg, parts, world)
        run.log(line)
        progress.begin(line)
    logger = _open_logger(cfg, run, parts, resumed)
    try:
        fit, model = _fit(cfg, parts, trained, opt, progress, run, ctx, resumed, summary, logger)
        test = _test(cfg, parts, model, fit, ctx)
        _log_end(logger, run, parts, model, fit, test)
    finally:
        logger.close()  # on every path: a sweep of many jobs leaves no writer open
    # a launched run's wall time counts from the parent's start, spawning the workers included
    launched = ctx.launched_at if ctx is not None else None
    wall = time.perf_counter() - t0 if launched is None else time.time() - launched
    seconds = {"wall_seconds": round(wall, 3), "setup_seconds": round(setup_seconds, 3),
               # from the job's start to its first batch, less its own data and model set-up
               "overhead_seconds": round(fit.first_batch_at - (job_started or entered) - setup_seconds, 3)}
    metrics = _metrics(cfg, parts, model, fit, test, seconds, world, opt.lr)
    _finish(cfg, cfg_dict, run, parts, fit, test, metrics, summary)
    return summary


def _optimization(cfg, parts: RunParts, world: int) -> Optimization:
    from omegaconf import OmegaConf

    from cnnlab import transfer
    from cnnlab.training import optim

    model = parts.model
    base_lr = cfg.optim.lr
    # linear scaling: k times the batch, k times the lr (Goyal et al. 2017, sec. 2.1)
    lr = base_lr * world if cfg.trainer.lr_scaling == "linear" else base_lr
    optim_cfg = cfg.optim if lr == base_lr else OmegaConf.merge(cfg.optim, {"lr": lr})
    optimizer = optim.build_optimizer(model, optim_cfg, lr_mult=transfer.lr_multipliers(model, cfg))
    monitor_mode = "max" if cfg.trainer.monitor.endswith("acc") else "min"
    scheduler, when = optim.build_scheduler(optimizer, cfg.sched, cfg.trainer.epochs,
                                            len(parts.train_loader), monitor_mode)
    return Optimization(optimizer, scheduler, when, lr)


def _open_run(cfg, run_dir, resumed):
    """The run folder: a resumed run's own (metrics.csv and checkpoints continue), or a new one."""
    from cnnlab.run import Run

    if resumed is not None:
        return resumed.run
    run = Run.create_at(run_dir) if run_dir is not None else Run.create(cfg.outputs)
    try:
        run.write_config(cfg)
    except BaseException:  # a folder without its config.yaml is no run: leave none behind
        import shutil

        run.close()  # its lock goes with it
        shutil.rmtree(run.root, ignore_errors=True)
        raise
    return run


def start_line(run, cfg, parts: RunParts, world: int) -> str:
    """The line a run starts with: where its folder is, what trains on what, with what."""
    import torch

    from cnnlab import models

    b = parts.bundle
    procs = f", {world} processes" if world > 1 else ""
    return (f"run {run.root}: {cfg.model.name} ({models.count_params(parts.model):,} parameters) "
            f"on {parts.device}{procs}, {torch.get_num_threads()} thread(s); data {b.name}: "
            f"train {len(b.train)} val {len(b.val)} test {len(b.test)}, {cfg.trainer.epochs} "
            f"epochs of batch {cfg.trainer.batch_size}")


def _open_logger(cfg, run, parts: RunParts, resumed):
    """The run's tracker beside metrics.csv (trainer.logger; cnnlab.training.loggers), on rank 0
    only; a resumed run's TensorBoard hides what the interrupted sitting wrote past last.pt. A new
    run's tracker also gets the augmentation preview (the first training images and draws of
    the preset, from their own generator: the training stream is not touched)."""
    from omegaconf import OmegaConf

    from cnnlab.training import loggers

    kind = cfg.trainer.get("logger", "auto")
    purge = int(resumed.state["epoch"]) + 1 if resumed is not None else None
    logger = loggers.open_logger(kind, run.root if run is not None else None,
                                 OmegaConf.to_yaml(cfg), purge)
    if run is not None and logger.folder is not None:
        run.log(f"tensorboard: {logger.folder} (tensorboard --logdir {Path(cfg.outputs) / 'runs'})")
    if logger.folder is not None and resumed is None:
        from cnnlab.data.preview import preview_figure

        try:
            fig, _ = preview_figure(parts.bundle, parts.aug, cfg.aug, cfg.data.name,
                                    images=loggers.PREVIEW_IMAGES, copies=loggers.PREVIEW_COPIES,
                                    seed=cfg.seed)
            logger.preview(fig)
        except Exception as exc:  # an extra: a run does not fail for it
            run.log(f"tensorboard: no augmentation preview ({type(exc).__name__}: {exc})")
    return logger


def _log_end(logger, run, parts: RunParts, model, fit, test: dict) -> None:
    """The test scores and, where it is cheap, the test split's confusion matrix to the tracker."""
    from cnnlab.training import loggers

    if logger.folder is None:
        return
    metrics = {"test_acc": test["acc"], "test_top5": test["top5"], "test_loss": test["loss"]}
    step = len(fit.history)
    b = parts.bundle
    matrix = None
    if len(b.test) <= loggers.CONFUSION_MAX_IMAGES and b.num_classes <= loggers.CONFUSION_MAX_CLASSES:
        try:
            matrix = loggers.confusion_matrix(model, parts.test_loader, b.num_classes,
                                              crop=parts.eval_crop, autocast=parts.precision.autocast)
        except Exception as exc:  # an extra: a finished run does not fail for it
            run.log(f"tensorboard: no confusion matrix ({type(exc).__name__}: {exc})")
    logger.finish(metrics, step, matrix, list(b.class_names))


def _log_start(run, cfg, parts: RunParts, ctx, world: int, lr: float) -> None:
    import torch

    b = parts.bundle
    batch = cfg.trainer.batch_size
    run.log(f"data {b.name}: train {len(b.train)} val {len(b.val)} test {len(b.test)}, "
            f"{b.num_classes} classes, {b.in_chans}x{b.image_size[0]}x{b.image_size[1]}"
            + (f", read from {b.info['source']}" if b.info.get("source") else ""))
    if parts.device.type == "cpu":
        run.log(f"threads: {parts.threads_why}")
    if ctx is not None:
        run.log(f"data-parallel: {world} processes ({ctx.backend}, {ctx.source}), batch "
                f"{batch} per process = {world * batch} global, "
                f"{torch.get_num_threads()} thread(s) each")
    if cfg.trainer.lr_scaling == "linear":
        run.log(f"lr_scaling=linear: optim.lr {cfg.optim.lr:g} x {world} process(es) = {lr:g}")
    _log_train_eval(run, cfg, parts)


def _log_train_eval(run, cfg, parts: RunParts) -> None:
    """What train_loss/train_acc mean in this run's rows."""
    from cnnlab import transfer

    if cfg.transfer.name in transfer.PROBES:
        run.log("train_loss/train_acc (and running_*): the probe's scores on every training "
                "image's features, in eval mode")
    elif parts.train_eval_loader is not None:
        run.log(f"train_loss/train_acc: eval mode, un-augmented, on a fixed "
                f"{parts.train_eval_loader.num_samples} of the {len(parts.bundle.train)} training "
                f"images (trainer.train_eval_size={cfg.trainer.train_eval_size}, drawn with "
                f"data.split_seed={cfg.data.split_seed}); running_loss/running_acc: the epoch's "
                "train-mode running averages")
    else:
        run.log("trainer.train_eval_size=0: train_loss/train_acc are the epoch's train-mode "
                "running averages (dropout and augmentation on, weights changing), the same "
                "numbers as running_loss/running_acc")


def _running_summary(run, ctx) -> dict[str, Any]:
    run_id, path = (run.id, str(run.root)) if run else (None, None)
    if ctx is not None:  # every rank's summary names the run
        run_id, path = ctx.from_main(lambda: (run_id, path))
    return {"run_id": run_id, "status": "running", "path": path}


def _fit(cfg, parts: RunParts, trained, opt: Optimization, progress, run, ctx, resumed, summary,
         logger=None):
    """(engine.FitResult, the model to test): the engine's fit, or the probes' for a probe
    strategy. An interrupted or failed run's summary says so."""
    from cnnlab import transfer
    from cnnlab.training import engine
    from cnnlab.training.signals import Interrupted

    try:
        if cfg.transfer.name in transfer.PROBES:
            from cnnlab.training import probing

            return probing.fit(cfg, parts, parts.model, run=run)
        fit = engine.fit(trained, parts.train_loader, parts.val_loader, opt.optimizer, opt.scheduler,
                         opt.when, cfg.trainer, parts.precision, progress, run=run,
                         eval_crop=parts.eval_crop, ctx=ctx,
                         state=resumed.state if resumed is not None else None,
                         train_eval_loader=parts.train_eval_loader, logger=logger)
        return fit, parts.model
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


def _test(cfg, parts: RunParts, model, fit, ctx) -> dict:
    """The test split's scores, of the best or the last weights (trainer.test_on)."""
    from cnnlab.evaluation.evaluate import evaluate

    if cfg.trainer.test_on == "best" and fit.best_state is not None:
        model.load_state_dict(fit.best_state)

    def test_pass():
        return evaluate(model, parts.test_loader, views=cfg.eval.views,
                        autocast=parts.precision.autocast, crop=parts.eval_crop)

    return test_pass() if ctx is None else ctx.from_main(test_pass)  # rank 0, shared


def _metrics(cfg, parts: RunParts, model, fit, test: dict, seconds: dict, world: int,
             lr: float) -> dict:
    """The run's numbers: summary.json's and its results row's."""
    from cnnlab import models

    b = parts.bundle
    last = fit.history[-1] if fit.history else {}
    return {
        "test_acc": test["acc"], "test_top5": test["top5"], "test_loss": test["loss"],
        "best_val_acc": max((r["val_acc"] for r in fit.history), default=float("nan")),
        "val_acc": last.get("val_acc"), "train_acc": last.get("train_acc"),
        "train_loss": last.get("train_loss"),
        # the last epoch's train-mode running averages (train_* without trainer.train_eval_size)
        "running_acc": last.get("running_acc"), "running_loss": last.get("running_loss"),
        "best_epoch": fit.best_epoch,
        "epochs_run": len(fit.history), "stopped_early": fit.stopped_early,
        "params": models.count_params(model), "train_seconds": round(fit.train_seconds, 3),
        "images_per_sec": round(fit.images_seen / max(fit.train_seconds, 1e-9), 1),
        "test_ms_per_image": round(1000 * test["seconds"] / max(test["n"], 1), 4),
        "peak_mem_mb": round(peak_memory_mb(parts.device), 1),  # rank 0's process
        **seconds,
        "n_train": len(b.train), "n_val": len(b.val), "n_test": len(b.test),
        "n_train_eval": _n_train_eval(cfg, parts),  # the images train_acc is measured on
        # fp16 with a dynamic loss scaler: optimizer steps skipped on overflow, the final scale
        "skipped_steps": getattr(fit, "skipped_steps", 0), "loss_scale": getattr(fit, "loss_scale", 1.0),
        # trainer.on_nan: steps with a non-finite loss, reloads of the last good epoch; and the
        # files data.on_bad_image=skip left out because they do not decode
        "nan_steps": getattr(fit, "nan_steps", 0), "rollbacks": getattr(fit, "rollbacks", 0),
        "skipped_images": int(b.info.get("skipped_images", 0)),
        # data-parallel: processes, the batch one optimizer step sees, the lr after lr_scaling
        "world_size": world, "global_batch_size": world * cfg.trainer.batch_size, "effective_lr": lr,
    }


def _n_train_eval(cfg, parts: RunParts) -> int:
    """How many training images train_acc was measured on in eval mode (0: it is the running
    average); a probe strategy scores its probe on every training image's features."""
    from cnnlab import transfer

    if cfg.transfer.name in transfer.PROBES:
        return len(parts.bundle.train)
    return 0 if parts.train_eval_loader is None else parts.train_eval_loader.num_samples


def _finish(cfg, cfg_dict: dict, run, parts: RunParts, fit, test: dict, metrics: dict,
            summary: dict) -> None:
    """The final summary (summary.json) and the run's results row."""
    import torch

    from cnnlab import results
    from cnnlab.machine import device_name

    b = parts.bundle
    status = _final_status(run, fit, test)
    env = {"torch": torch.__version__, "device": str(parts.device),
           "device_name": device_name(parts.device),
           "threads": torch.get_num_threads(), "channels_last": parts.channels_last,
           "compiled": bool(cfg.trainer.compile)}
    summary.update(status=status, **metrics, **env, num_classes=b.num_classes, in_chans=b.in_chans,
                   input_size=list(parts.input_size), data_mean=[float(v) for v in b.mean],
                   data_std=[float(v) for v in b.std])
    if getattr(fit, "probe", None):
        summary["probe"] = fit.probe
    choices = _preset_choices(cfg, run)
    if choices:
        summary["choices"] = choices
    summary["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    if run is not None:
        # summary.json first, marked not yet recorded: a crash before the row is appended leaves
        # a finished run whose row `resume` appends from it (_record_finished)
        run.write_summary({**summary, "recorded": False})
        results.append_row(cfg.outputs, row_of(cfg_dict, summary))
        summary["recorded"] = True
        run.write_summary(summary)
        run.log(f"finished: {status}, test acc {test['acc']:.4f}")


# summary.json keys that are not results columns (the row has its own head; a probe's table
# and the data statistics stay in the summary)
SUMMARY_ONLY = ("run_id", "status", "path", "finished", "recorded", "num_classes", "in_chans",
                "input_size", "data_mean", "data_std", "probe", "error", "choices")


def row_of(cfg_dict: dict, summary: dict) -> dict:
    """A finished run's results row, from its summary (metrics, environment, the presets chosen)
    and config. Its head names the run (cnnlab.results.run_identity): a sweep job's run_id is
    <sweep>/<job>, every row has the run folder's path relative to the outputs folder."""
    from cnnlab import results

    who = results.run_identity(cfg_dict.get("outputs"), summary.get("path"), summary.get("run_id"))
    head = {"run_id": who["run_id"], "time": summary.get("finished"), "status": summary["status"],
            "path": who["path"], "sweep": who["sweep"], "job": who["job"]}
    numbers = {k: v for k, v in summary.items() if k not in SUMMARY_ONLY}
    choices = summary.get("choices") or cfg_dict.get("choices")
    return results.make_row(cfg_dict, head, numbers, choices=choices)


def _preset_choices(cfg, run) -> dict:
    """The preset chosen for each config group (`optim: nesterov`), as Hydra recorded it: the
    runtime choices of the Hydra job this run is the run of (a sweep job's <job>/run), or a
    `choices` node the config carries; {} when neither is known."""
    from omegaconf import OmegaConf

    if run is not None:
        try:
            from hydra.core.hydra_config import HydraConfig

            if HydraConfig.initialized():
                hc = HydraConfig.get()
                # not a run the job trains on the side (a transfer source's pretraining run)
                if Path(hc.runtime.output_dir).resolve() == Path(run.root).resolve().parent:
                    return {str(k): v for k, v in OmegaConf.to_container(hc.runtime.choices).items()}
        except Exception:  # no Hydra job, or one without runtime choices: fall through
            pass
    if "choices" in cfg and cfg.choices is not None:
        return dict(OmegaConf.to_container(cfg.choices))
    return {}


def _final_status(run, fit, test: dict) -> str:
    """diverged when the loop said so, or when the test pass scores a non-finite loss (weights
    that the epochs' checks let through); else done."""
    if fit.diverged:
        return "diverged"
    if test.get("n") and not math.isfinite(test["loss"]):
        if run is not None:
            run.log("the test loss is not finite: the run diverged")
        return "diverged"
    return "done"


def _resume_target(cfg) -> dict | None:
    """Before a resumed run starts: its results row goes to the table of the run's own outputs
    folder (a relative `outputs` in its config.yaml is the folder it was started from, not the
    current one); and a run that finished without its row only gets the row appended (returns
    its summary; None: train as usual)."""
    from cnnlab.training import resume

    spec = str(cfg.resume)
    if spec != "auto":
        cfg.outputs = str(resume.own_outputs(resume.run_root(spec), cfg.outputs))
    root = resume.unrecorded(cfg)
    return _record_finished(root, cfg) if root is not None else None


def _record_finished(root: Path, cfg) -> dict:
    """Append the results row of the finished run `root` from its summary.json and config.yaml
    (nothing is trained); the summary, marked recorded, is returned."""
    from omegaconf import OmegaConf

    from cnnlab import results
    from cnnlab.run import Run
    from cnnlab.training import resume

    run = Run(root)
    summary = json.loads((root / "summary.json").read_text(encoding="utf-8"))
    # an earlier version's summary has no end time: the file's is when the run ended
    summary.setdefault("finished", time.strftime(
        "%Y-%m-%d %H:%M:%S", time.localtime((root / "summary.json").stat().st_mtime)))
    outputs = resume.own_outputs(root, cfg.outputs)
    cfg_dict = OmegaConf.to_container(OmegaConf.load(root / "config.yaml"), resolve=True)
    cfg_dict["outputs"] = str(outputs)
    row = row_of(cfg_dict, {**summary, "path": str(root)})
    # a crash after the append, before the mark (an older row of a sweep job has run_id `run`)
    if not resume.has_row(outputs, row["run_id"]):
        results.append_row(outputs, row)
        run.log(f"resume: the run had finished ({summary['status']}) without its results row; "
                f"appended it to {results.table_path(outputs)}")
    summary["recorded"] = True
    run.write_summary(summary)
    return summary
