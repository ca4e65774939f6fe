"""Measurement experiments (cnnlab.lab.measures): benchmark jobs in the sweep layout, rows per job,
rules on the measurement's key columns, `near` and `also` rules."""

import json

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from cnnlab.lab import experiment as exp
from cnnlab.lab import measures
from cnnlab.cli.main import app
from cnnlab.errors import UsageError

runner = CliRunner()


@pytest.fixture
def toy_measure(monkeypatch):
    """A measurement whose numbers are a formula of its job: fast is 2x slow, plus seed noise."""
    calls = []

    def run(overrides, args):
        o = measures.parse_overrides(overrides)
        calls.append(o)
        if o.get("size") == 13:
            raise RuntimeError("thirteen is unlucky")
        base = float(o["size"]) * (1 + 0.01 * o["seed"])
        fast = args.get("fast_factor", 2.0)
        area = 9 if o["size"] < 8 else 25  # a property of the job, the same for both ways
        return [{"way": "slow", "speed": base, "memory": float(area), "area": area},
                {"way": "fast", "speed": fast * base, "memory": 1.02 * area, "area": area}]

    measures.MEASURES["toy"] = measures.Measure(
        "toy", run, keys=("way", "area"), metrics=("speed", "memory"), hydra=False,
        args=("fast_factor",))
    yield calls
    del measures.MEASURES["toy"]


def _write(tmp_path, **spec):
    base = {"claim": "C99", "statement": "fast beats slow", "measure": "toy", "metric": "speed",
            "axes": {"size": [4, 8]}, "seeds": [0, 1, 2], "table": {"rows": "size", "cols": "way"},
            "verdict": {"kind": "greater", "paired": True, "a": {"way": "fast"}, "b": {"way": "slow"}},
            "also": [{"kind": "near", "metric": "memory", "expected": "area", "tolerance": 0.05,
                      "when": {"way": "slow"}}]}
    base.update(spec)
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


def _sweep(path, outputs, *extra):
    out = runner.invoke(app, ["sweep", str(path), "--no-plots", *extra])
    dirs = sorted((outputs / "sweeps").glob("toy-*"))
    return out, dirs[-1] if dirs else None


def test_measure_sweep_writes_rows_per_job_and_decides(toy_measure, tmp_path, outputs):
    out, sweep_dir = _sweep(_write(tmp_path), outputs)
    assert out.exit_code == 0, out.output
    assert len(toy_measure) == 6
    df = pd.read_csv(sweep_dir / "results.csv")
    assert len(df) == 12 and set(df.way) == {"slow", "fast"} and df.status.eq("done").all()
    row = df[(df["size"] == 8) & (df.seed == 2) & (df.way == "fast")].iloc[0]
    assert row.speed == pytest.approx(2 * 8 * 1.02)
    verdict = json.loads((sweep_dir / "verdict.json").read_text())
    assert verdict["verdict"] == "supported" and len(verdict["parts"]) == 2
    assert "supported" in out.output and "C99" in out.output
    summary = pd.read_csv(sweep_dir / "summary.csv")
    assert {"size", "way"} <= set(summary.columns) and len(summary) == 4


def test_verdict_flips_when_the_data_flips(toy_measure, tmp_path, outputs):
    out, sweep_dir = _sweep(_write(tmp_path, measure_args={"fast_factor": 0.5}), outputs)
    assert out.exit_code == 0, out.output
    verdict = json.loads((sweep_dir / "verdict.json").read_text())
    assert verdict["verdict"] == "not supported"
    assert verdict["parts"][0]["verdict"] == "not supported"
    assert verdict["parts"][1]["verdict"] == "supported"


def test_near_rule_fails_outside_tolerance(toy_measure, tmp_path, outputs):
    # the fast way's memory is 1.02 x the expected area: 2% off
    tight = {"kind": "near", "metric": "memory", "expected": "area", "tolerance": 0.01,
             "when": {"way": "fast"}}
    out, sweep_dir = _sweep(_write(tmp_path, also=[tight]), outputs)
    verdict = json.loads((sweep_dir / "verdict.json").read_text())
    assert verdict["parts"][1]["verdict"] == "not supported" and verdict["verdict"] == "not supported"
    assert "+0.020" in verdict["parts"][1]["text"]


def test_a_failing_job_is_recorded_and_resume_runs_only_what_is_missing(toy_measure, tmp_path, outputs):
    path = _write(tmp_path, axes={"size": [4, 13]})
    out, sweep_dir = _sweep(path, outputs)
    assert out.exit_code == 1
    df = pd.read_csv(sweep_dir / "results.csv")
    failed = df[df.status == "failed"]
    assert len(failed) == 3 and failed.error.str.contains("thirteen").all()
    assert len(df[df.status == "done"]) == 6  # 3 jobs x 2 rows
    toy_measure.clear()
    out = runner.invoke(app, ["sweep", str(sweep_dir), "--resume", "--no-plots"])
    assert [c["size"] for c in toy_measure] == [13, 13, 13]


def test_rules_may_name_measure_keys_but_not_unknown_columns(toy_measure, tmp_path):
    spec = exp.load(_write(tmp_path))
    assert spec.measure == "toy"
    with pytest.raises(UsageError, match="'colour'"):
        exp.load(_write(tmp_path, verdict={"kind": "greater", "a": {"colour": 1}, "b": {"way": "slow"}}))
    with pytest.raises(UsageError, match="takes no argument bogus"):
        exp.load(_write(tmp_path, measure_args={"bogus": 1}))
    with pytest.raises(UsageError, match="unknown measure"):
        exp.load(_write(tmp_path, measure="nope"))
    with pytest.raises(UsageError, match="expected"):
        exp.load(_write(tmp_path, also=[{"kind": "near", "metric": "memory"}]))


def test_hydra_launcher_overrides_are_refused_for_measurements(toy_measure, tmp_path, outputs):
    out, _ = _sweep(_write(tmp_path), outputs, "hydra/launcher=joblib")
    assert out.exit_code == 2 and "one at a time" in out.output


def test_bench_train_measure_runs_as_an_experiment(tmp_path, outputs):
    """The real bench-train measurement, shrunk: rows per pipeline with its metrics."""
    spec = {"claim": "C23", "statement": "s", "measure": "bench-train", "metric": "images_per_sec",
            "measure_args": {"steps": 4, "warmup": 1, "repeats": 1, "vs_dataloader": False},
            "base": ["data=digits", "trainer.threads=1"], "axes": {"model": ["lenet5"]},
            "seeds": [0], "table": {"rows": "model", "cols": "pipeline"},
            "verdict": {"kind": "near", "metric": "vs_ceiling", "a": {"pipeline": "ceiling"},
                        "expected": 1.0, "tolerance": 0.0}}
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(spec))
    out, sweep_dir = _sweep(path, outputs)
    assert out.exit_code == 0, out.output
    df = pd.read_csv(sweep_dir / "results.csv")
    assert set(df.pipeline) == {"cnnlab", "ceiling"} and (df.images_per_sec > 0).all()
    assert json.loads((sweep_dir / "verdict.json").read_text())["verdict"] == "supported"


@pytest.mark.parametrize("name", ["data_pipeline", "memory_format"])
def test_shipped_measurement_experiments_compose(name):
    spec = exp.load(name)
    jobs = exp.expand_grid(exp.sweep_overrides(spec))
    assert measures.validate(spec.measure, jobs) == jobs
