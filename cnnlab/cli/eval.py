"""`cnnlab eval RUN_DIR [OVERRIDES]`: test-time views (centre, ten-crop, multi-scale) of a finished run.

What it scores is the `eval` config group (conf/eval/, cnnlab.config.EvalConfig) composed with
the Hydra overrides given after the run folder; the run's model, data and crop come from its
own config.yaml. The flags are shorthands for the group's keys:

    eval.views    the modes, one table row and one results row each: center | fivecrop |
                  tencrop | multiscale:S1,S2,... (default: center). --fivecrop adds fivecrop
                  (corners and centre, no mirror), --tencrop adds tencrop, --multiscale
                  28,32,40 adds multiscale:28,32,40.
    eval.average  softmax | logits: how views are averaged (--average; default softmax)
    eval.crop     the view side (--crop; default: the run's training input size)
    eval.split    test | val (--split; default test)
    eval.chunk    at most this many views per forward pass (--chunk; default: the
                  run's trainer.eval_batch_size)

    cnnlab eval RUN                                         # the centre view
    cnnlab eval RUN --tencrop --multiscale 28,32,36         # centre, ten crops, three scales
    cnnlab eval RUN 'eval.views=[center,tencrop]'           # the same rows as --tencrop
    cnnlab eval RUN 'eval.views=[center,multiscale:28,32,36]' eval.average=logits
    cnnlab eval RUN eval=tencrop                            # preset conf/eval/tencrop.yaml
    cnnlab eval RUN --fivecrop                              # five crops, none mirrored

Ten-crop and multi-scale views include the mirrored image. When the run's aug preset has no flip
op (or flip_p=0) the model never saw mirrored images and those views can cost accuracy (digits:
0.9805 centre, 0.9331 ten-crop); `eval` then prints one warning line on stderr and five-crop is
the same crops without the mirror.

Inside a list Hydra splits multiscale:28,32,36 at its commas; the sizes are joined to their mode
again, so it needs no quotes there. A single mode needs no brackets (eval.views=tencrop), except
multiscale, whose commas would make it a Hydra sweep: write eval.views=[multiscale:28,32].

The crop rule is cnnlab.evaluation.views': the crop is the run's training input size (the whole
image, or aug.crop_size when it trained on random crops), cut from the stored image up to 64 px
and after resizing the shorter side to crop / 0.875 above.

Before it loads anything, it checks that it can append to that table (the folder is writable,
the lock can be taken), so a read-only disk fails at once rather than after the evaluation.

Results rows (outputs/results.csv: $CNNLAB_OUTPUTS or ./outputs, or --outputs): head run_id (the
run folder's name, so a row joins its training row), time, status "eval", eval_mode; the run's
config with the eval group used, its name and views set to the mode (so the `eval` axis pivots);
the metrics prefixed eval_: eval_top1, eval_top5, eval_nll, eval_views, eval_ms_per_image, eval_n,
eval_crop, eval_scales, eval_average, eval_split. They are not named test_acc etc. because they
are not always the training row's numbers: the crop may differ from the training size, and the
split may be val.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from cnnlab.cli.app import app, guarded


EPILOG = ("Overrides set the eval group (conf/eval/): eval.views, a list of modes center | fivecrop | tencrop | "
          "multiscale:S1,S2,... (one row each), eval.average, eval.crop, eval.split, eval.chunk; "
          "the flags are shorthands for them.\n\n"
          # a backslash keeps rich markup from reading [...] as a style tag
          "cnnlab eval RUN 'eval.views=\\[center,tencrop]'   (the same rows as --tencrop)\n\n"
          "cnnlab eval RUN 'eval.views=\\[center,multiscale:28,32,36]' eval.average=logits\n\n"
          "cnnlab eval RUN eval=tencrop   (the preset: ten crops alone)")


@app.command("eval", epilog=EPILOG)
@guarded
def eval_run(
    run_dir: Path = typer.Argument(..., help="A run folder (outputs/runs/<id>)."),
    overrides: Optional[List[str]] = typer.Argument(
        None, help="Hydra overrides of the eval group: eval=PRESET or eval.KEY=VALUE.", show_default=False),
    tencrop: bool = typer.Option(False, "--tencrop", help="Also the ten-crop views (corners, centre, mirrored): adds tencrop to eval.views."),
    fivecrop: bool = typer.Option(False, "--fivecrop", help="Also the five-crop views (corners, centre, no mirror): adds fivecrop to eval.views."),
    multiscale: Optional[str] = typer.Option(None, "--multiscale", help="Also ten crops at each of these scales, e.g. 28,32,40: adds multiscale:28,32,40 to eval.views."),
    average: Optional[str] = typer.Option(None, "--average", help="Average views as softmax or logits (eval.average; default softmax)."),
    crop: Optional[int] = typer.Option(None, "--crop", help="View side (eval.crop; default: the run's training input size, aug.crop_size or the image)."),
    split: Optional[str] = typer.Option(None, "--split", help="test or val (eval.split; default test)."),
    chunk: Optional[int] = typer.Option(None, "--chunk", help="At most this many views per forward pass (eval.chunk; default: trainer.eval_batch_size)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N, mps (default: the run's trainer.accelerator)."),
    bench: bool = typer.Option(False, "--bench", help="Only time ten-crop against centre on one batch and print the ratio."),
    outputs: Optional[Path] = typer.Option(None, "--outputs", help="Where results.csv is (default: $CNNLAB_OUTPUTS or ./outputs)."),
):
    """Evaluate a finished run with test-time views; prints a table and appends rows to results.csv."""
    from rich.console import Console

    from cnnlab.evaluation import runs
    from cnnlab.training.device import resolve_device

    ecfg = _eval_config(overrides, tencrop, multiscale, fivecrop=fivecrop, average=average,
                        crop=crop, split=split, chunk=chunk)
    console = Console()
    if bench:
        _print_bench(console, runs.bench_run(run_dir, ecfg, device=device, resolve_device=resolve_device))
    else:
        _print_eval(console, runs.evaluate_run(run_dir, ecfg, device=device,
                                               resolve_device=resolve_device, outputs=outputs))


def _eval_config(overrides: Optional[List[str]], tencrop: bool, multiscale: Optional[str],
                 fivecrop: bool = False, **keys):
    """The eval group composed with its overrides, then the flags: --fivecrop, --tencrop and
    --multiscale add their modes to eval.views, the others set their key."""
    from cnnlab.config import compose
    from cnnlab.errors import UsageError
    from cnnlab.evaluation import views as vw

    overrides = list(overrides or [])
    foreign = [o for o in overrides if o.lstrip("+~").partition("=")[0].split(".")[0] != "eval"]
    if foreign:
        raise UsageError(f"cnnlab eval takes overrides of the eval group (eval=PRESET, "
                         f"eval.KEY=VALUE), not '{foreign[0]}'; the rest comes from the run's config.yaml")
    for o in overrides:  # Hydra reads a bare a,b as a sweep; say what to write instead
        value = o.partition("=")[2]
        if o.startswith("eval.views=") and "," in value and not value.startswith("["):
            raise UsageError(f"write the modes as a list: eval.views=[{value}]")
    ecfg = compose(overrides).eval
    views = vw.parse_views(ecfg.views)
    if fivecrop:
        views.append("fivecrop")
    if tencrop:
        views.append("tencrop")
    if multiscale is not None:
        scales = vw.parse_scales(multiscale)
        if not scales:
            raise UsageError("--multiscale takes comma-separated sizes like 28,32,40")
        views.append("multiscale:" + ",".join(map(str, scales)))
    ecfg.views = list(dict.fromkeys(views))
    for key, value in keys.items():
        if value is not None:
            ecfg[key] = value
    return ecfg


def _print_eval(console, r) -> None:
    """runs.evaluate_run's result: a note, one table row per mode, where the rows went."""
    from rich.table import Table

    from cnnlab.tables import fmt

    if r.note:
        console.print(f"note: {r.note}")
    if r.warning:  # one line on stderr, never wrapped
        typer.echo(f"warning: {r.warning}", err=True)
    table = Table(title=f"eval {r.run_id} ({r.model} on {r.data} {r.split}, crop {r.crop}, "
                        f"{r.average} average)", header_style="bold")
    for col in ("mode", "views/image", "top1", "top5", "nll", "ms/image"):
        table.add_column(col, justify="left" if col == "mode" else "right")
    for m in r.scores.values():
        label = f"multiscale {','.join(map(str, m['scales']))}" if m["mode"] == "multiscale" else m["mode"]
        table.add_row(label, str(m["views"]), fmt(m["top1"]), fmt(m["top5"]), fmt(m["nll"]),
                      f"{m['ms_per_image']:.3f}")
    console.print(table)
    console.print(f"appended {len(r.rows)} row(s) to {r.table}")


def _print_bench(console, b: dict) -> None:
    console.print(f"ten-crop / centre time per image: {b['ratio']:.2f}x (target <= 11x); "
                  f"fastest rounds {b['ratio_min']:.2f}x; centre {b['center_ms']:.3f} ms/image, "
                  f"ten-crop {b['tencrop_ms']:.3f} ms/image "
                  f"({b['model']}, batch {b['batch']}, {b['crop']}x{b['crop']}, {b['device']})")
