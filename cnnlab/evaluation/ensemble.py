"""Ensembles of finished runs: average the members' softmax on the test set (C17).

Each member is rebuilt from its run folder and scored by cnnlab.evaluation.runs: the centre view
at the side it trained on, the view its own test_acc was measured on (on a run trained on
aug.crop_size crops, the centre crop of that size).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnnlab.errors import CnnlabError
from cnnlab.evaluation.runs import load_run  # noqa: F401  (its old home; callers still import it here)


def test_probabilities(run_dir: str | Path, device: Any = "cpu"):
    """Softmax over the test split of a run's best weights: (probabilities (N, C), labels (N,))."""
    from cnnlab.evaluation.runs import score_views

    center = score_views(load_run(run_dir, device), ["center"], keep=True)["center"]
    return center["probs"], center["labels"]


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
