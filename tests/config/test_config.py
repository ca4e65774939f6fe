import pytest

from cnnlab.config import GROUPS, compose, conf_dir, group_choices
from cnnlab.errors import UsageError

# What some options need beside them to compose: a folder for imagefolder, RGB data for the
# aug presets (pca needs three channels), a source for every transfer strategy but scratch.
NEEDS = {("data", "imagefolder"): ["data.root=/tmp"], "aug": ["data=shapes"],
         "transfer": ["transfer.source=torchvision:resnet18.DEFAULT"]}
OPTIONS = [(g, c) for g in GROUPS for c in group_choices(g)]


def test_defaults_compose_with_every_group():
    cfg = compose([])
    for g in GROUPS:
        assert g in cfg
    assert cfg.data.name == "digits" and cfg.model.name == "resnet8"
    # the trivial choices later issues extend are wired in
    assert (cfg.aug.name, cfg.transfer.name, cfg.precision.name, cfg.eval.name) == \
        ("none", "scratch", "fp32", "center")


def test_overrides_are_applied_and_typed():
    cfg = compose(["model=lenet5", "data=shapes", "optim=adam", "optim.lr=3e-3",
                   "trainer.epochs=5", "seed=1"])
    assert cfg.model.name == "lenet5" and cfg.data.name == "shapes" and cfg.optim.name == "adam"
    assert cfg.optim.lr == pytest.approx(3e-3) and isinstance(cfg.trainer.epochs, int)
    assert cfg.trainer.epochs == 5 and cfg.seed == 1


def test_the_groups_are_the_folders_of_conf():
    assert sorted(GROUPS) == sorted(p.name for p in conf_dir().iterdir() if p.is_dir())


@pytest.mark.parametrize("group, choice", OPTIONS, ids=[f"{g}={c}" for g, c in OPTIONS])
def test_every_group_option_composes(group, choice):
    extra = NEEDS.get((group, choice), NEEDS.get(group, [])) if choice != "scratch" else []
    cfg = compose([f"{group}={choice}", *extra])
    assert group in cfg


@pytest.mark.parametrize("override, fragment", [
    (["model=nope"], "unknown model 'nope'; choose from: alexnet"),
    (["trainer=nope"], "unknown trainer 'nope'"),
    (["trainer.nope=1"], "unknown key 'trainer.nope'"),
    (["nope=1"], "unknown key 'nope'"),
    (["trainer.epochs=abc"], "bad value for trainer.epochs"),
    (["optim.lr=-1"], "optim.lr=-1.0 is not allowed"),
    (["data.val_fraction=1.5"], "data.val_fraction=1.5 is not allowed"),
    (["data.train_per_class=0"], "data.train_per_class=0 is not allowed"),
    (["data.train_per_class=5", "data.train_fraction=0.5"], "not both"),
    (["model=lenet5,resnet8"], "a list of values is a sweep"),
    (["seed=-1"], "seed=-1 is not allowed"),
    (["data=[digits,shapes]"], "data takes one option, not a list"),
    (["optim.betas=[0.9]"], "optim.betas=[0.9] is not allowed"),
    (["model.norm_groups=0"], "model.norm_groups=0 is not allowed"),
    (["sched.factor=2"], "sched.factor=2.0 is not allowed"),
    (["trainer.epochs=${oc.env:CNNLAB_NO_SUCH_VAR}"], "cannot resolve the config"),
])
def test_bad_input_is_one_line_usage_error(override, fragment):
    with pytest.raises(UsageError) as err:
        compose(override)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_group_choices_are_the_yaml_files():
    files = sorted(p.stem for p in (conf_dir() / "optim").glob("*.yaml"))
    assert group_choices("optim") == files and "adam" in files


def test_a_list_of_aug_presets_composes_their_ops_in_order():
    cfg = compose(["data=shapes", "aug=[alexnet,cutout]"])  # RGB: the pca op needs three channels
    assert list(cfg.aug.ops) == ["crop", "flip", "pca", "cutout"] and cfg.aug.name == "alexnet+cutout"
    assert cfg.aug.pca_std == compose(["data=shapes", "aug=alexnet"]).aug.pca_std  # parameters merge too
    assert cfg.aug.cutout_size == compose(["aug=cutout"]).aug.cutout_size
    # an op named twice runs once; explicit aug.ops wins
    assert list(compose(["data=shapes", "aug=[crop,alexnet]"]).aug.ops) == ["crop", "flip", "pca"]
    assert list(compose(["aug=[crop,flip]", "aug.ops=[flip]"]).aug.ops) == ["flip"]
    with pytest.raises(UsageError, match="unknown aug 'blur'"):
        compose(["aug=[crop,blur]"])
    with pytest.raises(UsageError, match="takes one option"):
        compose(["model=[lenet5,resnet8]"])


def test_cells_of_a_check_compose_their_shared_pretraining_config_once(monkeypatch):
    """validate_jobs checks every cell; a transfer experiment's cells name one pretraining run,
    composed once per check. Outside a check it is composed again each time (a preset that
    changed since is read anew)."""
    import importlib

    compose_module = importlib.import_module("cnnlab.config.compose")  # the module, not the function
    pretrain = ["data=digits", "trainer.epochs=1"]
    cell = ["transfer.source=pretrain", f"transfer.pretrain=[{','.join(repr(o) for o in pretrain)}]"]
    seen = []
    real = compose_module._compose

    def counting(overrides, with_hydra):
        seen.append(list(overrides or []))
        return real(overrides, with_hydra)

    monkeypatch.setattr(compose_module, "_compose", counting)
    with compose_module.checking_cells():
        for lr in ("0.1", "0.01"):
            compose_module.compose([*cell, f"optim.lr={lr}"])
    assert seen.count(pretrain) == 1
    compose_module.compose(cell)
    compose_module.compose(cell)
    assert seen.count(pretrain) == 3
