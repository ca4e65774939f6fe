"""`cnnlab resume RUN_DIR` and `cnnlab export RUN`: continue a run, share its weights."""

from __future__ import annotations

from pathlib import Path

import typer

from cnnlab.cli.app import app, guarded
from cnnlab.cli.train import _print_summary


@app.command()
@guarded
def resume(run_dir: Path = typer.Argument(..., help="The run folder (outputs/runs/<id>) to continue.")):
    """Continue an interrupted run from its checkpoints/last.pt, in the same folder."""
    from rich.console import Console

    from cnnlab import checkpoint, threads
    from cnnlab.config import load_config, validate
    from cnnlab.errors import UsageError
    from cnnlab.training.recipe import train as run_train

    threads.prepare()  # before torch is imported: OpenMP reads its wait policy once
    if not (run_dir / "config.yaml").is_file():
        raise UsageError(f"{run_dir} is not a run folder (no config.yaml)")
    if not _lost_its_row(run_dir):  # such a run only appends its row: no checkpoint needed
        if not (run_dir / "checkpoints" / "last.pt").is_file():
            raise UsageError(f"{run_dir} has no checkpoints/last.pt to resume from")
        checkpoint.check_file(run_dir / "checkpoints" / "last.pt")  # an empty or cut file: before the data loads
    cfg = load_config(run_dir / "config.yaml")  # renamed keys of an earlier version migrated
    cfg.resume = str(run_dir)
    validate(cfg)
    console = Console()
    summary = run_train(cfg, console=console)
    _print_summary(console, summary)
    if summary["status"] == "diverged":
        raise typer.Exit(3)


@app.command()
@guarded
def export(run: Path = typer.Argument(..., help="A run folder or one of its checkpoints."),
           format: str = typer.Option("safetensors", "--format", "-f", help="safetensors or onnx"),
           which: str = typer.Option("best", "--which", help="best (else last) or last weights."),
           out: Path = typer.Option(None, "--out", "-o", help="Output file (default: <run>/checkpoints/model.safetensors or model.onnx).")):
    """Write a run's weights as safetensors (tensors only, safe to share and to load) or its
    network as ONNX (for onnxruntime; needs the onnx extra)."""
    from cnnlab import export as ex

    rebuild = None
    if format == "onnx":
        from cnnlab.evaluation.runs import model_for_export as rebuild
    path = ex.export(run, format, which, out, rebuild=rebuild)
    if format == "onnx":
        typer.echo(f"wrote {path} (ONNX opset {ex.ONNX_OPSET}, dynamic batch axis)")
    else:
        typer.echo(f"wrote {path}")


def _lost_its_row(run_dir: Path) -> bool:
    """A finished run whose summary says its results row is still to be appended."""
    import json

    try:
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return summary.get("status") in ("done", "diverged") and summary.get("recorded") is False
