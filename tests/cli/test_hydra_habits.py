"""Habits users bring from Hydra: --cfg job|hydra|all with --resolve, -m/--multirun, --version,
shell completion, and a list of values on `cnnlab train` naming `cnnlab sweep`."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from cnnlab.cli.main import app

runner = CliRunner()


def cnnlab(*args):
    return subprocess.run([sys.executable, "-m", "cnnlab", *args], capture_output=True, text=True,
                          timeout=300)


def test_cfg_job_prints_cnnlabs_config_unresolved_and_trains_nothing(outputs):
    out = runner.invoke(app, ["train", "--cfg", "job", "model=lenet5"])
    assert out.exit_code == 0, out.output
    assert "name: lenet5" in out.output and "hydra:" not in out.output
    assert "outputs: ${oc.env:CNNLAB_OUTPUTS,outputs}" in out.output  # Hydra prints unresolved
    assert not outputs.exists()


def test_cfg_job_resolve_resolves_interpolations(outputs):
    out = runner.invoke(app, ["train", "--cfg", "job", "--resolve", "model=lenet5"])
    assert out.exit_code == 0, out.output
    assert f"outputs: {outputs}" in out.output and "${" not in out.output


def test_cfg_hydra_prints_the_hydra_node_only():
    out = runner.invoke(app, ["train", "--cfg", "hydra", "model=lenet5"])
    assert out.exit_code == 0, out.output
    assert out.output.startswith("hydra:") and "sweeper:" in out.output
    assert "lenet5" in out.output  # the overrides are recorded in hydra.overrides.task
    assert "\nmodel:" not in out.output


def test_cfg_hydra_resolve_keeps_what_only_a_job_knows():
    out = runner.invoke(app, ["train", "--cfg", "hydra", "--resolve"])
    assert out.exit_code == 0, out.output
    assert "${now:" not in out.output  # resolved
    assert "${hydra.job.num}" in out.output  # known only in a multirun job: kept as written


def test_cfg_all_prints_both():
    out = runner.invoke(app, ["train", "--cfg", "all", "optim=adam"])
    assert out.exit_code == 0, out.output
    assert out.output.startswith("hydra:") and "\noptim:" in out.output


def test_cfg_bad_value_is_one_line():
    out = runner.invoke(app, ["train", "--cfg", "jobs"])
    assert out.exit_code == 2 and "--cfg takes job, hydra or all" in out.output


def test_bare_cfg_still_prints_the_job_config():
    proc = cnnlab("train", "model=lenet5", "--cfg")
    assert proc.returncode == 0, proc.stderr
    assert "name: lenet5" in proc.stdout


def test_an_unknown_option_on_train_is_one_line():
    out = runner.invoke(app, ["train", "--cgf", "job"])
    assert out.exit_code == 2 and "no such option: --cgf" in out.output


@pytest.mark.parametrize("flag", ["-m", "--multirun"])
def test_multirun_runs_the_sweep_with_its_options(flag, outputs, monkeypatch):
    from cnnlab.lab import sweep as sw

    launched = []
    monkeypatch.setattr(sw, "launch", lambda p: launched.append(p))
    out = runner.invoke(app, ["train", flag, "data=digits", "model=lenet5", "trainer.epochs=1",
                              "seed=0,1", "--no-plots"])
    assert len(launched) == 1, out.output
    assert [j for j in launched[0].jobs] and len(launched[0].jobs) == 2
    assert "2 jobs" in out.output
    assert not list((outputs / "sweeps").rglob("*.png"))  # --no-plots reached the sweep


def test_multirun_with_a_bad_sweep_option_is_one_line():
    out = runner.invoke(app, ["train", "-m", "seed=0,1", "--nope"])
    assert out.exit_code == 2 and "--nope" in out.output and "Traceback" not in out.output


def test_a_list_of_values_on_train_names_cnnlab_sweep():
    out = runner.invoke(app, ["train", "data=digits", "seed=0,1"])
    assert out.exit_code == 2
    assert "a list of values is a sweep: run `cnnlab sweep data=digits seed=0,1 ...`" in out.output
    assert "cnnlab train -m" in out.output
    # the suggested command can be pasted into a shell: a value with parentheses is quoted
    out = runner.invoke(app, ["train", "seed=range(3)"])
    assert out.exit_code == 2 and "`cnnlab sweep 'seed=range(3)' ...`" in out.output


def test_version_prints_the_package_version_without_torch():
    from importlib.metadata import version

    code = ("import sys; sys.argv = ['cnnlab', '--version']\n"
            "from cnnlab.cli.main import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
            "print('torch' in sys.modules, 'hydra' in sys.modules, code)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [f"cnnlab {version('cnnlab')}", "False False 0"]


def test_help_through_main_does_not_import_torch():
    code = ("import sys; sys.argv = ['cnnlab', '--help']\n"
            "from cnnlab.cli.main import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[-1] == "False"
    assert "--install-completion" in out.stdout and "--version" in out.stdout


def test_show_completion_prints_a_completion_script(monkeypatch):
    # typer reads the shell from the parent processes unless told not to; under a background
    # job that finds none, and `bash` below would be ignored
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    out = runner.invoke(app, ["--show-completion", "bash"], prog_name="cnnlab")
    assert out.exit_code == 0, (out.output, out.exception)
    assert "complete" in out.output and "cnnlab" in out.output
