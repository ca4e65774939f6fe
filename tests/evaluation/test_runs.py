"""cnnlab.evaluation.runs: a run folder loaded (load_run) and scored under views (score_views),
and `cnnlab eval` reading its views from the eval config group."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import cnnlab.cli.eval  # noqa: F401  (registers `eval`)
from cnnlab import checkpoint
from cnnlab.cli.main import app
from cnnlab.config import compose
from cnnlab.data.loader import make_loader
from cnnlab.errors import CnnlabError, UsageError
from cnnlab.evaluation import runs
from cnnlab.evaluation.evaluate import evaluate
from conftest import tiny

runner = CliRunner()


@pytest.fixture(scope="module")
def crop_run(tmp_path_factory):
    """A run trained on 28x28 random crops of 32x32 images: its centre view is a real crop."""
    from cnnlab.training.recipe import train

    out = tmp_path_factory.mktemp("crop_run")
    s = train(tiny("model=resnet8", "aug=crop", "aug.crop_size=28", "aug.crop_padding=0",
                   "trainer.epochs=1", "data.num_train=64", "data.num_test=48", f"outputs={out}"))
    return Path(s["path"])


def test_load_run_rebuilds_the_checkpoints_weights(crop_run):
    run = runs.load_run(crop_run)
    cfg, model, bundle = run  # still unpacks as the old (cfg, model, bundle)
    assert cfg.model.name == "resnet8" and bundle.name == "shapes" and not model.training
    saved = checkpoint.load(crop_run / "checkpoints" / "best.pt")["model"]
    state = model.state_dict()
    assert state.keys() == saved.keys()
    for key, value in saved.items():
        assert torch.equal(state[key], value), key
    assert runs.weights_file(crop_run).name == "best.pt"


def test_score_views_center_equals_an_independent_evaluation(crop_run):
    run = runs.load_run(crop_run)
    scores = runs.score_views(run, ["center", "tencrop"])
    center = scores["center"]
    assert center["crop"] == 28 and center["views"] == 1 and center["n"] == 48
    loader = make_loader(run.bundle.test, 16, train=False, bundle=run.bundle, device="cpu", seed=0,
                         workers=0)
    own = evaluate(run.model, loader, crop=28)  # the training run's test pass: centre 28x28
    assert center["top1"] == own["acc"]
    assert center["nll"] == pytest.approx(own["loss"], rel=1e-5)
    assert center["top1"] == pytest.approx(json.loads((crop_run / "summary.json").read_text())["test_acc"])
    assert scores["tencrop"]["views"] == 10 and scores["tencrop"]["n"] == 48


def test_score_views_keeps_the_averaged_probabilities(crop_run):
    run = runs.load_run(crop_run)
    m = runs.score_views(run, ["center"], keep=True)["center"]
    assert m["probs"].shape == (48, run.bundle.num_classes) and m["labels"].shape == (48,)
    assert torch.allclose(m["probs"].sum(1), torch.ones(48), atol=1e-5)
    assert float((m["probs"].argmax(1) == m["labels"]).double().mean()) == pytest.approx(m["top1"])


def test_view_flag_and_eval_group_give_the_same_rows(crop_run, outputs):
    res = runner.invoke(app, ["eval", str(crop_run), "--tencrop"], terminal_width=200)
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["eval", str(crop_run), "eval.views=[center,tencrop]"], terminal_width=200)
    assert res.exit_code == 0, res.output
    df = pd.read_csv(outputs / "results.csv")
    assert len(df) == 4 and list(df["eval_mode"]) == ["center", "tencrop"] * 2
    same = df.drop(columns=["time", "eval_ms_per_image"])
    flag, group = same.iloc[:2].reset_index(drop=True), same.iloc[2:].reset_index(drop=True)
    pd.testing.assert_frame_equal(flag, group)


def test_eval_group_presets_and_multiscale_lists(crop_run, outputs):
    res = runner.invoke(app, ["eval", str(crop_run), "eval.views=[center,multiscale:28,32]",
                              "eval.average=logits", "eval=tencrop", "--multiscale", "28,32"],
                        terminal_width=200)
    assert res.exit_code == 0, res.output
    df = pd.read_csv(outputs / "results.csv")
    # the preset is applied first, its views then replaced; --multiscale adds nothing new
    assert list(df["eval_mode"]) == ["center", "multiscale"]
    assert list(df["eval_views"]) == [1, 20] and list(df["eval_scales"].fillna("")) == ["", "28,32"]
    assert (df["eval_average"] == "logits").all() and (df["eval.average"] == "logits").all()
    res = runner.invoke(app, ["eval", str(crop_run), "eval=tencrop"])
    assert res.exit_code == 0 and list(pd.read_csv(outputs / "results.csv")["eval_mode"])[-1] == "tencrop"


@pytest.mark.parametrize("args, fragment", [
    (["model=lenet5"], "overrides of the eval group"),
    (["eval.views=sixcrop"], "unknown view mode"),
    (["eval.views=multiscale:28,32"], "eval.views=[multiscale:28,32]"),
    (["eval.views=[center,32]"], "follows no multiscale"),
    (["eval.average=median"], "eval.average"),
    (["--split", "train"], "eval.split"),
    (["eval.chunk=0"], "at least 1"),
])
def test_bad_eval_settings_are_one_line_usage_errors(crop_run, args, fragment):
    res = runner.invoke(app, ["eval", str(crop_run), *args])
    assert res.exit_code == 2 and fragment in res.stderr, res.output
    assert len(res.stderr.strip().splitlines()) == 1


def test_check_eval_reads_the_composed_group():
    ecfg = runs.check_eval(compose(["eval.views=[center,multiscale:28,32,36]"]).eval)
    assert list(ecfg.views) == ["center", "multiscale:28,32,36"]
    assert list(runs.check_eval({"views": "tencrop"}).views) == ["tencrop"]
    assert list(runs.check_eval(compose(["eval=tencrop"]).eval).views) == ["tencrop"]
    with pytest.raises(UsageError):
        runs.check_eval({"views": [], "average": "softmax"})


def test_a_folder_without_weights_is_one_line(crop_run, tmp_path):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(crop_run, bare)
    shutil.rmtree(bare / "checkpoints")
    with pytest.raises(CnnlabError, match="has no checkpoint"):
        runs.load_run(bare)
