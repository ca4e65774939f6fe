"""DesignNet's block designs (C8, C9): weights and receptive fields by hand, every design runs."""

import pytest
import torch

from cnnlab import models
from cnnlab.errors import UsageError
from cnnlab.models.designnet import BLOCKS, make_block
from cnnlab.models.profile import profile


def _conv_weights(m):
    return sum(x.weight.numel() for x in m.modules() if isinstance(x, torch.nn.Conv2d))


@pytest.mark.parametrize("kind,weights", [
    ("7x7", 49), ("3x3x3", 27), ("5x5", 25), ("3x3x2", 18), ("3x3", 9), ("1x7+7x1", 14),
])
def test_stage_weights_by_hand(kind, weights):
    c = 16
    assert _conv_weights(make_block(kind, c, c)) == weights * c * c


def test_bottleneck_and_separable_weights_by_hand():
    c = 64
    assert _conv_weights(make_block("bottleneck", c, c)) == c * 16 + 9 * 16 * 16 + 16 * c
    assert _conv_weights(make_block("separable", c, c)) == 9 * c + c * c


@pytest.mark.parametrize("a,b", [("7x7", "3x3x3"), ("5x5", "3x3x2"), ("7x7", "1x7+7x1"),
                                 ("3x3", "bottleneck"), ("3x3", "separable")])
def test_paired_designs_see_the_same_receptive_field(a, b):
    def field(kind):
        p = profile(torch.nn.Sequential(make_block(kind, 8, 8)), (8, 32, 32))
        return [r["rf"] for r in p.rows if r["kind"] == "conv"][-1]
    assert field(a) == field(b)


@pytest.mark.parametrize("kind", BLOCKS)
def test_every_design_classifies_a_batch(kind):
    net = models.create("designnet", num_classes=5, in_chans=3, input_size=(32, 32), block=kind, width=0.25)
    out = net(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 5) and torch.isfinite(out).all()


def test_unknown_block_is_a_usage_error():
    with pytest.raises(UsageError, match="block must be one of"):
        models.create("designnet", num_classes=5, block="9x9")
