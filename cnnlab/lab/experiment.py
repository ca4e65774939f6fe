"""Experiment files (experiments/<name>.yaml): a lecture claim turned into a sweep and a verdict.

    claim: C18                      # id in the lecture-claims list
    statement: Optimisers differ ...
    metric: test_acc                # the number the table and the verdict use
    base: [data=digits, ...]        # overrides every job gets
    axes: {optim: [sgd, adam]}      # swept keys and their values (a grid)
    seeds: [0, 1, 2]
    table: {rows: optim, cols: null}
    verdict: {kind: differ, by: optim, margin: 0.01}
    scales: {quick: [...], full: [...]}   # extra overrides per scale (quick is the default)

Verdict kinds (95% confidence intervals of the mean over seeds decide; overlapping intervals are
*inconclusive*):
- `greater`: metric where `a` exceeds metric where `b`, in every cell of `when` (a dict of axis ->
  value or list of values). Supported if a's interval lies above b's in every cell; not
  supported if it lies below in any cell.
- `differ`: metric differs across the levels of axis `by`. Supported if some two levels have
  disjoint intervals; not supported if all intervals fit within `margin` of each other.
- `ensemble` (with `ensemble: true`): in every cell, the averaged softmax of the seeds' runs is
  more accurate than the members' interval; not supported if it falls below it in any cell.
- `best` (with `by` and `recommend: [{when: {axis: value, ...}, best: level}, ...]`): in each
  listed cell, the recommended level of `by` has the highest mean and no other level beats it
  by a paired interval above zero. Not supported if one does in any cell (C4's quadrant).
- `near` (with `expected`: a number or a column, and `tolerance`): in every cell (all axes but the
  seed, within `when` and `a`), the mean of metric is within `tolerance` (relative) of the
  expected value: for measured quantities that a formula predicts (im2col's memory ~ k^2 x
  input, C10; parameter counts, C24). Not supported if any cell is outside.

`also: [rule, ...]` adds rules to `verdict`; the claim is supported when every rule is, not
supported when any is not, and inconclusive otherwise.

`measure: <name>` (cnnlab.lab.measures) makes the jobs benchmarks or calculations instead of training
runs; each job gives several rows, and the measurement's key columns (bench-train's `pipeline`,
bench-conv's `layer`, `algo`, ...) may be named in rules and tables like axes.

Derived columns a rule may use besides the run metrics: `gap` (train_acc - test_acc) and, with
`target: {metric: val_acc, value: 0.9}`, `epochs_to_target` and `seconds_to_target`.

`exclusive: true` marks an experiment whose jobs measure speed or use every core themselves
(`run-all --jobs N` then still runs its jobs one at a time; measurement experiments always do).

`views: [center, tencrop, "multiscale:28,32,36"]` tests every finished run again with each
test-time view mode (cnnlab.evaluation.views, at the run's training crop size): the jobs table gets one row
per job and mode with a `views` column (an axis rules and tables may name), test_acc / test_top5
/ test_loss of that mode, and its cost `view_ms_per_image` and `views_per_image` (C3).

`paired: true` in a `greater` rule compares a and b run by run instead of as two groups: rows
that agree on every other axis (the seed included: the same trained network under two test
modes, or two strategies from the same seed) are differenced, and the 95% interval of the mean
difference decides (above 0: supported; below 0: not supported).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from cnnlab.errors import UsageError
from cnnlab.lab.verdicts import fmt_value

JOB_METRICS = ("test_acc", "test_top5", "test_loss", "best_val_acc", "train_acc", "train_loss",
               "best_epoch", "epochs_run", "train_seconds", "images_per_sec", "gap")
VIEW_METRICS = ("view_ms_per_image", "views_per_image")


@dataclass
class TableSpec:
    rows: Optional[str] = None
    cols: Optional[str] = None
    value: Optional[str] = None


@dataclass
class VerdictSpec:
    kind: str = "greater"
    metric: Optional[str] = None  # default: the experiment's metric
    a: Dict[str, Any] = field(default_factory=dict)
    b: Dict[str, Any] = field(default_factory=dict)
    when: Dict[str, Any] = field(default_factory=dict)
    by: Optional[str] = None
    margin: float = 0.0
    paired: bool = False  # greater: difference a - b within matched runs (same seed, other axes)
    recommend: List[Dict[str, Any]] = field(default_factory=list)  # best: [{when: {...}, best: level}]
    expected: Optional[Any] = None  # near: a number or the name of a column holding the expected value
    tolerance: float = 0.0  # near: allowed relative deviation |mean / expected - 1|


@dataclass
class TargetSpec:
    """Epochs until a per-epoch metric first reaches a value (the `epochs_to_target` column)."""

    metric: str = "val_acc"
    value: float = 0.9


@dataclass
class ExperimentSpec:
    claim: str = "?"
    statement: str = ""
    metric: str = "test_acc"
    base: List[str] = field(default_factory=list)
    axes: Dict[str, List[Any]] = field(default_factory=dict)
    seeds: List[int] = field(default_factory=lambda: [0, 1, 2])
    table: TableSpec = field(default_factory=TableSpec)
    verdict: Optional[VerdictSpec] = None
    scales: Dict[str, List[str]] = field(default_factory=dict)
    target: Optional[TargetSpec] = None
    ensemble: bool = False  # also score the averaged softmax of each cell's seeds (C17)
    views: List[str] = field(default_factory=list)  # test-time view modes per run (C3)
    also: List[VerdictSpec] = field(default_factory=list)  # more rules; the claim needs them all
    measure: Optional[str] = None  # a cnnlab.lab.measures name: benchmark/calculation jobs, not training
    measure_args: Dict[str, Any] = field(default_factory=dict)
    exclusive: bool = False  # jobs time themselves or use every core: never run beside each other
    name: str = ""
    notes: str = ""


def experiments_dir() -> Path:
    from cnnlab.config import conf_dir

    here = Path(__file__).resolve().parents[1]  # the cnnlab package
    for candidate in (here.parent / "experiments", here / "_experiments"):
        if candidate.is_dir():
            return candidate
    return conf_dir().parent / "experiments"


def list_experiments() -> list[Path]:
    return sorted(experiments_dir().glob("*.yaml"))


def load(path: str | Path) -> ExperimentSpec:
    """Read and type-check an experiment file; unknown keys and bad types are UsageErrors."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    path = Path(path)
    if not path.is_file():
        named = experiments_dir() / f"{path.stem}.yaml"
        if named.is_file():
            path = named
        else:
            names = ", ".join(p.stem for p in list_experiments())
            raise UsageError(f"no experiment file '{path}'; experiments: {names}")
    try:
        raw = OmegaConf.load(path)
        merged = OmegaConf.merge(OmegaConf.structured(ExperimentSpec), raw)
        spec: ExperimentSpec = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", "") or ""
        first = str(exc).strip().splitlines()[0]
        raise UsageError(f"{path.name}: {first}" + (f" (key: {key})" if key else "")) from exc
    except Exception as exc:
        raise UsageError(f"cannot read {path}: {str(exc).splitlines()[0]}") from exc
    spec.name = spec.name or path.stem
    check(spec, path.name)
    return spec


def check(spec: ExperimentSpec, where: str = "experiment") -> None:
    """Rules naming columns must name swept axes (or the metric); fail before any job starts."""
    if not spec.axes and not spec.measure:  # a measurement may be one job per seed
        raise UsageError(f"{where}: no axes to sweep")
    if not spec.seeds:
        raise UsageError(f"{where}: seeds is empty")
    for mode in spec.views:
        _check_view_mode(mode, where)
    axes, known = _columns(spec, where)
    for name in (spec.table.rows, spec.table.cols):
        if name and name not in axes:
            raise UsageError(f"{where}: table axis '{name}' is not a swept axis ({', '.join(sorted(axes))})")
    if spec.metric not in known:
        raise UsageError(f"{where}: metric '{spec.metric}' is not a column jobs produce "
                         f"({', '.join(sorted(known))})")
    if spec.also and spec.verdict is None:
        raise UsageError(f"{where}: 'also' adds rules to a verdict; give the first as verdict:")
    for v in ([spec.verdict] if spec.verdict else []) + list(spec.also):
        _check_rule(spec, v, axes, known, where)


def _columns(spec: ExperimentSpec, where: str) -> tuple[set, set]:
    """(axes, metrics): the columns tables and rules may name. Axes are the swept keys, `views`
    and a measurement's row keys; metrics are the numbers its jobs produce."""
    axes = set(spec.axes) | ({"views"} if spec.views else set())
    if spec.measure:
        from cnnlab.lab import measures

        m = measures.get(spec.measure)
        measures.check_args(m, spec.measure_args, where)
        return axes | set(m.keys), set(m.metrics)
    known = (set(JOB_METRICS) | ({"epochs_to_target", "seconds_to_target"} if spec.target else set())
             | (set(VIEW_METRICS) if spec.views else set()))
    return axes, known


def _check_rule(spec: ExperimentSpec, v: VerdictSpec, axes: set, known: set, where: str) -> None:
    """A rule's own fields for its kind, then every column it names."""
    if v.kind not in RULE_CHECKS:
        raise UsageError(f"{where}: verdict kind '{v.kind}' is not one of: {', '.join(RULE_CHECKS)}")
    RULE_CHECKS[v.kind](spec, v, known | axes, where)
    if v.metric and v.metric not in known:
        raise UsageError(f"{where}: verdict names column '{v.metric}', which no job produces "
                         f"({', '.join(sorted(known))})")
    named = (list(v.a) + list(v.b) + list(v.when) + ([v.by] if v.by else [])
             + [k for rec in v.recommend for k in rec.get("when", {})])
    for key in named:
        if key not in axes:
            raise UsageError(f"{where}: verdict names column '{key}', which is not a swept axis "
                             f"({', '.join(sorted(axes))})")


def _check_greater(spec: ExperimentSpec, v: VerdictSpec, columns: set, where: str) -> None:
    if not v.a or not v.b:
        raise UsageError(f"{where}: a 'greater' verdict needs both a and b")


def _check_differ(spec: ExperimentSpec, v: VerdictSpec, columns: set, where: str) -> None:
    if not v.by:
        raise UsageError(f"{where}: a 'differ' verdict needs by: <axis>")


def _check_ensemble(spec: ExperimentSpec, v: VerdictSpec, columns: set, where: str) -> None:
    if not spec.ensemble:
        raise UsageError(f"{where}: an 'ensemble' verdict needs ensemble: true")


def _check_best(spec: ExperimentSpec, v: VerdictSpec, columns: set, where: str) -> None:
    if not v.by or not v.recommend:
        raise UsageError(f"{where}: a 'best' verdict needs by: <axis> and recommend: [{{when: ..., best: ...}}]")
    for rec in v.recommend:
        if set(rec) != {"when", "best"}:
            raise UsageError(f"{where}: each recommend entry has exactly 'when' and 'best', got {sorted(rec)}")
        if v.by in spec.axes and fmt_value(rec["best"]) not in {fmt_value(x) for x in spec.axes[v.by]}:
            raise UsageError(f"{where}: recommended {v.by}={rec['best']} is not one of the swept values")


def _check_near(spec: ExperimentSpec, v: VerdictSpec, columns: set, where: str) -> None:
    if v.expected is None or v.tolerance < 0:
        raise UsageError(f"{where}: a 'near' verdict needs expected: <number or column> and tolerance >= 0")
    if isinstance(v.expected, str) and v.expected not in columns:
        raise UsageError(f"{where}: expected column '{v.expected}' is not a column jobs produce")


# verdict kind -> the check of its own fields (the kinds are described in the module docstring)
RULE_CHECKS = {"greater": _check_greater, "differ": _check_differ, "ensemble": _check_ensemble,
               "best": _check_best, "near": _check_near}


def _check_view_mode(mode: str, where: str) -> None:
    from cnnlab.evaluation.views import MODES, parse_scales

    name, _, scales = str(mode).partition(":")
    if name not in MODES:
        raise UsageError(f"{where}: view mode '{mode}' is not one of: center, tencrop, multiscale:S1,S2,...")
    if name == "multiscale" and not parse_scales(scales):
        raise UsageError(f"{where}: view mode '{mode}' needs scales, e.g. multiscale:28,32,36")
    if name != "multiscale" and scales:
        raise UsageError(f"{where}: view mode '{mode}' takes no scales")


def sweep_overrides(spec: ExperimentSpec, scale: str = "quick") -> list[str]:
    """The Hydra multirun overrides of an experiment at a scale: base, scale, axes, seeds."""
    if scale not in ("quick", *spec.scales):
        raise UsageError(f"experiment {spec.name} has no scale '{scale}'; scales: "
                         f"{', '.join(['quick', *spec.scales])}")
    out = list(spec.base) + list(spec.scales.get(scale, []))
    for key, values in spec.axes.items():
        out.append(f"{key}={','.join(fmt_value(v) for v in values)}")
    out.append("seed=" + ",".join(str(s) for s in spec.seeds))
    return out


def expand_grid(overrides: list[str]) -> list[list[str]]:
    """The jobs a basic-sweeper multirun would launch: the cartesian product of sweep values."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as exc:
        raise UsageError(f"cannot parse overrides: {str(exc).splitlines()[0]}") from exc
    choices = []
    for ov in parsed:
        if ov.is_sweep_override():
            # booleans as the override was written (false), not as Python prints them (False)
            values = [fmt_value(v) if isinstance(v, bool) else s
                      for v, s in zip(ov.sweep_iterator(), ov.sweep_string_iterator())]
        else:
            values = [ov.get_value_element_as_str()]
        prefix = ov.get_key_element()
        choices.append([f"{prefix}={v}" for v in values])
    return [list(job) for job in itertools.product(*choices)]
