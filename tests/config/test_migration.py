"""Renamed keys (trainer.device -> trainer.accelerator, precision.loss_scale -> precision.scaler)
still work for one release, with a one-line warning: on the command line, in presets and in the
config.yaml of runs an earlier version wrote."""

import shutil
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from cnnlab.config import RENAMED, Config, compose, conf_dir, load_config, migrate
from cnnlab.config import migration
from cnnlab.config.hashing import config_hash
from cnnlab.config.schema import ComposeConfig
from cnnlab.errors import UsageError

# a value of each old key that differs from the new key's default
OLD_VALUES = {"trainer.device": "cpu", "precision.loss_scale": "dynamic"}
CASES = [(old, new, OLD_VALUES[old]) for old, new in RENAMED.items()]


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch):
    monkeypatch.setattr(migration, "_WARNED", set())  # each test sees its warnings


def _message(old, new):
    return f"warning: {old} is deprecated; use {new} (it will be removed in the next release)"


def test_every_renamed_key_has_a_value_to_test_and_both_schemas_agree():
    assert set(OLD_VALUES) == set(RENAMED)
    for old, new in RENAMED.items():
        assert OmegaConf.select(OmegaConf.structured(Config), new) is not None
        assert OmegaConf.select(OmegaConf.structured(Config), old, default="absent") == "absent"
        assert old.split(".")[1] in OmegaConf.structured(ComposeConfig)[old.split(".")[0]]


@pytest.mark.parametrize("old, new, value", CASES)
def test_an_old_key_on_the_command_line_is_read_as_the_new_one(old, new, value, capsys):
    extra = ["precision=fp16_mixed_noscale"] if old == "precision.loss_scale" else []
    cfg = compose([*extra, f"{old}={value}"])
    assert OmegaConf.select(cfg, new) == value
    group, key = old.split(".")
    assert key not in cfg[group]  # gone: config.yaml, the hash and the results row use the new name
    assert capsys.readouterr().err.strip().splitlines() == [_message(old, new)]
    compose([*extra, f"{old}={value}"])
    assert capsys.readouterr().err == ""  # once per process


@pytest.mark.parametrize("old, new, value", CASES)
def test_an_old_and_a_new_key_together_on_the_command_line_is_an_error(old, new, value):
    with pytest.raises(UsageError, match=f"set {new}, not both it and {old}"):
        compose([f"{old}={value}", f"{new}={value}"])


def test_an_old_key_in_a_preset_works_and_yields_to_the_new_key_on_the_command_line(tmp_path,
                                                                                    monkeypatch, capsys):
    conf = tmp_path / "conf"
    shutil.copytree(conf_dir(), conf)
    (conf / "precision" / "old_fp16.yaml").write_text(
        "name: old_fp16\ndtype: float32\namp_dtype: float16\nloss_scale: dynamic\n")
    (conf / "trainer" / "old.yaml").write_text("defaults:\n  - default\n  - _self_\n\ndevice: cpu\n")
    monkeypatch.setenv("CNNLAB_CONF", str(conf))
    cfg = compose(["precision=old_fp16", "trainer=old"])
    assert cfg.precision.scaler == "dynamic" and cfg.trainer.accelerator == "cpu"
    assert len(capsys.readouterr().err.strip().splitlines()) == 2
    cfg = compose(["precision=old_fp16", "precision.scaler=none"])
    assert cfg.precision.scaler == "none"


def _old_run_config(path, cfg=None):
    """Write config.yaml as the previous release wrote it: the old key names."""
    d = OmegaConf.to_container(cfg if cfg is not None else compose([]), resolve=True)
    for old, new in RENAMED.items():
        group, new_key = new.split(".")
        d[group][old.split(".")[1]] = d[group].pop(new_key)
    OmegaConf.save(OmegaConf.create(d), path)
    return d


def test_a_saved_config_with_old_keys_loads_migrated_and_hashes_as_the_new_one(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    old = _old_run_config(path, compose(["trainer.accelerator=cpu"]))
    assert old["trainer"]["device"] == "cpu"
    cfg = load_config(path)
    assert cfg.trainer.accelerator == "cpu" and "device" not in cfg.trainer
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and f"(in {path})" in err[0]
    # resume's match of a config to a run folder: the old file hashes as the composed config
    new = compose(["trainer.accelerator=cpu"])
    assert config_hash(old, schema=True) == config_hash(new, schema=True)
    assert "device" in old["trainer"]  # the caller's dict is left alone
    assert load_config(path, warn=False) and capsys.readouterr().err == ""


def test_migrate_takes_plain_dicts_and_leaves_new_configs_alone():
    d = {"trainer": {"device": "cuda:1"}, "precision": {"scaler": "dynamic"}}
    assert migrate(d, warn=False) == {"trainer": {"accelerator": "cuda:1"}, "precision": {"scaler": "dynamic"}}
    cfg = compose([])
    assert migrate(cfg) is cfg and OmegaConf.to_container(cfg) == OmegaConf.to_container(compose([]))


@pytest.mark.slow
def test_the_command_line_and_a_saved_run_with_old_keys(tmp_path):
    """`cnnlab train trainer.device=cpu` runs with one warning line; `cnnlab eval` reads a run
    whose config.yaml has the old names."""
    env = {**__import__("os").environ, "CNNLAB_OUTPUTS": str(tmp_path / "out")}
    proc = subprocess.run([sys.executable, "-m", "cnnlab", "train", "trainer.device=cpu",
                           "trainer.epochs=1", "trainer.progress=none", "trainer.threads=1",
                           "model=lenet5"], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines() == [_message("trainer.device", "trainer.accelerator")]
    run = next((tmp_path / "out" / "runs").iterdir())
    saved = OmegaConf.load(run / "config.yaml")
    assert saved.trainer.accelerator == "cpu" and "device" not in saved.trainer
    _old_run_config(run / "config.yaml", saved)
    proc = subprocess.run([sys.executable, "-m", "cnnlab", "eval", str(run)], capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "trainer.device is deprecated" in proc.stderr and "Traceback" not in proc.stderr
