"""AlexNet, ZFNet and VGG: torchvision equality, the papers' parameter arithmetic, options."""

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from cnnlab import models
from cnnlab.errors import UsageError


def meta(name, **opts):
    with torch.device("meta"):
        return models.create(name, num_classes=opts.pop("num_classes", 1000), in_chans=3, **opts)


def tv(name):
    with torch.device("meta"):
        return getattr(tvm, name)(weights=None)


def shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def count(model, kind):
    return sum(isinstance(m, kind) for m in model.modules())


def conv_linear_params(model):
    def params(kind):
        layers = [m for m in model.modules() if isinstance(m, kind)]
        return sum(p.numel() for m in layers for p in m.parameters())

    return params(nn.Conv2d), params(nn.Linear)


def train_step(model, size, classes=5, chans=3):
    model.train()
    out = model(torch.randn(2, chans, size, size))
    assert out.shape == (2, classes)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


# ---------------------------------------------------------------- AlexNet / ZFNet

def test_alexnet_owt_is_torchvision_alexnet():
    ours, theirs = meta("alexnet", variant="owt"), tv("alexnet")
    assert models.count_params(ours) == models.count_params(theirs) == 61_100_840
    assert shapes(ours) == shapes(theirs)  # same names too, so torchvision weights load
    assert str(ours) == str(theirs)  # same layers in the same order


def test_alexnet_paper_parameter_count_by_hand():
    conv1 = 3 * 96 * 11 * 11 + 96  # 34,944
    conv2 = 96 * 256 * 5 * 5 + 256  # 614,656
    conv3 = 256 * 384 * 3 * 3 + 384  # 885,120
    conv4 = 384 * 384 * 3 * 3 + 384  # 1,327,488
    conv5 = 384 * 256 * 3 * 3 + 256  # 884,992
    fc6 = 256 * 6 * 6 * 4096 + 4096  # 37,752,832
    fc7 = 4096 * 4096 + 4096  # 16,781,312
    fc8 = 4096 * 1000 + 1000  # 4,097,000
    convs, fcs = conv1 + conv2 + conv3 + conv4 + conv5, fc6 + fc7 + fc8
    model = meta("alexnet")
    assert conv_linear_params(model) == (convs, fcs) == (3_747_200, 58_631_144)
    assert models.count_params(model) == 62_378_344  # the paper: "60 million parameters"
    assert convs / fcs < 0.10  # the conv layers hold ~6%: nearly everything is in the FC layers

    # two-GPU split (sec. 3.5): conv2, conv4 and conv5 see half their input maps
    split = (conv1 + (48 * 256 * 25 + 256) + conv3 + (192 * 384 * 9 + 384)
             + (192 * 256 * 9 + 256) + fcs)
    grouped = meta("alexnet", groups=2)
    assert models.count_params(grouped) == split == 60_965_224 < models.count_params(model)
    convs_ = [m for m in grouped.modules() if isinstance(m, nn.Conv2d)]
    assert [c.groups for c in convs_] == [1, 2, 1, 2, 2]
    assert models.count_params(meta("alexnet", variant="owt", groups=2)) < 61_100_840


def test_alexnet_paper_maps_and_layer_order():
    model = meta("alexnet")
    assert model.features(torch.empty(1, 3, 227, 227, device="meta")).shape == (1, 256, 6, 6)
    kinds = [type(m).__name__ for m in model.features]
    assert kinds[:4] == ["Conv2d", "ReLU", "LocalResponseNorm", "MaxPool2d"]  # LRN after ReLU
    assert kinds[4:8] == ["Conv2d", "ReLU", "LocalResponseNorm", "MaxPool2d"]
    assert count(model, nn.LocalResponseNorm) == 2 and count(model, nn.MaxPool2d) == 3
    lrn = next(m for m in model.modules() if isinstance(m, nn.LocalResponseNorm))
    # the paper's alpha 1e-4 without PyTorch's division by the size n=5 (layers.make_norm)
    assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (5, pytest.approx(5e-4), 0.75, 2.0)
    drops = [m for m in model.classifier if isinstance(m, nn.Dropout)]
    assert [d.p for d in drops] == [0.5, 0.5]
    assert type(model.classifier[0]) is nn.Linear  # dropout on fc6/fc7 outputs, not on pool5
    assert count(meta("alexnet", lrn=False), nn.LocalResponseNorm) == 0
    assert count(meta("alexnet", variant="owt"), nn.LocalResponseNorm) == 0
    assert count(meta("alexnet", variant="owt", lrn=True), nn.LocalResponseNorm) == 2


def test_alexnet_pooling_option():
    for name in ("alexnet", "zfnet"):
        over = [m for m in meta(name).modules() if isinstance(m, nn.MaxPool2d)]
        assert [(p.kernel_size, p.stride) for p in over] == [(3, 2)] * 3
        non = [m for m in meta(name, pool="nonoverlap").modules() if isinstance(m, nn.MaxPool2d)]
        assert [(p.kernel_size, p.stride) for p in non] == [(2, 2)] * 3
    # at 227x227 both poolings leave the same 6x6 map, so the parameter count is unchanged
    non = meta("alexnet", pool="nonoverlap")
    assert non.features(torch.empty(1, 3, 227, 227, device="meta")).shape == (1, 256, 6, 6)


def test_zfnet_parameter_count_and_maps_by_hand():
    conv1 = 3 * 96 * 7 * 7 + 96  # 14,208
    conv2 = 96 * 256 * 5 * 5 + 256  # 614,656
    conv345 = (256 * 384 * 9 + 384) + (384 * 384 * 9 + 384) + (384 * 256 * 9 + 256)
    fcs = (256 * 36 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 1000 + 1000)
    model = meta("zfnet")
    assert models.count_params(model) == conv1 + conv2 + conv345 + fcs == 62_357_608
    # Zeiler & Fergus Fig. 3: 224 -> 110 -> 55 -> 26 -> 13 -> 13 -> 13 -> 6
    sizes, x = [], torch.empty(1, 3, 224, 224, device="meta")
    for m in model.features:
        x = m(x)
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d)):
            sizes.append(x.shape[-1])
    assert sizes == [110, 55, 26, 13, 13, 13, 13, 6]
    kinds = [type(m).__name__ for m in model.features][:4]
    assert kinds == ["Conv2d", "ReLU", "MaxPool2d", "LocalResponseNorm"]  # normalise after pooling
    assert models.count_params(meta("zfnet", groups=2)) < 62_357_608


@pytest.mark.parametrize("name,opts", [
    ("alexnet", {}), ("alexnet", {"variant": "owt"}), ("zfnet", {}),
    ("alexnet", {"pool": "nonoverlap", "groups": 2})])
def test_alexnet_family_trains_with_both_stems(name, opts):
    torch.manual_seed(0)
    cifar = models.create(name, 5, 3, input_size=(32, 32), **opts)
    assert isinstance(cifar.features[0], nn.Conv2d) and cifar.features[0].kernel_size == (3, 3)
    assert cifar.classifier[-1].in_features == 512
    train_step(cifar, 32)
    # the imagenet stem at the smallest size create() gives it, at quarter width to stay fast
    imnet = models.create(name, 5, 3, input_size=(96, 96), width=0.25, **opts)
    assert imnet.features[0].kernel_size != (3, 3)
    train_step(imnet, 96)
    for size in (8, 40):  # small odd sizes still reach the classifier
        small = models.create(name, 5, 1, input_size=(size, size), width=0.25, **opts)
        assert small(torch.randn(2, 1, size, size)).shape == (2, 5)


@pytest.mark.parametrize("variant", ["paper", "owt"])
def test_alexnet_narrow_net_keeps_its_signal_and_learns(variant):
    """At width 0.25 with the small-image stem fc6 sees 64 inputs: N(0, 0.01) FC weights (the
    paper's, sized for 9,216 inputs) shrank the signal ~20x per FC layer and plain SGD stayed at
    chance. He-normal hidden FC layers keep fc7's output on the scale of the pooled features."""
    torch.manual_seed(0)
    m = models.create("alexnet", 10, 1, input_size=(16, 16), width=0.25, variant=variant,
                      dropout=0.0).eval()
    x = torch.randn(256, 1, 16, 16)
    with torch.no_grad():
        pooled = torch.flatten(m.avgpool(m.features(x)), 1)
        hidden = m.classifier[:-1](pooled)
    ratio = hidden.pow(2).mean().sqrt() / pooled.pow(2).mean().sqrt()
    assert 0.3 < ratio < 3, ratio
    fc = [c for c in m.classifier if isinstance(c, nn.Linear)]
    assert torch.allclose(fc[0].weight.std(), torch.tensor((2 / fc[0].in_features) ** 0.5), rtol=0.1)
    assert abs(fc[-1].weight.std().item() - 0.01) < 0.002  # the paper's std for the last layer
    assert all(float(c.bias.abs().max()) == 0 for c in fc)


def test_alexnet_narrow_net_learns_with_plain_sgd():
    """10 noisy prototypes, full batch, SGD 0.01 with momentum, 100 steps: with N(0, 0.01) FC
    layers the loss stays at 2.303 (chance, ln 10) for every seed; now 1.0-1.6."""
    torch.manual_seed(0)
    m = models.create("alexnet", 10, 1, input_size=(16, 16), width=0.25, dropout=0.0)
    protos = torch.randn(10, 1, 16, 16)
    y = torch.arange(10).repeat(8)
    data = protos[y] + 0.3 * torch.randn(80, 1, 16, 16)
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    for _ in range(100):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(m(data), y)
        loss.backward()
        opt.step()
    assert loss.item() < 2.0, loss.item()


def test_alexnet_full_size_fc6_init_is_near_the_papers_std():
    torch.manual_seed(0)
    m = models.create("alexnet", 1000, 3)  # fc6 has 9,216 inputs: He's std 0.0147, the paper's 0.01
    fc6 = m.classifier[0]
    assert fc6.in_features == 9216
    assert 0.013 < float(fc6.weight.std()) < 0.0165


@pytest.mark.parametrize("name", ["alexnet", "zfnet"])
def test_alexnet_family_norm_option(name):
    assert count(meta(name), nn.BatchNorm2d) == count(meta(name), nn.GroupNorm) == 0
    bn = meta(name, norm="bn")
    assert count(bn, nn.BatchNorm2d) == 5
    gn = meta(name, norm="gn", norm_groups=8)
    assert count(gn, nn.BatchNorm2d) == 0 and count(gn, nn.GroupNorm) == 5
    kinds = [type(m).__name__ for m in bn.features][:3]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU"]
    assert count(meta(name, norm="gn", lrn=False), nn.LocalResponseNorm) == 0


def test_alexnet_width_dropout_and_groups_round_up():
    m = meta("alexnet", width=0.3, groups=2)  # 96*0.3 = 29 -> 30 so both halves are equal
    assert all(c.out_channels % 2 == 0 for c in m.modules() if isinstance(c, nn.Conv2d))
    assert m.classifier[0].out_features == round(4096 * 0.3)
    drops = [d for d in meta("alexnet", dropout=0.2).modules() if isinstance(d, nn.Dropout)]
    assert [d.p for d in drops] == [0.2, 0.2]


@pytest.mark.parametrize("opts,match", [({"variant": "vgg"}, "variant"), ({"pool": "avg"}, "pool"),
                                        ({"groups": 0}, "groups"), ({"stem": "tiny"}, "stem"),
                                        ({"norm": "batch"}, "norm")])
def test_alexnet_bad_options_fail_clearly(opts, match):
    with pytest.raises(UsageError, match=match):
        models.create("alexnet", 10, 3, **opts)


# ---------------------------------------------------------------- VGG

VGGS = {"vgg11": (8, 132_863_336), "vgg13": (10, 133_047_848),
        "vgg16": (13, 138_357_544), "vgg19": (16, 143_667_240)}


@pytest.mark.parametrize("name", list(VGGS))
def test_vgg_is_torchvision_vgg(name):
    convs, expected = VGGS[name]
    ours, theirs = meta(name), tv(name)
    assert models.count_params(ours) == models.count_params(theirs) == expected
    assert shapes(ours) == shapes(theirs)
    bn, theirs_bn = meta(name, norm="bn"), tv(f"{name}_bn")
    assert models.count_params(bn) == models.count_params(theirs_bn)
    assert shapes(bn) == shapes(theirs_bn)  # running stats included
    assert count(ours, nn.Conv2d) == convs and count(ours, nn.Linear) == 3  # 11/13/16/19 layers
    # Simonyan & Zisserman Table 2: 133, 133, 138, 144 million
    assert round(expected / 1e6) == {"vgg11": 133, "vgg13": 133, "vgg16": 138, "vgg19": 144}[name]
    assert [d.p for d in ours.classifier if isinstance(d, nn.Dropout)] == [0.5, 0.5]


def test_vgg16_parameter_count_by_hand():
    chans = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]  # Table 1, D
    convs, c_in = 0, 3
    for c in chans:
        convs += c_in * c * 9 + c
        c_in = c
    fcs = (512 * 7 * 7 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 1000 + 1000)
    assert models.count_params(meta("vgg16")) == convs + fcs == 138_357_544
    assert models.count_params(meta("vgg16", norm="bn")) == convs + fcs + 2 * sum(chans)


@pytest.mark.parametrize("name", list(VGGS))
def test_vgg_cifar_stem_trains(name):
    torch.manual_seed(0)
    model = models.create(name, 5, 3, input_size=(32, 32), width=0.25 if name != "vgg11" else 1.0)
    assert isinstance(model.avgpool, nn.AdaptiveAvgPool2d) and model.avgpool.output_size == 1
    assert [type(m).__name__ for m in model.classifier] == ["Linear", "ReLU", "Dropout", "Linear"]
    assert count(model, nn.Conv2d) == VGGS[name][0] and count(model, nn.MaxPool2d) == 5
    train_step(model, 32)
    for size in (8, 40):  # ceil-mode pools: 8x8 still reaches 1x1
        small = models.create(name, 5, 1, input_size=(size, size), width=0.25)
        assert small(torch.randn(2, 1, size, size)).shape == (2, 5)


def test_vgg_imagenet_stem_trains_at_small_input():
    model = models.create("vgg11", 5, 3, stem="imagenet", width=0.25)
    fc6 = model.classifier[0]
    assert (fc6.in_features, fc6.out_features) == (128 * 7 * 7, 1024)
    train_step(model, 32)


@pytest.mark.parametrize("name", ["vgg11", "vgg16"])
def test_vgg_norm_and_lrn_options(name):
    convs = VGGS[name][0]
    plain = meta(name)
    assert count(plain, nn.BatchNorm2d) == count(plain, nn.GroupNorm) == 0
    gn = meta(name, norm="gn")
    assert count(gn, nn.BatchNorm2d) == 0 and count(gn, nn.GroupNorm) == convs
    assert count(meta(name, norm="bn"), nn.BatchNorm2d) == convs
    a_lrn = meta(name, lrn=True)  # Table 1, config A-LRN
    kinds = [type(m).__name__ for m in a_lrn.features][:4]
    after = "MaxPool2d" if name == "vgg11" else "Conv2d"
    assert kinds == ["Conv2d", "ReLU", "LocalResponseNorm", after]
    assert count(a_lrn, nn.LocalResponseNorm) == 1
    assert models.count_params(a_lrn) == models.count_params(plain)
    drops = [d for d in meta(name, dropout=0.1).modules() if isinstance(d, nn.Dropout)]
    assert [d.p for d in drops] == [0.1, 0.1]
    with pytest.raises(UsageError, match="stem"):
        models.create(name, 10, 3, stem="big")
