import pytest
import torch

from cnnlab.data.loader import InMemoryLoader, StreamLoader

MEAN, STD = [0.5], [0.25]


def _images(n=103):
    # each image's pixels encode its index, so a batch tells which samples it holds
    return (torch.arange(n) % 256).to(torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()


def _ids(x):
    return torch.round((x[:, 0, 0, 0] * STD[0] + MEAN[0]) * 255).long()


def test_every_sample_once_per_epoch_and_epochs_differ():
    loader = InMemoryLoader(_images(), torch.arange(103), 10, mean=MEAN, std=STD, shuffle=True, seed=1)
    orders = []
    for epoch in (1, 2):
        loader.set_epoch(epoch)
        ids = torch.cat([y for _, y in loader])
        assert sorted(ids.tolist()) == list(range(103))
        orders.append(ids)
    assert not torch.equal(orders[0], orders[1])
    assert len(loader) == 11


def test_batches_are_normalised_and_match_labels():
    loader = InMemoryLoader(_images(), torch.arange(103), 16, mean=MEAN, std=STD, shuffle=True, seed=0)
    loader.set_epoch(3)
    for x, y in loader:
        assert x.dtype == torch.float32
        assert torch.equal(_ids(x), y)


def test_same_seed_and_epoch_replay_exactly_and_resume_mid_epoch():
    a = InMemoryLoader(_images(), torch.arange(103), 8, mean=MEAN, std=STD, shuffle=True, seed=5)
    b = InMemoryLoader(_images(), torch.arange(103), 8, mean=MEAN, std=STD, shuffle=True, seed=5)
    a.set_epoch(4)
    full = [y for _, y in a]
    b.set_epoch(4, start_batch=3)
    tail = [y for _, y in b]
    assert all(torch.equal(p, q) for p, q in zip(full[3:], tail)) and len(tail) == len(full) - 3


def test_rank_shards_are_disjoint_and_cover_the_epoch():
    shards = []
    for rank in range(3):
        loader = InMemoryLoader(_images(), torch.arange(103), 7, mean=MEAN, std=STD, shuffle=True,
                                seed=2, rank=rank, world=3)
        loader.set_epoch(1)
        shards.append(torch.cat([y for _, y in loader]))
    ids = torch.cat(shards)
    assert sorted(ids.tolist()) == list(range(103))


def test_augmentation_runs_on_whole_batches_on_the_loader_device():
    calls = []

    def augment(x, gen):
        calls.append((x.shape[0], x.device, x.dtype, gen.device))
        return 1.0 - x  # a visible change

    loader = InMemoryLoader(_images(), torch.arange(103), 32, mean=MEAN, std=STD, shuffle=True,
                            seed=0, augment=augment, device="cpu")
    loader.set_epoch(1)
    for x, y in loader:
        assert torch.equal(torch.round(((1 - (x[:, 0, 0, 0] * STD[0] + MEAN[0])) * 255)).long(), y)
    assert [c[0] for c in calls] == [32, 32, 32, 7]
    assert all(c[1] == loader.path.device and c[2] == torch.float32 for c in calls)
    # the images tensor lives on the training device once, not per batch
    assert loader.images.device == loader.path.device


def test_stream_loader_yields_the_same_samples_as_memory():
    images, labels = _images(), torch.arange(103)
    dataset = [(images[i], int(labels[i])) for i in range(103)]
    mem = InMemoryLoader(images, labels, 10, mean=MEAN, std=STD, shuffle=True, seed=9)
    stream = StreamLoader(dataset, labels, 10, mean=MEAN, std=STD, shuffle=True, seed=9, workers=0)
    mem.set_epoch(2)
    stream.set_epoch(2)
    for (xm, ym), (xs, ys) in zip(mem, stream):
        assert torch.equal(ym, ys) and torch.equal(xm, xs)


@pytest.mark.parametrize("preset", ["aug=alexnet", "aug=crop_flip", "aug=[flip,cutout]"])
def test_augmented_stream_batches_equal_in_memory_ones_and_resume_alike(preset):
    """Same chunks, same draws: a streamed epoch gives the in-memory loader's batches, also when
    resumed mid-chunk from the in-memory loader's position."""
    from cnnlab.config import compose
    from cnnlab.data import augment
    from cnnlab.data.loader import CHUNK_BATCHES

    images = torch.randint(0, 256, (103, 3, 6, 5), generator=torch.Generator().manual_seed(2),
                           dtype=torch.uint8)
    labels = torch.arange(103)
    aug = augment.create(compose(["data=shapes", preset]).aug, train_images=images)
    dataset = [(images[i], int(labels[i])) for i in range(103)]
    kw = dict(mean=[0.5, 0.4, 0.3], std=[0.2, 0.3, 0.4], shuffle=True, seed=9, augment=aug)
    mem = InMemoryLoader(images, labels, 10, **kw)
    mem.set_epoch(2)
    got = []
    for b, batch in enumerate(mem, start=1):
        got.append(batch)
        if b == 6:
            pos = mem.position(b)
    stream = StreamLoader(dataset, labels, 10, workers=0, **kw)
    stream.set_epoch(2)
    streamed = list(stream)
    assert mem.chunk == stream.chunk == CHUNK_BATCHES and len(streamed) == len(got) == 11
    for (xm, ym), (xs, ys) in zip(got, streamed):
        assert torch.equal(ym, ys) and torch.equal(xm, xs)
    stream.set_epoch(2, pos["batch"], pos["aug"], pos["aug_from"])
    tail = list(stream)
    assert len(tail) == 5 and all(torch.equal(a[0], b[0]) for a, b in zip(tail, got[6:]))
