"""`cnnlab bench-sweep`: what a sweep costs beyond its jobs, and what joblib's parallelism buys.

Runs the same grid of single-threaded jobs twice in one go, with Hydra's basic (serial) launcher
and with the joblib launcher (n_jobs=2), and reports:
- per-job overhead: from the end of one job to the first training batch of the next, less that
  job's own data and model set-up (Hydra's per-job work plus cnnlab's);
- the joblib wall time as a fraction of the serial wall time.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

from cnnlab.errors import UsageError


def _run(overrides: list[str], outputs: Path) -> tuple[float, Path]:
    from cnnlab.lab import sweep as sw

    p = sw.plan(overrides, outputs)
    start = time.perf_counter()
    sw.launch(p)
    return time.perf_counter() - start, p.sweep_dir


def _jobs(sweep_dir: Path) -> list[dict]:
    jobs = []
    for d in sorted(p for p in (sweep_dir / "jobs").iterdir() if p.is_dir()):
        info = json.loads((d / "job.json").read_text())
        summary = json.loads((d / "run" / "summary.json").read_text())
        jobs.append({**info, **{k: summary[k] for k in ("setup_seconds", "overhead_seconds")}})
    return sorted(jobs, key=lambda j: j["started"])


def per_job_overheads(jobs: list[dict]) -> list[float]:
    """Serial jobs: the gap before each job (after the first) plus its own start-up overhead."""
    out = []
    for prev, job in zip(jobs, jobs[1:]):
        out.append(job["started"] - prev["ended"] + job["overhead_seconds"])
    return out


# what each job trains (the seeds repeat it); bench-sweep's tests pass a smaller one
BASE = ("data=shapes", "data.num_train=2000", "data.num_test=500", "model=resnet8")


def run(jobs: int = 8, epochs: int = 5, n_jobs: int = 2, echo=print, base=BASE) -> dict:
    """Time the grid (`base` x seeds 0..jobs-1, one thread each) under the serial launcher and
    under joblib with `n_jobs` processes; returns the wall times, their ratio and the serial
    per-job overheads (seconds)."""
    import importlib.util

    if jobs < 2:
        raise UsageError("--jobs must be at least 2")
    if epochs < 1:
        raise UsageError("--epochs must be at least 1")
    if n_jobs < 1:
        raise UsageError("--n-jobs must be at least 1")
    if importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is None:
        raise UsageError("bench-sweep needs the joblib launcher: pip install -e '.[joblib]'")
    grid = [*base, f"trainer.epochs={epochs}", "trainer.threads=1", "trainer.checkpoints=false",
            "seed=" + ",".join(str(i) for i in range(jobs))]
    with tempfile.TemporaryDirectory(prefix="cnnlab-bench-sweep-") as tmp:
        outputs = Path(tmp)
        echo(f"{jobs} single-threaded jobs ({' '.join(grid[:-1])}), serial then joblib n_jobs={n_jobs}")
        serial_wall, serial_dir = _run(grid, outputs)
        parallel_wall, _ = _run(grid + ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={n_jobs}"],
                                outputs)
        overheads = per_job_overheads(_jobs(serial_dir))
    result = {
        "jobs": jobs,
        "serial_seconds": round(serial_wall, 2),
        "joblib_seconds": round(parallel_wall, 2),
        "joblib_over_serial": round(parallel_wall / serial_wall, 3),
        "overhead_median_seconds": round(statistics.median(overheads), 3),
        "overhead_max_seconds": round(max(overheads), 3),
    }
    echo(f"per-job overhead (serial launcher): median {result['overhead_median_seconds']:.3f} s, "
         f"max {result['overhead_max_seconds']:.3f} s (target: at most 3 s)")
    echo(f"wall time: serial {serial_wall:.1f} s, joblib n_jobs={n_jobs} {parallel_wall:.1f} s -> "
         f"{result['joblib_over_serial']:.3f}x serial (target: at most 0.6x)")
    return result
