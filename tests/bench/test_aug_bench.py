"""The fair baseline of `cnnlab aug bench` (cnnlab.bench.aug): the same work as cnnlab's preset,
written with plain tensor ops, so the speed ratio compares implementations, not work."""

import pytest
import torch

from cnnlab.bench import aug as aug_bench
from cnnlab.config import compose as compose_config
from cnnlab.data import augment

TRAIN = torch.randint(0, 256, (64, 3, 16, 16), generator=torch.Generator().manual_seed(9), dtype=torch.uint8)


def _cfg(*overrides):
    return compose_config(["data=shapes", *overrides]).aug


def _x(n=24, h=32, w=32, dtype=torch.float32):
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(3)).to(dtype)


@pytest.mark.parametrize("overrides", [["aug=alexnet"], ["aug=crop_flip"], ["aug=pca"], ["aug=flip"],
                                       ["aug=alexnet", "aug.crop_size=28"],
                                       ["aug=alexnet", "aug.crop_padding=0"],
                                       ["aug=[flip,pca,crop]", "aug.crop_padding=7"]])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_fair_baseline_gives_cnnlabs_images_for_the_same_draws(overrides, dtype):
    cfg = _cfg(*overrides)
    fair = aug_bench.fair_baseline(cfg, TRAIN)
    ours = augment.create(cfg, train_images=TRAIN)
    x = _x(h=20, w=24, dtype=dtype)
    for seed in range(3):
        g1, g2 = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        a, b = fair(x, g1), ours(x, g2)
        assert a.dtype == b.dtype == dtype and a.shape == b.shape
        assert torch.equal(a, b)
        assert torch.equal(g1.get_state(), g2.get_state())  # the same number of draws


def test_fair_crop_is_the_padded_window_and_flip_mirrors_it():
    """Checked against a per-image loop: each output is a window of the zero-padded image at an
    offset in [0, 2 * pad], mirrored or not, and both cases occur."""
    cfg = _cfg("aug=crop_flip")
    x = _x(n=64, h=12, w=10)
    out = aug_bench.fair_baseline(cfg)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    mirrored = 0
    for img, got in zip(padded, out):
        windows = {(dy, dx, m) for dy in range(9) for dx in range(9) for m in (False, True)
                   if torch.equal(got, (lambda w_: w_.flip(2) if m else w_)(img[:, dy:dy + 12, dx:dx + 10]))}
        assert windows, "output is not a (mirrored) window of the padded image"
        mirrored += all(m for _, _, m in windows)
    assert 10 < mirrored < 54  # flip_p 0.5 over 64 images


def test_fair_pca_shifts_every_pixel_of_an_image_by_one_rgb_offset():
    cfg = _cfg("aug=pca")
    x = torch.full((32, 3, 6, 6), 0.5)
    out = aug_bench.fair_baseline(cfg, TRAIN)(x, torch.Generator().manual_seed(0))
    shift = out - x
    assert torch.allclose(shift, shift[:, :, :1, :1].expand_as(shift))
    assert shift.abs().amax() > 0 and out.min() >= 0 and out.max() <= 1


def test_no_fair_baseline_or_per_image_pipeline_for_other_ops():
    for preset in ("mixup", "classic", "none"):
        cfg = _cfg(f"aug={preset}")
        assert aug_bench.fair_baseline(cfg, TRAIN) is None
        assert aug_bench.per_image_v2(cfg, 32, TRAIN)[0] is None


def test_per_image_v2_keeps_shape_and_range():
    fn, names, left = aug_bench.per_image_v2(_cfg("aug=alexnet"), 32, TRAIN)
    x = _x(n=5)
    out = fn(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1 and not left
    assert "RandomCrop" in names and "PCA lighting" in names


def test_measure_interleaves_all_three_pipelines():
    r = aug_bench.measure(_cfg("aug=alexnet"), batch=8, size=8, threads=1, rounds=2, calls=1, warmup=0)
    assert set(r.rounds) == {"cnnlab", "fair", "per-image v2"}
    assert all(len(v) == 2 and min(v) > 0 for v in r.rounds.values())
    assert r.threads == 1 and r.ratio("cnnlab", "cnnlab") == 1.0
