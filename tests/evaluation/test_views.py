"""Test-time views (cnnlab.evaluation.views), view-averaged evaluation and `cnnlab eval`."""

import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from torchvision.transforms import v2
from typer.testing import CliRunner

import cnnlab.cli.eval  # noqa: F401  (registers `eval` until cli.py imports it)
from cnnlab.evaluation import views as vw
from cnnlab.cli.main import app
from cnnlab.errors import UsageError
from cnnlab.evaluation.evaluate import bench_tencrop, evaluate, predict_views
from conftest import tiny

runner = CliRunner()


def _arange(n=2, c=3, h=32, w=32):
    return torch.arange(n * c * h * w, dtype=torch.float32).view(n, c, h, w)


@pytest.mark.parametrize("h, w, crop", [(32, 32, 28), (33, 35, 28), (32, 32, 32), (9, 12, 5), (8, 8, 7)])
def test_tencrop_boxes_equal_torchvisions(h, w, crop):
    x = _arange(2, 3, h, w)
    ours = vw.tencrop(x, crop)
    assert ours.shape == (2, 10, 3, crop, crop)
    for i in range(2):
        theirs = v2.TenCrop(crop)(x[i])
        assert len(theirs) == 10
        for k in range(10):
            assert torch.equal(ours[i, k], theirs[k]), (i, k)
        assert torch.equal(vw.center(x, crop)[i, 0], v2.CenterCrop(crop)(x[i]))


@pytest.mark.parametrize("h, w, crop", [(32, 32, 28), (33, 35, 28), (32, 32, 32), (9, 12, 5), (8, 8, 7)])
def test_fivecrop_boxes_equal_torchvisions(h, w, crop):
    x = _arange(2, 3, h, w)
    ours = vw.fivecrop(x, crop)
    assert ours.shape == (2, 5, 3, crop, crop)
    for i in range(2):
        theirs = v2.FiveCrop(crop)(x[i])
        assert len(theirs) == 5
        for k in range(5):
            assert torch.equal(ours[i, k], theirs[k]), (i, k)
    # the same five boxes as ten-crop's unmirrored half, and never a mirrored view
    assert torch.equal(vw.make_views(x, "fivecrop", crop), vw.tencrop(x, crop)[:, :5])


def test_view_counts_and_shapes():
    x = torch.rand(3, 3, 32, 32)
    assert vw.make_views(x, "center", 28).shape == (3, 1, 3, 28, 28)
    assert vw.make_views(x, "tencrop", 28).shape == (3, 10, 3, 28, 28)
    scales = [24, 32, 40]  # 24 < crop: resized up to the crop, still ten views
    assert vw.make_views(x, "multiscale", 28, scales).shape == (3, 30, 3, 28, 28)
    assert [vw.num_views(m, scales) for m in ("center", "tencrop", "multiscale")] == [1, 10, 30]
    # chunks bound the views per block and cover the batch in order
    blocks = list(vw.iter_view_chunks(torch.rand(7, 3, 32, 32), "tencrop", 28, chunk=25))
    assert [b.shape[0] for b in blocks] == [2, 2, 2, 1]
    blocks = list(vw.iter_view_chunks(torch.rand(512, 1, 8, 8), "tencrop", 6, chunk=512))
    assert len(blocks) == 11 and max(b.shape[0] for b in blocks) * 10 <= 512
    assert vw.make_views(x, "fivecrop", 28).shape == (3, 5, 3, 28, 28)
    assert vw.num_views("fivecrop") == 5
    with pytest.raises(UsageError):
        vw.make_views(x, "sixcrop", 28)


def test_center_of_crop_sized_image_is_identity():
    x = torch.rand(4, 3, 28, 28)
    out = vw.make_views(x, "center", 28)
    assert torch.equal(out[:, 0], x)


def test_crop_rule():
    # small images: the default crop is the whole (training-size) image, cut without resizing
    assert vw.geometry((32, 32)) == (32, None)
    assert vw.geometry((8, 8)) == (8, None)
    assert vw.geometry((32, 32), 28) == (28, None)
    assert vw.geometry((32, 32), 30) == (30, None)
    assert vw.geometry((224, 224)) == (224, 256)  # shorter side to 224 / 0.875
    assert vw.geometry((160, 160), 128) == (128, 146)
    with pytest.raises(UsageError):
        vw.geometry((32, 32), 40)
    # large images: resize, then crop
    x = torch.rand(1, 3, 224, 300)
    assert vw.make_views(x, "center", 224, resize=256).shape == (1, 1, 3, 224, 224)


class _Constant(torch.nn.Module):
    """Ignores its input: every view gets the same logits."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.tensor(logits))

    def forward(self, x):
        return self.logits.expand(x.shape[0], -1)


@pytest.mark.parametrize("average", ["softmax", "logits"])
@pytest.mark.parametrize("mode, scales", [("center", ()), ("fivecrop", ()), ("tencrop", ()), ("multiscale", (24, 32))])
def test_constant_model_keeps_its_prediction(average, mode, scales):
    logits = [0.5, 2.0, -1.0, 0.0, 1.0, 0.3, -0.2]
    model = _Constant(logits)
    y = torch.tensor([1, 1, 0, 4, 1, 2])
    loader = [(torch.rand(6, 3, 32, 32), y)]
    m = predict_views(model, loader, mode, 28, scales, average=average, chunk=16)
    logp = torch.tensor(logits).log_softmax(0)
    assert m["n"] == 6 and m["views"] == vw.num_views(mode, scales)
    assert m["top1"] == pytest.approx(3 / 6)  # argmax is class 1
    assert m["top5"] == pytest.approx(5 / 6)  # class 2 (-1.0) is outside the top five
    assert m["nll"] == pytest.approx(float(-logp[y].mean()), abs=1e-5)
    assert m["ms_per_image"] > 0


def test_top5_is_nan_with_five_classes_and_engine_path_still_works():
    model = _Constant([0.0, 1.0, 2.0, 3.0, 4.0])
    loader = [(torch.rand(4, 1, 16, 16), torch.tensor([4, 4, 0, 1]))]
    assert math.isnan(predict_views(model, loader, "tencrop", 12)["top5"])
    e = evaluate(model, loader)  # the engine's call: whole image, keys unchanged
    assert set(e) == {"loss", "acc", "top5", "n", "seconds"} and e["acc"] == 0.5
    e10 = evaluate(model, loader, views="tencrop")
    assert e10["acc"] == 0.5 and e10["loss"] == pytest.approx(e["loss"], abs=1e-5)
    with pytest.raises(UsageError):
        evaluate(model, loader, views="sixcrop")


def test_eval_views_parse_into_whole_modes():
    assert vw.parse_views("center") == ["center"]
    # Hydra splits [center,multiscale:28,32,36] at every comma; the sizes join their mode again
    assert vw.parse_views(["center", "multiscale:28", 32, "36"]) == ["center", "multiscale:28,32,36"]
    assert vw.parse_views(["tencrop", "center", "tencrop", "multiscale: 28, 32"]) == \
        ["tencrop", "center", "multiscale:28,32"]
    assert vw.split_mode("multiscale:28,32") == ("multiscale", [28, 32])
    assert vw.split_mode("tencrop") == ("tencrop", [])
    assert vw.parse_views(["center", "fivecrop", "tencrop"]) == ["center", "fivecrop", "tencrop"]
    for bad in ([], ["sixcrop"], ["fivecrop:3"], [32], ["multiscale"], ["center:3"], ["multiscale:a"]):
        with pytest.raises(UsageError):
            vw.parse_views(bad)


def test_evaluate_scores_the_first_of_a_list_of_modes():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 7, 3), torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten())
    loader = [(torch.rand(8, 1, 16, 16), torch.arange(8) % 7)]

    def scores(views):
        return {k: v for k, v in evaluate(model, loader, views=views, crop=12).items() if k != "seconds"}

    assert scores(["tencrop", "center"]) == scores("tencrop")
    assert scores(["tencrop", "center"])["loss"] != scores("center")["loss"]


def test_bench_ratio_is_positive():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    ratio = bench_tencrop(model, torch.rand(16, 3, 32, 32), 28)
    assert 0 < ratio < 100


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory):
    from cnnlab.training.recipe import train

    out = tmp_path_factory.mktemp("trained")
    s = train(tiny("data=digits", "model=lenet5", "trainer.epochs=1", f"outputs={out}"))
    return s["path"]


def test_eval_end_to_end_writes_rows_and_prints_table(lenet_run, outputs):
    res = runner.invoke(app, ["eval", lenet_run, "--tencrop", "--multiscale", "6,8,10"], terminal_width=200)
    assert res.exit_code == 0, res.output
    for fragment in ("center", "tencrop", "multiscale 6,8,10", "views/image", "top1", "nll", "ms/image"):
        assert fragment in res.output
    df = pd.read_csv(outputs / "results.csv")
    assert list(df["eval_mode"]) == ["center", "tencrop", "multiscale"]
    assert list(df["eval_views"]) == [1, 10, 30]
    assert (df["status"] == "eval").all() and (df["model"] == "lenet5").all()
    assert list(df["eval"]) == ["center", "tencrop", "multiscale"]
    assert df["eval_top1"].between(0, 1).all() and (df["eval_crop"] == 8).all()
    # the centre view of 8x8 digits is the whole image: it reproduces the training test_acc
    trained = pd.read_csv(Path(lenet_run).parents[1] / "results.csv")
    assert df["eval_top1"][0] == pytest.approx(trained["test_acc"][0])

    res = runner.invoke(app, ["eval", lenet_run, "--split", "val", "--average", "logits", "--crop", "7"])
    assert res.exit_code == 2 and "cannot take 7x7" in res.output  # LeNet-5 pads to exactly 32
    res = runner.invoke(app, ["eval", lenet_run, "--bench"])
    assert res.exit_code == 0 and "ten-crop / centre time per image" in res.output


def test_run_trained_on_crops_is_tested_on_crops_of_that_size(tmp_path, outputs):
    from cnnlab.training.recipe import train

    s = train(tiny("model=resnet8", "aug=crop", "aug.crop_size=28", "aug.crop_padding=0",
                   "trainer.epochs=1", "data.num_train=64", "data.num_test=32"))
    trained = pd.read_csv(outputs / "results.csv")
    res = runner.invoke(app, ["eval", s["path"], "--tencrop"], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "whole" not in res.output  # 28 of 32: distinct crops, no note
    df = pd.read_csv(outputs / "results.csv")
    rows = df[df["status"] == "eval"].reset_index()
    assert list(rows["eval_crop"]) == [28, 28]
    # the training run's test_acc is the centre 28x28 crop: `eval` reproduces it
    assert rows["eval_top1"][0] == pytest.approx(trained["test_acc"][0])
    # a run trained on whole images gets told that its ten crops collapse to two views
    s2 = train(tiny("model=resnet8", "trainer.epochs=1", "data.num_train=64", "data.num_test=32"))
    res = runner.invoke(app, ["eval", s2["path"], "--tencrop"], terminal_width=200)
    assert res.exit_code == 0 and "whole 32x32 image" in res.output


def test_crop_size_shrinks_training_batches_and_checks_its_bound():
    from cnnlab.data import augment
    from cnnlab.config import compose

    cfg = compose(["data=shapes", "aug=crop", "aug.crop_size=28", "aug.crop_padding=0"]).aug
    op = augment.create(cfg)
    x = torch.rand(5, 3, 32, 32)
    out = op(x, torch.Generator().manual_seed(0))
    assert out.shape == (5, 3, 28, 28)
    # every output is a 28x28 window of its own image: find it by exhaustive search
    for i in range(5):
        windows = x[i].unfold(1, 28, 1).unfold(2, 28, 1)  # (3, 5, 5, 28, 28)
        hits = (windows == out[i][:, None, None]).flatten(3).all(3).all(0)
        assert hits.any()
    assert augment.input_size(cfg, (32, 32)) == (28, 28)
    assert augment.input_size(compose(["data=shapes", "aug=flip", "aug.crop_size=28"]).aug, (32, 32)) == (32, 32)
    with pytest.raises(UsageError, match="larger than"):
        augment.input_size(compose(["data=shapes", "aug=crop", "aug.crop_size=41"]).aug, (32, 32))  # > 32 + 2*4


@pytest.mark.parametrize("name, code, fragment", [
    ("absent", 1, "no run folder"),
    ("file.pt", 1, "is a file"),
    ("", 1, "no config.yaml"),
])
def test_bad_run_dir_is_one_line(tmp_path, name, code, fragment):
    (tmp_path / "file.pt").write_bytes(b"x")
    res = runner.invoke(app, ["eval", str(tmp_path / name)])
    assert res.exit_code == code
    assert fragment in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_foreign_checkpoint_is_one_line(lenet_run, tmp_path):
    import shutil

    fake = tmp_path / "fake"
    shutil.copytree(lenet_run, fake)
    torch.save({"weights": torch.zeros(3)}, fake / "checkpoints" / "best.pt")
    res = runner.invoke(app, ["eval", str(fake)])
    assert res.exit_code == 1 and "best.pt: checkpoint has no 'model' weights" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    res = runner.invoke(app, ["eval", lenet_run, "--multiscale", "a,b"])
    assert res.exit_code == 2 and "--multiscale" in res.stderr
