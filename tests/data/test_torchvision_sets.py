"""Datasets read from local files with torchvision's classes (cnnlab/data/torchvision_sets.py):
the files are read where torchvision's layout puts them, and a missing set fails with one line
that names the files and the fetch command, never a download."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cnnlab import data
from cnnlab.cli.main import app
from cnnlab.data import torchvision_sets as tvs
from cnnlab.errors import DataError
from conftest import tiny

runner = CliRunner()


def write_idx(folder, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    """The IDX format of LeCun's MNIST files (and Fashion-MNIST's): a big-endian header, then
    uint8 pixels; written here so the test does not depend on any downloaded file."""
    folder.mkdir(parents=True, exist_ok=True)
    n, h, w = images.shape
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(
        struct.pack(">IIII", 0x803, n, h, w) + images.astype(np.uint8).tobytes())
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(
        struct.pack(">II", 0x801, n) + labels.astype(np.uint8).tobytes())


@pytest.fixture
def fashion_root(tmp_path):
    """A tiny Fashion-MNIST in torchvision's layout: 20 train and 10 test images per class,
    each image a constant grey level that encodes its index."""
    rng = np.random.default_rng(0)
    raw = tmp_path / "FashionMNIST" / "raw"
    for prefix, per_class in (("train", 20), ("t10k", 10)):
        labels = np.repeat(np.arange(10), per_class)
        rng.shuffle(labels)
        images = np.stack([np.full((28, 28), i % 256) for i in range(len(labels))])
        write_idx(raw, prefix, images, labels)
    return tmp_path


def test_fashion_mnist_is_read_from_torchvision_layout(fashion_root):
    cfg = tiny("data=fashion_mnist", f"data.root={fashion_root}", "data.val_fraction=0.1").data
    bundle = data.create(cfg)
    assert bundle.in_chans == 1 and bundle.image_size == (28, 28) and bundle.num_classes == 10
    assert bundle.class_names[0] == "T-shirt/top" and bundle.class_names[9] == "Ankle boot"
    assert len(bundle.train) + len(bundle.val) == 200 and len(bundle.test) == 100
    assert len(bundle.val) == 20  # stratified: 10% of each class
    assert torch.bincount(bundle.val.labels, minlength=10).tolist() == [2] * 10
    # images and labels stay paired: the pixel value is the image's index in the file
    raw = fashion_root / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte"
    file_labels = np.frombuffer(raw.read_bytes()[8:], dtype=np.uint8).copy()
    index = bundle.test.images[:, 0, 0, 0].long()
    assert torch.equal(bundle.test.labels, torch.as_tensor(file_labels, dtype=torch.long)[index])


def test_missing_returns_none_when_the_files_are_there(fashion_root):
    assert tvs.missing("fashion_mnist", tiny("data=fashion_mnist", f"data.root={fashion_root}").data) is None


@pytest.mark.parametrize("name", sorted(tvs.SOURCES))
def test_a_missing_set_names_its_files_and_the_fetch_command(name, tmp_path):
    cfg = tiny(f"data={name}", f"data.root={tmp_path}").data
    why = tvs.missing(name, cfg)
    assert why is not None and f"cnnlab data fetch {name}" in why
    with pytest.raises(DataError) as err:
        data.create(cfg)
    assert f"cnnlab data fetch {name}" in str(err.value) and "\n" not in str(err.value)


def test_a_missing_root_is_one_line_and_exit_1(tmp_path):
    result = runner.invoke(app, ["train", "data=mnist", f"data.root={tmp_path / 'nowhere'}",
                                 "trainer.progress=none"])
    assert result.exit_code == 1
    assert result.output.startswith("error: data.root") and "cnnlab data fetch mnist" in result.output
    assert "Traceback" not in result.output


def test_expected_files_come_from_torchvision_classes():
    import torchvision.datasets as tvd

    for f, _ in tvd.FashionMNIST.resources:
        assert f in tvs.expected_files("fashion_mnist")
    assert tvd.CIFAR10.base_folder in tvs.expected_files("cifar10")


def test_fetch_refuses_an_unknown_name_without_touching_the_network(tmp_path):
    result = runner.invoke(app, ["data", "fetch", "imagenet", f"data.root={tmp_path}"])
    assert result.exit_code == 2 and "fetchable: " in result.output
