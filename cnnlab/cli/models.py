"""`cnnlab models`: the architecture registry, listed or shown layer by layer."""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

from cnnlab.cli.app import app, guarded
from cnnlab.tables import rich_table

models_app = typer.Typer(help="Architectures: list them, or show one layer by layer.")
app.add_typer(models_app, name="models")


@models_app.callback(invoke_without_command=True)
def models(ctx: typer.Context,
           fmt_: str = typer.Option("table", "--format", help="table or csv.")):
    """Every registered architecture: family, default input, parameters and MACs per image."""
    if ctx.invoked_subcommand is None:
        guarded(_list_models)(fmt_)


def _list_models(fmt_: str) -> None:
    import pandas as pd
    import torch

    from cnnlab import models as registry
    from cnnlab.models.profile import profile

    rows = []
    for name, entry in registry.list_models().items():
        c, h, w = entry.default_input
        with torch.device("meta"):
            model = registry.create(name, num_classes=1000 if h >= 96 else 10, in_chans=c, input_size=(h, w))
        p = profile(model, entry.default_input)
        rows.append({"model": name, "family": entry.family, "input": f"{c}x{h}x{w}",
                     "classes": (1000 if h >= 96 else 10) if entry.kind == "classifier" else "-",
                     "params": p.total_params, "MACs": p.total_macs})
    _emit(pd.DataFrame(rows), fmt_)


def _emit(df, fmt_: str) -> None:
    from rich.console import Console

    from cnnlab.errors import UsageError

    if fmt_ == "csv":
        typer.echo(df.to_csv(index=False), nl=False)
    elif fmt_ == "table":
        Console(width=None if sys.stdout.isatty() else 200).print(rich_table(df))
    else:
        raise UsageError(f"--format takes table or csv, not '{fmt_}'")


@models_app.command("show")
@guarded
def models_show(
    name: str = typer.Argument(..., help="A registered model name (see `cnnlab models`)."),
    options: Optional[List[str]] = typer.Argument(None, help="Model options as key=value (e.g. norm=gn groups=2).", show_default=False),
    input_: Optional[str] = typer.Option(None, "--input", help="CxHxW (default: the architecture's own input)."),
    classes: int = typer.Option(1000, "--classes", help="Output classes."),
    fmt_: str = typer.Option("table", "--format", help="table or csv."),
):
    """Per layer: output shape, parameters, MACs, receptive field and jump, shares of the totals."""
    import pandas as pd
    import torch
    import yaml

    from cnnlab import models as registry
    from cnnlab.errors import UsageError
    from cnnlab.models.profile import parse_input, profile

    entries = registry.list_models()
    if name not in entries:
        raise UsageError(f"unknown model '{name}'; choose from: {', '.join(entries)}")
    shape = parse_input(input_) if input_ else entries[name].default_input
    opts = {}
    for item in options or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"model options are key=value, got '{item}'")
        opts[key] = yaml.safe_load(value)
    with torch.device("meta"):
        model = registry.create(name, num_classes=classes, in_chans=shape[0], input_size=shape[1:], **opts)
    try:
        p = profile(model, shape)
    except RuntimeError as exc:
        raise UsageError(f"{name} cannot take a {'x'.join(map(str, shape))} input: "
                         f"{str(exc).splitlines()[0]}") from exc
    layers = pd.DataFrame(p.rows)[["layer", "type", "output", "params", "macs", "rf", "jump",
                                   "params_share", "macs_share"]]
    kinds = pd.DataFrame(p.by_kind())
    if fmt_ != "csv":  # shares as percentages on screen; csv keeps the fractions
        for df in (layers, kinds):
            for col in ("params_share", "macs_share"):
                df[col.replace("_share", " %")] = (df.pop(col) * 100).map(lambda v: f"{v:.2f}")
    if fmt_ == "csv":
        _emit(layers, fmt_)
        return
    _emit(layers, fmt_)
    _emit(kinds, fmt_)
    typer.echo(f"{name} at {'x'.join(map(str, shape))}: {p.total_params:,} parameters, "
               f"{p.total_macs:,} MACs per image ({p.total_macs / 1e9:.3f} GMACs)")
