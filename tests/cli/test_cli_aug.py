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
    # 3 rows x 5 columns of 96x96 tiles (32 px enlarged 3x) with 2 px padding
    assert (w, h) == (5 * 98 + 2, 3 * 98 + 2)


def test_preview_rejects_bad_counts():
    out = runner.invoke(app, ["aug", "preview", "--images", "0"])
    assert out.exit_code == 2


def test_bench_prints_both_rates():
    out = runner.invoke(app, ["aug", "bench", "--batch", "32"])
    assert out.exit_code == 0 and "img/s" in out.output and "faster" in out.output
