"""Evaluation of a model on a loader: loss, top-1 and top-5 accuracy, seconds per image.

View modes: `center` (one view per image). Multi-view modes average softmax over views here.
"""

from __future__ import annotations

import time
from typing import Any

from cnnlab.errors import UsageError

VIEWS = ("center",)


def topk_correct(logits, targets, ks=(1, 5)) -> list:
    """Number of samples whose target is among the top-k logits, for each k (as tensors)."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hit = top.eq(targets.view(-1, 1))
    return [hit[:, :min(k, kmax)].any(dim=1).sum() for k in ks]


def evaluate(model, loader, *, criterion=None, views: str = "center", autocast=None) -> dict[str, Any]:
    """Loss and accuracy over everything the loader yields, without gradients."""
    import contextlib

    import torch

    if views not in VIEWS:
        raise UsageError(f"unknown eval views '{views}'; choose from: {', '.join(VIEWS)}")
    criterion = criterion or torch.nn.CrossEntropyLoss()
    autocast = autocast or contextlib.nullcontext
    was_training = model.training
    model.eval()
    loss_sum = top1 = top5 = None
    n = 0
    start = time.perf_counter()
    with torch.no_grad():
        for x, y in loader:
            with autocast():
                logits = model(x)
            # sums stay on the device: no host sync per batch
            loss = criterion(logits.float(), y).double() * y.numel()
            c1, c5 = topk_correct(logits, y)
            loss_sum = loss if loss_sum is None else loss_sum + loss
            top1 = c1 if top1 is None else top1 + c1
            top5 = c5 if top5 is None else top5 + c5
            n += y.numel()
    model.train(was_training)
    if n == 0:
        nan = float("nan")
        return {"loss": nan, "acc": nan, "top5": nan, "n": 0, "seconds": time.perf_counter() - start}
    # top-5 means nothing with 5 classes or fewer: it is always 1
    top5_acc = int(top5) / n if logits.shape[1] > 5 else float("nan")
    out = {"loss": float(loss_sum) / n, "acc": int(top1) / n, "top5": top5_acc, "n": n}
    out["seconds"] = time.perf_counter() - start  # after the values above synced the device
    return out
