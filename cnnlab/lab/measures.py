"""Measurement experiments: claims that a benchmark or a calculation decides, not a training run.

An experiment file with `measure: <name>` runs that measurement once per grid point and seed
instead of a training job (C10 conv algorithms, C23 data pipelines, ...):

    measure: bench-train            # a name in MEASURES
    measure_args: {steps: 96}       # keyword arguments of the measurement, the same for every job
    base: [data=shapes, aug=alexnet]
    axes: {model: [lenet5, resnet8]}
    seeds: [0, 1, 2]                # repeats: each seed measures again (and seeds the inputs)
    verdict: {kind: greater, metric: images_per_sec, paired: true,
              a: {pipeline: cnnlab}, b: {pipeline: dataloader}}

A measurement returns several rows per job, told apart by its `keys` (bench-train: `pipeline`;
bench-conv: `layer`, `algo`, `precision`, ...); rules and tables may name those keys like swept
axes, and its `metrics` like job metrics. Jobs run one after another in this process (never in
parallel: a benchmark sharing the cores with another measures the sharing), in the sweep folder
layout of cnnlab.lab.sweep with a `rows.csv` per job, so `--resume`, results.csv, summary.csv, the
verdict and report.md work as for training sweeps.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnlab.errors import CnnlabError, UsageError
from cnnlab.registry import Registry


@dataclass(frozen=True)
class Measure:
    name: str
    run: Callable[[list, dict], list]  # (job overrides, measure_args) -> rows (dicts)
    keys: tuple  # columns that tell a job's rows apart; rules may name them like axes
    metrics: tuple  # numeric columns rules and tables may use
    hydra: bool  # overrides are cnnlab config overrides (composed and checked before any job)
    args: tuple = ()  # measure_args it accepts
    calculation: bool = False  # deterministic: one seed is enough (no timing, no randomness)


MEASURES = Registry("measure")


def register(name: str, keys: tuple, metrics: tuple, hydra: bool, args: tuple = (),
             calculation: bool = False):
    return MEASURES.register(name, entry=lambda fn: Measure(
        name, fn, tuple(keys), tuple(metrics), hydra, tuple(args), calculation))


def get(name: str) -> Measure:
    return MEASURES.get(name)


def check_args(m: Measure, args: dict, where: str) -> None:
    unknown = sorted(set(args) - set(m.args))
    if unknown:
        raise UsageError(f"{where}: measure {m.name} takes no argument {', '.join(unknown)} "
                         f"(it takes: {', '.join(m.args) or 'none'})")


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """key=value strings -> a dict with YAML-typed values (8 -> int, 'a,b' stays a string)."""
    import yaml

    out = {}
    for o in overrides:
        key, sep, value = o.partition("=")
        if not sep or not key:
            raise UsageError(f"'{o}' is not key=value")
        out[key.lstrip("+")] = yaml.safe_load(value) if value else None
    return out


# ---- the measurements ---------------------------------------------------------------------

PIPELINE_METRICS = ("images_per_sec", "step_ms", "data_ms", "forward_ms", "backward_ms",
                    "optimizer_ms", "vs_ceiling", "vs_dataloader", "infer_images_per_sec",
                    "peak_mem_mb")


@register("bench-train", keys=("pipeline",), metrics=PIPELINE_METRICS, hydra=True,
          args=("steps", "warmup", "repeats", "workers", "vs_dataloader", "vs_memory_format"))
def _bench_train(overrides: list, args: dict) -> list:
    """cnnlab bench-train: one row per pipeline (cnnlab, ceiling, dataloader, ceiling_nchw)."""
    from cnnlab.bench import train as bench
    from cnnlab.config import compose

    cfg = compose(overrides)
    r = bench.run(cfg, steps=int(args.get("steps", 96)), warmup=int(args.get("warmup", 5)),
                  repeats=int(args.get("repeats", 3)), workers=int(args.get("workers", 2)),
                  vs_dataloader=bool(args.get("vs_dataloader", True)),
                  vs_memory_format=bool(args.get("vs_memory_format", False)))
    rows = []
    for name, metrics in bench.metric_rows(r):
        row = {"pipeline": name}
        for k, v in metrics.items():
            row[k.removeprefix("bench_")] = v
        rows.append(row)
    return rows


@register("bench-conv", keys=("suite", "layer", "algo", "precision", "kernel_area"),
          metrics=("median_ms", "iqr_ms", "gflops", "pct_peak", "extra_bytes", "extra_over_input",
                   "rel_err", "max_abs_err", "library_rel_err", "speedup_vs_library",
                   "speedup_vs_im2col"), hydra=False,
          args=("algos", "precisions", "repeats", "warmup", "backward", "quick"))
def _bench_conv(overrides: list, args: dict) -> list:
    """cnnlab bench-conv: one row per layer x algorithm x precision. Job overrides: suite=,
    batch=, shapes=[[N,C,H,W,K,R,S,stride,pad], ...], seed=."""
    import torch

    from cnnlab.bench import conv

    o = parse_overrides(overrides)
    torch.manual_seed(int(o.pop("seed", 0)))
    unknown = sorted(set(o) - {"suite", "batch", "shapes"})
    if unknown:
        raise UsageError(f"bench-conv jobs take suite=, batch=, shapes= and seed=, not {', '.join(unknown)}")
    df = conv.measure(suite=o.get("suite") or "vgg16", batch=int(o.get("batch", 8)),
                      shapes=o.get("shapes"), **args)
    return df.to_dict("records")


@register("conv-design", keys=("comparison", "design"),
          metrics=("params", "macs", "receptive_field", "median_ms", "ms_ratio", "params_ratio",
                   "macs_ratio"), hydra=False, args=("repeats",))
def _conv_design(overrides: list, args: dict) -> list:
    """cnnlab bench-conv --design: one row per block design (C8, C9)."""
    import torch

    from cnnlab.bench import design

    o = parse_overrides(overrides)
    torch.manual_seed(int(o.pop("seed", 0)))
    return design.compare(**{k: int(v) for k, v in o.items()}, **args).to_dict("records")


@register("model-profile", keys=("kind",),
          metrics=("params", "macs", "params_share", "macs_share", "torchvision_variant_params",
                   "reference_params", "lecture_params"), hydra=False, calculation=True)
def _model_profile(overrides: list, args: dict) -> list:
    """Parameters and MACs per layer kind and in total, beside torchvision's and the lecture's
    counts (C20, C24). Job overrides: model=, input=CxHxW, classes=, build=default|paper (the
    options closest to the paper's net), model.<key>= options, seed= (a calculation: every seed
    gives the same numbers)."""
    from cnnlab.models.profile import parse_input
    from cnnlab.models.reference import model_rows

    o = parse_overrides(overrides)
    o.pop("seed", None)
    if "model" not in o:
        raise UsageError("model-profile jobs need model=<name>")
    name = str(o.pop("model"))
    opts = {k.removeprefix("model."): o.pop(k) for k in list(o) if k.startswith("model.")}
    shape = parse_input(str(o.pop("input"))) if "input" in o else None
    classes = int(o.pop("classes", 1000))
    build = o.pop("build", "default")
    if build not in ("default", "paper"):
        raise UsageError(f"build={build}: must be default (the registry's options) or paper")
    if o:
        raise UsageError(f"model-profile jobs take model=, input=, classes=, build=, model.<option>=, "
                         f"not {', '.join(o)}")
    return model_rows(name, opts, shape, classes, paper=build == "paper")


@register("conv-arithmetic", keys=("case",),
          metrics=("out_h", "out_w", "formula_out_h", "formula_out_w", "weights", "formula_weights",
                   "params", "formula_params"), hydra=False, calculation=True)
def _conv_arithmetic(overrides: list, args: dict) -> list:
    """Output sizes and weight counts of real conv layers beside the formulas (C21)."""
    from cnnlab.models.reference import arithmetic_rows

    return arithmetic_rows()


# ---- running a measurement sweep ----------------------------------------------------------


def job_dir_for(sweep_dir: Path, overrides: list[str]) -> Path:
    from cnnlab.lab.jobs import job_id

    return sweep_dir / "jobs" / job_id(",".join(sorted(overrides)))


def validate(name: str, jobs: list[list[str]]) -> list[list[str]]:
    """Fail before the first job: every job's config composes (hydra measures) or its
    overrides parse."""
    from cnnlab.config import compose

    from cnnlab.lab.jobs import check_seed

    m = get(name)
    checked = set()
    for job in jobs:
        cell = tuple(o for o in job if not o.startswith("seed="))
        try:
            check_seed(job)
            if cell in checked:
                continue
            checked.add(cell)
            compose(job) if m.hydra else parse_overrides(job)
        except UsageError as exc:
            raise UsageError(f"job [{' '.join(job)}]: {exc}") from exc
    return jobs


def launch(name: str, args: dict, sweep_dir: Path, jobs: list[list[str]], echo=print) -> None:
    """Run each job's measurement in turn; a failing job records its error and the rest go on.
    Jobs already done (a resumed sweep) are skipped."""
    import pandas as pd

    from cnnlab.run import write_text_atomic
    from cnnlab.lab.jobs import FINISHED, read_status, write_job

    m = get(name)
    # seed by seed through the grid (each seed visits every cell before the next seed starts),
    # so a change in the machine's load during the sweep falls on all cells alike
    seed_of = {id(j): next((o.partition("=")[2] for o in j if o.startswith("seed=")), "") for j in jobs}
    rank = {s: i for i, s in enumerate(dict.fromkeys(seed_of.values()))}
    jobs = sorted(jobs, key=lambda j: rank[seed_of[id(j)]])
    for overrides in jobs:
        job_dir = job_dir_for(sweep_dir, overrides)
        label = " ".join(overrides)
        if read_status(job_dir) in FINISHED:
            echo(f"[skip] {label}: already done")
            continue
        job_dir.mkdir(parents=True, exist_ok=True)
        started = time.time()
        write_job(job_dir, overrides=overrides, measure=name, status="running", started=started,
                  error=None)
        try:
            rows = m.run(list(overrides), dict(args))
            if not rows:
                raise CnnlabError("the measurement returned no rows")
            write_text_atomic(job_dir / "rows.csv", pd.DataFrame(rows).to_csv(index=False))
            write_job(job_dir, status="done", ended=time.time(), rows=len(rows))
            echo(f"[done] {label}: {len(rows)} rows ({time.time() - started:.1f}s)")
        except KeyboardInterrupt:
            write_job(job_dir, status="interrupted", ended=time.time())
            raise
        except Exception as exc:  # the other jobs go on; the error is in job.json and the table
            text = str(exc).strip().splitlines()
            error = f"{type(exc).__name__}: {text[-1] if text else ''}"
            write_job(job_dir, status="failed", ended=time.time(), error=error)
            echo(f"[failed] {label}: {error}")


def job_rows(job_dir: Path, base: dict) -> list[dict]:
    """A finished measurement job's rows, each with the job's columns (`base`) in front."""
    import pandas as pd

    path = job_dir / "rows.csv"
    if not path.is_file():
        return [base]
    info = json.loads((job_dir / "job.json").read_text())
    keys = set(get(info["measure"]).keys) if info.get("measure") in MEASURES else set()
    rows = pd.read_csv(path).to_dict("records")
    # a key the job also sets as an override (suite=vgg16) keeps the job's value
    return [{**{k: v for k, v in r.items() if not (k in base and k in keys)}, **base} for r in rows]
