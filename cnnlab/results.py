"""The results table outputs/results.csv: one row per finished run, and queries over it.

Rows come from different configs, so their columns differ. An append takes a cross-process file
lock. A row with the table's columns is appended in place, in one write that is undone
(truncated away) if it fails part-way; a row that brings new columns rewrites the whole table
under the union of columns (`checkpoint.write_atomic`: a temporary file, then a rename). So a
failed append (a full disk) leaves the table byte for byte as it was, and the error names it.
A partial last row that a writer killed mid-write left behind is moved, with a warning, to
results.csv.partial by the next append, before it writes.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import stat
import sys
from pathlib import Path
from typing import Any, Iterable

from cnnlab import checkpoint
from cnnlab.errors import CnnlabError, UsageError, os_reason

# Short names for the config axes people filter and pivot on; the full dotted keys follow.
AXES = {
    "model": "model.name", "data": "data.name", "aug": "aug.name", "optim": "optim.name",
    "sched": "sched.name", "precision": "precision.name", "transfer": "transfer.name",
    "eval": "eval.name", "devices": "trainer.devices", "lr": "optim.lr",
    "batch_size": "trainer.batch_size", "epochs": "trainer.epochs", "seed": "seed",
    "train_per_class": "data.train_per_class", "train_fraction": "data.train_fraction",
}


def table_path(outputs: str | os.PathLike) -> Path:
    return Path(outputs) / "results.csv"


def flatten(cfg: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif isinstance(value, (list, tuple)):
            out[name] = ",".join(str(v) for v in value)
        else:
            out[name] = value
    return out


def make_row(cfg_dict: dict, head: dict, metrics: dict) -> dict[str, Any]:
    """head (run id, time, status) + short axes + metrics + every flattened config key."""
    flat = flatten(cfg_dict)
    row = dict(head)
    row.update({short: flat.get(full) for short, full in AXES.items()})
    row.update(metrics)
    row.update({k: v for k, v in flat.items() if k not in row})
    return row


def append_row(outputs: str | os.PathLike, row: dict[str, Any], timeout: float = 60) -> Path:
    """Append one row to outputs/results.csv; a failure is a CnnlabError naming the table, and
    leaves it as it was."""
    path = table_path(outputs)
    with _table_lock(path, timeout):
        _append_locked(path, row)
    return path


def check_writable(outputs: str | os.PathLike, timeout: float = 60) -> Path:
    """Fail now, as append_row would later, when a row could not be appended to the table (its
    folder or the table is not writable, the lock cannot be taken); writes no row. For commands
    that would otherwise do all their work first."""
    path = table_path(outputs)
    with _table_lock(path, timeout):
        if _check_regular(path):
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
    return path


def _check_regular(path: Path) -> bool:
    """Whether the table exists; one that is a device or a pipe (a link to /dev/full) is an
    error, checked before opening it: it would never read to its end, or block the open."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(mode):
        raise CnnlabError(f"{path} is not a regular file; move it away to start a new table")
    return True


@contextlib.contextmanager
def _table_lock(path: Path, timeout: float):
    """The table's cross-process lock; an OSError inside (or in taking it) becomes one line."""
    from filelock import FileLock, Timeout

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock", timeout=timeout):
            yield
    except Timeout:
        raise CnnlabError(f"cannot append to {path}: {path}.lock is held by another process "
                          f"(waited {timeout:g} s)") from None
    except OSError as exc:
        raise CnnlabError(f"cannot append to {path}: {os_reason(exc)}") from exc


def _append_locked(path: Path, row: dict[str, Any]) -> None:
    _check_regular(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        data = _read_all(fd)
        header, end = _scan(path, data)
        if end < len(data):
            _set_aside(path, data[end:])
            os.ftruncate(fd, end)
            data = data[:end]
        if header and set(row) <= set(header):
            _write_at_end(fd, end, _csv_text(header, [row], header=False).encode(*CODEC))
            return
    finally:
        os.close(fd)
    rows = _rows(path, data, header) if header else []
    columns = header + [k for k in row if k not in header]
    payload = _csv_text(columns, rows + [row]).encode(*CODEC)
    checkpoint.write_atomic(path, lambda f: f.write(payload))


# bytes that are not UTF-8 (a hand edit) pass through a rewrite unchanged
CODEC = ("utf-8", "surrogateescape")


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _scan(path: Path, data: bytes) -> tuple[list[str], int]:
    """(the header, the length of the table up to the end of its last complete row). A row is
    complete when its line end was read; one that only the end of the file ended (no line end,
    or inside a quoted value) is what an interrupted write leaves."""
    consumed, at_eof = 0, False

    def lines():
        nonlocal consumed, at_eof
        for line in io.BytesIO(data):  # split at b"\n" only, so a final "\r" stays partial
            consumed += len(line)
            yield line.decode(*CODEC)
        at_eof = True

    header: list[str] = []
    end = 0
    try:
        for record in csv.reader(lines()):
            if at_eof or data[consumed - 1:consumed] != b"\n":
                break
            if not header and record:
                header = record
            end = consumed
    except csv.Error as exc:
        raise CnnlabError(f"{path}: cannot read it as CSV ({exc}); repair the table (or move it "
                          f"away) to append") from None
    return header, end


def _rows(path: Path, data: bytes, header: list[str]) -> list[dict[str, str]]:
    """The table's rows (blank lines skipped) as dicts over its header."""
    records = (r for r in csv.reader(io.StringIO(data.decode(*CODEC), newline="")) if r)
    next(records)  # the header
    rows = []
    for number, record in enumerate(records, 1):
        if len(record) > len(header):
            raise CnnlabError(f"{path}: row {number} has more values than the header has "
                              f"columns; repair the table (or move it away) to append")
        rows.append(dict(zip(header, record)))
    return rows


def _set_aside(path: Path, tail: bytes) -> None:
    """Move a partial last row out of the table, into <table>.partial, and say so."""
    aside = path.with_name(path.name + ".partial")
    with open(aside, "ab") as f:
        f.write(tail + b"\n")
        f.flush()
        os.fsync(f.fileno())
    print(f"warning: {path} ended in a partial row ({len(tail)} bytes, left by an interrupted "
          f"write); moved it to {aside}", file=sys.stderr)


def _write_at_end(fd: int, end: int, payload: bytes) -> None:
    """payload written at `end`, fsynced; if any part of that fails, the file is cut back to
    `end` so that no partial row stays behind."""
    try:
        os.lseek(fd, end, os.SEEK_SET)
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        with contextlib.suppress(OSError):  # truncating frees space; should it fail, the next append repairs
            os.ftruncate(fd, end)
            os.fsync(fd)
        raise


def _csv_text(columns: list[str], rows: list[dict], header: bool = True) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def read_table(outputs: str | os.PathLike):
    """The table as a DataFrame (empty when there is none). A partial last row (an interrupted
    write's, which the next append sets aside) is left out with a warning; a table pandas cannot
    read is one line naming it."""
    import pandas as pd

    path = table_path(outputs)
    try:
        if not _check_regular(path):
            return pd.DataFrame()
        data = path.read_bytes()
    except FileNotFoundError:
        return pd.DataFrame()
    except OSError as exc:
        raise CnnlabError(f"cannot read {path}: {os_reason(exc)}") from exc
    _, end = _scan(path, data)
    if end < len(data):
        print(f"warning: {path} ends in a partial row ({len(data) - end} bytes, left by an "
              f"interrupted write); leaving it out (the next append moves it to "
              f"{path.name}.partial)", file=sys.stderr)
    if not data[:end].strip():
        return pd.DataFrame()
    try:
        return pd.read_csv(io.BytesIO(data[:end]))
    except (ValueError, UnicodeDecodeError) as exc:  # pandas' ParserError is a ValueError
        line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CnnlabError(f"{path}: cannot read the results table ({line})") from None


def _coerce(series, value: str):
    """Compare a filter value with a column in the column's own type."""
    import pandas as pd

    if pd.api.types.is_bool_dtype(series):
        return value.lower() in ("1", "true", "yes")
    if pd.api.types.is_numeric_dtype(series):
        try:
            return float(value)
        except ValueError:
            raise UsageError(f"column '{series.name}' is numeric; '{value}' is not a number") from None
    return value


def query(df, where: Iterable[str] = (), columns: str | None = None, sort: str | None = None,
          descending: bool = False, last: int | None = None):
    """Filter rows by key=value (also key!=value, key>value, key<value), pick columns, sort."""
    import re

    for cond in where:
        m = re.fullmatch(r"\s*([\w.]+)\s*(!=|>=|<=|=|>|<)\s*(.*)", cond)
        if not m:
            raise UsageError(f"cannot read filter '{cond}'; write key=value (or !=, >, <, >=, <=)")
        key, op, value = m.groups()
        if key not in df.columns:
            raise UsageError(f"no column '{key}' in the results table; columns include: "
                             f"{', '.join(list(df.columns)[:25])}")
        col = df[key]
        target = _coerce(col, value)
        if op == "=":
            mask = col.astype(str) == value if isinstance(target, str) else col == target
        elif op == "!=":
            mask = col.astype(str) != value if isinstance(target, str) else col != target
        else:
            mask = {">": col > target, "<": col < target, ">=": col >= target, "<=": col <= target}[op]
        df = df[mask]
    if sort:
        if sort not in df.columns:
            raise UsageError(f"cannot sort by '{sort}': no such column")
        df = df.sort_values(sort, ascending=not descending)
    if last:
        df = df.tail(last)
    if columns:
        wanted = [c.strip() for c in columns.split(",") if c.strip()]
        missing = [c for c in wanted if c not in df.columns]
        if missing:
            raise UsageError(f"no column '{missing[0]}' in the results table")
        df = df[wanted]
    return df


def pivot(df, spec: Iterable[str], agg: str = "mean"):
    """spec: rows=A cols=B values=C (rows and cols may list several, comma-separated)."""
    parts = {}
    for item in spec:
        if "=" not in item:
            raise UsageError(f"pivot takes rows=..., cols=..., values=...; got '{item}'")
        k, v = item.split("=", 1)
        parts[k.strip()] = [c.strip() for c in v.split(",") if c.strip()]
    unknown = set(parts) - {"rows", "cols", "values"}
    if unknown or "rows" not in parts or "values" not in parts:
        raise UsageError("pivot takes rows=..., values=... and optionally cols=...")
    for col in sum(parts.values(), []):
        if col not in df.columns:
            raise UsageError(f"cannot pivot on '{col}': no such column")
    return df.pivot_table(index=parts["rows"], columns=parts.get("cols"), values=parts["values"],
                          aggfunc=agg)
