"""The results table outputs/results.csv: one row per finished run, and queries over it.

Rows come from different configs, so their columns differ. An append takes a cross-process file
lock; when the row brings new columns the whole table is rewritten (to a temporary file, then
renamed) with the union of columns, otherwise the row is appended in place.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, Iterable

from cnnlab.errors import UsageError

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
    from filelock import FileLock

    path = table_path(outputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=timeout):
        header: list[str] = []
        if path.exists() and path.stat().st_size > 0:
            with open(path, newline="", encoding="utf-8") as f:
                header = next(csv.reader(f), [])
        if header and set(row) <= set(header):
            with open(path, "a", newline="", encoding="utf-8") as f:
                csv.DictWriter(f, fieldnames=header).writerow(row)
                f.flush()
                os.fsync(f.fileno())
            return path
        rows: list[dict] = []
        if header:
            with open(path, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
        columns = header + [k for k in row if k not in header]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        writer.writerow(row)
        from cnnlab.run import write_text_atomic

        write_text_atomic(path, buf.getvalue())
    return path


def read_table(outputs: str | os.PathLike):
    import pandas as pd

    path = table_path(outputs)
    if not path.exists():
        return pd.DataFrame()
    return pd.read_csv(path)


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
