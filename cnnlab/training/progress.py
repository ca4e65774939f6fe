"""Training progress: rich bars on a terminal, one plain line per epoch otherwise.

Elapsed time and the whole run's ETA come from cnnlab's own clock (RunClock): the mean time of
the epochs completed so far and, inside an epoch, the time per batch, so the estimate holds for
epochs of any length (rich's own speed estimate looks at a 30 s window only). Plain lines start
with a timestamp, for logs, CI and pipes.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Optional


def hms(seconds: Optional[float]) -> str:
    """1:02:03 (hours:minutes:seconds); `?` when not known."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def timestamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


class RunClock:
    """Elapsed time since the first epoch started, and the time left for the whole run.

    Epochs completed in this sitting give the mean epoch time; the epoch in progress adds its
    remaining batches at its own time per batch (or, before its first progress report, at the mean
    epoch's). Before any epoch completes, the epoch in progress is the estimate of every epoch."""

    def __init__(self, epochs: int, now: Callable[[], float] = time.monotonic):
        self.epochs, self.now = epochs, now
        self.started: Optional[float] = None
        self.epoch, self.batches = 0, 0
        self.epoch_started = 0.0
        self.first_done, self.done = 0, 0  # batches done when this sitting reached the epoch; now
        self.epoch_seconds: list[float] = []

    def start_epoch(self, epoch: int, batches: int, done: int = 0) -> None:
        t = self.now()
        if self.started is None:
            self.started = t
        self.epoch, self.batches, self.epoch_started = epoch, batches, t
        self.first_done = self.done = done

    def batch(self, done: int) -> None:
        self.done = done

    def end_epoch(self) -> None:
        if self.first_done == 0:  # an epoch resumed mid-way is not a whole epoch's time
            self.epoch_seconds.append(self.now() - self.epoch_started)
        self.done = self.batches

    def elapsed(self) -> float:
        return 0.0 if self.started is None else self.now() - self.started

    def eta(self) -> Optional[float]:
        """Seconds left for the whole run (None until something has been timed)."""
        if self.started is None:
            return None
        in_epoch = self.now() - self.epoch_started
        trained = self.done - self.first_done
        mean_epoch = sum(self.epoch_seconds) / len(self.epoch_seconds) if self.epoch_seconds else None
        if self.done >= self.batches:  # between epochs (validation, checkpoints)
            left_here = 0.0
        elif trained > 0:
            left_here = (self.batches - self.done) * in_epoch / trained
        elif mean_epoch is not None:
            left_here = max(mean_epoch - in_epoch, 0.0)
        else:
            return None
        if mean_epoch is None and trained > 0:
            # no whole epoch yet: this one's pace (its batches so far) stands for every epoch
            mean_epoch = self.batches * in_epoch / trained
        later = self.epochs - self.epoch
        if later > 0 and mean_epoch is None:
            return None
        return left_here + later * (mean_epoch or 0.0)

    def text(self) -> str:
        return f"elapsed {hms(self.elapsed())} eta {hms(self.eta())}"


class PlainProgress:
    """One timestamped line per epoch (and one every `every` seconds inside an epoch), each with
    the elapsed time and the whole run's ETA."""

    every = 30.0  # seconds between in-epoch lines, so long epochs still show life

    def __init__(self, epochs: int, stream=None, now: Callable[[], float] = time.monotonic,
                 stamp: Callable[[], str] = timestamp):
        self.epochs = epochs
        self.stream = stream or sys.stdout
        self.clock = RunClock(epochs, now)
        self.now, self.stamp = now, stamp
        self.epoch, self.batches, self.last = 0, 0, 0.0

    def _print(self, text: str) -> None:
        print(f"{self.stamp()} {text}", file=self.stream, flush=True)

    def begin(self, line: str) -> None:
        """The line a run starts with (its folder, model, device, data)."""
        self._print(line)

    def start_epoch(self, epoch: int, batches: int, done: int = 0) -> None:
        self.clock.start_epoch(epoch, batches, done)
        self.epoch, self.batches, self.last = epoch, batches, self.now()

    def batch(self, done: int, loss: float, acc: float, ips: float) -> None:
        self.clock.batch(done)
        if self.now() - self.last >= self.every:
            self.last = self.now()
            self._print(f"epoch {self.epoch:>3}/{self.epochs}  batch {done}/{self.batches}  "
                        f"loss {loss:.4f} acc {acc:.4f}  {ips:.0f} img/s  {self.clock.text()}")

    def end_epoch(self, row: dict) -> None:
        self.clock.end_epoch()
        self._print(f"epoch {row['epoch']:>3}/{self.epochs}  lr {row['lr']:.4g}  "
                    f"train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}  "
                    f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f}  "
                    f"{row['images_per_sec']:.0f} img/s  {row['epoch_seconds']:.1f}s  "
                    f"{self.clock.text()}")

    def close(self) -> None:
        pass


class RichProgress:
    """An epoch bar and a batch bar with live loss, accuracy and images/s; the epoch bar carries
    the elapsed time and the whole run's ETA from RunClock."""

    def __init__(self, epochs: int, console=None, now: Callable[[], float] = time.monotonic):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TextColumn("{task.fields[clock]}"),
            console=console, transient=False)
        self.progress.start()
        self.epochs = epochs
        self.clock = RunClock(epochs, now)
        self.epoch_task = self.progress.add_task("epochs ", total=epochs, info="", clock="")
        self.batch_task: Optional[int] = None

    def begin(self, line: str) -> None:
        self.progress.console.print(line, soft_wrap=True, markup=False, highlight=False)

    def start_epoch(self, epoch: int, batches: int, done: int = 0) -> None:
        self.clock.start_epoch(epoch, batches, done)
        if self.batch_task is None:
            self.batch_task = self.progress.add_task("batches", total=batches, info="", clock="")
        self.progress.reset(self.batch_task, total=batches, completed=done, info="", clock="")

    def batch(self, done: int, loss: float, acc: float, ips: float) -> None:
        self.clock.batch(done)
        self.progress.update(self.batch_task, completed=done,
                             info=f"loss {loss:.4f} acc {acc:.3f} {ips:.0f} img/s")
        self.progress.update(self.epoch_task, clock=self.clock.text())

    def end_epoch(self, row: dict) -> None:
        self.clock.end_epoch()
        self.progress.update(self.epoch_task, completed=row["epoch"], clock=self.clock.text(),
                             info=f"val acc {row['val_acc']:.4f} loss {row['val_loss']:.4f}")

    def close(self) -> None:
        self.progress.stop()


class NullProgress(PlainProgress):
    def begin(self, line: str) -> None:
        pass

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
