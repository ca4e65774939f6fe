"""The training loop: epochs of train steps, a validation pass, best-weights tracking, early
stopping, checkpoints and one metrics row per epoch. Read it top to bottom.

Data-parallel runs (cnnlab.distributed) pass their `group`: the model is then the DDP wrapper,
the epoch's train sums are added over the ranks, and validation runs on rank 0 and is shared,
so every rank takes the same early-stop, schedule and best-weights decisions.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from cnnlab import checkpoint
from cnnlab.evaluate import evaluate, topk_correct


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


def _improved(value: float, best: float, mode: str) -> bool:
    if math.isnan(value):
        return False
    if math.isnan(best):
        return True
    return value > best if mode == "max" else value < best


def fit(model, train_loader, val_loader, optimizer, scheduler, sched_when: str, cfg: Any,
        precision, progress, run=None, criterion=None, eval_crop=None, group=None) -> FitResult:
    """Train `model` for cfg.epochs (a TrainerConfig); returns the history and the best weights.

    eval_crop: validate on centre crops of this side (training on aug.crop_size crops).
    group: a cnnlab.distributed.Context when `model` is its DistributedDataParallel wrapper."""
    import torch

    net = model.module if group is not None else model  # weights are saved and evaluated bare

    criterion = criterion or torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    has_val = val_loader is not None and val_loader.num_samples > 0
    monitor = cfg.monitor if has_val else cfg.monitor.replace("val_", "train_")
    mode = "max" if monitor.endswith("acc") else "min"
    result = FitResult()
    since_best = 0
    report_every = 5  # batches between progress updates: each one syncs the device (.item())

    for epoch in range(1, cfg.epochs + 1):
        model.train()
        train_loader.set_epoch(epoch)
        progress.start_epoch(epoch, len(train_loader))
        device = train_loader.path.device
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        seen = skipped = 0
        lr = max(g["lr"] for g in optimizer.param_groups)  # the head's, under transfer.lr_mult
        start = time.perf_counter()
        for b, (x, y) in enumerate(train_loader, start=1):
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
            optimizer.zero_grad(set_to_none=True)
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
                progress.batch(b, loss_sum.item() / seen, correct.item() / seen, seen / elapsed)
        train_seconds = time.perf_counter() - start
        if group is not None:  # every rank sees the global numbers (one collective per epoch)
            loss_sum, correct, seen = group.all_sum(loss_sum, correct, seen)
            seen = int(seen)
        result.train_seconds += train_seconds
        result.images_seen += seen
        result.skipped_steps += skipped
        result.loss_scale = precision.loss_scale
        train_loss, train_acc = float(loss_sum) / max(seen, 1), float(correct) / max(seen, 1)

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

        if not math.isfinite(train_loss):
            result.diverged = True
            if run is not None:
                run.log(f"epoch {epoch}: training loss is {train_loss}; stopping (diverged)")
            break
        metric = {"val_acc": val["acc"], "val_loss": val["loss"],
                  "train_acc": train_acc, "train_loss": train_loss}[monitor]
        if sched_when == "epoch":
            scheduler.step(metric)
        if _improved(metric, result.best_metric, mode):
            result.best_metric, result.best_epoch, since_best = metric, epoch, 0
            result.best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            if run is not None and cfg.checkpoints:
                checkpoint.save({"model": result.best_state, "epoch": epoch, monitor: metric},
                                run.checkpoints / "best.pt")
        else:
            since_best += 1
        if run is not None and cfg.checkpoints:
            checkpoint.save({"model": net.state_dict(), "optimizer": optimizer.state_dict(),
                             "scheduler": scheduler.state_dict() if scheduler else None,
                             "epoch": epoch, "best_metric": result.best_metric,
                             "best_epoch": result.best_epoch, "rng": checkpoint.rng_state()},
                            run.checkpoints / "last.pt")
        if cfg.early_stop and since_best >= cfg.early_stop:
            result.stopped_early = True
            if run is not None:
                run.log(f"early stop after epoch {epoch}: no {monitor} improvement in "
                        f"{cfg.early_stop} epochs")
            break
    return result
