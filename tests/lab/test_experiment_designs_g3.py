"""Design checks of the C11-C13 and C15-C18 experiments (precision, batchnorm_lr, norm_batchsize,
activation, depth_residual, ensemble, optimizers): each tests its claim as stated, on real images,
with enough seeds for its tests, and says why it is fair, what it cannot settle and how long its
quick scale takes. Parsing only: no job runs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from cnnlab.lab import experiment as exp
from cnnlab.lab import tuning

FILES = ("precision", "batchnorm_lr", "norm_batchsize", "activation", "depth_residual", "ensemble",
         "optimizers")


def _load(name: str):
    return exp.load(exp.experiments_dir() / f"{name}.yaml")


def _rules(spec):
    return [spec.verdict, *spec.also]


def _header(name: str) -> str:
    lines = (exp.experiments_dir() / f"{name}.yaml").read_text().splitlines()
    return "\n".join(line for line in lines if line.startswith("#"))


def _quick_jobs(spec) -> int:
    settings = len(tuning.settings(tuning.grid(spec, "quick")))
    return math.prod(len(v) for v in spec.axes.values()) * len(spec.seeds) * settings


@pytest.mark.parametrize("name", FILES)
def test_real_images_one_thread_and_a_documented_design(name):
    spec = _load(name)
    assert "data=fashion_mnist" in spec.base, "quick scale on real images"
    assert "trainer.threads=1" in spec.base, "run-all --jobs 2 gives each job one core"
    head = _header(name).lower()
    for part in ("why this is a fair test", "what it cannot settle", "published", "timing"):
        assert part in head, f"{name}: the top comment lacks '{part}'"
    assert "placeholder" not in head
    full = spec.scales["full"]
    assert "trainer.threads=0" in full and "data.train_per_class=null" in full


@pytest.mark.parametrize("name", FILES)
def test_enough_seeds_for_the_tests_the_rules_use(name):
    spec = _load(name)
    rules = _rules(spec)
    if any(r.paired for r in rules) or spec.ensemble or spec.tune:
        assert len(spec.seeds) >= 5
    censored = [r for r in rules if (r.metric or spec.metric) == "epochs_to_target"]
    for r in censored:  # rank tests: 6 vs 6 can reach p = 0.002; a sign test on 6 pairs only 0.031
        assert len(spec.seeds) >= 6 and not r.paired


def test_precision_tests_the_16_bit_handling_and_only_settleable_speeds():
    spec = _load("precision")
    assert spec.exclusive
    pairs = {(r.a.get("precision"), r.b.get("precision"), r.metric or spec.metric) for r in _rules(spec)}
    assert ("fp32", "fp64", "images_per_sec") in pairs
    assert ("fp16_mixed", "fp16_mixed_noscale", "test_acc") in pairs
    assert ("fp16_pure_stochastic", "fp16_pure", "test_acc") in pairs
    assert ("bf16_pure_stochastic", "bf16_pure", "test_acc") in pairs
    # fp16 has no native arithmetic on the CPU this runs on: no rule may time it
    assert not any(r.metric == "images_per_sec" and "fp16" in str(r.a) + str(r.b) for r in _rules(spec))
    ratio = [r for r in _rules(spec) if r.kind == "ratio"]
    assert ratio and ratio[0].range == [0.99, 1.01]


def test_batchnorm_lr_sweeps_a_grid_fair_to_both_arms_without_tuning_it():
    spec = _load("batchnorm_lr")
    assert not spec.tune, "the learning rate is the axis under test"
    lrs = spec.axes["optim.lr"]
    assert min(lrs) <= 0.03 and max(lrs) >= 1.0  # rates for the no-BN net and rates BN opens up
    assert spec.target is not None
    assert "trainer.on_nan=skip" in spec.base  # a diverged run is censored at the full budget


def test_norm_batchsize_has_tiny_batches_and_all_four_norms():
    spec = _load("norm_batchsize")
    assert 2 in spec.axes["trainer.batch_size"] and max(spec.axes["trainer.batch_size"]) >= 16
    assert spec.verdict.when == {"trainer.batch_size": 2}  # the central comparison: GN vs BN at 2
    assert set(spec.axes["model.norm"]) == {"bn", "gn", "ln", "in"}
    assert spec.tune  # each batch size gets its own rate


def test_activation_several_times_is_a_ratio_rule_on_censored_epochs():
    spec = _load("activation")
    assert spec.metric == "epochs_to_target" and spec.target.metric == "train_acc"
    rules = _rules(spec)
    assert {r.a["model.act"] for r in rules} == {"tanh", "sigmoid"}
    assert all(r.kind == "ratio" and r.range == [2, None] and r.b == {"model.act": "relu"} for r in rules)
    assert "optim.lr" in spec.tune


def test_depth_residual_compares_training_accuracy_at_two_depths():
    spec = _load("depth_residual")
    assert spec.metric == "train_acc"
    assert set(spec.axes["model"]) == {"plain20", "resnet20", "plain56", "resnet56"}


def test_ensemble_members_share_their_training_set():
    spec = _load("ensemble")
    assert spec.ensemble and spec.verdict.kind == "ensemble"
    assert not any(o.startswith("data.split_seed=") and "seed}" in o for o in spec.base)


def test_optimizers_each_search_a_rate_grid_holding_their_usual_rate():
    spec = _load("optimizers")
    for scale in ("quick", "full"):
        lrs = tuning.grid(spec, scale)["optim.lr"]
        assert min(lrs) <= 1e-3 and max(lrs) >= 1.0  # Adam/RMSprop's 1e-3 ... Adadelta's 1.0


@pytest.mark.parametrize("name", FILES)
def test_quick_scale_job_counts_stay_within_the_timed_budget(name):
    # the TIMING comments were measured for these counts; a larger grid needs a new measurement
    budget = {"precision": 45, "batchnorm_lr": 48, "norm_batchsize": 80, "activation": 72,
              "depth_residual": 60, "ensemble": 20, "optimizers": 140}
    assert _quick_jobs(_load(name)) <= budget[name]


def test_the_files_named_here_exist():
    for name in FILES:
        assert Path(exp.experiments_dir() / f"{name}.yaml").is_file()
