"""bench-train --vs-precision (cnnlab.bench.precision): fp32 and bf16 variants, rounds
interleaved, ratios to fp32, and what the CPU has natively."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from cnnlab.bench import precision as bench
from cnnlab.cli.main import app
from cnnlab.errors import UsageError

runner = CliRunner()
TINY = ["data=digits", "model=lenet5", "trainer.batch_size=32"]


def test_each_variant_runs_its_own_precision_and_memory_order(monkeypatch):
    from cnnlab.bench import train

    seen = []
    real = train.run

    def spy(cfg, **kw):
        seen.append((cfg.precision.name, cfg.trainer.channels_last))
        return real(cfg, **kw)

    monkeypatch.setattr(train, "run", spy)
    r = bench.run(TINY, steps=2, warmup=1, repeats=2, variants=("fp32", "bf16_mixed, NCHW"),
                  echo=lambda _: None)
    # round 2 starts where round 1 did not: the order rotates
    assert seen == [("fp32", True), ("bf16_mixed", False), ("bf16_mixed", False), ("fp32", True)]
    assert len(r.rates["fp32"]) == 2 and r.ratio("fp32") == 1.0 and r.rate("bf16_mixed, NCHW") > 0
    assert "bf16:" in r.cpu and "fp16:" in r.cpu
    (fp32, _), (bf16, metrics) = [(e["bench_pipeline"], m) for e, m in bench.rows(r)]
    assert fp32 == "precision fp32" and bf16 == "precision bf16_mixed, NCHW"
    assert metrics["bench_vs_fp32"] == pytest.approx(r.rate("bf16_mixed, NCHW") / r.rate("fp32"))


def test_the_variants_own_precision_and_channels_last():
    with pytest.raises(UsageError, match="drop 'precision=fp16_mixed'"):
        bench.check_overrides(["precision=fp16_mixed"])
    with pytest.raises(UsageError, match="channels_last"):
        bench.check_overrides(["trainer.channels_last=false"])
    out = runner.invoke(app, ["bench-train", "--vs-precision", "--vs-threads"])
    assert out.exit_code == 2 and "one at a time" in out.output


def test_the_command_prints_the_ratios_and_writes_bench_rows(outputs):
    out = runner.invoke(app, ["bench-train", "--vs-precision", *TINY, "--steps", "2", "--warmup", "1",
                              "--repeats", "1"])
    assert out.exit_code == 0, out.output
    assert "bf16_mixed / fp32 =" in out.output and "channels_last / NCHW (fp32)" in out.output
    rows = pd.read_csv(outputs / "bench.csv")
    assert len(rows) == len(bench.VARIANTS) and rows.bench_pipeline.str.startswith("precision ").all()
