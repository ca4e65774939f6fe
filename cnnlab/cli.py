"""The `cnnlab` command line. Thin: parse, compose the config, call one function.

torch, torchvision, pandas and Hydra are imported inside the commands, so `cnnlab --help` stays
fast. Errors meant for the user (cnnlab.errors) print one line and exit 2 (usage) or 1 (runtime);
`--debug` anywhere on the command line shows the traceback instead.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from cnnlab.config import GROUPS, conf_dir
from cnnlab.tables import fmt, markdown_table, rich_table

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="cnnlab: a command-line lab for convolutional networks.")
data_app = typer.Typer(no_args_is_help=True, help="Datasets: list, inspect, fetch.")
app.add_typer(data_app, name="data")


def _debug() -> bool:
    return os.environ.get("CNNLAB_DEBUG", "") not in ("", "0")


def _err(message: str) -> None:
    typer.echo(f"error: {message}", err=True)


def guarded(fn):
    """Turn exceptions into one line and an exit code, unless --debug."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from cnnlab.errors import CnnlabError

        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except CnnlabError as exc:
            if _debug():
                raise
            # an error raised in a DataLoader worker arrives with the worker's traceback in its
            # message; its last line is the original error
            lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
            message = lines[-1] if lines else type(exc).__name__
            _err(message.split(": ", 1)[1] if message.startswith("cnnlab.errors.") else message)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            if _debug():
                raise
            _err("interrupted")
            raise typer.Exit(130) from None
        except MemoryError:
            if _debug():
                raise
            _err("out of memory; lower trainer.batch_size or the data size")
            raise typer.Exit(1) from None
        except Exception as exc:  # anything else is a bug or an environment problem
            if _debug():
                raise
            text = str(exc).strip().splitlines()
            _err(f"{type(exc).__name__}: {text[0] if text else ''} (rerun with --debug for the traceback)")
            raise typer.Exit(1) from None

    return wrapper


def _groups_help() -> str:
    try:
        lines = []
        for g in GROUPS:
            folder = conf_dir() / g
            names = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
            lines.append(f"[bold]{g}[/bold]: {', '.join(names)}")
        return ("Overrides are Hydra's: group=option picks an option, group.key=value sets a key "
                "(e.g. model=lenet5 optim.lr=3e-3 trainer.epochs=5 seed=1).\n\n"
                + "\n\n".join(lines))
    except Exception:
        return ""


OVERRIDES = typer.Argument(None, help="Hydra overrides: group=option or key=value.", show_default=False)


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks instead of one-line errors.")):
    if debug:
        os.environ["CNNLAB_DEBUG"] = "1"


def _compose(overrides):
    from cnnlab.config import compose

    return compose(list(overrides or []))


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

    from cnnlab.train import train as run_train

    console = Console()
    summary = run_train(conf, console=console)
    from cnnlab.distributed import main_process

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


DEFAULT_COLUMNS = ["run_id", "status", "model", "data", "aug", "optim", "lr", "epochs", "seed",
                   "test_acc", "best_val_acc", "train_seconds"]


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
):
    """The table of finished runs (outputs/results.csv), filtered, sorted or pivoted."""
    from rich.console import Console

    from cnnlab import results as res
    from cnnlab.errors import UsageError

    folder = outputs or Path(os.environ.get("CNNLAB_OUTPUTS", "outputs"))
    df = res.read_table(folder)
    if df.empty:
        typer.echo(f"no finished runs in {res.table_path(folder)} yet; run `cnnlab train` first")
        return
    if agg not in ("mean", "median", "max", "min", "count", "std"):
        raise UsageError(f"unknown --agg '{agg}'; choose from: mean, median, max, min, count, std")
    cols = None if columns in (None, "all") else columns
    df = res.query(df, where or [], cols, sort, desc, last)
    if pivot:
        spec = [part for item in pivot for part in item.split()]
        df = res.pivot(df, spec, agg).reset_index()
        df.columns = [" ".join(str(c) for c in col if str(c)) if isinstance(col, tuple) else str(col)
                      for col in df.columns]
    elif columns is None:
        df = df[[c for c in DEFAULT_COLUMNS if c in df.columns]]
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


@data_app.command("list")
@guarded
def data_list():
    """The registered datasets."""
    from cnnlab import data

    for name, text in data.list_datasets().items():
        typer.echo(f"{name:<14} {text}")


@data_app.command("info", epilog=_groups_help())
@guarded
def data_info(overrides: Optional[List[str]] = OVERRIDES):
    """Split sizes, classes, image size and normalisation statistics of the configured data."""
    from cnnlab import data

    conf = _compose(overrides)
    b = data.create(conf.data)
    counts = {name: len(getattr(b, name)) for name in ("train", "val", "test")}
    typer.echo(f"{b.name}: {b.num_classes} classes, images {b.in_chans}x{b.image_size[0]}x{b.image_size[1]}, "
               f"{'in memory' if b.train.in_memory else 'streamed'}")
    typer.echo("splits: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    typer.echo("mean: " + ", ".join(f"{m:.4f}" for m in b.mean) + "   std: " + ", ".join(f"{s:.4f}" for s in b.std))
    typer.echo("classes: " + ", ".join(b.class_names[:20]) + (" ..." if b.num_classes > 20 else ""))


@data_app.command("fetch")
@guarded
def data_fetch(name: str = typer.Argument(..., help="cifar10, cifar100, mnist, fashion_mnist, svhn or stl10"),
               overrides: Optional[List[str]] = OVERRIDES):
    """Download a dataset into data.root (needs a network; training never downloads)."""
    from cnnlab.data.torchvision_sets import SOURCES, fetch

    if name not in SOURCES:
        from cnnlab.errors import UsageError

        raise UsageError(f"cannot fetch '{name}'; fetchable: {', '.join(SOURCES)}")
    conf = _compose([f"data={name}", *(overrides or [])])
    path = fetch(name, conf.data.root)
    typer.echo(f"{name} is in {path}")


@data_app.command("bench")
@guarded
def data_bench(num: int = typer.Option(20000, "--num", help="Images per timed repeat."),
               repeats: int = typer.Option(3, "--repeats", help="Timed repeats (the median is reported)."),
               size: int = typer.Option(32, "--size", help="Image side in pixels.")):
    """Images/s of the procedural shapes generators (median of repeats, after a warm-up)."""
    import statistics
    import time

    from cnnlab.data.shapes import VARIANTS, generate
    from cnnlab.errors import UsageError

    if num < 1 or repeats < 1 or size < 4:
        raise UsageError("--num and --repeats must be at least 1 and --size at least 4")
    target = 20000  # images/s on 2 CPU cores: the foundation issue's requirement
    for variant in VARIANTS:
        generate(variant, min(num, 1000), size)  # warm-up
        times = []
        for r in range(repeats):
            t = time.perf_counter()
            generate(variant, num, size, seed=r)
            times.append(time.perf_counter() - t)
        rate = num / statistics.median(times)
        typer.echo(f"{variant:<13} {rate:>9,.0f} img/s  ({rate / target:.2f}x the {target:,} img/s target)")


# The other command groups live in their own modules; importing them registers their commands.
from cnnlab import cli_aug, cli_eval, cli_models, cli_sweep  # noqa: E402,F401
from cnnlab import cli_experiments  # noqa: E402,F401
from cnnlab import cli_bench  # noqa: E402,F401
from cnnlab import cli_bench_conv  # noqa: E402,F401
from cnnlab import cli_data, cli_run  # noqa: E402,F401


def main() -> None:
    # --debug may stand anywhere on the line; take it out before Typer parses the rest.
    if "--debug" in sys.argv[1:]:
        sys.argv = [sys.argv[0]] + [a for a in sys.argv[1:] if a != "--debug"]
        os.environ["CNNLAB_DEBUG"] = "1"
    app()


if __name__ == "__main__":
    main()
