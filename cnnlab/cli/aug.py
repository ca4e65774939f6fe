"""`cnnlab aug`: look at a preset (a PNG grid) and measure its speed."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from cnnlab.cli.app import OVERRIDES, _compose, _groups_help, app, guarded

aug_app = typer.Typer(no_args_is_help=True, help="Augmentation presets: preview and benchmark.")
app.add_typer(aug_app, name="aug")


@aug_app.command("preview", epilog=_groups_help())
@guarded
def preview(overrides: Optional[List[str]] = OVERRIDES,
            images: int = typer.Option(8, "--images", help="Training images, one per row."),
            copies: int = typer.Option(6, "--copies", help="Augmented copies beside each original."),
            out: Optional[Path] = typer.Option(None, "--out", help="PNG path (default: outputs/aug-<preset>-<data>.png).")):
    """Write a PNG grid: each training image (rows labelled with its class), then augmented copies
    of it (columns labelled original, copy 1, ...); prints the path."""
    from cnnlab.errors import UsageError
    from cnnlab.run import ensure_writable

    if images < 1 or copies < 1:
        raise UsageError("--images and --copies must be at least 1")
    cfg = _compose(overrides)
    fig, n = preview_figure(cfg, images, copies)
    path = out or ensure_writable(Path(cfg.outputs)) / f"aug-{cfg.aug.name}-{cfg.data.name}.png"
    fig.savefig(str(path), bbox_inches="tight", pad_inches=0.05)
    typer.echo(f"{path}  (rows: {n} training images; first column original, then {copies} "
               f"copies with aug={cfg.aug.name}: {', '.join(cfg.aug.ops) or 'no ops'})")


def preview_figure(cfg, images: int, copies: int):
    """(matplotlib Figure, rows) of `cnnlab aug preview` for a composed config: its data's first
    training images and draws of its aug preset (cnnlab.data.preview.preview_figure)."""
    from cnnlab import data
    from cnnlab.data import augment
    from cnnlab.data.preview import preview_figure as figure

    bundle = data.create(cfg.data)
    split = bundle.train
    aug = augment.create(cfg.aug, train_images=split.images if split.in_memory else split.dataset)
    return figure(bundle, aug, cfg.aug, cfg.data.name, images, copies, seed=cfg.seed)


@aug_app.command("bench", epilog=_groups_help())
@guarded
def bench(overrides: Optional[List[str]] = OVERRIDES,
          batch: int = typer.Option(256, "--batch"), size: int = typer.Option(32, "--size"),
          threads: int = typer.Option(0, "--threads", help="torch CPU threads (0: torch's default)."),
          rounds: int = typer.Option(7, "--rounds", help="Interleaved rounds (medians over them).")):
    """Images/s of a preset on batches (default aug=alexnet), side by side with a fair baseline
    (the same per-sample random ops on the whole batch with plain tensor ops) and with
    torchvision.transforms.v2 one image at a time; prints cnnlab / fair and cnnlab / per-image v2
    and appends one row per pipeline to outputs/bench.csv."""
    import time

    from cnnlab.errors import UsageError

    if batch < 1 or size < 1 or threads < 0 or rounds < 1:
        raise UsageError("--batch, --size and --rounds must be at least 1, --threads at least 0")
    from omegaconf import OmegaConf

    from cnnlab import results
    from cnnlab.bench import aug as aug_bench
    from cnnlab.machine import cpu_name, device_name
    from cnnlab.run import outputs_dir

    # the batches are RGB size x size: compose checks the preset (pca, crop_size) against that
    cfg = _compose(["data=shapes", f"data.image_size={size}", "aug=alexnet", *(overrides or [])])
    outputs = outputs_dir(cfg.outputs)
    results.check_writable(outputs, table=results.BENCH)
    r = aug_bench.measure(cfg.aug, batch=batch, size=size, threads=threads or None, rounds=rounds)
    typer.echo(f"aug={cfg.aug.name} ({', '.join(cfg.aug.ops) or 'no ops'}), batch {batch} of "
               f"3x{size}x{size}, {r.threads} thread(s), {cpu_name()}; medians of {rounds} "
               f"interleaved rounds:")
    labels = {"cnnlab": "cnnlab (batched preset)",
              "fair": "fair baseline (same ops on the batch, plain tensor ops)",
              "per-image v2": f"torchvision v2 one image at a time ({r.v2_ops})"}
    for name in r.rounds:
        typer.echo(f"  {labels[name]}: {r.rate(name):,.0f} img/s")
    ratios = {}
    if "cnnlab" in r.rounds:
        for other in ("fair", "per-image v2"):
            ratios[other] = r.ratio("cnnlab", other) if other in r.rounds else None
        shown = [f"cnnlab / {k}: {v:.2f}x" if v is not None else f"cnnlab / {k}: n/a"
                 for k, v in ratios.items()]
        typer.echo("  ".join(shown) + " (medians of per-round ratios)")
    if not r.rounds:
        typer.echo("  nothing to measure: the preset has no ops")
    if r.left_out:
        typer.echo(f"no fair baseline or per-image v2 for ops {', '.join(r.left_out)}: both cover "
                   f"{', '.join(aug_bench.FAIR_OPS)} only")

    head = {"run_id": f"aug-bench-{time.strftime('%Y%m%d-%H%M%S')}",
            "time": time.strftime("%Y-%m-%d %H:%M:%S"), "status": "bench"}
    cfg_dict = {"aug": OmegaConf.to_container(cfg.aug, resolve=True)}
    for name in r.rounds:
        metrics = {"bench_pipeline": name, "bench_images_per_sec": r.rate(name),
                   "bench_cnnlab_ratio": r.ratio("cnnlab", name) if "cnnlab" in r.rounds else None,
                   "bench_batch": batch, "bench_size": size, "bench_rounds": rounds,
                   "threads": r.threads, "device": "cpu", "device_name": device_name("cpu")}
        results.append_row(outputs, results.make_row(cfg_dict, head, metrics), table=results.BENCH)
    typer.echo(f"appended {len(r.rounds)} row(s) to {results.table_path(outputs, results.BENCH)} "
               f"(`cnnlab results --bench`)")
