"""`cnnlab bench-train`: a training step's phases, cnnlab's data path against a no-data ceiling
and, with --vs-dataloader, against a torch DataLoader with per-image torchvision transforms.

Prints one table row per pipeline and appends the same rows to outputs/bench.csv (`cnnlab results --bench`) with head
run_id bench-train-<time>, status "bench" and bench_pipeline (cnnlab, ceiling, dataloader); the
metrics are prefixed bench_ (see cnnlab.bench.train.metric_rows).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

from cnnlab.cli.app import OVERRIDES, _compose, _groups_help, app, guarded

LABELS = {"cnnlab": "cnnlab (loader + aug + step)", "ceiling": "ceiling (fixed batch)",
          "dataloader": "DataLoader + v2 transforms", "ceiling_nchw": "ceiling, NCHW",
          "ceiling_nhwc": "ceiling, NHWC (channels_last)"}


@app.command("bench-train", epilog=_groups_help())
@guarded
def bench_train(
    overrides: Optional[List[str]] = OVERRIDES,
    steps: int = typer.Option(60, "--steps", help="Measured steps per pipeline, split over the rounds."),
    warmup: int = typer.Option(5, "--warmup", help="Unmeasured steps per pipeline at the start of each round."),
    repeats: int = typer.Option(3, "--repeats", help="Rounds; DataLoader blocks alternate with the in-process pipelines."),
    vs_dataloader: bool = typer.Option(False, "--vs-dataloader", help="Also a torch DataLoader with per-image torchvision v2 transforms."),
    workers: int = typer.Option(2, "--workers", help="DataLoader worker processes (--vs-dataloader)."),
    vs_memory_format: bool = typer.Option(False, "--vs-memory-format", help="Also the ceiling in the other memory order (NCHW vs channels_last), in lock step."),
    outputs: Optional[Path] = typer.Option(None, "--outputs", help="Where bench.csv is (default: the config's outputs, $CNNLAB_OUTPUTS or ./outputs)."),
):
    """Training images/s of cnnlab's data path + step, its no-data ceiling and step phases."""
    from cnnlab.bench import train as bench

    bench.check_args(steps, warmup, repeats, workers)  # before Hydra and torch: a quick error
    conf = _compose(overrides)

    from omegaconf import OmegaConf
    from rich.console import Console
    from rich.table import Table

    from cnnlab import results
    from cnnlab.run import ensure_writable

    folder = ensure_writable(Path(outputs or conf.outputs))
    console = Console(width=None if sys.stdout.isatty() else 200)  # piped: not cut to 80
    console.print(f"{steps} measured steps per pipeline in {min(repeats, steps)} round(s), "
                  f"after {warmup} warm-up steps each ...")
    r = bench.run(conf, steps=steps, warmup=warmup, repeats=repeats, vs_dataloader=vs_dataloader,
                  workers=workers, vs_memory_format=vs_memory_format)

    has_dl = "dataloader" in r.steps
    title = (f"bench-train {conf.model.name} on {conf.data.name} (aug {conf.aug.name}), batch "
             f"{r.batch_size}, {r.precision}, {r.device}, {r.threads} threads"
             f"{', channels_last' if r.channels_last else ''}: ms per step")
    table = Table(title=title, header_style="bold")
    for col in ("pipeline", "img/s", "step ms", *bench.PHASES, "vs ceiling",
                *(["vs DataLoader"] if has_dl else [])):
        table.add_column(col, justify="left" if col == "pipeline" else "right")
    for name in r.training:
        s = r.steps[name]
        table.add_row(LABELS[name], f"{s.images_per_sec():,.0f}", f"{s.ms():.2f}",
                      *(f"{s.ms(p):.2f}" for p in bench.PHASES),
                      f"{r.ratio(name, 'ceiling'):.2f}x",
                      *([f"{r.ratio(name, 'dataloader'):.2f}x"] if has_dl else []))
    console.print(table)

    def spread(a, b):
        values = r.round_ratios(a, b)
        return f"per round {min(values):.2f}-{max(values):.2f}" if len(values) > 1 else "one round"

    ceiling = r.ratio("cnnlab", "ceiling")
    console.print(f"cnnlab end to end is {ceiling:.2f}x the ceiling ({spread('cnnlab', 'ceiling')}): "
                  f"its data path takes about {max(0.0, 1 - ceiling):.0%} of the training time")
    if has_dl:
        console.print(f"cnnlab / DataLoader ({r.workers} workers): {r.ratio('cnnlab', 'dataloader'):.2f}x "
                      f"({spread('cnnlab', 'dataloader')}); DataLoader per image: "
                      f"{', '.join(r.transforms)}")
        if r.left_out:
            console.print(f"left out of the DataLoader pipeline (no torchvision equivalent): "
                          f"{', '.join(r.left_out)}")
    other = bench.OTHER_FORMAT[r.channels_last]
    if other in r.steps:
        nhwc, nchw = ("ceiling", other) if r.channels_last else (other, "ceiling")
        console.print(f"channels_last / NCHW, same step on the same batch: {r.ratio(nhwc, nchw):.2f}x "
                      f"({spread(nhwc, nchw)})")
    console.print(f"inference: {r.steps['inference'].images_per_sec():,.0f} img/s (batch {r.batch_size}, "
                  "eval mode, inference_mode)")
    mem = "process peak RSS" if r.device == "cpu" else "peak allocated"
    console.print(f"model: {r.params:,} params, {r.gflops_per_image:.4g} GFLOPs/image (2 x MACs); "
                  f"cnnlab trains at about {r.train_gflops_per_sec('cnnlab'):.3g} GFLOP/s "
                  f"(3 x forward FLOPs); {mem} {r.peak_mem_mb:,.0f} MB")
    console.print(f"{', '.join(r.lockstep)} ran in lock step; figures are means over the middle "
                  "half of the steps. On a shared machine compare ratios, not absolute figures.")

    cfg_dict = OmegaConf.to_container(conf, resolve=True)
    head = {"run_id": f"bench-train-{time.strftime('%Y%m%d-%H%M%S')}",
            "time": time.strftime("%Y-%m-%d %H:%M:%S"), "status": "bench"}
    pairs = bench.metric_rows(r)
    for name, metrics in pairs:
        results.append_row(folder, results.make_row(cfg_dict, {**head, "bench_pipeline": name}, metrics),
                           table=results.BENCH)
    console.print(f"appended {len(pairs)} row(s) to {results.table_path(folder, results.BENCH)} "
                  f"(`cnnlab results --bench`)")
