"""Fashion-MNIST from the OS package `dataset-fashion-mnist` (cnnlab/data/idx.py and
torchvision_sets.py): data.root in torchvision's layout first, else the package's folder of gzipped
IDX files, with the same tensors either way and the source recorded; a missing set names both ways
to get it; bad IDX files fail with one line.

Tests taking the `fashion_mnist_package` fixture read the real 70,000 images: they skip where the
package is not installed and fail under CI (CI=true), where .ci/run installs it. The others build
small IDX files in tmp_path and run everywhere."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import struct
import subprocess
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cnnlab import data
from cnnlab.cli.main import app
from cnnlab.data import idx
from cnnlab.data import torchvision_sets as tvs
from cnnlab.errors import DataError
from conftest import tiny

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot"]

# Computed once from the package's files with gzip + hashlib alone (no cnnlab): the header of
# each file, and the SHA-256 of the bytes after it (pixels or labels).
REAL = {
    "train-images-idx3-ubyte": ("000008030000ea600000001c0000001c",
                                "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012"),
    "train-labels-idx1-ubyte": ("000008010000ea60",
                                "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7"),
    "t10k-images-idx3-ubyte": ("00000803000027100000001c0000001c",
                               "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a"),
    "t10k-labels-idx1-ubyte": ("0000080100002710",
                               "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9"),
}
PIXEL_SUMS = {"train-images-idx3-ubyte": 3431114169, "t10k-images-idx3-ubyte": 573469082}


@lru_cache(maxsize=None)
def _raw(folder: str, name: str) -> bytes:
    """A package file decompressed with gzip alone."""
    return gzip.decompress((Path(folder) / f"{name}.gz").read_bytes())


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of uint8 values (type 0x08)."""
    header = struct.pack(f">HBB{array.ndim}I", 0, 0x08, array.ndim, *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_package(folder: Path, per_class=(20, 10), seed=0) -> dict:
    """A small Fashion-MNIST in the package's layout (gzipped IDX); returns its arrays."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {}
    for prefix, n in zip(("train", "t10k"), per_class):
        labels = np.repeat(np.arange(10, dtype=np.uint8), n)
        rng.shuffle(labels)
        images = rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8)
        arrays[prefix] = (images, labels)
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    return arrays


@pytest.fixture
def small_package(tmp_path, monkeypatch):
    """CNNLAB_SYSTEM_DATASETS pointed at a folder holding a small fashion-mnist/ package."""
    system = tmp_path / "system"
    arrays = write_package(system / "fashion-mnist")
    monkeypatch.setenv("CNNLAB_SYSTEM_DATASETS", str(system))
    return system / "fashion-mnist", arrays


# ---- read_idx and check_idx ------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trips(tmp_path, gz):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / ("a.gz" if gz else "a")
    path.write_bytes(gzip.compress(idx_bytes(a)) if gz else idx_bytes(a))
    out = idx.read_idx(path)
    assert out.dtype == np.uint8 and np.array_equal(out, a) and out.flags.writeable
    assert idx.check_idx(path) == (2, 3, 4)


GOOD = idx_bytes(np.zeros((3, 4, 4), dtype=np.uint8))
BAD = {
    "bad magic": (b"\x08\x03" + GOOD[2:], False, "not an IDX file (bad magic number)"),
    "unknown type": (b"\x00\x00\x07\x03" + GOOD[4:], False, "bad magic number"),
    "empty": (b"", False, "bad magic number"),
    "header cut": (GOOD[:9], False, "ends inside its header"),
    "payload cut": (GOOD[:-5], False, "is truncated: its header promises 48 values"),
    "extra bytes": (GOOD + b"\x00", False, "longer than its header says"),
    "gzip cut": (gzip.compress(GOOD)[:-12], True, "cannot read"),
    "payload cut, gzipped": (gzip.compress(GOOD[:-5]), True, "is truncated"),
    "not gzip": (GOOD, True, "cannot read"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_idx_file_is_refused_with_one_line(tmp_path, case):
    content, gz, fragment = BAD[case]
    path = tmp_path / ("f-idx3-ubyte.gz" if gz else "f-idx3-ubyte")
    path.write_bytes(content)
    for reader in (idx.read_idx, idx.check_idx):
        with pytest.raises(DataError) as err:
            reader(path)
        assert fragment in str(err.value) and str(path) in str(err.value)
        assert "\n" not in str(err.value)


# ---- the package's folder, with small files --------------------------------------------------


def test_the_package_folder_is_used_when_data_root_lacks_the_set(small_package, tmp_path):
    folder, arrays = small_package
    cfg = tiny("data=fashion_mnist", f"data.root={tmp_path / 'nowhere'}").data
    assert data.missing(cfg) is None
    bundle = data.create(cfg)
    assert bundle.info["source"] == f"OS package dataset-fashion-mnist ({folder})"
    assert bundle.class_names == CLASSES and bundle.in_chans == 1 and bundle.image_size == (28, 28)
    assert len(bundle.train) + len(bundle.val) == 200 and len(bundle.test) == 100
    images, labels = arrays["t10k"]
    assert bundle.test.images.dtype == torch.uint8 and bundle.test.labels.dtype == torch.long
    assert torch.equal(bundle.test.images, torch.from_numpy(images).unsqueeze(1))
    assert torch.equal(bundle.test.labels, torch.from_numpy(labels).long())


def write_torchvision_layout(root: Path, arrays_or_folder) -> None:
    """root/FashionMNIST/raw/ with uncompressed IDX files, as torchvision's download leaves them."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in idx.FILES:
        if isinstance(arrays_or_folder, dict):
            images, labels = arrays_or_folder[name.split("-")[0]]
            content = idx_bytes(images if "images" in name else labels)
        else:
            content = _raw(str(arrays_or_folder), name)
        (raw / name).write_bytes(content)


def test_data_root_comes_first(small_package, tmp_path):
    folder, _ = small_package
    other = write_package(tmp_path / "elsewhere", seed=1)
    write_torchvision_layout(tmp_path / "root", other)
    bundle = data.create(tiny("data=fashion_mnist", f"data.root={tmp_path / 'root'}").data)
    assert bundle.info["source"] == f"torchvision files under data.root={tmp_path / 'root'}"
    assert torch.equal(bundle.test.images, torch.from_numpy(other["t10k"][0]).unsqueeze(1))


def test_a_missing_set_names_both_ways_to_get_it(tmp_path):
    nowhere = tmp_path / "nowhere"
    why = data.missing(tiny("data=fashion_mnist", f"data.root={nowhere}").data)
    assert why and "apt-get install dataset-fashion-mnist" in why
    assert "/usr/share/datasets/fashion-mnist/" in why
    assert "cnnlab data fetch fashion_mnist data.root=<folder>" in why
    result = runner.invoke(app, ["train", "data=fashion_mnist", f"data.root={nowhere}",
                                 "trainer.progress=none", "trainer.threads=1"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    line = result.output.strip()
    assert "\n" not in line and line.startswith("error: fashion_mnist not found")
    assert "apt-get install dataset-fashion-mnist" in line
    assert "cnnlab data fetch fashion_mnist" in line


def test_an_empty_data_root_and_no_package_says_what_is_expected(tmp_path):
    with pytest.raises(DataError) as err:
        data.create(tiny("data=fashion_mnist", f"data.root={tmp_path}").data)
    message = str(err.value)
    assert f"data.root={tmp_path} has no FashionMNIST/raw/" in message and "\n" not in message


def test_a_broken_package_file_is_one_line_and_exit_1(small_package, tmp_path):
    folder, _ = small_package
    path = folder / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-40])
    cfg = tiny("data=fashion_mnist", f"data.root={tmp_path / 'nowhere'}").data
    assert str(path) in data.missing(cfg)
    result = runner.invoke(app, ["data", "info", "data=fashion_mnist",
                                 f"data.root={tmp_path / 'nowhere'}"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    line = result.output.strip()
    assert line.startswith("error: cannot read") and "\n" not in line


def test_a_package_folder_missing_a_file_names_it(small_package, tmp_path):
    folder, _ = small_package
    (folder / "train-labels-idx1-ubyte.gz").unlink()
    cfg = tiny("data=fashion_mnist", f"data.root={tmp_path / 'nowhere'}").data
    assert data.missing(cfg) == f"{folder} has no train-labels-idx1-ubyte(.gz)"
    with pytest.raises(DataError, match="has no train-labels-idx1-ubyte"):
        data.create(cfg)


def test_data_list_names_the_package():
    result = runner.invoke(app, ["data", "list"])
    assert result.exit_code == 0
    assert any(line.startswith("fashion_mnist") and "dataset-fashion-mnist" in line
               for line in result.output.splitlines())


def test_ci_installs_the_package_and_ends_with_the_readme_test_command():
    script = (REPO / ".ci" / "run").read_text()
    readme = (REPO / "README.md").read_text()
    assert "apt-get install -y" in script and "dataset-fashion-mnist" in script
    command = 'python -m pip install -e ".[test]" && python -m pytest'
    assert [line for line in script.splitlines() if line.strip()][-1] == command
    assert f"```bash\n{command}\n```" in readme
    setup = readme.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    assert "dataset-fashion-mnist" in setup  # .ci/run installs the OS packages the README names
    if shutil.which("bash"):
        assert subprocess.run(["bash", "-n", str(REPO / ".ci" / "run")]).returncode == 0


# ---- the real files (the OS package) ---------------------------------------------------------


def test_the_package_holds_the_real_fashion_mnist(fashion_mnist_package):
    folder = str(fashion_mnist_package)
    for name, (header, digest) in REAL.items():
        raw = _raw(folder, name)  # read with gzip alone
        start = len(header) // 2
        assert raw[:start].hex() == header, name
        assert hashlib.sha256(raw[start:]).hexdigest() == digest, name
        array = idx.read_idx(fashion_mnist_package / f"{name}.gz")  # read by cnnlab
        assert array.dtype == np.uint8 and hashlib.sha256(array.tobytes()).hexdigest() == digest
        if "images" in name:
            assert array.shape == ((60000 if name.startswith("train") else 10000), 28, 28)
            assert int(array.sum(dtype=np.int64)) == PIXEL_SUMS[name]
        else:
            per_class = 6000 if name.startswith("train") else 1000
            assert np.bincount(array).tolist() == [per_class] * 10


def test_both_sources_give_the_same_tensors(fashion_mnist_package, tmp_path):
    write_torchvision_layout(tmp_path / "root", fashion_mnist_package)
    def load(root):
        return tvs.load("fashion_mnist", tiny("data=fashion_mnist", f"data.root={root}").data)

    from_root, from_package = load(tmp_path / "root"), load(tmp_path / "nowhere")
    assert from_root.source.startswith("torchvision files under data.root=")
    assert from_package.source == f"OS package dataset-fashion-mnist ({fashion_mnist_package})"
    assert from_root.class_names == from_package.class_names == CLASSES
    for a, b, n in ((from_root.train, from_package.train, 60000),
                    (from_root.test, from_package.test, 10000)):
        assert a.images.shape == b.images.shape == (n, 1, 28, 28)
        assert a.images.dtype == b.images.dtype == torch.uint8
        assert a.labels.dtype == b.labels.dtype == torch.long
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


def test_missing_reports_the_package_present(fashion_mnist_package, tmp_path):
    cfg = tiny("data=fashion_mnist", f"data.root={tmp_path / 'nowhere'}").data
    assert data.missing(cfg) is None  # what `lab`'s run-all asks before it runs an experiment


@pytest.mark.slow
def test_data_info_and_a_small_training_run(fashion_mnist_package, tmp_path, outputs):
    nowhere = f"data.root={tmp_path / 'nowhere'}"
    info = runner.invoke(app, ["data", "info", "data=fashion_mnist", nowhere])
    assert info.exit_code == 0, info.output
    assert "fashion_mnist: 10 classes, images 1x28x28" in info.output
    assert "splits: train 54000, val 6000, test 10000" in info.output
    assert f"source: OS package dataset-fashion-mnist ({fashion_mnist_package})" in info.output
    result = runner.invoke(app, ["train", "data=fashion_mnist", nowhere, "data.train_per_class=20",
                                 "trainer.epochs=1", "trainer.threads=1", "trainer.progress=none"])
    assert result.exit_code == 0, result.output
    (summary,) = outputs.glob("runs/*/summary.json")
    s = json.loads(summary.read_text())
    assert s["status"] == "done" and s["n_train"] == 200
    assert s["n_val"] == 6000 and s["n_test"] == 10000
    assert s["test_acc"] > 0.1  # above chance (10 classes) after one epoch on 200 real images
