"""Divergence that used to slip through: an lr too large for the weights' batch-norm statistics
(training loss finite, running variance inf), a validation or test loss that is not finite, and
the counters of bad steps, rollbacks and skipped images that never reached the row."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from cnnlab import checkpoint, results
from cnnlab.cli.main import app
from cnnlab.evaluation import evaluate as evaluate_module
from cnnlab.training import engine
from cnnlab.training.recipe import train
from tests.conftest import tiny, write_image_folder

FAST = ["trainer.progress=none", "trainer.threads=1", "data=digits", "sched=none"]
COUNTERS = ("nan_steps", "rollbacks", "skipped_images")


def _only_run(outputs) -> Path:
    (run,) = (outputs / "runs").iterdir()
    return run


def _no_non_finite_checkpoint(run: Path) -> None:
    for name in ("best.pt", "last.pt"):
        path = run / "checkpoints" / name
        if path.exists():
            assert checkpoint.all_finite(checkpoint.load(path)["model"]), name


# (precision, model, lr): resnet8 at lr=30 keeps a finite training loss while batch norm's
# running variance overflows to inf (the run used to end `done` with a non-finite best.pt);
# lenet5 at lr=1e6 gives a non-finite loss at once
@pytest.mark.parametrize("precision, model, lr", [
    ("fp32", "resnet8", 30), ("fp32", "lenet5", 1e6), ("fp64", "resnet8", 1e30),
    ("bf16_mixed", "resnet8", 30), ("bf16_mixed", "lenet5", 1e6),
    ("fp16_mixed", "lenet5", 1e6), ("bf16_pure", "lenet5", 1e6),
])
def test_a_huge_lr_ends_diverged_under_each_cpu_precision(outputs, precision, model, lr):
    result = CliRunner().invoke(app, ["train", *FAST, f"model={model}", f"optim.lr={lr}",
                                      f"precision={precision}", "trainer.epochs=2"])
    assert result.exit_code == 3, result.output
    run = _only_run(outputs)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "diverged"
    _no_non_finite_checkpoint(run)
    row = results.read_table(outputs).iloc[-1]
    assert row["status"] == "diverged"
    assert all(c in summary and c in row.index for c in COUNTERS)
    assert "diverged" in (run / "train.log").read_text()


def test_the_counters_are_in_the_summary_and_the_row(outputs):
    s = train(tiny(*FAST, "model=lenet5", "optim.lr=1e6", "trainer.on_nan=rollback",
                   "trainer.max_rollbacks=1", "trainer.epochs=2"))
    assert s["status"] == "diverged" and s["rollbacks"] == 1 and s["nan_steps"] == 2
    row = results.read_table(outputs).iloc[-1]
    assert (row["rollbacks"], row["nan_steps"], row["skipped_images"]) == (1, 2, 0)


def test_skipped_images_are_counted(tmp_path, outputs):
    root = tmp_path / "folder"
    write_image_folder(root, classes=2, per_class=8, size=12)
    (root / "class0" / "broken.png").write_bytes(b"not a png")
    (root / "class1" / "broken.png").write_bytes(b"")
    s = train(tiny("data=imagefolder", f"data.root={root}", "data.on_bad_image=skip",
                   "data.workers=0", "data.image_size=12", "model=lenet5", "trainer.epochs=1",
                   "trainer.batch_size=4"))
    assert s["skipped_images"] == 2
    assert results.read_table(outputs).iloc[-1]["skipped_images"] == 2


class NanEval:
    """evaluate() whose loss is NaN from the `start`-th call on (1-based): a fault injected into
    the validation pass or the test pass, which the training loss cannot show."""

    def __init__(self, real, start):
        self.real, self.start, self.n = real, start, 0

    def __call__(self, *args, **kwargs):
        self.n += 1
        out = self.real(*args, **kwargs)
        return {**out, "loss": float("nan")} if self.n >= self.start else out


def test_a_non_finite_validation_loss_ends_the_run_diverged(outputs, monkeypatch):
    # calls: epoch 1 val, epoch 1 train subset, epoch 2 val, ...
    monkeypatch.setattr(engine, "evaluate", NanEval(engine.evaluate, 3))
    s = train(tiny(*FAST, "model=lenet5", "trainer.epochs=3"))
    assert s["status"] == "diverged" and s["epochs_run"] == 2 and s["best_epoch"] == 1
    run = _only_run(outputs)
    assert "validation loss is not finite" in (run / "train.log").read_text()
    assert checkpoint.load(run / "checkpoints" / "best.pt")["epoch"] == 1
    assert math.isfinite(s["test_loss"])  # the test pass scores epoch 1's weights


def test_a_non_finite_validation_loss_rolls_back_under_on_nan_rollback(monkeypatch):
    calls = []
    real = engine.evaluate

    def nan_once(*args, **kwargs):  # the third call (epoch 2's validation) only
        calls.append(1)
        out = real(*args, **kwargs)
        return {**out, "loss": float("nan")} if len(calls) == 3 else out

    monkeypatch.setattr(engine, "evaluate", nan_once)
    s = train(tiny(*FAST, "model=lenet5", "trainer.epochs=3", "trainer.on_nan=rollback"))
    assert s["status"] == "done" and s["rollbacks"] == 1 and s["epochs_run"] == 3


def test_a_non_finite_test_loss_makes_the_run_diverged_with_exit_3(outputs, monkeypatch):
    monkeypatch.setattr(evaluate_module, "evaluate", NanEval(evaluate_module.evaluate, 1))
    result = CliRunner().invoke(app, ["train", *FAST, "model=lenet5", "trainer.epochs=1"])
    assert result.exit_code == 3, result.output
    row = results.read_table(outputs).iloc[-1]
    assert row["status"] == "diverged"
    assert "test loss is not finite" in (_only_run(outputs) / "train.log").read_text()


def test_keep_best_never_writes_non_finite_weights(tmp_path):
    """Whatever lets weights turn non-finite with a finite score, best.pt is not written."""
    import torch

    from cnnlab.run import Run

    net = torch.nn.Linear(2, 2)
    with torch.no_grad():
        net.weight[0, 0] = float("inf")
    run = Run.create(tmp_path / "out")
    loop = SimpleNamespace(net=net, run=run, cfg=SimpleNamespace(checkpoints=True), mode="max",
                           monitor="val_acc")
    result = engine.FitResult()
    engine._keep_best(loop, result, 1, 0.5)
    assert not (run.checkpoints / "best.pt").exists() and result.best_state is None
    assert "not finite" in (run.root / "train.log").read_text()
