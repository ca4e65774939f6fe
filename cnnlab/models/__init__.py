"""Model registry: `create(name, num_classes=..., in_chans=..., **opts)`.

A family module decorates one constructor per architecture with `register_model`; the CLI, the
tests and `cnnlab models` iterate the registry, so a new model is one decorated function.
Options a user did not set are not passed, so each family keeps its own defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from cnnlab.errors import UsageError


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    fn: Callable[..., Any]
    default_input: tuple[int, int, int]  # (C, H, W) the architecture was designed for
    kind: str = "classifier"  # or "block": a building block to inspect, not to train


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, family: str, default_input=(3, 32, 32), kind: str = "classifier"):
    def wrap(fn):
        _REGISTRY[name] = ModelEntry(name, family, fn, tuple(default_input), kind)
        return fn

    return wrap


def _natural(text: str) -> list:
    """resnet8 < resnet20 < resnet110."""
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


NOT_FAMILIES = {"layers", "profile", "torchvision_weights"}


def _load_all() -> None:
    """Import every family module of this package; their decorators fill the registry."""
    import importlib
    import pkgutil

    import cnnlab.models as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name not in NOT_FAMILIES:
            importlib.import_module(f"cnnlab.models.{info.name}")


def list_models(kind: str | None = None) -> dict[str, ModelEntry]:
    """Registered models, family by family in natural name order; optionally of one kind."""
    _load_all()
    entries = sorted(_REGISTRY.values(), key=lambda e: (e.kind != "classifier", e.family, _natural(e.name)))
    return {e.name: e for e in entries if kind is None or e.kind == kind}


def check_options(name: str, opts: dict) -> dict:
    """The options `name` receives (those set, not None); UsageError for unknown names/options."""
    import inspect

    _load_all()
    if name not in _REGISTRY:
        raise UsageError(f"unknown model '{name}'; choose from: {', '.join(list_models())}")
    opts = {k: v for k, v in opts.items() if v is not None}
    accepted = inspect.signature(_REGISTRY[name].fn).parameters
    unknown = [k for k in opts if k not in accepted]
    if unknown:
        valid = [k for k in accepted if k not in ("num_classes", "in_chans", "input_size")]
        raise UsageError(f"model {name} has no option '{unknown[0]}'; its options: {', '.join(valid)}")
    return opts


def create(name: str, num_classes: int, in_chans: int = 3, input_size=None, **opts):
    """Build architecture `name`; `input_size` (H, W) lets fixed-size families adapt."""
    import inspect

    opts = check_options(name, opts)
    fn = _REGISTRY[name].fn
    if "stem" in inspect.signature(fn).parameters and "stem" not in opts and input_size is not None:
        # small inputs (CIFAR, digits, shapes) get the family's small-image stem
        opts["stem"] = "cifar" if max(input_size) < 96 else "imagenet"
    return fn(num_classes=num_classes, in_chans=in_chans, input_size=input_size, **opts)


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())
