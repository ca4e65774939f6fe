"""Checkpoints: atomic writes and loading that never unpickles code.

A save goes to a temporary file in the same folder, is flushed and fsynced, then renamed over
the target, so a crash mid-save leaves the previous checkpoint intact. Loading always uses
`weights_only=True`; RNG states are stored as tensors and plain tuples so that works.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

from cnnlab.errors import CnnlabError


def save(state: dict, path: str | os.PathLike) -> Path:
    """Write `state` to `path` atomically; any failure raises CnnlabError and keeps the old file."""
    import torch

    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise CnnlabError(f"cannot save checkpoint {path}: {exc.strerror or exc}") from exc
    return path


def load(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Load a checkpoint with weights_only=True; refuse anything that needs arbitrary unpickling."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise CnnlabError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CnnlabError(f"refusing to load {path}: it needs arbitrary unpickling, which could "
                          f"run code ({str(exc).splitlines()[0]})") from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise CnnlabError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0]}") from exc


def rng_state() -> dict:
    import numpy as np
    import torch

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.copy()), int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
