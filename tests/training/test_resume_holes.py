"""Resume and the run folder around a failure: a resumed run writes its row to the table of its
own outputs folder wherever it is resumed from; a crash between summary.json and the results
row leaves a run that `resume` completes by appending the row only; a run folder is never left
without its config.yaml."""

import errno
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cnnlab import results
from cnnlab.cli.main import app
from cnnlab.run import Run
from cnnlab.training import engine
from cnnlab.training.recipe import train
from tests.conftest import tiny

RUN = ["data=digits", "model=lenet5", "trainer.epochs=2", "sched=none"]


def _rows(outputs: Path) -> list:
    df = results.read_table(outputs)
    return [] if df.empty else list(df["run_id"])


def _interrupted_run(monkeypatch, *overrides) -> Path:
    """A run stopped by Ctrl-C during epoch 2's scoring: last.pt of epoch 1, status interrupted."""
    real, calls = engine._validate, []

    def stop_in_epoch_2(loop):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(loop)

    monkeypatch.setattr(engine, "_validate", stop_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(*RUN, *overrides))
    monkeypatch.setattr(engine, "_validate", real)
    (run,) = Path(tiny(*RUN, *overrides).outputs, "runs").iterdir()
    assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"
    return run.resolve()


def test_resume_from_another_folder_writes_to_the_runs_own_table(tmp_path, monkeypatch):
    home, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    home.mkdir(), elsewhere.mkdir()
    monkeypatch.chdir(home)
    run = _interrupted_run(monkeypatch, "outputs=outputs")  # relative, as conf/config.yaml's default
    monkeypatch.chdir(elsewhere)
    result = CliRunner().invoke(app, ["resume", str(run)])
    assert result.exit_code == 0, result.output
    assert _rows(home / "outputs") == [run.name]
    assert not (elsewhere / "outputs").exists()


def test_a_crash_between_summary_and_row_is_completed_by_resume(outputs, monkeypatch):
    real = results.append_row

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(results, "append_row", full_disk)
    with pytest.raises(OSError):
        train(tiny(*RUN))
    monkeypatch.setattr(results, "append_row", real)
    (run,) = (outputs / "runs").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "done" and summary["recorded"] is False
    assert _rows(outputs) == []
    metrics = (run / "metrics.csv").read_text()

    result = CliRunner().invoke(app, ["resume", str(run)])
    assert result.exit_code == 0, result.output
    assert _rows(outputs) == [run.name]
    assert (run / "metrics.csv").read_text() == metrics  # nothing trained again
    assert json.loads((run / "summary.json").read_text())["recorded"] is True
    row = results.read_table(outputs).iloc[0]
    assert row["status"] == "done" and row["test_acc"] == pytest.approx(summary["test_acc"])
    assert "appended it" in (run / "train.log").read_text()

    again = CliRunner().invoke(app, ["resume", str(run)])  # now it is finished and recorded
    assert again.exit_code != 0 and "finished" in again.output
    assert _rows(outputs) == [run.name]


def test_resume_auto_completes_a_run_that_lost_its_row(outputs, monkeypatch):
    real = results.append_row
    monkeypatch.setattr(results, "append_row", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "full")))
    with pytest.raises(OSError):
        train(tiny(*RUN))
    monkeypatch.setattr(results, "append_row", real)
    (run,) = (outputs / "runs").iterdir()
    s = train(tiny(*RUN, "resume=auto"))
    assert s["run_id"] == run.name and _rows(outputs) == [run.name]
    assert len(list((outputs / "runs").iterdir())) == 1  # no new run
    s2 = train(tiny(*RUN, "resume=auto"))  # recorded now: auto starts a new run, as for any finished one
    assert s2["run_id"] != run.name and len(_rows(outputs)) == 2


def test_a_crash_after_the_row_before_the_mark_adds_no_second_row(outputs, monkeypatch):
    real, calls = Run.write_summary, []

    def crash_on_the_mark(self, summary):
        calls.append(summary.get("recorded"))
        if summary.get("recorded") is True:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, summary)

    monkeypatch.setattr(Run, "write_summary", crash_on_the_mark)
    with pytest.raises(OSError):
        train(tiny(*RUN))
    monkeypatch.setattr(Run, "write_summary", real)
    (run,) = (outputs / "runs").iterdir()
    assert _rows(outputs) == [run.name]
    result = CliRunner().invoke(app, ["resume", str(run)])
    assert result.exit_code == 0, result.output
    assert _rows(outputs) == [run.name]
    assert json.loads((run / "summary.json").read_text())["recorded"] is True


def test_a_run_whose_config_cannot_be_written_leaves_no_folder(outputs, monkeypatch):
    def full_disk(self, cfg):
        (self.root / "config.yaml.partial").write_text("")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Run, "write_config", full_disk)
    with pytest.raises(OSError):
        train(tiny(*RUN))
    runs = outputs / "runs"
    assert not runs.exists() or [p for p in runs.iterdir() if not (p / "config.yaml").exists()] == []


def test_every_failed_train_leaves_config_yaml_in_its_folder(outputs, monkeypatch):
    """A failure once the folder exists (here: the first training step) keeps config.yaml."""
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(engine.step, "forward", broken)
    with pytest.raises(RuntimeError):
        train(tiny(*RUN))
    (run,) = (outputs / "runs").iterdir()
    assert (run / "config.yaml").is_file()
    assert json.loads((run / "summary.json").read_text())["status"] == "failed"


def test_own_outputs_follows_the_folder_layout(tmp_path):
    from cnnlab.training.resume import own_outputs

    out = tmp_path / "o"
    assert own_outputs(out / "runs" / "20260101-000000-abcdef", "outputs") == out.resolve()
    assert own_outputs(out / "sweeps" / "s-1" / "jobs" / "j" / "run", "outputs") == out.resolve()
    assert own_outputs(out / "cache" / "pretrain" / "k", "outputs") == out.resolve()
    assert own_outputs(tmp_path / "odd" / "place", "elsewhere") == Path("elsewhere")
    assert os.path.isabs(own_outputs(Path("outputs/runs/x"), "outputs"))
