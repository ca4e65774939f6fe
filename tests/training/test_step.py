"""The shared training step (cnnlab/training/step.py): the loss with auxiliary heads, and the same
loss in the engine and in bench-train."""

import copy

import torch
import torch.nn.functional as F

from cnnlab.bench import train as bench
from cnnlab.training import engine, optim, step
from cnnlab.training.progress import make_progress
from cnnlab.training.recipe import build_parts
from conftest import tiny

# GoogLeNet with its two auxiliary heads, small: ~2 batches of 32 a training epoch
AUX = ["model=googlenet", "model.aux=true", "model.width=0.25", "data.num_train=80",
       "data.num_test=20", "trainer.batch_size=32", "trainer.epochs=1",
       "trainer.label_smoothing=0.1"]


def test_auxiliary_losses_weigh_0_3():
    torch.manual_seed(0)
    y = torch.randint(0, 4, (6,))
    logits, aux1, aux2 = (torch.randn(6, 4) for _ in range(3))
    out, loss = step.loss_of((logits, aux1, aux2), y, torch.nn.CrossEntropyLoss())
    expected = F.cross_entropy(logits, y) + 0.3 * (F.cross_entropy(aux1, y) + F.cross_entropy(aux2, y))
    assert out is logits and torch.equal(loss, expected)
    out, loss = step.loss_of(logits, y, torch.nn.CrossEntropyLoss())
    assert out is logits and torch.equal(loss, F.cross_entropy(logits, y))


def test_googlenet_training_loss_adds_its_auxiliary_heads():
    cfg = tiny(*AUX)
    parts = build_parts(cfg)
    x, y = next(iter(parts.train_loader))
    model, smoothing = parts.model.train(), cfg.trainer.label_smoothing
    torch.manual_seed(0)  # the same dropout masks in both forward passes
    logits, loss = step.forward(model, x, y, step.criterion(smoothing), parts.precision)
    torch.manual_seed(0)
    out = model(x)
    assert isinstance(out, tuple) and len(out) == 3  # logits and two auxiliary heads
    ce = [F.cross_entropy(o, y, label_smoothing=smoothing) for o in out]
    torch.testing.assert_close(loss, ce[0] + 0.3 * (ce[1] + ce[2]), rtol=1e-6, atol=0)
    assert torch.equal(logits, out[0]) and not torch.allclose(loss, ce[0])


def test_engine_and_bench_train_take_the_same_loss_for_the_same_batch(monkeypatch):
    cfg = tiny(*AUX)
    real_forward, calls = step.forward, []

    def recording(model, x, y, loss_fn, precision):
        torch.manual_seed(0)  # the same dropout masks in the engine and in the benchmark
        logits, loss = real_forward(model, x, y, loss_fn, precision)
        calls.append((x.clone(), y.clone(), loss.detach().clone()))
        return logits, loss

    monkeypatch.setattr(step, "forward", recording)
    parts = build_parts(cfg)
    initial = copy.deepcopy(parts.model.state_dict())
    opt = optim.build_optimizer(parts.model, cfg.optim)
    sched, when = optim.build_scheduler(opt, cfg.sched, 1, len(parts.train_loader), "max")
    engine.fit(parts.model, parts.train_loader, parts.val_loader, opt, sched, when, cfg.trainer,
               parts.precision, make_progress("none", 1))
    assert len(calls) == len(parts.train_loader)
    x, y, engine_loss = calls[0]  # the engine's first step, from the initial weights

    fresh = build_parts(cfg)  # what bench-train steps: the same config's model, untrained
    assert all(torch.equal(v, initial[k]) for k, v in fresh.model.state_dict().items())
    stepper = bench._stepper(fresh.model, cfg, fresh.precision, bench._Clock(fresh.device))
    try:
        stepper(lambda: (x, y))
    finally:
        stepper.close()
    assert len(calls) == len(parts.train_loader) + 1
    assert calls[-1][2].item() == engine_loss.item()  # exactly: the same code on the same batch
