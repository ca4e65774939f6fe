"""Statistics and verdict rules: per-job rows of an experiment -> supported / not supported /
inconclusive, with the numbers that decided it. The rule kinds are described in
cnnlab.lab.experiment's docstring; this module only computes them (pandas rows in, dicts out).
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cnnlab.lab.experiment import ExperimentSpec, VerdictSpec

VERDICTS = ("supported", "not supported", "inconclusive")


def fmt_value(v: Any, inner: bool = False) -> str:
    """A value as a Hydra override writes it; list items with '=', ',' or spaces are quoted
    (transfer.pretrain=['data=shapes','trainer.epochs=15'])."""
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(fmt_value(x, inner=True) for x in v) + "]"
    if inner and isinstance(v, str) and any(ch in v for ch in "=, []'"):
        return "'" + v.replace("'", "\\'") + "'"
    if isinstance(v, bool):
        return str(v).lower()
    if v is None:
        return "null"
    return str(v)


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
        # read back from CSV a true is True (or numpy's bool): compare as overrides write them
        column = df[key].map(lambda x: str(x).lower() if str(x) in ("True", "False") else str(x))
        m = column.isin([fmt_value(v) for v in values])
        mask = m if mask is None else mask & m
    return df if mask is None else df[mask]


def decide(spec: ExperimentSpec, df, ensembles=None) -> dict:
    """Apply the verdict rule (and the `also` rules) to per-job rows; returns the verdict and the
    numbers behind it. With several rules: every rule supported -> supported, any not
    supported -> not supported, else inconclusive; `parts` holds each rule's own result."""
    if spec.verdict is None:
        return {"verdict": None, "text": "no verdict rule", "evidence": []}
    axes = [*spec.axes, "seed", *(["views"] if spec.views else [])]
    if getattr(spec, "measure", None):
        from cnnlab.lab.measures import get

        axes += [k for k in get(spec.measure).keys if k not in axes]
    results = [_decide_rule(v, v.metric or spec.metric, df, axes, ensembles)
               for v in [spec.verdict, *getattr(spec, "also", [])]]
    if len(results) == 1:
        return results[0]
    verdict = _combine([r["verdict"] for r in results])
    text = " | ".join(f"rule {i + 1} ({r['verdict']}): {r['text']}" for i, r in enumerate(results))
    return {"verdict": verdict, "text": text, "evidence": results[0]["evidence"], "parts": results}


def _decide_rule(v: VerdictSpec, metric: str, df, axes: list[str], ensembles=None) -> dict:
    if v.kind == "ensemble":
        return _decide_ensemble(ensembles)
    if metric not in df.columns:
        return {"verdict": "inconclusive", "text": f"no '{metric}' values (every job failed?)",
                "evidence": []}
    if v.kind == "greater":
        return _decide_greater(v, metric, df, axes)
    if v.kind == "best":
        return _decide_best(v, metric, df, axes)
    if v.kind == "near":
        return _decide_near(v, metric, df, axes)
    return _decide_differ(v, metric, df)


def _combine(outcomes: list[str]) -> str:
    """Cells (or rules) -> one verdict: supported only if every one is, not supported if any is."""
    if outcomes and all(o == "supported" for o in outcomes):
        return "supported"
    return "not supported" if "not supported" in outcomes else "inconclusive"


def _decide_near(v: VerdictSpec, metric: str, df, axes: list[str]) -> dict:
    """Each cell's mean of `metric` within `tolerance` (relative) of `expected` (a number, or a
    column whose mean in the cell is the expected value)."""
    sub = _select(_select(df, v.when), v.a)
    evidence = _near_evidence(v, metric, sub, axes)
    if not evidence:
        return {"verdict": "inconclusive", "text": f"no rows where {cond({**v.when, **v.a})}",
                "evidence": []}
    return {"verdict": _combine([e["outcome"] for e in evidence]),
            "text": _near_text(v, metric, evidence), "evidence": evidence}


def _near_evidence(v: VerdictSpec, metric: str, sub, axes: list[str]) -> list[dict]:
    """One item per cell (every axis but the seed that varies in `sub`): mean, expected, outcome."""
    import pandas as pd

    groups = [a for a in axes if a != "seed" and a in sub.columns and sub[a].nunique(dropna=False) > 1]
    evidence = []
    grouped = sub.groupby(groups, sort=False, dropna=False) if groups else [((), sub)]
    for key, cell in grouped:
        key = key if isinstance(key, tuple) else (key,)
        got = mean_ci(pd.to_numeric(cell[metric], errors="coerce").tolist())
        if isinstance(v.expected, str):
            expected = float(pd.to_numeric(cell[v.expected], errors="coerce").mean())
        else:
            expected = float(v.expected)
        if got["n"] == 0 or not math.isfinite(expected) or expected == 0:
            outcome, rel = "inconclusive", math.nan
        else:
            rel = got["mean"] / expected - 1
            outcome = "supported" if abs(rel) <= v.tolerance + 1e-12 else "not supported"
        evidence.append({"cell": dict(zip(groups, key)), "mean": got["mean"], "n": got["n"],
                         "expected": expected, "relative": rel, "outcome": outcome})
    return evidence


def _near_text(v: VerdictSpec, metric: str, evidence: list[dict]) -> str:
    off = [e for e in evidence if e["outcome"] != "supported"]
    worst = max(evidence, key=lambda e: abs(e["relative"]) if math.isfinite(e["relative"]) else -1)
    what = f"'{v.expected}'" if isinstance(v.expected, str) else f"{v.expected:g}"
    where = " where " + cond({**v.when, **v.a}) if v.when or v.a else ""
    return (f"{metric} / expected {what} - 1 within ±{v.tolerance:g} in {len(evidence) - len(off)} "
            f"of {len(evidence)} cells{where}; "
            f"largest deviation {worst['relative']:+.3f} at {cond(worst['cell']) or 'all'} "
            f"({worst['mean']:.4g} vs {worst['expected']:.4g})")


def _decide_greater(v: VerdictSpec, metric: str, df, axes: list[str]) -> dict:
    evidence = [_greater_cell(v, metric, _select(df, cell), axes, cell) for cell in _when_cells(v.when)]
    lines = [f"{cond(e['cell']) + ': ' if e['cell'] else ''}{metric} at {cond(v.a)} {_pm(e['a'])} "
             f"vs {cond(v.b)} {_pm(e['b'])}"
             + (f", paired difference {_pm(e['diff'])}" if 'diff' in e else "")
             + f": {e['outcome']}" for e in evidence]
    return {"verdict": _combine([e["outcome"] for e in evidence]), "text": "; ".join(lines),
            "evidence": evidence}


def _when_cells(when: dict) -> list[dict]:
    """The cells of a `when` (axis -> value or list of values): every combination, or one cell
    of all rows when there is no `when`."""
    if not when:
        return [{}]
    lists = [val if isinstance(val, (list, tuple)) else [val] for val in when.values()]
    return [dict(zip(when, combo)) for combo in itertools.product(*lists)]


def _greater_cell(v: VerdictSpec, metric: str, sub, axes: list[str], cell: dict) -> dict:
    """One cell of a `greater` rule: a's and b's intervals (and the paired difference's)."""
    a = mean_ci(_select(sub, v.a)[metric].tolist())
    b = mean_ci(_select(sub, v.b)[metric].tolist())
    item = {"cell": cell, "a": a, "b": b}
    if v.paired:
        d = item["diff"] = mean_ci(paired_differences(sub, v.a, v.b, metric, axes))
        outcome = "inconclusive" if d["n"] == 0 else _above_zero(d)
    elif a["n"] == 0 or b["n"] == 0:
        outcome = "inconclusive"
    elif a["ci_lo"] > b["ci_hi"]:
        outcome = "supported"
    elif a["ci_hi"] < b["ci_lo"]:
        outcome = "not supported"
    else:
        outcome = "inconclusive"
    return {**item, "outcome": outcome}


def _above_zero(d: dict) -> str:
    """A difference's interval: above zero supports, below zero contradicts, else inconclusive."""
    return "supported" if d["ci_lo"] > 0 else "not supported" if d["ci_hi"] < 0 else "inconclusive"


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
    evidence = [_best_cell(v, metric, _select(df, rec["when"]), axes, rec) for rec in v.recommend]
    return {"verdict": _combine([e["outcome"] for e in evidence]),
            "text": "; ".join(_best_line(e) for e in evidence), "evidence": evidence}


def _best_cell(v: VerdictSpec, metric: str, sub, axes: list[str], rec: dict) -> dict:
    """One recommended cell: each level's interval, the levels that beat the recommended one
    seed by seed, the top level and the outcome."""
    chosen = fmt_value(rec["best"])
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
    return {"cell": dict(rec["when"]), "recommended": chosen, "best": top,
            "levels": levels, "beaten_by": beaten_by, "outcome": outcome}


def _best_line(e: dict) -> str:
    rec = e["levels"].get(e["recommended"], {"n": 0})
    text = f"{cond(e['cell'])}: recommended {e['recommended']} {_pm(rec)}"
    if e["best"] != e["recommended"] and e["best"] is not None:
        text += f", best {e['best']} {_pm(e['levels'][e['best']])}"
    if e["beaten_by"]:
        text += f", beaten (paired) by {', '.join(e['beaten_by'])}"
    return f"{text}: {e['outcome']}"


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
    verdict = _combine(outcomes)
    text = "; ".join(f"{e['cell'] or 'all'}: ensemble {e['ensemble_acc']:.4f} vs members "
                     f"{_pm(e['members'])}: {e['outcome']}" for e in evidence)
    return {"verdict": verdict, "text": text, "evidence": evidence}


def _pm(s: dict) -> str:
    if s["n"] == 0:
        return "(no runs)"
    if s["n"] == 1:
        return f"{s['mean']:.4f} (n=1, no interval)"
    return f"{s['mean']:.4f} [{s['ci_lo']:.4f}, {s['ci_hi']:.4f}] (n={s['n']})"


def cond(cond: dict) -> str:
    if not cond:
        return ""
    # a one-item list of alternatives reads as its item: {lr_mult: [[1.0, 0.1]]} -> lr_mult=[1.0,0.1]
    return ",".join(f"{k}={fmt_value(v[0] if isinstance(v, (list, tuple)) and len(v) == 1 else v)}"
                    for k, v in cond.items())
