"""`cnnlab train`: compose, train one model, print its summary table."""

from __future__ import annotations

from typing import List, Optional

import typer

from cnnlab.cli.app import OVERRIDES, _compose, _groups_help, app, guarded
from cnnlab.tables import fmt


@app.command(epilog=_groups_help())
@guarded
def train(overrides: Optional[List[str]] = OVERRIDES,
          cfg: bool = typer.Option(False, "--cfg", help="Print the composed config and exit.")):
    """Train one model; prints a result table and appends a row to outputs/results.csv."""
    conf = _compose(overrides)
    if cfg:
        from omegaconf import OmegaConf

        typer.echo(OmegaConf.to_yaml(conf, resolve=True), nl=False)
        return
    from rich.console import Console

    from cnnlab.training.recipe import train as run_train

    console = Console()
    summary = run_train(conf, console=console)
    from cnnlab.training.distributed import main_process

    if main_process():  # under torchrun / srun every rank returns; rank 0 speaks
        _print_summary(console, summary)
    if summary["status"] == "diverged":
        raise typer.Exit(3)


def _print_summary(console, s: dict) -> None:
    from rich.table import Table

    table = Table(title=f"run {s['run_id']} ({s['status']})", show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k in ("test_acc", "test_top5", "test_loss", "best_val_acc", "best_epoch", "train_acc",
              "epochs_run", "stopped_early", "params", "train_seconds", "images_per_sec",
              "wall_seconds", "peak_mem_mb", "device"):
        table.add_row(k, fmt(s.get(k)))
    console.print(table)
    console.print(f"run folder: {s['path']}")
