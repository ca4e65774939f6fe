"""An image folder whose class folder holds no image (or, with data.on_bad_image=skip, no image
that decodes) fails in one line naming that folder, instead of becoming a class of 0 images; the
images skipped are counted for the run's summary and row."""

import pytest

from cnnlab import data
from cnnlab.errors import DataError
from tests.conftest import tiny, write_image_folder


def _cfg(root, *extra):
    return tiny("data=imagefolder", f"data.root={root}", "data.image_size=16", "data.workers=0",
                *extra).data


@pytest.mark.parametrize("mode", ["raise", "skip"])
@pytest.mark.parametrize("in_memory", ["true", "false"])
def test_an_empty_class_folder_is_named(tmp_path, mode, in_memory):
    root = tmp_path / "imgs"
    write_image_folder(root, classes=2, per_class=4)
    (root / "zebra").mkdir()
    (root / "zebra" / "notes.txt").write_text("no pictures here\n")
    with pytest.raises(DataError) as err:
        data.create(_cfg(root, f"data.on_bad_image={mode}", f"data.in_memory={in_memory}"))
    text = str(err.value)
    assert str(root / "zebra") in text and "no image" in text and "\n" not in text


@pytest.mark.parametrize("in_memory", ["true", "false"])
def test_a_class_whose_images_all_fail_to_decode_is_named_under_skip(tmp_path, in_memory):
    root = tmp_path / "imgs"
    write_image_folder(root, classes=2, per_class=4)
    (root / "zebra").mkdir()
    for i in range(2):
        (root / "zebra" / f"{i}.png").write_bytes(b"")
    with pytest.warns(UserWarning), pytest.raises(DataError) as err:
        data.create(_cfg(root, "data.on_bad_image=skip", f"data.in_memory={in_memory}"))
    text = str(err.value)
    assert str(root / "zebra") in text and "decodes" in text and "\n" not in text


def test_an_empty_class_folder_of_the_test_split_is_named(tmp_path):
    root = tmp_path / "imgs"
    write_image_folder(root / "train", classes=2, per_class=4)
    write_image_folder(root / "test", classes=1, per_class=2)
    (root / "test" / "class1").mkdir()
    with pytest.raises(DataError, match=f"{root / 'test' / 'class1'}"):
        data.create(_cfg(root, "data.on_bad_image=skip"))


@pytest.mark.parametrize("in_memory", ["true", "false"])
def test_skipped_images_are_counted_in_the_bundle(tmp_path, in_memory):
    root = tmp_path / "imgs"
    write_image_folder(root, classes=2, per_class=6)
    (root / "class0" / "bad.png").write_bytes(b"")
    (root / "class1" / "bad.png").write_text("text")
    with pytest.warns(UserWarning):
        b = data.create(_cfg(root, "data.on_bad_image=skip", f"data.in_memory={in_memory}"))
    assert b.info["skipped_images"] == 2
    assert len(b.train) + len(b.val) + len(b.test) == 12


def test_no_skipped_images_count_zero():
    b = data.create(tiny("data=digits").data)
    assert b.info.get("skipped_images", 0) == 0
