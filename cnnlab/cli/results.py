"""`cnnlab results`: the table of finished runs (or, with --bench, of benchmarks), filtered,
sorted, pivoted or exported."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from cnnlab.cli.app import app, guarded
from cnnlab.tables import markdown_table, rich_table


DEFAULT_COLUMNS = ["run_id", "status", "model", "data", "aug", "optim", "sched", "lr", "epochs",
                   "seed", "test_acc", "best_val_acc", "train_seconds"]


@app.command()
@guarded
def results(
    where: Optional[List[str]] = typer.Option(None, "--where", "-w", help="Filter: key=value (also !=, >, <, >=, <=); repeatable."),
    columns: Optional[str] = typer.Option(None, "--columns", "-c", help="Comma-separated columns to show (default: a summary set; 'all' for every column)."),
    sort: Optional[str] = typer.Option(None, "--sort", "-s", help="Sort by this column."),
    desc: bool = typer.Option(False, "--desc", help="Sort descending."),
    last: Optional[int] = typer.Option(None, "--last", "-n", help="Only the last N rows."),
    pivot: Optional[List[str]] = typer.Option(None, "--pivot", help="rows=A cols=B values=C (give each part as its own --pivot or space-separated in one)."),
    agg: str = typer.Option("mean", "--agg", help="Pivot aggregation: mean, median, max, min, count, std."),
    export: Optional[Path] = typer.Option(None, "--export", "-o", help="Write the table to a .csv or .md file."),
    outputs: Optional[Path] = typer.Option(None, "--outputs", help="The outputs folder (default: $CNNLAB_OUTPUTS or ./outputs)."),
    bench: bool = typer.Option(False, "--bench", help="The benchmarks' table (outputs/bench.csv: bench-conv, bench-train) instead of the runs'."),
):
    """The table of finished runs (outputs/results.csv), filtered, sorted or pivoted."""
    from rich.console import Console

    from cnnlab import results as res
    from cnnlab.errors import UsageError

    from cnnlab.run import outputs_dir

    folder = outputs_dir(outputs)
    table = res.BENCH if bench else res.TABLE
    df = res.read_table(folder, table)
    if df.empty:
        first = "`cnnlab bench-conv` or `cnnlab bench-train`" if bench else "`cnnlab train`"
        typer.echo(f"no {'benchmark rows' if bench else 'finished runs'} in "
                   f"{res.table_path(folder, table)} yet; run {first} first")
        return
    if agg not in ("mean", "median", "max", "min", "count", "std"):
        raise UsageError(f"unknown --agg '{agg}'; choose from: mean, median, max, min, count, std")
    cols = None if columns in (None, "all") else columns
    everything = df
    df = res.query(df, where or [], cols, sort, desc, last)
    if where and df.empty:
        raise UsageError(f"{res.table_path(folder, table)}: {res.no_match(everything, where)}")
    if pivot:
        spec = [part for item in pivot for part in item.split()]
        df = res.pivot(df, spec, agg).reset_index()
        df.columns = [" ".join(str(c) for c in col if str(c)) if isinstance(col, tuple) else str(col)
                      for col in df.columns]
    elif columns is None and bench:  # every column some benchmark row filled
        df = df[[c for c in df.columns if df[c].notna().any()]]
    elif columns is None:
        df = df[[c for c in DEFAULT_COLUMNS if c in df.columns]]
    df = res.integer_columns(df)
    if export:
        _export(df, export)
        typer.echo(f"wrote {export}")
        return
    # Piped output is not cut to 80 columns; a terminal gets its own width.
    Console(width=None if sys.stdout.isatty() else 250).print(rich_table(df))


def _export(df, path: Path) -> None:
    from cnnlab.errors import UsageError

    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    elif path.suffix == ".md":
        path.write_text(markdown_table(df), encoding="utf-8")
    else:
        raise UsageError(f"--export writes .csv or .md files, not '{path.suffix or path.name}'")
