"""Safe loading, export, and bad conditions during a run: code in a checkpoint never runs, old
torch is refused, a full disk or an out-of-memory error is one line, parallel appends are locked."""

import errno
import multiprocessing
import os
import pickle

import pytest
import torch
from typer.testing import CliRunner

from cnnlab import checkpoint, results
from cnnlab.cli.main import app
from cnnlab.errors import CnnlabError
from cnnlab.training.recipe import train
from tests.conftest import tiny

TINY_RUN = ["data=digits", "model=lenet5", "trainer.epochs=1"]


class _Payload:
    """Unpickling this runs `touch marker`: what a malicious checkpoint would do."""

    marker = None

    def __reduce__(self):
        return (os.system, (f"touch {_Payload.marker}",))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_code_in_a_checkpoint_is_refused_and_never_runs(tmp_path, writer):
    _Payload.marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    state = {"model": {"w": torch.zeros(2)}, "extra": _Payload()}
    if writer == "torch.save":
        torch.save(state, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(state, f)
    assert not _Payload.marker.exists()  # writing it ran nothing
    with pytest.raises(CnnlabError, match="refusing to load .* could run code"):
        checkpoint.load(path)
    assert not _Payload.marker.exists()  # and it is not retried unsafely


@pytest.mark.parametrize("version, ok", [("2.5.1+cu124", False), ("1.13.0", False),
                                         ("2.6.0", True), ("2.14.1+cu130", True), ("10.0", True)])
def test_checkpoints_are_refused_on_torch_before_2_6(tmp_path, monkeypatch, version, ok):
    checkpoint.save({"v": 1}, tmp_path / "c.pt")
    monkeypatch.setattr(torch, "__version__", version)
    if ok:
        assert checkpoint.load(tmp_path / "c.pt")["v"] == 1
    else:
        with pytest.raises(CnnlabError, match="CVE-2025-32434"):
            checkpoint.load(tmp_path / "c.pt")


def test_enospc_while_writing_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    checkpoint.save({"v": 1}, tmp_path / "c.pt")

    def full_disk(obj, f, *a, **k):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CnnlabError, match="No space left on device; the previous file is kept"):
        checkpoint.save({"v": 2}, tmp_path / "c.pt")
    monkeypatch.undo()
    assert checkpoint.load(tmp_path / "c.pt")["v"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_enospc_during_a_run_is_one_line_and_exit_1(outputs, monkeypatch):
    def full_disk(obj, f, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full_disk)
    result = CliRunner().invoke(app, ["train", *TINY_RUN, "trainer.progress=none"])
    assert result.exit_code == 1
    lines = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "No space left on device" in lines[0], result.output
    assert "Traceback" not in result.output


def test_out_of_memory_hints_at_the_batch_size(outputs, monkeypatch):
    import cnnlab.training.engine

    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(cnnlab.training.engine, "topk_correct", oom)
    result = CliRunner().invoke(app, ["train", *TINY_RUN, "trainer.progress=none",
                                      "trainer.batch_size=32"])
    assert result.exit_code == 1
    assert "out of memory with trainer.batch_size=32: lower trainer.batch_size" in result.output


def test_export_safetensors_round_trip(outputs):
    s = train(tiny(*TINY_RUN))
    result = CliRunner().invoke(app, ["export", s["path"], "--format", "safetensors"])
    assert result.exit_code == 0, result.output
    path = outputs / "runs" / s["run_id"] / "checkpoints" / "model.safetensors"
    with open(path, "rb") as f:
        assert b"\x80\x04" not in f.read(64)  # a JSON header, not a pickle
    exported = checkpoint.load(path)
    best = checkpoint.load(path.with_name("best.pt"))["model"]
    assert exported["model"].keys() == best.keys()
    assert all(torch.equal(exported["model"][k], best[k]) for k in best)
    assert "lenet5" in exported["metadata"]["config_yaml"]
    bad = CliRunner().invoke(app, ["export", s["path"], "--format", "tflite"])
    assert bad.exit_code == 2 and "unknown export format" in bad.output


def _append_many(outputs, worker):
    for i in range(15):
        # a new column every few rows forces the rewrite path as well as plain appends
        row = {"run_id": f"{worker}-{i}", "worker": worker, f"extra{i % 4}": i}
        results.append_row(outputs, row)


def test_parallel_result_appends_lose_no_rows(tmp_path):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(tmp_path, w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    df = results.read_table(tmp_path)
    assert sorted(df["run_id"]) == sorted(f"{w}-{i}" for w in range(4) for i in range(15))


def test_a_run_shared_as_safetensors_only_loads_for_ensembles_and_transfer(outputs):
    from cnnlab.evaluation import ensemble
    from cnnlab.transfer import sources

    s = train(tiny(*TINY_RUN))
    run = outputs / "runs" / s["run_id"]
    _, before, _ = ensemble.load_run(run)
    CliRunner().invoke(app, ["export", str(run)])
    for name in ("best.pt", "last.pt"):  # what a colleague receives: config, summary, weights
        (run / "checkpoints" / name).unlink()
    _, after, _ = ensemble.load_run(run)
    assert all(torch.equal(a, b) for a, b in zip(before.state_dict().values(),
                                                 after.state_dict().values()))
    resolved = sources.resolve(tiny("transfer=finetune_all", f"transfer.source={run}"))
    assert resolved["checkpoint"].endswith("model.safetensors")
    state = sources.load_state(resolved)
    assert all(torch.equal(state[k], v) for k, v in after.state_dict().items())


@pytest.mark.parametrize("override", ["+optim._target_=os.system", "+model._target_=os.system",
                                      "+trainer.x._partial_=true"])
def test_configs_never_name_classes(override):
    from cnnlab.config import compose
    from cnnlab.errors import UsageError

    with pytest.raises(UsageError, match="never instantiates"):
        compose([override])
