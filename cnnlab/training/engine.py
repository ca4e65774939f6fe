"""The training loop: epochs of train steps, a validation pass, best-weights tracking, early
stopping, checkpoints and one metrics row per epoch. Read it top to bottom.

Data-parallel runs (cnnlab.training.distributed) pass their `group`: the model is then the DDP wrapper,
the epoch's train sums are added over the ranks, and validation runs on rank 0 and is shared,
so every rank takes the same early-stop, schedule and best-weights decisions.

Reliability (cnnlab.training.resume holds the state helpers): last.pt holds everything a run needs to
continue bit for bit (`state=` resumes from it); SIGINT/SIGTERM save at the next step and raise
signals.Interrupted (one process only: in a process group the ranks would stop at different
steps); a non-finite loss follows trainer.on_nan (stop | skip | rollback), and weights that are
not finite are never written.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from cnnlab import checkpoint
from cnnlab.training import resume
from cnnlab.evaluation.evaluate import evaluate, topk_correct
from cnnlab.training.signals import Interrupted, Stopper


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


def _improved(value: float, best: float, mode: str) -> bool:
    if math.isnan(value):
        return False
    if math.isnan(best):
        return True
    return value > best if mode == "max" else value < best


def fit(model, train_loader, val_loader, optimizer, scheduler, sched_when: str, cfg: Any,
        precision, progress, run=None, criterion=None, eval_crop=None, group=None,
        state: Optional[dict] = None) -> FitResult:
    """Train `model` for cfg.epochs (a TrainerConfig); returns the history and the best weights.

    eval_crop: validate on centre crops of this side (training on aug.crop_size crops).
    group: a cnnlab.training.distributed.Context when `model` is its DistributedDataParallel wrapper.
    state: a last.pt checkpoint to continue from (cnnlab.training.resume)."""
    stopper = Stopper() if group is None else None  # see the module docstring
    try:
        if stopper is not None:
            stopper.__enter__()
        return _fit(model, train_loader, val_loader, optimizer, scheduler, sched_when, cfg,
                    precision, progress, run, criterion, eval_crop, group, state, stopper)
    except MemoryError as exc:
        raise resume.out_of_memory(cfg, exc) from exc
    except RuntimeError as exc:
        if resume.is_oom(exc):
            raise resume.out_of_memory(cfg, exc) from exc
        raise
    finally:
        if stopper is not None:
            stopper.__exit__()


def _fit(model, train_loader, val_loader, optimizer, scheduler, sched_when, cfg, precision,
         progress, run, criterion, eval_crop, group, state, stopper) -> FitResult:
    import torch

    net = model.module if group is not None else model  # weights are saved and evaluated bare
    criterion = criterion or torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    has_val = val_loader is not None and val_loader.num_samples > 0
    monitor = cfg.monitor if has_val else cfg.monitor.replace("val_", "train_")
    mode = "max" if monitor.endswith("acc") else "min"
    on_nan = getattr(cfg, "on_nan", "stop")
    max_rollbacks = getattr(cfg, "max_rollbacks", 3)
    report_every = 5  # batches between progress updates: each one syncs the device (.item())
    device = train_loader.path.device
    # a CPU "sync" is free, so the loss is checked before every step there (a bad step never
    # reaches the weights); on a GPU only at the progress syncs and the epoch's end, unless
    # on_nan=skip, which must know before it steps (one sync per step)
    check_each_step = device.type == "cpu" or on_nan == "skip"
    parts = resume.Parts(net, optimizer, scheduler, precision, train_loader, run, monitor)

    result = FitResult()
    epoch, partial = 0, None
    if state is not None:  # continue where last.pt stopped, RNG streams included
        epoch, partial = resume.restore(state, parts, result)
        if run is not None:
            run.log(f"resumed after epoch {epoch}"
                    + (f", batch {partial['batch']} of epoch {epoch + 1}" if partial else ""))
    good = resume.snapshot(parts, result, epoch) if on_nan == "rollback" else None

    def save_last(epoch_done: int, position: Optional[dict] = None) -> None:
        if run is None or not cfg.checkpoints:
            return
        if not checkpoint.all_finite(net.state_dict()):  # never write weights that are not finite
            run.log(f"not saving last.pt after epoch {epoch_done}: the weights are not finite")
            return
        checkpoint.save(resume.snapshot(parts, result, epoch_done, position, copy=False),
                        run.checkpoints / "last.pt")

    while epoch < cfg.epochs:
        epoch += 1
        model.train()
        start_batch = partial["batch"] if partial else 0
        train_loader.set_epoch(epoch, start_batch, partial["aug"] if partial else None)
        progress.start_epoch(epoch, len(train_loader))
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        seen = skipped = 0
        seconds_before = 0.0
        if partial:  # the interrupted epoch's sums so far: its metrics row comes out the same
            loss_sum += partial["loss_sum"].to(device)
            correct += partial["correct"].to(device)
            seen, skipped, seconds_before = partial["seen"], partial["skipped"], partial["seconds"]
        # the lr the epoch started with (the head's, under transfer.lr_mult)
        lr = partial["lr"] if partial else max(g["lr"] for g in optimizer.param_groups)
        partial = None
        bad = False  # a non-finite loss under on_nan=stop|rollback
        start = time.perf_counter()
        for b, (x, y) in enumerate(train_loader, start=start_batch + 1):
            if math.isnan(result.first_batch_at):
                result.first_batch_at = time.time()
            with precision.autocast():
                out = model(x)
                if isinstance(out, tuple):  # auxiliary heads (GoogLeNet) in training mode:
                    logits = out[0]  # their losses weigh 0.3 (Szegedy et al. 2015, sec. 5)
                    loss = criterion(logits, y) + 0.3 * sum(criterion(a, y) for a in out[1:])
                else:
                    logits = out
                    loss = criterion(logits, y)
            result.global_step += 1
            optimizer.zero_grad(set_to_none=True)
            if check_each_step and not bool(torch.isfinite(loss.detach())):
                result.nan_steps += 1
                if run is not None:
                    run.log(f"epoch {epoch} batch {b}: loss is {float(loss.detach())} (on_nan={on_nan})")
                if on_nan != "skip":
                    bad = True
                    break
                continue  # on_nan=skip: no update, and the loss stays out of the epoch's sums
            # backward, clip, step; False when a loss scaler skipped the step (inf/nan grads)
            if precision.step(loss, optimizer, model, cfg.grad_clip):
                if sched_when == "step":  # the schedule counts real updates only
                    scheduler.step()
            else:
                skipped += 1
            n = x.shape[0]
            loss_sum += loss.detach().double() * n
            hard = y.argmax(1) if y.dim() == 2 else y  # soft targets after mixup/cutmix
            correct += topk_correct(logits.detach(), hard, ks=(1,))[0]
            seen += n
            if b % report_every == 0 or b == len(train_loader):
                elapsed = time.perf_counter() - start
                running = loss_sum.item() / max(seen, 1)
                if not math.isfinite(running) and on_nan != "skip":
                    result.nan_steps += 1
                    bad = True
                    break
                progress.batch(b, running, correct.item() / max(seen, 1), seen / max(elapsed, 1e-9))
            if stopper is not None and stopper.requested:
                position = train_loader.position(b)
                position.update(loss_sum=loss_sum.cpu(), correct=correct.cpu(), seen=seen,
                                skipped=skipped, lr=lr, seconds=seconds_before + time.perf_counter() - start)
                save_last(epoch - 1, position)
                raise _interrupted(stopper, run, cfg, f"in epoch {epoch} after batch {b}/{len(train_loader)}")
        train_seconds = seconds_before + time.perf_counter() - start
        if group is not None:  # every rank sees the global numbers (one collective per epoch)
            loss_sum, correct, seen = group.all_sum(loss_sum, correct, seen)
            seen = int(seen)
        train_loss, train_acc = float(loss_sum) / max(seen, 1), float(correct) / max(seen, 1)
        if bad or (not math.isfinite(train_loss) and seen) or (
                on_nan == "skip" and not checkpoint.all_finite(net.state_dict())):
            if on_nan == "rollback" and result.rollbacks < max_rollbacks:
                result.rollbacks += 1
                epoch, partial = resume.rollback(good, parts, result)
                if run is not None:
                    run.log(f"epoch {epoch + 1}: non-finite loss; rollback {result.rollbacks}/"
                            f"{max_rollbacks} to the state after epoch {epoch}, lr x "
                            f"{0.5 ** result.rollbacks:g}")
                continue
            result.diverged = True
            nan = float("nan")  # the diverged epoch's row: its loss, no validation
            row = {"epoch": epoch, "lr": lr, "train_loss": nan, "train_acc": train_acc,
                   "val_loss": nan, "val_acc": nan, "val_top5": nan, "epoch_seconds": train_seconds,
                   "images_per_sec": seen / max(train_seconds, 1e-9), "skipped_steps": skipped,
                   "loss_scale": precision.loss_scale}
            result.history.append(row)
            if run is not None:
                run.log_metrics(row)
                run.log(f"epoch {epoch}: training loss is not finite; stopping (diverged, "
                        f"on_nan={on_nan}, {result.rollbacks} rollback(s))")
            break
        result.train_seconds += train_seconds
        result.images_seen += seen
        result.skipped_steps += skipped
        result.loss_scale = precision.loss_scale

        if not has_val:
            val = {"loss": float("nan"), "acc": float("nan"), "top5": float("nan")}
        elif group is None:
            val = evaluate(net, val_loader, autocast=precision.autocast, crop=eval_crop)
        else:  # rank 0 over the whole split, exactly as one process would
            val = group.from_main(lambda: evaluate(net, val_loader, autocast=precision.autocast,
                                                   crop=eval_crop))
        row = {"epoch": epoch, "lr": lr, "train_loss": train_loss, "train_acc": train_acc,
               "val_loss": val["loss"], "val_acc": val["acc"], "val_top5": val["top5"],
               "epoch_seconds": train_seconds, "images_per_sec": seen / max(train_seconds, 1e-9),
               "skipped_steps": skipped, "loss_scale": result.loss_scale}
        result.history.append(row)
        if run is not None:
            run.log_metrics(row)
        progress.end_epoch(row)

        metric = {"val_acc": val["acc"], "val_loss": val["loss"],
                  "train_acc": train_acc, "train_loss": train_loss}[monitor]
        if sched_when == "epoch":
            scheduler.step(metric)
        if _improved(metric, result.best_metric, mode):
            result.best_metric, result.best_epoch, result.since_best = metric, epoch, 0
            result.best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            if run is not None and cfg.checkpoints:
                checkpoint.save({"model": result.best_state, "epoch": epoch, monitor: metric},
                                run.checkpoints / "best.pt")
        else:
            result.since_best += 1
        save_last(epoch)
        if good is not None:
            good = resume.snapshot(parts, result, epoch)
        if cfg.early_stop and result.since_best >= cfg.early_stop:
            result.stopped_early = True
            if run is not None:
                run.log(f"early stop after epoch {epoch}: no {monitor} improvement in "
                        f"{cfg.early_stop} epochs")
            break
        if stopper is not None and stopper.requested and epoch < cfg.epochs:
            raise _interrupted(stopper, run, cfg, f"after epoch {epoch}")
    return result


def _interrupted(stopper: Stopper, run, cfg, where: str) -> Interrupted:
    if run is not None and cfg.checkpoints:
        run.log(f"{stopper.name} {where}: saved checkpoints/last.pt")
        how = f"saved its state; resume with: cnnlab resume {run.root}"
    else:
        how = "no checkpoint (trainer.checkpoints=false or no run folder)"
    return Interrupted(f"interrupted by {stopper.name} {where}; {how}", stopper.signum)
