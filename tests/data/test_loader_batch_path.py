"""The loader's batch path: exact batches for a seed (checked against a reference built here from
the documented rule, not from the loader), and no needless float copies of a batch."""

import functools

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from cnnlab.data.loader import InMemoryLoader, StreamLoader

MEAN, STD = [0.2, 0.5, 0.7], [0.3, 0.25, 0.2]


def _data(n=50, c=3, h=5, w=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)
    images[0].fill_(0)
    images[1].fill_(255)  # both ends of the range
    return images, torch.randint(0, 10, (n,), generator=g)


def _reference(images, labels, seed, epoch, batch_size, mean, std):
    """The epoch's batches by the loader's rule: a randperm seeded with seed * 1_000_003 + epoch,
    cut into batches, each pixel (v / 255 - mean) / std in float32."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    out = []
    for b in range(0, len(order), batch_size):
        idx = order[b:b + batch_size].tolist()
        x = torch.stack([images[i] for i in idx]).to(torch.float32) / 255
        out.append(((x - m) / s, torch.tensor([int(labels[i]) for i in idx])))
    return out


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("c", [1, 3])
def test_in_memory_batches_are_exactly_the_reference_for_a_seed(channels_last, c):
    images, labels = _data(c=c)
    mean, std = MEAN[:c], STD[:c]
    loader = InMemoryLoader(images, labels, 16, mean=mean, std=std, shuffle=True, seed=7,
                            channels_last=channels_last)
    for epoch in (0, 3):
        loader.set_epoch(epoch)
        got = list(loader)
        want = _reference(images, labels, 7, epoch, 16, mean, std)
        assert len(got) == len(want) == 4
        for (x, y), (rx, ry) in zip(got, want):
            assert x.dtype == torch.float32 and y.dtype == labels.dtype
            assert torch.equal(x, rx) and torch.equal(y, ry)
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            assert x.is_contiguous(memory_format=fmt)


def test_every_uint8_value_normalises_to_the_same_float32_bits_as_divide_subtract_divide():
    values = torch.arange(256, dtype=torch.int32).to(torch.uint8)
    images = values.view(256, 1, 1, 1).repeat(1, 3, 2, 2)
    loader = InMemoryLoader(images, torch.arange(256), 256, mean=MEAN, std=STD)
    (x, _), = list(loader)
    for ch in range(3):
        ref = torch.tensor([(v / 255.0) for v in range(256)], dtype=torch.float32)
        ref = (ref - torch.tensor(MEAN[ch])) / torch.tensor(STD[ch])
        assert torch.equal(x[:, ch, 0, 0], ref)


def test_bf16_loader_rounds_the_float32_batch():
    images, labels = _data()
    a = InMemoryLoader(images, labels, 50, mean=MEAN, std=STD)
    b = InMemoryLoader(images, labels, 50, mean=MEAN, std=STD, dtype=torch.bfloat16)
    (xa, _), = list(a)
    (xb, _), = list(b)
    assert xb.dtype == torch.bfloat16 and torch.equal(xb, xa.to(torch.bfloat16))


def test_stream_loader_batches_are_the_reference_too():
    images, labels = _data(n=20, c=1)
    dataset = [(images[i], int(labels[i])) for i in range(20)]
    loader = StreamLoader(dataset, labels, 8, mean=MEAN[:1], std=STD[:1], shuffle=True, seed=3,
                          workers=0)
    loader.set_epoch(2)
    for (x, y), (rx, ry) in zip(list(loader), _reference(images, labels, 3, 2, 8, MEAN[:1], STD[:1])):
        assert torch.equal(x, rx) and torch.equal(y, ry)


class _FloatBuffers(TorchDispatchMode):
    """Counts the new float tensors of a batch's size that ops allocate (out= and in-place ops
    write into existing ones and are not counted)."""

    def __init__(self, numel):
        super().__init__()
        self.numel, self.made = numel, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if (isinstance(out, torch.Tensor) and out.is_floating_point() and out.numel() == self.numel
                and not name.endswith("_") and func._overloadname != "out"
                and name not in ("view", "alias", "permute", "detach", "_unsafe_view", "slice")):
            self.made.append(str(func))
        return out


@pytest.mark.parametrize("channels_last", [False, True])
def test_unaugmented_batch_is_made_in_one_float_buffer_and_one_nhwc_copy(channels_last):
    """uint8 in, normalised float32 out: the divide by 255 writes straight into the first float
    buffer, the arithmetic runs in NCHW order, and channels_last adds one copy into NHWC."""
    images, labels = _data(n=32)
    loader = InMemoryLoader(images, labels, 32, mean=MEAN, std=STD, channels_last=channels_last)
    it = iter(loader)
    with _FloatBuffers(images.numel()) as mode:
        x, _ = next(it)
    assert len(mode.made) == 1 + channels_last, mode.made
    assert x.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


# --------------------------------------------------------------------------- augmented batches

def _augmented_reference(images, labels, cfg, seed, epoch, batch_size, chunk, channels_last):
    """The epoch's batches by the documented rule, from the preset's ops run one by one: chunks
    of `chunk` batches, each chunk's images v / 255 through the ops with the augmentation
    generator (seed aug_seed * 1_000_003 + epoch, aug_seed = seed + 1), then (x - mean) / std."""
    from cnnlab.data import augment

    ops = [augment.OPS.get(o)(cfg, train_images=images) for o in cfg.ops]
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    gen = torch.Generator().manual_seed((seed + 1) * 1_000_003 + epoch)
    c = images.shape[1]
    m = torch.tensor(MEAN[:c]).view(1, -1, 1, 1)
    s = torch.tensor(STD[:c]).view(1, -1, 1, 1)
    out = []
    for b in range(0, len(order), batch_size * chunk):
        idx = order[b:b + batch_size * chunk]
        x = images[idx].to(torch.float32) / 255
        for op in ops:
            x = op(x, gen)
        x = (x - m) / s
        for k in range(0, len(idx), batch_size):
            out.append((x[k:k + batch_size], labels[idx[k:k + batch_size]]))
    return out


@pytest.fixture(params=["compiled", "torch"])
def fused_path(request, monkeypatch):
    """The fused crop path both ways: numba's compiled pass, and eager PyTorch (the path without
    numba, and on GPUs)."""
    from cnnlab.data import kernels

    if request.param == "torch":
        monkeypatch.setenv(kernels.ENV, "torch")
    assert kernels.enabled(torch.device("cpu")) == (request.param == "compiled")
    return request.param


@pytest.mark.parametrize("preset", [["aug=alexnet"], ["aug=crop_flip"], ["aug=flip"], ["aug=pca"],
                                    ["aug=alexnet", "aug.crop_size=3"], ["aug=crop"],
                                    ["aug=[flip,cutout]", "aug.cutout_size=2"]])
@pytest.mark.parametrize("chunk", [1, 3])
@pytest.mark.parametrize("channels_last", [False, True])
def test_augmented_batches_are_the_ops_one_by_one_then_normalised(preset, chunk, channels_last,
                                                                  fused_path):
    """The loader's fused path (compiled, or shift, clamp and normalise before one gather into
    the model's memory order) gives the same bits as the ops run one by one, then normalised."""
    _check_augmented(["data=shapes", *preset], 3, chunk, channels_last)


@pytest.mark.parametrize("preset", [["aug=crop_flip"], ["aug=flip"], ["aug=crop", "aug.crop_padding=7"]])
def test_grey_augmented_batches_are_the_ops_one_by_one_then_normalised(preset, fused_path):
    _check_augmented(["data=fashion_mnist", *preset], 1, 3, True)


@functools.lru_cache(maxsize=None)
def _aug_config(overrides: tuple):
    """The composed aug node (read only here), composed once per preset for all the cases."""
    from cnnlab.config import compose

    return compose(list(overrides)).aug


def _check_augmented(overrides, c, chunk, channels_last):
    from cnnlab.data import augment

    images, labels = _data(n=50, c=c, h=5, w=4)
    cfg = _aug_config(tuple(overrides))
    aug = augment.create(cfg, train_images=images)
    loader = InMemoryLoader(images, labels, 8, mean=MEAN[:c], std=STD[:c], shuffle=True, seed=4,
                            augment=aug, channels_last=channels_last, chunk=chunk)
    loader.set_epoch(2)
    got = list(loader)
    want = _augmented_reference(images, labels, cfg, 4, 2, 8, chunk, channels_last)
    assert len(got) == len(want) == 7
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for (x, y), (rx, ry) in zip(got, want):
        assert torch.equal(x, rx) and torch.equal(y, ry)
        assert x.is_contiguous(memory_format=fmt)


def test_a_chunked_epoch_resumes_mid_chunk_and_at_a_chunk_boundary_with_the_same_batches():
    from cnnlab.config import compose
    from cnnlab.data import augment

    images, labels = _data(n=50)
    aug = augment.create(compose(["data=shapes", "aug=alexnet"]).aug, train_images=images)

    def loader():
        return InMemoryLoader(images, labels, 4, mean=MEAN, std=STD, shuffle=True, seed=1,
                              augment=aug, chunk=3)

    full = loader()
    full.set_epoch(5)
    batches, positions = [], []
    for b, batch in enumerate(full, start=1):
        batches.append(batch)
        positions.append(full.position(b))
    assert len(batches) == 13
    # mid-chunk: the state of the chunk's start; at a boundary: the live state, from there
    assert positions[3]["aug_from"] == 3 and positions[4]["aug_from"] == 3
    assert positions[5]["aug_from"] == 6
    for done in (1, 4, 5, 6, 12):
        p = positions[done - 1]
        resumed = loader()
        resumed.set_epoch(5, p["batch"], p["aug"], p["aug_from"])
        tail = list(resumed)
        assert len(tail) == 13 - done
        for (x, y), (rx, ry) in zip(tail, batches[done:]):
            assert torch.equal(x, rx) and torch.equal(y, ry)


def test_presets_that_draw_per_batch_are_not_chunked_and_large_images_chunk_less():
    from cnnlab.config import compose
    from cnnlab.data import augment
    from cnnlab.data.loader import CHUNK_BATCHES, CHUNK_BYTES

    images, labels = _data(n=50)

    def chunk(preset, imgs=images, bs=8):
        aug = augment.create(compose(["data=shapes", *preset]).aug, train_images=imgs) if preset else None
        return InMemoryLoader(imgs, labels[:len(imgs)], bs, mean=MEAN, std=STD, augment=aug).chunk

    assert chunk(None) == chunk(["aug=alexnet"]) == chunk(["aug=[flip,cutout]"]) == CHUNK_BATCHES
    assert chunk(["aug=mixup"]) == chunk(["aug=cutmix"]) == chunk(["aug=color"]) == 1
    big = torch.zeros(2, 3, 64, 64, dtype=torch.uint8)  # 48 KB of float32 an image
    bs = CHUNK_BYTES // (3 * 64 * 64 * 4) // 2  # two batches fill the budget
    assert chunk(None, big, bs) == 2


# --------------------------------------------------------------------------- the compiled pass

@pytest.mark.parametrize("preset", [["aug=alexnet"], ["aug=crop", "aug.crop_size=3", "aug.crop_padding=2"],
                                    ["aug=flip"]])
def test_separable_crop_pixels_are_the_gathered_pixels_with_the_same_draws(preset):
    """pixel_plan(..., separable=True), which the compiled pass reads, names the same source
    pixels as the gather's (N, oh * ow) indices, from the same draws."""
    from cnnlab.config import compose
    from cnnlab.data import augment

    images, _ = _data(n=30, h=6, w=5)
    plan = augment.create(compose(["data=shapes", *preset]).aug, train_images=images).pixel_plan
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    pix, (oh, ow), shift = plan(images.shape, g1, "cpu")
    (rows, cols, oy, ox), size, shift2 = plan(images.shape, g2, "cpu", separable=True)
    assert size == (oh, ow) and rows.shape[1] == oh and cols.shape[1] == ow
    rows, cols = rows[oy], cols[ox]  # (30, oh) and (30, ow)
    both = (rows.view(30, oh, 1) + cols.view(30, 1, ow)).clamp(max=6 * 5).view(30, -1)
    assert torch.equal(both, pix)
    assert (shift is None and shift2 is None) or torch.equal(shift, shift2)
    assert torch.equal(g1.get_state(), g2.get_state())


def _alexnet_loader(images, labels, **kw):
    from cnnlab.config import compose
    from cnnlab.data import augment

    aug = augment.create(compose(["data=shapes", "aug=alexnet"]).aug, train_images=images)
    return InMemoryLoader(images, labels, 8, mean=MEAN, std=STD, shuffle=True, seed=2, augment=aug,
                          channels_last=True, **kw)


def test_without_numba_the_loader_takes_the_eager_path_with_the_same_batches(monkeypatch):
    import sys

    from cnnlab.data import kernels

    images, labels = _data(n=40)
    assert kernels.enabled(torch.device("cpu"))  # numba is a dependency: the compiled pass runs
    compiled = list(_alexnet_loader(images, labels))
    kernels._kernel.cache_clear()
    monkeypatch.setitem(sys.modules, "numba", None)  # `import numba` now raises ImportError
    try:
        assert not kernels.enabled(torch.device("cpu"))
        eager = list(_alexnet_loader(images, labels))
    finally:
        kernels._kernel.cache_clear()
    assert len(eager) == len(compiled) == 5
    for (x, y), (ex, ey) in zip(compiled, eager):
        assert torch.equal(x, ex) and torch.equal(y, ey)


def test_a_data_parallel_shard_reads_its_strided_rows_alike_both_ways(monkeypatch):
    """A rank's rows are every world-th sample of the epoch (a strided view of the order)."""
    from cnnlab.data import kernels

    images, labels = _data(n=50)
    compiled = list(_alexnet_loader(images, labels, rank=1, world=3))
    monkeypatch.setenv(kernels.ENV, "torch")
    eager = list(_alexnet_loader(images, labels, rank=1, world=3))
    assert len(eager) == len(compiled) == 3
    for (x, y), (ex, ey) in zip(compiled, eager):
        assert torch.equal(x, ex) and torch.equal(y, ey)


def test_without_a_folder_for_numbas_cache_the_pass_is_compiled_in_the_process(monkeypatch):
    """numba refuses cache=True where it finds no writable folder (a read-only install without a
    user cache): the kernel is then compiled without a disk cache and gives the same batches."""
    import numba

    from cnnlab.data import kernels

    images, labels = _data(n=20)
    want = list(_alexnet_loader(images, labels))
    real = numba.njit

    def no_cache_folder(*args, **kw):
        if kw.get("cache"):
            raise RuntimeError("cannot cache function: no locator available")
        return real(*args, **kw)

    kernels._kernel.cache_clear()
    monkeypatch.setattr(numba, "njit", no_cache_folder)
    try:
        assert kernels.enabled(torch.device("cpu"))
        got = list(_alexnet_loader(images, labels))
    finally:
        kernels._kernel.cache_clear()
    for (x, y), (wx, wy) in zip(got, want):
        assert torch.equal(x, wx) and torch.equal(y, wy)
