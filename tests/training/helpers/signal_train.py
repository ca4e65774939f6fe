"""Run `cnnlab train OVERRIDES` and send this process a real signal at a chosen point.

    python signal_train.py SIGNAL WHEN OVERRIDES...

WHEN is `E:B` (after batch B of epoch E, at a progress update: B a multiple of 5) or `E:end`
(at the end of epoch E, an epoch boundary). The signal goes through cnnlab's own handler, as
Slurm's SIGTERM would; the exit code is the CLI's.
"""

import os
import signal
import sys

import cnnlab.training.progress as progress_module
from cnnlab.cli.main import main

sig, when, overrides = getattr(signal, sys.argv[1]), sys.argv[2], sys.argv[3:]
epoch_at, batch_at = when.split(":")
real_make = progress_module.make_progress


class Trigger:
    def __init__(self, inner):
        self.inner, self.epoch = inner, 0

    def begin(self, line):
        self.inner.begin(line)

    def start_epoch(self, epoch, batches, done=0):
        self.epoch = epoch
        self.inner.start_epoch(epoch, batches, done)

    def batch(self, done, *args):
        if batch_at != "end" and self.epoch == int(epoch_at) and done == int(batch_at):
            os.kill(os.getpid(), sig)
        self.inner.batch(done, *args)

    def end_epoch(self, row):
        self.inner.end_epoch(row)
        if batch_at == "end" and row["epoch"] == int(epoch_at):
            os.kill(os.getpid(), sig)

    def close(self):
        self.inner.close()


progress_module.make_progress = lambda *a, **k: Trigger(real_make(*a, **k))
sys.argv = ["cnnlab", "train", *overrides]
main()
