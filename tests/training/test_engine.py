import json
import math

import pandas as pd
import pytest
import torch

from cnnlab.training import optim
from cnnlab.config import compose
from cnnlab.config.schema import conf_dir
from cnnlab.training.recipe import train
from conftest import tiny


def _metrics(summary):
    return pd.read_csv(f"{summary['path']}/metrics.csv")


def test_loss_falls_and_accuracy_beats_chance_on_a_tiny_problem():
    s = train(tiny("data=digits", "model=resnet8", "trainer.epochs=4"))
    m = _metrics(s)
    assert m.train_loss.iloc[-1] < 0.5 * m.train_loss.iloc[0]
    assert s["test_acc"] > 0.5 and s["status"] == "done"


def test_same_config_and_seed_give_identical_metrics():
    cfg = tiny("model=lenet5", "model.act=relu", "trainer.epochs=2", "aug=flip")
    a, b = _metrics(train(cfg)), _metrics(train(cfg))
    cols = ["train_loss", "train_acc", "val_loss", "val_acc"]
    pd.testing.assert_frame_equal(a[cols], b[cols], check_exact=True)
    c = _metrics(train(tiny("model=lenet5", "model.act=relu", "trainer.epochs=2", "aug=flip", "seed=1")))
    assert not a[cols].equals(c[cols])


def test_early_stopping_stops():
    # an lr far too small to change the validation metric: no improvement after epoch 1
    cfg = tiny("data=digits", "model=lenet5", "optim=sgd_plain", "optim.lr=1e-9", "sched=none",
               "trainer.epochs=10", "trainer.early_stop=2", "trainer.monitor=val_acc")
    s = train(cfg)
    assert s["stopped_early"] and s["epochs_run"] == 3 and s["best_epoch"] == 1


def test_run_folder_holds_config_metrics_summary_checkpoints_and_log(outputs):
    s = train(tiny("data=digits", "model=lenet5"))
    root = outputs / "runs" / s["run_id"]
    assert {p.name for p in root.iterdir()} >= {"config.yaml", "metrics.csv", "summary.json",
                                                "train.log", "checkpoints"}
    assert {p.name for p in (root / "checkpoints").iterdir()} == {"best.pt", "last.pt"}
    assert json.loads((root / "summary.json").read_text())["test_acc"] == s["test_acc"]
    assert len(_metrics(s)) == 2
    row = pd.read_csv(outputs / "results.csv").iloc[-1]
    assert row.run_id == s["run_id"] and row.model == "lenet5" and row.data == "digits"
    assert row["optim.lr"] == row.lr and row.params == s["params"]


def test_test_set_uses_best_or_last_weights():
    best = train(tiny("data=digits", "model=lenet5", "trainer.epochs=3", "trainer.test_on=best"))
    last = train(tiny("data=digits", "model=lenet5", "trainer.epochs=3", "trainer.test_on=last"))
    assert best["best_epoch"] >= 1
    if best["best_epoch"] == 3:
        assert best["test_acc"] == last["test_acc"]


PRESETS = sorted(p.stem for p in (conf_dir() / "optim").glob("*.yaml"))  # conf/optim/*.yaml


def _steps(cfg) -> bool:
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    opt = optim.build_optimizer(model, cfg)
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.randn(8, 4)).pow(2).mean().backward()
    opt.step()
    return any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_every_allowed_optimizer_builds_and_steps(name):
    assert _steps(compose([f"optim.name={name}"]).optim)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_optimizer_preset_builds_and_steps(preset):
    assert _steps(compose([f"optim={preset}"]).optim)


def test_every_allowed_optimizer_has_a_preset():
    assert {compose([f"optim={p}"]).optim.name for p in PRESETS} == set(optim.OPTIMIZERS)


def test_norm_and_bias_parameters_can_skip_weight_decay():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    groups = optim.param_groups(model, 5e-4, no_decay_norm_bias=True)
    assert [len(g["params"]) for g in groups] == [1, 3] and groups[1]["weight_decay"] == 0
    assert len(optim.param_groups(model, 5e-4, no_decay_norm_bias=False)) == 1


def _lrs(sched_overrides, epochs=10, steps=5):
    cfg = compose(["optim.lr=1.0", *sched_overrides]).sched  # the lr of the optimizer below
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched, when = optim.build_scheduler(opt, cfg, epochs, steps, "max")
    lrs = []
    for _ in range(epochs * steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_cosine_schedule_warms_up_then_decays_to_min_lr():
    lrs = _lrs(["sched=cosine", "sched.warmup_epochs=1", "sched.min_lr=0.1"])
    assert lrs[0] == pytest.approx(0.1 + 0.9 * 1 / 5) and lrs[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[5:], lrs[6:]))
    expected_last = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 44 / 45))
    assert lrs[-1] == pytest.approx(expected_last)


def test_step_and_multistep_schedules():
    lrs = _lrs(["sched=step", "sched.step_size=3", "sched.warmup_epochs=0"])
    assert lrs[14] == pytest.approx(1.0) and lrs[15] == pytest.approx(0.1) and lrs[30] == pytest.approx(0.01)
    lrs = _lrs(["sched=multistep", "sched.milestones=[2,5]", "sched.warmup_epochs=0"])
    assert lrs[9] == pytest.approx(1.0) and lrs[10] == pytest.approx(0.1) and lrs[25] == pytest.approx(0.01)


def test_onecycle_and_plateau_run_in_training():
    s = train(tiny("data=digits", "model=lenet5", "sched=onecycle"))
    assert s["status"] == "done"
    s = train(tiny("data=digits", "model=lenet5", "sched=plateau", "sched.patience=0",
                   "optim=sgd_plain", "optim.lr=1e-6", "trainer.epochs=3"))
    lrs = _metrics(s).lr.tolist()
    assert lrs[-1] < lrs[0]  # the validation metric stalled, so the lr was divided


def test_label_smoothing_and_grad_clip_are_applied():
    s = train(tiny("data=digits", "model=lenet5", "trainer.label_smoothing=0.2", "trainer.grad_clip=0.5"))
    # with smoothing 0.2 over 10 classes the training loss cannot go below the smoothed
    # target's entropy (running_loss: the criterion's; train_loss is plain cross-entropy in eval
    # mode, like val_loss)
    floor = -(0.82 * math.log(0.82) + 9 * 0.02 * math.log(0.02))
    assert _metrics(s).running_loss.min() >= floor - 1e-6


def test_a_run_that_raises_is_marked_failed_and_adds_no_row(outputs, monkeypatch):
    from cnnlab.training import engine

    def boom(*args, **kwargs):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(engine, "fit", boom)
    with pytest.raises(RuntimeError):
        train(tiny("data=digits", "model=lenet5"))
    (run_dir,) = list((outputs / "runs").iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "simulated crash" in summary["error"]
    assert not (outputs / "results.csv").exists()


def test_plain_progress_prints_one_line_per_epoch(capsys):
    train(tiny("data=digits", "model=lenet5", "trainer.progress=plain", "trainer.epochs=3"))
    lines = [l for l in capsys.readouterr().out.splitlines() if " epoch " in l]
    assert len(lines) == 3 and "val loss" in lines[0] and "img/s" in lines[0]


def test_auxiliary_heads_train_and_evaluate():
    s = train(tiny("data=shapes", "data.num_train=200", "data.num_test=50", "model=googlenet",
                   "model.aux=true", "model.width=0.25", "trainer.epochs=1"))
    assert s["status"] == "done" and 0 <= s["test_acc"] <= 1


@pytest.mark.parametrize("preset", ["alexnet", "mixup", "cutmix", "strong"])
def test_augmentation_presets_train_end_to_end(preset):
    s = train(tiny("data=shapes", "data.num_train=200", "data.num_test=50", "model=lenet5",
                   f"aug={preset}", "trainer.epochs=1"))
    assert s["status"] == "done" and 0 <= s["train_acc"] <= 1
