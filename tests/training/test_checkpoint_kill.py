"""SIGKILL in the middle of checkpoint saves, at several points: what is left always loads and
is one whole version (never a torn or mixed file)."""

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cnnlab import checkpoint

HELPER = Path(__file__).parent / "helpers" / "save_loop.py"


@pytest.mark.slow
def test_sigkill_during_saves_leaves_a_loadable_checkpoint(tmp_path):
    rng = random.Random(0)
    target = tmp_path / "last.pt"
    versions = []
    mid_save = 0
    for point in range(3):
        proc = subprocess.Popen([sys.executable, str(HELPER), str(target)], stdout=subprocess.PIPE,
                                text=True, cwd=Path(__file__).parents[2])
        try:
            assert proc.stdout.readline().startswith("saved")  # one whole version exists
            time.sleep(rng.uniform(0.0, 0.4))  # then kill at a random point of later saves
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        state = checkpoint.load(target)
        v = state["version"]
        assert torch.equal(state["model"]["w"], torch.full_like(state["model"]["w"], float(v)))
        versions.append(v)
        stale = list(tmp_path.glob(".last.pt.*.tmp"))  # the kill landed inside a save
        mid_save += bool(stale)
        for p in stale:
            p.unlink()
    assert all(v >= 1 for v in versions)
    assert mid_save >= 1  # saves run back to back, so (almost) every kill cuts one short
