"""The forward half of one training step, shared by the engine (cnnlab.training.engine) and
`cnnlab bench-train` (cnnlab.bench.train), so the benchmark times the step training takes.

forward + loss run under the precision's autocast; backward, clipping and the update are
cnnlab.training.precision.Precision.step.
"""

from __future__ import annotations

# GoogLeNet's auxiliary classifiers add their losses with weight 0.3 (Szegedy et al. 2015,
# "Going deeper with convolutions", sec. 5)
AUX_WEIGHT = 0.3


def criterion(label_smoothing: float = 0.0):
    """The training loss: cross-entropy, with trainer.label_smoothing."""
    import torch

    return torch.nn.CrossEntropyLoss(label_smoothing=label_smoothing)


def loss_of(out, y, loss_fn):
    """(logits, loss) of a model's training-mode output: the logits, or a tuple of the logits and
    auxiliary heads' logits (GoogLeNet), whose losses are added with weight AUX_WEIGHT."""
    if isinstance(out, tuple):
        logits = out[0]
        return logits, loss_fn(logits, y) + AUX_WEIGHT * sum(loss_fn(a, y) for a in out[1:])
    return out, loss_fn(out, y)


def forward(model, x, y, loss_fn, precision):
    """Forward pass and loss of one batch under `precision`'s autocast: (logits, loss)."""
    with precision.autocast():
        return loss_of(model(x), y, loss_fn)
