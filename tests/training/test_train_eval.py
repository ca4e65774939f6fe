"""train_loss/train_acc: the epoch's weights in eval mode on a fixed training subset
(trainer.train_eval_size), next to the train-mode running averages (running_loss/running_acc)."""

import json
import math

import pandas as pd
import pytest
import torch

from cnnlab import checkpoint, data, models
from cnnlab.training.recipe import build_parts, train, train_eval_size
from conftest import tiny

# dropout, heavy augmentation (crops, flips, colour, cutout, cutmix) and 24x24 training crops of
# the 32x32 shapes images: the running numbers are of different images than the eval pass sees
NOISY = ("model=lenet5", "model.act=relu", "model.dropout=0.5", "aug=strong", "aug.crop_size=24",
         "aug.crop_padding=0", "trainer.channels_last=false")


def _rows(summary) -> pd.DataFrame:
    return pd.read_csv(f"{summary['path']}/metrics.csv")


def _subset_by_hand(cfg, bundle):
    """The rule written out again: the first N of randperm(n_train) seeded with data.split_seed."""
    n = len(bundle.train)
    size = min(n, max(len(bundle.val), 1000))  # trainer.train_eval_size=auto
    gen = torch.Generator().manual_seed(cfg.data.split_seed)
    index = torch.randperm(n, generator=gen)[:size].sort().values
    return bundle.train.images[index], bundle.train.labels[index]


def _independent_eval(cfg, weights: dict, crop: int):
    """The weights in eval mode, a plain loop over the subset: uint8 -> [0, 1] -> normalised ->
    centre crop -> model; (accuracy, mean cross-entropy, n)."""
    bundle = data.create(cfg.data)
    images, labels = _subset_by_hand(cfg, bundle)
    opts = {k: v for k, v in cfg.model.items() if k != "name"}
    net = models.create(cfg.model.name, num_classes=bundle.num_classes, in_chans=bundle.in_chans,
                        input_size=(crop, crop), **opts)
    net.load_state_dict(weights)
    net.eval()
    mean = torch.tensor(bundle.mean).view(1, -1, 1, 1)
    std = torch.tensor(bundle.std).view(1, -1, 1, 1)
    top = (images.shape[-1] - crop) // 2
    correct, loss_sum = 0, 0.0
    with torch.no_grad():
        for i in range(0, len(labels), cfg.trainer.eval_batch_size):
            x = (images[i:i + cfg.trainer.eval_batch_size].float() / 255 - mean) / std
            y = labels[i:i + cfg.trainer.eval_batch_size]
            logits = net(x[..., top:top + crop, top:top + crop].contiguous())
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
    return correct / len(labels), loss_sum / len(labels), len(labels)


@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory):
    """Two epochs under dropout and heavy augmentation; the test split on the last weights."""
    out = tmp_path_factory.mktemp("noisy")
    cfg = tiny(*NOISY, "trainer.epochs=2", "trainer.test_on=last", f"outputs={out}")
    return cfg, train(cfg)


def test_train_acc_equals_an_independent_eval_of_the_saved_weights(noisy_run):
    cfg, s = noisy_run
    rows = _rows(s)
    ckpts = f"{s['path']}/checkpoints"
    last, best = checkpoint.load(f"{ckpts}/last.pt"), checkpoint.load(f"{ckpts}/best.pt")
    assert last["epoch"] == 2 and s["input_size"] == [24, 24]
    for state, epoch in ((last["model"], 2), (best["model"], best["epoch"])):
        acc, loss, n = _independent_eval(cfg, state, crop=24)
        row = rows[rows.epoch == epoch].iloc[0]
        assert n == s["n_train_eval"] == 360  # shapes 400 - 10% validation: all of it (< 1000)
        assert row.train_acc == acc, epoch
        assert row.train_loss == pytest.approx(loss, rel=1e-5), epoch
    assert s["train_acc"] == rows.train_acc.iloc[-1] and s["running_acc"] == rows.running_acc.iloc[-1]


def test_under_dropout_and_augmentation_running_acc_differs_and_train_acc_reproduces(noisy_run):
    cfg, s = noisy_run
    rows = _rows(s)
    assert (rows.running_acc != rows.train_acc).all() and (rows.running_loss != rows.train_loss).all()
    again = _rows(train(cfg))
    cols = ["train_loss", "train_acc", "running_loss", "running_acc", "val_loss", "val_acc"]
    pd.testing.assert_frame_equal(rows[cols], again[cols], check_exact=True)


def _subset(*overrides):
    parts = build_parts(tiny(*overrides))
    loader = parts.train_eval_loader
    batches = []
    for epoch in (1, 7):  # set_epoch must not move an unshuffled loader
        loader.set_epoch(epoch)
        batches.append([(x.clone(), y.clone()) for x, y in loader])
    for (x1, y1), (x2, y2) in zip(*batches):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    return torch.cat([x for x, _ in batches[0]]), torch.cat([y for _, y in batches[0]])


def test_the_subset_is_the_same_across_seeds_and_epochs_and_follows_split_seed():
    base = ("data=digits", "model=lenet5")
    x0, y0 = _subset(*base, "seed=0")
    x1, y1 = _subset(*base, "seed=1", "aug=flip")
    assert torch.equal(x0, x1) and torch.equal(y0, y1)
    assert len(y0) == 1000 and len(set(y0.tolist())) == 10  # digits: 1295 train, 143 val
    x2, _ = _subset(*base, "data.split_seed=1")
    assert not torch.equal(x0, x2)


def test_default_size_rule():
    assert train_eval_size("auto", 50_000, 5_000) == 5_000  # as many as validation
    assert train_eval_size("auto", 1_295, 143) == 1_000  # at least 1000
    assert train_eval_size("auto", 360, 40) == 360  # all of a smaller training split
    assert train_eval_size(200, 360, 40) == 200 and train_eval_size(10_000, 360, 40) == 360
    assert train_eval_size(0, 360, 40) == 0


def test_size_0_falls_back_to_the_running_numbers_and_says_so():
    args = ("model=lenet5", "model.dropout=0.3", "aug=flip")
    off = train(tiny(*args, "trainer.train_eval_size=0"))
    on = train(tiny(*args))
    a, b = _rows(off), _rows(on)
    assert (a.train_acc == a.running_acc).all() and (a.train_loss == a.running_loss).all()
    assert off["n_train_eval"] == 0 and on["n_train_eval"] == 360
    assert "trainer.train_eval_size=0" in open(f"{off['path']}/train.log").read()
    # the extra pass changes nothing else: training, validation and test come out the same
    cols = ["running_loss", "running_acc", "val_loss", "val_acc", "lr"]
    pd.testing.assert_frame_equal(a[cols], b[cols], check_exact=True)
    assert off["test_acc"] == on["test_acc"] and off["best_epoch"] == on["best_epoch"]
    assert json.loads(open(f"{on['path']}/summary.json").read())["running_acc"] == b.running_acc.iloc[-1]


def test_without_validation_the_monitor_is_the_eval_mode_train_acc():
    s = train(tiny("model=lenet5", "model.dropout=0.5", "aug=flip", "data.val_fraction=0",
                   "trainer.epochs=3"))
    rows = _rows(s)
    assert math.isnan(rows.val_acc.iloc[0]) and s["n_train_eval"] == 400
    best = rows.train_acc.to_numpy().argmax() + 1  # the first of equal maxima, as _keep_best takes
    row = rows.iloc[best - 1]
    saved = checkpoint.load(f"{s['path']}/checkpoints/best.pt")
    assert s["best_epoch"] == saved["epoch"] == best
    assert saved["train_acc"] == row.train_acc != row.running_acc


@pytest.mark.slow
def test_a_probe_run_has_the_same_columns_with_eval_mode_numbers(tmp_path):
    source = train(tiny("model=resnet8", "trainer.epochs=1", f"outputs={tmp_path}"))
    s = train(tiny("data=digits", "transfer=linear_probe", f"transfer.source={source['path']}",
                   "data.train_per_class=10"))
    rows = _rows(s)
    assert {"train_acc", "train_loss", "running_acc", "running_loss"} <= set(rows.columns)
    # the probe is scored on every training image's fixed features: running_* repeat train_*
    assert (rows.running_acc == rows.train_acc).all() and (rows.running_loss == rows.train_loss).all()
    assert s["n_train_eval"] == s["n_train"] == 100 and s["running_acc"] == s["train_acc"]
