import torch
import torch.nn.functional as F

from cnnlab import augment
from cnnlab.config import compose
from cnnlab.errors import UsageError
import pytest


def _batch(n=16, c=3, h=8, w=8):
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(0))


def test_none_preset_is_no_augmentation():
    assert augment.create(compose(["aug=none"]).aug) is None


def test_flip_mirrors_exactly_the_chosen_samples():
    x = _batch()
    out = augment.create(compose(["aug=flip"]).aug)(x, torch.Generator().manual_seed(1))
    flipped = torch.tensor([torch.equal(o, s.flip(2)) for o, s in zip(out, x)])
    kept = torch.tensor([torch.equal(o, s) for o, s in zip(out, x)])
    assert torch.all(flipped ^ kept) and flipped.any() and kept.any()


def test_crop_matches_a_per_sample_reference():
    cfg = compose(["aug=crop", "aug.crop_padding=2"]).aug
    x = _batch()
    out = augment.create(cfg)(x, torch.Generator().manual_seed(3))
    padded = F.pad(x, (2, 2, 2, 2))
    for o, p in zip(out, padded):
        # every output must equal one of the 25 possible windows of its padded image
        windows = [p[:, i:i + 8, j:j + 8] for i in range(5) for j in range(5)]
        assert any(torch.equal(o, wnd) for wnd in windows)
    assert not torch.equal(out, x)


def test_unknown_op_is_a_usage_error():
    cfg = compose(["aug.ops=[flip,nope]"]).aug
    with pytest.raises(UsageError, match="unknown augmentation op 'nope'"):
        augment.create(cfg)
