"""Overrides that used to slip past the schema or fail without a hint: keys added with `+`,
non-finite numbers, unquoted non-ASCII values. Each is one line naming the key or override."""

import pytest
from typer.testing import CliRunner

from cnnlab.cli.main import app
from cnnlab.config import compose
from cnnlab.errors import UsageError


@pytest.mark.parametrize("override, fragment", [
    ("+trainer.epochz=3", "did you mean trainer.epochs?"),
    ("++trainer.epochz=3", "did you mean trainer.epochs?"),
    ("+optim.lrr=0.1", "did you mean optim.lr?"),
    ("+seedz=1", "did you mean seed?"),
    ("+data.extra.deep=1", "unknown key 'data.extra' (added with +)"),
    ("+zzz=1", "unknown key 'zzz'"),
])
def test_an_unknown_key_added_with_plus_is_refused(override, fragment):
    with pytest.raises(UsageError) as err:
        compose([override])
    text = str(err.value)
    assert fragment in text and "\n" not in text and "unknown key '" in text


@pytest.mark.parametrize("override, check", [
    ("++trainer.epochs=3", lambda cfg: cfg.trainer.epochs == 3),  # force-add of a known key sets it
    ("+transfer.resolved.arch=lenet5", lambda cfg: cfg.transfer.resolved.arch == "lenet5"),  # a free dict
    ("+hydra.job.env_set.CNNLAB_METRIC=val_acc", lambda cfg: cfg.trainer.epochs == 20),  # Hydra's own
])
def test_legitimate_plus_overrides_still_compose(override, check):
    assert check(compose([override]))


def test_plus_instantiate_keys_keep_their_own_message():
    with pytest.raises(UsageError, match="config key 'optim._target_' is not allowed"):
        compose(["+optim._target_=torch.optim.SGD"])


def test_a_plain_unknown_key_suggests_the_close_one():
    with pytest.raises(UsageError, match="did you mean trainer.epochs"):
        compose(["trainer.epochz=3"])


@pytest.mark.parametrize("override", [
    "optim.lr=inf", "optim.lr=-inf", "optim.lr=nan", "optim.lr=-0.1", "optim.lr=0",
    "optim.weight_decay=inf", "optim.eps=inf", "optim.momentum=nan", "optim.alpha=nan",
    "optim.betas=[0.9,inf]", "sched.min_lr=inf", "sched.warmup_epochs=inf", "sched.gamma=nan",
    "precision.init_scale=inf", "trainer.grad_clip=inf", "trainer.label_smoothing=nan",
    "transfer.lr_mult=[1.0,inf]", "aug.brightness=inf",
])
def test_non_finite_or_negative_numbers_are_refused_at_compose(override):
    key = override.split("=")[0]
    with pytest.raises(UsageError) as err:
        compose([override])
    text = str(err.value)
    assert text.startswith(f"{key}=") and "\n" not in text


def test_lr_inf_on_the_command_line_is_one_line_and_leaves_no_outputs(outputs):
    result = CliRunner().invoke(app, ["train", "optim.lr=inf", "trainer.epochs=1"])
    assert result.exit_code == 2, result.output
    assert "optim.lr=inf" in result.output and "finite" in result.output
    assert "Traceback" not in result.output
    assert not outputs.exists()


@pytest.mark.parametrize("override", ["data.root=/tmp/données", "tag=café", "name=café",
                                      "tag=日本"])
def test_unquoted_non_ascii_says_to_quote(override):
    with pytest.raises(UsageError) as err:
        compose([override])
    text = str(err.value)
    key, _, value = override.partition("=")
    assert "\n" not in text and "quote" in text and f"{key}='{value}'" in text


def test_quoted_non_ascii_composes():
    cfg = compose(["tag='café'", "data.root='/tmp/données'"])
    assert cfg.tag == "café" and cfg.data.root == "/tmp/données"


def test_an_lr_whose_scaled_value_overflows_is_refused():
    with pytest.raises(UsageError, match=r"optim.lr=1e\+308 is not allowed.*inf"):
        compose(["optim.lr=1e308", "trainer.lr_scaling=linear", "trainer.devices=2",
                 "trainer.accelerator=cpu"])


def test_a_non_ascii_list_item_is_quoted_item_by_item():
    with pytest.raises(UsageError, match=r"""transfer.pretrain=\['data=shapes','tag=café'\]"""):
        compose(["transfer=finetune_all", "transfer.source=pretrain",
                 "transfer.pretrain=[data=shapes,tag=café]"])
    # the pretraining overrides are parsed again: there the value itself needs its quotes
    with pytest.raises(UsageError, match=r"^transfer.pretrain: .*\"tag='café'\""):
        compose(["transfer=finetune_all", "transfer.source=pretrain",
                 "transfer.pretrain=['data=shapes','tag=café']"])
    cfg = compose(["transfer=finetune_all", "transfer.source=pretrain",
                   "transfer.pretrain=['data=shapes',\"tag='café'\"]"])
    assert list(cfg.transfer.pretrain) == ["data=shapes", "tag='café'"]
