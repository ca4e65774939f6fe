"""The run folder: outputs/runs/<YYYYmmdd-HHMMSS>-<id>/ with config.yaml, metrics.csv,
summary.json, train.log and checkpoints/.

The id is random, and the folder is created with exist_ok=False, so two runs started in the same
second never share a folder. Every file is written so that a crash leaves the previous version.

A Run holds the folder's lock (cnnlab.locks) from the moment it is made (a new run or a resumed
one) until its final summary (done, diverged, failed, interrupted; a finished one once its
results row is recorded) is written, or `close()`: a second writer, such as a second `cnnlab
resume` of the same run, fails with one line naming the holder instead of overwriting its
checkpoints and metrics.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from cnnlab.errors import CnnlabError, os_reason
from cnnlab.locks import FolderLock


OUTPUTS_ENV = "CNNLAB_OUTPUTS"  # conf/config.yaml reads the same variable: ${oc.env:CNNLAB_OUTPUTS,outputs}


def outputs_dir(given: str | os.PathLike | None = None) -> Path:
    """The outputs folder: `given` (an --outputs option or a config's `outputs`), else
    $CNNLAB_OUTPUTS, else ./outputs. The one place that decides it."""
    if given:
        return Path(given)
    return Path(os.environ.get(OUTPUTS_ENV) or "outputs")


def write_text_atomic(path: Path, text: str) -> None:
    """Replace a text file whole (checkpoint.write_atomic: no torn file, no .tmp left on a full
    disk, the user's umask); a failure is one line naming the file."""
    from cnnlab.checkpoint import write_atomic

    with _naming(path):
        write_atomic(path, lambda f: f.write(text.encode("utf-8")))


@contextlib.contextmanager
def _naming(path: Path):
    """An OSError while writing `path` as one line that names it (a failed write() has no
    filename of its own for the error guard to show)."""
    try:
        yield
    except OSError as exc:
        raise CnnlabError(f"cannot write {path}: {os_reason(exc)}") from exc


def ensure_writable(folder: Path) -> Path:
    """Create `folder` if needed; fail with one line if it cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{secrets.token_hex(4)}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise CnnlabError(f"outputs folder '{folder}' is not writable: {exc.strerror or exc}") from exc
    return folder


def _csv_header(path: Path) -> list | None:
    """A CSV file's column names, or None when there is no file (or it is empty)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return next(csv.reader(f), None)
    except FileNotFoundError:
        return None


# summary.json statuses after which the run writes nothing more that another writer could clash with
FINAL = ("done", "diverged", "failed", "interrupted")


class Run:
    def __init__(self, root: Path):
        """The run folder `root`, locked for this writer (cnnlab.locks.FolderInUse if another
        holds it)."""
        self.root = Path(root)
        self.id = self.root.name
        self.started = time.time()
        self._lock = FolderLock(self.root, "run folder").acquire()

    def close(self) -> None:
        """Let another writer have the folder (also done by a final summary)."""
        self._lock.release()

    @classmethod
    def create(cls, outputs: str | os.PathLike) -> "Run":
        runs = ensure_writable(Path(outputs) / "runs")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for _ in range(100):
            root = runs / f"{stamp}-{secrets.token_hex(3)}"
            try:
                root.mkdir()
            except FileExistsError:
                continue
            (root / "checkpoints").mkdir()
            return cls(root)
        raise CnnlabError(f"cannot create a unique run folder under {runs}")

    @classmethod
    def create_at(cls, root: str | os.PathLike) -> "Run":
        """A run folder at a given path (a sweep job's run/); it must not exist yet."""
        root = Path(root)
        ensure_writable(root.parent)
        try:
            root.mkdir()
        except FileExistsError:
            raise CnnlabError(f"run folder {root} exists already") from None
        (root / "checkpoints").mkdir()
        return cls(root)

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def write_config(self, cfg: Any) -> None:
        from omegaconf import OmegaConf

        write_text_atomic(self.root / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))

    def log_metrics(self, row: dict) -> None:
        """Append one epoch's row. A row whose columns differ from the file's header (a run
        resumed by a newer cnnlab that records more columns) rewrites the file under the union
        of both headers, atomically, so no value lands under another column's name."""
        path = self.root / "metrics.csv"
        header = _csv_header(path)
        if header is not None and not set(row) <= set(header):
            with open(path, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
            fields = header + [k for k in row if k not in header]
            self._write_metrics(rows + [row], fields)
            return
        with _naming(path), open(path, "a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=header or list(row), restval="")
            if header is None:
                writer.writeheader()
            writer.writerow(row)

    def _write_metrics(self, rows: list, fields: list) -> None:
        import io

        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(self.root / "metrics.csv", buf.getvalue())

    def write_summary(self, summary: dict) -> None:
        write_text_atomic(self.root / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
        if summary.get("status") in FINAL and summary.get("recorded") is not False:
            self.close()  # (a finished run whose results row is still to come keeps it)

    def log(self, message: str) -> None:
        with _naming(self.root / "train.log"), open(self.root / "train.log", "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")

    def rewrite_metrics(self, rows: list) -> None:
        """metrics.csv as exactly `rows` (a resumed run drops rows written after its checkpoint)."""
        if not rows:  # log_metrics writes the header with the first row
            (self.root / "metrics.csv").unlink(missing_ok=True)
            return
        fields = list(rows[0])
        fields += [k for r in rows for k in r if k not in fields]
        self._write_metrics(rows, fields)
