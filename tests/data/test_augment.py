
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnlab.config import compose as compose_config, group_choices
from cnnlab.data import augment
from cnnlab.data import pca as pca_stats
from cnnlab.errors import UsageError


def compose(overrides):
    """The config on 32x32 RGB data (shapes): compose checks aug=pca and aug.crop_size against
    the dataset, and these tests run the ops on RGB batches."""
    return compose_config(["data=shapes", *overrides])


# every preset in conf/aug/ and every op in the registry: a new one is tested without editing here
PRESETS = [p for p in group_choices("aug") if p != "none"]
OPS = augment.list_ops()
MIXING = {"mixup", "cutmix", "strong"}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
TRAIN = torch.randint(0, 256, (64, 3, 16, 16), generator=torch.Generator().manual_seed(9), dtype=torch.uint8)


def _batch(n=16, c=3, h=8, w=8, dtype=torch.float32, device="cpu"):
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(0), dtype=dtype).to(device)


def _gen(seed, device="cpu"):
    return torch.Generator(device=device).manual_seed(seed)


def _aug(overrides, train_images=TRAIN):
    return augment.create(compose(overrides).aug, train_images=train_images)


def _run(aug, x, seed, y=None, k=10):
    if aug.mixes:
        y = torch.arange(x.shape[0], device=x.device) % k if y is None else y
        return aug(x, _gen(seed, x.device.type), y, k)
    return aug(x, _gen(seed, x.device.type))


def test_none_preset_is_no_augmentation():
    assert augment.create(compose(["aug=none"]).aug) is None


def test_flip_mirrors_exactly_the_chosen_samples():
    x = _batch()
    out = augment.create(compose(["aug=flip"]).aug)(x, torch.Generator().manual_seed(1))
    flipped = torch.tensor([torch.equal(o, s.flip(2)) for o, s in zip(out, x)])
    kept = torch.tensor([torch.equal(o, s) for o, s in zip(out, x)])
    assert torch.all(flipped ^ kept) and flipped.any() and kept.any()


def test_flip_twice_is_identity_when_p_is_one():
    aug = _aug(["aug=flip", "aug.flip_p=1", "aug.ops=[flip,flip]"])
    x = _batch()
    assert torch.equal(aug(x, _gen(0)), x)
    assert torch.equal(_aug(["aug=flip", "aug.flip_p=1"])(x, _gen(0)), x.flip(3))


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
    with pytest.raises(UsageError, match="unknown augmentation op 'nope'"):  # at compose
        compose(["aug.ops=[flip,nope]"])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_keeps_shape_dtype_device_and_range(preset, dtype, device):
    aug = _aug([f"aug={preset}", "aug.cutout_size=4"])
    assert aug.mixes == (preset in MIXING)
    x = _batch(dtype=dtype, device=device)
    out = _run(aug, x, 0)
    if aug.mixes:
        out, y = out
        assert y.shape == (16, 10) and y.dtype == torch.float32 and y.device == x.device
        assert torch.allclose(y.sum(1), torch.ones(16, device=device), atol=1e-6)
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, x)


@pytest.mark.parametrize("preset", PRESETS)
def test_same_seed_same_output(preset):
    aug = _aug([f"aug={preset}", "aug.cutout_size=4"])
    x = _batch()
    a, b, c = _run(aug, x, 5), _run(aug, x, 5), _run(aug, x, 6)
    if aug.mixes:
        assert torch.equal(a[1], b[1])
        a, b, c = a[0], b[0], c[0]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_the_registry_holds_the_documented_ops():
    assert {"flip", "crop", "scale", "color", "pca", "cutout", "mixup", "cutmix"} <= set(OPS)


@pytest.mark.parametrize("op", OPS)
def test_every_registered_op_alone_is_seeded_and_keeps_the_batch(op):
    aug = _aug([f"aug.ops=[{op}]", "aug.cutout_size=4"])
    assert aug.mixes == (op in ("mixup", "cutmix"))
    x = _batch()
    a, b = _run(aug, x, 7), _run(aug, x, 7)
    if aug.mixes:
        assert torch.equal(a[1], b[1])
        a, b = a[0], b[0]
    assert torch.equal(a, b) and a.shape == x.shape and a.dtype == x.dtype
    assert a.min() >= 0 and a.max() <= 1 and not torch.equal(a, x)


def test_ops_compose_in_order_from_an_override():
    aug = _aug(["aug.ops=[flip,crop,cutout]", "aug.cutout_size=3"])
    assert aug.ops == ["flip", "crop", "cutout"] and not aug.mixes
    x = _batch()
    g = _gen(4)
    ref = augment.make_flip(compose([]).aug)(x, g)
    ref = augment.make_crop(compose([]).aug)(ref, g)
    ref = augment.make_cutout(compose(["aug.cutout_size=3"]).aug)(ref, g)
    assert torch.equal(aug(x, _gen(4)), ref)


# --------------------------------------------------------------------------- PCA lighting

def _known_cov_images():
    """uint8 RGB images whose pixels are 128 + A s for every s in {-1, 1}^3, equally often, so
    their [0, 1] population covariance is exactly A A^T / 255^2."""
    a = np.array([[40, 10, 0], [10, 30, 5], [0, 5, 20]])
    signs = np.array([[i >> k & 1 for k in range(3)] for i in range(8)]) * 2 - 1  # (8, 3)
    pix = 128 + signs @ a.T  # (8, 3)
    pix = np.tile(pix, (32, 1))  # 256 pixels, each combination 32 times
    imgs = torch.from_numpy(pix.reshape(16, 4, 4, 3).astype(np.uint8)).permute(0, 3, 1, 2).contiguous()
    return imgs, a @ a.T / 255.0 ** 2


def test_pca_statistics_match_numpy_eigh_on_a_known_covariance():
    imgs, cov = _known_cov_images()
    assert np.allclose(pca_stats.covariance(imgs).numpy(), cov, atol=1e-12)
    vals, vecs = pca_stats.rgb_pca(imgs)
    ref_vals, ref_vecs = np.linalg.eigh(cov)
    ref_vals, ref_vecs = ref_vals[::-1], ref_vecs[:, ::-1]
    assert vals.dtype == torch.float64 and np.allclose(vals.numpy(), ref_vals, atol=1e-12)
    for k in range(3):  # eigenvectors are defined up to sign
        assert abs(abs(float(vecs[:, k].numpy() @ ref_vecs[:, k])) - 1) < 1e-9
    assert pca_stats.rgb_pca(imgs) is pca_stats.rgb_pca(imgs)  # cached


def test_pca_adds_the_same_lighting_shift_to_every_pixel():
    imgs, _ = _known_cov_images()
    cfg = compose(["aug=pca", "aug.pca_std=0.1"]).aug
    aug = augment.create(cfg, train_images=imgs)
    x = 0.25 + 0.5 * _batch()  # far from the clamp
    out = aug(x, _gen(2))
    vals, vecs = pca_stats.rgb_pca(imgs)
    alpha = torch.randn(16, 3, generator=_gen(2)) * 0.1
    want = (vecs.float() @ (alpha * vals.float()).T).T  # eigvecs @ (alpha * eigvals), per image
    assert torch.allclose(out - x, want.view(16, 3, 1, 1).expand_as(x), atol=1e-6)


def test_pca_needs_rgb_training_images():
    with pytest.raises(UsageError, match="3-channel"):
        _aug(["aug=pca"], train_images=torch.zeros(4, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(UsageError, match="training images"):
        _aug(["aug=pca"], train_images=None)
    with pytest.raises(UsageError, match="3-channel"):
        _aug(["aug=pca"])(_batch(c=1), _gen(0))


# --------------------------------------------------------------------------- colour jitter

def test_color_jitter_with_zero_strength_is_identity():
    aug = _aug(["aug=color", "aug.brightness=0", "aug.contrast=0", "aug.saturation=0"])
    x = _batch()
    assert torch.equal(aug(x, _gen(0)), x)


@pytest.mark.parametrize("kind", ["brightness", "contrast", "saturation"])
def test_color_jitter_matches_torchvision_definitions(kind):
    from torchvision.transforms.v2 import functional as TF

    others = [f"aug.{k}=0" for k in ("brightness", "contrast", "saturation") if k != kind]
    aug = _aug(["aug=color", f"aug.{kind}=0.5", *others])
    x = _batch()
    out = aug(x, _gen(3))
    f = 0.5 + 1.0 * torch.rand(16, generator=_gen(3))  # U[1 - 0.5, 1 + 0.5]
    adjust = getattr(TF, f"adjust_{kind}")
    ref = torch.stack([adjust(s, float(fi)) for s, fi in zip(x, f)])
    assert torch.allclose(out, ref, atol=1e-6)


# --------------------------------------------------------------------------- random-resized-crop

def test_random_resized_crop_with_unit_scale_and_ratio_is_identity():
    aug = _aug(["aug=scale", "aug.scale_min=1", "aug.scale_max=1", "aug.ratio_min=1", "aug.ratio_max=1"])
    x = _batch(h=12, w=12)
    assert torch.allclose(aug(x, _gen(0)), x, atol=1e-5)


def test_random_resized_crop_matches_torchvision_resized_crop_on_its_boxes():
    from torchvision.transforms.v2 import functional as TF

    x = _batch(n=12, h=16, w=20)
    top, left, bh, bw = augment._rrc_boxes(12, 16, 20, _gen(7), "cpu")
    out = _aug(["aug=scale"])(x, _gen(7))
    for i in range(12):
        ref = TF.resized_crop(x[i], int(top[i]), int(left[i]), int(bh[i]), int(bw[i]), [16, 20],
                              antialias=False)
        assert torch.allclose(out[i], ref, atol=1e-5)


def test_random_resized_crop_boxes_respect_scale_and_ratio():
    top, left, bh, bw = augment._rrc_boxes(4000, 64, 64, _gen(1), "cpu", (0.25, 0.5), (0.5, 2.0))
    assert (top >= 0).all() and (left >= 0).all() and (top + bh <= 64).all() and (left + bw <= 64).all()
    area = (bh * bw).double() / 64 ** 2
    ratio = bw.double() / bh
    assert area.min() > 0.22 and area.max() < 0.53  # bounds up to rounding of the sides
    assert ratio.min() > 0.45 and ratio.max() < 2.2
    # offsets reach both ends of their range
    assert (top == 0).any() and (top + bh == 64).any()


# --------------------------------------------------------------------------- cutout

def test_cutout_zeroes_one_clipped_square_per_image():
    size = 5
    aug = _aug(["aug=cutout", f"aug.cutout_size={size}"])
    x = 0.1 + 0.9 * _batch(n=64, h=12, w=12)  # no zeros of its own
    out = aug(x, _gen(0))
    zero = out == 0
    assert torch.equal(zero, zero[:, :1].expand_as(zero))  # all channels
    assert torch.equal(out[~zero], x[~zero])
    full = 0
    for z in zero[:, 0]:
        rows, cols = z.any(1).nonzero()[:, 0], z.any(0).nonzero()[:, 0]
        r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        assert z.sum() == (r1 - r0) * (c1 - c0) and z[r0:r1, c0:c1].all()  # one rectangle
        assert 0 < r1 - r0 <= size and 0 < c1 - c0 <= size
        for a, b in ((r0, r1), (c0, c1)):
            assert b - a == size or a == 0 or b == 12  # shorter only where clipped by the border
        full += int(r1 - r0 == size and c1 - c0 == size)
    assert 0 < full < 64


# --------------------------------------------------------------------------- mixup / cutmix

def _constant_images(n=32):
    """Image i is the constant 0.05 + 0.9 i / n: the value says where every pixel came from."""
    v = 0.05 + 0.9 * torch.arange(n, dtype=torch.float64) / n
    return v.view(n, 1, 1, 1).expand(n, 3, 8, 8).clone(), v


def test_mixup_mixes_images_and_targets_with_the_same_weights():
    aug = _aug(["aug=mixup", "aug.mixup_alpha=0.4"])
    x, v = _constant_images()
    out, y = aug(x, _gen(0), torch.arange(32), 32)
    assert torch.allclose(y.sum(1), torch.ones(32, dtype=y.dtype), atol=1e-6)
    assert torch.allclose(out[:, 0, 0, 0], y.double() @ v, atol=1e-6)
    assert torch.allclose(out, out[:, :1, :1, :1].expand_as(out))
    assert (y.max(1).values < 0.999).any()


def test_mixup_batch_mode_draws_one_lambda():
    aug = _aug(["aug=mixup", "aug.mix_mode=batch", "aug.mixup_alpha=1.0"])
    x, _ = _constant_images()
    _, y = aug(x, _gen(0), torch.arange(32), 32)
    own = y.diagonal()
    lam = own[own < 1].min()  # samples whose partner is not themselves
    partner = y.clone().fill_diagonal_(0).max(1).values
    assert torch.allclose(own[own < 1], lam.expand(int((own < 1).sum())), atol=1e-6)
    assert torch.allclose((own + partner)[own < 1], torch.ones(int((own < 1).sum())), atol=1e-6)


def test_cutmix_target_weights_equal_pixel_proportions():
    aug = _aug(["aug=cutmix"])
    x, v = _constant_images()
    out, y = aug(x, _gen(1), torch.arange(32), 32)
    assert torch.allclose(y.sum(1), torch.ones(32), atol=1e-6)
    src = (out[:, 0].double().unsqueeze(-1) - v).abs().argmin(-1)  # (32, 8, 8) source image index
    frac = F.one_hot(src.view(32, -1), 32).double().mean(1)
    assert torch.allclose(y.double(), frac, atol=1e-6)
    assert ((frac.diagonal() > 0) & (frac.diagonal() < 1)).any()


def test_mixing_needs_labels_and_accepts_soft_targets():
    aug = _aug(["aug=cutmix"])
    x = _batch()
    with pytest.raises(TypeError, match="mix targets"):
        aug(x, _gen(0))
    soft = torch.full((16, 4), 0.25)
    _, y = aug(x, _gen(0), soft)
    assert torch.allclose(y, soft)


def test_beta_sampler_moments():
    for a in (0.2, 1.0, 2.0):
        s = augment.sample_beta(a, 40000, _gen(0), "cpu")
        assert s.min() >= 0 and s.max() <= 1
        assert abs(float(s.mean()) - 0.5) < 0.01
        assert abs(float(s.var()) - 1 / (4 * (2 * a + 1))) < 0.01


@pytest.mark.parametrize("override", ["aug.flip_p=2", "aug.crop_padding=-1", "aug.scale_min=0",
                                      "aug.ratio_min=2", "aug.brightness=-1", "aug.cutout_size=-2",
                                      "aug.mixup_alpha=0", "aug.mix_mode=row"])
def test_bad_parameters_are_usage_errors(override):
    with pytest.raises(UsageError):
        _aug(["aug.ops=[flip,crop,scale,color,cutout,mixup]", override])


def test_pca_statistics_from_a_streamed_dataset_match_the_tensor():
    imgs, _ = _known_cov_images()
    dataset = [(img, 0) for img in imgs]
    assert torch.allclose(pca_stats.covariance(dataset), pca_stats.covariance(imgs), atol=1e-12)
    aug = augment.create(compose(["aug=pca"]).aug, train_images=dataset)
    assert aug(_batch(), _gen(0)).shape == (16, 3, 8, 8)


def test_crop_then_flip_runs_as_one_gather_with_the_same_result():
    """create() fuses crop followed by flip; the output equals the two ops run one by one."""
    from cnnlab.data import augment

    cfg = compose(["aug=[crop,flip]", "aug.flip_p=0.5"]).aug
    x = torch.rand(33, 3, 20, 24)
    fused = augment.create(cfg)
    ops = [augment.OPS.get(o)(cfg) for o in cfg.ops]
    for seed in range(4):
        ref = x
        g = torch.Generator().manual_seed(seed)
        for op in ops:
            ref = op(ref, g)
        out = fused(x, torch.Generator().manual_seed(seed))
        assert torch.equal(out, ref)
    crop = augment.OPS.get("crop")(compose(["aug=crop", "aug.crop_padding=0"]).aug)
    pix, oh, ow = crop.pixels(33, 20, 24, torch.Generator().manual_seed(0), "cpu", flip_p=1.0)
    mirrored = augment.gather_pixels(augment.with_pad_pixel(x, 0), pix, oh, ow)
    assert torch.equal(mirrored, x.flip(3))


@pytest.mark.parametrize("overrides", [["aug=alexnet"], ["aug=[crop,pca]"], ["aug=alexnet", "aug.crop_size=20"],
                                       ["aug=alexnet", "aug.crop_padding=0"],
                                       ["aug=[crop,flip,pca,crop,flip]", "aug.crop_padding=9"],
                                       ["aug=flip"], ["aug=pca"], ["aug=[flip,pca]"],
                                       ["aug=[pca,flip,crop,cutout]"]])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_crop_flip_pca_fused_equals_the_ops_one_by_one(overrides, dtype):
    """create() gathers crops from the unpadded image and adds the lighting in place (padding
    pixels get the shift alone); images and draws equal the ops run one by one."""
    cfg = compose(overrides).aug
    fused = augment.create(cfg, train_images=TRAIN)
    ops = [augment.OPS.get(o)(cfg, train_images=TRAIN) for o in cfg.ops]
    x = torch.rand(17, 3, 20, 24, generator=_gen(1)).to(dtype).contiguous(memory_format=torch.channels_last)
    for seed in range(3):
        ref, g = x, _gen(seed)
        for op in ops:
            ref = op(ref, g)
        g2 = _gen(seed)
        assert torch.equal(fused(x, g2), ref)
        assert torch.equal(g.get_state(), g2.get_state())
