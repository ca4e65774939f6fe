"""`cnnlab train`: compose, train one model, print its summary table."""

from __future__ import annotations

from typing import List, Optional

import typer

from cnnlab.cli.app import OVERRIDES, _compose, _groups_help, app, guarded
from cnnlab.errors import UsageError
from cnnlab.tables import fmt


CFG_KINDS = ("job", "hydra", "all")


@app.command(epilog=_groups_help(), context_settings={"ignore_unknown_options": True})
@guarded
def train(overrides: Optional[List[str]] = OVERRIDES,
          cfg: Optional[str] = typer.Option(
              None, "--cfg", "-c", show_default=False,
              help="Print the composed config and exit, as Hydra's --cfg: job (cnnlab's config), "
                   "hydra (Hydra's node) or all (both); a bare --cfg is job."),
          resolve: bool = typer.Option(False, "--resolve", help="With --cfg: resolve interpolations."),
          multirun: bool = typer.Option(
              False, "--multirun", "-m",
              help="Run the overrides as a sweep: `cnnlab train -m seed=0,1` is `cnnlab sweep seed=0,1` "
                   "(and takes its options: --no-plots, --scale, ...).")):
    """Train one model; prints a result table and appends a row to outputs/results.csv."""
    overrides = list(overrides or [])
    if multirun:
        if cfg is not None:
            raise UsageError("--cfg prints one run's config; drop -m/--multirun (or use `cnnlab sweep`)")
        raise typer.Exit(_run_sweep(overrides))
    unknown = next((o for o in overrides if o.startswith("-")), None)
    if unknown is not None:
        raise UsageError(f"no such option: {unknown} (cnnlab train takes overrides, --cfg, --resolve, "
                         f"-m/--multirun; see cnnlab train --help)")
    if cfg is not None:
        kind, overrides = _cfg_kind(cfg, overrides)
        typer.echo(_config_text(kind, overrides, resolve), nl=False)
        return
    from cnnlab import threads

    threads.prepare()  # before torch is imported: OpenMP reads its wait policy once
    conf = _compose(overrides)
    from rich.console import Console

    from cnnlab.training.recipe import train as run_train

    console = Console()
    summary = run_train(conf, console=console)
    from cnnlab.training.distributed import main_process

    if main_process():  # under torchrun / srun every rank returns; rank 0 speaks
        _print_summary(console, summary)
    if summary["status"] == "diverged":
        raise typer.Exit(3)


def _cfg_kind(cfg: str, overrides: list[str]) -> tuple[str, list[str]]:
    """--cfg's value, and the overrides: `--cfg model=lenet5` (the flag as it was before it took a
    value) reads as --cfg job with the override."""
    if cfg in CFG_KINDS:
        return cfg, overrides
    if "=" in cfg:
        return "job", [cfg, *overrides]
    raise UsageError(f"--cfg takes job, hydra or all, not '{cfg}'")


def _config_text(kind: str, overrides: list[str], resolve: bool) -> str:
    """What `--cfg KIND` prints: cnnlab's composed config, Hydra's node, or both (hydra first,
    as Hydra prints them)."""
    from omegaconf import OmegaConf

    from cnnlab.config import compose_with_hydra, to_yaml

    conf, hydra_node = compose_with_hydra(overrides)
    if kind == "job":
        return to_yaml(conf, resolve)
    wrapped = OmegaConf.create({"hydra": hydra_node})
    text = to_yaml(wrapped, resolve)
    return text if kind == "hydra" else text + to_yaml(conf, resolve)


def _run_sweep(args: list[str]) -> int:
    """`cnnlab sweep ARGS` in this process (the command as registered, so its options parse as
    they do there); its exit code."""
    from typer.main import get_command

    group = get_command(app)
    command = group.commands["sweep"]  # type: ignore[attr-defined]
    try:
        code = command.main(args=args, prog_name="cnnlab sweep", standalone_mode=False)
    except Exception as exc:
        if not hasattr(exc, "format_message"):  # not click's usage error (Typer vendors click)
            raise
        raise UsageError(f"cnnlab train -m: {exc.format_message()}") from exc
    return code if isinstance(code, int) else 0


def normalize_argv(argv: list[str]) -> list[str]:
    """`cnnlab train ... --cfg` with no kind after it is Hydra's habit too: it means --cfg job."""
    if not argv or argv[0] != "train":
        return argv
    out = list(argv)
    for i, a in enumerate(argv):
        if a in ("--cfg", "-c") and (i + 1 == len(argv) or argv[i + 1].startswith("-")):
            out.insert(i + 1 + (len(out) - len(argv)), "job")
    return out


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
