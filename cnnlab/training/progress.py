"""Training progress: rich bars on a terminal, one plain line per epoch otherwise."""

from __future__ import annotations

import sys
import time
from typing import Optional


class PlainProgress:
    """One line per epoch (and nothing per batch), for logs, CI and pipes."""

    every = 30.0  # seconds between in-epoch lines, so long epochs still show life

    def __init__(self, epochs: int, stream=None):
        self.epochs = epochs
        self.stream = stream or sys.stdout
        self.epoch, self.batches, self.last = 0, 0, 0.0

    def start_epoch(self, epoch: int, batches: int) -> None:
        self.epoch, self.batches, self.last = epoch, batches, time.monotonic()

    def batch(self, done: int, loss: float, acc: float, ips: float) -> None:
        if time.monotonic() - self.last >= self.every:
            self.last = time.monotonic()
            print(f"epoch {self.epoch:>3}/{self.epochs}  batch {done}/{self.batches}  "
                  f"loss {loss:.4f} acc {acc:.4f}  {ips:.0f} img/s", file=self.stream, flush=True)

    def end_epoch(self, row: dict) -> None:
        print(f"epoch {row['epoch']:>3}/{self.epochs}  lr {row['lr']:.4g}  "
              f"train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}  "
              f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f}  "
              f"{row['images_per_sec']:.0f} img/s  {row['epoch_seconds']:.1f}s",
              file=self.stream, flush=True)

    def close(self) -> None:
        pass


class RichProgress:
    """An epoch bar and a batch bar with live loss, accuracy and images/s."""

    def __init__(self, epochs: int, console=None):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=console, transient=False)
        self.progress.start()
        self.epochs = epochs
        self.epoch_task = self.progress.add_task("epochs ", total=epochs, info="")
        self.batch_task: Optional[int] = None

    def start_epoch(self, epoch: int, batches: int) -> None:
        if self.batch_task is None:
            self.batch_task = self.progress.add_task("batches", total=batches, info="")
        self.progress.reset(self.batch_task, total=batches, info="")

    def batch(self, done: int, loss: float, acc: float, ips: float) -> None:
        self.progress.update(self.batch_task, completed=done,
                             info=f"loss {loss:.4f} acc {acc:.3f} {ips:.0f} img/s")

    def end_epoch(self, row: dict) -> None:
        self.progress.update(self.epoch_task, completed=row["epoch"],
                             info=f"val acc {row['val_acc']:.4f} loss {row['val_loss']:.4f}")

    def close(self) -> None:
        self.progress.stop()


class NullProgress(PlainProgress):
    def batch(self, done: int, loss: float, acc: float, ips: float) -> None:
        pass

    def end_epoch(self, row: dict) -> None:
        pass


def make_progress(mode: str, epochs: int, console=None):
    if mode == "none":
        return NullProgress(epochs)
    if mode == "rich" or (mode == "auto" and sys.stdout.isatty()):
        return RichProgress(epochs, console)
    return PlainProgress(epochs)
