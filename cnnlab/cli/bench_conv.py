"""`cnnlab bench-conv`: cnnlab's im2col, FFT and Winograd convolutions against the library
(cnnlab.bench.conv), or with --design the small-filter block designs (cnnlab.bench.design).

Writes into --out (default outputs/bench-conv/<time>/): conv.csv (or design.csv), a markdown
table, a PNG plot, machine.json, and parquet when pyarrow is importable; appends the same rows
to outputs/bench.csv (`cnnlab results --bench`) with run_id bench-conv-<time>, status "bench" and bench_-prefixed metrics.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

from cnnlab.cli.app import app, guarded

SHOW = ["layer", "algo", "precision", "median_ms", "iqr_ms", "gflops", "pct_peak",
        "extra_over_input", "rel_err", "library_rel_err", "speedup_vs_library"]


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


@app.command("bench-conv")
@guarded
def bench_conv(
    suite: str = typer.Option("vgg16", "--suite", help="vgg16, resnet50, alexnet, convnet-benchmarks."),
    algos: Optional[str] = typer.Option(None, "--algos", help="Comma list (default: all available): im2col,fft,winograd2,winograd4,library,nnpack."),
    precision: str = typer.Option("fp32", "--precision", help="Comma list of fp64, fp32, fp16, bf16."),
    batch: int = typer.Option(8, "--batch", help="Batch size N of the suite's layers."),
    shape: Optional[List[str]] = typer.Option(None, "--shape", help="N,C,H,W,K,R,S,stride,pad (repeatable); replaces --suite."),
    design: bool = typer.Option(False, "--design", help="Compare block designs (7x7 vs 3x(3x3), bottleneck, 1xN+Nx1, depthwise-separable, inception)."),
    quick: bool = typer.Option(False, "--quick", help="Maps 4x smaller per side, batch <= 2, 3 repeats: a smoke run."),
    backward: bool = typer.Option(False, "--backward", help="Time forward + backward through autograd."),
    repeats: int = typer.Option(5, "--repeats", help="Timed calls per algorithm and layer (after warm-up)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch intra-op threads (default: torch's)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default outputs/bench-conv/<time>/)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto (cuda when a GPU is present): where the algorithms run; on cuda `library` is cuDNN."),
):
    """Time, GFLOP/s, extra memory and error of conv algorithms per layer, or --design blocks."""
    from cnnlab.bench import suites
    from cnnlab.errors import UsageError

    # argument errors before torch is imported: a quick one-line exit 2
    for s in shape or []:
        suites.parse_shape(s)
    if not shape and suite not in suites.SUITES:
        raise UsageError(f"unknown suite '{suite}'; suites: {', '.join(suites.SUITES)}")
    if repeats < 1 or batch < 1 or (threads is not None and threads < 1):
        raise UsageError("--repeats, --batch and --threads must be at least 1")

    import torch
    from rich.console import Console

    from cnnlab import results
    from cnnlab.run import ensure_writable

    from cnnlab.training.device import resolve_device

    dev = resolve_device(device, what="--device")  # an unknown or absent device: one line
    if threads:
        torch.set_num_threads(threads)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    from cnnlab.run import outputs_dir

    outputs = outputs_dir()
    folder = ensure_writable(Path(out) if out else outputs / "bench-conv" / stamp)
    console = Console(width=None if sys.stdout.isatty() else 200)
    head = {"run_id": f"bench-conv-{stamp}", "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            "status": "bench"}
    if design:
        df = _design(console, folder, repeats=min(repeats, 5) if quick else repeats, quick=quick)
        metric_rows = [{"bench_comparison": r.comparison, "bench_design": r.design,
                        **{f"bench_{k}": getattr(r, k) for k in
                           ("params", "macs", "receptive_field", "median_ms", "params_ratio",
                            "macs_ratio", "ms_ratio")}} for r in df.itertuples()]
    else:
        df = _conv(console, folder, suite, algos, precision, batch, shape, quick, backward, repeats,
                   str(dev))
        metric_rows = [{"bench_suite": r["suite"], "bench_layer": r["layer"],
                        "bench_algo": r["algo"], "precision": r["precision"],
                        **{f"bench_{k}": r[k] for k in
                           ("N", "C", "H", "W", "K", "R", "S", "stride", "pad", "median_ms",
                            "iqr_ms", "gflops", "pct_peak", "extra_bytes", "extra_over_input",
                            "rel_err", "max_abs_err", "library_rel_err", "speedup_vs_library",
                            "fastest", "supported", "backward")},
                        "threads": torch.get_num_threads()}
                       for r in df.to_dict("records")]
    for m in metric_rows:
        results.append_row(outputs, results.make_row({}, head, m), table=results.BENCH)
    console.print(f"wrote {folder}; appended {len(metric_rows)} row(s) to "
                  f"{results.table_path(outputs, results.BENCH)} (`cnnlab results --bench`)")


def _write(df, folder: Path, stem: str) -> None:
    from cnnlab.tables import markdown_table

    df.to_csv(folder / f"{stem}.csv", index=False)
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        pass
    else:
        df.to_parquet(folder / f"{stem}.parquet")
    (folder / f"{stem}.md").write_text(markdown_table(df), encoding="utf-8")


def _conv(console, folder, suite, algos, precision, batch, shape, quick, backward, repeats,
          device: str = "cpu"):
    from rich.table import Table

    from cnnlab.bench import conv

    t0 = time.perf_counter()
    with console.status("measuring ...") as status:
        df = conv.measure(suite=suite, algos=_split(algos) if algos else None,
                          precisions=tuple(_split(precision)), batch=batch, shapes=shape,
                          repeats=repeats, backward=backward, quick=quick, device=device,
                          progress=lambda s: status.update(f"measuring {s} ..."))
    m, peaks = df.attrs["machine"], df.attrs["peak_gflops"]
    title = (f"bench-conv {df.suite.iloc[0]}{' (quick)' if quick else ''}, "
             f"{'forward+backward' if backward else 'forward'}, "
             + (f"on {m.get('device_name', device)}" if device.startswith("cuda") else
                f"{m['threads']} threads on {m['cpu']} [{m['cpu_flags']}]")
             + f", load {m['load_avg']}; matmul peak "
             + ", ".join(f"{p} {v:.0f} GFLOP/s" for p, v in peaks.items()))
    table = Table(title=title, header_style="bold")
    for col in SHOW + ["note"]:
        table.add_column(col, justify="left" if col in ("layer", "algo", "precision", "note") else "right")
    for r in df.to_dict("records"):
        cells = [_cell(c, r[c]) for c in SHOW]
        table.add_row(*cells, r["reason"], style="bold green" if r.get("fastest") else
                      ("dim" if not r["supported"] else None))
    console.print(table)
    _write(df, folder, "conv")
    (folder / "machine.json").write_text(json.dumps({**m, "peak_gflops": peaks,
                                                      "summary": conv.summary(df)}, indent=2))
    _plot_conv(df, folder / "conv.png")
    s = conv.summary(df)
    if s:
        console.print("targets (fp32): " + "; ".join(f"{k} {v}" for k, v in s.items()))
    console.print(f"{len(df)} rows in {time.perf_counter() - t0:.0f} s; fastest per layer in green; "
                  "unsupported rows dim with the reason")
    return df


def _cell(col: str, v) -> str:
    from cnnlab.tables import fmt

    if isinstance(v, float) and math.isnan(v):
        return "-"
    if col.endswith("_err"):
        return f"{v:.1e}"
    return str(v) if isinstance(v, str) else fmt(v)


def _plot_conv(df, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = df[df.supported]
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * d.layer.nunique() + 3), 4))
    piv = d.pivot_table(index="layer", columns=["algo", "precision"], values="gflops", sort=False)
    piv.plot.bar(ax=ax, logy=True)
    ax.set_ylabel("effective GFLOP/s (direct-equivalent)")
    ax.set_title("bench-conv: higher is faster")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _design(console, folder, repeats: int, quick: bool):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cnnlab.bench import design
    from cnnlab.tables import rich_table

    df = design.compare(batch=2 if quick else 8, channels=32 if quick else 64,
                        size=16 if quick else 32, repeats=repeats)
    table = rich_table(df)
    table.title = "bench-conv --design: params and MACs (per image) without biases; ratios to each comparison's first design"
    console.print(table)
    _write(df, folder, "design")
    fig, ax = plt.subplots(figsize=(9, 4))
    labels = [f"{c}: {d}" for c, d in zip(df.comparison, df.design)]
    ax.barh(labels, df.macs_ratio, label="MACs ratio")
    ax.barh(labels, df.ms_ratio, alpha=0.5, label="time ratio")
    ax.axvline(1, color="k", lw=0.5)
    ax.tick_params(labelsize=7)
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "design.png", dpi=100)
    plt.close(fig)
    return df
