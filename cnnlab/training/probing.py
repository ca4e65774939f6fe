"""The probe strategies' fit (transfer=linear_probe | multi_probe): logistic-regression probes on
cached features of the frozen source, one per candidate layer and C, the best chosen on the
validation split (cnnlab.transfer.probe computes and caches the features). Returns what the
engine's fit returns, so the recipe treats both the same.

The metrics row has the engine's columns: train_loss/train_acc are the chosen probe's scores on
every training image's features, which are eval-mode numbers already (frozen source, no
augmentation, no dropout, fixed weights); running_loss/running_acc repeat them, since a probe has
no train-mode pass whose running averages could differ."""

from __future__ import annotations

import math
import time

import torch


def fit(cfg, parts, model, run=None):
    """Fit the probe strategy; returns (engine.FitResult, the model to save and test)."""
    from cnnlab.training.engine import FitResult
    from cnnlab.transfer.layers import units
    from cnnlab.transfer.probe import cached_features, candidates

    start = time.perf_counter()  # (aug=none for the probes is checked at compose)
    started_at = time.time()
    layers = units(model.net)
    names = candidates(layers, cfg.transfer.name, int(cfg.transfer.probe_layers))
    feats, cached = cached_features(cfg, model, parts, names)
    extract_seconds = time.perf_counter() - start
    k = parts.bundle.num_classes
    rows, (row, classes, w, b) = _fit_probes(cfg, feats, names, k)
    final = _with_probe(cfg, model, layers, row, classes, w, b, k).to(parts.device)
    seconds = time.perf_counter() - start
    n = len(feats["labels"]["train"])
    hist = {"epoch": 1, "lr": float("nan"), "train_loss": row["train_loss"], "train_acc": row["train_acc"],
            "running_loss": row["train_loss"], "running_acc": row["train_acc"],
            "val_loss": row["val_loss"], "val_acc": row["val_acc"], "val_top5": float("nan"),
            "epoch_seconds": seconds, "images_per_sec": n / max(seconds, 1e-9)}
    if run is not None:
        _save(run, cfg, rows, row, hist, final,
              f"probe: features {'from the cache' if cached else 'computed'} in {extract_seconds:.1f}s; "
              f"best layer {row['layer']} C={row['C']} val acc {row['val_acc']:.4f}")
    result = FitResult(history=[hist], best_epoch=1, best_metric=row["val_acc"],
                       best_state={k_: v.detach().clone() for k_, v in final.state_dict().items()},
                       train_seconds=seconds, images_seen=n, first_batch_at=started_at)
    result.probe = {"layer": row["layer"], "C": row["C"], "features_cached": cached,
                    "feature_seconds": round(extract_seconds, 3)}
    return result, final


def _fit_probes(cfg, feats: dict, names: list, k: int):
    """A probe per layer and C: (every probe's row, (the best row, its classes, weight, bias)),
    the best by validation accuracy (training accuracy without a validation split)."""
    from cnnlab.transfer.probe import fit_one, score

    labels = feats["labels"]
    rows, best = [], None
    for name in names:
        xtr, xva = feats["train"][name], feats["val"][name]
        for c in cfg.transfer.probe_c:
            classes, w, b = fit_one(xtr, labels["train"], float(c), int(cfg.seed))
            tr_acc, tr_loss = score(w, b, classes, xtr, labels["train"], k)
            va_acc, va_loss = score(w, b, classes, xva, labels["val"], k)
            row = {"layer": name, "dim": xtr.shape[1], "C": float(c), "train_acc": tr_acc,
                   "train_loss": tr_loss, "val_acc": va_acc, "val_loss": va_loss}
            rows.append(row)
            key = (va_acc if not math.isnan(va_acc) else tr_acc)
            if best is None or key > best[0]:
                best = (key, row, classes, w, b)
    return rows, best[1:]


def _with_probe(cfg, model, layers, row: dict, classes, w, b, k: int):
    """The network that predicts with the chosen probe: the source's own head refitted, or a
    ProbeNet on an inner layer (recorded in cfg.transfer.resolved, so `cnnlab eval` rebuilds it)."""
    from cnnlab.transfer.probe import HEAD, ProbeNet

    weight = torch.zeros(k, w.shape[1])
    bias = torch.full((k,), -1e4)  # a class absent from the training split is never predicted
    weight[classes], bias[classes] = w, b
    if row["layer"] == HEAD:
        head = layers[-1][1]
        with torch.no_grad():
            head.weight.copy_(weight)
            head.bias.copy_(bias)
        return model
    final = ProbeNet(model, row["layer"], k, dict(layers)[row["layer"]], dim=w.shape[1])
    with torch.no_grad():
        final.probe.weight.copy_(weight)
        final.probe.bias.copy_(bias)
    from omegaconf import OmegaConf

    resolved = OmegaConf.to_container(cfg.transfer.resolved, resolve=True)
    cfg.transfer.resolved = {**resolved, "probe_layer": row["layer"], "probe_dim": int(w.shape[1])}
    return final


def _save(run, cfg, rows: list, row: dict, hist: dict, final, message: str) -> None:
    """probes.csv (every probe), the log line, the metrics row, the config with the chosen
    layer, best.pt."""
    import pandas as pd

    from cnnlab import checkpoint
    from cnnlab.run import write_text_atomic

    write_text_atomic(run.root / "probes.csv", pd.DataFrame(rows).to_csv(index=False))
    run.log(message)
    run.log_metrics(hist)
    run.write_config(cfg)  # the chosen layer, so `cnnlab eval` rebuilds the same network
    checkpoint.save({"model": final.state_dict(), "epoch": 1, "val_acc": row["val_acc"]},
                    run.checkpoints / "best.pt")
