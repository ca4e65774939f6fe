"""cnnlab.bench.design (bench-conv --design): the table against hand arithmetic."""

import pytest
from typer.testing import CliRunner

from cnnlab.bench import design
from cnnlab.cli.main import app


@pytest.fixture(scope="module")
def table():
    return design.compare(batch=1, channels=16, size=8, repeats=1).set_index(["comparison", "design"])


def test_params_macs_and_receptive_fields_match_hand_arithmetic(table):
    C, hw = 16, 8 * 8
    t = table
    assert t.loc[("7x7 vs 3x(3x3)", "one 7x7"), "params"] == 49 * C * C
    assert t.loc[("7x7 vs 3x(3x3)", "three 3x3"), "params"] == 27 * C * C
    assert t.loc[("7x7 vs 3x(3x3)", "three 3x3"), "receptive_field"] == 7
    assert t.loc[("7x7 vs 3x(3x3)", "three 3x3"), "params_ratio"] == pytest.approx(27 / 49)
    assert t.loc[("5x5 vs 2x(3x3)", "two 3x3"), ["params", "receptive_field"]].tolist() == [18 * C * C, 5]
    assert t.loc[("3x3 vs bottleneck", "1x1 C/2, 3x3 C/2, 1x1 C"), "params"] == 3.25 * C * C
    assert t.loc[("3x3 vs 1x3+3x1", "1x3 then 3x1"), "params"] == 6 * C * C
    assert t.loc[("7x7 vs 1x7+7x1", "1x7 then 7x1"), "receptive_field"] == 7
    assert t.loc[("full vs depthwise-separable", "depthwise 3x3 + pointwise 1x1"), "params"] == 9 * C + C * C
    assert t.loc[("7x7 vs 3x(3x3)", "one 7x7"), "macs"] == 49 * C * C * hw
    assert (t.median_ms > 0).all()


def test_inception_reproduces_854m_and_recomputes_the_reduced_module(table):
    naive = table.loc[("inception naive vs 1x1 reductions", "naive")]
    reduced = table.loc[("inception naive vs 1x1 reductions", "with 1x1 reductions")]
    hw = 28 * 28
    assert naive.macs == hw * 256 * (128 + 192 * 9 + 96 * 25) == 854_196_224  # the lecture's 854M
    # the lecture's six terms: 1x1 64, 1x1 64, 1x1 128, 3x3 192 on 64, 5x5 96 on 64, 1x1 64
    assert reduced.macs == hw * (64 * 256 * 3 + 128 * 256 + 192 * 9 * 64 + 96 * 25 * 64) == 271_351_808
    assert reduced.receptive_field == naive.receptive_field == 5
    assert reduced.macs_ratio == pytest.approx(271_351_808 / 854_196_224)


def test_cli_design_quick(tmp_path):
    r = CliRunner().invoke(app, ["bench-conv", "--design", "--quick", "--repeats", "1",
                                 "--out", str(tmp_path / "d")])
    assert r.exit_code == 0, r.output
    for f in ("design.csv", "design.md", "design.png"):
        assert (tmp_path / "d" / f).is_file()
