"""torchvision's pretrained weights in cnnlab's models: offline, mapped by position, verified.

No network and no real weights: each test saves a randomly initialised torchvision network where
torch hub would cache the real file (under a temporary TORCH_HOME) and checks that the cnnlab
model loaded from it computes what torchvision's computes. Batch norms get random statistics and
affine parameters, so two swapped batch norms change the outputs, as with real weights.
"""

from __future__ import annotations

import re

import pytest
import torch
import torchvision
from torch import nn

from cnnlab import models
from cnnlab.errors import CnnlabError, DataError, UsageError
from cnnlab.models import torchvision_weights as tw

SIZE = 64  # every architecture here runs at 64x64 (alexnet's minimum is 63)
# torchvision's pretrained googlenet is built with transform_input=True and its file holds the
# auxiliary heads (torchvision's googlenet builder); the others are plain get_model(arch)
TV_KWARGS = {"googlenet": {"aux_logits": True, "transform_input": True, "init_weights": False}}
FILE_KWARGS = {"googlenet": {"aux_logits": True, "init_weights": True}}
ARCHS = ["resnet18", "resnet50", "vgg11", "alexnet", "mobilenet_v2", "densenet121", "googlenet"]


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh, empty torch hub cache; downloading is made impossible."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    if not torch.hub.get_dir().startswith(str(tmp_path)):  # someone called torch.hub.set_dir
        monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch" / "hub"))

    def no_download(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    yield tmp_path / "torch"
    for f in (tmp_path / "torch").rglob("*.pth"):  # don't leave VGG's 0.5 GB in pytest's tmp
        f.unlink()


def randomise_norms(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
            m.running_var.copy_(0.5 + torch.rand(n, generator=g))
            m.weight.data.copy_(0.5 + torch.rand(n, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(n, generator=g))
            m.num_batches_tracked.fill_(7)


def fake_weights(spec: str, legacy: bool = False) -> nn.Module:
    """Save a random torchvision network at `weights_file(spec)`; return torchvision's network
    as the pretrained one is used (eval mode). `legacy` writes the file the way 2017-era files
    are: no num_batches_tracked, and densenet's old `norm.1` names."""
    arch = spec.split(".")[0]
    torch.manual_seed(0)
    source = torchvision.models.get_model(arch, weights=None, **FILE_KWARGS.get(arch, {}))
    randomise_norms(source)
    state = source.state_dict()
    if legacy:
        state = {re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", k): v
                 for k, v in state.items() if not k.endswith("num_batches_tracked")}
    path = tw.weights_file(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    ref = torchvision.models.get_model(arch, weights=None, **TV_KWARGS.get(arch, {}))
    ref.load_state_dict(source.state_dict())
    return ref.eval()


def normalise(pixels, mean, std):
    return (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def close(got, want):
    return torch.allclose(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_loaded_model_computes_what_torchvision_computes(home, arch):
    spec = f"{arch}.IMAGENET1K_V1"
    ref = fake_weights(spec, legacy=arch == "densenet121")  # its real file is a 2017 one
    assert tw.weights_file(spec).is_relative_to(home / "hub" / "checkpoints")

    lw = tw.load(spec, check_size=SIZE)

    weights = tw.weights_enum(spec)
    tf = weights.transforms()
    pixels = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    lw.model.eval()
    with torch.no_grad():
        want = ref(normalise(pixels, tf.mean, tf.std))
        got = lw.model(normalise(pixels, lw.mean, lw.std))
    assert got.shape == (2, 1000)
    assert close(got, want), (got - want).abs().max()

    assert lw.model_name == arch and lw.model_name in models.list_models()
    assert (lw.input_size, lw.resize_size) == (224, 256)
    assert lw.categories == weights.meta["categories"] and len(lw.categories) == 1000
    assert lw.num_params == models.count_params(lw.model) == weights.meta["num_params"]
    assert lw.path == tw.weights_file(spec) and lw.url == weights.url
    mean, std = ((0.5,) * 3, (0.5,) * 3) if arch == "googlenet" else (tf.mean, tf.std)
    assert lw.mean == pytest.approx(tuple(mean)) and lw.std == pytest.approx(tuple(std))
    assert not any(p.is_meta for p in lw.model.state_dict().values())


def test_supported_architectures():
    names = tw.supported()
    for arch in ARCHS + ["resnet34", "resnet101", "resnet152", "vgg13", "vgg16", "vgg19",
                         "vgg11_bn", "vgg19_bn"]:
        assert arch in names
    assert "convnext_tiny" not in names and "efficientnet_b0" not in names
    assert tw.recipe("alexnet").options == {"variant": "owt"}
    assert tw.recipe("vgg16_bn").model == "vgg16"


def test_missing_file_is_one_line_with_url_and_path(home):
    spec = "resnet18.IMAGENET1K_V1"
    with pytest.raises(DataError) as err:
        tw.load(spec)
    msg = str(err.value)
    assert "\n" not in msg
    assert tw.weights_enum(spec).url in msg
    assert str(tw.weights_file(spec)) in msg and str(home) in msg
    assert "TORCH_HOME" in msg


def test_weights_file_follows_torch_home_and_default_alias(home):
    path = tw.weights_file("resnet50.DEFAULT")
    assert path == home / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth"
    assert path == tw.weights_file("resnet50.IMAGENET1K_V2") == tw.weights_file("resnet50.imagenet1k_v2")
    assert tw.parse(" resnet18.IMAGENET1K_V1 ") == ("resnet18", "IMAGENET1K_V1")
    assert tw.weights_enum("resnet18.DEFAULT") is torchvision.models.ResNet18_Weights.IMAGENET1K_V1


@pytest.mark.parametrize("spec, words", [
    ("resnet18", ["<arch>.<WEIGHTS>", "resnet18.IMAGENET1K_V1"]),
    ("resnet18.", ["<arch>.<WEIGHTS>"]),
    ("a.b.c", ["<arch>.<WEIGHTS>"]),
    ("resnet18.NOPE", ["resnet18.NOPE", "resnet18.IMAGENET1K_V1", "resnet18.DEFAULT"]),
    ("nosuchnet.DEFAULT", ["nosuchnet", "resnet18", "vgg11", "densenet121"]),
    ("convnext_tiny.DEFAULT", ["convnext_tiny", "resnet18", "mobilenet_v2"]),
    ("efficientnet_b0.IMAGENET1K_V1", ["efficientnet_b0", "alexnet"]),
])
def test_bad_specs_are_usage_errors(home, spec, words):
    with pytest.raises(UsageError) as err:
        tw.load(spec)
    msg = str(err.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg


def _swap_same_shaped(monkeypatch, pick):
    """Make key_map swap the sources of the first two target keys `pick` chooses."""
    real = tw.key_map

    def swapped(source, target, drop=(), name=""):
        mapping = real(source, target, drop, name)
        keys = [k for k in mapping if pick(k, target[k])]
        a, b = next((a, b) for i, a in enumerate(keys) for b in keys[i + 1:]
                    if target[a].shape == target[b].shape)
        mapping[a], mapping[b] = mapping[b], mapping[a]
        return mapping

    monkeypatch.setattr(tw, "key_map", swapped)


@pytest.mark.parametrize("pick", [
    lambda k, t: t.dim() == 4,  # two 3x3 convs of 64 filters
    lambda k, t: k.endswith("running_var"),  # two batch norms' statistics
], ids=["convs", "norms"])
def test_plausible_but_wrong_mapping_is_caught(home, monkeypatch, pick):
    fake_weights("resnet18.IMAGENET1K_V1")
    _swap_same_shaped(monkeypatch, pick)
    with pytest.raises(CnnlabError, match="mapping torchvision's resnet18 .* failed: outputs differ"):
        tw.load("resnet18.IMAGENET1K_V1", check_size=SIZE)


def test_key_map_pairs_in_order_and_reports_mismatches():
    t = torch.empty
    source = {"conv1.weight": t(8, 3, 3, 3), "bn1.weight": t(8), "bn1.running_mean": t(8),
              "bn1.num_batches_tracked": t(()), "aux.weight": t(5), "fc.weight": t(2, 8)}
    target = {"stem.0.weight": t(8, 3, 3, 3), "stem.1.weight": t(8), "stem.1.running_mean": t(8),
              "stem.1.num_batches_tracked": t(()), "head.weight": t(2, 8)}
    assert tw.key_map(source, target, drop=("aux.",)) == {
        "stem.0.weight": "conv1.weight", "stem.1.weight": "bn1.weight",
        "stem.1.running_mean": "bn1.running_mean",
        "stem.1.num_batches_tracked": "bn1.num_batches_tracked", "head.weight": "fc.weight"}
    no_counter = {k: v for k, v in source.items() if "num_batches" not in k}
    assert tw.key_map(no_counter, target, drop=("aux.",))["stem.1.num_batches_tracked"] is None
    with pytest.raises(CnnlabError, match="5 tensors against 4"):
        tw.key_map(source, target, name="x")
    with pytest.raises(CnnlabError, match=r"fc.weight \(2, 8\) does not fit head.weight \(3, 8\)"):
        tw.key_map(source, {**target, "head.weight": t(3, 8)}, drop=("aux.",), name="x")


def test_new_head_for_other_class_counts(home):
    fake_weights("resnet18.IMAGENET1K_V1")
    full = tw.load("resnet18.IMAGENET1K_V1", check_size=SIZE)
    lw = tw.load("resnet18.IMAGENET1K_V1", num_classes=10, check_size=SIZE)
    assert lw.new_keys == ("head.3.weight", "head.3.bias")
    assert lw.model(torch.rand(1, 3, SIZE, SIZE)).shape == (1, 10)
    body, new = full.model.state_dict(), lw.model.state_dict()
    assert all(torch.equal(body[k], v) for k, v in new.items() if k not in lw.new_keys)


def test_unreadable_or_foreign_file_is_a_data_error(home):
    spec = "resnet18.IMAGENET1K_V1"
    path = tw.weights_file(spec)
    path.parent.mkdir(parents=True)
    path.write_text("<html>404</html>")
    with pytest.raises(DataError, match="cannot read"):
        tw.load(spec)
    torch.save(torchvision.models.get_model("resnet34", weights=None).state_dict(), path)
    with pytest.raises(DataError, match="does not hold torchvision's resnet18 weights"):
        tw.load(spec)
