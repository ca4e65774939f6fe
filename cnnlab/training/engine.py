"""The training loop: epochs of train steps, a validation pass, best-weights tracking, early
stopping, checkpoints and one metrics row per epoch. `fit` -> `_epochs` reads top to bottom; each
feature is one small function below it.

Data-parallel runs (cnnlab.training.distributed) pass their `ctx`: the model is then the DDP wrapper,
the epoch's train sums are added over the ranks, and validation runs on rank 0 and is shared,
so every rank takes the same early-stop, schedule and best-weights decisions.

train_loss/train_acc in a row are the epoch's end weights scored in eval mode on a fixed,
un-augmented subset of the training split (`train_eval_loader`, measured like validation), so
train_acc - test_acc shows overfitting; the running train-mode averages of the epoch (dropout and
augmentation on, weights changing) stay as running_loss/running_acc, and are train_* as well
when there is no `train_eval_loader` (trainer.train_eval_size=0).

Reliability (cnnlab.training.resume holds the state helpers): last.pt holds everything a run needs to
continue bit for bit (`state=` resumes from it); SIGINT/SIGTERM save at the next step and raise
signals.Interrupted (one process only: in a process group the ranks would stop at different
steps); a non-finite loss follows trainer.on_nan (stop | skip | rollback), and so does an
epoch whose weights (batch-norm buffers included) or validation loss are not finite; weights that
are not finite are never written, as last.pt or as best.pt.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from cnnlab import checkpoint
from cnnlab.training import resume, step
from cnnlab.evaluation.evaluate import evaluate, topk_correct
from cnnlab.training.signals import Interrupted, Stopper

REPORT_EVERY = 5  # batches between progress updates: each one syncs the device (.item())
NO_VAL = {"loss": float("nan"), "acc": float("nan"), "top5": float("nan")}


@dataclass
class FitResult:
    history: list = field(default_factory=list)
    best_epoch: int = 0
    best_metric: float = float("nan")
    best_state: Optional[dict] = None
    stopped_early: bool = False
    diverged: bool = False
    train_seconds: float = 0.0
    images_seen: int = 0
    first_batch_at: float = float("nan")  # time.time() when the first training batch started
    skipped_steps: int = 0  # optimizer steps the loss scaler skipped (inf/nan gradients)
    loss_scale: float = 1.0  # the final loss scale (1.0: the loss is not scaled)
    nan_steps: int = 0  # steps with a non-finite loss (skipped under on_nan=skip)
    rollbacks: int = 0  # on_nan=rollback: reloads of the last good state (lr halved each time)
    global_step: int = 0  # training batches processed over the whole run
    since_best: int = 0


@dataclass
class EpochStats:
    """One training epoch's sums: loss and correct stay tensors on the device until it ends."""
    loss_sum: Any
    correct: Any
    lr: float  # the lr the epoch started with (the head's, under transfer.lr_mult)
    seen: int = 0
    skipped: int = 0  # steps a loss scaler skipped
    seconds_before: float = 0.0  # a resumed epoch's training time before the interruption
    started: float = 0.0  # time.perf_counter() when this sitting's batches began
    seconds: float = 0.0  # the epoch's training time, set when it ends
    bad: bool = False  # a non-finite loss ended it (on_nan=stop|rollback)

    @classmethod
    def begin(cls, device, partial: Optional[dict], optimizer) -> "EpochStats":
        """Zero sums, or an interrupted epoch's sums so far (its metrics row comes out the same)."""
        import torch

        lr = partial["lr"] if partial else max(g["lr"] for g in optimizer.param_groups)
        stats = cls(torch.zeros((), dtype=torch.float64, device=device),
                    torch.zeros((), dtype=torch.long, device=device), lr)
        if partial:
            stats.loss_sum += partial["loss_sum"].to(device)
            stats.correct += partial["correct"].to(device)
            stats.seen, stats.skipped = partial["seen"], partial["skipped"]
            stats.seconds_before = partial["seconds"]
        return stats

    def add(self, loss, logits, y) -> None:
        n = y.shape[0]
        # one fused op: loss_sum + n * loss in float64 (n * a float32 is exact in float64, so
        # this is the same sum as adding double(loss) * n, without two temporaries per step)
        self.loss_sum.add_(loss.detach(), alpha=n)
        hard = y.argmax(1) if y.dim() == 2 else y  # soft targets after mixup/cutmix
        self.correct += topk_correct(logits.detach(), hard, ks=(1,))[0]
        self.seen += n

    def elapsed(self) -> float:
        return self.seconds_before + time.perf_counter() - self.started

    def position(self, loader, batch: int) -> dict:
        """Where a mid-epoch last.pt resumes: the loader's position and the sums so far."""
        position = loader.position(batch)
        position.update(loss_sum=self.loss_sum.cpu(), correct=self.correct.cpu(), seen=self.seen,
                        skipped=self.skipped, lr=self.lr, seconds=self.elapsed())
        return position

    @property
    def loss(self) -> float:
        return float(self.loss_sum) / max(self.seen, 1)

    @property
    def acc(self) -> float:
        return float(self.correct) / max(self.seen, 1)


@dataclass
class _Loop:
    """What one fit works with, fixed for the whole run: fit's arguments, resolved."""
    model: Any  # what trains: the net, or its DDP wrapper
    net: Any  # the bare net: saved and evaluated
    train_loader: Any
    val_loader: Any
    optimizer: Any
    scheduler: Any
    sched_when: str
    cfg: Any
    precision: Any
    progress: Any
    run: Any
    criterion: Any
    eval_crop: Any
    ctx: Any
    train_eval_loader: Any  # the fixed training subset train_* are scored on (None: running sums)
    stopper: Optional[Stopper]
    has_val: bool
    monitor: str
    on_nan: str
    max_rollbacks: int
    check_each_step: bool
    state: resume.LoopState  # what last.pt and a rollback point hold
    logger: Any = None  # cnnlab.training.loggers.RunLogger: each epoch's row goes to it too

    @property
    def mode(self) -> str:
        return "max" if self.monitor.endswith("acc") else "min"


def fit(model, train_loader, val_loader, optimizer, scheduler, sched_when: str, cfg: Any,
        precision, progress, run=None, criterion=None, eval_crop=None, ctx=None,
        state: Optional[dict] = None, train_eval_loader=None, logger=None) -> FitResult:
    """Train `model` for cfg.epochs (a TrainerConfig); returns the history and the best weights.

    eval_crop: validate on centre crops of this side (training on aug.crop_size crops).
    ctx: a cnnlab.training.distributed.Context when `model` is its DistributedDataParallel wrapper.
    state: a last.pt checkpoint to continue from (cnnlab.training.resume).
    train_eval_loader: the fixed training subset train_loss/train_acc are measured on after each
    epoch (recipe.train_eval_subset); None: they are the epoch's running averages.
    logger: a cnnlab.training.loggers.RunLogger each epoch's metrics row is written to (TensorBoard)."""
    stopper = Stopper() if ctx is None else None  # see the module docstring
    try:
        if stopper is not None:
            stopper.__enter__()
        loop = _loop(model, train_loader, val_loader, optimizer, scheduler, sched_when, cfg,
                     precision, progress, run, criterion, eval_crop, ctx, stopper, train_eval_loader)
        loop.logger = logger
        return _epochs(loop, state)
    except MemoryError as exc:
        raise resume.out_of_memory(cfg, exc) from exc
    except RuntimeError as exc:
        if resume.is_oom(exc):
            raise resume.out_of_memory(cfg, exc) from exc
        raise
    finally:
        if stopper is not None:
            stopper.__exit__()


def _loop(model, train_loader, val_loader, optimizer, scheduler, sched_when, cfg, precision,
          progress, run, criterion, eval_crop, ctx, stopper, train_eval_loader) -> _Loop:
    net = model.module if ctx is not None else model  # weights are saved and evaluated bare
    has_val = val_loader is not None and val_loader.num_samples > 0
    on_nan = getattr(cfg, "on_nan", "stop")
    # a CPU "sync" is free, so the loss is checked before every step there (a bad step never
    # reaches the weights); on a GPU only at the progress syncs and the epoch's end, unless
    # on_nan=skip, which must know before it steps (one sync per step)
    check_each_step = train_loader.path.device.type == "cpu" or on_nan == "skip"
    return _Loop(
        model=model, net=net, train_loader=train_loader, val_loader=val_loader,
        optimizer=optimizer, scheduler=scheduler, sched_when=sched_when, cfg=cfg,
        precision=precision, progress=progress, run=run,
        criterion=criterion or step.criterion(cfg.label_smoothing), eval_crop=eval_crop,
        ctx=ctx, train_eval_loader=train_eval_loader, stopper=stopper, has_val=has_val,
        monitor=cfg.monitor if has_val else cfg.monitor.replace("val_", "train_"),
        on_nan=on_nan, max_rollbacks=getattr(cfg, "max_rollbacks", 3),
        check_each_step=check_each_step,
        state=resume.LoopState(net, optimizer, scheduler, precision, run))


def _epochs(loop: _Loop, state: Optional[dict]) -> FitResult:
    """The run: train an epoch, handle a non-finite loss, validate, keep the best, save, stop."""
    result = FitResult()
    epoch, partial = _resume(loop, result, state)
    good = resume.snapshot(loop.state, result, epoch) if loop.on_nan == "rollback" else None
    while epoch < loop.cfg.epochs:
        epoch += 1
        stats = _train_epoch(loop, result, epoch, partial)
        partial = None
        why, row = _check_epoch(loop, epoch, stats)
        if why:
            if loop.on_nan == "rollback" and result.rollbacks < loop.max_rollbacks:
                epoch, partial = _rollback(loop, result, good, why)
                continue
            _stop_diverged(loop, result, epoch, stats, why, row)
            break
        _add_epoch(result, stats, loop.precision)
        _record(loop, result, row)
        loop.progress.end_epoch(row)
        metric = row[loop.monitor]
        if loop.sched_when == "epoch":
            loop.scheduler.step(metric)
        _keep_best(loop, result, epoch, metric)
        _save_last(loop, result, epoch)
        if good is not None:
            good = resume.snapshot(loop.state, result, epoch)
        if _early_stop(loop, result, epoch):
            break
        if loop.stopper is not None and loop.stopper.requested and epoch < loop.cfg.epochs:
            raise _interrupted(loop, f"after epoch {epoch}")
    return result


def _resume(loop: _Loop, result: FitResult, state: Optional[dict]) -> tuple[int, Optional[dict]]:
    """(epochs done, position in the next): where last.pt stopped, RNG streams included."""
    if state is None:
        return 0, None
    epoch, partial = resume.restore(state, loop.state, result)
    if loop.run is not None:
        loop.run.log(f"resumed after epoch {epoch}"
                     + (f", batch {partial['batch']} of epoch {epoch + 1}" if partial else ""))
        note = _draws_note(partial, getattr(loop.train_loader, "chunk", None), epoch + 1)
        if note:
            loop.run.log(note)
    return epoch, partial


def _draws_note(partial: Optional[dict], chunk: Optional[int], epoch: int) -> Optional[str]:
    """What train.log says when a mid-epoch last.pt was written by a version that augmented a
    different number of batches per call: the run resumes at its batch, but draws other
    augmentations from there on (this epoch and the later ones) than the interrupted run would
    have. Positions name their chunk
    from this version on; one with `aug_from` but no `chunk` comes from the version that made
    chunks of up to 4 (at most as many as now, so only a chunk above 4 differs)."""
    if not partial or partial.get("aug") is None:
        return None
    rest = (f"from epoch {epoch} on, this run draws other augmentations than the interrupted run "
            "would have")
    if "aug_from" not in partial:
        return f"this last.pt was written before batches were augmented in chunks: {rest}"
    stored = partial.get("chunk")
    if chunk is None or (stored == chunk if stored is not None else chunk <= 4):
        return None
    made = f"{stored} batches" if stored is not None else "up to 4 batches"
    return (f"this last.pt was written by a version that augmented {made} per call, this one "
            f"augments {chunk}: {rest}")


def _start_epoch(loop: _Loop, epoch: int, partial: Optional[dict]) -> tuple[EpochStats, int]:
    loop.model.train()
    start_batch = partial["batch"] if partial else 0
    loop.train_loader.set_epoch(epoch, start_batch, partial["aug"] if partial else None,
                                partial.get("aug_from") if partial else None)
    loop.progress.start_epoch(epoch, len(loop.train_loader), start_batch)
    return EpochStats.begin(loop.train_loader.path.device, partial, loop.optimizer), start_batch


def _train_epoch(loop: _Loop, result: FitResult, epoch: int, partial: Optional[dict]) -> EpochStats:
    """One pass over the training split (from a resumed epoch's batch on); its sums come back
    added over the ranks. A SIGINT/SIGTERM saves last.pt here and raises Interrupted."""
    stats, start_batch = _start_epoch(loop, epoch, partial)
    loader = loop.train_loader
    stats.started = time.perf_counter()
    for b, (x, y) in enumerate(loader, start=start_batch + 1):
        if math.isnan(result.first_batch_at):
            result.first_batch_at = time.time()
        logits, loss = step.forward(loop.model, x, y, loop.criterion, loop.precision)
        result.global_step += 1
        loop.optimizer.zero_grad(set_to_none=True)
        if loop.check_each_step and not _finite(loss):
            _log_bad_loss(loop, result, epoch, b, loss)
            if loop.on_nan == "skip":
                continue  # no update, and the loss stays out of the epoch's sums
            stats.bad = True
            break
        if not _update(loop, loss):
            stats.skipped += 1
        stats.add(loss, logits, y)
        if (b % REPORT_EVERY == 0 or b == len(loader)) and not _report(loop, result, stats, b):
            stats.bad = True
            break
        if loop.stopper is not None and loop.stopper.requested:
            _save_last(loop, result, epoch - 1, stats.position(loader, b))
            raise _interrupted(loop, f"in epoch {epoch} after batch {b}/{len(loader)}")
    stats.seconds = stats.elapsed()
    if loop.ctx is not None:  # every rank sees the global numbers (one collective per epoch)
        stats.loss_sum, stats.correct, seen = loop.ctx.all_sum(stats.loss_sum, stats.correct, stats.seen)
        stats.seen = int(seen)
    return stats


def _finite(loss) -> bool:
    import torch

    return bool(torch.isfinite(loss.detach()))


def _log_bad_loss(loop: _Loop, result: FitResult, epoch: int, b: int, loss) -> None:
    result.nan_steps += 1
    if loop.run is not None:
        loop.run.log(f"epoch {epoch} batch {b}: loss is {float(loss.detach())} (on_nan={loop.on_nan})")


def _update(loop: _Loop, loss) -> bool:
    """Backward, clip, step; False when a loss scaler skipped the step (inf/nan gradients)."""
    if not loop.precision.step(loss, loop.optimizer, loop.model, loop.cfg.grad_clip):
        return False
    if loop.sched_when == "step":  # the schedule counts real updates only
        loop.scheduler.step()
    return True


def _report(loop: _Loop, result: FitResult, stats: EpochStats, b: int) -> bool:
    """A progress update; False when the running loss is not finite (unless on_nan=skip)."""
    import torch

    elapsed = time.perf_counter() - stats.started
    # both sums in one copy to the host: one wait for the device, not two
    loss_sum, correct = torch.stack((stats.loss_sum, stats.correct.to(stats.loss_sum.dtype))).tolist()
    running = loss_sum / max(stats.seen, 1)
    if not math.isfinite(running) and loop.on_nan != "skip":
        result.nan_steps += 1
        return False
    loop.progress.batch(b, running, correct / max(stats.seen, 1), stats.seen / max(elapsed, 1e-9))
    return True


LOSS_NOT_FINITE = "the training loss is not finite"


def _check_epoch(loop: _Loop, epoch: int, stats: EpochStats) -> tuple[Optional[str], Optional[dict]]:
    """(why the epoch diverged, or None; its row, once scored). The training loss and the
    weights (buffers included: batch norm's running variance can overflow while the loss stays
    finite) come first; then the validation and training-subset passes, whose losses must be
    finite too. Every rank reaches the same answer."""
    why = _diverged(loop, stats)
    if why:
        return why, None
    row = _row(epoch, stats, _validate(loop), _measure_train(loop), loop.precision.loss_scale)
    if loop.has_val and not math.isfinite(row["val_loss"]):
        return "the validation loss is not finite", row
    if loop.train_eval_loader is not None and not math.isfinite(row["train_loss"]):
        return "the loss on the training subset is not finite", row
    return None, row


def _diverged(loop: _Loop, stats: EpochStats) -> Optional[str]:
    """Why the epoch's training diverged: a non-finite loss, or weights no longer finite."""
    def weights_finite() -> bool:
        return checkpoint.all_finite(loop.net.state_dict())

    # ranks may hold different batch-norm buffers until the next forward: rank 0's decide (a
    # collective, so every rank asks, whatever its loss said)
    finite = weights_finite() if loop.ctx is None else loop.ctx.from_main(weights_finite)
    if stats.bad or (not math.isfinite(stats.loss) and stats.seen > 0):
        return LOSS_NOT_FINITE
    return None if finite else "the weights are not finite"


def _rollback(loop: _Loop, result: FitResult, good: dict, why: str) -> tuple[int, Optional[dict]]:
    result.rollbacks += 1
    epoch, partial = resume.rollback(good, loop.state, result)
    if loop.run is not None:
        loop.run.log(f"epoch {epoch + 1}: {why}; rollback {result.rollbacks}/"
                     f"{loop.max_rollbacks} to the state after epoch {epoch}, lr x "
                     f"{0.5 ** result.rollbacks:g}")
    return epoch, partial


def _stop_diverged(loop: _Loop, result: FitResult, epoch: int, stats: EpochStats, why: str,
                   row: Optional[dict] = None) -> None:
    """The diverged epoch's row (its scores as far as they go: no loss when that is what
    diverged, no validation before it ran), and the run ends."""
    result.diverged = True
    if row is None:
        row = _row(epoch, stats, NO_VAL, None, loop.precision.loss_scale,
                   running_loss=float("nan") if why == LOSS_NOT_FINITE else None)
    _record(loop, result, row)
    if loop.run is not None:
        loop.run.log(f"epoch {epoch}: {why}; stopping (diverged, on_nan={loop.on_nan}, "
                     f"{result.rollbacks} rollback(s))")


def _add_epoch(result: FitResult, stats: EpochStats, precision) -> None:
    result.train_seconds += stats.seconds
    result.images_seen += stats.seen
    result.skipped_steps += stats.skipped
    result.loss_scale = precision.loss_scale


def _evaluate(loop: _Loop, loader) -> dict:
    """The bare net in eval mode on `loader`, at the validation view."""
    def eval_pass():
        return evaluate(loop.net, loader, autocast=loop.precision.autocast, crop=loop.eval_crop)

    # in a process group rank 0 evaluates the whole split, exactly as one process would
    return eval_pass() if loop.ctx is None else loop.ctx.from_main(eval_pass)


def _validate(loop: _Loop) -> dict:
    return _evaluate(loop, loop.val_loader) if loop.has_val else NO_VAL


def _measure_train(loop: _Loop) -> Optional[dict]:
    """The epoch's end weights on the fixed training subset (None: trainer.train_eval_size=0)."""
    return None if loop.train_eval_loader is None else _evaluate(loop, loop.train_eval_loader)


def _row(epoch: int, stats: EpochStats, val: dict, train: Optional[dict], loss_scale: float,
         running_loss: Optional[float] = None) -> dict:
    """The epoch's metrics.csv row; train_* fall back to the running averages without `train`."""
    running_loss = stats.loss if running_loss is None else running_loss
    if train is None:
        train = {"loss": running_loss, "acc": stats.acc}
    return {"epoch": epoch, "lr": stats.lr, "train_loss": train["loss"], "train_acc": train["acc"],
            "running_loss": running_loss, "running_acc": stats.acc,
            "val_loss": val["loss"], "val_acc": val["acc"], "val_top5": val["top5"],
            "epoch_seconds": stats.seconds, "images_per_sec": stats.seen / max(stats.seconds, 1e-9),
            "skipped_steps": stats.skipped, "loss_scale": loss_scale}


def _record(loop: _Loop, result: FitResult, row: dict) -> None:
    result.history.append(row)
    if loop.run is not None:
        loop.run.log_metrics(row)
    if loop.logger is not None:
        loop.logger.epoch(row)


def _improved(value: float, best: float, mode: str) -> bool:
    if math.isnan(value):
        return False
    if math.isnan(best):
        return True
    return value > best if mode == "max" else value < best


def _keep_best(loop: _Loop, result: FitResult, epoch: int, metric: float) -> None:
    """Best weights so far in memory, and in best.pt."""
    if not _improved(metric, result.best_metric, loop.mode):
        result.since_best += 1
        return
    state = loop.net.state_dict()
    if not checkpoint.all_finite(state):  # _check_epoch stops such a run first; never keep them
        if loop.run is not None:
            loop.run.log(f"not keeping epoch {epoch} as the best: the weights are not finite")
        return
    result.best_metric, result.best_epoch, result.since_best = metric, epoch, 0
    result.best_state = {k: v.detach().clone() for k, v in state.items()}
    if loop.run is not None and loop.cfg.checkpoints:
        checkpoint.save({"model": result.best_state, "epoch": epoch, loop.monitor: metric},
                        loop.run.checkpoints / "best.pt")


def _save_last(loop: _Loop, result: FitResult, epoch_done: int, position: Optional[dict] = None) -> None:
    """last.pt: everything to continue the run (mid-epoch with `position`)."""
    run = loop.run
    if run is None or not loop.cfg.checkpoints:
        return
    if not checkpoint.all_finite(loop.net.state_dict()):  # never write weights that are not finite
        run.log(f"not saving last.pt after epoch {epoch_done}: the weights are not finite")
        return
    checkpoint.save(resume.snapshot(loop.state, result, epoch_done, position, copy=False),
                    run.checkpoints / "last.pt")


def _early_stop(loop: _Loop, result: FitResult, epoch: int) -> bool:
    early_stop = loop.cfg.early_stop
    if not (early_stop and result.since_best >= early_stop):
        return False
    result.stopped_early = True
    if loop.run is not None:
        loop.run.log(f"early stop after epoch {epoch}: no {loop.monitor} improvement in "
                     f"{early_stop} epochs")
    return True


def _interrupted(loop: _Loop, where: str) -> Interrupted:
    stopper, run = loop.stopper, loop.run
    if run is not None and loop.cfg.checkpoints:
        run.log(f"{stopper.name} {where}: saved checkpoints/last.pt")
        how = f"saved its state; resume with: cnnlab resume {run.root}"
    else:
        how = "no checkpoint (trainer.checkpoints=false or no run folder)"
    return Interrupted(f"interrupted by {stopper.name} {where}; {how}", stopper.signum)
