"""Transfer strategies: what a model starts from and which of its parameters train.

`scratch` keeps the freshly initialised model; the pretrained sources and freezing strategies
plug in here through `apply`.
"""

from __future__ import annotations

from typing import Any

from cnnlab.errors import UsageError

STRATEGIES = ("scratch",)


def apply(model, cfg: Any):
    """Prepare `model` for strategy `cfg.name`; returns the model to train."""
    if cfg.name not in STRATEGIES:
        raise UsageError(f"unknown transfer strategy '{cfg.name}'; choose from: {', '.join(STRATEGIES)}")
    if cfg.source:
        raise UsageError("transfer=scratch takes no transfer.source")
    return model
