"""cnnlab.evaluation.ensemble: members scored by runs.score_views, their softmax averaged."""

import json
from pathlib import Path

import pytest
import torch

from cnnlab.evaluation import ensemble, runs
from conftest import tiny


@pytest.fixture(scope="module")
def crop_runs(tmp_path_factory):
    """Two seeds of a run trained on 28x28 crops of 32x32 images."""
    from cnnlab.training.recipe import train

    out = tmp_path_factory.mktemp("ensemble")
    return [Path(train(tiny("model=resnet8", "aug=crop", "aug.crop_size=28", "aug.crop_padding=0",
                            "trainer.epochs=1", "data.num_train=64", "data.num_test=40",
                            f"seed={seed}", f"outputs={out}"))["path"]) for seed in (0, 1)]


def test_members_score_as_their_own_test_pass(crop_runs):
    """A member is tested on the view its run was tested on (the centre 28x28 crop), so its
    accuracy is the run's test_acc."""
    result = ensemble.ensemble_accuracy(crop_runs)
    own = [json.loads((r / "summary.json").read_text())["test_acc"] for r in crop_runs]
    assert result["n_members"] == 2 and result["members"] == pytest.approx(own)
    assert 0 <= result["ensemble_acc"] <= 1


def test_probabilities_are_the_centre_views_softmax(crop_runs):
    probs, labels = ensemble.test_probabilities(crop_runs[0])
    run = runs.load_run(crop_runs[0])
    x = torch.cat([x for x, _ in runs.split_loader(run)])[..., 2:30, 2:30]  # centre 28 of 32
    with torch.no_grad():
        expected = run.model(x).softmax(1)
    assert torch.allclose(probs, expected, atol=1e-6)
    assert torch.equal(labels, torch.cat([y for _, y in runs.split_loader(run)]))
