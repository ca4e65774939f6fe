"""trainer.logger: TensorBoard event files beside metrics.csv, read back with TensorBoard's own
EventAccumulator; csv and none write metrics.csv alone; every writer is closed."""

from __future__ import annotations

import pandas as pd
import pytest

from cnnlab.errors import UsageError
from cnnlab.training import loggers
from cnnlab.training.recipe import train
from conftest import tiny

pytest.importorskip("tensorboard")


def _events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_tensorboard_scalars_equal_metrics_csv_and_the_config_and_matrix_are_there(outputs):
    s = train(tiny("data=digits", "model=lenet5", "trainer.epochs=2", "trainer.logger=tensorboard"))
    from pathlib import Path

    run = Path(s["path"])
    assert run.parent == outputs / "runs"  # `tensorboard --logdir outputs/runs` finds it
    acc = _events(run / "tb")
    metrics = pd.read_csv(run / "metrics.csv")
    tags = acc.Tags()
    for tag in ("train/loss", "train/acc", "val/loss", "val/acc", "lr", "images_per_sec", "test/acc"):
        assert tag in tags["scalars"], tag
    for column, tag in (("val_acc", "val/acc"), ("train_loss", "train/loss"), ("lr", "lr")):
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [1, 2]
        for e, value in zip(events, metrics[column]):
            assert e.value == pytest.approx(value, rel=1e-6, abs=1e-7)  # float32 in the event file
    assert acc.Scalars("test/acc")[-1].value == pytest.approx(s["test_acc"], rel=1e-6)
    assert "test/confusion_matrix" in tags["images"]
    assert any("config" in t for t in tags["tensors"])


def test_a_new_run_shows_its_augmentation_preview_and_trains_as_without_it(outputs):
    """The preview draws from its own generator: the run with it trains exactly as the run
    without a tracker (same losses, same test score)."""
    import io
    from pathlib import Path

    from PIL import Image

    with_tb = train(tiny("data=digits", "model=lenet5", "aug=crop", "trainer.epochs=1",
                         "trainer.logger=tensorboard"))
    acc = _events(Path(with_tb["path"]) / "tb")
    assert "train/augmentation" in acc.Tags()["images"]
    (event,) = acc.Images("train/augmentation")
    image = Image.open(io.BytesIO(event.encoded_image_string))
    # 6 rows and 1 + 5 columns of 96-pixel tiles (digits' 8 pixels enlarged 12x), plus the row
    # labels on the left ("3 (train #0)") and the column labels and title above
    cols, rows = 1 + loggers.PREVIEW_COPIES, loggers.PREVIEW_IMAGES
    assert image.width > cols * 98 + 40 and image.height > rows * 98 + 20
    without = train(tiny("data=digits", "model=lenet5", "aug=crop", "trainer.epochs=1",
                         "trainer.logger=none"))
    a = pd.read_csv(Path(with_tb["path"]) / "metrics.csv")
    b = pd.read_csv(Path(without["path"]) / "metrics.csv")
    assert a["train_loss"].tolist() == b["train_loss"].tolist()
    assert with_tb["test_acc"] == without["test_acc"]


def test_auto_is_tensorboard_when_installed(outputs):
    from pathlib import Path

    s = train(tiny("data=digits", "model=lenet5", "trainer.epochs=1"))
    assert list((Path(s["path"]) / "tb").glob("events.out.tfevents.*"))


@pytest.mark.parametrize("kind", ["csv", "none"])
def test_csv_and_none_write_metrics_csv_and_no_events(kind):
    from pathlib import Path

    s = train(tiny("data=digits", "model=lenet5", "trainer.epochs=1", f"trainer.logger={kind}"))
    run = Path(s["path"])
    assert (run / "metrics.csv").is_file() and not (run / "tb").exists()


def test_auto_without_the_package_falls_back_to_csv_and_tensorboard_asked_for_is_refused(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else real(name, *a))
    assert loggers.resolve_kind("auto") == "csv"
    assert loggers.open_logger("auto", "/nonexistent").folder is None
    with pytest.raises(UsageError, match="trainer.logger=tensorboard needs the tensorboard package"):
        tiny("trainer.logger=tensorboard")


def test_a_bad_logger_is_one_line():
    with pytest.raises(UsageError, match="trainer.logger=wandb is not allowed"):
        tiny("trainer.logger=wandb")


def test_the_writer_is_closed_when_training_fails(monkeypatch):
    from cnnlab.training import engine

    opened = []
    real = loggers.TensorBoardLogger

    class Recording(real):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.closed = False
            opened.append(self)

        def close(self):
            self.closed = True
            super().close()

    monkeypatch.setattr(loggers, "TensorBoardLogger", Recording)

    def boom(*a, **k):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(engine, "_epochs", boom)
    with pytest.raises(RuntimeError):
        train(tiny("data=digits", "model=lenet5", "trainer.logger=tensorboard"))
    assert len(opened) == 1 and opened[0].closed
