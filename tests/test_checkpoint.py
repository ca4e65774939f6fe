import os
import pickle

import pytest
import torch

from cnnlab import checkpoint
from cnnlab.errors import CnnlabError


def test_save_and_load_round_trip_with_rng_state(tmp_path):
    model = torch.nn.Linear(3, 2)
    state = {"model": model.state_dict(), "epoch": 4, "rng": checkpoint.rng_state()}
    checkpoint.save(state, tmp_path / "c.pt")
    loaded = checkpoint.load(tmp_path / "c.pt")
    assert loaded["epoch"] == 4 and torch.equal(loaded["model"]["weight"], model.weight)
    # the saved RNG state, restored from the loaded file, replays the same random numbers
    checkpoint.set_rng_state(state["rng"])
    expected = torch.rand(3)
    torch.rand(5)  # move the generator on
    checkpoint.set_rng_state(loaded["rng"])
    assert torch.equal(torch.rand(3), expected)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {_Evil.marker}",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    _Evil.marker = tmp_path / "pwned"
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"model": _Evil()}, f)
    with pytest.raises(CnnlabError, match="refusing to load"):
        checkpoint.load(tmp_path / "evil.pt")
    assert not _Evil.marker.exists()


def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    checkpoint.save({"v": 1}, tmp_path / "c.pt")

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(CnnlabError, match="No space left"):
        checkpoint.save({"v": 2}, tmp_path / "c.pt")
    monkeypatch.undo()
    assert checkpoint.load(tmp_path / "c.pt")["v"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
