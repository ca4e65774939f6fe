"""Every config check fires at compose time, before any data loads: the base config below names a
dataset whose files do not exist, so a check that waited for the data would lose to the
missing-files error. Also the allowlists and registries the checks read."""

import subprocess
import sys

import pytest

from cnnlab import data, models
from cnnlab.config import compose, conf_dir, group_choices
from cnnlab.config.checks import OPTIMIZERS, SCHEDULES
from cnnlab.data import DATASETS
from cnnlab.errors import CnnlabError, UsageError

NO_FILES = ["data=cifar10", "data.root=/no/such/folder"]  # 32x32 RGB, declared in the registry
BLOCKS = [name for name, e in models.list_models().items() if e.kind != "classifier"]
PRETRAIN = ["transfer=finetune_all", "transfer.source=pretrain"]
PROBE = ["transfer=linear_probe", "transfer.source=torchvision:resnet18.DEFAULT"]

CASES = [
    # precision (was cnnlab/training/precision.py create)
    (["precision.dtype=int8"], "unknown precision.dtype 'int8'; choose from: float64, float32"),
    (["precision.scaler=static"], "unknown precision.scaler 'static'; choose from: none, dynamic"),
    (["precision.rounding=even"], "unknown precision.rounding 'even'; choose from: nearest, stochastic"),
    (["precision.amp_dtype=float8"], "unknown precision.amp_dtype 'float8'"),
    (["precision=fp64", "precision.amp_dtype=float16"], "mixes into float32 weights, not float64"),
    (["precision=bf16_pure", "precision.scaler=dynamic"], "precision.scaler=dynamic needs float32 weights"),
    (["precision=fp32", "precision.rounding=stochastic"], "use it with precision=bf16_pure or fp16_pure"),
    (["precision.init_scale=0"], "precision.init_scale=0.0 is not allowed"),
    (["precision.growth_interval=0"], "precision.growth_interval=0 is not allowed"),
    # augmentation (was cnnlab/data/augment.py: op lookup, each op's parameters, crop vs image)
    (["aug.ops=[flip,nope]"], "unknown augmentation op 'nope'"),
    (["aug=crop", "aug.crop_size=41"], "aug.crop_size=41 is larger than the 32x32 images of data=cifar10"),
    (["aug=crop", "aug.crop_size=20", "aug.crop_padding=0", "data.image_size=16"], "than the 16x16 images"),
    (["data=mnist", "aug=pca"], "aug op 'pca' needs 3-channel (RGB) images; data=mnist has 1 channel"),
    (["aug.flip_p=2"], "aug.flip_p=2.0 is not allowed"),
    (["aug.crop_padding=-1"], "aug.crop_padding=-1 is not allowed"),
    (["aug.scale_min=0"], "aug.scale_min=0.0 is not allowed"),
    (["aug=scale", "aug.scale_min=0.9", "aug.scale_max=0.5"], "must be at most aug.scale_max"),
    (["aug=scale", "aug.ratio_min=2"], "must be at most aug.ratio_max"),
    (["aug.brightness=-1"], "aug.brightness=-1.0 is not allowed"),
    (["aug.cutout_size=-2"], "aug.cutout_size=-2 is not allowed"),
    (["aug.mixup_alpha=0"], "aug.mixup_alpha=0.0 is not allowed"),
    (["aug.mix_mode=row"], "unknown aug.mix_mode 'row'; choose from: sample, batch"),
    (["reg=cutout", "aug=flip"], "reg=cutout selects aug=cutout, but aug=flip replaced it"),
    # transfer (was cnnlab/transfer/__init__.py check, sources.py, layers.py, training/probing.py)
    (["transfer.name=nope"], "unknown transfer strategy 'nope'"),
    (["transfer=linear_probe"], "transfer=linear_probe needs transfer.source"),
    ([*PROBE, "aug=flip"], "trains on cached features of un-augmented images; use aug=none"),
    (["transfer=finetune_all", "transfer.source=torchvision:resnet18"], "named <arch>.<WEIGHTS>"),
    (PRETRAIN, "transfer.source=pretrain needs transfer.pretrain"),
    ([*PRETRAIN, "transfer.pretrain=['model=lenet5']"], "transfer.pretrain sets 'model=lenet5'"),
    ([*PRETRAIN, "transfer.pretrain=['data=nope']"], "transfer.pretrain: unknown data 'nope'"),
    ([*PRETRAIN, "transfer.pretrain=['optim.lr=-1']"], "transfer.pretrain: optim.lr=-1.0 is not allowed"),
    (["transfer.unfreeze=-1"], "transfer.unfreeze=-1 is not allowed"),
    (["transfer.resize=0"], "transfer.resize=0 is not allowed"),
    (["transfer.probe_c=[]"], "transfer.probe_c=[] is not allowed"),
    (["transfer.probe_layers=0"], "transfer.probe_layers=0 is not allowed"),
    (["transfer.lr_mult=[1.0,-0.1]"], "transfer.lr_mult=[1.0, -0.1] is not allowed: it must be positive"),
    # model (cnnlab.models.check_options; the classifier check was in training/recipe.py)
    (["model.name=nope"], "unknown model 'nope'; choose from:"),
    (["model=lenet5", "model.growth_rate=12"], "model lenet5 has no option 'growth_rate'"),
    *[([f"model.name={b}"], "is a building block") for b in BLOCKS[:1]],
    # optimiser, schedule, no instantiate keys
    (["optim.name=lbfgs"], "unknown optim.name 'lbfgs'; choose from: sgd, adam"),
    (["sched.name=exponential"], "unknown sched.name 'exponential'"),
    (["optim.lr=0.1", "sched.min_lr=0.5"], "sched.min_lr=0.5 must be below optim.lr=0.1"),
    (["optim.lr=0.1", "sched.min_lr=0.15", "trainer.devices=2", "trainer.lr_scaling=linear",
      "trainer.accelerator=cuda", "sched.name=none"], None),  # 0.15 < 0.1 x 2 processes: fine
    (["+optim._target_=torch.optim.SGD"], "config key 'optim._target_' is not allowed"),
    # processes (was cnnlab/training/distributed.py check; resume.py find)
    (["trainer.devices=2", "trainer.lr_scaling=bogus"], "unknown trainer.lr_scaling 'bogus'; choose from: none, linear"),
    (["trainer.devices=2", "trainer.accelerator=cuda:1"], "trainer.accelerator=cuda:1 names one device"),
    (["trainer.devices=2", "trainer.accelerator=cpu", "trainer.sync_bn=true"], "trainer.sync_bn=true needs CUDA"),
    (["trainer.devices=2", *PROBE], "fits its probes in one process"),
    (["trainer.devices=2", "resume=auto"], "resume works with one process"),
    (["trainer.accelerator=tpu"], "trainer.accelerator=tpu is not allowed: it must be auto, cpu, cuda"),
    # data (was cnnlab/data/__init__.py create, torchvision_sets.py check_root)
    (["data=imagefolder", "data.root=null"], "data=imagefolder needs data.root=<folder>"),
    (["data.mean=[0.5,0.5,0.5]"], "set both data.mean and data.std, or neither"),
    (["data.mean=[0.5]", "data.std=[0.5]"], "data.mean and data.std need 3 values for cifar10"),
    (["data.mean=[0.5,0.5,0.5]", "data.std=[0.5,0.0,0.5]"], "data.std=[0.5, 0.0, 0.5] is not allowed"),
    (["data.name=nope"], "unknown dataset 'nope'"),
]


def _id(case):
    return " ".join(case[0])[:60]


def test_the_base_composes_and_its_data_would_fail_to_load():
    cfg = compose(NO_FILES)
    assert data.missing(cfg.data)
    with pytest.raises(CnnlabError):
        data.create(cfg.data)


@pytest.mark.parametrize("overrides, fragment", CASES, ids=[_id(c) for c in CASES])
def test_a_check_fires_at_compose_before_any_data_loads(overrides, fragment, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("data loaded before the config was checked")

    monkeypatch.setattr(data, "create", no_loading)
    if fragment is None:
        compose([*NO_FILES, *overrides])
        return
    with pytest.raises(UsageError) as err:
        compose([*NO_FILES, *overrides])
    assert fragment in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("args, fragment", [
    (["precision=bf16_pure", "precision.scaler=dynamic"], "needs float32 weights"),
    (["aug=crop", "aug.crop_size=64"], "aug.crop_size=64 is larger than the 32x32 images"),
    (["transfer=linear_probe"], "needs transfer.source"),
])
def test_the_config_error_wins_over_missing_files_on_the_command_line(args, fragment):
    proc = subprocess.run([sys.executable, "-m", "cnnlab", "train", *NO_FILES, *args],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and fragment in proc.stderr


# ---------------------------------------------------------------------------- allowlists, registries

@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_allowlisted_optimiser_composes(name):
    assert compose([f"optim.name={name}"]).optim.name == name


@pytest.mark.parametrize("group, allowed", [("optim", OPTIMIZERS), ("sched", SCHEDULES)])
def test_the_presets_name_exactly_the_allowlist(group, allowed):
    names = {compose([f"{group}={c}"])[group].name for c in group_choices(group)}
    assert names == set(allowed)


@pytest.mark.parametrize("name", sorted(DATASETS.names()))
def test_every_dataset_declares_what_the_checks_need(name):
    entry = DATASETS.get(name)
    assert entry.size and entry.channels in (1, 3)
    assert name in group_choices("data")


@pytest.mark.parametrize("name", [n for n in sorted(DATASETS.names()) if not DATASETS.get(n).needs_root])
def test_the_declared_size_and_channels_are_what_loads(name):
    cfg = compose([f"data={name}", "data.num_train=20", "data.num_test=10"])
    bundle = data.create(cfg.data)
    assert bundle.image_size == (DATASETS.get(name).size,) * 2
    assert bundle.in_chans == DATASETS.get(name).channels


@pytest.mark.parametrize("op", sorted(__import__("cnnlab.data.augment", fromlist=["OPS"]).list_ops()))
def test_every_registered_op_composes_on_rgb_data(op):
    assert list(compose(["data=shapes", f"aug.ops=[{op}]"]).aug.ops) == [op]


def test_conf_holds_no_instantiate_keys():
    for path in conf_dir().rglob("*.yaml"):
        assert "_target_" not in path.read_text(), path
