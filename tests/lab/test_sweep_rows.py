"""A sweep's rows keep their identity and presets; sweeps choose the metric they optimise (the
validation split by default); sweep messages (--resume of a finished sweep, a failed launch)."""

import json

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from cnnlab.cli.main import app

runner = CliRunner()
FAST = ["data=digits", "model=lenet5", "trainer.epochs=1", "trainer.threads=1"]


def _sweep(*args):
    return runner.invoke(app, ["sweep", *args], catch_exceptions=False)


def _dirs(outputs, name="adhoc"):
    return sorted((outputs / "sweeps").glob(f"{name}-*"))


def test_sweep_rows_name_their_job_and_preset_and_tune_on_validation(outputs):
    out = _sweep(*FAST, "optim=sgd_plain,nesterov", "seed=0")
    assert out.exit_code == 0, out.output
    (d,) = _dirs(outputs)
    rows = pd.read_csv(outputs / "results.csv")
    jobs = sorted(p.name for p in (d / "jobs").iterdir() if p.is_dir())
    assert sorted(rows.job) == jobs and set(rows.sweep) == {d.name}
    assert sorted(rows.run_id) == [f"{d.name}/{j}" for j in jobs]
    assert sorted(rows.path) == [f"sweeps/{d.name}/jobs/{j}/run" for j in jobs]
    assert sorted(rows.optim) == ["nesterov", "sgd_plain"] and set(rows["optim.name"]) == {"sgd"}
    assert set(rows.model) == {"lenet5"} and set(rows.data) == {"digits"}
    # the objective returned to the sweeper is the validation score, not the test score
    for j in jobs:
        info = json.loads((d / "jobs" / j / "job.json").read_text())
        summary = json.loads((d / "jobs" / j / "run" / "summary.json").read_text())
        assert info["metric"] == pytest.approx(summary["best_val_acc"])
    saved = yaml.safe_load((d / "sweep.yaml").read_text())
    assert saved["objective"] == "best_val_acc" and saved["direction"] == "max" and saved["metric"] == "test_acc"
    shown = runner.invoke(app, ["results", "--where", "optim=nesterov"])
    assert shown.exit_code == 0 and "nesterov" in shown.output and "sgd_plain" not in shown.output
    # a finished sweep: --resume has nothing to do, and says so
    again = _sweep("--resume", str(d))
    assert again.exit_code == 0, again.output
    assert "nothing to do" in again.output and "launching" not in again.output
    assert len(pd.read_csv(outputs / "results.csv")) == 2


def test_the_test_metric_as_objective_is_warned_about(outputs):
    out = _sweep(*FAST, "seed=0", "--metric", "test_acc")
    assert out.exit_code == 0, out.output
    assert "warning" in out.output and "test split" in out.output
    (d,) = _dirs(outputs)
    info = json.loads(next((d / "jobs").glob("*/job.json")).read_text())
    summary = json.loads(next((d / "jobs").glob("*/run/summary.json")).read_text())
    assert info["metric"] == pytest.approx(summary["test_acc"])


@pytest.mark.parametrize("args, fragment", [
    (["--metric", "nope"], "unknown --metric 'nope'"),
    (["--direction", "up"], "--direction takes max or min"),
])
def test_bad_metric_or_direction_fails_before_any_folder(outputs, args, fragment):
    out = runner.invoke(app, ["sweep", *FAST, "seed=0,1", *args])
    assert out.exit_code == 2 and fragment in out.output
    assert not _dirs(outputs)


def _readme_optuna() -> list[str]:
    """The README's Optuna command, shrunk: 1 epoch, 2 trials, one thread."""
    import re
    import shlex
    from pathlib import Path

    text = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```bash\n(.*?)```", text, re.S) if "hydra/sweeper=optuna" in b)
    args = shlex.split(block.replace("\\\n", " "))
    assert args[:2] == ["cnnlab", "sweep"]
    shrink = {"trainer.epochs": "1", "hydra.sweeper.n_trials": "2"}
    args = [f"{a.split('=')[0]}={shrink[a.split('=')[0]]}" if a.split("=")[0] in shrink else a
            for a in args[2:]]
    return [*args, "trainer.threads=1"]


README_OPTUNA = ["data=digits", "model=lenet5", "trainer.epochs=1", "trainer.threads=1",
                 "hydra/sweeper=optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.seed=0",
                 "optim.lr=interval(0.01,0.2)"]


@pytest.mark.parametrize("which, direction", [
    ("readme", "maximize"),
    ("default", "maximize"),  # no --metric: best_val_acc, maximised
])
def test_optuna_follows_metric_and_direction(outputs, which, direction):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    args = _readme_optuna() if which == "readme" else README_OPTUNA
    assert ("--direction" in args) == (which == "readme")
    out = _sweep(*args)
    assert out.exit_code == 0, out.output
    (d,) = _dirs(outputs)
    metric = args[args.index("--metric") + 1] if "--metric" in args else "best_val_acc"
    found = yaml.safe_load((d / "jobs" / "optimization_results.yaml").read_text())
    values = []
    for job in (d / "jobs").glob("*/job.json"):
        hydra_cfg = yaml.safe_load((job.parent / ".hydra" / "hydra.yaml").read_text())
        assert hydra_cfg["hydra"]["sweeper"]["direction"] == direction
        summary = json.loads((job.parent / "run" / "summary.json").read_text())
        values.append(json.loads(job.read_text())["metric"])
        assert values[-1] == pytest.approx(summary[metric])
    assert len(values) == 2 and found["best_value"] == pytest.approx(max(values))


def test_a_launch_that_fails_before_any_job_removes_its_new_folder(outputs, monkeypatch):
    from cnnlab.lab import sweep as sw

    def broken(p):
        raise RuntimeError("sbatch: command not found")

    monkeypatch.setattr(sw, "_run_jobs", broken)
    out = runner.invoke(app, ["sweep", *FAST, "seed=0,1"])
    assert out.exit_code != 0 and "sbatch: command not found" in out.output
    assert not _dirs(outputs)
