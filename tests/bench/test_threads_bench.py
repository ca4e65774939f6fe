"""bench-train --vs-threads (cnnlab.bench.threads): fresh measuring processes, a load it starts
and stops itself, auto against the best count per condition."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from cnnlab.bench import threads as bench
from cnnlab.cli.main import app
from cnnlab.errors import UsageError

runner = CliRunner()


def test_thread_counts_double_up_to_the_cpus():
    assert bench.thread_counts(1) == [1]
    assert bench.thread_counts(2) == [1, 2]
    assert bench.thread_counts(6) == [1, 2, 4, 6]
    assert bench.thread_counts(8) == [1, 2, 4, 8]


def test_the_background_load_runs_for_the_block_and_is_gone_after():
    with bench.background_load(2) as procs:
        assert len(procs) == 2 and all(p.poll() is None for p in procs)
    assert all(p.poll() is not None for p in procs)
    for p in procs:
        with pytest.raises(ProcessLookupError):
            os.kill(p.pid, 0)


def test_a_measurement_runs_the_job_in_a_process_of_its_own():
    # started as `cnnlab train` starts: auto's plan, made in that process, says why
    rec = bench.measure(["data=digits", "model=lenet5"], "auto", steps=2, warmup=1, timeout=300)
    assert rec["setting"] == "auto" and rec["threads"] >= 1 and rec["images_per_sec"] > 0
    assert "usable CPU(s)" in rec["why"] and f"{rec['threads']} thread(s)" in rec["why"]


def test_a_failed_measurement_is_one_line():
    with pytest.raises(bench.CnnlabError, match="threads=1: the measuring process failed"):
        bench.measure(["model=nonexistent"], "1", steps=1, warmup=0, timeout=300)


def test_rounds_rotate_the_order_and_auto_is_compared_with_the_best(monkeypatch):
    calls = []
    rates = {"auto": 90.0, "1": 100.0, "2": 50.0}

    def fake(overrides, setting, steps, warmup, timeout):
        calls.append(setting)
        return {"setting": setting, "threads": 1 if setting != "2" else 2,
                "images_per_sec": rates[setting], "why": "test"}

    monkeypatch.setattr(bench, "measure", fake)
    from cnnlab import threads

    monkeypatch.setattr(threads, "usable_cpus", lambda: 2)
    r = bench.run([], steps=1, warmup=0, repeats=2, conditions=("quiet",), echo=lambda _: None)
    assert calls == ["auto", "1", "2", "1", "2", "auto"]
    assert r.best("quiet") == "1" and r.ratio("quiet") == pytest.approx(0.9)
    rows = bench.rows(r)
    assert [extra["bench_pipeline"] for extra, _ in rows] == ["threads=auto", "threads=1", "threads=2"]
    assert rows[0][1]["bench_vs_best"] == pytest.approx(0.9)


def test_bad_arguments_are_one_line_errors():
    for args in ((0, 1, 1, None), (1, -1, 1, None), (1, 1, 0, None), (1, 1, 1, 0)):
        with pytest.raises(UsageError):
            bench.check_args(*args)
    out = runner.invoke(app, ["bench-train", "--vs-threads", "trainer.threads=2"])
    assert out.exit_code == 2 and "sets trainer.threads itself" in out.output
    out = runner.invoke(app, ["bench-train", "--vs-threads", "--load", "0"])
    assert out.exit_code == 2 and "--load" in out.output
