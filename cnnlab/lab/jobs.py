"""One sweep job: its folder on disk (its stable name, its status file and job.json, shared by
the training sweep, cnnlab.lab.sweep, and the measurement runner, cnnlab.lab.measures), and
`sweep_job`, the task function Hydra's launcher runs for each training job.

Also how SIGINT (Ctrl-C) and SIGTERM stop a sweep. The process that launched the sweep holds
SweepSignals, each job JobSignals; the first signal writes the sweep folder's stop file, so every
process of the sweep (the launcher's workers too) learns of it:
- a job that is training stops at its next step and saves its checkpoint: its training loop's
  own handler (cnnlab.training.signals.Stopper) takes the signal, or, when the signal reached
  another process or came before training began, JobSignals hands it to that handler; the job is
  marked *interrupted* and `--resume` continues it from its checkpoint;
- no job starts after it, and the sweep ends with SweepInterrupted (exit code 128 + signal);
- a second Ctrl-C stops at once.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from pathlib import Path
from typing import Any, Optional

from cnnlab.errors import UsageError

STATUSES = ("pending", "running", "done", "failed", "diverged", "interrupted")
FINISHED = ("done", "diverged")  # a resumed sweep does not run these again

def job_id(override_dirname: str) -> str:
    """A stable name for a job: the same overrides give the same folder in every sweep."""
    from cnnlab.config.hashing import digest

    return digest(override_dirname)


def _register_resolver() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("cnnlab_job_id"):
        OmegaConf.register_new_resolver("cnnlab_job_id", job_id)


_register_resolver()  # at import, so launcher worker processes that unpickle sweep_job have it


def write_job(job_dir: Path, **fields: Any) -> dict:
    """Update job.json and the one-word status file, atomically."""
    from cnnlab.run import write_text_atomic

    path = job_dir / "job.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(fields)
    write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")
    if "status" in fields:
        write_text_atomic(job_dir / "status", fields["status"] + "\n")
    return data


def read_status(job_dir: Path) -> str:
    path = job_dir / "status"
    return path.read_text().strip() if path.exists() else "pending"


def check_seed(job: list[str]) -> None:
    """The seed= value of a job is an int in [0, 2**32), as compose() would require."""
    for o in job:
        if o.startswith("seed="):
            value = o.split("=", 1)[1]
            try:
                ok = 0 <= int(value) < 2**32
            except ValueError:
                ok = False
            if not ok:
                raise UsageError(f"seed={value} is not allowed: it must be an integer in [0, 2**32)")


# --- one job: Hydra's task function ----------------------------------------------------------------

def sweep_job(cfg) -> float:
    """Hydra's task function for one job. Returns the metric (for sweepers such as Optuna)."""
    from hydra.core.hydra_config import HydraConfig

    started = time.time()
    hc = HydraConfig.get()
    job_dir = Path(hc.runtime.output_dir)
    sweep_dir = job_dir.parent.parent  # hydra.sweep.dir is <sweep>/jobs
    overrides = list(hc.overrides.task)
    # what the sweeper optimises (cnnlab sweep --metric): best_val_acc unless the user chose
    metric = hc.job.env_set.get("CNNLAB_METRIC", None) or "best_val_acc"
    label = " ".join(o for o in overrides if not o.startswith("trainer.progress"))
    before = read_status(job_dir)
    if before in FINISHED:
        done = json.loads((job_dir / "job.json").read_text())
        print(f"[skip] {label}: already {done['status']}", flush=True)
        return float(done.get("metric", math.nan))
    if stop_requested(sweep_dir):  # the sweep is stopping: no job starts
        return _stopped(sweep_dir, stop_requested(sweep_dir))
    write_job(job_dir, overrides=overrides, status="running", started=started, error=None)
    with JobSignals(sweep_dir) as signals:
        value = _run_job(cfg, job_dir, before, label, metric, started)
    return _stopped(sweep_dir, signals.signum) if signals.signum else value


def _stopped(sweep_dir: Path, signum: int) -> float:
    """The sweep stops: raise where the jobs run in the launching process; a launcher's worker
    returns, and its launcher ends the sweep once every worker has stopped."""
    if launched_here(sweep_dir):
        raise SweepInterrupted(signum)
    return math.nan


def _run_job(cfg, job_dir: Path, before: str, label: str, metric: str, started: float) -> float:
    """Train one job and record how it ended in job.json and its status file."""
    from cnnlab.training.signals import Interrupted

    try:
        from cnnlab.config import validate

        validate(cfg)
        summary = _train(cfg, job_dir, before, started)
        # never another score in its place (the test split must not choose unasked): a run
        # without the metric returns nan, which a sweeper such as Optuna counts as a failed trial
        value = float(summary.get(metric) if summary.get(metric) is not None else math.nan)
        write_job(job_dir, status=summary["status"], ended=time.time(), metric=value,
                  overhead_seconds=summary.get("overhead_seconds"))
        print(f"[{summary['status']}] {label}: {metric} {value:.4f} "
              f"({time.time() - started:.1f}s)", flush=True)
        return value
    except Interrupted as exc:  # saved its checkpoint: --resume continues from it
        name = signal.Signals(exc.signum).name
        write_job(job_dir, status="interrupted", ended=time.time(), error=None, signal=name)
        request_stop(job_dir.parent.parent, exc.signum)
        kept = (job_dir / "run" / "checkpoints" / "last.pt").is_file()
        print(f"[interrupted] {label}: {name}; "
              + ("its checkpoint is kept for --resume" if kept else "no checkpoint to resume from"),
              flush=True)
        return math.nan
    except KeyboardInterrupt:
        write_job(job_dir, status="interrupted", ended=time.time())
        raise
    except BaseException as exc:  # isolate the failure: the other jobs go on
        text = str(exc).strip().splitlines()
        error = f"{type(exc).__name__}: {text[-1] if text else ''}"
        if isinstance(exc, MemoryError) or "out of memory" in error.lower():
            error += " (lower trainer.batch_size)"
        write_job(job_dir, status="failed", ended=time.time(), error=error)
        print(f"[failed] {label}: {error}", flush=True)
        return math.nan


def _train(cfg, job_dir: Path, before: str, started: float) -> dict:
    """The job's training run in job_dir/run: continued from its last.pt when an earlier attempt
    was interrupted (or its process died) after saving one; otherwise a fresh run (a failed
    attempt's folder is cleared first)."""
    import shutil

    from cnnlab.training.recipe import train

    run_dir = job_dir / "run"
    if before in ("interrupted", "running") and (run_dir / "checkpoints" / "last.pt").is_file() \
            and (run_dir / "config.yaml").is_file():
        cfg.resume = str(run_dir)
        return train(cfg, run_dir=run_dir, job_started=started)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    return train(cfg, run_dir=run_dir, job_started=started)


# --- stopping a sweep on SIGINT / SIGTERM ---------------------------------------------------------

STOP_FILE = ".stop"  # in the sweep folder while the sweep stops: the signal's number
SIGNALS = (signal.SIGINT, signal.SIGTERM)
_LAUNCHED: set = set()  # sweep folders launched by this process (their jobs may run here)


class SweepInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the sweep: no further job starts; exit code 128 + the signal."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum


def request_stop(sweep_dir: Path, signum: int) -> None:
    """Tell every process of the sweep to stop (the first signal's number wins)."""
    path = Path(sweep_dir) / STOP_FILE
    try:
        if not path.exists():
            path.write_text(f"{int(signum)}\n")
    except OSError:
        pass  # the signal still stops this process's jobs


def stop_requested(sweep_dir: Path) -> Optional[int]:
    """The signal that asked the sweep to stop, or None."""
    try:
        return int((Path(sweep_dir) / STOP_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def launched_here(sweep_dir: Path) -> bool:
    """Whether this process launched the sweep (a job runs in it, not in a launcher's worker)."""
    return Path(sweep_dir).resolve() in _LAUNCHED


class _Handlers:
    """SIGINT/SIGTERM handlers while entered (main thread only; elsewhere nothing changes)."""

    def __init__(self, sweep_dir: Path):
        self.sweep_dir = Path(sweep_dir)
        self.received: Optional[int] = None  # the first signal this process got
        self._old: dict = {}

    def _install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._old[s] = signal.signal(s, self._handle)

    def _restore(self) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()

    def _handle(self, signum, frame) -> None:
        if self.received == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: stop at once
        if self.received is None:
            self.received = signum
            request_stop(self.sweep_dir, signum)
        self._after(signum)

    def _after(self, signum: int) -> None:
        pass


class SweepSignals(_Handlers):
    """Held by the process that launches a sweep. `jobs_here`: its jobs run in this process (the
    basic launcher, measurements), so a signal between two jobs stops the sweep at once (while a
    job runs, its JobSignals holds the signals); otherwise workers run them and the sweep ends
    when they have stopped."""

    def __init__(self, sweep_dir: Path, jobs_here: bool):
        super().__init__(sweep_dir)
        self.jobs_here = jobs_here

    @property
    def signum(self) -> Optional[int]:
        return self.received or stop_requested(self.sweep_dir)

    def __enter__(self) -> "SweepSignals":
        (self.sweep_dir / STOP_FILE).unlink(missing_ok=True)  # left by a sweep that stopped
        _LAUNCHED.add(self.sweep_dir.resolve())
        self._install()
        return self

    def __exit__(self, *exc) -> None:
        self._restore()
        _LAUNCHED.discard(self.sweep_dir.resolve())
        (self.sweep_dir / STOP_FILE).unlink(missing_ok=True)

    def _after(self, signum: int) -> None:
        if self.jobs_here:
            raise SweepInterrupted(signum)


class JobSignals(_Handlers):
    """Held while one sweep job runs, wherever it runs. A signal asks the sweep to stop; a watcher
    thread hands a stop (this process's signal or the sweep's stop file) to the training loop's
    handler as soon as one is installed, so the run saves its checkpoint at its next step. A job
    that is not training then (its data loading, its test pass) finishes first."""

    POLL = 0.1  # seconds between looks at the stop file

    def __init__(self, sweep_dir: Path):
        super().__init__(sweep_dir)
        self._done = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="cnnlab-job-stop", daemon=True)

    @property
    def signum(self) -> Optional[int]:
        return self.received or stop_requested(self.sweep_dir)

    def __enter__(self) -> "JobSignals":
        self._install()
        self._watcher.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._watcher.join()
        if launched_here(self.sweep_dir):
            self._restore()
        elif self._old:  # a launcher's worker, idle until its next job: a Ctrl-C meant for the
            # sweep (the terminal sends it to every process) must not kill it, or the launcher
            # would kill the workers still saving their checkpoints
            for s in self._old:
                signal.signal(s, signal.SIG_IGN)
            self._old.clear()

    def _watch(self) -> None:
        while not self._done.wait(self.POLL):
            signum = self.signum
            stopper = _training_stopper() if signum else None
            if stopper is not None and not stopper.requested:
                stopper.signum = signum  # what its own handler would have recorded


def _training_stopper():
    """The training loop's signal handler (cnnlab.training.signals.Stopper) if one is installed."""
    from cnnlab.training.signals import Stopper

    owner = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    return owner if isinstance(owner, Stopper) else None
