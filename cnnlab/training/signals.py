"""Stopping a run cleanly on SIGINT (Ctrl-C) and SIGTERM (what Slurm and most schedulers send
before preemption).

The handler only raises a flag; the engine looks at it after every optimizer step, saves a
checkpoint with the position in the epoch and raises `Interrupted`, whose exit code is the shell's
128 + signal number (130 for SIGINT, 143 for SIGTERM). A second Ctrl-C stops at once.
"""

from __future__ import annotations

import signal
import threading
from typing import Optional

from cnnlab.errors import CnnlabError


class Interrupted(CnnlabError):
    """The run stopped on a signal after saving its state; the message says how to resume."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


class Stopper:
    """Installs SIGINT/SIGTERM handlers while entered; `signum` is set once a signal arrived."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: Optional[int] = None
        self._old: dict = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    def _handle(self, signum, frame):
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: the user does not want to wait
        self.signum = signum

    def __enter__(self) -> "Stopper":
        # signal handlers can only be set from the main thread (e.g. not inside a joblib worker
        # thread); elsewhere the run keeps the default behaviour
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()
