"""`cnnlab bench-sweep` (cnnlab.lab.bench_sweep): the numbers it reports come from the sweeps it
times, and bad arguments are one-line usage errors."""

import statistics

import pytest
from typer.testing import CliRunner

from cnnlab.cli.main import app
from cnnlab.errors import UsageError
from cnnlab.lab import bench_sweep as bs

runner = CliRunner()
TINY = ("data=shapes", "data.num_train=200", "data.num_test=50", "model=lenet5")


def test_overheads_are_the_gap_between_jobs_plus_each_jobs_own_start_up():
    jobs = [{"started": 10.0, "ended": 12.0, "overhead_seconds": 0.5},
            {"started": 12.25, "ended": 15.0, "overhead_seconds": 0.5},
            {"started": 16.0, "ended": 17.0, "overhead_seconds": 0.125}]
    assert bs.per_job_overheads(jobs) == [0.25 + 0.5, 1.0 + 0.125]


def test_the_report_is_computed_from_the_sweeps_it_timed(monkeypatch):
    """The smallest bench it allows (two one-epoch jobs, one joblib process), on a tiny grid:
    every reported number is the one its own sweeps' timings give."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    launched, timed = [], []
    real_run, real_jobs = bs._run, bs._jobs

    def run_and_record(overrides, outputs):
        wall, sweep_dir = real_run(overrides, outputs)
        launched.append((overrides, wall))
        return wall, sweep_dir

    def jobs_and_record(sweep_dir):
        jobs = real_jobs(sweep_dir)
        timed.append(jobs)
        return jobs

    monkeypatch.setattr(bs, "_run", run_and_record)
    monkeypatch.setattr(bs, "_jobs", jobs_and_record)
    lines = []
    result = bs.run(jobs=2, epochs=1, n_jobs=1, echo=lines.append, base=TINY)

    (serial_overrides, serial), (joblib_overrides, parallel) = launched
    assert "hydra/launcher=joblib" not in serial_overrides
    assert "hydra/launcher=joblib" in joblib_overrides
    assert "seed=0,1" in serial_overrides and "trainer.epochs=1" in serial_overrides
    assert result["jobs"] == 2
    assert result["serial_seconds"] == round(serial, 2)
    assert result["joblib_seconds"] == round(parallel, 2)
    assert result["joblib_over_serial"] == round(parallel / serial, 3)

    (jobs,) = timed  # the serial sweep's two jobs, in the order they started
    first, second = jobs
    gap = second["started"] - first["ended"] + second["overhead_seconds"]
    assert bs.per_job_overheads(jobs) == [pytest.approx(gap)]
    assert result["overhead_median_seconds"] == round(gap, 3) == result["overhead_max_seconds"]
    median = statistics.median(bs.per_job_overheads(jobs))
    assert result["overhead_median_seconds"] == round(median, 3)
    assert f"median {result['overhead_median_seconds']:.3f} s" in lines[-2]
    assert f"-> {result['joblib_over_serial']:.3f}x serial" in lines[-1]


@pytest.mark.parametrize("kwargs, message", [
    ({"jobs": 1}, "--jobs must be at least 2"),
    ({"epochs": 0}, "--epochs must be at least 1"),
    ({"n_jobs": 0}, "--n-jobs must be at least 1"),
])
def test_bad_arguments_are_usage_errors_before_anything_runs(kwargs, message, monkeypatch):
    monkeypatch.setattr(bs, "_run", lambda *a: pytest.fail("a sweep ran"))
    with pytest.raises(UsageError, match=message):
        bs.run(**kwargs)


def test_the_command_prints_a_bad_argument_in_one_line():
    out = runner.invoke(app, ["bench-sweep", "--jobs", "1"])
    assert out.exit_code == 2
    assert out.output.strip().splitlines() == ["error: --jobs must be at least 2"]
