"""The run folder's metrics.csv keeps every value under its own column."""

from __future__ import annotations

import csv

from cnnlab.run import Run


def _read(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_a_row_with_new_columns_rewrites_the_file_under_the_union_header(tmp_path):
    """A run written by an older cnnlab and resumed by a newer one that records more columns."""
    run = Run.create_at(tmp_path / "run")
    run.log_metrics({"epoch": 1, "train_acc": 0.5, "val_acc": 0.4})
    run.log_metrics({"epoch": 2, "train_acc": 0.7, "running_acc": 0.6, "val_acc": 0.5})
    run.log_metrics({"epoch": 3, "val_acc": 0.55, "train_acc": 0.8, "running_acc": 0.65})  # other order
    rows = _read(run.root / "metrics.csv")
    assert list(rows[0]) == ["epoch", "train_acc", "val_acc", "running_acc"]
    assert rows[0] == {"epoch": "1", "train_acc": "0.5", "val_acc": "0.4", "running_acc": ""}
    assert rows[1]["running_acc"] == "0.6" and rows[1]["val_acc"] == "0.5"
    assert rows[2] == {"epoch": "3", "train_acc": "0.8", "val_acc": "0.55", "running_acc": "0.65"}


def test_rewrite_keeps_every_column_of_every_row(tmp_path):
    run = Run.create_at(tmp_path / "run")
    run.rewrite_metrics([{"epoch": 1, "a": 1}, {"epoch": 2, "a": 2, "b": 3}])
    assert _read(run.root / "metrics.csv")[1] == {"epoch": "2", "a": "2", "b": "3"}
