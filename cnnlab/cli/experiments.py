"""`cnnlab experiments` (the claims catalogue), `cnnlab experiments run-all` and `cnnlab report`."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import typer

from cnnlab.cli.app import app, guarded
from cnnlab.tables import rich_table

experiments_app = typer.Typer(help="The lecture claims C1-C24 and the experiments that test them.")
app.add_typer(experiments_app, name="experiments")


def _outputs() -> Path:
    from cnnlab.run import outputs_dir

    return outputs_dir()


def _console():
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 200)


@experiments_app.callback(invoke_without_command=True)
def experiments(ctx: typer.Context):
    """Each claim, the experiments that test it, their last time and verdict; claims with no
    experiment are flagged."""
    if ctx.invoked_subcommand is None:
        guarded(_list)()


def _list() -> None:
    import pandas as pd

    from cnnlab.lab import catalogue
    from cnnlab.lab.sweep import sweeps_root

    rows = catalogue.rows(sweeps_root(_outputs()))
    console = _console()
    console.print(rich_table(pd.DataFrame(rows)))
    missing = [r["claim"] for r in rows if r["experiment"] == "(none)"]
    if missing:
        console.print(f"[bold]claims without an experiment:[/bold] {', '.join(missing)}")
    else:
        console.print(f"every claim C1-C{len(catalogue.CLAIMS)} has an experiment")


@experiments_app.command("run-all")
@guarded
def run_all(
    scale: str = typer.Option("quick", "--scale", help="quick (CPU, offline data) or full (GPU, real datasets)."),
    quick: bool = typer.Option(False, "--quick", help="Same as --scale quick."),
    only: Optional[str] = typer.Option(None, "--only", help="Comma-separated experiment names or claim ids (C3,tencrop)."),
    skip: Optional[str] = typer.Option(None, "--skip", help="Comma-separated experiment names or claim ids to leave out."),
    no_plots: bool = typer.Option(False, "--no-plots", help="Skip the PNG plots."),
    jobs: int = typer.Option(1, "--jobs", min=1, help="Training jobs run side by side (joblib); "
                             "measurement and `exclusive` experiments always run one job at a time."),
):
    """Run every experiment (one after another) at a scale, then write one claims report."""
    from cnnlab.cli.sweep import interrupted_line
    from cnnlab.lab.catalogue import duration
    from cnnlab.lab.run_all import prepare
    from cnnlab.lab.sweep import resume_command, sweeps_root

    todo = prepare("quick" if quick else scale, only, skip, jobs, _outputs())
    console = _console()
    step = None
    try:
        for step in todo.steps(plots=not no_plots):
            _print_step(console, step)
    except KeyboardInterrupt as exc:  # SIGINT/SIGTERM (cnnlab.lab.jobs.SweepInterrupted)
        if step is None or step.event != "started":
            raise
        console.print(interrupted_line(exc, resume_command(step.plan))
                      + f", then cnnlab report {sweeps_root(todo.outputs)}", soft_wrap=True)
        raise typer.Exit(getattr(exc, "exit_code", 130))
    path = todo.report()
    console.print(f"{len(todo.chosen)} experiments in {duration(time.time() - todo.started)}; "
                  f"report: {path} (and {path.with_suffix('.html').name})")
    if todo.skipped:
        console.print(f"skipped for want of data: {', '.join(todo.skipped)}")
    if todo.failed:
        console.print(f"failed: {', '.join(todo.failed)}")
        raise typer.Exit(1)


def _print_step(console, step) -> None:
    from cnnlab.cli.sweep import show_report

    head = f"({step.index}/{step.total}) {step.spec.name}"
    if step.event == "failed":
        console.print(f"[red]{step.spec.name} failed: {step.why}[/red]")
    elif step.event == "skipped":
        console.print(f"[yellow]{head} skipped: {step.why}[/yellow]")
    elif step.event == "started":
        console.print(f"[bold]{head}[/bold] ({step.spec.claim}): "
                      f"{len(step.plan.jobs) or 'sweeper-chosen'} jobs -> {step.plan.sweep_dir}")
    else:
        show_report(console, step.plan, step.spec, step.report)


@app.command("report")
@guarded
def report_cmd(
    sweeps: Optional[Path] = typer.Argument(None, help="A folder of sweep folders (default: the outputs folder's sweeps/).", show_default=False),
    out: Optional[Path] = typer.Option(None, "--out", help="Report folder (default: <sweeps>/../reports/<time>)."),
    rejudge: bool = typer.Option(False, "--rejudge", help="First decide each sweep's verdict again with this cnnlab's statistics and its experiment file's rules (no training)."),
):
    """Rebuild the claims report (report.md, report.html, figures/) from finished sweeps."""
    from cnnlab.lab import catalogue
    from cnnlab.errors import UsageError
    from cnnlab.run import ensure_writable

    sweeps = sweeps or _outputs() / "sweeps"
    if not sweeps.is_dir():
        raise UsageError(f"no sweeps folder at {sweeps}")
    if not catalogue.latest_sweeps(sweeps):
        raise UsageError(f"no finished experiment sweep under {sweeps} (run `cnnlab sweep <experiment>` first)")
    out = out or sweeps.resolve().parent / "reports" / time.strftime("%Y%m%d-%H%M%S")
    ensure_writable(out)
    if rejudge:
        for name, verdict in catalogue.rejudge(sweeps):
            typer.echo(f"{name}: {verdict}")
    path = catalogue.build(sweeps, out)
    typer.echo(f"report: {path} (and {path.with_suffix('.html').name}, figures/)")
