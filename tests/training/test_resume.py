"""Exact resume: a run stopped by a real SIGTERM (mid-epoch, or at an epoch boundary) and
resumed ends with weights bit-identical to an uninterrupted run of the same seed (CPU, 1 thread).
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cnnlab import checkpoint
from cnnlab.training import resume
from cnnlab.errors import UsageError
from cnnlab.training.recipe import train
from tests.conftest import tiny

HELPER = Path(__file__).parent / "helpers" / "signal_train.py"
# lenet5 on digits with random flips (the augmentation generator's position matters) and a
# cosine schedule with momentum (scheduler and optimizer state matter): ~20 batches an epoch
RUN = ["data=digits", "model=lenet5", "aug=flip", "trainer.epochs=2", "trainer.batch_size=64"]


def _overrides(*extra):
    return ["trainer.progress=none", "trainer.threads=1", *RUN, *extra]


def _weights(run_dir) -> dict:
    return checkpoint.load(Path(run_dir) / "checkpoints" / "last.pt")["model"]


def _train_losses(run_dir) -> list:
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        # every column but the timings
        return [{k: v for k, v in r.items() if k not in ("epoch_seconds", "images_per_sec")}
                for r in csv.DictReader(f)]


def _interrupt(outputs, sig: str, when: str):
    env = dict(os.environ, CNNLAB_OUTPUTS=str(outputs))
    proc = subprocess.run([sys.executable, str(HELPER), sig, when, *_overrides()], check=False, env=env,
                          capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[2])
    (run_dir,) = (outputs / "runs").iterdir()
    return proc, run_dir


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run's final weights and its metrics rows."""
    out = tmp_path_factory.mktemp("reference")
    s = train(tiny(*RUN, f"outputs={out}"))
    return _weights(s["path"]), _train_losses(s["path"])


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("when", ["2:10", "1:end"], ids=["mid_epoch", "epoch_boundary"])
def test_sigterm_then_resume_is_bit_identical(tmp_path, reference, when):
    ref_weights, ref_rows = reference
    proc, run_dir = _interrupt(tmp_path, "SIGTERM", when)
    assert proc.returncode == 143, proc.stderr  # 128 + SIGTERM
    assert f"cnnlab resume {run_dir}" in proc.stderr and "Traceback" not in proc.stderr
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"
    state = checkpoint.load(run_dir / "checkpoints" / "last.pt")
    if when == "2:10":
        assert state["epoch"] == 1 and state["position"]["batch"] == 10
    else:
        assert state["epoch"] == 1 and state["position"] is None
    assert not _same(state["model"], ref_weights)  # it did stop early

    cfg = tiny(*RUN, f"outputs={tmp_path}", "resume=auto")
    s = train(cfg)
    assert s["status"] == "done" and Path(s["path"]) == run_dir  # the same folder continued
    assert _same(_weights(run_dir), ref_weights)
    assert _train_losses(run_dir) == ref_rows  # metrics.csv continues with the same numbers


@pytest.mark.slow
def test_sigint_exit_code_and_cli_resume(tmp_path):
    from typer.testing import CliRunner

    from cnnlab.cli.main import app

    proc, run_dir = _interrupt(tmp_path, "SIGINT", "1:5")
    assert proc.returncode == 130, proc.stderr
    os.environ["CNNLAB_OUTPUTS"] = str(tmp_path)
    result = CliRunner().invoke(app, ["resume", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "done"
    assert len(_train_losses(run_dir)) == 2
    # a finished run is not resumed again, and resume=auto then starts a new run
    result = CliRunner().invoke(app, ["resume", str(run_dir)])
    assert result.exit_code == 2 and "finished" in result.output


def test_resume_auto_matches_the_config_hash(tmp_path):
    a = tiny(*RUN, "seed=1")
    b = tiny(*RUN, "seed=2")
    assert resume.config_hash(a) != resume.config_hash(b)
    a2 = tiny(*RUN, "seed=1", "resume=auto", "trainer.progress=plain")
    assert resume.config_hash(a) == resume.config_hash(a2)  # resume and progress do not count
    assert resume.find(a2) is None  # nothing to resume yet: a fresh run


def test_resume_of_another_config_is_refused(tmp_path):
    s = train(tiny(*RUN, "trainer.epochs=1", f"outputs={tmp_path}"))
    with pytest.raises(UsageError, match="differs"):
        resume.find(tiny(*RUN, "trainer.epochs=2", f"resume={s['path']}"))


@pytest.mark.slow
def test_a_last_pt_from_before_chunks_resumes_and_says_its_draws_differ(tmp_path):
    """A mid-epoch position without `aug_from` (written before batches were augmented in
    chunks) still resumes, from the batch it names, and train.log says the rest of that epoch
    draws other augmentations."""
    proc, run_dir = _interrupt(tmp_path, "SIGTERM", "2:10")
    assert proc.returncode == 143, proc.stderr
    path = run_dir / "checkpoints" / "last.pt"
    state = checkpoint.load(path)
    assert state["position"]["aug_from"] == 8  # chunks of 8: batch 10 is in the chunk from 8
    del state["position"]["aug_from"]
    checkpoint.save(state, path)
    s = train(tiny(*RUN, f"outputs={tmp_path}", "resume=auto"))
    assert s["status"] == "done" and Path(s["path"]) == run_dir
    log = (run_dir / "train.log").read_text()
    assert "batch 10 of epoch 2" in log and "written before batches were augmented in chunks" in log


def test_a_mid_epoch_last_pt_from_other_chunks_is_noted_and_the_same_chunks_are_not():
    """train.log notes a last.pt whose chunks differ from this version's (their draws differ
    from there on); a position without `chunk` comes from the version of chunks of up to 4."""
    from cnnlab.training.engine import _draws_note

    here = {"batch": 10, "aug": torch.zeros(3), "aug_from": 8, "chunk": 8}
    assert _draws_note(here, 8, 2) is None
    assert _draws_note(None, 8, 2) is None
    assert _draws_note({**here, "aug": None}, 8, 2) is None  # no augmentation, nothing drawn
    note = _draws_note({**here, "chunk": 4}, 8, 2)
    assert "augmented 4 batches per call, this one augments 8: from epoch 2 on" in note
    older = {k: v for k, v in here.items() if k != "chunk"}
    assert "up to 4 batches per call, this one augments 8" in _draws_note(older, 8, 2)
    assert _draws_note(older, 4, 2) is None and _draws_note(older, 1, 2) is None
    oldest = {k: v for k, v in older.items() if k != "aug_from"}
    assert "before batches were augmented in chunks" in _draws_note(oldest, 8, 2)
