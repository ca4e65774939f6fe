import math
import warnings

import pandas as pd
import pytest
import torch

from cnnlab import checkpoint
from cnnlab.training import engine
from cnnlab.training import optim
from cnnlab.training import precision
from cnnlab.config import compose, group_choices
from cnnlab.errors import UsageError
from cnnlab.training.progress import make_progress
from cnnlab.training.recipe import build_parts, train
from conftest import tiny

# fp16 (and bf16 on CPUs without it) is emulated and slow on CPU: a few images, a small net
SMALL = ("data=digits", "data.train_per_class=20", "model=lenet5", "trainer.epochs=1")
WEIGHT_DTYPE = {"fp64": torch.float64, "bf16_pure": torch.bfloat16, "fp16_pure": torch.float16,
                "bf16_pure_stochastic": torch.bfloat16, "fp16_pure_stochastic": torch.float16}

pytestmark = pytest.mark.filterwarnings("ignore::cnnlab.training.precision.PrecisionWarning")


def _create(*overrides, device="cpu"):
    return precision.create(compose(list(overrides)).precision, device)


def _float_tensors(state: dict):
    return {k: v for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point()}


def test_fp64_runs_hold_float64_weights_end_to_end(outputs):
    parts = build_parts(tiny(*SMALL, "precision=fp64"))
    x, _ = next(iter(parts.train_loader))
    assert x.dtype == torch.float64
    assert all(p.dtype == torch.float64 for p in parts.model.parameters())
    s = train(tiny(*SMALL, "precision=fp64"))
    assert s["status"] == "done" and math.isfinite(s["train_loss"])
    last = checkpoint.load(outputs / "runs" / s["run_id"] / "checkpoints" / "last.pt")
    weights = _float_tensors(last["model"])
    assert weights and all(v.dtype == torch.float64 for v in weights.values())
    momenta = [v for st in last["optimizer"]["state"].values() for v in _float_tensors(st).values()]
    assert momenta and all(v.dtype == torch.float64 for v in momenta)


@pytest.mark.parametrize("name", group_choices("precision"))
def test_every_preset_composes_and_trains_one_epoch(name, outputs):
    s = train(tiny(*SMALL, f"precision={name}"))
    assert s["status"] == "done" and math.isfinite(s["train_loss"])
    m = pd.read_csv(outputs / "runs" / s["run_id"] / "metrics.csv")
    assert {"skipped_steps", "loss_scale"} <= set(m.columns)
    last = checkpoint.load(outputs / "runs" / s["run_id"] / "checkpoints" / "last.pt")
    want = WEIGHT_DTYPE.get(name, torch.float32)
    assert {v.dtype for v in _float_tensors(last["model"]).values()} == {want}


@pytest.mark.parametrize("name", ["bf16_mixed", "fp16_pure"])
def test_soft_targets_train_under_16_bit_presets(name):
    s = train(tiny(*SMALL, f"precision={name}", "aug=mixup"))
    assert s["status"] == "done" and math.isfinite(s["train_loss"])


def test_stochastic_rounding_runs_repeat_exactly(outputs):
    cfg = tiny(*SMALL, "precision=bf16_pure", "precision.rounding=stochastic", "trainer.epochs=2")
    a, b = (pd.read_csv(outputs / "runs" / train(cfg)["run_id"] / "metrics.csv") for _ in range(2))
    cols = ["train_loss", "train_acc", "val_loss", "val_acc"]
    pd.testing.assert_frame_equal(a[cols], b[cols], check_exact=True)


def test_fp16_loss_scaler_skips_overflowing_steps_backs_off_and_recovers():
    init = 2.0 ** 30  # scaled gradients far past fp16's 65504: the first steps overflow
    cfg = tiny("data=digits", "data.train_per_class=30", "model=lenet5", "trainer.epochs=3",
               "trainer.batch_size=32", "trainer.checkpoints=false", "sched=onecycle",
               "precision=fp16_mixed", f"precision.init_scale={init}")
    parts = build_parts(cfg)
    opt = optim.build_optimizer(parts.model, cfg.optim)
    sched, when = optim.build_scheduler(opt, cfg.sched, cfg.trainer.epochs, len(parts.train_loader), "max")
    assert when == "step"
    fit = engine.fit(parts.model, parts.train_loader, parts.val_loader, opt, sched, when, cfg.trainer,
                     parts.precision, make_progress("none", cfg.trainer.epochs))
    total = cfg.trainer.epochs * len(parts.train_loader)
    skipped = sum(r["skipped_steps"] for r in fit.history)
    assert skipped == fit.skipped_steps == parts.precision.skipped_steps > 0
    assert fit.history[0]["skipped_steps"] > 0
    assert parts.precision.steps == total - skipped > 0  # training resumed
    assert sched.last_epoch == parts.precision.steps  # the schedule saw real updates only
    assert fit.loss_scale < init and fit.loss_scale == fit.history[-1]["loss_scale"]
    assert all(math.isfinite(r["train_loss"]) for r in fit.history)
    assert fit.history[-1]["train_loss"] < fit.history[0]["train_loss"]


def _tiny_grad_problem(prec, scale):
    torch.manual_seed(0)
    model = torch.nn.Linear(16, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    x, y = torch.randn(8, 16), torch.randint(0, 4, (8,))
    with prec.autocast():
        loss = torch.nn.functional.cross_entropy(model(x), y) * scale
    assert prec.step(loss, opt, model)
    return model.weight.grad


def test_fp16_without_loss_scaling_flushes_small_gradients_to_zero():
    scale = 1e-7  # dL/dlogits ~ 1e-9: below fp16's smallest subnormal, 2**-24 ~ 6e-8
    g32 = _tiny_grad_problem(_create("precision=fp32"), scale)
    g16 = _tiny_grad_problem(_create("precision=fp16_mixed_noscale"), scale)
    scaled = _tiny_grad_problem(_create("precision=fp16_mixed"), scale)  # x 2**16 on the way back
    assert (g32 == 0).sum() == 0
    assert (g16 == 0).sum() > 0
    assert (scaled == 0).sum() == 0
    assert torch.allclose(scaled, g32, rtol=0.05, atol=0)


def test_gradient_clipping_sees_unscaled_gradients():
    prec = _create("precision=fp16_mixed")
    torch.manual_seed(0)
    model = torch.nn.Linear(16, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    with prec.autocast():
        loss = torch.nn.functional.cross_entropy(model(torch.randn(8, 16)), torch.randint(0, 4, (8,)))
    assert prec.step(loss, opt, model, grad_clip=0.01)  # the true norm is ~1, the scaled one ~1e5
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert norm.item() == pytest.approx(0.01, rel=1e-3)


GRIDS = [(torch.bfloat16, 2.0 ** -7), (torch.float16, 2.0 ** -10)]  # spacing just above 1.0


@pytest.mark.parametrize("dtype, ulp", GRIDS)
@pytest.mark.parametrize("how", ["dtype's own", "general"])
@pytest.mark.parametrize("lo, frac", [(1.0, 0.3), (-1.0, 0.7), (1.5, 0.01)])
def test_stochastic_rounding_is_unbiased(dtype, ulp, how, lo, frac):
    n = 200_000
    step = ulp if lo > 0 else -ulp  # away from zero: the neighbour of lo on that side
    v = lo + frac * step
    x = torch.full((n,), v, dtype=torch.float32)
    gen = torch.Generator().manual_seed(0)
    r = (precision.round_to(x, dtype, "stochastic", gen) if how == "dtype's own"
         else precision.stochastic_round(x, dtype, gen))
    assert r.dtype == dtype
    assert set(r.float().unique().tolist()) <= {lo, lo + step}
    sigma = ulp * math.sqrt(frac * (1 - frac) / n)  # std of the mean of n Bernoulli draws
    assert abs(r.double().mean().item() - v) < 5 * sigma
    assert torch.equal(precision.round_to(x, dtype, "nearest"), x.to(dtype))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_stochastic_rounding_keeps_grid_values_and_specials(dtype):
    x = torch.tensor([0.0, -0.0, 1.0, -2.5, float("inf"), float("-inf"), float("nan")])
    for seed in range(10):
        r = precision.round_to(x, dtype, "stochastic", torch.Generator().manual_seed(seed))
        assert torch.equal(r[:6], x[:6].to(dtype))
        assert torch.equal(r[:6].signbit(), x[:6].signbit()) and r[6].isnan()


@pytest.mark.parametrize("name", ["bf16_pure", "fp16_pure"])
def test_nearest_rounding_drops_small_updates_that_stochastic_rounding_keeps(name):
    n, steps, lr, g = 20_000, 50, 1.0, 2.0 ** -14  # each update ~6e-5, under half a step at 1.0
    means = {}
    for rounding in ("nearest", "stochastic"):
        prec = _create(f"precision={name}", f"precision.rounding={rounding}")
        w = torch.nn.Parameter(torch.ones(n, dtype=prec.param_dtype))
        opt = torch.optim.SGD([w], lr=lr)
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            assert prec.step((w * -g).sum(), opt, w)  # gradient -g: each step adds lr * g
        assert w.dtype == prec.param_dtype
        means[rounding] = w.double().mean().item()
    assert means["nearest"] == 1.0  # w + tiny rounds back to w, every step
    ulp = 2.0 ** -7 if name == "bf16_pure" else 2.0 ** -10
    sigma = ulp * math.sqrt(steps / 4 / n)  # each step's rounding varies by at most ulp / 2
    assert means["stochastic"] == pytest.approx(1.0 + steps * lr * g, abs=5 * sigma)


def test_pure_optimizer_state_stays_fp32():
    prec = _create("precision=bf16_pure")
    w = torch.nn.Parameter(torch.ones(4, dtype=torch.bfloat16))
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    prec.step((w * w).sum(), opt, w)
    assert w.dtype == w.grad.dtype == torch.bfloat16
    assert opt.state[w]["momentum_buffer"].dtype == torch.float32


def test_tf32_on_cpu_says_in_one_line_that_it_is_fp32():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prec = _create("precision=tf32")
    assert prec.param_dtype == torch.float32 and prec.amp_dtype is None
    assert len(caught) == 1 and issubclass(caught[0].category, precision.PrecisionWarning)
    w = caught[0]
    assert "plain fp32" in str(w.message)
    assert len(warnings.formatwarning(w.message, w.category, w.filename, w.lineno).strip().splitlines()) == 1


# None: no /proc/cpuinfo to read, so nothing known to warn about
@pytest.mark.parametrize("preset, flags, warns", [
    ("fp16_mixed", set(), True), ("fp16_mixed", None, False), ("fp16_mixed", {"avx512_fp16"}, False),
    ("fp16_mixed", {"amx_fp16", "amx_tile"}, False), ("fp16_mixed", {"avx512_bf16", "amx_bf16"}, True),
    ("bf16_mixed", {"amx_bf16", "amx_tile"}, False), ("bf16_mixed", {"avx512_bf16"}, False),
    ("bf16_pure", {"avx2", "avx512f"}, True), ("bf16_mixed", {"avx512_fp16"}, True)])
def test_16_bit_on_a_cpu_without_native_arithmetic_warns_once(monkeypatch, preset, flags, warns):
    monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _create(f"precision={preset}")
    assert len(caught) == int(warns)
    if warns:
        assert "slower" in str(caught[0].message) and "\n" not in str(caught[0].message)


@pytest.mark.parametrize("overrides, fragment", [
    (["precision=fp8"], "choose from: bf16_mixed, bf16_pure, bf16_pure_stochastic, fp16_mixed"),
    (["precision.rounding=even"], "choose from: nearest, stochastic"),
    (["precision.loss_scale=static"], "choose from: none, dynamic"),
    (["precision.amp_dtype=float8"], "choose from: bfloat16, float16"),
    (["precision.dtype=int8"], "choose from: float64, float32, bfloat16, float16"),
    (["precision=fp32", "precision.rounding=stochastic"], "bf16_pure or fp16_pure"),
    (["precision=bf16_pure", "precision.loss_scale=dynamic"], "use precision=fp16_mixed"),
    (["precision=fp64", "precision.amp_dtype=float16"], "float32 weights"),
])
def test_bad_precision_settings_give_one_line(overrides, fragment):
    with pytest.raises(UsageError, match=fragment) as err:
        _create(*overrides)
    assert "\n" not in str(err.value)


def test_a_skipped_step_is_judged_against_the_scale_the_last_update_left():
    """The scale is read once per step (after the update); a step after a resume compares with
    the loaded scaler's scale, not with the one this process saw last."""
    prec = _create("precision=fp16_mixed", "precision.growth_interval=1")  # x2 after each good step
    torch.manual_seed(0)
    model = torch.nn.Linear(16, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    x, y = torch.randn(8, 16), torch.randint(0, 4, (8,))

    def step(scale):
        opt.zero_grad()
        with prec.autocast():
            loss = torch.nn.functional.cross_entropy(model(x), y) * scale
        return prec.step(loss, opt, model)

    saved = prec.state_dict()  # scale 2**16
    assert step(1.0) and step(1.0) and prec.scaler.get_scale() == 2.0 ** 18
    assert not step(float("inf")) and prec.scaler.get_scale() == 2.0 ** 17  # skipped, halved
    assert step(1.0) and prec.scaler.get_scale() == 2.0 ** 18
    prec.load_state_dict(saved)  # back to 2**16, as a resumed run loads it
    assert step(1.0) and prec.scaler.get_scale() == 2.0 ** 17  # taken: 2**17 >= 2**16
    assert prec.skipped_steps == 0 and prec.steps == 1  # the counters came back too
