"""Experiment trackers a run writes to beside metrics.csv (which every run writes, whatever the
logger): trainer.logger = auto | tensorboard | csv | none.

tensorboard writes TensorBoard event files into <run>/tb/: each epoch's scalars (train/val loss
and accuracy, lr, images/s), the config as text, the augmentation preview of a new run (the first
training images beside draws of the preset, as `cnnlab aug preview` draws them), and at the run's end the test scores and a
confusion matrix of the test split; `tensorboard --logdir outputs/runs` shows every run, and
`--logdir outputs/sweeps/<sweep>` a sweep's jobs. csv and none write nothing more (csv names the
fallback: metrics.csv alone); auto is tensorboard when its package is importable, csv otherwise.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any, Optional

KINDS = ("auto", "tensorboard", "csv", "none")

# metrics.csv column -> TensorBoard tag
EPOCH_SCALARS = {"train_loss": "train/loss", "train_acc": "train/acc", "val_loss": "val/loss",
                 "val_acc": "val/acc", "val_top5": "val/top5", "running_loss": "train/running_loss",
                 "running_acc": "train/running_acc", "lr": "lr", "images_per_sec": "images_per_sec",
                 "epoch_seconds": "epoch_seconds"}
TEST_SCALARS = {"test_acc": "test/acc", "test_top5": "test/top5", "test_loss": "test/loss"}
CONFUSION_MAX_IMAGES = 50_000  # a confusion matrix costs one more pass over the test split
CONFUSION_MAX_CLASSES = 100  # beyond this a matrix image says little
PREVIEW_IMAGES, PREVIEW_COPIES = 6, 5  # the augmentation preview: rows, draws beside each


def tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def resolve_kind(kind: str) -> str:
    """auto -> tensorboard if its package is importable, else csv."""
    if kind == "auto":
        return "tensorboard" if tensorboard_available() else "csv"
    return kind


class RunLogger:
    """The logger that writes nothing beyond metrics.csv (csv, none, and ranks other than 0)."""

    folder: Optional[Path] = None

    def epoch(self, row: dict) -> None:
        pass

    def preview(self, figure) -> None:
        pass

    def finish(self, metrics: dict, step: int, confusion=None, classes=None) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardLogger(RunLogger):
    """Event files in `folder`; `purge_step` (a resumed run: the first epoch it trains again)
    hides the events an interrupted sitting wrote for that epoch and later."""

    def __init__(self, folder: Path, config_yaml: str = "", purge_step: Optional[int] = None):
        from torch.utils.tensorboard import SummaryWriter

        self.folder = Path(folder)
        self.writer = SummaryWriter(log_dir=str(self.folder), purge_step=purge_step)
        if config_yaml:
            # indented four spaces: TensorBoard's text plugin renders markdown, this as code
            self.writer.add_text("config", "\n".join("    " + ln for ln in config_yaml.splitlines()))

    def preview(self, figure) -> None:
        """The figure as `cnnlab aug preview` saves it: cut to what it draws, its row and column
        labels and title included (they lie outside the image axes, where a plain canvas ends)."""
        import io

        import numpy as np
        from PIL import Image

        buf = io.BytesIO()
        figure.savefig(buf, format="png", bbox_inches="tight", pad_inches=0.05)
        image = np.asarray(Image.open(buf).convert("RGB"))
        self.writer.add_image("train/augmentation", image, 0, dataformats="HWC")
        self.writer.flush()

    def epoch(self, row: dict) -> None:
        step = int(row["epoch"])
        for key, tag in EPOCH_SCALARS.items():
            value = row.get(key)
            if _number(value):
                self.writer.add_scalar(tag, float(value), step)
        self.writer.flush()

    def finish(self, metrics: dict, step: int, confusion=None, classes=None) -> None:
        for key, tag in TEST_SCALARS.items():
            if _number(metrics.get(key)):
                self.writer.add_scalar(tag, float(metrics[key]), step)
        if confusion is not None:
            self.writer.add_figure("test/confusion_matrix", confusion_figure(confusion, classes), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def open_logger(kind: str, run_root: Optional[Path], config_yaml: str = "",
                purge_step: Optional[int] = None) -> RunLogger:
    """The run's logger (RunLogger: nothing beyond metrics.csv for csv, none, or no run folder)."""
    if run_root is None or resolve_kind(kind) != "tensorboard":
        return RunLogger()
    return TensorBoardLogger(Path(run_root) / "tb", config_yaml, purge_step)


def confusion_matrix(model, loader, num_classes: int, crop=None, autocast=None):
    """Counts (true class, predicted class) over the loader, centre view; a numpy int array."""
    import contextlib

    import numpy as np
    import torch

    from cnnlab.evaluation.evaluate import center_batches

    counts = torch.zeros(num_classes * num_classes, dtype=torch.long)
    was_training = model.training
    model.eval()
    autocast = autocast or contextlib.nullcontext
    with torch.no_grad():
        for x, y in center_batches(loader, crop):
            with autocast():
                pred = model(x).argmax(1)
            counts += torch.bincount((y * num_classes + pred).cpu(), minlength=num_classes ** 2)
    model.train(was_training)
    return np.asarray(counts.view(num_classes, num_classes))


def confusion_figure(matrix, classes=None):
    """A matplotlib figure of the matrix: rows the true class, columns the prediction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = matrix.shape[0]
    size = min(2 + 0.45 * n, 14)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    names = [str(c) for c in (classes or range(n))]
    ax.set_xticks(range(n), names, rotation=90, fontsize=7)
    ax.set_yticks(range(n), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if matrix[i, j] > matrix.max() / 2 else "black")
    fig.tight_layout()
    return fig
