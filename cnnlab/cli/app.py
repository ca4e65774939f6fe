"""The Typer app every command registers on, and what the commands share: the error guard,
the overrides argument, the groups help and compose.

torch, torchvision, pandas and Hydra are imported inside the commands, so `cnnlab --help` stays
fast. Errors meant for the user (cnnlab.errors) print one line and exit 2 (usage) or 1 (runtime);
`--debug` anywhere on the command line shows the traceback instead.
"""

from __future__ import annotations

import functools
import os

import typer

from cnnlab.config import GROUPS, conf_dir

app = typer.Typer(add_completion=True, no_args_is_help=True, rich_markup_mode="rich",
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
            _err(_describe(exc))
            raise typer.Exit(1) from None

    return wrapper


def _describe(exc: Exception) -> str:
    """One line for an exception that is not a CnnlabError: an OSError about a file (a full
    disk, a read-only folder) names the file; anything else shows its type."""
    if isinstance(exc, OSError) and exc.filename:
        from cnnlab.errors import os_reason

        files = f"{exc.filename} -> {exc.filename2}" if exc.filename2 else f"{exc.filename}"
        return f"{files}: {os_reason(exc)}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''} (rerun with --debug for the traceback)"


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


def _version(value: bool) -> None:
    """--version: the installed package's version, from its metadata (nothing heavy imported)."""
    if not value:
        return
    from importlib.metadata import PackageNotFoundError, version

    try:
        typer.echo(f"cnnlab {version('cnnlab')}")
    except PackageNotFoundError:  # run from a source tree that was never installed
        typer.echo("cnnlab (not installed: pip install -e .)")
    raise typer.Exit(0)


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks instead of one-line errors."),
          version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print cnnlab's version and exit.")):
    if debug:
        os.environ["CNNLAB_DEBUG"] = "1"


def _compose(overrides):
    from cnnlab.config import compose

    return compose(list(overrides or []))


