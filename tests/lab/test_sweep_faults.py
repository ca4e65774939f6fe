"""Faults around sweeps: experiment files that try to be more than data, SIGINT/SIGTERM during a
sweep, and two writers of one sweep folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cnnlab.cli.main import app
from cnnlab.lab.jobs import read_status, write_job

runner = CliRunner()
FAST = ["data=digits", "model=lenet5", "trainer.epochs=1", "trainer.threads=1"]
TINY_BASE = "base: [data=digits, model=lenet5, trainer.epochs=1, trainer.threads=1]\n"


def _sweeps(outputs):
    root = outputs / "sweeps"
    return sorted(root.iterdir()) if root.is_dir() else []


def _jobs(sweep_dir):
    return sorted(p for p in (sweep_dir / "jobs").iterdir() if p.is_dir())


# --- experiment files are data -------------------------------------------------------------------

MALICIOUS = {
    "hydra_callback": ("base: [data=digits, model=lenet5, trainer.epochs=1, trainer.threads=1,\n"
                       "  '+hydra.callbacks.x._target_=builtins.open', '+hydra.callbacks.x.file={victim}',\n"
                       "  '+hydra.callbacks.x.mode=w']\naxes: {{optim: [sgd]}}\nseeds: [0]\n",
                       "_target_"),
    "hydra_key": (TINY_BASE + "axes: {{optim: [sgd]}}\nseeds: [0]\n"
                  "scales: {{quick: ['hydra.run.dir={victim}']}}\n", "Hydra key"),
    "hydra_group": (TINY_BASE + "axes: {{hydra/launcher: [basic]}}\nseeds: [0]\n", "Hydra key"),
    "nested_target": (TINY_BASE + "axes: {{optim: ['{{_target_: os.system}}']}}\nseeds: [0]\n", "_target_"),
    "tune_target": (TINY_BASE + "axes: {{optim: [sgd]}}\nseeds: [0]\n"
                    "tune: {{+optim._target_: [builtins.open]}}\n", "_target_"),
    "outputs": (TINY_BASE + "axes: {{optim: [sgd]}}\nseeds: [0]\n"
                "scales: {{full: ['outputs={victim_dir}']}}\n", "only the command line"),
    "data_root": (TINY_BASE + "axes: {{data.root: [data, '{victim_dir}']}}\nseeds: [0]\n",
                  "outside the project"),
    "climbing_root": (TINY_BASE + "axes: {{optim: [sgd]}}\nseeds: [0]\n"
                      "tune_scales: {{quick: {{data.root: ['../../x']}}}}\n", "outside the project"),
    "nested_outputs": (TINY_BASE + "axes: {{optim: [sgd]}}\nseeds: [0]\n"
                       "tune: {{transfer.pretrain: [\"['outputs={victim_dir}']\"]}}\n", "only the command line"),
    "resolver": (TINY_BASE + "axes: {{optim: [sgd]}}\nseeds: [0]\n"
                 "scales: {{quick: ['tag=\\${{oc.env:HOME}}']}}\n", "resolver"),
    "name": ("name: ../../escape\n" + TINY_BASE + "axes: {{optim: [sgd]}}\nseeds: [0]\n", "plain name"),
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_an_experiment_file_that_is_more_than_data_is_refused(case, tmp_path, outputs):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    text, why = MALICIOUS[case]
    path = tmp_path / f"evil_{case}.yaml"
    path.write_text("claim: C18\nstatement: x\n" + text.format(victim=victim, victim_dir=tmp_path / "elsewhere"))
    out = runner.invoke(app, ["sweep", str(path)])
    assert out.exit_code == 2, out.output
    line = out.output.strip()
    assert "\n" not in line and line.startswith(f"error: {path.name}: ") and why in line
    assert victim.read_text() == "precious\n"
    assert not _sweeps(outputs) and not (tmp_path / "elsewhere").exists()
    assert not list(tmp_path.glob("escape*")) and not list(outputs.parent.glob("escape*"))


@pytest.mark.slow
def test_the_same_overrides_on_the_command_line_are_the_users_choice(tmp_path, outputs):
    """outputs= given by the user moves the sweep; only the experiment file is held to data."""
    path = tmp_path / "plain.yaml"
    path.write_text("claim: C18\nstatement: x\n" + TINY_BASE + "axes: {optim: [sgd]}\nseeds: [0]\n")
    elsewhere = tmp_path / "elsewhere"
    out = runner.invoke(app, ["sweep", str(path), f"outputs={elsewhere}"])
    assert out.exit_code == 0, out.output
    assert len(_sweeps(elsewhere)) == 1


def test_a_file_name_that_is_no_plain_name_is_made_one(tmp_path):
    from cnnlab.lab.experiment import load

    path = tmp_path / "my exp [v2].yaml"
    path.write_text("claim: C18\nstatement: x\n" + TINY_BASE + "axes: {optim: [sgd]}\nseeds: [0]\n")
    assert load(path).name == "my_exp__v2_"


@pytest.mark.slow
def test_a_tampered_sweep_yaml_cannot_add_hydra_callbacks(tmp_path, outputs):
    out = runner.invoke(app, ["sweep", *FAST, "seed=0"])
    assert out.exit_code == 0, out.output
    (d,) = _sweeps(outputs)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    saved = (d / "sweep.yaml").read_text()
    (d / "sweep.yaml").write_text(saved.replace(
        "hydra_overrides: []", f"hydra_overrides: ['+hydra.callbacks.x._target_=builtins.open', "
                               f"'+hydra.callbacks.x.file={victim}', '+hydra.callbacks.x.mode=w']"))
    out = runner.invoke(app, ["sweep", str(d), "--resume"])
    assert out.exit_code == 2 and "sweep.yaml: override '+hydra.callbacks.x._target_" in out.output
    assert victim.read_text() == "precious\n"


# --- SIGINT / SIGTERM stop the sweep -------------------------------------------------------------

LONG = ["data=digits", "model=lenet5", "trainer.epochs=8", "trainer.threads=1", "seed=0,1"]


def _sweep_and_signal(outputs, signum, extra=()):
    """`cnnlab sweep` of two 8-epoch jobs in a process of its own; `signum` once the first job
    has finished its first epoch. Returns (exit code, output, sweep folder)."""
    env = {**os.environ, "CNNLAB_OUTPUTS": str(outputs), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "sweep", "--no-plots", *LONG, *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        metrics = list(outputs.glob("sweeps/*/jobs/*/run/metrics.csv"))
        if metrics and len(metrics[0].read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep ended before the signal"
    proc.send_signal(signum)
    output, _ = proc.communicate(timeout=60)
    (d,) = _sweeps(outputs)
    return proc.returncode, output, d


@pytest.mark.slow
def test_ctrl_c_stops_the_sweep_and_resume_continues_the_job_from_its_checkpoint(outputs):
    code, output, d = _sweep_and_signal(outputs, signal.SIGINT)
    assert code == 130, output
    assert f"Continue with: cnnlab sweep {d} --resume" in output.replace("\n", "")
    (job,) = [j for j in _jobs(d) if (j / "job.json").exists()]  # the second job never started
    assert read_status(job) == "interrupted"
    run = job / "run"
    assert (run / "checkpoints" / "last.pt").is_file()
    assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"
    (run / "kept").write_text("the same folder\n")
    inode = run.stat().st_ino

    out = runner.invoke(app, ["sweep", str(d), "--resume", "--no-plots"])
    assert out.exit_code == 0, out.output
    assert sorted(read_status(j) for j in _jobs(d)) == ["done", "done"]
    assert (run / "kept").exists() and run.stat().st_ino == inode  # continued, not recreated
    epochs = [int(line.split(",")[0]) for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    assert epochs == list(range(1, 9))  # no epoch twice
    assert "resumed after epoch" in (run / "train.log").read_text()


@pytest.mark.slow
def test_sigterm_stops_the_sweep_with_exit_code_143(outputs):
    code, output, d = _sweep_and_signal(outputs, signal.SIGTERM)
    assert code == 143, output
    assert "interrupted by SIGTERM" in output and f"cnnlab sweep {d} --resume" in output.replace("\n", "")
    started = [j for j in _jobs(d) if (j / "job.json").exists()]
    assert [read_status(j) for j in started] == ["interrupted"]
    assert (started[0] / "run" / "checkpoints" / "last.pt").is_file()
    assert not (d / ".stop").exists()


@pytest.fixture
def sigterm_guard():
    """SIGTERM sent to the test process itself is recorded, not fatal, unless cnnlab handles it."""
    got = []
    old = signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))
    yield got
    signal.signal(signal.SIGTERM, old)


def test_a_signal_while_a_job_is_not_training_lets_it_finish_then_stops(outputs, monkeypatch,
                                                                         sigterm_guard):
    """SIGTERM during a job's test pass (no training loop to hand it to): the job ends done and no
    further job starts."""
    import cnnlab.training.recipe as recipe

    real = recipe.train

    def signalled_at_the_end(cfg, *args, **kwargs):
        summary = real(cfg, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        return summary

    monkeypatch.setattr(recipe, "train", signalled_at_the_end)
    out = runner.invoke(app, ["sweep", "--no-plots", *FAST, "seed=0,1"])
    assert out.exit_code == 143, out.output
    (d,) = _sweeps(outputs)
    assert [read_status(j) for j in _jobs(d)] == ["done"]
    assert f"cnnlab sweep {d} --resume" in out.output.replace("\n", "")


def test_a_signal_stops_a_measurement_sweep_at_once(tmp_path, outputs, monkeypatch, sigterm_guard):
    import dataclasses

    from cnnlab.lab import measures

    real = measures.get("conv-arithmetic")

    def signalled(overrides, args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.5)  # not waited out: the handler stops the sweep at once
        return real.run(overrides, args)

    monkeypatch.setattr(measures, "get", lambda name: dataclasses.replace(real, run=signalled))
    path = tmp_path / "arith.yaml"
    path.write_text("claim: C21\nmeasure: conv-arithmetic\nmetric: weights\naxes: {}\nseeds: [0, 1]\n")
    out = runner.invoke(app, ["sweep", "--no-plots", str(path)])
    assert out.exit_code == 143, out.output
    (d,) = _sweeps(outputs)
    assert [read_status(j) for j in _jobs(d)] == ["interrupted"]


def test_a_signal_stops_run_all_with_the_resume_command(outputs, monkeypatch, sigterm_guard):
    import dataclasses

    from cnnlab.lab import measures

    real = measures.get("conv-arithmetic")

    def signalled(overrides, args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.5)
        return real.run(overrides, args)

    get = measures.get
    monkeypatch.setattr(measures, "get", lambda name: dataclasses.replace(real, run=signalled)
                        if name == real.name else get(name))
    out = runner.invoke(app, ["experiments", "run-all", "--only", "C21", "--no-plots"])
    assert out.exit_code == 143, out.output
    (d,) = _sweeps(outputs)
    text = out.output.replace("\n", "")
    assert "interrupted by SIGTERM" in text and f"cnnlab sweep {d} --resume, then cnnlab report" in text
    assert not (outputs / "reports").exists()


@pytest.mark.slow
def test_sigterm_stops_joblib_workers_too(outputs):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    code, output, d = _sweep_and_signal(outputs, signal.SIGTERM,
                                        ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"])
    assert code == 143, output
    statuses = [read_status(j) for j in _jobs(d) if (j / "job.json").exists()]
    assert statuses and set(statuses) <= {"interrupted", "done"} and "interrupted" in statuses


# --- one writer per sweep folder -----------------------------------------------------------------

def test_two_sweeps_started_in_the_same_second_get_their_own_folders(outputs, monkeypatch):
    from cnnlab.lab import sweep as sw

    monkeypatch.setattr(sw, "_hydra_multirun", lambda overrides: None)  # no jobs: the folders only
    monkeypatch.setattr(sw.time, "strftime", lambda fmt, *a: "20260101-120000")
    first = sw.plan([*FAST, "seed=0"], outputs)
    second = sw.plan([*FAST, "seed=0"], outputs)  # planned before the first one launched
    sw.launch(first)
    sw.launch(second)
    assert first.sweep_dir != second.sweep_dir
    assert second.sweep_dir.name == "adhoc-20260101-120000-2"
    assert (first.sweep_dir / "sweep.yaml").is_file() and (second.sweep_dir / "sweep.yaml").is_file()


def test_threads_creating_sweeps_in_one_second_never_share_a_folder(outputs, monkeypatch):
    from cnnlab.lab import sweep as sw

    monkeypatch.setattr(sw.time, "strftime", lambda fmt, *a: "20260101-120000")
    plans = [sw.plan([*FAST, "seed=0"], outputs) for _ in range(6)]
    start, folders = threading.Barrier(len(plans)), []

    def open_one(p):
        start.wait()
        with sw.opened(p):
            folders.append(p.sweep_dir)

    threads = [threading.Thread(target=open_one, args=(p,)) for p in plans]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(folders)) == 6


@pytest.mark.slow
def test_a_second_resume_of_a_sweep_is_refused_and_deletes_nothing(outputs):
    from cnnlab.locks import FolderLock

    out = runner.invoke(app, ["sweep", *FAST, "seed=0"])
    assert out.exit_code == 0, out.output
    (d,) = _sweeps(outputs)
    (job,) = _jobs(d)
    write_job(job, status="failed", error="simulated")  # a resume would clear and rerun its run/
    inode = (job / "run").stat().st_ino
    with FolderLock(d, "sweep folder"):  # the first `--resume`, still running
        out = runner.invoke(app, ["sweep", str(d), "--resume"])
        assert out.exit_code == 1, out.output
        assert f"{d}/ is in use by pid {os.getpid()}" in out.output
    assert (job / "run").stat().st_ino == inode and read_status(job) == "failed"
    out = runner.invoke(app, ["sweep", str(d), "--resume"])  # once it has finished
    assert out.exit_code == 0, out.output
    assert read_status(job) == "done"


@pytest.mark.slow
def test_interrupted_job_without_a_checkpoint_starts_afresh(outputs):
    """trainer.checkpoints=false: nothing to continue from, so --resume trains the job again."""
    out = runner.invoke(app, ["sweep", *FAST, "seed=0"])
    assert out.exit_code == 0, out.output
    (d,) = _sweeps(outputs)
    (job,) = _jobs(d)
    (job / "run" / "checkpoints" / "last.pt").unlink()
    write_job(job, status="interrupted")
    out = runner.invoke(app, ["sweep", str(d), "--resume"])
    assert out.exit_code == 0, out.output
    assert read_status(job) == "done" and Path(job / "run" / "summary.json").is_file()
