"""trainer.on_nan: stop ends the run `diverged` (exit code 3, a results row), skip leaves bad
steps out, rollback reloads the last good epoch with the learning rate halved."""

import math

import pytest
import torch
from typer.testing import CliRunner

from cnnlab import checkpoint, results
from cnnlab.training import engine
from cnnlab.training import optim
from cnnlab.cli.main import app
from cnnlab.training.progress import make_progress
from cnnlab.training.recipe import build_parts
from tests.conftest import tiny

RUN = ["data=digits", "model=lenet5", "trainer.epochs=3"]


class NanOn:
    """Cross-entropy that returns NaN on the given (1-based) calls: a controlled blow-up."""

    def __init__(self, calls):
        self.calls, self.n = set(calls), 0
        self.ce = torch.nn.CrossEntropyLoss()

    def __call__(self, logits, y):
        self.n += 1
        loss = self.ce(logits, y)
        return loss * float("nan") if self.n in self.calls or "all" in self.calls and self.n > 25 else loss


def _fit(cfg, criterion):
    parts = build_parts(cfg)
    opt = optim.build_optimizer(parts.model, cfg.optim)
    sched, when = optim.build_scheduler(opt, cfg.sched, cfg.trainer.epochs, len(parts.train_loader), "max")
    fit = engine.fit(parts.model, parts.train_loader, parts.val_loader, opt, sched, when, cfg.trainer,
                     parts.precision, make_progress("none", cfg.trainer.epochs), criterion=criterion)
    return fit, parts, opt


def _finite(model) -> bool:
    return checkpoint.all_finite(model.state_dict())


def test_a_run_that_blows_up_ends_diverged_with_exit_3_and_a_row(outputs):
    result = CliRunner().invoke(app, ["train", *RUN, "optim.lr=1e12", "sched=none",
                                      "trainer.progress=none", "trainer.threads=1"])
    assert result.exit_code == 3, result.output
    df = results.read_table(outputs)
    assert list(df["status"]) == ["diverged"]
    (run,) = (outputs / "runs").iterdir()
    last = run / "checkpoints" / "last.pt"
    if last.exists():  # written only while the weights were finite
        assert checkpoint.all_finite(checkpoint.load(last)["model"])
    assert "diverged" in (run / "train.log").read_text()


def test_skip_leaves_bad_steps_out():
    cfg = tiny(*RUN, "trainer.on_nan=skip")
    fit, parts, _ = _fit(cfg, NanOn({3, 4, 30}))
    assert not fit.diverged and fit.nan_steps == 3 and len(fit.history) == 3
    assert all(math.isfinite(r["train_loss"]) for r in fit.history)
    assert _finite(parts.model)


def test_stop_stops_at_the_first_bad_step():
    fit, parts, _ = _fit(tiny(*RUN), NanOn({30}))
    assert fit.diverged and fit.nan_steps == 1 and math.isnan(fit.history[-1]["train_loss"])
    assert _finite(parts.model)  # checked before the step: the bad loss never reached the weights


def test_rollback_halves_the_lr_and_finishes():
    cfg = tiny(*RUN, "trainer.on_nan=rollback", "sched=none")
    fit, _, opt = _fit(cfg, NanOn({30}))  # epoch 2 (about 20 steps an epoch)
    assert not fit.diverged and fit.rollbacks == 1 and len(fit.history) == 3
    assert [r["epoch"] for r in fit.history] == [1, 2, 3]
    assert opt.param_groups[0]["lr"] == pytest.approx(cfg.optim.lr / 2)
    assert fit.history[1]["lr"] == pytest.approx(cfg.optim.lr / 2)  # epoch 2 ran again, halved


def test_rollback_gives_up_after_max_rollbacks():
    cfg = tiny(*RUN, "trainer.on_nan=rollback", "trainer.max_rollbacks=2")
    fit, _, _ = _fit(cfg, NanOn({"all"}))
    assert fit.diverged and fit.rollbacks == 2
