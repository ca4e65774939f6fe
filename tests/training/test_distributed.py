"""Data-parallel training (cnnlab/training/distributed.py): launch, join detection, one writer, exactness."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from cnnlab.training import distributed
from cnnlab.config import compose
from cnnlab.data.loader import InMemoryLoader
from cnnlab.errors import UsageError
from cnnlab.training.recipe import train
from conftest import TINY, tiny

# 60 training digits per class: 600 images, an even count, so two ranks' shards are exactly the
# one-process epoch (with an odd count a two-process epoch leaves one image out). lenet5 has no
# batch norm, so two processes x 16 images and one process x 32 compute the same gradient.
SAME = ["data=digits", "data.train_per_class=60", "model=lenet5", "trainer.epochs=3"]


def cnnlab(*args, env=None):
    return subprocess.run([sys.executable, "-m", "cnnlab", *args], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A two-process run with lr_scaling=linear (0.05 x 2) and the one-process run it should
    equal (lr 0.1, the same global batch), each in its own outputs folder; and this process's
    signal handlers before and right after the launch."""
    one_out, two_out = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("two")
    before = _handlers()
    two = train(compose(TINY + SAME + [f"outputs={two_out}", "trainer.devices=2",
                                       "trainer.batch_size=16", "optim.lr=0.05",
                                       "trainer.lr_scaling=linear"]))
    after = _handlers()
    one = train(compose(TINY + SAME + [f"outputs={one_out}", "trainer.batch_size=32",
                                       "optim.lr=0.1"]))
    return one, two, two_out, (before, after)


def _handlers() -> dict:
    return {name: signal.getsignal(getattr(signal, name)) for name in distributed.SIGNALS}


@pytest.mark.slow
def test_two_processes_equal_one_process_with_the_same_global_batch(pair):
    one, two, _, _ = pair
    a, b = (pd.read_csv(f"{s['path']}/metrics.csv") for s in (one, two))
    assert len(a) == len(b) == 3 and (a.epoch == b.epoch).all()
    # The updates differ only in float summation order (gradients summed over 32 images in one
    # pass vs 2 x 16 plus gloo's all-reduce), measured at ~1e-7 relative after 3 epochs: losses
    # within 1e-4 relative leave three orders of margin, and an image whose prediction flips on
    # a near-tie moves an accuracy by one image at most.
    for col in ("train_loss", "val_loss"):
        assert b[col].to_numpy() == pytest.approx(a[col].to_numpy(), rel=1e-4), col
    n_val, n_train = one["n_val"], 600
    assert ((a.val_acc - b.val_acc).abs() * n_val <= 1.001).all()
    assert ((a.train_acc - b.train_acc).abs() * n_train <= 1.001).all()
    assert abs(one["test_acc"] - two["test_acc"]) * one["n_test"] <= 1.001
    assert two["test_loss"] == pytest.approx(one["test_loss"], rel=1e-4)
    assert a.train_loss.iloc[-1] < 0.8 * a.train_loss.iloc[0]  # it learned: equality means something
    assert two["effective_lr"] == pytest.approx(0.1) and one["effective_lr"] == pytest.approx(0.1)
    assert (two["world_size"], two["global_batch_size"]) == (2, 32)
    assert (one["world_size"], one["global_batch_size"]) == (1, 32)


@pytest.mark.slow
def test_a_two_process_run_writes_one_folder_and_one_row(pair):
    _, two, out, _ = pair
    assert sorted(p.name for p in out.iterdir()) == ["results.csv", "results.csv.lock", "runs"]
    runs = list((out / "runs").iterdir())
    assert [r.name for r in runs] == [two["run_id"]]
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 1 and table.run_id[0] == two["run_id"]
    assert table.devices[0] == 2 and table.world_size[0] == 2 and table.status[0] == "done"
    root = runs[0]
    assert len(pd.read_csv(root / "metrics.csv")) == 3  # one writer: no duplicated epochs
    assert {p.name for p in (root / "checkpoints").iterdir()} == {"best.pt", "last.pt"}
    state = torch.load(root / "checkpoints" / "best.pt", weights_only=True)["model"]
    assert not any(k.startswith("module.") for k in state)  # the bare net, loadable by `eval`
    log = (root / "train.log").read_text()
    assert "data-parallel: 2 processes (gloo" in log
    assert "lr_scaling=linear: optim.lr 0.05 x 2" in log
    assert json.loads((root / "summary.json").read_text())["world_size"] == 2


@pytest.mark.slow
def test_a_launch_gives_back_the_signal_handlers_it_found(pair):
    """torch's elastic agent installs its own SIGINT/SIGTERM handlers in this (the launching)
    process and leaves them there; a later Ctrl-C must still be a KeyboardInterrupt (exit 130,
    the run recorded interrupted), not the agent's SignalException."""
    before, after = pair[3]
    assert before["SIGINT"] is signal.default_int_handler  # Python's own: what Ctrl-C raises from
    assert after == before
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the handler runs at the next bytecode boundary: long before this ends


@pytest.fixture
def handlers():
    """This process's signal handlers, put back after the test whatever it did to them."""
    before = _handlers()
    yield before
    for name, handler in before.items():
        if handler is not None:
            signal.signal(getattr(signal, name), handler)


def test_own_signal_handlers_undoes_a_foreign_handler(handlers):
    def foreign(signum, frame):
        raise RuntimeError("a launcher's handler")

    before = handlers
    with distributed._own_signal_handlers():
        for name in ("SIGINT", "SIGTERM"):
            signal.signal(getattr(signal, name), foreign)
        assert signal.getsignal(signal.SIGINT) is foreign
    assert _handlers() == before
    with pytest.raises(ValueError), distributed._own_signal_handlers():  # also when the body fails
        signal.signal(signal.SIGTERM, foreign)
        raise ValueError
    assert _handlers() == before


@pytest.mark.parametrize("override, fragment", [
    ("trainer.lr_scaling=bogus", "unknown trainer.lr_scaling 'bogus'"),
    ("trainer.device=cuda:1", "names one device"),
    pytest.param("trainer.sync_bn=true", "needs CUDA", marks=pytest.mark.skipif(
        torch.cuda.is_available(), reason="SyncBatchNorm runs on CUDA")),
])
def test_a_bad_setting_under_two_devices_fails_before_launching(override, fragment, monkeypatch,
                                                                outputs):
    def no_launch(*args, **kwargs):
        raise AssertionError("launched")

    monkeypatch.setattr(distributed, "launch", no_launch)
    with pytest.raises(UsageError, match=fragment.replace("(", r"\(")):
        train(tiny("trainer.devices=2", override))
    assert not outputs.exists()


def test_a_bad_setting_under_two_devices_is_one_line_and_exit_2(outputs):
    proc = cnnlab("train", "trainer.devices=2", "trainer.lr_scaling=bogus")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: unknown trainer.lr_scaling 'bogus'; "
                                                "choose from: none, linear"]
    assert not outputs.exists()


@pytest.mark.slow
def test_an_error_in_a_worker_is_one_line_in_the_parent(tmp_path, outputs):
    # data loads in the workers, so a missing data root fails there, in both ranks
    proc = cnnlab("train", "trainer.devices=2", "data=mnist", f"data.root={tmp_path}/absent")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not exist" in lines[0]
    assert not (outputs / "results.csv").exists()


TORCHRUN = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
SLURM = {"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1",
         "SLURM_NTASKS_PER_NODE": "2(x2)", "MASTER_ADDR": "node1", "MASTER_PORT": "29500"}
LAUNCH_KEYS = set(TORCHRUN) | set(SLURM) | {"SLURM_NNODES"}


@pytest.fixture
def clean_env(monkeypatch):
    for key in LAUNCH_KEYS:
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def test_detect_finds_torchrun_and_slurm_ranks(clean_env):
    assert distributed.detect() is None
    assert distributed.detect(TORCHRUN) == distributed.JoinEnv("torchrun", 1, 2, 1, 2)
    assert distributed.detect(SLURM) == distributed.JoinEnv("slurm", 3, 4, 1, 2)
    # a batch script's own shell has SLURM_* but no MASTER_PORT: it runs or launches itself
    assert distributed.detect({k: v for k, v in SLURM.items() if k != "MASTER_PORT"}) is None
    assert distributed.detect({**TORCHRUN, "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0",
                               "LOCAL_WORLD_SIZE": "1"}) is None  # one process is no group
    with pytest.raises(UsageError, match="outside a world"):
        distributed.detect({**TORCHRUN, "RANK": "2"})


@pytest.mark.parametrize("env", [TORCHRUN, SLURM], ids=["torchrun", "slurm"])
def test_a_launched_rank_plans_to_join_without_joining(env, clean_env):
    for key, value in env.items():
        clean_env.setenv(key, value)
    world = int(env.get("WORLD_SIZE") or env["SLURM_NTASKS"])
    plan = distributed.plan(tiny("trainer.devices=" + str(world)))
    source = "slurm" if "SLURM_PROCID" in env else "torchrun"
    assert (plan.mode, plan.world, plan.env.source) == ("join", world, source)
    assert not torch.distributed.is_initialized()
    with pytest.raises(UsageError, match=f"started {world} processes"):
        distributed.plan(tiny("trainer.devices=1"))


def test_devices_resolve_to_a_process_count(clean_env):
    assert distributed.plan(tiny()).mode == "single"
    cfg = tiny("trainer.devices=3", "trainer.device=cpu")
    assert distributed.plan(cfg) == distributed.Plan("launch", 3)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert distributed.resolve_devices("auto") == max(1, gpus)
    assert distributed.resolve_devices("2") == 2
    for bad in (0, "two", 1.5, True):
        with pytest.raises(UsageError, match="at least 1 or auto"):
            distributed.resolve_devices(bad)


def test_devices_auto_composes(clean_env):
    assert distributed.plan(tiny("trainer.devices=auto")).world >= 1
    for bad in ("foo", "0"):
        with pytest.raises(UsageError, match="at least 1 or auto"):
            tiny(f"trainer.devices={bad}")


def test_even_shards_give_every_rank_the_same_steps():
    images, labels = torch.zeros(103, 1, 2, 2, dtype=torch.uint8), torch.arange(103)
    shards = []
    for rank in range(2):
        loader = InMemoryLoader(images, labels, 8, mean=[0.0], std=[1.0], shuffle=True, seed=2,
                                rank=rank, world=2, even=True)
        loader.set_epoch(1)
        shards.append(torch.cat([y for _, y in loader]))
        assert loader.num_samples == 51 and len(loader) == 7
    ids = torch.cat(shards).tolist()
    assert len(set(ids)) == 102  # disjoint; one image of the epoch's order sits out
    assert distributed.rank_seed(0, 0) == 0 and distributed.rank_seed(0, 1) not in range(1000)
    assert distributed.rank_seed(0, 1) != distributed.rank_seed(1, 1)


@pytest.mark.slow
def test_one_process_never_starts_the_launcher():
    code = ("import sys, torch; from cnnlab.config import compose; from cnnlab.training.recipe import train; "
            f"train(compose({TINY + ['data=shapes', 'data.num_train=200', 'model=lenet5']!r})); "
            "print(sorted(m for m in sys.modules if m.startswith(('torch.distributed.launcher', "
            "'torch.distributed.elastic'))), torch.distributed.is_initialized())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[] False"
