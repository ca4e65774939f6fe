"""`cnnlab sweep` and `cnnlab bench-sweep`."""

from __future__ import annotations

from typing import List, Optional

import typer

from cnnlab.cli.app import _groups_help, app, guarded
from cnnlab.tables import rich_table

@app.command(epilog=_groups_help())
@guarded
def sweep(
    targets: Optional[List[str]] = typer.Argument(None, help="An experiment file or name, then overrides; comma-separated values sweep (model=lenet5,resnet8 seed=0,1,2). Add hydra/launcher=joblib etc.", show_default=False),
    resume: bool = typer.Option(False, "--resume", help="Run only the jobs that are not done, in the latest sweep of this experiment (or the sweep folder given)."),
    scale: str = typer.Option("quick", "--scale", help="Experiment scale: quick (CPU, offline data) or full (GPU, real datasets)."),
    no_plots: bool = typer.Option(False, "--no-plots", help="Skip the PNG plots."),
    metric: Optional[str] = typer.Option(None, "--metric", help="What each job returns to the sweeper (Optuna) to optimise: a validation score by default (best_val_acc); a test_ score prints a warning. On an ad-hoc sweep also what the tables show (default test_acc)."),
    direction: Optional[str] = typer.Option(None, "--direction", help="max or min (default: max for accuracies, min for losses and times); sets Optuna's hydra.sweeper.direction."),
):
    """Run a grid of training jobs through Hydra's multirun; tables, plots and a verdict at the end."""
    from rich.console import Console

    from cnnlab import threads
    from cnnlab.lab import report
    from cnnlab.lab import sweep as sw
    from cnnlab.run import outputs_dir

    threads.prepare()  # before torch is imported: OpenMP reads its wait policy once
    p, spec = sw.plan_targets(list(targets or []), outputs_dir(), scale=scale, resume=resume,
                              metric=metric, direction=direction)
    console = Console()
    warning = sw.objective_warning(p)
    if warning:
        console.print(warning, soft_wrap=True, markup=False)
    pending = sw.pending_jobs(p) if resume else None
    if pending == 0 and not p.untestable:
        console.print(f"sweep {p.name}: nothing to do, its {len(p.jobs)} jobs have finished (done "
                      f"or diverged); report: {p.sweep_dir / 'report.md'}", soft_wrap=True, markup=False)
        return
    n = f"{len(p.jobs)} jobs" if p.jobs else "jobs chosen by the sweeper"
    if pending is not None:
        n = f"{pending} of {len(p.jobs)} jobs to run"
    stopped = None
    with sw.opened(p):  # the folder (created now, if new) is this process's until the report is written
        console.print(f"sweep {p.name}: {n} -> {p.sweep_dir}")
        try:
            sw.launch(p)
        except KeyboardInterrupt as exc:  # SIGINT/SIGTERM (cnnlab.lab.jobs.SweepInterrupted)
            stopped = exc
        show_report(console, p, spec, report.build(p.sweep_dir, spec, p.metric, plots=not no_plots))
    if stopped is not None:
        console.print(interrupted_line(stopped, sw.resume_command(p)), soft_wrap=True)
        raise typer.Exit(getattr(stopped, "exit_code", 130))
    failed = sw.job_table(p.sweep_dir)
    if not failed.empty and (failed.status == "failed").any():
        raise typer.Exit(1)


def interrupted_line(exc: BaseException, command: str) -> str:
    """What a sweep stopped by a signal prints last: what is kept, and the command to go on."""
    signum = getattr(exc, "signum", None)
    how = f" by {exc}" if signum else ""
    return (f"interrupted{how}; finished jobs are kept and an interrupted job continues from its "
            f"checkpoint. Continue with: {command}")


def show_report(console, p, spec, r) -> None:
    """A sweep's report `r` in the terminal: each job's status, the table, cost and best tables,
    and the verdict."""
    from cnnlab.lab import report

    if r.jobs.empty:
        v = r.verdict
        console.print(f"[bold]claim {v['claim']}: {v['verdict']}[/bold] - {v['text']}" if v else "no job finished")
        return
    status = r.jobs[[*r.axes, "status", *([p.metric] if p.metric in r.jobs else []), "error"]]
    console.print(rich_table(status.astype(object).where(status.notna(), "")))
    console.print(f"[bold]{p.metric}[/bold] (mean ± 95% CI half-width over seeds)")
    console.print(rich_table(report.table_view(r.summary, spec, r.axes)))
    if r.verdict and spec.verdict.kind == "best" and r.verdict.get("evidence"):
        console.print(f"[bold]{p.metric} of each {spec.verdict.by} per cell; the recommended one[/bold]")
        console.print(rich_table(report.best_table(r.verdict["evidence"])))
    if spec is not None and spec.tune and getattr(r, "tuning", None) is not None:
        from cnnlab.lab import tuning

        console.print(f"[bold]per-arm tuning: mean {spec.tune_metric} (validation) of each setting[/bold]")
        console.print(rich_table(tuning.table(r.tuning, spec)))
    if spec is not None and spec.views and "view_ms_per_image" in r.jobs.columns:
        console.print("[bold]cost of each test-time view mode[/bold]")
        console.print(rich_table(report.view_costs(r.jobs)))
    if r.verdict:
        console.print(f"[bold]claim {r.verdict['claim']}: {r.verdict['verdict']}[/bold] - {r.verdict['text']}")
    console.print(f"report: {p.sweep_dir / 'report.md'}")


@app.command("bench-sweep")
@guarded
def bench_sweep(jobs: int = typer.Option(8, "--jobs", help="Jobs in the grid."),
                epochs: int = typer.Option(5, "--epochs", help="Epochs per job (longer jobs amortise worker start-up)."),
                n_jobs: int = typer.Option(2, "--n-jobs", help="joblib processes.")):
    """Sweep overhead per job and joblib's parallel speed-up, measured side by side."""
    import logging

    from cnnlab.lab.bench_sweep import run

    logging.getLogger("hydra").setLevel(logging.WARNING)
    run(jobs=jobs, epochs=epochs, n_jobs=n_jobs, echo=typer.echo)
