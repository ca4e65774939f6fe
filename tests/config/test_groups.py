"""Config groups do not overlap: each knob has one home. The reg presets that are augmentation
ops (mixup, cutout, cutmix) select the aug preset of that name and set no aug key themselves."""

import pytest
from omegaconf import OmegaConf

from cnnlab.config import compose, conf_dir, group_choices
from cnnlab.data.augment import list_ops
from cnnlab.errors import UsageError

REGS = group_choices("reg")
AUG_REGS = [r for r in REGS if r in list_ops()]


def test_some_reg_presets_are_augmentation_ops():
    assert set(AUG_REGS) >= {"mixup", "cutout", "cutmix"}


@pytest.mark.parametrize("reg", REGS)
def test_no_reg_preset_sets_an_aug_key(reg):
    preset = OmegaConf.load(conf_dir() / "reg" / f"{reg}.yaml")
    assert "aug" not in preset, f"conf/reg/{reg}.yaml sets aug keys: they belong in conf/aug/"
    assert compose([f"reg={reg}"]).reg == reg


@pytest.mark.parametrize("reg", AUG_REGS)
def test_an_augmentation_reg_is_its_aug_preset(reg):
    assert compose([f"reg={reg}"]).aug == compose([f"aug={reg}"]).aug
    # its parameters are the aug group's, and the command line changes them there
    key = {"cutout": "cutout_size", "mixup": "mixup_alpha", "cutmix": "cutmix_alpha"}.get(reg)
    if key:
        assert compose([f"reg={reg}", f"aug.{key}=4"]).aug[key] == 4


def test_reg_cutout_cuts_the_aug_presets_size():
    assert compose(["reg=cutout"]).aug.cutout_size == compose(["aug=cutout"]).aug.cutout_size == 16


@pytest.mark.parametrize("reg", AUG_REGS)
def test_an_augmentation_reg_with_an_aug_that_drops_it_is_refused(reg):
    with pytest.raises(UsageError, match=f"combine them as aug=\\[flip,{reg}\\]"):
        compose([f"reg={reg}", "aug=flip"])
    assert reg in compose([f"reg={reg}", f"aug=[flip,{reg}]"]).aug.ops
