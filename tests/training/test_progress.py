"""Progress that tells the time: cnnlab's own elapsed time and whole-run ETA (long epochs
included), timestamped plain lines, and the start line naming the run folder. A fake clock
stands in for time: no test here waits."""

from __future__ import annotations

import io
import re

from cnnlab.training.progress import PlainProgress, RichProgress, RunClock, hms, make_progress
from cnnlab.training.recipe import train
from conftest import tiny

STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ")


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


ROW = {"epoch": 1, "lr": 0.1, "train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.1, "val_acc": 0.4,
       "images_per_sec": 100.0, "epoch_seconds": 120.0}


def test_eta_after_long_epochs_is_the_mean_epoch_times_the_epochs_left():
    now = FakeClock()
    clock = RunClock(5, now)
    clock.start_epoch(1, 100)
    now.t += 120  # an epoch of two minutes, far past rich's 30 s speed window
    clock.end_epoch()
    assert clock.eta() == 4 * 120 and clock.elapsed() == 120
    clock.start_epoch(2, 100)
    now.t += 30
    clock.batch(50)  # half way at twice the pace: 30 s left here, then 3 mean epochs
    assert clock.eta() == 30 + 3 * 120


def test_eta_before_the_first_epoch_ends_comes_from_its_batches():
    now = FakeClock()
    clock = RunClock(5, now)
    clock.start_epoch(1, 100)
    assert clock.eta() is None and hms(clock.eta()) == "?"
    now.t += 60
    clock.batch(10)  # 6 s a batch: 90 batches left here, 4 epochs of 600 s after
    assert clock.eta() == 90 * 6 + 4 * 600


def test_eta_of_a_run_resumed_mid_epoch_uses_the_batches_it_trained():
    now = FakeClock()
    clock = RunClock(3, now)
    clock.start_epoch(2, 100, done=40)  # resumed at batch 40 of epoch 2
    now.t += 20
    clock.batch(50)  # 2 s a batch
    assert clock.eta() == 50 * 2 + 1 * 200
    now.t += 100
    clock.end_epoch()  # not a whole epoch's time: epoch 3 is estimated from the batch pace
    assert clock.epoch_seconds == []


def test_plain_lines_are_timestamped_and_carry_elapsed_and_eta():
    now, out = FakeClock(), io.StringIO()
    p = PlainProgress(5, stream=out, now=now)
    p.begin("run outputs/runs/x: lenet5")
    p.start_epoch(1, 100)
    now.t += 45
    p.batch(30, 1.0, 0.5, 100.0)  # past `every` (30 s): an in-epoch line
    now.t += 75
    p.end_epoch(ROW)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and all(STAMP.match(line) for line in lines)
    assert lines[0].endswith("run outputs/runs/x: lenet5")
    # 1.5 s a batch: 70 batches left here, then 4 epochs of 150 s
    assert "batch 30/100" in lines[1] and "elapsed 0:00:45 eta 0:11:45" in lines[1]
    assert "epoch   1/5" in lines[2] and "elapsed 0:02:00 eta 0:08:00" in lines[2]


def test_rich_progress_shows_the_whole_run_eta_for_long_epochs():
    from rich.console import Console

    now = FakeClock()
    p = RichProgress(5, console=Console(file=io.StringIO(), force_terminal=False), now=now)
    try:
        p.start_epoch(1, 100)
        now.t += 120
        p.batch(100, 1.0, 0.5, 10.0)
        p.end_epoch(ROW)
        task = p.progress.tasks[p.epoch_task]
        assert task.fields["clock"] == "elapsed 0:02:00 eta 0:08:00"
    finally:
        p.close()


def test_none_prints_nothing(capsys):
    p = make_progress("none", 2)
    p.begin("run x")
    p.start_epoch(1, 10)
    p.end_epoch(ROW)
    assert capsys.readouterr().out == ""


def test_a_plain_run_starts_with_its_folder_model_device_threads_and_data(capsys):
    s = train(tiny("data=digits", "model=lenet5", "trainer.progress=plain", "trainer.epochs=1"))
    lines = capsys.readouterr().out.splitlines()
    first = lines[0]
    assert STAMP.match(first) and f"run {s['path']}: lenet5 ({s['params']:,} parameters)" in first
    assert "on cpu, 1 thread(s); data digits: train " in first and " val " in first and " test " in first
    assert "eta 0:00:00" in lines[1]  # the last epoch: nothing left
