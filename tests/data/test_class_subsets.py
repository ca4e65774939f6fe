"""data.classes: keep some of a dataset's classes, relabelled 0..k-1 in the order listed, before
any split (cnnlab.data.create), so the splits stay stratified and seeded by data.split_seed.
Checked at compose (at least two distinct indices, none negative) and, against the dataset's
class count, at load."""

from __future__ import annotations

import pytest
import torch

from cnnlab import data
from cnnlab.data.base import Split
from cnnlab.errors import UsageError
from conftest import tiny, write_image_folder


def _images_by_label(split) -> dict[int, set[bytes]]:
    out: dict[int, set[bytes]] = {}
    for img, y in zip(split.images, split.labels):
        out.setdefault(int(y), set()).add(bytes(img.numpy().tobytes()))
    return out


def test_kept_classes_are_relabelled_in_the_order_listed_with_their_names():
    full = data.create(tiny("data=digits").data)
    sub = data.create(tiny("data=digits", "data.classes=[7,2,5]").data)
    assert sub.num_classes == 3
    assert sub.class_names == [full.class_names[7], full.class_names[2], full.class_names[5]]
    for split in (sub.train, sub.val, sub.test):
        assert sorted(torch.unique(split.labels).tolist()) == [0, 1, 2]
    # every image of new class 0 is an image of old class 7 (all splits together), and all of them
    new = {k: set() for k in range(3)}
    old = {k: set() for k in (7, 2, 5)}
    for split in (sub.train, sub.val, sub.test):
        for k, v in _images_by_label(split).items():
            new[k] |= v
    for split in (full.train, full.val, full.test):
        for k, v in _images_by_label(split).items():
            if k in old:
                old[k] |= v
    assert new[0] == old[7] and new[1] == old[2] and new[2] == old[5]


def test_counts_and_stratified_splits_of_the_kept_classes():
    full = data.create(tiny("data=digits").data)
    sub = data.create(tiny("data=digits", "data.classes=[0,1,2,3,4]").data)
    every = torch.cat([full.train.labels, full.val.labels, full.test.labels])
    kept = torch.cat([sub.train.labels, sub.val.labels, sub.test.labels])
    assert torch.bincount(kept).tolist() == torch.bincount(every)[:5].tolist()
    # test (20%) and validation (10% of the rest) are held out per class, as for the full set
    per_class = torch.bincount(kept, minlength=5).double()
    assert (torch.bincount(sub.test.labels, minlength=5) - 0.2 * per_class).abs().max() <= 1
    # the split is seeded by data.split_seed alone
    again = data.create(tiny("data=digits", "data.classes=[0,1,2,3,4]", "seed=5").data)
    other = data.create(tiny("data=digits", "data.classes=[0,1,2,3,4]", "data.split_seed=1").data)
    assert torch.equal(sub.test.images, again.test.images)
    assert not torch.equal(sub.test.images, other.test.images)


def test_composes_with_train_per_class():
    sub = data.create(tiny("data=digits", "data.classes=[9,8]", "data.train_per_class=12").data)
    assert torch.bincount(sub.train.labels).tolist() == [12, 12]
    assert sub.class_names == ["9", "8"]


def test_fashion_mnist_bottoms_and_shoes(fashion_mnist_package):
    """C4's similar target: the five classes the Fashion-MNIST source did not see."""
    sub = data.create(tiny("data=fashion_mnist", "data.classes=[5,6,7,8,9]", "data.train_per_class=10").data)
    assert sub.class_names == ["Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    assert torch.bincount(sub.train.labels).tolist() == [10] * 5
    assert len(sub.val) == 3000 and len(sub.test) == 5000  # the official test split's 1,000 per class


def test_a_dataset_with_its_own_test_split_keeps_only_those_classes_in_it():
    sub = data.create(tiny("data=shapes", "data.num_train=400", "data.num_test=200",
                           "data.classes=[1,3]").data)
    assert sub.num_classes == 2
    assert set(sub.test.labels.tolist()) == {0, 1} and len(sub.test) < 200


def test_streamed_images_get_the_new_labels(tmp_path):
    write_image_folder(tmp_path / "imgs", classes=3, per_class=8)
    cfg = tiny("data=imagefolder", f"data.root={tmp_path / 'imgs'}", "data.in_memory=false",
               "data.image_size=16", "data.workers=0", "data.classes=[2,0]", "data.mean=[0.5,0.5,0.5]",
               "data.std=[0.25,0.25,0.25]").data
    sub = data.create(cfg)
    assert not sub.train.in_memory and sub.num_classes == 2
    for split in (sub.train, sub.val, sub.test):
        assert [int(split.dataset[i][1]) for i in range(len(split))] == split.labels.tolist()


@pytest.mark.parametrize("value, words", [
    ("[3]", "at least 2 classes"),
    ("[1,1]", "more than once"),
    ("[-1,2]", "0 or more"),
])
def test_bad_class_lists_fail_at_compose(value, words):
    with pytest.raises(UsageError, match=words):
        tiny("data=digits", f"data.classes={value}")


def test_a_class_the_dataset_lacks_fails_at_load_in_one_line():
    cfg = tiny("data=digits", "data.classes=[0,10]").data
    with pytest.raises(UsageError, match=r"names class 10, but data=digits has 10 classes \(0-9\)") as exc:
        data.create(cfg)
    assert "\n" not in str(exc.value)


def test_keep_classes_leaves_a_missing_test_split_missing():
    from cnnlab.data.base import Pools

    pools = Pools(train=Split(labels=torch.tensor([0, 1, 2, 1]), images=torch.zeros(4, 1, 2, 2,
                                                                                     dtype=torch.uint8)),
                  test=None, class_names=["a", "b", "c"])
    out = data.keep_classes(pools, [1, 2], "toy")
    assert out.test is None and out.class_names == ["b", "c"]
    assert out.train.labels.tolist() == [0, 1, 0]
