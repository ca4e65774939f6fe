"""Transfer strategies: what a model starts from and which of its parameters train.

    cnnlab train transfer=linear_probe transfer.source=imagenet_lite0 data=digits
    cnnlab train transfer=finetune_all transfer.lr_mult=[1.0,0.1,0.01] transfer.source=outputs/runs/<id>
    cnnlab train transfer=finetune_top transfer.unfreeze=2 transfer.source=torchvision:resnet18.IMAGENET1K_V1

Strategies (conf/transfer/)
- `scratch`: random initialisation. With a source, the source's architecture and input
  adaptation but none of its weights (the fair baseline for C6 and C7).
- `linear_probe`: everything frozen, a new linear head trained on features computed once and
  cached (cnnlab.transfer.probe): multinomial logistic regression, C chosen on validation.
- `finetune_top`: the last `unfreeze` backbone layers and a new head train, the rest is frozen.
- `finetune_all`: everything trains, with per-layer-group learning-rate multipliers
  `lr_mult` (head first; [1.0, 0.1, 0.01] is the lecture's tip).
- `multi_probe`: linear probes on features from several depths; the best on validation wins
  (the lecture's advice for little data from a different domain).

The model of a transfer run is `TransferNet(InputAdapter, source network with a new head)`
(cnnlab.transfer.layers); the source is resolved once (cnnlab.transfer.sources) and written into
the run's config as `transfer.resolved`, with `model` set to the source's architecture, so the
run folder alone rebuilds the network. Frozen normalisation layers stay in eval mode.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

# The strategies and every check of transfer.* that needs no source live with the other config
# checks (compose runs them before any data loads); `check` runs them again for a config built
# by hand.
from cnnlab.config.checks import PROBES, STRATEGIES  # noqa: F401
from cnnlab.config.checks import check_transfer as check  # noqa: F401


def uses_source(cfg: Any) -> bool:
    return bool(cfg.transfer.source)


def resolve(cfg: Any, train_fn: Optional[Callable[..., dict]] = None) -> None:
    """Resolve cfg.transfer.source into cfg.transfer.resolved and set cfg.model to the source's
    architecture (before the run folder and its config.yaml are written). train_fn trains a
    `pretrain` source (the recipe passes its own `train`)."""
    from omegaconf import OmegaConf

    from cnnlab.config import ModelConfig
    from cnnlab.transfer import sources

    check(cfg)
    if not uses_source(cfg) or cfg.transfer.resolved:
        return
    info = sources.resolve(cfg, train_fn)
    cfg.model = OmegaConf.structured(ModelConfig(**info["model"]))
    cfg.transfer.resolved = info


def build(cfg: Any, bundle, load_weights: bool = True):
    """The network for cfg on bundle's data: TransferNet when there is a source (weights loaded
    unless scratch or load_weights=False), with the strategy's layers frozen."""
    from cnnlab import models
    from cnnlab.transfer import layers, sources

    info = dict(cfg.transfer.resolved)
    opts = {k: v for k, v in info["model"].items() if k != "name"}
    net = models.create(info["model"]["name"], num_classes=int(info["num_classes"]),
                        in_chans=int(info["in_chans"]), input_size=tuple(info["input_size"]), **opts)
    if load_weights and cfg.transfer.name != "scratch":
        net.load_state_dict(sources.load_state(info), strict=True)
    layers.replace_head(net, bundle.num_classes)
    size = cfg.transfer.resize or min(info["input_size"])
    adapter = layers.InputAdapter(bundle.mean, bundle.std, info.get("mean"), info.get("std"),
                                  in_chans=bundle.in_chans, source_chans=int(info["in_chans"]),
                                  size=size)
    model = layers.TransferNet(adapter, net)
    parts = layers.units(net)
    name = cfg.transfer.name
    if name in PROBES:
        for _, unit in parts[:-1]:
            layers.freeze(unit)
    elif name == "finetune_top":
        keep = int(cfg.transfer.unfreeze)
        for _, unit in parts[:len(parts) - 1 - keep]:
            layers.freeze(unit)
    probe_layer = info.get("probe_layer")
    if probe_layer and probe_layer != parts[-1][0]:
        from cnnlab.transfer.probe import ProbeNet

        model = ProbeNet(model, probe_layer, bundle.num_classes, dict(parts)[probe_layer],
                         dim=int(info.get("probe_dim") or 0))
    return model


def lr_multipliers(model, cfg: Any) -> dict | None:
    """{id(param): multiplier} for a transfer run's optimizer, None for plain runs."""
    from cnnlab.transfer import layers

    if not uses_source(cfg) or cfg.transfer.name == "scratch" or list(cfg.transfer.lr_mult) in ([], [1.0]):
        return None  # scratch trains every layer at optim.lr
    net = model.net if isinstance(model, layers.TransferNet) else model
    return layers.lr_multipliers(net, cfg.transfer.lr_mult)
