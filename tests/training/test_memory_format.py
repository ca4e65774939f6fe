"""trainer.channels_last (auto rule, NHWC tensors) and trainer.compile (keys and numbers kept)."""

from types import SimpleNamespace

import pytest
import torch

from cnnlab import checkpoint
from cnnlab.config import validate
from cnnlab.errors import UsageError
from cnnlab.training.device import use_channels_last
from cnnlab.training.recipe import build_parts, train
from conftest import tiny


def _prec(dtype=torch.float32, amp=None):
    return SimpleNamespace(param_dtype=dtype, amp_dtype=amp)


@pytest.mark.parametrize("setting,device,prec,expected", [
    ("auto", "cpu", _prec(), True),
    ("auto", "cpu", _prec(torch.float64), False),
    ("auto", "cpu", _prec(torch.bfloat16), True),
    ("auto", "cuda", _prec(), False),
    ("auto", "cuda", _prec(amp=torch.float16), True),
    ("auto", "cuda", _prec(torch.bfloat16), True),
    ("auto", "mps", _prec(), False),
    (False, "cpu", _prec(), False),
    (True, "cuda", _prec(), True),
])
def test_channels_last_auto_rule(setting, device, prec, expected):
    assert use_channels_last(setting, torch.device(device), prec) is expected


def test_auto_puts_conv_weights_and_batches_in_nhwc_on_cpu():
    parts = build_parts(tiny("model=resnet8"))
    assert parts.channels_last
    convs = [m.weight for m in parts.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    parts.train_loader.set_epoch(1)
    x, _ = next(iter(parts.train_loader))
    assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    nchw = build_parts(tiny("model=resnet8", "trainer.channels_last=false"))
    assert not nchw.channels_last
    assert all(m.weight.is_contiguous() for m in nchw.model.modules() if isinstance(m, torch.nn.Conv2d))
    fp64 = build_parts(tiny("model=lenet5", "precision=fp64"))
    assert not fp64.channels_last


def test_nhwc_and_nchw_runs_agree():
    """The memory format changes the kernels, not the maths: losses agree to float32 rounding."""
    a = train(tiny("model=lenet5", "trainer.channels_last=true", "trainer.epochs=1"))
    b = train(tiny("model=lenet5", "trainer.channels_last=false", "trainer.epochs=1"))
    assert a["channels_last"] and not b["channels_last"]
    assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)


def test_bad_channels_last_value_is_a_usage_error():
    with pytest.raises(UsageError, match="trainer.channels_last"):
        validate(tiny("trainer.channels_last=sometimes"))


def test_compiled_model_trains_to_the_same_numbers_and_keeps_checkpoint_keys(outputs):
    # aot_eager traces forward and backward through torch.compile's machinery without
    # generating C++ code, so the wiring is tested in seconds; inductor is the default
    cfg = ["model=lenet5", "trainer.epochs=1", "trainer.compile_backend=aot_eager"]
    compiled = train(tiny(*cfg, "trainer.compile=true"))
    plain = train(tiny(*cfg))
    assert compiled["compiled"] and not plain["compiled"]
    assert compiled["train_loss"] == pytest.approx(plain["train_loss"], rel=1e-5)
    keys = {p: set(checkpoint.load(outputs / "runs" / s["run_id"] / "checkpoints" / "last.pt")["model"])
            for p, s in (("c", compiled), ("p", plain))}
    assert keys["c"] == keys["p"] and not any("_orig_mod" in k for k in keys["c"])
