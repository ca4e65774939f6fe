"""Shared fixtures: every test writes into its own outputs folder and composes real configs."""

from __future__ import annotations

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
