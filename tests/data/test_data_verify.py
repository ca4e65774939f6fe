"""Broken image folders: `cnnlab data verify` finds every kind of bad file, training raises on
them naming the file or (data.on_bad_image=skip) leaves them out, and odd image modes convert by
fixed rules."""

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cnnlab import data
from cnnlab.cli.main import app
from cnnlab.data.folder import BadImageWarning, to_rgb
from cnnlab.data.verify import verify_folder
from cnnlab.errors import DataError
from tests.conftest import tiny


def _good(path, seed, size=20):
    rgb = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)


def _broken_folder(root, good_per_class=12, empty_class=True):
    """Two classes of good images plus a zero-byte file, a truncated JPEG, a text file named
    .png and a .txt file; optionally an empty class folder."""
    for c, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True)
        for i in range(good_per_class):
            _good(root / name / f"{i}.png", 100 * c + i)
    (root / "cat" / "zero.jpg").write_bytes(b"")
    _good(root / "cat" / "full.jpg", 999, size=64)
    jpeg = (root / "cat" / "full.jpg").read_bytes()
    (root / "cat" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "cat" / "full.jpg").unlink()
    (root / "dog" / "text.png").write_text("this is not a picture\n")
    (root / "dog" / "notes.txt").write_text("labels by hand\n")
    if empty_class:
        (root / "empty").mkdir()
    return root


def test_verify_reports_every_kind_of_bad_file(tmp_path):
    root = _broken_folder(tmp_path / "imgs")
    report = verify_folder(root)
    kinds = {(p.kind, p.path.name) for p in report.problems}
    assert kinds == {("zero-byte", "zero.jpg"), ("truncated", "truncated.jpg"),
                     ("not-an-image", "text.png"), ("ignored", "notes.txt"),
                     ("empty-class", "empty")}
    assert report.images == 27 and report.classes == 3


def test_verify_command_names_files_and_exits_1(tmp_path):
    root = _broken_folder(tmp_path / "imgs")
    result = CliRunner().invoke(app, ["data", "verify", str(root)])
    assert result.exit_code == 1
    assert str(root / "cat" / "truncated.jpg") in result.output
    assert "1 truncated" in result.output and "1 zero-byte" in result.output
    good = tmp_path / "good"
    (good / "a").mkdir(parents=True)
    _good(good / "a" / "x.png", 1)
    ok = CliRunner().invoke(app, ["data", "verify", str(good)])
    assert ok.exit_code == 0 and "all decode" in ok.output
    missing = CliRunner().invoke(app, ["data", "verify", str(tmp_path / "nope")])
    assert missing.exit_code == 1 and "not a folder" in missing.output


def _cfg(root, *extra):
    return tiny("data=imagefolder", f"data.root={root}", "data.image_size=16", "data.workers=0",
                *extra).data


def test_training_raises_naming_the_file_or_skips_it(tmp_path):
    root = _broken_folder(tmp_path / "imgs", empty_class=False)
    with pytest.raises(DataError, match=r"(zero|truncated)\.jpg|text\.png"):
        data.create(_cfg(root))
    with pytest.warns(BadImageWarning, match="truncated.jpg"):
        bundle = data.create(_cfg(root, "data.on_bad_image=skip"))
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == 24  # the good ones


def test_streamed_folder_skips_bad_files_up_front(tmp_path):
    root = _broken_folder(tmp_path / "imgs", empty_class=False)
    with pytest.warns(BadImageWarning):
        bundle = data.create(_cfg(root, "data.on_bad_image=skip", "data.in_memory=false"))
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == 24


def test_mode_conversion_rules():
    def px(im):
        return to_rgb(im).getpixel((0, 0))

    assert px(Image.new("L", (2, 2), 100)) == (100, 100, 100)  # grey: repeated
    assert px(Image.new("1", (2, 2), 1)) == (255, 255, 255)
    assert px(Image.new("RGBA", (2, 2), (10, 20, 30, 0))) == (255, 255, 255)  # transparent: white
    assert px(Image.new("RGBA", (2, 2), (10, 20, 30, 255))) == (10, 20, 30)  # opaque: kept
    assert px(Image.new("LA", (2, 2), (50, 0))) == (255, 255, 255)
    half = px(Image.new("RGBA", (2, 2), (0, 0, 0, 128)))  # 50% black over white
    assert all(abs(v - 127) <= 1 for v in half)
    assert px(Image.new("CMYK", (2, 2), (0, 0, 0, 0))) == (255, 255, 255)  # no ink: white
    assert px(Image.new("CMYK", (2, 2), (255, 0, 0, 0))) == (0, 255, 255)  # full cyan
    # 16-bit grey keeps its top byte; PIL's own convert would clip 25600 to 255
    grey16 = Image.fromarray(np.full((2, 2), 100 * 256 + 77, dtype=np.uint16))
    assert grey16.mode.startswith("I;16") and px(grey16) == (100, 100, 100)
    assert px(Image.fromarray(np.full((2, 2), 65535, dtype=np.uint16))) == (255, 255, 255)
    pal = Image.new("P", (2, 2), 0)
    pal.putpalette([200, 10, 10] + [0] * 765)
    assert px(pal) == (200, 10, 10)
    pal.info["transparency"] = 0
    assert px(pal) == (255, 255, 255)
