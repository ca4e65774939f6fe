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
    steps: Optional[int] = typer.Option(None, "--steps", help="Measured steps per pipeline, split over the rounds (default 96: four runs of the loader's 8-batch chunks in each of 3 rounds; --vs-threads: 30 per measurement; --vs-precision: 32 per variant and round)."),
    warmup: int = typer.Option(5, "--warmup", help="Unmeasured steps per pipeline at the start of each round."),
    repeats: Optional[int] = typer.Option(None, "--repeats", help="Rounds; DataLoader blocks alternate with the in-process pipelines (default 3; --vs-threads: 2)."),
    vs_dataloader: bool = typer.Option(False, "--vs-dataloader", help="Also a torch DataLoader with per-image torchvision v2 transforms."),
    workers: int = typer.Option(2, "--workers", help="DataLoader worker processes (--vs-dataloader)."),
    vs_memory_format: bool = typer.Option(False, "--vs-memory-format", help="Also the ceiling in the other memory order (NCHW vs channels_last), in lock step."),
    vs_threads: bool = typer.Option(False, "--vs-threads", help="Instead: the job's training rate with trainer.threads=auto and with 1, 2, 4, ... threads, quiet and under a load this command starts (cnnlab.bench.threads)."),
    load: Optional[int] = typer.Option(None, "--load", help="--vs-threads: busy processes in the loaded condition (default: one per usable CPU)."),
    vs_precision: bool = typer.Option(False, "--vs-precision", help="Instead: the job's rate in fp32, bf16_mixed and bf16_pure, each channels_last and NCHW, rounds interleaved (cnnlab.bench.precision)."),
    outputs: Optional[Path] = typer.Option(None, "--outputs", help="Where bench.csv is (default: the config's outputs, $CNNLAB_OUTPUTS or ./outputs)."),
):
    """Training images/s of cnnlab's data path + step, its no-data ceiling and step phases."""
    from cnnlab.bench import train as bench

    if vs_threads and vs_precision:
        from cnnlab.errors import UsageError

        raise UsageError("--vs-threads and --vs-precision are two benchmarks; run one at a time")
    if vs_precision:
        _bench_precision(list(overrides or []), 32 if steps is None else steps, warmup,
                         3 if repeats is None else repeats, outputs)
        return
    if vs_threads:
        _bench_threads(list(overrides or []), 30 if steps is None else steps, warmup,
                       2 if repeats is None else repeats, load, outputs)
        return
    steps, repeats = 96 if steps is None else steps, 3 if repeats is None else repeats
    bench.check_args(steps, warmup, repeats, workers)  # before Hydra and torch: a quick error
    from cnnlab import threads

    threads.prepare()  # before torch is imported, as `cnnlab train` does
    conf = _compose(overrides)

    from rich.console import Console
    from rich.table import Table

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
    block = r.steps["cnnlab"].block
    if block > 1 and steps // r.rounds < 4 * block:
        console.print(f"note: {steps} steps in {r.rounds} round(s) make fewer than four runs of the "
                      f"loader's {block}-batch chunks a round, so no slow spell was left out; "
                      f"--steps {4 * block * r.rounds} or more lets each round drop its slowest "
                      "and fastest runs")
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

    _append_rows(console, folder, conf, "bench-train",
                  [({"bench_pipeline": name}, metrics) for name, metrics in bench.metric_rows(r)])


def _bench_threads(overrides: list[str], steps: int, warmup: int, repeats: int, load: Optional[int],
                   outputs: Optional[Path]) -> None:
    """bench-train --vs-threads: auto against every thread count, quiet and loaded."""
    from cnnlab.bench import threads as bench

    from cnnlab.errors import UsageError

    bench.check_args(steps, warmup, repeats, load)
    if any(o.lstrip("+~").startswith("trainer.threads=") for o in overrides):
        raise UsageError("--vs-threads sets trainer.threads itself (auto and each count); drop the override")
    conf = _compose(overrides)  # bad overrides fail here, before any process starts

    from rich.console import Console
    from rich.table import Table

    from cnnlab.run import ensure_writable

    folder = ensure_writable(Path(outputs or conf.outputs))
    console = Console(width=None if sys.stdout.isatty() else 200)
    console.print(f"{steps} steps per measurement after {warmup} warm-up, {repeats} round(s), each a "
                  "fresh process started as `cnnlab train` starts ...")
    r = bench.run(overrides, steps=steps, warmup=warmup, repeats=repeats, load=load,
                  echo=lambda line: console.print(line, markup=False))
    table = Table(title=f"bench-train --vs-threads {conf.model.name} on {conf.data.name}, batch "
                        f"{conf.trainer.batch_size}, {r.cpu}: images/s (median of {repeats})",
                  header_style="bold")
    for col in ("condition", "trainer.threads", "threads", "img/s", "vs best"):
        table.add_column(col, justify="left" if col in ("condition", "trainer.threads") else "right")
    for condition in bench.CONDITIONS:
        for setting in r.settings:
            if (condition, setting) in r.rates:
                rate, best = r.rate(condition, setting), r.rate(condition, r.best(condition))
                table.add_row(condition if condition == "quiet" else f"loaded ({r.load} busy)", setting,
                              str(r.threads[(condition, setting)]), f"{rate:,.0f}", f"{rate / best:.2f}x")
    console.print(table)
    for condition in bench.CONDITIONS:
        ok = "meets" if r.ratio(condition) >= bench.TARGET else "MISSES"
        console.print(f"{condition}: default (auto) / best (threads={r.best(condition)}) = "
                      f"{r.ratio(condition):.2f}x ({ok} the target {bench.TARGET}); auto chose "
                      f"{r.why.get(condition, '?')}", soft_wrap=True, markup=False)
    _append_rows(console, folder, conf, "bench-threads", bench.rows(r))


def _bench_precision(overrides: list[str], steps: int, warmup: int, repeats: int,
                     outputs: Optional[Path]) -> None:
    """bench-train --vs-precision: fp32 against bf16, channels_last and NCHW, side by side."""
    from cnnlab.bench import precision as bench
    from cnnlab.bench.train import check_args

    check_args(steps, warmup, repeats, 0)
    bench.check_overrides(overrides)
    from cnnlab import threads

    threads.prepare()
    conf = _compose(overrides)

    from rich.console import Console
    from rich.table import Table

    from cnnlab.run import ensure_writable

    folder = ensure_writable(Path(outputs or conf.outputs))
    console = Console(width=None if sys.stdout.isatty() else 200)
    console.print(f"{steps} steps per variant and round after {warmup} warm-up, {repeats} round(s) ...")
    r = bench.run(overrides, steps=steps, warmup=warmup, repeats=repeats,
                  echo=lambda line: console.print(line, markup=False))
    import torch

    table = Table(title=f"bench-train --vs-precision {conf.model.name} on {conf.data.name}, batch "
                        f"{conf.trainer.batch_size}, {torch.get_num_threads()} thread(s), {r.cpu}: "
                        f"end-to-end images/s (median of {repeats})", header_style="bold")
    for col in ("variant", "img/s", "vs fp32"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for v in r.variants:
        table.add_row(v, f"{r.rate(v):,.0f}", f"{r.ratio(v):.2f}x")
    console.print(table)
    console.print(f"bf16_mixed / fp32 = {r.ratio('bf16_mixed'):.2f}x, bf16_pure / fp32 = "
                  f"{r.ratio('bf16_pure'):.2f}x, channels_last / NCHW (fp32) = "
                  f"{r.rate('fp32') / r.rate('fp32, NCHW'):.2f}x on {r.cpu}", soft_wrap=True, markup=False)
    _append_rows(console, folder, conf, "bench-precision", bench.rows(r))


def _append_rows(console, folder: Path, conf, prefix: str, pairs: list) -> None:
    """One bench.csv row per (head extras, metrics) pair, under one run id <prefix>-<time>."""
    from omegaconf import OmegaConf

    from cnnlab import results

    cfg_dict = OmegaConf.to_container(conf, resolve=True)
    head = {"run_id": f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}",
            "time": time.strftime("%Y-%m-%d %H:%M:%S"), "status": "bench"}
    for extra, metrics in pairs:
        results.append_row(folder, results.make_row(cfg_dict, {**head, **extra}, metrics), table=results.BENCH)
    console.print(f"appended {len(pairs)} row(s) to {results.table_path(folder, results.BENCH)} "
                  "(`cnnlab results --bench`)")
