"""Checkpoints: atomic writes and loading that never unpickles code.

A save goes to a temporary file in the same folder, is flushed and fsynced, then renamed over
the target, so a crash mid-save (even SIGKILL) leaves the previous checkpoint intact, and a
failed save (a full disk) removes its temporary file. `write_atomic` does this for every file
cnnlab replaces whole (checkpoints, exports, the results table); files are created with the
user's umask (0644 under umask 022), so a shared export is readable by colleagues.

Loading always uses `weights_only=True`, and only on torch >= 2.6: before 2.6 that path could
still run code from a crafted file (CVE-2025-32434). RNG states are stored as tensors and plain
tuples so that works. `.safetensors` files (`cnnlab export`) load through the same `load`: a
format that holds tensors and string metadata only, so it cannot carry code at all. A file that
is empty, foreign, truncated or lacks a key is a one-line CnnlabError naming it.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

from cnnlab.errors import CnnlabError, os_reason

# weights_only=True stopped being bypassable in torch 2.6 (CVE-2025-32434, GHSA-53q9-r3pm-6pq6)
MIN_TORCH = (2, 6)
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since 1.6
PICKLE_MAGIC = b"\x80"  # pickle protocol 2 and later: torch's legacy format


def check_torch(version: str | None = None) -> None:
    """Refuse to load checkpoints on a torch whose weights_only loader could still run code."""
    import torch

    version = version or torch.__version__
    parts = re.match(r"(\d+)\.(\d+)", str(version))
    if parts is None or tuple(int(v) for v in parts.groups()) < MIN_TORCH:
        raise CnnlabError(f"refusing to load checkpoints with torch {version}: before "
                          f"{MIN_TORCH[0]}.{MIN_TORCH[1]} torch.load(weights_only=True) can run code "
                          f"from a crafted file (CVE-2025-32434); pip install 'torch>=2.6'")


class Checkpoint(dict):
    """A loaded checkpoint: a dict that knows its file, so that a key it lacks is a one-line
    error naming the file (`state["model"]`), never a bare KeyError."""

    def __init__(self, data: Mapping, path: str | os.PathLike):
        super().__init__(data)
        self.path = Path(path)

    def __missing__(self, key):
        raise CnnlabError(f"{self.path}: checkpoint has no '{key}'{' weights' if key == 'model' else ''}")


class _FdWriter(io.RawIOBase):
    """A file descriptor as a raw binary stream whose writes go through os.write."""

    def __init__(self, fd: int):
        super().__init__()
        self._fd = fd

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data) -> int:
        return os.write(self._fd, data)  # may write less: BufferedWriter writes the rest

    def seek(self, offset: int, whence: int = 0) -> int:
        return os.lseek(self._fd, offset, whence)

    def tell(self) -> int:
        return os.lseek(self._fd, 0, os.SEEK_CUR)

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        if not self.closed:
            try:
                os.close(self._fd)
            finally:
                super().close()


def write_atomic(path: str | os.PathLike, fill: Callable[[Any], Any]) -> Path:
    """Replace `path` whole: `fill(f)` writes a binary file object that is a temporary file in the
    same folder, created with the user's umask, then it is fsynced and renamed over `path`.

    Any failure (ENOSPC, a read-only folder) removes the temporary file, leaves `path` as it was
    and raises the original exception."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    # O_EXCL: never write through a link someone left at the name; 0o666 less the umask, as open()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with io.BufferedWriter(_FdWriter(fd), buffer_size=1 << 20) as f:
            fill(f)
            f.flush()
            os.fsync(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_folder(path.parent)
    return path


def fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (where the file system allows it)."""
    with contextlib.suppress(OSError):
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


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
    plain = dict(state) if isinstance(state, Checkpoint) else state  # loadable with weights_only
    try:
        write_atomic(path, lambda f: torch.save(plain, f))
    except (OSError, RuntimeError) as exc:  # torch's zip writer reports failed writes as RuntimeError
        text = getattr(exc, "strerror", None) or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CnnlabError(f"cannot save checkpoint {path}: {text}; the previous file is kept") from exc
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a process killed mid-save
        stale.unlink(missing_ok=True)
    return path


def _sniff(path: Path) -> bytes:
    """The file's first bytes, after the checks every load makes: it exists, is not empty, and
    is a PyTorch (zip or pickle) or safetensors file."""
    if not path.is_file():
        raise CnnlabError(f"no checkpoint at {path}")
    head = _head(path)
    if not head:
        raise CnnlabError(f"{path}: not a cnnlab checkpoint (0 bytes)")
    if not (head.startswith((ZIP_MAGIC, PICKLE_MAGIC)) or _is_safetensors(head)
            or path.suffix == ".safetensors"):
        raise CnnlabError(f"{path}: not a cnnlab checkpoint (not a PyTorch or safetensors file)")
    return head


def check_file(path: str | os.PathLike) -> Path:
    """What `load` would refuse without reading the weights: no file, an empty or foreign one, a
    zip archive cut short (its table of contents is at the end). For commands that load much
    else before the checkpoint."""
    import zipfile

    path = Path(path)
    head = _sniff(path)
    if path.suffix != ".safetensors" and not _is_safetensors(head):
        if head.startswith(ZIP_MAGIC):
            try:
                zipfile.ZipFile(path).close()
            except (zipfile.BadZipFile, OSError, ValueError) as exc:
                raise _corrupt(path, exc) from exc
    return path


def load(path: str | os.PathLike, map_location: Any = "cpu") -> Checkpoint:
    """Load a checkpoint with weights_only=True; refuse anything that needs arbitrary unpickling.

    The result is a Checkpoint (a dict that names its file when a key is missing). An empty,
    foreign, truncated or unreadable file is a one-line CnnlabError naming it."""
    path = Path(path)
    head = _sniff(path)
    if path.suffix == ".safetensors" or _is_safetensors(head):
        return load_safetensors(path, map_location)
    state = _torch_load(path, map_location)
    if not isinstance(state, dict):
        raise CnnlabError(f"{path}: not a cnnlab checkpoint (it holds a {type(state).__name__}, "
                          f"not a dict of weights and state)")
    return Checkpoint(state, path)


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(16)
    except OSError as exc:
        raise CnnlabError(f"cannot read {path}: {os_reason(exc)}") from exc


def _is_safetensors(head: bytes) -> bool:
    """A safetensors file: an 8-byte little-endian header length, then the JSON header."""
    return len(head) > 8 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < 1 << 30


def _torch_load(path: Path, map_location: Any):
    import pickle

    import torch

    check_torch()
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CnnlabError(f"refusing to load {path}: it needs arbitrary unpickling, which could "
                          f"run code ({_unpickling_detail(exc)})") from exc
    except MemoryError:
        raise
    except RuntimeError as exc:
        if "zip archive" not in str(exc) and "PytorchStreamReader" not in str(exc):
            # not the file's fault (a device it names that this machine lacks, ...)
            raise CnnlabError(f"cannot load checkpoint {path}: {_first_line(exc)}") from exc
        raise _corrupt(path, exc) from exc
    except Exception as exc:  # noqa: BLE001 - torch raises all sorts on a damaged file
        raise _corrupt(path, exc) from exc  # an OSError too: the file opened and read above


def _corrupt(path: Path, exc: Exception) -> CnnlabError:
    # the first sentence: torch's zip reader adds a paragraph of advice after it
    what = os_reason(exc) if isinstance(exc, OSError) else _first_line(exc).split(". ")[0]
    return CnnlabError(f"{path}: not a cnnlab checkpoint (truncated or corrupt: {what})")


def _first_line(exc: BaseException, limit: int = 160) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    line = lines[0] if lines else type(exc).__name__
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _unpickling_detail(exc: BaseException) -> str:
    """The line of torch's weights_only message that says what it met (a global, an opcode)."""
    for line in str(exc).splitlines():
        if line.strip().startswith("Unsupported"):
            return line.strip()
    return _first_line(exc)


def fit_weights(module, weights: Any, path: str | os.PathLike, name: str | None = None) -> None:
    """Load `weights` (a state dict) into `module`, strictly. Tensors missing, left over or of
    another shape are one line naming the file, the model and the first keys of each kind."""
    name = name or type(module).__name__
    if not isinstance(weights, Mapping):
        raise CnnlabError(f"{path}: checkpoint's 'model' is a {type(weights).__name__}, not weights")
    try:
        module.load_state_dict(weights)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise CnnlabError(f"{path}: weights do not fit model {name}: "
                          f"{_misfit(module.state_dict(), weights) or _first_line(exc)}") from None


def _misfit(own: Mapping, weights: Mapping) -> str:
    """What differs between a model's state dict and a file's: missing, unexpected and
    misshapen keys, a few of each."""
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shaped = [f"{k} is {_shape(weights[k])} in the file, {_shape(v)} here" for k, v in own.items()
              if k in weights and _shape(weights[k]) != _shape(v)]
    return "; ".join(f"{label}{_few(keys)}" for label, keys in
                     (("missing ", missing), ("unexpected ", unexpected), ("", shaped)) if keys)


def _shape(value) -> str:
    shape = getattr(value, "shape", None)
    if shape is None:
        return type(value).__name__
    return "x".join(map(str, shape)) if len(shape) else "a scalar"


def _few(items: list, n: int = 3) -> str:
    return ", ".join(items[:n]) + (f" ({len(items) - n} more)" if len(items) > n else "")


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


def load_safetensors(path: str | os.PathLike, map_location: Any = "cpu") -> Checkpoint:
    """{"model": tensors, "metadata": {str: str}} of a .safetensors file (no pickle involved)."""
    from safetensors import SafetensorError, safe_open

    device = str(map_location) if map_location is not None else "cpu"
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            names = list(f.keys())  # safe_open has keys(), no __iter__
            state = {"model": {k: f.get_tensor(k) for k in names}, "metadata": f.metadata() or {}}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CnnlabError(f"{path}: not a readable safetensors file ({_first_line(exc)})") from exc
    return Checkpoint(state, path)


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
