import numpy as np
import pytest
import torch

from cnnlab import data
from cnnlab.data.base import channel_stats, stratified_pick
from cnnlab.data.shapes import VARIANTS, generate
from cnnlab.errors import CnnlabError, DataError, UsageError
from conftest import tiny, write_image_folder


def test_digits_splits_are_stratified_disjoint_and_deterministic():
    a = data.create(tiny("data=digits").data)
    b = data.create(tiny("data=digits").data)
    assert (len(a.train), len(a.val), len(a.test)) == (len(b.train), len(b.val), len(b.test))
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    for name in ("train", "val", "test"):
        assert torch.equal(getattr(a, name).images, getattr(b, name).images)
    # about 20% of each class is held out for test
    all_counts = torch.bincount(torch.cat([a.train.labels, a.val.labels, a.test.labels]))
    test_counts = torch.bincount(a.test.labels, minlength=10)
    assert torch.all((test_counts - 0.2 * all_counts).abs() <= 1)
    # no image is in two splits: compare raw bytes of every image
    seen = set()
    for split in (a.train, a.val, a.test):
        keys = {bytes(img.numpy().tobytes()) + bytes([int(y)]) for img, y in zip(split.images, split.labels)}
        assert not (keys & seen)
        seen |= keys
    assert a.in_chans == 1 and a.image_size == (8, 8) and a.num_classes == 10


def test_split_seed_changes_the_split_and_run_seed_does_not():
    base = data.create(tiny("data=digits").data)
    other_seed = data.create(tiny("data=digits", "seed=7").data)
    other_split = data.create(tiny("data=digits", "data.split_seed=1").data)
    assert torch.equal(base.test.labels, other_seed.test.labels)
    assert not torch.equal(base.test.images, other_split.test.images)


@pytest.mark.parametrize("per_class", [1, 5, 20])
def test_train_per_class(per_class):
    b = data.create(tiny("data=digits", f"data.train_per_class={per_class}").data)
    assert torch.bincount(b.train.labels, minlength=10).tolist() == [per_class] * 10


def test_train_fraction_keeps_each_class_share():
    full = data.create(tiny("data=digits").data)
    half = data.create(tiny("data=digits", "data.train_fraction=0.5").data)
    diff = torch.bincount(half.train.labels, minlength=10) - 0.5 * torch.bincount(full.train.labels)
    assert diff.abs().max() <= 1
    # the validation and test splits do not depend on the train subset
    assert torch.equal(full.val.images, half.val.images)


def test_stratified_pick_matches_a_per_class_reference():
    labels = torch.tensor([0] * 10 + [1] * 30 + [2] * 5)
    mask = stratified_pick(labels, torch.Generator().manual_seed(0), fraction=0.2)
    assert torch.bincount(labels[mask]).tolist() == [2, 6, 1]
    mask = stratified_pick(labels, torch.Generator().manual_seed(0), per_class=7)
    assert torch.bincount(labels[mask]).tolist() == [7, 7, 5]


def test_channel_stats_against_numpy():
    imgs = torch.randint(0, 256, (50, 3, 6, 6), dtype=torch.uint8)
    mean, std = channel_stats(imgs, chunk=7)
    ref = imgs.numpy().astype(np.float64) / 255
    np.testing.assert_allclose(mean, ref.mean(axis=(0, 2, 3)), rtol=1e-10)
    np.testing.assert_allclose(std, ref.std(axis=(0, 2, 3)), rtol=1e-8)


@pytest.mark.parametrize("variant", VARIANTS)
def test_shapes_generation_is_seeded_balanced_and_any_size(variant):
    a_img, a_lab, names = generate(variant, 300, size=24, seed=3)
    b_img, b_lab, _ = generate(variant, 300, size=24, seed=3)
    c_img, _, _ = generate(variant, 300, size=24, seed=4)
    assert a_img.shape == (300, 3, 24, 24) and a_img.dtype == torch.uint8
    assert torch.equal(a_img, b_img) and torch.equal(a_lab, b_lab)
    assert not torch.equal(a_img, c_img)
    assert torch.bincount(a_lab).tolist() == [30] * 10 and len(names) == 10
    # images are not blank: every image has real contrast
    assert (a_img.float().flatten(1).std(dim=1) > 10).all()


def test_shape_variants_differ_in_style_or_classes():
    _, _, base_names = generate("shapes", 10)
    _, _, style_names = generate("shapes_style", 10)
    _, _, novel_names = generate("shapes_novel", 10)
    assert base_names == style_names and not set(base_names) & set(novel_names)


def test_shapes_splits_come_from_num_train_and_num_test():
    b = data.create(tiny("data=shapes", "data.num_train=500", "data.num_test=120").data)
    assert len(b.train) + len(b.val) == 500 and len(b.test) == 120
    assert b.in_chans == 3 and b.image_size == (32, 32)


def test_image_size_resizes():
    b = data.create(tiny("data=digits", "data.image_size=16").data)
    assert b.image_size == (16, 16) and b.train.images.shape[-1] == 16


def test_missing_torchvision_dataset_names_files_and_fetch_command(tmp_path):
    with pytest.raises(DataError) as err:
        data.create(tiny("data=cifar10", f"data.root={tmp_path}").data)
    msg = str(err.value)
    assert "cifar-10-batches-py" in msg and "cnnlab data fetch cifar10" in msg
    with pytest.raises(DataError, match="does not exist"):
        data.create(tiny("data=mnist", f"data.root={tmp_path}/nope").data)


def test_cifar10_files_are_read_into_uint8_tensors(tmp_path, monkeypatch):
    """A miniature CIFAR-10 in the real on-disk format, read through torchvision's class."""
    import pickle

    import torchvision.datasets as tvd

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)

    def write(name, n):
        pixels = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [i % 10 for i in range(n)]
        with open(folder / name, "wb") as f:
            pickle.dump({"data": pixels, "labels": labels}, f)
        return pixels, labels

    train = [write(f"data_batch_{i}", 20) for i in range(1, 6)]
    write("test_batch", 30)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    # the files are ours, so torchvision's MD5 checks of the real archive cannot pass
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tvd.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    b = data.create(tiny("data=cifar10", f"data.root={tmp_path}", "data.val_fraction=0.1").data)
    assert len(b.train) + len(b.val) == 100 and len(b.test) == 30
    assert b.class_names == [f"c{i}" for i in range(10)] and b.in_chans == 3
    # pixel layout: CIFAR rows are 1024 R, 1024 G, 1024 B values
    all_train = torch.cat([b.train.images, b.val.images])
    expected = torch.from_numpy(np.concatenate([p for p, _ in train]).reshape(-1, 3, 32, 32))
    assert {bytes(x.numpy().tobytes()) for x in all_train} == {bytes(x.numpy().tobytes()) for x in expected}


@pytest.mark.parametrize("in_memory", ["true", "false"])
def test_imagefolder_in_memory_and_streamed(tmp_path, in_memory):
    write_image_folder(tmp_path / "imgs")
    cfg = tiny("data=imagefolder", f"data.root={tmp_path / 'imgs'}", "data.image_size=16",
               f"data.in_memory={in_memory}", "data.workers=0", "data.test_fraction=0.34")
    b = data.create(cfg.data)
    assert b.num_classes == 3 and b.image_size == (16, 16)
    assert b.train.in_memory == (in_memory == "true")
    assert len(b.train) + len(b.val) + len(b.test) == 18
    assert torch.bincount(b.test.labels).tolist() == [2, 2, 2]


def test_imagefolder_without_root_or_images_fails_clearly(tmp_path):
    with pytest.raises(UsageError, match="needs data.root"):
        data.create(tiny("data=imagefolder").data)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CnnlabError):
        data.create(tiny("data=imagefolder", f"data.root={tmp_path / 'empty'}").data)


@pytest.mark.parametrize("name", list(data.list_datasets()))
def test_every_registered_dataset_has_a_preset_and_a_description(name):
    from cnnlab.config import group_choices

    assert name in group_choices("data"), f"conf/data/{name}.yaml is missing"
    assert data.list_datasets()[name].strip()
    assert compose_data(name).name == name


def compose_data(name):
    root = ["data.root=/tmp"] if name == "imagefolder" else []  # it has no default folder
    return tiny(f"data={name}", *root).data
