"""A sweep job's folder on disk: its stable name, its status file and job.json. Shared by the
training sweep (cnnlab.lab.sweep) and the measurement runner (cnnlab.lab.measures)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
