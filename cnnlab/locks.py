"""One writer at a time for a run or a sweep folder.

Whatever writes to a run folder (a training run, a resumed one) or a sweep folder (a sweep, a
resumed sweep) holds `<folder>/.lock` (a `filelock` lock: the operating system drops it when the
process ends, however it ends) for as long as it writes. The holder's pid, host and start time go
to the sidecar `<folder>/.lock.owner`, so a second writer's error names who is in the way:

    outputs/runs/20261130-160200-ab12cd/ is in use by pid 1234 on host x (since 16:02:00); wait
    for it or remove outputs/runs/20261130-160200-ab12cd/.lock if that process is gone

The lock is not re-entrant across objects: a second FolderLock on the same folder fails even in
the process (or thread) that holds the first.
"""

from __future__ import annotations

import gc
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Optional

from cnnlab.errors import CnnlabError

LOCK_NAME = ".lock"
OWNER_NAME = ".lock.owner"


class FolderInUse(CnnlabError):
    """Another process (or another writer in this one) holds the folder's lock."""


class FolderLock:
    """The lock of one folder; `what` names the folder in messages ("run folder", "sweep folder")."""

    def __init__(self, folder: str | os.PathLike, what: str = "folder"):
        from filelock import FileLock

        self.folder = Path(folder)
        self.what = what
        self.path = self.folder / LOCK_NAME
        # thread_local=False: the lock belongs to the object, whichever thread releases it
        self._lock = FileLock(str(self.path), timeout=0, thread_local=False)

    @property
    def held(self) -> bool:
        return self._lock.is_locked

    def acquire(self) -> "FolderLock":
        """Take the lock now or fail with FolderInUse naming the holder (never waits)."""
        from filelock import Timeout

        if self.held:
            return self
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            if not self._stale_here():
                raise FolderInUse(in_use_message(self.folder)) from None
        except OSError as exc:
            raise CnnlabError(f"cannot lock {self.what} {self.folder}: {exc.strerror or exc}") from exc
        try:
            _write_owner(self.folder / OWNER_NAME)
        except OSError:
            pass  # the lock holds without its sidecar; a rival's message then names no pid
        return self

    def _stale_here(self) -> bool:
        """Whether the holder was an object of this process that nothing uses any more (kept
        only by a reference cycle, such as an exception's traceback): collected, its lock goes
        and this one is taken. False if the lock is still held."""
        from filelock import Timeout

        if (owner(self.folder) or {}).get("pid") != os.getpid():
            return False
        gc.collect()
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            return False
        return True

    def release(self) -> None:
        if not self.held:
            return
        # the sidecar goes first: once the lock is free a new holder may write its own
        try:
            (self.folder / OWNER_NAME).unlink()
        except OSError:
            pass
        self._lock.release()

    def __del__(self) -> None:  # a holder that is dropped (or collected) lets go too
        try:
            self.release()
        except Exception:  # noqa: BLE001 - at interpreter exit the modules may be gone
            pass

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def owner(folder: str | os.PathLike) -> Optional[dict]:
    """What the sidecar says about the lock's holder ({pid, host, since, command}), or None."""
    try:
        data = json.loads((Path(folder) / OWNER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def in_use(folder: str | os.PathLike) -> bool:
    """Whether some writer holds the folder's lock now (a probe: takes and drops it if free)."""
    from filelock import FileLock, Timeout

    path = Path(folder) / LOCK_NAME
    if not path.exists():
        return False
    probe = FileLock(str(path), timeout=0, thread_local=False)
    try:
        probe.acquire(timeout=0)
    except Timeout:
        return True
    except OSError:
        return False
    probe.release()
    return False


def in_use_message(folder: str | os.PathLike) -> str:
    """The one line a second writer gets."""
    folder = Path(folder)
    info = owner(folder) or {}
    if info.get("pid"):
        when = info.get("since", "")
        if info.get("date") and info["date"] != time.strftime("%Y-%m-%d"):
            when = f"{info['date']} {when}".strip()
        since = f" (since {when})" if when else ""
        who = f"pid {info['pid']} on host {info.get('host', '?')}{since}"
    else:
        who = "another process"
    return (f"{folder}/ is in use by {who}; wait for it or remove {folder / LOCK_NAME} "
            f"if that process is gone")


def _write_owner(path: Path) -> None:
    data = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%H:%M:%S"),
            "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv)[:200]}
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data) + "\n", encoding="utf-8")
    os.replace(tmp, path)
