"""The results table outputs/results.csv: one row per finished run, and queries over it.
Benchmarks (`cnnlab bench-conv`, `cnnlab bench-train`) write their rows to a table of their own,
outputs/bench.csv, by the same rules.

A row's head names its run: `run_id` is the run folder's id (for a sweep job, whose folder is
always .../jobs/<job>/run, `<sweep>/<job>`), `path` is the folder relative to the outputs folder,
and a sweep job's row also has `sweep` and `job`. The short axes (`model`, `optim`, ...) hold the
preset chosen for the group (`optim=nesterov`) when it is known, beside the resolved keys
(`optim.name=sgd`).

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


# config groups whose short column holds the preset's name (Hydra's choice) when it is known
PRESET_AXES = ("model", "data", "aug", "optim", "sched", "precision", "transfer", "eval")
EXTRA_PRESETS = ("trainer", "reg")  # groups without a resolved name, recorded when known

TABLE = "results.csv"  # runs (training and eval rows)
BENCH = "bench.csv"  # benchmarks' rows


def table_path(outputs: str | os.PathLike, table: str = TABLE) -> Path:
    return Path(outputs) / table


def run_identity(outputs: str | os.PathLike | None, path: str | os.PathLike | None,
                 folder_id: str | None) -> dict[str, Any]:
    """A row's head for the run folder `path`: run_id, path (relative to `outputs` when inside
    it), sweep and job (None unless the folder is a sweep job's <sweep>/jobs/<job>/run)."""
    if path is None:
        return {"run_id": folder_id, "path": None, "sweep": None, "job": None}
    where = Path(path)
    shown = str(where)
    if outputs is not None:
        with contextlib.suppress(ValueError, OSError):
            shown = where.resolve().relative_to(Path(outputs).resolve()).as_posix()
    parts = Path(shown).parts
    if len(parts) >= 5 and parts[-5] == "sweeps" and parts[-3] == "jobs" and parts[-1] == "run":
        sweep, job = parts[-4], parts[-2]
        return {"run_id": f"{sweep}/{job}", "path": shown, "sweep": sweep, "job": job}
    return {"run_id": folder_id or where.name, "path": shown, "sweep": None, "job": None}


def preset_names(choices: dict | None) -> dict[str, str]:
    """The presets of cnnlab's config groups from Hydra's runtime choices (a list of aug
    presets, `[crop,flip]`, reads crop+flip, as aug.name does)."""
    out = {}
    for group, value in (choices or {}).items():
        if group not in PRESET_AXES + EXTRA_PRESETS or value is None:
            continue
        if isinstance(value, (list, tuple)):
            value = "+".join(str(v) for v in value)
        value = str(value)
        if value.startswith("[") and value.endswith("]"):
            value = "+".join(v.strip() for v in value[1:-1].split(",") if v.strip())
        out[group] = value
    return out


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


def make_row(cfg_dict: dict, head: dict, metrics: dict, choices: dict | None = None) -> dict[str, Any]:
    """head (run id, time, status, ...) + short axes + metrics + every flattened config key.
    choices: the presets chosen per config group (Hydra's runtime choices): the short column of
    a group holds its preset's name, the resolved values stay under their dotted keys."""
    flat = flatten({k: v for k, v in cfg_dict.items() if k != "choices"})
    presets = preset_names(choices)
    row = dict(head)
    row.update({short: presets.get(short, flat.get(full)) for short, full in AXES.items()})
    row.update({g: presets[g] for g in EXTRA_PRESETS if g in presets})
    row.update(metrics)
    row.update({k: v for k, v in flat.items() if k not in row})
    return row


def append_row(outputs: str | os.PathLike, row: dict[str, Any], timeout: float = 60,
               table: str = TABLE) -> Path:
    """Append one row to outputs/results.csv (or outputs/<table>); a failure is a CnnlabError
    naming the table, and leaves it as it was."""
    path = table_path(outputs, table)
    with _table_lock(path, timeout):
        _append_locked(path, row)
    return path


def check_writable(outputs: str | os.PathLike, timeout: float = 60, table: str = TABLE) -> Path:
    """Fail now, as append_row would later, when a row could not be appended to the table (its
    folder or the table is not writable, the lock cannot be taken); writes no row. For commands
    that would otherwise do all their work first."""
    path = table_path(outputs, table)
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


def read_table(outputs: str | os.PathLike, table: str = TABLE):
    """The table as a DataFrame (empty when there is none). A partial last row (an interrupted
    write's, which the next append sets aside) is left out with a warning; a table pandas cannot
    read is one line naming it."""
    import pandas as pd

    path = table_path(outputs, table)
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


FILTER = r"\s*([\w.]+)\s*(!=|>=|<=|=|>|<)\s*(.*)"


def no_match(df, where: Iterable[str]) -> str:
    """Why the filters `where` leave no row of `df`: the first that empties it, and the values
    its column has among the rows the filters before it kept."""
    import re

    kept, before = df, []
    for cond in where:
        narrowed = query(kept, [cond])
        if narrowed.empty:
            key = re.fullmatch(FILTER, cond).group(1)
            values = sorted({_shown(v) for v in kept[key].dropna()}, key=_natural)
            after = f" among the rows with {' and '.join(before)}" if before else ""
            listed = ", ".join(values[:20]) + (f", ... ({len(values)} values)" if len(values) > 20 else "")
            return (f"no row has {cond.strip()}{after}; {key} has: {listed}" if values
                    else f"no row has {cond.strip()}{after}; {key} is empty in every row")
        kept, before = narrowed, before + [cond.strip()]
    return "no row matches"


def _shown(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _natural(text: str):
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


# float columns that stay floats even when every value is whole (an accuracy of 1.0)
_REAL = ("acc", "loss", "top5", "lr", "fraction", "ratio", "rate", "seconds", "_ms", "_mb",
         "per_sec", "gflops", "gap", "mean", "std", "momentum", "decay", "scale", "err")


def integer_columns(df):
    """df with float columns whose values are all whole numbers (a seed, epochs, a count that
    a missing value made float in the CSV) shown as integers (missing: empty)."""
    import pandas as pd

    out = df.copy()
    for col in df.columns:
        series = df[col]
        if not pd.api.types.is_float_dtype(series) or any(k in str(col).lower() for k in _REAL):
            continue
        values = series.dropna()
        if values.empty or not (values == values.round()).all() or (values.abs() >= 2**53).any():
            continue
        out[col] = [("" if pd.isna(v) else int(v)) for v in series]
    return out


def query(df, where: Iterable[str] = (), columns: str | None = None, sort: str | None = None,
          descending: bool = False, last: int | None = None):
    """Filter rows by key=value (also key!=value, key>value, key<value), pick columns, sort."""
    import re

    for cond in where:
        m = re.fullmatch(FILTER, cond)
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
