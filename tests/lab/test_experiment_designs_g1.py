"""The designs of C1, C2, C3, C14 and C19 (experiments/augmentation_datasize, augmentation_ablation,
tencrop, alexnet_ablation, regularizers): each tests every part of its claim with a rule, on real
images at the quick scale, and the presets they rely on compose to what the comments say.

A reg preset sets keys of other groups, and a command-line key (base, scale) overrides it: so the
baseline without weight decay comes from a preset (optim=sgd_nowd), never from
optim.weight_decay=0, which would silently turn the weight-decay arm into the baseline (as
model.dropout=0 would the dropout arm: the models C19 uses have no dropout by default). The last
tests guard that."""

from __future__ import annotations

import pytest

from cnnlab.config import compose
from cnnlab.lab import experiment as exp

MINE = ("augmentation_datasize", "augmentation_ablation", "tencrop", "alexnet_ablation", "regularizers")


def _load(name):
    return exp.load(exp.experiments_dir() / f"{name}.yaml")


def _rules(spec):
    return [spec.verdict, *spec.also]


def _quick(spec):
    return exp.sweep_overrides(spec, "quick")


@pytest.mark.parametrize("name", MINE)
def test_quick_scale_trains_on_fashion_mnist_one_thread_per_job(name):
    spec = _load(name)
    quick = _quick(spec)
    assert "data=fashion_mnist" in quick
    assert "trainer.threads=1" in quick  # run-all puts two jobs side by side on 2 cores
    assert any(o.startswith("data=cifar10") for o in spec.scales["full"])


@pytest.mark.parametrize("name", MINE)
def test_every_rule_is_paired(name):
    # the arms of every comparison share seeds (and in C3 the trained network itself)
    assert all(r.paired for r in _rules(_load(name)))


def test_c19_one_rule_per_regulariser_against_none_with_per_arm_lr():
    spec = _load("regularizers")
    regs = [r for r in spec.axes["reg"] if r != "none"]
    assert sorted(r.a["reg"] for r in _rules(spec)) == sorted(regs)
    assert all(r.b == {"reg": "none"} for r in _rules(spec))
    assert len(regs) == 7 and len(spec.seeds) >= 5
    assert "optim.lr" in spec.tune and len(spec.tune_scales["quick"]["optim.lr"]) >= 2


def test_c2_each_op_alone_and_all_together_against_none():
    spec = _load("augmentation_ablation")
    arms = [a for a in spec.axes["aug"] if a != "none"]
    assert sorted(r.a["aug"] for r in _rules(spec)) == sorted(arms)
    assert {"flip", "crop", "scale", "color", "classic"} <= set(arms)
    assert len(spec.seeds) >= 5 and "optim.lr" in spec.tune
    cfg = compose(["data=fashion_mnist", "aug=classic", "aug.scale_min=0.25"])
    assert list(cfg.aug.ops) == ["scale", "crop", "flip", "color"]


def test_c1_gain_at_every_data_size():
    spec = _load("augmentation_datasize")
    sizes = spec.axes["data.train_per_class"]
    assert len(sizes) >= 3 and max(sizes) >= 10 * min(sizes)
    assert sorted(spec.verdict.when["data.train_per_class"]) == sorted(sizes)
    assert len(spec.seeds) >= 5 and "optim.lr" in spec.tune
    assert spec.axes["aug"][0] == "none" and spec.verdict.b == {"aug": "none"}


def test_c3_tencrop_vs_centre_and_multiscale_vs_tencrop_on_trained_scales():
    spec = _load("tencrop")
    pairs = {(r.a["views"], r.b["views"]) for r in _rules(spec)}
    multi = next(v for v in spec.views if v.startswith("multiscale:"))
    assert pairs == {("tencrop", "center"), (multi, "tencrop")}
    scales = [int(s) for s in multi.split(":")[1].split(",")]
    quick = dict(o.split("=", 1) for o in _quick(spec) if "=" in o and "," not in o)
    # the training zoom covers the test scales: box area (28 / largest scale)^2 of the 28 px image
    assert min(scales) == 28 and float(quick["aug.scale_min"]) == pytest.approx((28 / max(scales)) ** 2, abs=1e-3)


def test_c14_factorial_with_one_rule_per_part():
    spec = _load("alexnet_ablation")
    assert set(spec.axes) == {"model.pool", "model.lrn", "model.dropout"}
    parts = {next(iter(r.a)): r.metric or spec.metric for r in _rules(spec)}
    assert parts == {"model.pool": "test_acc", "model.lrn": "test_acc", "model.dropout": "gap"}
    dropout = next(r for r in _rules(spec) if "model.dropout" in r.a)
    assert dropout.a == {"model.dropout": 0.0} and dropout.b == {"model.dropout": 0.5}  # lower gap with dropout
    # every rule pairs over the 4 cells of the other two factors: 4 x seeds pairs
    assert 4 * len(spec.seeds) >= 12
    assert "trainer=last" in spec.base  # gap = train_acc - test_acc of the same weights


@pytest.mark.parametrize("reg, decay, dropout", [("none", 0.0, 0.0), ("weight_decay", 5e-4, 0.0),
                                                 ("dropout", 0.0, 0.5), ("mixup", 0.0, 0.0)])
def test_baseline_presets_leave_the_reg_presets_in_charge(reg, decay, dropout):
    for scale in ("quick", "full"):
        overrides = [o for o in exp.sweep_overrides(_load("regularizers"), scale) if "," not in o]
        cfg = compose([*overrides, f"reg={reg}"])
        assert cfg.optim.weight_decay == pytest.approx(decay) and cfg.optim.momentum == 0.9
        assert (cfg.model.dropout or 0.0) == pytest.approx(dropout)  # None: the family's default, 0


def test_a_command_line_key_would_override_the_reg_preset():
    """Why the presets above exist: optim.weight_decay=0 on the command line beats reg=weight_decay."""
    cfg = compose(["optim=sgd", "optim.weight_decay=0", "reg=weight_decay"])
    assert cfg.optim.weight_decay == 0.0
