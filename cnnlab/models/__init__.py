"""Model registry: `create(name, num_classes=..., in_chans=..., **opts)`.

A family module decorates one constructor per architecture with `register_model`; the CLI, the
tests and `cnnlab models` iterate the registry, so a new model is one decorated function.
Options a user did not set are not passed, so each family keeps its own defaults.
"""

from __future__ import annotations

from cnnlab.errors import UsageError
from cnnlab.models.registry import MODELS, ModelEntry, register_model  # noqa: F401


def _natural(text: str) -> list:
    """resnet8 < resnet20 < resnet110."""
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


NOT_FAMILIES = {"layers", "profile", "torchvision_weights", "registry", "reference"}


def _load_all() -> None:
    """Import every family module of the package; their decorators fill the registry."""
    import importlib
    import pkgutil

    import cnnlab.models as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name not in NOT_FAMILIES:
            importlib.import_module(f"cnnlab.models.{info.name}")


MODELS.set_loader(_load_all)


def list_models(kind: str | None = None) -> dict[str, ModelEntry]:
    """Registered models, family by family in natural name order; optionally of one kind."""
    entries = sorted((e for _, e in MODELS.items()), key=lambda e: (e.kind != "classifier", e.family, _natural(e.name)))
    return {e.name: e for e in entries if kind is None or e.kind == kind}


def check_options(name: str, opts: dict) -> dict:
    """The options `name` receives (those set, not None); UsageError for unknown names/options."""
    import inspect

    if name not in MODELS:
        raise UsageError(f"unknown model '{name}'; choose from: {', '.join(list_models())}")
    opts = {k: v for k, v in opts.items() if v is not None}
    accepted = inspect.signature(MODELS.get(name).fn).parameters
    unknown = [k for k in opts if k not in accepted]
    if unknown:
        valid = [k for k in accepted if k not in ("num_classes", "in_chans", "input_size")]
        raise UsageError(f"model {name} has no option '{unknown[0]}'; its options: {', '.join(valid)}")
    return opts


def create(name: str, num_classes: int, in_chans: int = 3, input_size=None, **opts):
    """Build architecture `name`; `input_size` (H, W) lets fixed-size families adapt."""
    import inspect

    opts = check_options(name, opts)
    fn = MODELS.get(name).fn
    if "stem" in inspect.signature(fn).parameters and "stem" not in opts and input_size is not None:
        # small inputs (CIFAR, digits, shapes) get the family's small-image stem
        opts["stem"] = "cifar" if max(input_size) < 96 else "imagenet"
    return fn(num_classes=num_classes, in_chans=in_chans, input_size=input_size, **opts)


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())
