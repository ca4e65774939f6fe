import pytest
from PIL import Image
from typer.testing import CliRunner

from cnnlab.cli.main import app

runner = CliRunner()


def test_preview_writes_a_grid_of_originals_and_copies(outputs):
    out = runner.invoke(app, ["aug", "preview", "aug=alexnet", "data=shapes", "data.num_train=100",
                              "data.num_test=20", "--images", "3", "--copies", "4"])
    assert out.exit_code == 0, out.output
    path = outputs / "aug-alexnet-shapes.png"
    assert path.is_file() and str(path.name) in out.output
    w, h = Image.open(path).size
    # 3 rows x 5 columns of 96x96 tiles (32 px enlarged 3x) with 2 px padding, plus the margins
    # that hold the column and row labels
    assert w > 5 * 98 + 2 and h > 3 * 98 + 2


@pytest.mark.parametrize("aug, ops", [("alexnet", "crop, flip, pca"), ("none", "no ops"),
                                      ("mixup", "mixup")])
def test_preview_figure_labels_columns_and_rows(aug, ops):
    from cnnlab.cli.aug import preview_figure
    from cnnlab.config import compose

    cfg = compose([f"aug={aug}", "data=shapes", "data.num_train=100", "data.num_test=20"])
    fig, n = preview_figure(cfg, images=3, copies=4)
    (ax,) = fig.axes
    assert n == 3
    columns = [t.get_text() for t in ax.get_xticklabels()]
    assert columns == ["original", "copy 1", "copy 2", "copy 3", "copy 4"]
    assert ax.xaxis.get_ticks_position() == "top"  # above the grid
    # each row is one training image: its class name, and where it sits in the training set
    from cnnlab import data

    bundle = data.create(cfg.data)
    names = [f"{bundle.class_names[int(c)]} (train #{i})" for i, c in enumerate(bundle.train.labels[:3])]
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    assert ax.get_title() == f"aug={aug} ({ops}) on shapes: each copy a new draw of the preset"
    # the labels sit on the tile centres (pixel i spans i - 0.5 to i + 0.5): 96 px tiles, 2 px padding
    assert list(ax.get_xticks()) == [2 + 47.5 + 98 * k for k in range(5)]
    assert list(ax.get_yticks()) == [2 + 47.5 + 98 * k for k in range(3)]


def test_preview_rejects_bad_counts():
    out = runner.invoke(app, ["aug", "preview", "--images", "0"])
    assert out.exit_code == 2


def test_bench_prints_the_fair_and_per_image_ratios_and_appends_rows(outputs):
    out = runner.invoke(app, ["aug", "bench", "--batch", "8", "--size", "12", "--rounds", "2",
                              "--threads", "1"])
    assert out.exit_code == 0, out.output
    assert "cnnlab / fair: " in out.output and "cnnlab / per-image v2: " in out.output
    assert "target" not in out.output  # no made-up absolute target
    import pandas as pd

    rows = pd.read_csv(outputs / "bench.csv")
    assert list(rows["bench_pipeline"]) == ["cnnlab", "fair", "per-image v2"]
    assert (rows["bench_images_per_sec"] > 0).all() and (rows["threads"] == 1).all()
    assert (rows["aug"] == "alexnet").all()


def test_bench_without_a_fair_baseline_says_so(outputs):
    out = runner.invoke(app, ["aug", "bench", "aug=mixup", "--batch", "8", "--size", "12", "--rounds", "1"])
    assert out.exit_code == 0, out.output
    assert "cnnlab / fair: n/a" in out.output and "mixup" in out.output


@pytest.mark.parametrize("args", [["--batch", "0"], ["--rounds", "0"], ["--threads", "-1"]])
def test_bench_rejects_bad_counts(args):
    out = runner.invoke(app, ["aug", "bench", *args])
    assert out.exit_code == 2 and len(out.output.strip().splitlines()) == 1
