import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from cnnlab.lab.jobs import read_status, write_job
from cnnlab.cli.main import app

runner = CliRunner()
FAST = ["data=digits", "model=lenet5", "trainer.epochs=1", "trainer.threads=1"]


def _sweep(*args):
    return runner.invoke(app, ["sweep", *args], catch_exceptions=False)


def _jobs(sweep_dir):
    return sorted(p for p in (sweep_dir / "jobs").iterdir() if p.is_dir())


def _dirs(outputs, name="adhoc"):
    return sorted((outputs / "sweeps").glob(f"{name}-*"))


def test_sweep_runs_every_job_and_aggregates(outputs):
    out = _sweep(*FAST, "optim=sgd,adam", "seed=0,1")
    assert out.exit_code == 0, out.output
    (d,) = _dirs(outputs)
    jobs = pd.read_csv(d / "results.csv")
    assert len(jobs) == 4 and set(jobs.status) == {"done"}
    assert list(jobs.columns[:3]) == ["optim", "seed", "status"]
    summary = pd.read_csv(d / "summary.csv")
    assert sorted(summary.optim) == ["adam", "sgd"] and (summary.n == 2).all()
    adam = jobs[jobs.optim == "adam"].test_acc
    assert summary.set_index("optim").loc["adam", "mean"] == pytest.approx(adam.mean())
    assert (d / "report.md").read_text().startswith("# Sweep adhoc-")
    assert {p.name for p in (d / "plots").iterdir()} == {"test_acc_vs_optim.png", "learning_curves.png"}
    # every job folder holds a normal run folder; finished runs also reach outputs/results.csv
    for job in _jobs(d):
        assert (job / "status").read_text().strip() == "done"
        assert (job / "run" / "summary.json").is_file() and (job / "run" / "metrics.csv").is_file()
    assert len(pd.read_csv(outputs / "results.csv")) == 4


@pytest.mark.slow
def test_job_folders_are_named_by_a_stable_hash_of_their_overrides(outputs):
    _sweep(*FAST, "seed=0,1")
    _sweep(*FAST, "seed=0,1")
    _sweep(*FAST, "seed=0,2")
    a, b, c = [{p.name for p in _jobs(d)} for d in _dirs(outputs)]
    assert a == b and len(a) == 2 and len(a & c) == 1


def test_a_failing_job_does_not_stop_the_others(outputs, tmp_path):
    out = _sweep(*FAST, "data=digits,mnist", f"data.root={tmp_path}/absent", "seed=0")
    assert out.exit_code == 1
    (d,) = _dirs(outputs)
    jobs = pd.read_csv(d / "results.csv").set_index("data")
    assert jobs.loc["digits", "status"] == "done" and jobs.loc["mnist", "status"] == "failed"
    assert "does not exist" in jobs.loc["mnist", "error"]
    assert "failed" in out.output and "does not exist" in (d / "report.md").read_text()


def test_bad_cell_fails_before_any_job_starts(outputs):
    out = runner.invoke(app, ["sweep", *FAST, "model=lenet5,nope"])
    assert out.exit_code == 2 and "unknown model 'nope'" in out.output
    assert not _dirs(outputs)


def test_resume_runs_only_the_jobs_that_are_not_done(outputs):
    _sweep(*FAST, "seed=0,1,2")
    (d,) = _dirs(outputs)
    jobs = _jobs(d)
    started = {j.name: json.loads((j / "job.json").read_text())["started"] for j in jobs}
    broken = jobs[1]
    write_job(broken, status="failed", error="simulated")
    out = _sweep("--resume", str(d))
    assert out.exit_code == 0, out.output
    after = {j.name: json.loads((j / "job.json").read_text())["started"] for j in jobs}
    rerun = {k for k in after if after[k] != started[k]}
    assert rerun == {broken.name} and read_status(broken) == "done"
    assert len(_dirs(outputs)) == 1


def test_interrupt_keeps_finished_jobs_and_resume_continues(outputs, monkeypatch):
    import cnnlab.training.recipe as train_mod

    real = train_mod.train

    def stop_at_seed_1(cfg, *args, **kwargs):
        if cfg.seed == 1:
            raise KeyboardInterrupt
        return real(cfg, *args, **kwargs)

    monkeypatch.setattr(train_mod, "train", stop_at_seed_1)
    out = _sweep(*FAST, "seed=0,1,2")
    assert out.exit_code == 130 and "--resume" in out.output
    (d,) = _dirs(outputs)
    statuses = sorted(read_status(j) for j in _jobs(d))
    assert statuses == ["done", "interrupted"]
    monkeypatch.setattr(train_mod, "train", real)
    out = _sweep("--resume", str(d))
    assert out.exit_code == 0
    assert sorted(read_status(j) for j in _jobs(d)) == ["done"] * 3


def test_experiment_sweep_reaches_a_verdict_and_lists_it(outputs, tmp_path):
    path = tmp_path / "tiny_claim.yaml"
    path.write_text(
        "claim: C12\nstatement: a tiny check\nbase: [data=digits, trainer.epochs=1, trainer.threads=1]\n"
        "axes: {model: [lenet5, resnet8]}\nseeds: [0, 1, 2]\n"
        "verdict: {kind: greater, a: {model: resnet8}, b: {model: lenet5}}\n")
    out = _sweep(str(path))
    assert out.exit_code == 0, out.output
    (d,) = _dirs(outputs, "tiny_claim")
    verdict = json.loads((d / "verdict.json").read_text())
    assert verdict["verdict"] in ("supported", "not supported", "inconclusive")
    assert verdict["claim"] == "C12" and "model=resnet8" in verdict["text"]
    assert f"claim C12: {verdict['verdict']}" in out.output


def test_missing_launcher_plugin_names_the_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("hydra_plugins") else real(name, *a))
    out = runner.invoke(app, ["sweep", *FAST, "seed=0,1", "hydra/launcher=joblib"])
    assert out.exit_code == 2 and "pip install -e '.[joblib]'" in out.output


@pytest.mark.slow
def test_joblib_launcher_runs_jobs_in_parallel_processes(outputs):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    out = _sweep(*FAST, "seed=0,1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert out.exit_code == 0, out.output
    (d,) = _dirs(outputs)
    assert set(pd.read_csv(d / "results.csv").status) == {"done"}


def test_experiments_command_lists_claims():
    out = runner.invoke(app, ["experiments"])
    assert out.exit_code == 0 and "C18" in out.output and "C12" in out.output


def test_table_view_keeps_numeric_axis_order():
    from cnnlab.lab.report import table_view

    summary = pd.DataFrame({"bs": ["2", "8", "64", "2", "8", "64"], "norm": ["bn"] * 3 + ["gn"] * 3,
                            "mean": [0.5] * 6, "std": [0.1] * 6, "n": [3] * 6,
                            "ci_lo": [0.4] * 6, "ci_hi": [0.6] * 6})
    view = table_view(summary, None, ["bs", "norm", "seed"])
    assert view["bs"].tolist() == ["2", "8", "64"] and list(view.columns) == ["bs", "norm=bn", "norm=gn"]


def test_experiment_views_test_every_run_under_each_mode(outputs, tmp_path):
    from cnnlab.evaluation.ensemble import load_run
    from cnnlab.data.loader import make_loader
    from cnnlab.evaluation.evaluate import predict_views

    path = tmp_path / "views_claim.yaml"
    path.write_text(
        "claim: C3\nbase: [data=shapes, data.num_train=200, data.num_test=40, model=resnet8,\n"
        "  'aug=[crop,flip]', aug.crop_size=28, aug.crop_padding=0, trainer.epochs=1, trainer.threads=1]\n"
        "axes: {optim: [sgd]}\nseeds: [0, 1]\nviews: [center, tencrop, 'multiscale:28,32']\n"
        "table: {rows: views}\n"
        "verdict: {kind: greater, paired: true, a: {views: tencrop}, b: {views: center}}\n")
    out = _sweep(str(path))
    assert out.exit_code == 0, out.output
    (d,) = _dirs(outputs, "views_claim")
    jobs = pd.read_csv(d / "results.csv")
    assert len(jobs) == 6 and list(jobs["views"].unique()) == ["center", "tencrop", "multiscale:28,32"]
    assert sorted(jobs["views_per_image"].unique()) == [1, 10, 20]
    # the centre rows are the runs' own test_acc (28x28 centre crops, as training tested)
    run_dirs = sorted(d.glob("jobs/*/run"))
    own = sorted(json.loads((r / "summary.json").read_text())["test_acc"] for r in run_dirs)
    assert sorted(jobs[jobs.views == "center"].test_acc) == pytest.approx(own)
    # a ten-crop row equals an independent predict_views on that run
    cfg, model, bundle = load_run(run_dirs[0])
    loader = make_loader(bundle.test, 64, train=False, bundle=bundle, device="cpu", seed=0, workers=0)
    ten = predict_views(model, loader, "tencrop", 28)["top1"]
    job = run_dirs[0].parent.name
    assert jobs[(jobs.job == job) & (jobs.views == "tencrop")].test_acc.item() == pytest.approx(ten)
    assert "paired difference" in json.loads((d / "verdict.json").read_text())["text"]
    report = (d / "report.md").read_text()
    assert "Cost of each test-time view mode" in report and "vs_center" in report
    # rebuilding the report reuses views.csv instead of testing again
    from cnnlab.lab import report as rp
    from cnnlab.lab.experiment import load

    cached = pd.read_csv(d / "views.csv")
    assert len(cached) == 6
    again = rp.build(d, load(path), plots=False)
    assert again.jobs.test_acc.tolist() == jobs.test_acc.tolist()


@pytest.mark.slow
def test_transfer_jobs_share_one_cached_pretraining_run(outputs):
    """Jobs compose their source's pretraining config inside Hydra's multirun; the source is
    trained by the first job and read from the cache by the rest."""
    out = _sweep("data=digits", "model=resnet8", "trainer.epochs=1", "trainer.threads=1",
                 "transfer.source=pretrain", "data.train_per_class=5",
                 "transfer.pretrain=['data=shapes','data.num_train=200','data.num_test=40','trainer.epochs=1']",
                 "transfer=scratch,linear_probe", "seed=0,1")
    assert out.exit_code == 0, out.output
    (d,) = _dirs(outputs)
    jobs = pd.read_csv(d / "results.csv")
    assert list(jobs.status) == ["done"] * 4
    assert len([p for p in (outputs / "cache" / "pretrain").iterdir() if p.is_dir()]) == 1
