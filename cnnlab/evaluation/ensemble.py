"""Ensembles of finished runs: average the members' softmax on the test set (C17).

A run folder holds everything needed to rebuild its model: config.yaml (data, model) and
checkpoints/best.pt (the weights, loaded with weights_only=True).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnnlab.errors import CnnlabError


def load_run(run_dir: str | Path, device: Any = "cpu"):
    """(config, model with the run's best weights, data bundle) of a finished run folder."""
    from omegaconf import OmegaConf

    from cnnlab import checkpoint, data, models
    from cnnlab.data import augment
    from cnnlab.config import Config

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise CnnlabError(f"{run_dir} is not a run folder (no config.yaml)")
    cfg = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(run_dir / "config.yaml"))
    bundle = data.create(cfg.data)
    if cfg.transfer.resolved:  # a transfer run: the source's network behind an input adapter
        from cnnlab import transfer

        model = transfer.build(cfg, bundle, load_weights=False)
    else:
        opts = {k: v for k, v in cfg.model.items() if k != "name"}
        model = models.create(cfg.model.name, num_classes=bundle.num_classes, in_chans=bundle.in_chans,
                              input_size=augment.input_size(cfg.aug, bundle.image_size), **opts)
    found = [run_dir / "checkpoints" / n for n in ("best.pt", "last.pt", "model.safetensors")
             if (run_dir / "checkpoints" / n).is_file()]  # the last: weights from `cnnlab export`
    model.load_state_dict(checkpoint.load(found[0] if found else run_dir / "checkpoints" / "last.pt")["model"])
    return cfg, model.to(device).eval(), bundle


def test_probabilities(run_dir: str | Path, device: Any = "cpu"):
    """Softmax over the test split of a run's best weights: (probabilities (N, C), labels (N,))."""
    import torch

    from cnnlab.data.loader import make_loader

    cfg, model, bundle = load_run(run_dir, device)
    loader = make_loader(bundle.test, cfg.trainer.eval_batch_size, train=False, bundle=bundle,
                         device=device, seed=0, workers=cfg.data.workers)
    probs, labels = [], []
    with torch.no_grad():
        for x, y in loader:
            probs.append(model(x).float().softmax(dim=1).cpu())
            labels.append(y.cpu())
    return torch.cat(probs), torch.cat(labels)


def ensemble_accuracy(run_dirs: list[Path]) -> dict:
    """Accuracy of each member and of their averaged softmax, on the same test split."""
    members, probs, labels = [], None, None
    for run_dir in run_dirs:
        p, y = test_probabilities(run_dir)
        if labels is not None and not (y.shape == labels.shape and bool((y == labels).all())):
            raise CnnlabError(f"{run_dir} was tested on other data than the first member")
        labels = y
        members.append(float((p.argmax(1) == y).float().mean()))
        probs = p if probs is None else probs + p
    ensemble = float((probs.argmax(1) == labels).float().mean())
    return {"members": members, "ensemble_acc": ensemble, "n_members": len(members)}
