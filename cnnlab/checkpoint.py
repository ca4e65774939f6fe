"""Checkpoints: atomic writes and loading that never unpickles code.

A save goes to a temporary file in the same folder, is flushed and fsynced, then renamed over
the target, so a crash mid-save (even SIGKILL) leaves the previous checkpoint intact. Loading
always uses `weights_only=True`, and only on torch >= 2.6: before 2.6 that path could still run
code from a crafted file (CVE-2025-32434). RNG states are stored as tensors and plain tuples so
that works. `.safetensors` files (`cnnlab export`) load through the same `load`: a format that
holds tensors and string metadata only, so it cannot carry code at all.
"""

from __future__ import annotations

import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any

from cnnlab.errors import CnnlabError

# weights_only=True stopped being bypassable in torch 2.6 (CVE-2025-32434, GHSA-53q9-r3pm-6pq6)
MIN_TORCH = (2, 6)


def check_torch(version: str | None = None) -> None:
    """Refuse to load checkpoints on a torch whose weights_only loader could still run code."""
    import torch

    version = version or torch.__version__
    parts = re.match(r"(\d+)\.(\d+)", str(version))
    if parts is None or tuple(int(v) for v in parts.groups()) < MIN_TORCH:
        raise CnnlabError(f"refusing to load checkpoints with torch {version}: before "
                          f"{MIN_TORCH[0]}.{MIN_TORCH[1]} torch.load(weights_only=True) can run code "
                          f"from a crafted file (CVE-2025-32434); pip install 'torch>=2.6'")


def all_finite(state: dict) -> bool:
    """Whether every floating tensor of a state dict is finite (one device sync per call)."""
    import torch

    flags = [torch.isfinite(v).all() for v in state.values()
             if isinstance(v, torch.Tensor) and v.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True


def save(state: dict, path: str | os.PathLike) -> Path:
    """Write `state` to `path` atomically; any failure raises CnnlabError and keeps the old file."""
    import torch

    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise CnnlabError(f"cannot save checkpoint {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a process killed mid-save
            stale.unlink(missing_ok=True)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except (OSError, RuntimeError) as exc:  # torch's zip writer reports failed writes as RuntimeError
        Path(tmp).unlink(missing_ok=True)
        text = getattr(exc, "strerror", None) or str(exc).strip().splitlines()[0]
        raise CnnlabError(f"cannot save checkpoint {path}: {text}; the previous file is kept") from exc
    return path


def load(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Load a checkpoint with weights_only=True; refuse anything that needs arbitrary unpickling."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise CnnlabError(f"no checkpoint at {path}")
    if path.suffix == ".safetensors":
        return load_safetensors(path, map_location)
    check_torch()
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CnnlabError(f"refusing to load {path}: it needs arbitrary unpickling, which could "
                          f"run code ({str(exc).splitlines()[0]})") from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise CnnlabError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0]}") from exc


_VERIFIED: dict = {}  # (path, size, mtime) -> sha256 hex: each file is hashed once per process


def sha256_of(path: str | os.PathLike) -> str:
    import hashlib

    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _VERIFIED:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _VERIFIED[key] = h.hexdigest()
    return _VERIFIED[key]


def verify_sha256(path: str | os.PathLike, expected: str, hint: str = "") -> Path:
    """Check a weights file against its recorded SHA-256 (a full digest, or the prefix
    torchvision puts in its file names); a mismatch is a DataError naming the file."""
    from cnnlab.errors import DataError

    actual = sha256_of(path)
    if not expected or not actual.startswith(expected.lower()):
        raise DataError(f"{path} has SHA-256 {actual[:16]}..., not the recorded {expected[:16]}...: "
                        f"the file is corrupt or not the published one{'; ' + hint if hint else ''}")
    return Path(path)


def load_safetensors(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """{"model": tensors, "metadata": {str: str}} of a .safetensors file (no pickle involved)."""
    from safetensors import SafetensorError, safe_open

    device = str(map_location) if map_location is not None else "cpu"
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            names = list(f.keys())  # safe_open has keys(), no __iter__
            return {"model": {k: f.get_tensor(k) for k in names}, "metadata": f.metadata() or {}}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CnnlabError(f"cannot read safetensors file {path}: {str(exc).splitlines()[0]}") from exc


def rng_state() -> dict:
    """The RNG states of Python, numpy, torch (and CUDA), as tensors and tuples (weights_only)."""
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
    """Restore what `rng_state` captured."""
    import numpy as np
    import torch

    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
