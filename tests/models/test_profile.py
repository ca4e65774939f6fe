import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

from cnnlab import models
from cnnlab.cli.main import app
from cnnlab.errors import UsageError
from cnnlab.models.profile import parse_input, profile

runner = CliRunner()


def test_lecture_conv_example_by_hand():
    # C21: 40x50x128 -> 3x3 conv -> 64 channels needs 3*3*128*64 = 73,728 weights
    p = profile(models.create("conv", 0, 128), (128, 40, 50))
    (row,) = p.rows
    assert row["params"] == 3 * 3 * 128 * 64 == 73_728
    assert row["output"] == "64x40x50" and row["macs"] == 40 * 50 * 64 * 128 * 9
    # padding and stride change the output size ((W - F + 2P)/S + 1), not the weights
    p2 = profile(models.create("conv", 0, 128, padding=0, stride=2), (128, 40, 50))
    assert p2.rows[0]["params"] == 73_728
    assert p2.rows[0]["output"] == f"64x{(40 - 3) // 2 + 1}x{(50 - 3) // 2 + 1}"


def test_three_stacked_3x3_see_7x7_with_27_c_squared_weights():
    c = 16
    stack = profile(models.create("stack3x3", 0, c), (c, 20, 20))
    single = profile(models.create("conv7x7", 0, c), (c, 20, 20))
    convs = [r for r in stack.rows if r["kind"] == "conv"]
    assert [r["rf"] for r in convs] == ["3x3", "5x5", "7x7"]
    assert single.rows[0]["rf"] == "7x7"
    assert stack.total_params == 27 * c * c and single.total_params == 49 * c * c


def test_receptive_field_and_jump_through_strides_pools_and_branches():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 2, 3, stride=2, padding=1)  # rf 3, jump 2
            self.pool = nn.MaxPool2d(2)  # rf 3 + 1*2 = 5, jump 4
            self.b = nn.Conv2d(2, 2, 3, padding=1)  # rf 5 + 2*4 = 13
            self.c = nn.Conv2d(2, 2, (1, 5), padding=(0, 2))  # factorised: rf 5x(5+4*4)=5x21
            self.gap = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(2, 3)

        def forward(self, x):
            y = self.pool(self.a(x))
            z = self.b(y) + self.c(y)  # the sum sees the larger field of each axis
            return self.fc(torch.flatten(self.gap(z), 1))

    rows = {r["layer"]: r for r in profile(Net(), (1, 32, 32)).rows}
    assert (rows["a"]["rf"], rows["a"]["jump"]) == ("3x3", "2x2")
    assert (rows["pool"]["rf"], rows["pool"]["jump"]) == ("5x5", "4x4")
    assert rows["b"]["rf"] == "13x13" and rows["c"]["rf"] == "5x21"
    # global pooling over the 8x8 map covers it all: 13 + 7*4 = 41 high, 21 + 7*4 = 49 wide
    assert rows["gap"]["rf"] == "41x49" and rows["fc"]["macs"] == 6


def test_lenet5_table_by_hand():
    p = profile(models.create("lenet5", 10, 1), (1, 32, 32))
    convs = [r for r in p.rows if r["kind"] == "conv"]
    assert [r["output"] for r in convs] == ["6x28x28", "16x10x10", "120x1x1"]
    assert [r["macs"] for r in convs] == [28 * 28 * 6 * 25, 10 * 10 * 16 * 6 * 25, 120 * 16 * 25]
    assert [r["rf"] for r in convs] == ["5x5", "14x14", "32x32"]
    assert p.total_params == models.count_params(models.create("lenet5", 10, 1))


def test_shares_sum_to_one_and_kinds_split_them():
    p = profile(models.create("resnet20", 10, 3), (3, 32, 32))
    assert sum(r["params_share"] for r in p.rows) == pytest.approx(1)
    kinds = {k["kind"]: k for k in p.by_kind()}
    assert kinds["conv"]["macs_share"] > 0.99 and set(kinds) >= {"conv", "linear", "norm"}


def test_models_show_cli_and_csv():
    out = runner.invoke(app, ["models", "show", "conv", "--input", "128x40x50"], terminal_width=200)
    assert out.exit_code == 0 and "73,728 parameters" in out.output
    out = runner.invoke(app, ["models", "show", "lenet5", "--classes", "10", "--format", "csv"])
    assert out.exit_code == 0 and out.output.startswith("layer,type,output,params,macs,rf,jump")
    out = runner.invoke(app, ["models", "show", "nope"])
    assert out.exit_code == 2
    out = runner.invoke(app, ["models", "show", "conv", "--input", "3x4"])
    assert out.exit_code == 2


def test_parse_input():
    assert parse_input("3x224x224") == (3, 224, 224)
    with pytest.raises(UsageError):
        parse_input("224")


def test_blocks_are_not_trainable(tmp_path):
    from cnnlab.config import compose

    with pytest.raises(UsageError, match="building block"):  # at compose, before any data loads
        compose(["model.name=conv", "trainer.progress=none"])
