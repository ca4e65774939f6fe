"""Formatting of tables for the terminal (rich) and for files (markdown)."""

from __future__ import annotations


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1 else f"{v:.5g}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def markdown_table(df) -> str:
    header = "| " + " | ".join(str(c) for c in df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    rows = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, rule, *rows]) + "\n"


def rich_table(df):
    from rich.table import Table

    table = Table(show_header=True, header_style="bold")
    for c in df.columns:
        table.add_column(str(c), justify="right" if df[c].dtype.kind in "if" else "left")
    for row in df.itertuples(index=False):
        table.add_row(*[fmt(v) for v in row])
    return table
