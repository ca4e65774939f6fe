"""`cnnlab experiments` (the claims catalogue), `cnnlab experiments run-all` and `cnnlab report`."""

from __future__ import annotations

import os
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
    from cnnlab.lab import catalogue
    from cnnlab.lab import experiment as exp
    from cnnlab.lab.claims import claim_ids
    from cnnlab.cli.sweep import _sweep_report
    from cnnlab.errors import UsageError
    from cnnlab.lab.sweep import launch, missing_data, plan, sweeps_root

    scale = "quick" if quick else scale
    specs = [exp.load(p) for p in exp.list_experiments()]

    def picks(text):
        return {t.strip().upper() if t.strip().upper().startswith("C") and t.strip()[1:].isdigit()
                else t.strip() for t in (text or "").split(",") if t.strip()}

    def named(spec, names):
        return spec.name in names or bool(set(claim_ids(spec.claim)) & names)

    want, drop = picks(only), picks(skip)
    known = {s.name for s in specs} | {c for s in specs for c in claim_ids(s.claim)}
    unknown = sorted((want | drop) - known)
    if unknown:
        raise UsageError(f"no experiment or claim {', '.join(unknown)}; see `cnnlab experiments`")
    chosen = [s for s in specs if (not want or named(s, want)) and not named(s, drop)]
    missing = [s.name for s in chosen if scale != "quick" and scale not in s.scales]
    if missing:
        raise UsageError(f"no '{scale}' scale in: {', '.join(missing)}")
    console = _console()
    outputs = _outputs()
    started = time.time()
    failed, skipped = [], {}
    for i, spec in enumerate(chosen, 1):
        spec.path = str(exp.experiments_dir() / f"{spec.name}.yaml")
        side_by_side = jobs > 1 and not spec.measure and not spec.exclusive
        # N jobs side by side share the cores: each gets its share, never all of them
        launcher = ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}",
                    f"trainer.threads={max(1, (os.cpu_count() or 1) // jobs)}"] if side_by_side else []
        try:
            p = plan(launcher, outputs, experiment=spec, scale=scale)
            absent = [] if spec.measure else missing_data(p.jobs)
        except Exception as exc:  # a missing launcher plugin, a bad cell: the others still run
            failed.append(spec.name)
            console.print(f"[red]{spec.name} failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}[/red]")
            continue
        if absent:
            skipped[spec.name] = absent[0]
            console.print(f"[yellow]({i}/{len(chosen)}) {spec.name} skipped: {absent[0]}[/yellow]")
            continue
        console.print(f"[bold]({i}/{len(chosen)}) {spec.name}[/bold] ({spec.claim}): "
                      f"{len(p.jobs) or 'sweeper-chosen'} jobs -> {p.sweep_dir}")
        try:
            launch(p)
        except KeyboardInterrupt:
            console.print(f"interrupted; finished jobs are kept. Continue with: cnnlab sweep "
                          f"{p.sweep_dir} --resume, then cnnlab report {sweeps_root(outputs)}")
            raise typer.Exit(130)
        except Exception as exc:  # one broken experiment does not stop the catalogue
            failed.append(spec.name)
            console.print(f"[red]{spec.name} failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}[/red]")
            continue
        _sweep_report(console, p, spec, plots=not no_plots)
    out = outputs / "reports" / time.strftime("%Y%m%d-%H%M%S")
    path = catalogue.build(sweeps_root(outputs), out, skipped=skipped)
    console.print(f"{len(chosen)} experiments in {catalogue._duration(time.time() - started)}; "
                  f"report: {path} (and {path.with_suffix('.html').name})")
    if skipped:
        console.print(f"skipped for want of data: {', '.join(skipped)}")
    if failed:
        console.print(f"failed: {', '.join(failed)}")
        raise typer.Exit(1)


@app.command("report")
@guarded
def report_cmd(
    sweeps: Optional[Path] = typer.Argument(None, help="A folder of sweep folders (default: the outputs folder's sweeps/).", show_default=False),
    out: Optional[Path] = typer.Option(None, "--out", help="Report folder (default: <sweeps>/../reports/<time>)."),
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
    path = catalogue.build(sweeps, out)
    typer.echo(f"report: {path} (and {path.with_suffix('.html').name}, figures/)")
