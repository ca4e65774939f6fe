"""`cnnlab data verify PATH`: what in an image folder cannot be decoded."""

from __future__ import annotations

from pathlib import Path

import typer

from cnnlab.cli import data_app, guarded


@data_app.command("verify")
@guarded
def data_verify(path: Path = typer.Argument(..., help="An image folder (class sub-folders, or train/ val/ test/ of them)."),
                workers: int = typer.Option(4, "--workers", help="Decoding threads.")):
    """Fully decode every image; list zero-byte, truncated, corrupt and non-image files and
    empty class folders. Exit code 1 when anything is wrong."""
    from collections import Counter

    from cnnlab.data.verify import verify_folder

    report = verify_folder(path, workers)
    for problem in report.problems:
        typer.echo(problem.line())
    counts = Counter(p.kind for p in report.problems)
    typer.echo(f"{report.root}: {report.images} image file(s) in {report.classes} class folder(s); "
               + (", ".join(f"{n} {k}" for k, n in sorted(counts.items())) if counts else "all decode"))
    if not report.ok:
        raise typer.Exit(1)
