"""Regressions for edge cases found in review: each once gave a wrong result or a traceback."""

import math
import subprocess
import sys

import pytest
import torch

from cnnlab import data
from cnnlab.training import optim
from cnnlab.config import compose
from cnnlab.data.base import stratified_pick
from cnnlab.errors import UsageError
from cnnlab.training.recipe import build_parts, train
from conftest import tiny, write_image_folder


@pytest.mark.parametrize("name", ["sgd_plain", "adam", "adagrad", "adadelta"])
def test_onecycle_leaves_the_optimizers_own_momentum_alone(name):
    cfg = compose([f"optim={name}", "sched=onecycle"])
    model = torch.nn.Linear(2, 2)
    opt = optim.build_optimizer(model, cfg.optim)
    before = {k: v for k, v in opt.param_groups[0].items() if k in ("momentum", "betas")}
    sched, _ = optim.build_scheduler(opt, cfg.sched, 2, 5, "max")
    for _ in range(6):
        opt.step()
        sched.step()
    after = {k: v for k, v in opt.param_groups[0].items() if k in ("momentum", "betas")}
    assert before == after


def test_hold_outs_keep_one_image_of_every_class_for_training():
    labels = torch.tensor([0] * 10 + [1] * 3 + [2] * 1 + [3] * 2)
    held = stratified_pick(labels, torch.Generator().manual_seed(0), fraction=0.5, hold_out=True)
    left = torch.bincount(labels[~held], minlength=4)
    assert (left >= 1).all() and torch.bincount(labels[held], minlength=4)[2] == 0


def test_a_training_split_too_small_for_a_batch_is_a_usage_error():
    with pytest.raises(UsageError, match="too few for one batch"):
        build_parts(tiny("data=shapes", "data.num_train=1", "data.num_test=10", "data.val_fraction=0"))


def test_shapes_test_split_does_not_depend_on_num_train():
    a = data.create(tiny("data=shapes", "data.num_train=200", "data.num_test=50").data)
    b = data.create(tiny("data=shapes", "data.num_train=400", "data.num_test=50").data)
    assert torch.equal(a.test.images, b.test.images)


def test_top5_is_nan_with_five_classes_or_fewer(tmp_path):
    write_image_folder(tmp_path / "imgs", classes=3)
    s = train(tiny("data=imagefolder", f"data.root={tmp_path / 'imgs'}", "data.image_size=16",
                   "data.workers=0", "data.test_fraction=0.34", "model=lenet5"))
    assert math.isnan(s["test_top5"]) and not math.isnan(s["test_acc"])


def test_model_init_does_not_depend_on_how_data_is_loaded(tmp_path):
    write_image_folder(tmp_path / "imgs")
    weights = []
    for mode in ("true", "false"):
        parts = build_parts(tiny("data=imagefolder", f"data.root={tmp_path / 'imgs'}", "data.image_size=16",
                                 f"data.in_memory={mode}", "data.workers=1", "model=lenet5"))
        weights.append(next(parts.model.parameters()).detach().clone())
    assert torch.equal(weights[0], weights[1])


@pytest.mark.slow
def test_corrupt_image_in_a_worker_gives_one_line(tmp_path):
    write_image_folder(tmp_path / "imgs")
    (tmp_path / "imgs" / "class0" / "bad.png").write_text("not an image")
    proc = subprocess.run(
        [sys.executable, "-m", "cnnlab", "train", "data=imagefolder", f"data.root={tmp_path / 'imgs'}",
         "data.image_size=16", "data.workers=1", "trainer.epochs=1", f"outputs={tmp_path / 'out'}"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "bad.png" in proc.stderr


def test_float64_runs_end_to_end():
    s = train(tiny("data=digits", "model=lenet5", "precision.dtype=float64"))
    assert s["status"] == "done"


@pytest.mark.parametrize("overrides, fragment", [
    (["data.mean=[0.5,0.5,0.5]", "data.std=[0.5,0.5,0.5]"], "need 1 values"),
    (["data.mean=[0.5]"], "both data.mean and data.std"),
    (["data.mean=[0.5]", "data.std=[0.0]"], "must be positive"),
])
def test_bad_normalisation_settings(overrides, fragment):
    with pytest.raises(UsageError, match=fragment):
        data.create(tiny("data=digits", *overrides).data)


def test_lenet_pads_small_inputs_with_their_border():
    from cnnlab import models

    model = models.create("lenet5", 10, 1, input_size=(8, 8))
    x = torch.full((1, 1, 8, 8), -0.8)
    assert torch.allclose(model[0](x), torch.full((1, 1, 32, 32), -0.8))
