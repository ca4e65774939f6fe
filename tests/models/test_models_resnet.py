"""ResNets (CIFAR and ImageNet layouts) and plain networks (He et al. 2016)."""

import pytest
import torch
import torch.nn as nn
import torchvision

from cnnlab import models
from cnnlab.errors import UsageError
from cnnlab.models.resnet import BasicBlock, Bottleneck

IMAGENET = [18, 34, 50, 101, 152]
CIFAR = [8, 20, 32, 44, 56, 110]
PLAIN_CIFAR = [20, 32, 44, 56, 110]
DEEP = {"resnet101", "resnet152", "resnet110", "plain110"}
ALL = ([f"resnet{d}" for d in IMAGENET] + ["plain18", "plain34"]
       + [f"resnet{d}" for d in CIFAR] + [f"plain{d}" for d in PLAIN_CIFAR])


def _meta(name, **opts):
    with torch.device("meta"):
        return models.create(name, **{"num_classes": 1000, "in_chans": 3, **opts})


def _params(m):
    return models.count_params(m)


def test_all_registered():
    assert set(ALL) <= set(models.list_models())


@pytest.mark.parametrize("depth", IMAGENET)
def test_imagenet_param_count_and_shapes_equal_torchvision(depth):
    ours = _meta(f"resnet{depth}")
    with torch.device("meta"):
        tv = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    assert _params(ours) == _params(tv)
    # same layers in the same order (torchvision's module order matches ours)
    assert [p.shape for p in ours.parameters()] == [p.shape for p in tv.parameters()]
    if depth >= 50:  # v1.5: the stride-2 sits on the 3x3 conv, as in torchvision
        blk = ours.stages[1][0]
        assert blk.conv1.stride == (1, 1) and blk.conv2.stride == (2, 2)
        assert tv.layer2[0].conv2.stride == (2, 2)


def test_published_counts():
    # He et al. 2016 / torchvision: 11.7M, 21.8M, 25.6M, 44.5M, 60.2M
    got = [round(_params(_meta(f"resnet{d}")) / 1e6, 1) for d in IMAGENET]
    assert got == [11.7, 21.8, 25.6, 44.5, 60.2]


@pytest.mark.parametrize("depth", [18, 34])
def test_plain_imagenet_is_residual_minus_projections(depth):
    res, plain = _meta(f"resnet{depth}"), _meta(f"plain{depth}")
    proj = sum(_params(m.shortcut) for m in res.modules()
               if isinstance(m, BasicBlock) and isinstance(m.shortcut, nn.Sequential))
    # three projections: 64->128, 128->256, 256->512, each a 1x1 conv + BN (2 params/channel)
    assert proj == sum(i * o + 2 * o for i, o in ((64, 128), (128, 256), (256, 512)))
    assert _params(plain) == _params(res) - proj
    assert all(m.shortcut is None for m in plain.modules() if isinstance(m, BasicBlock))


@pytest.mark.parametrize("depth", PLAIN_CIFAR)
def test_plain_cifar_same_count_as_resnet(depth):
    res = models.create(f"resnet{depth}", 10, 3)
    plain = models.create(f"plain{depth}", 10, 3)
    assert _params(plain) == _params(res)
    assert not any(isinstance(m, nn.Identity) for m in plain.modules())


def _fwd_bwd(model, size, classes=5):
    x = torch.randn(2, 3, size, size)
    out = model(x)
    assert out.shape == (2, classes)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", ALL)
def test_forward_backward(name):
    _fwd_bwd(models.create(name, 5, 3, input_size=(32, 32)), 32)
    if name not in DEEP:
        _fwd_bwd(models.create(name, 5, 3, stem="imagenet"), 64)


def test_stems():
    cifar = models.create("resnet18", 10, 3, input_size=(32, 32))
    assert cifar.stem[0].kernel_size == (3, 3) and cifar.stem[0].stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in cifar.modules())
    imnet = models.create("resnet18", 10, 3, input_size=(224, 224))
    assert imnet.stem[0].kernel_size == (7, 7) and imnet.stem[0].stride == (2, 2)
    assert isinstance(imnet.stem[-1], nn.MaxPool2d)
    # CIFAR resnets default to their own stem; imagenet gives 7x7/2 + max pool at 16 channels
    assert models.create("resnet20", 10, 3).stem[0].kernel_size == (3, 3)
    big = models.create("resnet20", 10, 3, input_size=(224, 224))
    assert big.stem[0].kernel_size == (7, 7) and big.stem[0].out_channels == 16
    assert isinstance(big.stem[-1], nn.MaxPool2d)
    for name in ("resnet18", "resnet20", "plain20"):
        with pytest.raises(UsageError, match="stem"):
            models.create(name, 10, 3, stem="tiny")
    # smallest input the cifar stem must handle
    assert models.create("resnet50", 4, 3, input_size=(8, 8))(torch.randn(2, 3, 8, 8)).shape == (2, 4)


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "plain18", "resnet20", "plain20"])
def test_norm_swaps(name):
    gn = models.create(name, 10, 3, input_size=(32, 32), norm="gn")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in gn.modules())
    n_gn = sum(isinstance(m, nn.GroupNorm) for m in gn.modules())
    bn = models.create(name, 10, 3, input_size=(32, 32))
    assert n_gn == sum(isinstance(m, nn.BatchNorm2d) for m in bn.modules()) > 0
    none = models.create(name, 10, 3, input_size=(32, 32), norm="none")
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) for m in none.modules())


def test_options_change_structure():
    m = models.create("resnet50", 10, 3, input_size=(32, 32), width=0.5, act="gelu", dropout=0.3)
    assert m.stem[0].out_channels == 32
    assert m.head[-1].in_features == 2048 // 2
    assert any(isinstance(x, nn.GELU) for x in m.modules())
    assert not any(isinstance(x, nn.ReLU) for x in m.modules())
    assert [x.p for x in m.modules() if isinstance(x, nn.Dropout)] == [0.3]
    gn = models.create("resnet18", 10, 3, norm="gn", norm_groups=4)
    assert all(x.num_groups == 4 for x in gn.modules() if isinstance(x, nn.GroupNorm))
    with pytest.raises(UsageError):
        models.create("resnet18", 10, 3, norm="bogus")
    with pytest.raises(UsageError):
        models.create("plain34", 10, 3, act="bogus")


def _zero_convs(block):
    for m in block.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.zeros_(m.weight)
    return block.eval()


@pytest.mark.parametrize("cls,ch_in,planes", [(BasicBlock, 8, 8), (Bottleneck, 16, 4)])
def test_residual_block_adds_its_input(cls, ch_in, planes):
    x = torch.randn(2, ch_in, 6, 6)
    res = _zero_convs(cls(ch_in, planes, 1, "bn", 32, "relu", residual=True))
    plain = _zero_convs(cls(ch_in, planes, 1, "bn", 32, "relu", residual=False))
    with torch.no_grad():
        assert torch.allclose(res(x), torch.relu(x))  # identity plus activation
        assert torch.equal(plain(x), torch.zeros_like(x))  # nothing gets through


def test_residual_block_projection_and_padding():
    x = torch.randn(2, 8, 6, 6)
    # option A (CIFAR): subsample and zero-pad, no parameters
    a = _zero_convs(BasicBlock(8, 16, 2, "bn", 32, "relu"))
    with torch.no_grad():
        out = a(x)
    assert torch.allclose(out[:, 4:12], torch.relu(x[:, :, ::2, ::2]))
    assert torch.equal(out[:, :4], torch.zeros_like(out[:, :4]))
    # option B (ImageNet): the projection has weights, and they are what gets through
    b = _zero_convs(BasicBlock(8, 16, 2, "bn", 32, "relu", projection=True))
    assert isinstance(b.shortcut, nn.Sequential)
    with torch.no_grad():
        assert torch.equal(b(x), torch.zeros(2, 16, 3, 3))
        b.shortcut[0].weight.copy_(torch.randn_like(b.shortcut[0].weight))
        assert b(x).abs().sum() > 0
