"""`cnnlab sweep`: a grid of training jobs through Hydra's own multirun.

Hydra expands the overrides and hands each job to its launcher (basic, joblib, submitit) or
sweeper (grid, Optuna), so those plugins work unchanged by override. Each job runs
`cnnlab.lab.jobs.sweep_job`, which never raises for a failing job: it writes its status and error
and the others go on. SIGINT/SIGTERM stop the whole sweep instead (cnnlab.lab.jobs): the training
job keeps its checkpoint and is marked interrupted, no job starts after it, and `--resume`
continues it from that checkpoint.

One writer at a time: a new sweep's folder is created exclusively (a sweep started in the same
second gets `-2`), and whatever runs or resumes a sweep holds the folder's lock (cnnlab.locks)
while it writes there (`opened`).

    outputs/sweeps/<name>-<time>/
      sweep.yaml            what was asked (experiment, scale, overrides): --resume reads it
      jobs/<hash>/          one per job, named by a stable hash of its overrides
        status              pending | running | done | failed | diverged | interrupted
        job.json            overrides, status, error, timings, metric
        run/                a normal run folder (config.yaml, metrics.csv, summary.json, ...)
      results.csv summary.csv verdict.json report.md plots/   written by cnnlab.lab.report
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from cnnlab.errors import CnnlabError, UsageError
from cnnlab.lab.jobs import FINISHED, SweepInterrupted, SweepSignals, check_seed, read_status, sweep_job

# hydra/launcher or hydra/sweeper choice -> (plugin module, cnnlab extra that installs it)
PLUGINS = {
    ("launcher", "joblib"): ("hydra_plugins.hydra_joblib_launcher", "joblib"),
    ("launcher", "submitit_slurm"): ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    ("launcher", "submitit_local"): ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    ("sweeper", "optuna"): ("hydra_plugins.hydra_optuna_sweeper", "optuna"),
}


@dataclass
class SweepPlan:
    name: str
    sweep_dir: Path
    task_overrides: list[str]
    hydra_overrides: list[str]
    experiment: Optional[str] = None  # path of the experiment file
    scale: str = "quick"
    metric: str = "test_acc"  # what the tables and the verdict show
    objective: str = "best_val_acc"  # what each job returns to the sweeper (Optuna) to optimise
    direction: str = "max"  # whether the sweeper maximises or minimises `objective`
    jobs: list = field(default_factory=list)  # expanded grid, when the sweeper is the basic one
    measure: Optional[str] = None  # a measurement experiment (cnnlab.lab.measures) instead of training
    measure_args: dict = field(default_factory=dict)
    untestable: str = ""  # why this machine cannot test the experiment (its `requires:`): no job runs
    tuning: str = ""  # how per-arm tuning (experiment `tune:`) multiplies the jobs, printed at launch
    new: bool = False  # sweep_dir is still to be created (`opened` creates it)
    lock: Any = None  # the folder's cnnlab.locks.FolderLock while `opened` holds it


# summary.json numbers a sweep may optimise (--metric); the validation ones are the default
OBJECTIVES = ("best_val_acc", "val_acc", "train_acc", "train_loss", "running_acc", "running_loss",
              "test_acc", "test_top5", "test_loss", "train_seconds", "wall_seconds",
              "images_per_sec", "test_ms_per_image", "peak_mem_mb", "params", "epochs_run",
              "best_epoch")
DEFAULT_OBJECTIVE = "best_val_acc"
OPTUNA_DIRECTION = {"max": "maximize", "min": "minimize"}


def default_direction(metric: str) -> str:
    """max for accuracies and speeds, min for losses, times, memory and sizes."""
    lower = ("loss", "seconds", "_ms_", "mem", "params", "epoch")
    return "min" if any(k in f"_{metric}_" for k in lower) else "max"


def set_objective(p: "SweepPlan", metric: Optional[str], direction: Optional[str],
                  saved: Optional[dict] = None) -> None:
    """The plan's objective and direction: --metric / --direction, else what a resumed sweep
    saved, else best_val_acc (the validation split) and its natural direction; a
    hydra.sweeper.direction override must agree with --direction. An explicit --metric on an
    ad-hoc sweep is also what its tables show."""
    saved = saved or {}
    if metric is not None and metric not in OBJECTIVES:
        raise UsageError(f"unknown --metric '{metric}'; choose from: {', '.join(OBJECTIVES)}")
    if direction is not None and direction not in OPTUNA_DIRECTION:
        raise UsageError(f"--direction takes max or min, not '{direction}'")
    p.objective = metric or saved.get("objective") or DEFAULT_OBJECTIVE
    p.direction = _pick_direction(p, direction, None if metric else saved.get("direction"))
    if metric is not None and not p.experiment:
        p.metric = metric


def _pick_direction(p: "SweepPlan", direction: Optional[str], saved: Optional[str]) -> str:
    """--direction, else a hydra.sweeper.direction override, else the saved one, else the
    objective's natural one; --direction and the override must agree."""
    given = _hydra_direction(p.hydra_overrides)
    if direction is not None and given is not None and given != direction:
        raise UsageError(f"--direction {direction} and hydra.sweeper.direction="
                         f"{OPTUNA_DIRECTION[given]} disagree; give one of them")
    return direction or given or saved or default_direction(p.objective)


def _hydra_direction(hydra_overrides: list[str]) -> Optional[str]:
    """max/min from a hydra.sweeper.direction override (None: there is none)."""
    for o in hydra_overrides:
        key, _, value = o.lstrip("+").partition("=")
        if key == "hydra.sweeper.direction":
            value = value.strip().strip("'\"").lower()
            for short, long in OPTUNA_DIRECTION.items():
                if value in (short, long, f"studydirection.{long}"):
                    return short
            raise UsageError(f"hydra.sweeper.direction={value}: use maximize or minimize")
    return None


def objective_warning(p: "SweepPlan") -> str:
    """One line when the test split chooses (the objective is a test_ score); else ''."""
    if p.objective.startswith("test_") and not p.measure:
        return (f"warning: --metric {p.objective}: the test split now chooses the settings, so "
                f"the test scores of the chosen ones are no longer unbiased estimates")
    return ""


def pending_jobs(p: "SweepPlan") -> Optional[int]:
    """How many of a resumed grid's jobs are not finished (done or diverged); None when the
    sweeper chooses the jobs (Optuna) and the count is not known in advance."""
    if not p.jobs:
        return None
    folders = [j for j in (p.sweep_dir / "jobs").glob("*") if (j / "job.json").is_file()] \
        if (p.sweep_dir / "jobs").is_dir() else []
    finished = sum(read_status(j) in FINISHED for j in folders)
    return max(len(p.jobs) - finished, 0)


def split_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """(task overrides, hydra overrides): hydra/... and hydra.... go to Hydra itself."""
    hydra = [o for o in overrides if o.lstrip("+~").startswith(("hydra/", "hydra."))]
    return [o for o in overrides if o not in hydra], hydra


def check_plugins(hydra_overrides: list[str]) -> bool:
    """Name the extra to install when a launcher/sweeper plugin is missing. True: basic sweeper."""
    import importlib.util

    basic = True
    for o in hydra_overrides:
        key, _, value = o.lstrip("+").partition("=")
        if key not in ("hydra/launcher", "hydra/sweeper"):
            continue
        kind = key.split("/")[1]
        if kind == "sweeper" and value != "basic":
            basic = False
        plugin = PLUGINS.get((kind, value))
        if plugin and importlib.util.find_spec(plugin[0]) is None:
            raise UsageError(f"hydra/{kind}={value} needs the '{plugin[1]}' extra: "
                             f"pip install -e '.[{plugin[1]}]'")
    return basic


def validate_jobs(task_overrides: list[str]) -> list[list[str]]:
    """Compose every job of the grid now, so a bad cell fails before any job starts."""
    from cnnlab.config import compose
    from cnnlab.config.compose import checking_cells
    from cnnlab.lab.experiment import expand_grid

    from cnnlab.models import check_options

    jobs = expand_grid(task_overrides)
    checked = set()
    with checking_cells():  # a pretraining config the cells share is composed once
        for job in jobs:
            # a cell composes alike under every seed: compose it once, check the other seeds' values
            cell = tuple(o for o in job if not o.startswith("seed="))
            try:
                if cell in checked:
                    check_seed(job)
                    continue
                checked.add(cell)
                cfg = compose(job)
                check_options(cfg.model.name, {k: v for k, v in cfg.model.items() if k != "name"})
            except UsageError as exc:
                raise UsageError(f"job [{' '.join(job)}]: {exc}") from exc
    return jobs


def missing_data(jobs: list[list[str]]) -> list[str]:
    """Why the datasets these jobs read are not on this machine (one message each); [] if all are."""
    from cnnlab.config import compose
    from cnnlab.data import missing

    first: dict[str, list[str]] = {}  # one job per data= choice (the default if none names one)
    for job in jobs:
        choice = next((o for o in job if o.startswith("data=")), "data=")
        first.setdefault(choice, job)
    out = []
    for job in first.values():
        why = missing(compose(job).data)
        if why and why not in out:
            out.append(why)
    return out


def sweeps_root(outputs: str | Path) -> Path:
    return Path(outputs) / "sweeps"


def latest_sweep(outputs: str | Path, name: str) -> Optional[Path]:
    found = sorted(p for p in sweeps_root(outputs).glob(f"{name}-*") if (p / "sweep.yaml").is_file())
    return found[-1] if found else None


def plan(overrides: list[str], outputs: str | Path, experiment=None, scale: str = "quick",
         resume: bool = False, resume_dir: Optional[Path] = None, metric: Optional[str] = None,
         direction: Optional[str] = None) -> SweepPlan:
    """Work out what to run; every error surfaces here, before any job starts. metric,
    direction: what the sweeper optimises (--metric, --direction; default best_val_acc, max)."""
    task, hydra = split_overrides(overrides)
    if resume:
        p = _resumed_plan(task, hydra, outputs, experiment, resume_dir)
        set_objective(p, metric, direction, _saved(p.sweep_dir))
    else:
        p = _new_plan(task, hydra, outputs, experiment, scale)
        set_objective(p, metric, direction)
    if experiment is not None:  # its `requires:` unmet here: the verdict is "not testable here"
        from cnnlab.lab.experiment import unmet_requirement

        p.untestable = unmet_requirement(experiment) or ""
    if p.measure:
        from cnnlab.lab import measures
        from cnnlab.lab.experiment import expand_grid

        if p.hydra_overrides:
            raise UsageError(f"measurement experiments run their jobs one at a time in this process; "
                             f"{' '.join(p.hydra_overrides)} does not apply")
        p.jobs = measures.validate(p.measure, expand_grid(p.task_overrides))
    elif check_plugins(p.hydra_overrides):
        p.jobs = validate_jobs(p.task_overrides)
    if experiment is not None and not resume:
        from cnnlab.lab.tuning import describe

        p.tuning = describe(experiment, scale, len(p.jobs))
    return p


def _resumed_plan(task: list[str], hydra: list[str], outputs: str | Path, experiment,
                  resume_dir: Optional[Path]) -> SweepPlan:
    """The plan a sweep folder's sweep.yaml saved (the latest of the experiment's, if no folder
    is given); only hydra/... overrides may be added to it."""
    from omegaconf import OmegaConf

    sweep_dir = resume_dir or (latest_sweep(outputs, experiment.name if experiment else "adhoc"))
    if sweep_dir is None or not (Path(sweep_dir) / "sweep.yaml").is_file():
        raise UsageError(f"nothing to resume: no sweep folder"
                         f"{' of ' + experiment.name if experiment else ''} under {sweeps_root(outputs)}")
    if task:
        raise UsageError("a resumed sweep keeps its own overrides; only hydra/... overrides may be added")
    saved = OmegaConf.to_container(OmegaConf.load(Path(sweep_dir) / "sweep.yaml"))
    _check_saved(Path(sweep_dir) / "sweep.yaml", list(saved["task_overrides"]),
                 list(saved["hydra_overrides"]))
    return SweepPlan(name=saved["name"], sweep_dir=Path(sweep_dir), task_overrides=saved["task_overrides"],
                     hydra_overrides=list(saved["hydra_overrides"]) + hydra,
                     experiment=saved.get("experiment"), scale=saved.get("scale", "quick"),
                     metric=saved.get("metric", "test_acc"), measure=saved.get("measure"),
                     measure_args=dict(saved.get("measure_args") or {}))


def _saved(sweep_dir: Path) -> dict:
    from omegaconf import OmegaConf

    return dict(OmegaConf.to_container(OmegaConf.load(Path(sweep_dir) / "sweep.yaml")))


def _check_saved(path: Path, task: list[str], hydra: list[str]) -> None:
    """A sweep.yaml is data too (a shared sweep folder may be resumed): no `_target_`, and of
    Hydra's own config only the launcher and sweeper (what `cnnlab sweep` documents)."""
    for o in task + hydra:
        key = str(o).lstrip("+~").partition("=")[0]
        hydra_ok = key in ("hydra/launcher", "hydra/sweeper") or key.startswith(("hydra.launcher.",
                                                                                "hydra.sweeper."))
        if "_target_" in str(o).lower() or (o in task and split_overrides([o])[1]) or \
                (o in hydra and not hydra_ok):
            raise UsageError(f"{path}: override '{o}' is not allowed in a saved sweep (only config "
                             f"keys, hydra/launcher and hydra/sweeper); pass it on the command line")


def _new_plan(task: list[str], hydra: list[str], outputs: str | Path, experiment, scale: str) -> SweepPlan:
    """A new sweep: the experiment's overrides at `scale` (then `task`), or ad-hoc overrides."""
    from cnnlab.config import expand_aug_lists

    if experiment is not None:
        from cnnlab.lab.experiment import sweep_overrides

        task = sweep_overrides(experiment, scale) + task
        name, metric = experiment.name, experiment.metric
    else:
        if not task:
            raise UsageError("give an experiment file or overrides with comma-separated values "
                             "(e.g. model=lenet5,resnet8 seed=0,1,2)")
        name, metric = "adhoc", "test_acc"
    task = expand_aug_lists(task)
    measure = getattr(experiment, "measure", None)
    if not measure and not any(o.startswith("trainer.progress=") for o in task):
        task = ["trainer.progress=none", *task]
    return SweepPlan(name=name, sweep_dir=_new_sweep_dir(outputs, name), new=True, task_overrides=task,
                     hydra_overrides=hydra,
                     experiment=str(getattr(experiment, "path", "")) or (experiment.name if experiment else None),
                     scale=scale, metric=metric, measure=measure,
                     measure_args=dict(getattr(experiment, "measure_args", None) or {}))


def _new_sweep_dir(outputs: str | Path, name: str) -> Path:
    """sweeps/<name>-<time>: where a new sweep goes (`opened` creates it, or -2, -3, ... if that
    name is taken by then)."""
    from cnnlab.run import ensure_writable

    return ensure_writable(sweeps_root(outputs)) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _create_sweep_dir(planned: Path) -> Path:
    """Create `planned`, or `planned`-2, -3, ... : exclusively, so that two sweeps started in the
    same second never share a folder."""
    planned.parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        folder = planned if n == 1 else planned.with_name(f"{planned.name}-{n}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise CnnlabError(f"cannot create a new sweep folder next to {planned}")


@contextmanager
def opened(p: SweepPlan):
    """The sweep folder, locked for this process while the block writes there: a new sweep's
    folder is created here; a resumed one must not be in use (cnnlab.locks.FolderInUse names
    the holder). Re-entered (launch inside the command's block), it holds the lock once."""
    from cnnlab.locks import FolderLock

    if p.lock is not None and p.lock.held:
        yield p.sweep_dir
        return
    created = p.new
    if p.new:
        p.sweep_dir, p.new = _create_sweep_dir(p.sweep_dir), False
    p.lock = FolderLock(p.sweep_dir, "sweep folder").acquire()
    try:
        yield p.sweep_dir
    except Exception:
        if created and not _any_job_started(p.sweep_dir):  # a failed launch leaves no empty folder
            import shutil

            p.lock.release()
            shutil.rmtree(p.sweep_dir, ignore_errors=True)
        raise
    finally:
        if p.lock is not None:
            p.lock.release()
        p.lock = None


def _any_job_started(sweep_dir: Path) -> bool:
    """Whether any job of the sweep wrote its job.json (a job folder with something to keep)."""
    jobs = Path(sweep_dir) / "jobs"
    return jobs.is_dir() and any((j / "job.json").exists() for j in jobs.iterdir())


def resume_command(p: SweepPlan) -> str:
    """The command that continues this sweep."""
    import shlex

    return f"cnnlab sweep {shlex.quote(str(p.sweep_dir))} --resume"


def plan_targets(targets: list[str], outputs: str | Path, scale: str = "quick",
                 resume: bool = False, metric: Optional[str] = None,
                 direction: Optional[str] = None) -> tuple[SweepPlan, Any]:
    """`cnnlab sweep`'s arguments -> (plan, experiment spec or None). The first target, unless it
    is an override, is an experiment file or name (with `resume`, also a sweep folder); an
    `outputs=` override moves the sweeps folder."""
    from cnnlab.lab import experiment as exp

    targets = list(targets)
    spec, resume_dir = None, None
    if targets and "=" not in targets[0]:
        first = Path(targets[0])
        if resume and (first / "sweep.yaml").is_file():
            resume_dir = first
        else:
            spec = exp.load(first)
            spec.path = str(first)
        targets = targets[1:]
    for o in targets:
        if o.startswith("outputs="):
            outputs = Path(o.split("=", 1)[1])
    p = plan(targets, outputs, experiment=spec, scale=scale, resume=resume, resume_dir=resume_dir,
             metric=metric, direction=direction)
    if spec is None and p.experiment and Path(p.experiment).suffix == ".yaml":
        spec = exp.load(p.experiment)  # a resumed experiment sweep: its rules make the verdict
    return p, spec


def save_plan(p: SweepPlan) -> None:
    from omegaconf import OmegaConf

    from cnnlab.machine import machine_info

    from cnnlab.run import write_text_atomic

    data = {"name": p.name, "experiment": p.experiment, "scale": p.scale, "metric": p.metric,
            "objective": p.objective, "direction": p.direction,
            "task_overrides": p.task_overrides, "hydra_overrides": p.hydra_overrides,
            **({"measure": p.measure, "measure_args": p.measure_args} if p.measure else {}),
            **({"untestable": p.untestable} if p.untestable else {}),
            "machine": machine_info(),
            "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    if not (p.sweep_dir / "sweep.yaml").exists():
        write_text_atomic(p.sweep_dir / "sweep.yaml", OmegaConf.to_yaml(OmegaConf.create(data)))


def launch(p: SweepPlan) -> None:
    """Run the plan through Hydra's multirun (its sweeper and launcher), holding the sweep
    folder's lock. SIGINT/SIGTERM end it with SweepInterrupted once the running jobs have saved
    their state (cnnlab.lab.jobs)."""
    with opened(p):
        save_plan(p)
        if p.untestable:  # the report's verdict says why; no job runs
            (p.sweep_dir / "jobs").mkdir(exist_ok=True)
            return
        if p.tuning:
            print(p.tuning, flush=True)
        jobs_here = bool(p.measure) or _launcher(p.hydra_overrides) == "basic"
        with SweepSignals(p.sweep_dir, jobs_here) as signals:
            try:
                _run_jobs(p)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # a worker killed by the signal, say: the stop explains it
                if signals.signum:
                    raise SweepInterrupted(signals.signum) from exc
                if isinstance(exc, CnnlabError):
                    raise
                text = str(exc).strip().splitlines()
                raise UsageError(f"hydra could not run the sweep: "
                                 f"{text[0] if text else type(exc).__name__}") from exc
            if signals.signum:
                raise SweepInterrupted(signals.signum)


def _launcher(hydra_overrides: list[str]) -> str:
    """The hydra/launcher a sweep uses ('basic' unless an override picks another)."""
    chosen = "basic"
    for o in hydra_overrides:
        key, _, value = o.lstrip("+").partition("=")
        if key == "hydra/launcher":
            chosen = value
    return chosen


def _run_jobs(p: SweepPlan) -> None:
    from cnnlab.config import register_schemas

    if p.measure:
        from cnnlab.lab import measures

        measures.launch(p.measure, p.measure_args, p.sweep_dir, p.jobs)
        return
    register_schemas()
    _hydra_multirun([
        *p.task_overrides,
        f"hydra.sweep.dir={p.sweep_dir / 'jobs'}",
        "hydra.sweep.subdir='${cnnlab_job_id:${hydra.job.override_dirname}}'",
        "hydra.job.chdir=false",
        "hydra/job_logging=none",
        f"+hydra.job.env_set.CNNLAB_METRIC={p.objective}",
        *p.hydra_overrides,
        *_direction_override(p),
    ])


def _direction_override(p: SweepPlan) -> list[str]:
    """hydra.sweeper.direction for a sweeper that optimises (Optuna), unless given already."""
    sweeper = next((o.lstrip("+").partition("=")[2] for o in p.hydra_overrides
                    if o.lstrip("+").startswith("hydra/sweeper=")), "basic")
    if sweeper == "basic" or _hydra_direction(p.hydra_overrides) is not None:
        return []
    return [f"hydra.sweeper.direction={OPTUNA_DIRECTION[p.direction]}"]


def _hydra_multirun(overrides: list[str]) -> None:
    """`<app> --multirun overrides...` with `sweep_job` as the task, through `hydra.main`.

    hydra.main is Hydra's one public way to run a multirun with a task function (the compose
    API makes configs but launches nothing). It reads its command line from sys.argv and, unless
    HYDRA_FULL_ERROR is set, prints an error and exits the process; so both are set for the
    call and put back after. `--` keeps an override that starts with '-' from being read as a
    flag, and hydra.job.name keeps the job name cnnlab (hydra.main would name it after the task
    function's module).
    """
    import os
    import sys

    import hydra
    from hydra.core.global_hydra import GlobalHydra

    from cnnlab.config import conf_dir

    main = hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")(sweep_job)
    argv, full_error = sys.argv, os.environ.get("HYDRA_FULL_ERROR")
    sys.argv = ["cnnlab", "--multirun", "--", "hydra.job.name=cnnlab", *overrides]
    os.environ["HYDRA_FULL_ERROR"] = "1"
    GlobalHydra.instance().clear()
    try:
        main()
    finally:
        sys.argv = argv
        if full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = full_error
        GlobalHydra.instance().clear()


def epochs_to_target(metrics_csv: Path, metric: str, value: float) -> float:
    """The first epoch whose `metric` reaches `value`; epochs run + 1 if none did (censored)."""
    return to_target(metrics_csv, metric, value)[0]


def to_target(metrics_csv: Path, metric: str, value: float,
              budget: Optional[int] = None) -> tuple[float, float]:
    """(epochs, training seconds) until `metric` first reaches `value`: the first such epoch and
    the epoch_seconds summed through it. If no epoch did, the run is censored: epochs run + 1,
    and the seconds of all epochs plus one more at their mean. A run that diverged (`budget`:
    its planned epochs) is censored at budget + 1 instead: it would not have reached the target
    within the epochs every other run had, and censoring it at the epoch it stopped would say
    "not reached by epoch 3" of a run that failed for good."""
    import pandas as pd

    m = pd.read_csv(metrics_csv)
    secs = m["epoch_seconds"].cumsum() if "epoch_seconds" in m else pd.Series([float("nan")] * len(m))
    hit = m.index[m[metric] >= value] if metric in m else []
    if len(hit):
        return float(m.epoch[hit[0]]), float(secs[hit[0]])
    total = float(secs.iloc[-1]) if len(m) else float("nan")
    bound = max(len(m), budget or 0) + 1
    return float(bound), total * bound / max(len(m), 1)


# summary.json fields a job row carries (the run folder holds the rest): its numbers, and the
# device it ran on, which a speed verdict names (cnnlab.lab.verdicts.measured_on)
RUN_COLUMNS = ("test_acc", "test_top5", "test_loss", "best_val_acc", "train_acc", "train_loss",
               "best_epoch", "epochs_run", "params", "train_seconds", "images_per_sec",
               "overhead_seconds", "nan_steps", "rollbacks", "skipped_images", "device_name")


def job_table(sweep_dir: Path, target=None):
    """One row per job folder: its overrides as columns, status, error and run summary.

    Derived columns: `gap` = train_acc - test_acc (overfitting), and with a target spec
    `epochs_to_target` and `seconds_to_target` (see to_target).
    """
    import pandas as pd

    rows = []
    for job_dir in sorted(p for p in (sweep_dir / "jobs").iterdir() if p.is_dir()):
        if (job_dir / "job.json").exists():
            rows.extend(_job_rows(job_dir, target))
    return pd.DataFrame(rows)


def _job_rows(job_dir: Path, target) -> list[dict]:
    """A job folder's row (a finished measurement job: one per row it measured)."""
    info = json.loads((job_dir / "job.json").read_text())
    row: dict[str, Any] = {"job": job_dir.name}
    for o in info.get("overrides", []):
        key, _, value = o.lstrip("+").partition("=")
        if key != "trainer.progress":
            row[key] = value
    row["status"] = read_status(job_dir)
    row["error"] = info.get("error")
    if info.get("measure"):
        from cnnlab.lab.measures import job_rows

        return job_rows(job_dir, row) if row["status"] in FINISHED else [row]
    if (job_dir / "run" / "summary.json").exists() and row["status"] in FINISHED:
        _add_run_columns(row, job_dir / "run", target)
    return [row]


def _add_run_columns(row: dict, run_dir: Path, target) -> None:
    """The run's summary numbers, `gap`, and with a target the epochs and seconds to reach it."""
    summary = json.loads((run_dir / "summary.json").read_text())
    for k in RUN_COLUMNS:
        row[k] = summary.get(k)
    if row.get("train_acc") is not None and row.get("test_acc") is not None:
        row["gap"] = row["train_acc"] - row["test_acc"]
    if target is not None and (run_dir / "metrics.csv").exists():
        budget = _planned_epochs(run_dir) if row.get("status") == "diverged" else None
        row["epochs_to_target"], row["seconds_to_target"] = to_target(
            run_dir / "metrics.csv", target.metric, target.value, budget)


def _planned_epochs(run_dir: Path) -> Optional[int]:
    """trainer.epochs from the run's config.yaml (None if it cannot be read)."""
    import yaml

    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        return int(cfg["trainer"]["epochs"])
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
        return None
