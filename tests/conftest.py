"""Shared fixtures: every test writes into its own outputs folder and composes real configs."""

from __future__ import annotations

import os

import pytest

from cnnlab.config import compose

TINY = ["trainer.epochs=2", "trainer.progress=none", "trainer.threads=1"]


@pytest.fixture(autouse=True)
def _outputs(tmp_path, monkeypatch):
    out = tmp_path / "outputs"
    monkeypatch.setenv("CNNLAB_OUTPUTS", str(out))
    return out


@pytest.fixture
def outputs(_outputs):
    return _outputs


# Where OS packages put datasets, as this session was started (None: /usr/share/datasets).
_SYSTEM_DATASETS = os.environ.get("CNNLAB_SYSTEM_DATASETS")


@pytest.fixture(autouse=True)
def _no_system_datasets(tmp_path, monkeypatch):
    """Datasets installed by OS packages (/usr/share/datasets) are invisible to cnnlab unless a test
    asks for them (fashion_mnist_package), so no other test depends on what this machine has."""
    monkeypatch.setenv("CNNLAB_SYSTEM_DATASETS", str(tmp_path / "no-system-datasets"))


def in_ci() -> bool:
    """CI runs (.ci/run with CI=true) must have the data the tests need; elsewhere it may lack."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


@pytest.fixture
def fashion_mnist_package(monkeypatch):
    """The folder of the OS package `dataset-fashion-mnist` (the real 70,000 images), visible to
    cnnlab for this test. When it is not installed the test skips, naming the install command;
    under CI (CI=true) it fails instead: .ci/run installs the package there."""
    from cnnlab.data import idx

    if _SYSTEM_DATASETS:
        monkeypatch.setenv("CNNLAB_SYSTEM_DATASETS", _SYSTEM_DATASETS)
    else:
        monkeypatch.delenv("CNNLAB_SYSTEM_DATASETS")
    folder = idx.system_folder("fashion_mnist")
    if folder is None:
        why = (f"needs the real Fashion-MNIST: {idx.package_folder('fashion_mnist')}/ lacks its "
               f"four files; `apt-get install dataset-fashion-mnist` puts them there")
        if in_ci():
            pytest.fail(f"CI=true and the test {why} (.ci/run installs it when run as root with "
                        f"apt-get)", pytrace=False)
        pytest.skip(why)
    return folder


def tiny(*overrides: str):
    """The real config, shrunk: a small shapes set unless the overrides choose other data."""
    base = list(TINY)
    if not any(o.startswith("data=") for o in overrides):
        base += ["data=shapes", "data.num_train=400", "data.num_test=100"]
    return compose(base + list(overrides))


def write_image_folder(root, classes=3, per_class=6, size=20):
    """An image folder of random RGB PNGs, one sub-folder per class (imagefolder's layout)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(0, 256, (size, size + 4, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / f"class{c}" / f"{i}.png")
