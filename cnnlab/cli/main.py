"""The `cnnlab` entry point: importing the command modules registers their commands on the app
(cnnlab.cli.app), in the order `cnnlab --help` lists them; no command module imports this one."""

from __future__ import annotations

import os
import sys

from cnnlab.cli import train, results, data  # noqa: F401  (order: as `cnnlab --help` lists them)
from cnnlab.cli import aug, eval, models, sweep, experiments, bench, bench_conv, run  # noqa: F401
from cnnlab.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    # --debug may stand anywhere on the line; take it out before Typer parses the rest.
    if "--debug" in sys.argv[1:]:
        sys.argv = [sys.argv[0]] + [a for a in sys.argv[1:] if a != "--debug"]
        os.environ["CNNLAB_DEBUG"] = "1"
    sys.argv = [sys.argv[0]] + train.normalize_argv(sys.argv[1:])
    app()


if __name__ == "__main__":
    main()
