"""Linear probes on frozen features: `linear_probe` and `multi_probe`.

A frozen network maps every image to the same features in every epoch, so they are computed
once per (source weights, data, input adaptation, layer) and cached under
<outputs>/cache/features/<digest>.pt; a probe over a seed sweep, or a second strategy on the same
source, reads the cache and takes seconds.

Features of a layer are its output averaged over the spatial positions (global average
pooling; a vector output is taken as it is); the `head` layer is the input of the network's
final Linear, the features the source's own classifier saw.

The probe is multinomial logistic regression (scikit-learn's LogisticRegression, L-BFGS) on
features standardised with the training split's mean and standard deviation, for each C in
`transfer.probe_c`; the C (and for multi_probe the layer) with the best validation accuracy
wins, as in the linear-evaluation protocol of Kornblith, Shlens & Le 2019 ("Do better ImageNet
models transfer better?") and Radford et al. 2021 (CLIP, appendix A.3). The winner is folded
into a torch Linear (W / std, b - W mean / std), so the saved network predicts exactly what the
probe did, with no standardisation step: `cnnlab eval` and ensembles use it unchanged.

multi_probe's candidate layers: `transfer.probe_layers` of the backbone's layers and the head
input, evenly spaced, the head input always included. A winner below the head becomes a
`ProbeNet`: the frozen network run up to that layer (a hook stops the forward pass there),
pooled, then the probe's Linear.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn


HEAD = "head"


class _Stop(Exception):
    pass


def _pool(t: torch.Tensor) -> torch.Tensor:
    return t.float().mean(dim=(2, 3)) if t.dim() == 4 else t.float().flatten(1)


def _hook_module(unit: nn.Module) -> nn.Module:
    return unit[-1] if isinstance(unit, nn.ModuleList) else unit


class ProbeNet(nn.Module):
    """A TransferNet cut after layer `layer`: pooled features -> `probe` Linear."""

    def __init__(self, base: nn.Module, layer: str, num_classes: int, unit: nn.Module, dim: int = 0):
        super().__init__()
        self.base = base
        self.layer = layer
        self.probe = nn.Linear(int(dim) if dim else _probe_dim(base, unit), num_classes)
        self._out = None
        _hook_module(unit).register_forward_hook(self._catch)

    def _catch(self, module, inputs, output):
        if self._out is not None:
            self._out.append(output)
            raise _Stop

    def forward(self, x):
        self._out = []
        try:
            self.base(x)
        except _Stop:
            pass
        feats, self._out = self._out, None
        if not feats:
            raise RuntimeError(f"layer {self.layer} did not run")
        return self.probe(_pool(feats[0]))


def _probe_dim(base, unit) -> int:
    """Width of a unit's pooled output, from one probe pass of a tiny batch."""
    out = []
    h = _hook_module(unit).register_forward_hook(lambda m, i, o: out.append(o))
    try:
        size = base.adapter.size or 32
        base.eval()
        with torch.no_grad():
            base(torch.zeros(1, base.adapter.t_mean.shape[1], size, size))
    finally:
        h.remove()
    return _pool(out[0]).shape[1]


def candidates(parts, name: str, count: int) -> list[str]:
    """The layers a probe strategy tries (see the module docstring)."""
    if name == "linear_probe":
        return [HEAD]
    # the last backbone layer is left out: its pooled output is (nearly) the head's input
    names = [n for n, _ in parts[:-2]] + [HEAD]
    count = max(1, min(count, len(names)))
    if count == 1:
        return [HEAD]
    idx = sorted({round(i * (len(names) - 1) / (count - 1)) for i in range(count)})
    return [names[i] for i in idx]


def extract(model, loader, parts, names: list[str]) -> dict[str, torch.Tensor]:
    """{layer: (N, D) float32 CPU features} of everything the loader yields, in order."""
    hooks, store = [], {n: [] for n in names}
    by_name = dict(parts)
    head = parts[-1][1]
    for n in names:
        if n == HEAD:
            hooks.append(head.register_forward_pre_hook(lambda m, i, n=n: store[n].append(_pool(i[0]).cpu())))
        else:
            hooks.append(_hook_module(by_name[n]).register_forward_hook(
                lambda m, i, o, n=n: store[n].append(_pool(o).cpu())))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            for x, _ in loader:
                model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return {n: torch.cat(v) if v else torch.zeros(0, 0) for n, v in store.items()}


def cache_key(cfg: Any, names: list[str]) -> str:
    from omegaconf import OmegaConf

    info = OmegaConf.to_container(cfg.transfer.resolved, resolve=True)
    key = {"digest": info["digest"], "model": info["model"], "layers": names,
           "data": OmegaConf.to_container(cfg.data, resolve=True),
           "resize": cfg.transfer.resize or min(info["input_size"]),
           "dtype": cfg.precision.dtype if "dtype" in cfg.precision else "float32"}
    key["data"].pop("workers", None)
    from cnnlab.config.hashing import digest

    return digest(key, length=16)


def cached_features(cfg, model, parts, names: list[str]) -> tuple[dict, bool]:
    """({split: {layer: features}, "labels": {split: labels}}, whether it came from the cache)."""
    from filelock import FileLock

    from cnnlab import checkpoint
    from cnnlab.data.loader import make_loader

    folder = Path(cfg.outputs) / "cache" / "features"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{cache_key(cfg, names)}.pt"
    with FileLock(str(path) + ".lock"):
        if path.is_file():
            return torch.load(path, map_location="cpu", weights_only=True), True
        net = model.net if hasattr(model, "net") else model
        from cnnlab.transfer.layers import units

        unit_list = units(net)
        out: dict[str, Any] = {"labels": {}}
        b = parts.bundle
        for split in ("train", "val", "test"):
            data = getattr(b, split)
            loader = make_loader(data, cfg.trainer.eval_batch_size, train=False, bundle=b,
                                 device=parts.device, seed=0, workers=cfg.data.workers,
                                 dtype=parts.precision.param_dtype)
            out[split] = extract(model, loader, unit_list, names)
            out["labels"][split] = data.labels.clone().cpu()
        checkpoint.save(out, path)
    return out, False


def fit_one(xtr, ytr, c: float, seed: int):
    """Logistic regression on standardised features; returns (classes seen, W, b) folded back
    to raw features (logits = x @ W.T + b)."""
    from sklearn.linear_model import LogisticRegression

    mean = xtr.mean(0)
    std = xtr.std(0) + 1e-6
    clf = LogisticRegression(C=c, max_iter=2000, random_state=seed)
    clf.fit(((xtr - mean) / std).numpy(), ytr.numpy())
    classes = torch.as_tensor(clf.classes_)
    w = torch.as_tensor(clf.coef_, dtype=torch.float32)
    b = torch.as_tensor(clf.intercept_, dtype=torch.float32)
    if w.shape[0] == 1:  # two classes: sklearn keeps one row, the logit of the second class
        w, b = torch.cat([-w / 2, w / 2]), torch.cat([-b / 2, b / 2])
    w = w / std
    return classes, w, b - w @ mean


def score(w, b, classes, x, y, num_classes: int):
    logits = torch.full((x.shape[0], num_classes), -1e9)
    logits[:, classes] = x @ w.T + b
    if len(y) == 0:
        return math.nan, math.nan
    acc = float((logits.argmax(1) == y).float().mean())
    nll = float(torch.nn.functional.cross_entropy(logits, y))
    return acc, nll
