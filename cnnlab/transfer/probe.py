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

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.errors import UsageError

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
    return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


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


def _fit_one(xtr, ytr, c: float, seed: int):
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


def _score(w, b, classes, x, y, num_classes: int):
    logits = torch.full((x.shape[0], num_classes), -1e9)
    logits[:, classes] = x @ w.T + b
    if len(y) == 0:
        return math.nan, math.nan
    acc = float((logits.argmax(1) == y).float().mean())
    nll = float(torch.nn.functional.cross_entropy(logits, y))
    return acc, nll


def fit(cfg, parts, model, run=None):
    """Fit the probe strategy; returns (engine.FitResult, the model to save and test)."""
    from cnnlab.engine import FitResult
    from cnnlab.transfer.layers import units

    if list(cfg.aug.ops):
        raise UsageError(f"transfer={cfg.transfer.name} trains on cached features of un-augmented "
                         "images; use aug=none")
    start = time.perf_counter()
    started_at = time.time()
    net = model.net
    parts_list = units(net)
    names = candidates(parts_list, cfg.transfer.name, int(cfg.transfer.probe_layers))
    feats, cached = cached_features(cfg, model, parts, names)
    extract_seconds = time.perf_counter() - start
    labels = feats["labels"]
    k = parts.bundle.num_classes
    rows, best = [], None
    for name in names:
        xtr, xva = feats["train"][name], feats["val"][name]
        for c in cfg.transfer.probe_c:
            classes, w, b = _fit_one(xtr, labels["train"], float(c), int(cfg.seed))
            tr_acc, tr_loss = _score(w, b, classes, xtr, labels["train"], k)
            va_acc, va_loss = _score(w, b, classes, xva, labels["val"], k)
            row = {"layer": name, "dim": xtr.shape[1], "C": float(c), "train_acc": tr_acc,
                   "train_loss": tr_loss, "val_acc": va_acc, "val_loss": va_loss}
            rows.append(row)
            key = (va_acc if not math.isnan(va_acc) else tr_acc)
            if best is None or key > best[0]:
                best = (key, row, classes, w, b)
    _, row, classes, w, b = best
    weight = torch.zeros(k, w.shape[1])
    bias = torch.full((k,), -1e4)  # a class absent from the training split is never predicted
    weight[classes], bias[classes] = w, b
    if row["layer"] == HEAD:
        head = parts_list[-1][1]
        with torch.no_grad():
            head.weight.copy_(weight)
            head.bias.copy_(bias)
        final = model
    else:
        final = ProbeNet(model, row["layer"], k, dict(parts_list)[row["layer"]], dim=w.shape[1])
        with torch.no_grad():
            final.probe.weight.copy_(weight)
            final.probe.bias.copy_(bias)
        from omegaconf import OmegaConf

        resolved = OmegaConf.to_container(cfg.transfer.resolved, resolve=True)
        cfg.transfer.resolved = {**resolved, "probe_layer": row["layer"], "probe_dim": int(w.shape[1])}
    final = final.to(parts.device)
    seconds = time.perf_counter() - start
    n = len(labels["train"])
    hist = {"epoch": 1, "lr": float("nan"), "train_loss": row["train_loss"], "train_acc": row["train_acc"],
            "val_loss": row["val_loss"], "val_acc": row["val_acc"], "val_top5": float("nan"),
            "epoch_seconds": seconds, "images_per_sec": n / max(seconds, 1e-9)}
    if run is not None:
        import pandas as pd

        from cnnlab import checkpoint
        from cnnlab.run import write_text_atomic

        write_text_atomic(run.root / "probes.csv", pd.DataFrame(rows).to_csv(index=False))
        run.log(f"probe: features {'from the cache' if cached else 'computed'} in {extract_seconds:.1f}s; "
                f"best layer {row['layer']} C={row['C']} val acc {row['val_acc']:.4f}")
        run.log_metrics(hist)
        run.write_config(cfg)  # the chosen layer, so `cnnlab eval` rebuilds the same network
        state = final.state_dict()
        checkpoint.save({"model": state, "epoch": 1, "val_acc": row["val_acc"]}, run.checkpoints / "best.pt")
    result = FitResult(history=[hist], best_epoch=1, best_metric=row["val_acc"],
                       best_state={k_: v.detach().clone() for k_, v in final.state_dict().items()},
                       train_seconds=seconds, images_seen=n, first_batch_at=started_at)
    result.probe = {"layer": row["layer"], "C": row["C"], "features_cached": cached,
                    "feature_seconds": round(extract_seconds, 3)}
    return result, final
