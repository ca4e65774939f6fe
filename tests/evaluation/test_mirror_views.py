"""Five-crop (the unmirrored views) and `cnnlab eval`'s warning when a mirroring view meets a run
that never trained on mirrored images."""

import pandas as pd
import pytest
from typer.testing import CliRunner

import cnnlab.cli.eval  # noqa: F401  (registers `eval`)
from cnnlab.cli.main import app
from cnnlab.evaluation import views as vw
from conftest import tiny

runner = CliRunner()
WARNING = ("warning: this run never saw mirrored images (aug {} has no flip): ten-crop's mirrored "
           "views may cost accuracy; --fivecrop keeps the five unmirrored crops")


def _train(out, *overrides):
    from cnnlab.training.recipe import train

    return train(tiny("data=digits", "model=lenet5", "trainer.epochs=1", f"outputs={out}",
                      *overrides))["path"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny digits runs: without augmentation, with aug=flip, with flip at p=0, with crop+flip."""
    out = tmp_path_factory.mktemp("mirror")
    return {"none": _train(out), "flip": _train(out, "aug=flip"),
            "flip_p0": _train(out, "aug=flip", "aug.flip_p=0"),
            "crop_flip": _train(out, "aug=crop_flip", "aug.crop_padding=1")}


def _warnings(res):
    return [line for line in res.output.splitlines() if "never saw mirrored" in line]


def test_fivecrop_flag_and_views_key_score_five_views(runs, outputs):
    res = runner.invoke(app, ["eval", runs["none"], "--fivecrop"], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "fivecrop" in res.stdout
    assert "the five crops are the image itself" in res.stdout  # not "the image and its mirror"
    res = runner.invoke(app, ["eval", runs["none"], "eval.views=[fivecrop]"], terminal_width=200)
    assert res.exit_code == 0, res.output
    df = pd.read_csv(outputs / "results.csv")
    assert list(df["eval_mode"]) == ["center", "fivecrop", "fivecrop"]
    assert list(df["eval_views"]) == [1, 5, 5]
    # digits are 8x8 and the crop is the whole image: the five crops are the centre view
    assert df["eval_top1"][1] == pytest.approx(df["eval_top1"][0])


def test_experiment_files_accept_fivecrop():
    from cnnlab.lab.experiment import _check_view_mode

    assert "fivecrop" in vw.MODES
    _check_view_mode("fivecrop", "views")  # no error


@pytest.mark.parametrize("args", [["--tencrop"], ["--multiscale", "8,10"], ["eval=tencrop"],
                                  ["eval.views=[fivecrop,tencrop]"]])
def test_mirroring_views_on_a_run_without_flip_warn_once(runs, args):
    res = runner.invoke(app, ["eval", runs["none"], *args], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert _warnings(res) == [WARNING.format("none")]
    assert WARNING.format("none") in res.stderr  # one line on stderr, not wrapped
    res = runner.invoke(app, ["eval", runs["flip_p0"], *args], terminal_width=200)
    assert res.exit_code == 0 and _warnings(res) == [WARNING.format("flip")]


@pytest.mark.parametrize("run, args", [("none", []), ("none", ["--fivecrop"]),
                                       ("flip", ["--tencrop"]), ("flip", ["--multiscale", "8,10"]),
                                       ("crop_flip", ["--tencrop"])])
def test_no_warning_without_a_mirroring_view_or_for_a_run_trained_with_flips(runs, run, args):
    res = runner.invoke(app, ["eval", runs[run], *args], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert _warnings(res) == []


def test_mirror_rule_reads_ops_and_probability():
    assert vw.mirroring(["center", "fivecrop"]) == []
    assert vw.mirroring(["center", "tencrop", "multiscale:8,10"]) == ["tencrop", "multiscale:8,10"]
    assert vw.trains_mirrored({"ops": ["flip"], "flip_p": 0.5})
    assert vw.trains_mirrored({"ops": ["crop", "flip"], "flip_p": 0.1})
    assert not vw.trains_mirrored({"ops": [], "flip_p": 0.5})  # the key's default, no flip op
    assert not vw.trains_mirrored({"ops": ["flip"], "flip_p": 0.0})
    assert not vw.trains_mirrored({"ops": ["crop", "color"], "flip_p": 0.5})
