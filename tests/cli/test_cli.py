import subprocess
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from cnnlab.cli.main import app
from conftest import TINY

runner = CliRunner()


def cnnlab(*args, env=None):
    return subprocess.run([sys.executable, "-m", "cnnlab", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_help_does_not_import_torch_pandas_or_hydra():
    code = ("import sys; from cnnlab.cli.main import app; from typer.main import get_command; "
            "get_command(app); "
            "print(sorted(m for m in ('torch', 'pandas', 'hydra', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_train_help_lists_groups_and_choices():
    out = runner.invoke(app, ["train", "--help"], terminal_width=200)
    assert out.exit_code == 0
    for fragment in ("model:", "lenet5", "resnet8", "data:", "digits", "shapes", "optim:", "adam"):
        assert fragment in out.output


@pytest.mark.parametrize("args, fragment", [
    (["model=__no_such_model__"], "unknown model '__no_such_model__'"),
    (["trainer.epochs=abc"], "bad value for trainer.epochs"),
    (["trainer.nope=3"], "unknown key 'trainer.nope'"),
    (["data.num_train=-5"], "data.num_train=-5 is not allowed"),
])
def test_bad_input_exits_2_with_one_line_and_no_traceback(args, fragment):
    proc = cnnlab("train", *args)
    assert proc.returncode == 2
    assert fragment in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_debug_shows_the_traceback():
    proc = cnnlab("train", "model=__no_such_model__", "--debug")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


@pytest.mark.slow
def test_missing_data_root_is_a_runtime_error_with_exit_1(tmp_path):
    proc = cnnlab("train", "data=mnist", f"data.root={tmp_path}/absent")
    assert proc.returncode == 1 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_unwritable_outputs_fails_cleanly_and_keeps_existing_results(tmp_path, outputs):
    outputs.mkdir(parents=True)
    (outputs / "results.csv").write_text("run_id,test_acc\nold,0.5\n")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proc = cnnlab("train", f"outputs={blocker}/out", *TINY)
    assert proc.returncode == 1 and "not writable" in proc.stderr
    assert (outputs / "results.csv").read_text() == "run_id,test_acc\nold,0.5\n"


def test_cfg_prints_the_composed_config_with_overrides():
    out = runner.invoke(app, ["train", "--cfg", "model=lenet5", "optim=adam", "optim.lr=0.003"])
    assert out.exit_code == 0
    assert "name: lenet5" in out.output and "lr: 0.003" in out.output


def test_train_then_results_table_filters_and_pivots(outputs):
    for model in ("lenet5", "resnet8"):
        out = runner.invoke(app, ["train", "data=digits", f"model={model}", *TINY])
        assert out.exit_code == 0, out.output
        assert "test_acc" in out.output and "run folder:" in out.output
    df = pd.read_csv(outputs / "results.csv")
    assert sorted(df.model) == ["lenet5", "resnet8"] and df.status.eq("done").all()
    out = runner.invoke(app, ["results", "--where", "model=lenet5", "-c", "model,test_acc"])
    assert out.exit_code == 0 and "lenet5" in out.output and "resnet8" not in out.output
    out = runner.invoke(app, ["results", "--pivot", "rows=model cols=data values=test_acc"])
    assert out.exit_code == 0 and "test_acc digits" in out.output
    md = outputs / "t.md"
    out = runner.invoke(app, ["results", "--export", str(md)])
    assert out.exit_code == 0 and md.read_text().startswith("| run_id |")
    out = runner.invoke(app, ["results", "--where", "nope=1"])
    assert out.exit_code == 2


def test_data_info_and_list():
    out = runner.invoke(app, ["data", "info", "data=digits"])
    assert out.exit_code == 0 and "digits: 10 classes" in out.output and "test 359" in out.output
    out = runner.invoke(app, ["data", "list"])
    assert "shapes_style" in out.output and "cifar10" in out.output


def test_models_lists_the_registry():
    out = runner.invoke(app, ["models"], terminal_width=200)
    assert out.exit_code == 0 and "lenet5" in out.output and "61,706" in out.output
