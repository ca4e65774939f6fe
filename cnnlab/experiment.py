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

Derived columns a rule may use besides the run metrics: `gap` (train_acc - test_acc) and, with
`target: {metric: val_acc, value: 0.9}`, `epochs_to_target` and `seconds_to_target`.

`views: [center, tencrop, "multiscale:28,32,36"]` tests every finished run again with each
test-time view mode (cnnlab.views, at the run's training crop size): the jobs table gets one row
per job and mode with a `views` column (an axis rules and tables may name), test_acc / test_top5
/ test_loss of that mode, and its cost `view_ms_per_image` and `views_per_image` (C3).

`paired: true` in a `greater` rule compares a and b run by run instead of as two groups: rows
that agree on every other axis (the seed included: the same trained network under two test
modes, or two strategies from the same seed) are differenced, and the 95% interval of the mean
difference decides (above 0: supported; below 0: not supported).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from cnnlab.errors import UsageError

VERDICTS = ("supported", "not supported", "inconclusive")
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
    name: str = ""
    notes: str = ""


def experiments_dir() -> Path:
    from cnnlab.config import conf_dir

    here = Path(__file__).resolve().parent
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
    if not spec.axes:
        raise UsageError(f"{where}: no axes to sweep")
    if not spec.seeds:
        raise UsageError(f"{where}: seeds is empty")
    axes = set(spec.axes) | ({"views"} if spec.views else set())
    for mode in spec.views:
        _check_view_mode(mode, where)
    for name in (spec.table.rows, spec.table.cols):
        if name and name not in axes:
            raise UsageError(f"{where}: table axis '{name}' is not a swept axis ({', '.join(axes)})")
    known = (set(JOB_METRICS) | ({"epochs_to_target", "seconds_to_target"} if spec.target else set())
             | (set(VIEW_METRICS) if spec.views else set()))
    if spec.metric not in known:
        raise UsageError(f"{where}: metric '{spec.metric}' is not a column jobs produce "
                         f"({', '.join(sorted(known))})")
    v = spec.verdict
    if v is None:
        return
    if v.kind not in ("greater", "differ", "ensemble", "best"):
        raise UsageError(f"{where}: verdict kind '{v.kind}' is not one of: greater, differ, ensemble, best")
    if v.kind == "best":
        if not v.by or not v.recommend:
            raise UsageError(f"{where}: a 'best' verdict needs by: <axis> and recommend: [{{when: ..., best: ...}}]")
        for rec in v.recommend:
            if set(rec) != {"when", "best"}:
                raise UsageError(f"{where}: each recommend entry has exactly 'when' and 'best', got {sorted(rec)}")
            if _fmt_value(rec["best"]) not in {_fmt_value(x) for x in spec.axes.get(v.by, [])}:
                raise UsageError(f"{where}: recommended {v.by}={rec['best']} is not one of the swept values")
    if v.metric and v.metric not in known:
        raise UsageError(f"{where}: verdict names column '{v.metric}', which no job produces "
                         f"({', '.join(sorted(known))})")
    if v.kind == "ensemble" and not spec.ensemble:
        raise UsageError(f"{where}: an 'ensemble' verdict needs ensemble: true")
    named = (list(v.a) + list(v.b) + list(v.when) + ([v.by] if v.by else [])
             + [k for rec in v.recommend for k in rec.get("when", {})])
    for key in named:
        if key not in axes:
            raise UsageError(f"{where}: verdict names column '{key}', which is not a swept axis "
                             f"({', '.join(sorted(axes))})")
    if v.kind == "greater" and (not v.a or not v.b):
        raise UsageError(f"{where}: a 'greater' verdict needs both a and b")
    if v.kind == "differ" and not v.by:
        raise UsageError(f"{where}: a 'differ' verdict needs by: <axis>")


def _check_view_mode(mode: str, where: str) -> None:
    from cnnlab.views import MODES, parse_scales

    name, _, scales = str(mode).partition(":")
    if name not in MODES:
        raise UsageError(f"{where}: view mode '{mode}' is not one of: center, tencrop, multiscale:S1,S2,...")
    if name == "multiscale" and not parse_scales(scales):
        raise UsageError(f"{where}: view mode '{mode}' needs scales, e.g. multiscale:28,32,36")
    if name != "multiscale" and scales:
        raise UsageError(f"{where}: view mode '{mode}' takes no scales")


def _fmt_value(v: Any, inner: bool = False) -> str:
    """A value as a Hydra override writes it; list items with '=', ',' or spaces are quoted
    (transfer.pretrain=['data=shapes','trainer.epochs=15'])."""
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_fmt_value(x, inner=True) for x in v) + "]"
    if inner and isinstance(v, str) and any(ch in v for ch in "=, []'"):
        return "'" + v.replace("'", "\\'") + "'"
    if isinstance(v, bool):
        return str(v).lower()
    if v is None:
        return "null"
    return str(v)


def sweep_overrides(spec: ExperimentSpec, scale: str = "quick") -> list[str]:
    """The Hydra multirun overrides of an experiment at a scale: base, scale, axes, seeds."""
    if scale not in ("quick", *spec.scales):
        raise UsageError(f"experiment {spec.name} has no scale '{scale}'; scales: "
                         f"{', '.join(['quick', *spec.scales])}")
    out = list(spec.base) + list(spec.scales.get(scale, []))
    for key, values in spec.axes.items():
        out.append(f"{key}={','.join(_fmt_value(v) for v in values)}")
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
            values = list(ov.sweep_string_iterator())
        else:
            values = [ov.get_value_element_as_str()]
        prefix = ov.get_key_element()
        choices.append([f"{prefix}={v}" for v in values])
    return [list(job) for job in itertools.product(*choices)]


# ---- statistics and verdicts -------------------------------------------------------------


def mean_ci(values, confidence: float = 0.95) -> dict[str, float]:
    """Mean, sample std, n and the Student-t confidence interval of the mean."""
    import numpy as np
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    n = len(x)
    if n == 0:
        return {"mean": math.nan, "std": math.nan, "n": 0, "ci_lo": math.nan, "ci_hi": math.nan}
    mean = float(x.mean())
    if n == 1:
        return {"mean": mean, "std": math.nan, "n": 1, "ci_lo": -math.inf, "ci_hi": math.inf}
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "n": n, "ci_lo": mean - half, "ci_hi": mean + half}


def _select(df, cond: dict):
    mask = None
    for key, value in cond.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        m = df[key].astype(str).isin([_fmt_value(v) for v in values])
        mask = m if mask is None else mask & m
    return df if mask is None else df[mask]


def decide(spec: ExperimentSpec, df, ensembles=None) -> dict:
    """Apply the verdict rule to per-job rows; returns the verdict and the numbers behind it."""
    v = spec.verdict
    if v is None:
        return {"verdict": None, "text": "no verdict rule", "evidence": []}
    if v.kind == "ensemble":
        return _decide_ensemble(ensembles)
    metric = v.metric or spec.metric
    if metric not in df.columns:
        return {"verdict": "inconclusive", "text": f"no '{metric}' values (every job failed?)",
                "evidence": []}
    axes = [*spec.axes, "seed", *(["views"] if spec.views else [])]
    if v.kind == "greater":
        return _decide_greater(v, metric, df, axes)
    if v.kind == "best":
        return _decide_best(v, metric, df, axes)
    return _decide_differ(v, metric, df)


def _decide_greater(v: VerdictSpec, metric: str, df, axes: list[str]) -> dict:
    cells = [{}]
    if v.when:
        keys = list(v.when)
        lists = [val if isinstance(val, (list, tuple)) else [val] for val in v.when.values()]
        cells = [dict(zip(keys, combo)) for combo in itertools.product(*lists)]
    evidence, outcomes = [], []
    for cell in cells:
        sub = _select(df, cell)
        a = mean_ci(_select(sub, v.a)[metric].tolist())
        b = mean_ci(_select(sub, v.b)[metric].tolist())
        item = {"cell": cell, "a": a, "b": b}
        if v.paired:
            d = item["diff"] = mean_ci(paired_differences(sub, v.a, v.b, metric, axes))
            lo, hi, n = d["ci_lo"], d["ci_hi"], d["n"]
            outcome = ("inconclusive" if n == 0 else "supported" if lo > 0 else
                       "not supported" if hi < 0 else "inconclusive")
        elif a["n"] == 0 or b["n"] == 0:
            outcome = "inconclusive"
        elif a["ci_lo"] > b["ci_hi"]:
            outcome = "supported"
        elif a["ci_hi"] < b["ci_lo"]:
            outcome = "not supported"
        else:
            outcome = "inconclusive"
        outcomes.append(outcome)
        evidence.append({**item, "outcome": outcome})
    if all(o == "supported" for o in outcomes):
        verdict = "supported"
    elif any(o == "not supported" for o in outcomes):
        verdict = "not supported"
    else:
        verdict = "inconclusive"
    lines = [f"{_cond(e['cell']) + ': ' if e['cell'] else ''}{metric} at {_cond(v.a)} {_pm(e['a'])} "
             f"vs {_cond(v.b)} {_pm(e['b'])}"
             + (f", paired difference {_pm(e['diff'])}" if 'diff' in e else "")
             + f": {e['outcome']}" for e in evidence]
    return {"verdict": verdict, "text": "; ".join(lines), "evidence": evidence}


def paired_differences(df, a: dict, b: dict, metric: str, axes: list[str]) -> list[float]:
    """metric(a) - metric(b) for each pair of rows that agree on every axis besides a's and b's
    keys: the same seed and cell, under a's and under b's setting."""
    import pandas as pd

    keys = set(a) | set(b)
    ra, rb = _select(df, a), _select(df, b)
    on = [c for c in axes if c not in keys and c in df.columns]
    left = ra[on + [metric]].astype({c: str for c in on})
    right = rb[on + [metric]].astype({c: str for c in on})
    merged = left.merge(right, on=on, suffixes=("_a", "_b")) if on else pd.DataFrame()
    if merged.empty:
        return []
    diff = pd.to_numeric(merged[f"{metric}_a"], errors="coerce") - pd.to_numeric(merged[f"{metric}_b"], errors="coerce")
    return [float(x) for x in diff.dropna()]


def _decide_best(v: VerdictSpec, metric: str, df, axes: list[str]) -> dict:
    """In each recommended cell: is the recommended level of `by` the best? Supported there if it
    has the highest mean and no other level beats it by a paired interval above zero; not
    supported if some level does; inconclusive otherwise (not first, but not clearly beaten)."""
    evidence, outcomes = [], []
    for rec in v.recommend:
        sub = _select(df, rec["when"])
        chosen = _fmt_value(rec["best"])
        levels = {lv: mean_ci(g[metric].tolist()) for lv, g in sub.groupby(sub[v.by].astype(str), sort=False)}
        levels = {lv: st for lv, st in levels.items() if st["n"] > 0}
        beaten_by = []
        for lv in levels:
            if lv != chosen:
                d = mean_ci(paired_differences(sub, {v.by: lv}, {v.by: chosen}, metric, axes))
                if d["n"] > 1 and d["ci_lo"] > 0:
                    beaten_by.append(lv)
        top = max(levels, key=lambda lv: levels[lv]["mean"]) if levels else None
        if chosen not in levels:
            outcome = "inconclusive"
        elif beaten_by:
            outcome = "not supported"
        elif top == chosen:
            outcome = "supported"
        else:
            outcome = "inconclusive"
        outcomes.append(outcome)
        evidence.append({"cell": dict(rec["when"]), "recommended": chosen, "best": top,
                         "levels": levels, "beaten_by": beaten_by, "outcome": outcome})
    verdict = ("supported" if outcomes and all(o == "supported" for o in outcomes) else
               "not supported" if "not supported" in outcomes else "inconclusive")
    lines = []
    for e in evidence:
        rec = e["levels"].get(e["recommended"], {"n": 0})
        text = f"{_cond(e['cell'])}: recommended {e['recommended']} {_pm(rec)}"
        if e["best"] != e["recommended"] and e["best"] is not None:
            text += f", best {e['best']} {_pm(e['levels'][e['best']])}"
        if e["beaten_by"]:
            text += f", beaten (paired) by {', '.join(e['beaten_by'])}"
        lines.append(f"{text}: {e['outcome']}")
    return {"verdict": verdict, "text": "; ".join(lines), "evidence": evidence}


def _decide_differ(v: VerdictSpec, metric: str, df) -> dict:
    levels = {}
    for level, sub in df.groupby(df[v.by].astype(str)):
        levels[level] = mean_ci(sub[metric].tolist())
    usable = {k: s for k, s in levels.items() if s["n"] > 0}
    if len(usable) < 2:
        return {"verdict": "inconclusive", "text": f"fewer than two levels of {v.by} have results",
                "evidence": levels}
    best = max(usable, key=lambda k: usable[k]["mean"])
    worst = min(usable, key=lambda k: usable[k]["mean"])
    spread = max(s["ci_hi"] for s in usable.values()) - min(s["ci_lo"] for s in usable.values())
    if usable[best]["ci_lo"] > usable[worst]["ci_hi"]:
        verdict = "supported"
    elif spread < v.margin:
        verdict = "not supported"
    else:
        verdict = "inconclusive"
    text = (f"{metric} by {v.by}: best {best} {_pm(usable[best])}, worst {worst} "
            f"{_pm(usable[worst])}; intervals span {spread:.4f} (margin {v.margin})")
    return {"verdict": verdict, "text": text, "evidence": levels}


def _decide_ensemble(ensembles) -> dict:
    """ensembles: rows with a cell label, the members' accuracies and the ensemble's accuracy."""
    if ensembles is None or len(ensembles) == 0:
        return {"verdict": "inconclusive", "text": "no ensemble could be scored", "evidence": []}
    evidence, outcomes = [], []
    for row in ensembles:
        m = mean_ci(row["members"])
        e = row["ensemble_acc"]
        outcome = ("supported" if e > m["ci_hi"] else "not supported" if e < m["ci_lo"]
                   else "inconclusive")
        outcomes.append(outcome)
        evidence.append({"cell": row["cell"], "members": m, "ensemble_acc": e, "outcome": outcome})
    verdict = ("supported" if all(o == "supported" for o in outcomes) else
               "not supported" if "not supported" in outcomes else "inconclusive")
    text = "; ".join(f"{e['cell'] or 'all'}: ensemble {e['ensemble_acc']:.4f} vs members "
                     f"{_pm(e['members'])}: {e['outcome']}" for e in evidence)
    return {"verdict": verdict, "text": text, "evidence": evidence}


def _pm(s: dict) -> str:
    if s["n"] == 0:
        return "(no runs)"
    if s["n"] == 1:
        return f"{s['mean']:.4f} (n=1, no interval)"
    return f"{s['mean']:.4f} [{s['ci_lo']:.4f}, {s['ci_hi']:.4f}] (n={s['n']})"


def _cond(cond: dict) -> str:
    if not cond:
        return ""
    # a one-item list of alternatives reads as its item: {lr_mult: [[1.0, 0.1]]} -> lr_mult=[1.0,0.1]
    return ",".join(f"{k}={_fmt_value(v[0] if isinstance(v, (list, tuple)) and len(v) == 1 else v)}"
                    for k, v in cond.items())
