"""`cnnlab data`: list, info, fetch, bench and verify datasets."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from cnnlab.cli.app import OVERRIDES, _compose, _groups_help, data_app, guarded


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
    if b.info.get("source"):
        typer.echo(f"source: {b.info['source']}")


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
