"""Rows keep their identity: run id and path of every run (sweep jobs included), the presets
chosen beside the resolved values, integers shown as integers, a filter that matches nothing."""

import pandas as pd
from typer.testing import CliRunner

from cnnlab import results
from cnnlab.cli.main import app
from cnnlab.training.recipe import row_of

runner = CliRunner()


def _summary(path, **extra):
    return {"run_id": path.name, "status": "done", "path": str(path), "finished": "2025-01-01 00:00:00",
            "test_acc": 0.5, **extra}


def test_a_sweep_jobs_row_names_its_sweep_job_and_path(tmp_path):
    out = tmp_path / "outputs"
    run = out / "sweeps" / "adhoc-20250101-000000" / "jobs" / "0a1b2c3d" / "run"
    row = row_of({"outputs": str(out), "seed": 0, "optim": {"name": "sgd"}}, _summary(run))
    assert row["run_id"] == "adhoc-20250101-000000/0a1b2c3d"
    assert row["path"] == "sweeps/adhoc-20250101-000000/jobs/0a1b2c3d/run"
    assert row["sweep"] == "adhoc-20250101-000000" and row["job"] == "0a1b2c3d"
    assert list(row)[:6] == ["run_id", "time", "status", "path", "sweep", "job"]


def test_a_plain_runs_row_has_its_folder_id_and_relative_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "outputs" / "runs" / "20250101-000000-abcdef"
    row = row_of({"outputs": "outputs", "seed": 0}, _summary(run))  # a relative outputs folder
    assert row["run_id"] == "20250101-000000-abcdef" and row["path"] == "runs/20250101-000000-abcdef"
    assert row["sweep"] is None and row["job"] is None


def test_presets_are_recorded_beside_the_resolved_values(tmp_path):
    run = tmp_path / "runs" / "r1"
    cfg = {"outputs": str(tmp_path), "optim": {"name": "sgd", "nesterov": True},
           "model": {"name": "resnet"}, "aug": {"name": "crop+flip"}}
    choices = {"optim": "nesterov", "model": "resnet8", "aug": "[crop,flip]", "reg": "none",
               "trainer": "default", "sched": "cosine", "hydra/launcher": "basic"}
    row = row_of(cfg, _summary(run, choices=choices))
    assert row["optim"] == "nesterov" and row["optim.name"] == "sgd"
    assert row["model"] == "resnet8" and row["model.name"] == "resnet"
    assert row["aug"] == "crop+flip" and row["reg"] == "none" and row["sched"] == "cosine"
    assert "hydra/launcher" not in row and "choices" not in row
    # without recorded presets (an older summary) the resolved names stand in
    row = row_of(cfg, _summary(run))
    assert row["optim"] == "sgd" and row["model"] == "resnet"


def _table(outputs, rows):
    outputs.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(results.table_path(outputs), index=False)


ROWS = [{"run_id": "a", "status": "done", "optim": "nesterov", "seed": 0, "epochs": 3, "test_acc": 0.5},
        {"run_id": "b", "status": "done", "optim": "sgd_plain", "seed": 1, "epochs": 3, "test_acc": 0.25},
        {"run_id": "a", "status": "eval", "optim": None, "seed": None, "epochs": None, "test_acc": 0.75}]


def test_integers_print_as_integers(outputs):
    _table(outputs, ROWS)
    out = runner.invoke(app, ["results", "--columns", "run_id,seed,epochs,test_acc"])
    assert out.exit_code == 0, out.output
    assert "0.0000" not in out.output and "1.0000" not in out.output and "3.0000" not in out.output
    lines = [l for l in out.output.splitlines() if " a " in l or " b " in l]
    assert any("│ 0 " in l or " 0 │" in l for l in lines), out.output
    assert "0.5000" in out.output


def test_a_filter_that_matches_nothing_says_so_and_names_the_values(outputs):
    _table(outputs, ROWS)
    out = runner.invoke(app, ["results", "--where", "optim=adam"])
    assert out.exit_code != 0
    assert "no row" in out.output and "nesterov" in out.output and "sgd_plain" in out.output
    assert len(out.output.strip().splitlines()) == 1
    out = runner.invoke(app, ["results", "--where", "optim=nesterov", "--where", "seed=1"])
    assert out.exit_code != 0 and "seed" in out.output
    out = runner.invoke(app, ["results", "--where", "optim=nesterov"])
    assert out.exit_code == 0 and " a " in out.output and "sgd_plain" not in out.output


def test_bench_rows_go_to_their_own_table_and_results_bench_shows_it(outputs):
    row = results.make_row({}, {"run_id": "bench-conv-x", "time": "t", "status": "bench"},
                           {"bench_algo": "im2col", "bench_N": 2})
    results.append_row(outputs, row, table=results.BENCH)
    assert results.table_path(outputs, results.BENCH) == outputs / "bench.csv"
    assert not results.table_path(outputs).exists()
    out = runner.invoke(app, ["results", "--bench", "--columns", "all"])
    assert out.exit_code == 0 and "im2col" in out.output and "bench-conv-x" in out.output
    out = runner.invoke(app, ["results"])
    assert out.exit_code == 0 and "im2col" not in out.output


def test_bench_conv_writes_bench_csv_not_results_csv(tmp_path, outputs):
    r = runner.invoke(app, ["bench-conv", "--quick", "--shape", "2,8,12,12,8,3,3,1,1",
                            "--algos", "im2col,library", "--repeats", "2", "--out", str(tmp_path / "bc")])
    assert r.exit_code == 0, r.output
    assert not (outputs / "results.csv").exists()
    rows = pd.read_csv(outputs / "bench.csv")
    assert len(rows) == 2 and rows.status.eq("bench").all()


def test_a_plain_train_row_names_its_presets_and_the_hash_ignores_them(outputs):
    from omegaconf import OmegaConf

    from cnnlab.config import compose
    from cnnlab.training.resume import config_hash

    cfg = compose(["optim=nesterov", "model=lenet5"])
    assert cfg.choices.optim == "nesterov" and cfg.choices.model == "lenet5"
    assert not any("/" in k for k in cfg.choices)  # Hydra's own groups stay out
    # the preset names are a record, not an input: the same values set key by key name the same
    # work (resume, transfer sources and probe caches find it)
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain["choices"] = {"optim": "sgd", "model": "lenet5"}
    assert config_hash(plain) == config_hash(cfg)
    plain["optim"]["lr"] = 0.5
    assert config_hash(plain) != config_hash(cfg)

    out = runner.invoke(app, ["train", "data=digits", "model=lenet5", "optim=nesterov",
                              "trainer.epochs=1", "trainer.threads=1", "trainer.progress=none"])
    assert out.exit_code == 0, out.output
    row = pd.read_csv(results.table_path(outputs)).iloc[-1]
    assert row["optim"] == "nesterov" and row["optim.name"] == "sgd" and row["model"] == "lenet5"
    assert not any(c.startswith("choices") for c in row.index)
    out = runner.invoke(app, ["results", "--where", "optim=nesterov"])
    assert out.exit_code == 0 and "nesterov" in out.output
