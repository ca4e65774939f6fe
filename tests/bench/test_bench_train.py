"""`cnnlab bench-train` (cnnlab.bench.train): behaviour, not speed."""

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from cnnlab.bench import train as bench
from cnnlab.cli.main import app
from conftest import TINY, tiny

runner = CliRunner()
QUICK = ["--steps", "3", "--warmup", "1"]


def test_bench_train_prints_phases_ratios_and_appends_rows(outputs):
    out = runner.invoke(app, ["bench-train", "data=digits", "model=lenet5", *TINY, *QUICK,
                              "--vs-dataloader", "--workers", "0"])
    assert out.exit_code == 0, out.output
    for fragment in ("data", "forward", "backward", "optimizer", "ceiling", "x the ceiling",
                     "cnnlab / DataLoader (0 workers)", "inference:", "GFLOPs/image"):
        assert fragment in out.output, fragment
    # 3 steps are fewer than four runs of the loader's chunks: said, with the steps that would do
    assert "fewer than four runs of the loader's" in " ".join(out.output.split())
    df = pd.read_csv(outputs / "bench.csv")
    assert len(df) == 3 and df.status.eq("bench").all() and df.run_id.nunique() == 1
    assert df.run_id.iloc[0].startswith("bench-train-")
    assert sorted(df.bench_pipeline) == ["ceiling", "cnnlab", "dataloader"]
    assert df.model.eq("lenet5").all() and df.precision.eq("fp32").all()
    assert df.device.eq("cpu").all() and df.threads.eq(1).all()
    assert df.channels_last.eq(True).all() and (df.params > 0).all() and (df.gflops_per_image > 0).all()
    rows = df.set_index("bench_pipeline")
    assert rows.loc["ceiling", "bench_vs_ceiling"] == 1.0
    assert rows.loc["dataloader", "bench_vs_dataloader"] == 1.0
    assert rows.loc["cnnlab", "bench_vs_dataloader"] > 0
    for name, row in rows.iterrows():
        phases = [row[f"bench_{p}_ms"] for p in bench.PHASES]
        assert all(v > 0 for v in phases[1:]), (name, phases)  # a fixed batch takes ~0 ms of data
        assert phases[0] >= 0 and row.bench_step_ms > 0 and row.bench_images_per_sec > 0
        assert sum(phases) == pytest.approx(row.bench_step_ms, rel=0.05), name
    assert rows.loc["cnnlab", "bench_data_ms"] > 0 and rows.loc["dataloader", "bench_data_ms"] > 0
    assert (df.bench_infer_images_per_sec > 0).all()


def test_every_step_splits_into_positive_phases_that_add_up():
    cfg = tiny("model=lenet5", "aug=[crop,flip]")
    r = bench.run(cfg, steps=4, warmup=1, repeats=2)
    assert set(r.steps) == {"cnnlab", "ceiling", "inference"} and r.rounds == 2
    for name in ("cnnlab", "ceiling"):
        s = r.steps[name]
        assert len(s.seconds) == 4 and s.rounds == [0, 0, 1, 1]
        for i, total in enumerate(s.seconds):
            parts = [s.phases[p][i] for p in bench.PHASES]
            assert all(v > 0 for v in parts[1:]) and parts[0] >= 0
            # the phases partition the step; only the final clock read lies outside them
            assert sum(parts) == pytest.approx(total, rel=0.02, abs=1e-4)
    assert len(r.steps["inference"].seconds) == 4
    assert r.ratio("cnnlab", "ceiling") > 0 and len(r.round_ratios("cnnlab", "ceiling")) == 2


def test_torchvision_transforms_match_the_preset_and_name_what_is_left_out():
    cfg = tiny("aug=alexnet")
    transform, mix, names, left = bench.torchvision_transforms(cfg.aug, (32, 32), [0.5] * 3, [0.25] * 3, 10)
    assert mix is None and left == ["pca"]
    assert names[:2] == ["RandomCrop(32x32, padding=4)", "RandomHorizontalFlip(0.5)"]
    x = transform(torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8))
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and x.min() >= -2 and x.max() <= 2
    cfg = tiny("aug=[mixup,cutmix]")
    _, mix, names, left = bench.torchvision_transforms(cfg.aug, (32, 32), [0.5] * 3, [0.25] * 3, 10)
    assert mix is not None and left == ["cutmix"]  # v2 mixes integer labels only: one mixing op
    x, y = bench.MixCollate(mix)([(torch.rand(3, 32, 32), torch.tensor(i)) for i in range(4)])
    assert x.shape == (4, 3, 32, 32) and y.shape == (4, 10)


def test_mixing_aug_and_crop_size_run_through_the_dataloader(outputs):
    out = runner.invoke(app, ["bench-train", "data=shapes", "data.num_train=200", "data.num_test=50",
                              "model=lenet5", "aug=[crop,mixup]", "aug.crop_size=28", *TINY,
                              "--steps", "2", "--warmup", "0", "--repeats", "1",
                              "--vs-dataloader", "--workers", "0", "--outputs", str(outputs / "b")])
    assert out.exit_code == 0, out.output
    assert "RandomCrop(28x28, padding=4)" in out.output and "MixUp" in out.output
    assert (outputs / "b" / "bench.csv").is_file()


@pytest.mark.parametrize("flag, fragment", [
    (["--steps", "0"], "--steps must be at least 1"),
    (["--warmup", "-1"], "--warmup must be 0 or more"),
    (["--workers", "-2"], "--workers must be 0 or more"),
    (["--repeats", "0"], "--repeats must be at least 1"),
    (["model=__nope__"], "unknown model '__nope__'"),
])
def test_bad_input_exits_2_with_one_line(flag, fragment, outputs):
    out = runner.invoke(app, ["bench-train", "data=digits", *flag])
    assert out.exit_code == 2
    assert fragment in out.output and "Traceback" not in out.output
    assert len(out.output.strip().splitlines()) == 1
    assert not (outputs / "results.csv").exists() and not (outputs / "bench.csv").exists()


def test_vs_memory_format_adds_the_other_order_in_lock_step(outputs):
    out = runner.invoke(app, ["bench-train", "data=digits", "model=lenet5", *TINY, *QUICK,
                              "trainer.channels_last=true", "--vs-memory-format"])
    assert out.exit_code == 0, out.output
    assert "channels_last / NCHW, same step on the same batch:" in out.output
    df = pd.read_csv(outputs / "bench.csv")
    assert sorted(df.bench_pipeline) == ["ceiling", "ceiling_nchw", "cnnlab"]
    assert bool(df.set_index("bench_pipeline").loc["ceiling_nchw", "bench_lockstep"])


def test_twin_in_the_other_memory_order_computes_the_same_step():
    """The NCHW twin is the same network: one step on the same batch gives the same loss."""
    import copy

    from cnnlab.training.recipe import build_parts

    parts = build_parts(tiny("data=digits", "model=lenet5", "trainer.channels_last=true"))
    parts.train_loader.set_epoch(1)
    x, y = next(iter(parts.train_loader))
    twin = copy.deepcopy(parts.model).to(memory_format=torch.contiguous_format)
    a = torch.nn.functional.cross_entropy(parts.model(x), y)
    b = torch.nn.functional.cross_entropy(twin(x.contiguous()), y)
    assert torch.allclose(a, b, rtol=1e-5)


def test_steps_of_a_chunked_loader_are_kept_in_runs_so_the_chunk_step_counts():
    """A loader that makes 4 batches at a time pays in one step of four: a middle-half cut by
    single steps would drop every paying step as a spike; runs of `block` steps keep their mean."""
    steps = bench.Steps()
    for r in range(2):
        for i in range(32):
            steps.add(4.0 if i % 4 == 0 else 1.0, 1, None, r)
    assert steps.ms() == 1000.0  # by single steps: the paying steps are all cut
    steps.block = 4
    assert steps.ms() == pytest.approx(1750.0)  # (4 + 1 + 1 + 1) / 4 per step, in seconds * 1000
    assert steps.images_per_sec(1) == pytest.approx(4 / 7)
    # a slow spell still drops out, as whole runs
    steps.seconds[8:12] = [40.0] * 4
    assert steps.ms() == pytest.approx(1750.0)


def test_a_short_tail_of_steps_joins_the_run_before_it():
    steps = bench.Steps(block=4)
    for i in range(10):  # runs 0-3, 4-9 (the tail 8-9 joins): under four runs, all kept
        steps.add(1.0 + i, 1, None, 0)
    assert steps.middle() == list(range(10))
    for i in range(22):  # round 1: runs of 4, each slower than the last; the tail joins run 5
        steps.add(1.0 + min(i // 4, 4), 1, None, 1)
    kept = steps.middle(1)  # five runs (4, 4, 4, 4, 6 steps): the middle three, runs 2-4
    assert kept == list(range(14, 26))


def test_the_overall_ratio_lies_within_the_rounds_ratios():
    """Each round is cut on its own and the kept steps pooled, so the overall ratio is a
    weighted mean of the rounds' and never falls outside them, whatever the load did."""
    import random

    for seed in range(40):
        rnd = random.Random(seed)
        result = bench.Result(steps={"a": bench.Steps(block=4), "b": bench.Steps(block=4)},
                              lockstep=("a", "b"), rounds=3, batch_size=1, params=0,
                              gflops_per_image=0.0, peak_mem_mb=0.0, device="cpu", device_name="",
                              threads=1, precision="fp32", channels_last=False, warmup=0)
        for r in range(3):
            load = rnd.choice([1.0, 2.0, 5.0])  # each round its own load
            for i in range(20):
                a, b = load * rnd.uniform(1.0, 1.5), load * rnd.uniform(1.0, 1.2)
                if i % 4 == 0:
                    a *= rnd.uniform(1.0, 3.0)  # the step that makes a chunk
                for name, t in (("a", a), ("b", b)):
                    result.steps[name].add(t, 1, None, r)
                    result.steps[name].rank.append(a + b)
        rounds = result.round_ratios("a", "b")
        assert min(rounds) - 1e-12 <= result.ratio("a", "b") <= max(rounds) + 1e-12, seed
