"""How many intra-op threads a CPU run uses: `trainer.threads=auto` (the default).

torch's own default is one thread per core, and its OpenMP threads spin while they wait for each
other. On a machine that other work shares (a laptop with a browser open, a cluster node running
other jobs, a sweep's parallel jobs) a spinning thread that loses its core holds every other one
up: cnnlab measured the default job 6.5x slower with 2 threads than with 1 on a loaded 2-core
machine, while on the same machine idle 2 threads were about 17% faster (issue 20; measure yours
with `cnnlab bench-train --vs-threads`). So auto takes

    threads = max(1, min(CPUs this process may use // processes sharing them,
                         CPUs this process may use - CPUs busy with other work at the start))

where the usable CPUs are the affinity mask cut to the cgroup's CPU quota (a container's or a
Slurm job's share), the processes sharing them are the parallel jobs of a sweep or the local ranks
of a data-parallel run, and the busy CPUs are the runnable tasks of others (/proc/stat's
procs_running, sampled a few times). On a busy 2-core machine that is one thread, which never
waits for another. When auto still runs several threads on CPUs it shares, OpenMP is told to
yield rather than spin (OMP_WAIT_POLICY=passive): measured on 2 cores with one core taken by a
busy process, a step of the default job took 714 ms with 2 spinning threads, 27 ms with 2 passive
ones and 5 ms with one thread; on the idle machine passive threads cost 7x (25 ms vs 3.6 ms), so
auto does not ask for passive threads where it need not. The wait policy takes effect only when
set before torch is imported: `prepare()` does that for the commands that train. No torch import
here.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

AUTO = "auto"
SAMPLES, SAMPLE_GAP = 5, 0.02  # procs_running samples, seconds apart: a short median
JOBS_ENV = "CNNLAB_PARALLEL_JOBS"  # processes started side by side by a sweep (their count)


@dataclass
class ThreadPlan:
    threads: int
    cpus: int  # CPUs this process may use (affinity, cgroup quota)
    jobs: int  # processes sharing them
    busy: float  # CPUs busy with other work at the start
    passive: bool  # OpenMP asked to yield instead of spin
    why: str

    def describe(self) -> str:
        return f"{self.threads} thread(s): {self.why}"


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask, cut to the cgroup's CPU quota."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_quota()
    return max(1, min(cpus, math.ceil(quota))) if quota else max(1, cpus)


def cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> Optional[float]:
    """CPUs' worth of time the cgroup may use (cgroup v2 cpu.max or v1 cfs quota), None: no limit."""
    try:
        text = (root / "cpu.max").read_text().split()
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
        return None
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def busy_cpus(samples: int = SAMPLES, gap: float = SAMPLE_GAP, stat: Path = Path("/proc/stat")) -> float:
    """CPUs busy with other work now: the median of /proc/stat's procs_running (the tasks on a CPU
    or waiting for one, machine-wide) less this process's own. When this process may use only part
    of the machine, others are taken as spread evenly over all of it. 0 where there is no /proc."""
    counts = []
    for i in range(samples):
        if i:
            time.sleep(gap)
        try:
            for line in stat.read_text().splitlines():
                if line.startswith("procs_running"):
                    counts.append(int(line.split()[1]) - 1)
                    break
        except (OSError, ValueError):
            return 0.0
    if not counts:
        return 0.0
    others = max(0.0, float(statistics.median(counts)))
    machine = os.cpu_count() or 1
    return others * usable_cpus() / machine if machine > usable_cpus() else others


def parallel_jobs(given: Optional[int] = None) -> int:
    """Processes sharing this machine's CPUs that cnnlab started: `given`, else $CNNLAB_PARALLEL_JOBS."""
    if given:
        return max(1, int(given))
    try:
        return max(1, int(os.environ.get(JOBS_ENV, "1")))
    except ValueError:
        return 1


_BUSY_AT_START: Optional[float] = None  # sampled once by prepare(), before torch's threads exist


def plan(setting: Any = AUTO, jobs: Optional[int] = None, busy: Optional[float] = None) -> ThreadPlan:
    """The thread count for trainer.threads = `setting`: auto (see the module docstring), a
    number (as given), or 0 (torch's default: one per usable CPU)."""
    cpus, jobs = usable_cpus(), parallel_jobs(jobs)
    if setting != AUTO:
        n = int(setting) or cpus
        return ThreadPlan(n, cpus, jobs, float("nan"), _passive_set(), f"trainer.threads={setting}")
    if busy is None:
        busy = _BUSY_AT_START if _BUSY_AT_START is not None else busy_cpus()
    share = max(1, cpus // jobs)
    free = max(1, int(round(cpus - busy)))
    threads = max(1, min(share, free))
    why = (f"{cpus} usable CPU(s), {jobs} process(es) sharing them, {busy:.1f} busy with other work "
           f"at the start")
    return ThreadPlan(threads, cpus, jobs, busy, _passive_set(), why)


def shares(jobs: int, busy: float, cpus: int) -> bool:
    """Whether a run shares its CPUs: other processes of cnnlab's, other work, or a cgroup quota
    or affinity mask smaller than the machine (OpenMP threads should then yield, not spin)."""
    return jobs > 1 or busy >= 0.5 or cpus < (os.cpu_count() or cpus)


def prepare(jobs: Optional[int] = None) -> Optional[ThreadPlan]:
    """Before torch is imported by a command that trains: sample how busy the machine is, and
    where the run shares its CPUs set OMP_WAIT_POLICY=passive (unless the user set it). Returns
    the auto plan, or None when torch is already imported (its OpenMP has read its settings)."""
    import sys

    global _BUSY_AT_START
    if "torch" in sys.modules:
        return None
    _BUSY_AT_START = busy_cpus()
    cpus, n = usable_cpus(), parallel_jobs(jobs)
    chosen = plan(AUTO, n, _BUSY_AT_START)
    if chosen.threads > 1 and shares(n, _BUSY_AT_START, cpus) and "OMP_WAIT_POLICY" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "passive"
        chosen.passive = True
    return chosen


def _passive_set() -> bool:
    return os.environ.get("OMP_WAIT_POLICY", "").strip().lower() == "passive"
