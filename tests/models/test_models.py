import pytest
import torch

from cnnlab import models
from cnnlab.errors import UsageError


def test_lenet5_parameter_count_by_hand():
    # C1 1*6*25+6, C3 6*16*25+16, C5 16*120*25+120, F6 120*84+84, output 84*10+10
    expected = 156 + 2416 + 48120 + 10164 + 850
    assert models.count_params(models.create("lenet5", 10, 1)) == expected == 61706


@pytest.mark.parametrize("depth", [8, 20, 56])
def test_cifar_resnet_parameter_count_by_hand(depth):
    n = (depth - 2) // 6
    convs = 3 * 16 * 9  # stem
    bns = 2 * 16
    for i, c in enumerate((16, 32, 64)):
        for j in range(n):
            cin = c // 2 if (i > 0 and j == 0) else c
            convs += cin * c * 9 + c * c * 9
            bns += 2 * (2 * c)
    fc = 64 * 10 + 10
    assert models.count_params(models.create(f"resnet{depth}", 10, 3)) == convs + bns + fc
    if depth == 20:  # He et al. 2016, Table 6: 0.27M
        assert round((convs + bns + fc) / 1e6, 2) == 0.27


@pytest.mark.parametrize("name", list(models.list_models(kind="classifier")))
def test_every_model_runs_on_the_smallest_input(name):
    # 8x8 (digits) is the smallest input cnnlab ships; the family test files cover 32x32 and up,
    # forward and backward
    model = models.create(name, num_classes=7, in_chans=1, input_size=(8, 8)).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 8, 8))
    assert out.shape == (2, 7)


@pytest.mark.parametrize("size", [32, 40])
def test_small_models_run_at_other_sizes(size):
    for name in ("lenet5", "resnet8"):
        model = models.create(name, num_classes=7, in_chans=1, input_size=(size, size))
        assert model(torch.randn(2, 1, size, size)).shape == (2, 7)


def test_options_reach_the_family_and_bad_ones_fail():
    m = models.create("resnet8", 10, 3, norm="gn", norm_groups=4, act="gelu", width=0.5)
    assert any(isinstance(x, torch.nn.GroupNorm) for x in m.modules())
    assert any(isinstance(x, torch.nn.GELU) for x in m.modules())
    with pytest.raises(UsageError, match="has no option 'pool'"):
        models.create("resnet8", 10, 3, pool="max")
    with pytest.raises(UsageError, match="unknown model"):
        models.create("nope", 10, 3)
