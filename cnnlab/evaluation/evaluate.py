"""Evaluation of a model on a loader: loss, top-1 and top-5 accuracy, seconds per image.

`evaluate` is the engine's: views="center" is the whole image as the loader yields it, or its
centre `crop` x `crop` square when the model trains on smaller crops (aug.crop_size; train's
test_acc). views="tencrop" or "multiscale:28,32,40" there run `predict_views` at that crop and
report the NLL of the softmax averaged over views as the loss (criterion applies to the
single-view path only). Given eval.views' list of modes, it scores the first.

`predict_views` is `cnnlab eval`'s: every view of a batch is cut with batched tensor ops
(cnnlab.evaluation.views) and goes through the model in forward passes of at most `chunk` views; the
predictions are averaged over the views per image, as softmax probabilities ("softmax",
Krizhevsky et al. 2012) or as logits ("logits", i.e. a geometric mean of the probabilities).
With keep=True it also returns those averaged probabilities, which ensembles add up.
"""

from __future__ import annotations

import time
from typing import Any

from cnnlab.errors import UsageError

VIEWS = ("center", "tencrop", "multiscale")


def topk_correct(logits, targets, ks=(1, 5)) -> list:
    """Number of samples whose target is among the top-k logits, for each k (as tensors)."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hit = top.eq(targets.view(-1, 1))
    return [hit[:, :min(k, kmax)].any(dim=1).sum() for k in ks]


def evaluate(model, loader, *, criterion=None, views: Any = "center", autocast=None,
             crop: int | None = None) -> dict[str, Any]:
    """Loss and accuracy over everything the loader yields, without gradients.

    views: a mode, or eval.views' list of modes, of which the first is scored (a training run
    tests under one mode; `cnnlab eval` scores them all). crop: the view side (None: the whole
    image) under cnnlab.evaluation.views' crop rule."""
    from cnnlab.evaluation import views as vw

    mode = vw.parse_views(views)[0]
    if mode != "center":
        return _evaluate_views(model, loader, mode, autocast, crop)
    return _evaluate_center(model, loader, criterion, autocast, crop)


def _evaluate_center(model, loader, criterion, autocast, crop) -> dict[str, Any]:
    """evaluate()'s single-view path: the criterion's loss on the (centre-cropped) batches."""
    import contextlib

    import torch


    criterion = criterion or torch.nn.CrossEntropyLoss()
    autocast = autocast or contextlib.nullcontext
    was_training = model.training
    model.eval()
    loss_sum = top1 = top5 = None
    n = 0
    start = time.perf_counter()
    with torch.no_grad():
        for x, y in center_batches(loader, crop):
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


def _evaluate_views(model, loader, views: str, autocast=None, crop=None) -> dict[str, Any]:
    """evaluate()'s multi-view path: predict_views at `crop`, in evaluate's keys."""
    from cnnlab.evaluation import views as vw

    mode, scales = vw.split_mode(views)
    first = next(iter(loader), None)
    if first is None:
        return {"loss": float("nan"), "acc": float("nan"), "top5": float("nan"), "n": 0, "seconds": 0.0}
    crop, resize = vw.geometry(tuple(first[0].shape[-2:]), crop)
    m = predict_views(model, loader, mode, crop, scales, resize=resize, autocast=autocast)
    return {"loss": m["nll"], "acc": m["top1"], "top5": m["top5"], "n": m["n"], "seconds": m["seconds"]}


def _forward_views(model, x, mode, crop, scales, resize, chunk, autocast):
    """Logits (n, V, K) of every view of batch x, in forward passes of at most `chunk` views."""
    import torch

    from cnnlab.evaluation import views as vw

    out = []
    # default: forward passes as large as the loader's batch, the shape the centre pass has
    chunk = chunk or x.shape[0]
    for block in vw.iter_view_chunks(x, mode, crop, scales, resize, chunk):
        n, v = block.shape[:2]
        with autocast():
            logits = model(block.reshape(n * v, *block.shape[2:]))
        out.append(logits.float().view(n, v, -1))
    return torch.cat(out) if len(out) > 1 else out[0]


def average_views(logits, average: str = "softmax"):
    """Log of the per-image averaged prediction, (n, K), from view logits (n, V, K)."""
    import math

    if average == "softmax":
        # log(mean_v softmax) computed stably as logsumexp over views of log-softmax
        return logits.log_softmax(dim=2).logsumexp(dim=1) - math.log(logits.shape[1])
    if average == "logits":
        return logits.mean(dim=1).log_softmax(dim=1)
    raise UsageError(f"unknown --average '{average}'; choose softmax or logits")


class _Tally:
    """predict_views' sums over batches of averaged log-predictions (n, K) and labels (n,). They
    stay on the device until `result`, so there is no host sync per batch; keep=True also
    collects the averaged probabilities and labels on the CPU (what ensembles add up)."""

    def __init__(self, keep: bool = False):
        self.nll = self.top1 = self.top5 = None
        self.n, self.classes = 0, 0
        self.probs, self.labels = ([], []) if keep else (None, None)

    def add(self, logp, y) -> None:
        self.classes = logp.shape[1]
        nll = -logp.gather(1, y.view(-1, 1)).double().sum()
        c1, c5 = topk_correct(logp, y)
        self.nll = nll if self.nll is None else self.nll + nll
        self.top1 = c1 if self.top1 is None else self.top1 + c1
        self.top5 = c5 if self.top5 is None else self.top5 + c5
        self.n += y.numel()
        if self.probs is not None:
            self.probs.append(logp.exp().cpu())
            self.labels.append(y.cpu())

    def result(self) -> dict[str, Any]:
        import torch

        nan, n = float("nan"), self.n
        if n == 0:
            out = {"top1": nan, "top5": nan, "nll": nan, "n": 0}
        else:
            out = {"top1": int(self.top1) / n, "top5": int(self.top5) / n if self.classes > 5 else nan,
                   "nll": float(self.nll) / n, "n": n}
        if self.probs is not None:
            out["probs"] = torch.cat(self.probs) if self.probs else torch.zeros(0, self.classes)
            out["labels"] = torch.cat(self.labels) if self.labels else torch.zeros(0, dtype=torch.long)
        return out


def _view_count(views: str, scales, average: str) -> tuple[list[int], int]:
    """(scales, views per image) of a predict_views call, its arguments checked before any work."""
    import torch

    from cnnlab.evaluation import views as vw

    vw.check_mode(views)
    average_views(torch.zeros(1, 1, 1), average)  # a bad `average` fails before any work
    scales = [int(s) for s in scales] if views == "multiscale" else []
    n_views = vw.num_views(views, scales)
    if n_views == 0:
        raise UsageError("multiscale needs at least one scale, e.g. --multiscale 28,32,40")
    return scales, n_views


def predict_views(model, loader, views: str = "center", crop: int | None = None, scales=(),
                  average: str = "softmax", chunk: int | None = None, resize: int | None = None,
                  autocast=None, keep: bool = False) -> dict[str, Any]:
    """Accuracy of view-averaged predictions over everything the loader yields.

    views: center | tencrop | multiscale (with `scales`); crop: the view side (None: the
    cnnlab.evaluation.views crop rule for the loader's image size, which also sets `resize`); chunk: at
    most this many views per forward pass (None: the loader's batch size, so a ten-crop pass
    runs the model on batches of the centre pass's shape and memory stays that of one batch).
    Returns top1, top5 (NaN with 5 classes or fewer), nll (of the averaged probabilities),
    views (per image), ms_per_image (wall time of the whole pass / n), n, seconds, crop; with
    keep=True also probs (N, K), the averaged probabilities, and labels (N,), on the CPU.
    """
    import contextlib

    import torch

    from cnnlab.evaluation import views as vw

    scales, n_views = _view_count(views, scales, average)
    autocast = autocast or contextlib.nullcontext
    was_training = model.training
    model.eval()
    tally = _Tally(keep)
    start = time.perf_counter()
    try:
        with torch.inference_mode():
            for x, y in loader:
                if crop is None:
                    crop, resize = vw.geometry(tuple(x.shape[-2:]))
                logits = _forward_views(model, x, views, crop, scales, resize, chunk, autocast)
                tally.add(average_views(logits, average), y)
    finally:
        model.train(was_training)
    out = tally.result()
    seconds = time.perf_counter() - start  # after the values above synced the device
    out.update(views=n_views, ms_per_image=1000 * seconds / max(out["n"], 1), seconds=seconds,
               crop=crop)
    return out


def bench_tencrop(model, images, crop: int, repeats: int = 7, chunk: int | None = None,
                  resize: int | None = None) -> float:
    """Ten-crop time per image over centre time per image (target: at most 11)."""
    return bench_views(model, images, crop, repeats, chunk, resize)["ratio"]


def bench_views(model, images, crop: int, repeats: int = 7, chunk: int | None = None,
                resize: int | None = None) -> dict[str, float]:
    """Ten-crop time per image over centre time per image, measured side by side.

    images: a normalised float batch (N, C, H, W) on the model's device. Both modes cut their
    views and run the model the way predict_views does; one warm-up each, then `repeats`
    alternating timed rounds, medians compared. Returns ratio, center_ms and tencrop_ms (per
    image, medians) and ratio_min (of the fastest rounds: steadier on a shared machine). Ten views cost ten forward passes, so about 10x is the floor; the target is <= 11x.
    """
    import contextlib
    import statistics

    import torch

    def sync():
        if images.device.type == "cuda":
            torch.cuda.synchronize(images.device)

    def run(mode):
        sync()
        t = time.perf_counter()
        _forward_views(model, images, mode, crop, (), resize, chunk, contextlib.nullcontext)
        sync()
        return time.perf_counter() - t

    was_training = model.training
    model.eval()
    times = {"center": [], "tencrop": []}
    try:
        with torch.inference_mode():
            run("center"), run("tencrop")  # warm-up: allocator, kernels, caches
            for _ in range(max(1, repeats)):
                for mode in times:
                    times[mode].append(run(mode))
    finally:
        model.train(was_training)
    n = images.shape[0]
    c, t = statistics.median(times["center"]), statistics.median(times["tencrop"])
    return {"ratio": t / c, "center_ms": 1000 * c / n, "tencrop_ms": 1000 * t / n,
            "ratio_min": min(times["tencrop"]) / min(times["center"])}


def center_batches(loader, crop=None):
    """The loader's (images, labels), each image cut to its centre view when `crop` is given
    (the size a run trained its random crops at)."""
    from cnnlab.evaluation import views as vw

    for x, y in loader:
        if crop is not None:
            side, resize = vw.geometry(tuple(x.shape[-2:]), crop)
            x = vw.make_views(x, "center", side, resize=resize)[:, 0]
        yield x, y
