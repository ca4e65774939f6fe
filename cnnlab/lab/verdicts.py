"""Statistics and verdict rules: per-job rows of an experiment -> supported / not supported /
inconclusive, with the numbers that decided it. The rule kinds are described in
cnnlab.lab.experiment's docstring; this module only computes them (pandas rows in, dicts out).

A claim's rules (`verdict` and `also`) break into elementary comparisons: one per cell of a
`greater` or `ratio` rule, one per recommended cell and rival level of `best`, one per pair of
levels of `differ`, one per cell of `ensemble`, one per `interaction`. Each gets a two-sided p-value (cnnlab.lab.stats);
all of them together are one family, corrected by Holm-Bonferroni at family-wise alpha 0.05, so
that when nothing differs the claim is wrongly called supported or not supported in at most
about 5% of experiments however many rules it has. A comparison is decided when its Holm-adjusted
p is at most 0.05, in the direction its effect points; `near` rules are tolerance checks of a
formula, not tests, and stay out of the family.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Any

from cnnlab.lab import stats

if TYPE_CHECKING:
    from cnnlab.lab.spec import ExperimentSpec, VerdictSpec

VERDICTS = ("supported", "not supported", "inconclusive", "not testable here")
ALPHA = 0.05  # family-wise error rate of one claim's comparisons
TARGET_METRICS = ("epochs_to_target", "seconds_to_target")  # censored: a run may never get there
EXACT = "cnnlab_exact"  # rows' attrs key: the metric is a calculation, the same for every seed


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

    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    n = len(x)
    if n == 0:
        return {"mean": math.nan, "std": math.nan, "n": 0, "ci_lo": math.nan, "ci_hi": math.nan}
    mean = float(x.mean())
    if n == 1:
        return {"mean": mean, "std": math.nan, "n": 1, "ci_lo": -math.inf, "ci_hi": math.inf}
    std = float(x.std(ddof=1))
    half = stats.t_quantile(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
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


# ---------------------------------------------------------------- values, censoring, summaries

def open_mask(df, metric: str):
    """Which rows' `metric` is censored (only a lower bound): a time to target of a run that
    never reached it, told by epochs_to_target > epochs_run (sweep.to_target's marker)."""
    import pandas as pd

    if metric not in TARGET_METRICS or not {"epochs_to_target", "epochs_run"} <= set(df.columns):
        return pd.Series(False, index=df.index)
    reached_at = pd.to_numeric(df["epochs_to_target"], errors="coerce")
    return reached_at > pd.to_numeric(df["epochs_run"], errors="coerce")


def arm_values(df, metric: str) -> tuple[list[float], list[bool]]:
    """(values, open): `metric` per row, and whether it is censored. A censored time is the
    bound it is known to exceed: epochs run + 1, or the seconds of the epochs run."""
    import pandas as pd

    values = pd.to_numeric(df[metric], errors="coerce") if metric in df.columns else pd.Series(
        math.nan, index=df.index)
    is_open = open_mask(df, metric)
    if metric == "seconds_to_target" and is_open.any():
        runs = pd.to_numeric(df["epochs_run"], errors="coerce")
        values = values.where(~is_open, values * runs / (runs + 1))
    return [float(v) for v in values], [bool(o) for o in is_open]


def arm_summary(df, metric: str) -> dict:
    """A cell's numbers for tables and rule texts: mean and 95% interval (mean_ci), or for a
    time to target the censored summary (stats.censored: median and how many reached it, never
    a mean), with `text` saying it."""
    values, is_open = arm_values(df, metric)
    if metric not in TARGET_METRICS:
        return mean_ci(values)
    c = stats.censored([None if o else v for v, o in zip(values, is_open)], _limit(df, metric, values, is_open))
    n = sum(math.isfinite(v) for v in values)
    median = c.median if c.median is not None else math.nan
    return {"mean": math.nan, "std": math.nan, "n": n, "ci_lo": math.nan, "ci_hi": math.nan,
            "median": median, "reached": c.reached, "limit": c.limit,
            "text": c.text if n else "(no runs)"}


def center(s: dict) -> float:
    """Where a summary sits, to rank cells: its mean, or a censored cell's median (NaN ranks last)."""
    x = s.get("median", s["mean"]) if "text" in s else s["mean"]
    return x if math.isfinite(x) else -math.inf


def _limit(df, metric: str, values: list[float], is_open: list[bool]) -> float:
    """The last epoch (or second) a cell's runs were watched: the censoring limit."""
    import pandas as pd

    if metric == "epochs_to_target" and "epochs_run" in df.columns:
        runs = pd.to_numeric(df["epochs_run"], errors="coerce").dropna()
        if len(runs):
            return float(runs.max())
    bounds = [v for v, o in zip(values, is_open) if o and math.isfinite(v)]
    seen = [v for v in values if math.isfinite(v)]
    return max(bounds) if bounds else max(seen) if seen else math.nan


def _paired_arms(df, a: dict, b: dict, metric: str, axes: list[str]):
    """(a values, a open, b values, b open), aligned: rows that agree on every axis besides a's
    and b's keys (the same seed and cell) under a's and under b's setting."""
    keys = set(a) | set(b)
    on = [c for c in axes if c not in keys and c in df.columns]
    if not on:
        return [], [], [], []
    rows_a, rows_b = _select(df, a), _select(df, b)
    (va, oa), (vb, ob) = arm_values(rows_a, metric), arm_values(rows_b, metric)
    where_b = {k: i for i, k in enumerate(zip(*(rows_b[c].astype(str) for c in on)))}
    pairs = [(i, where_b[k]) for i, k in enumerate(zip(*(rows_a[c].astype(str) for c in on))) if k in where_b]
    return ([va[i] for i, _ in pairs], [oa[i] for i, _ in pairs], [vb[j] for _, j in pairs],
            [ob[j] for _, j in pairs])


def paired_differences(df, a: dict, b: dict, metric: str, axes: list[str]) -> list[float]:
    """metric(a) - metric(b) for each pair of rows that agree on every axis besides a's and b's
    keys: the same seed and cell, under a's and under b's setting."""
    xa, _, xb, _ = _paired_arms(df, a, b, metric, axes)
    return [x - y for x, y in zip(xa, xb) if math.isfinite(x) and math.isfinite(y)]


def _compare(sub, a: dict, b: dict, metric: str, axes: list[str], paired: bool, log: bool = False):
    """The comparison of a's rows with b's in `sub` (stats.compare), on the log scale for a ratio
    (values <= 0 have no logarithm and drop out). Rows of a calculation (EXACT in the rows'
    attrs, set by `decide`) are compared as exact numbers."""
    if paired:
        xa, oa, xb, ob = _paired_arms(sub, a, b, metric, axes)
    else:
        (xa, oa), (xb, ob) = arm_values(_select(sub, a), metric), arm_values(_select(sub, b), metric)
    if log:
        xa, xb = [_log(x) for x in xa], [_log(x) for x in xb]
    return stats.compare(xa, xb, paired, oa, ob, exact=bool(sub.attrs.get(EXACT)))


def _log(x: float) -> float:
    return math.log(x) if math.isfinite(x) and x > 0 else math.nan


# ---------------------------------------------------------------- the claim's family of tests

def decide(spec: ExperimentSpec, df, ensembles=None) -> dict:
    """Apply the verdict rule (and the `also` rules) to per-job rows; returns the verdict and the
    numbers behind it. Every rule supported -> supported, any not supported -> not supported,
    else inconclusive; `parts` holds each rule's own result, `tests` every comparison (effect,
    95% interval, p, Holm-adjusted p, outcome, and for an undecided one the smallest effect it
    could have detected), `family` the correction."""
    if spec.verdict is None:
        return {"verdict": None, "text": "no verdict rule", "evidence": []}
    axes = [*spec.axes, "seed", *(["views"] if spec.views else [])]
    if getattr(spec, "measure", None):
        from cnnlab.lab.measures import get

        axes += [k for k in get(spec.measure).keys if k not in axes]
        df = df.copy()
        df.attrs[EXACT] = get(spec.measure).calculation
    rules = [spec.verdict, *getattr(spec, "also", [])]
    parts = [_gather(v, v.metric or spec.metric, df, axes, ensembles) for v in rules]
    tests = [t for i, part in enumerate(parts, 1) for t in _number(part["tests"], i)]
    m = _holm(tests)
    parts = [_settle(v, part, m) for v, part in zip(rules, parts)]
    verdict = _combine([p["verdict"] for p in parts])
    if len(parts) == 1:
        text = parts[0]["text"]
    else:
        text = " | ".join(f"rule {i} ({p['verdict']}): {p['text']}" for i, p in enumerate(parts, 1))
    return {"verdict": verdict, "text": text, "evidence": parts[0]["evidence"], "parts": parts,
            "tests": tests, "family": {"method": "Holm-Bonferroni", "comparisons": m, "alpha": ALPHA}}


def _number(tests: list[dict], rule: int) -> list[dict]:
    for t in tests:
        t["rule"] = rule
    return tests


def _holm(tests: list[dict]) -> int:
    """Holm-adjust every test's p in place (`p_holm`); returns the family size (tests with a p)."""
    adjusted = stats.holm([t["p"] for t in tests])
    for t, p in zip(tests, adjusted):
        t["p_holm"] = p
    return sum(math.isfinite(p) for p in adjusted)


def _gather(v: VerdictSpec, metric: str, df, axes: list[str], ensembles) -> dict:
    """A rule's comparisons, before the correction: {tests, evidence, note}."""
    if v.kind == "ensemble":
        return {**_gather_ensemble(ensembles), "metric": metric}
    if metric not in df.columns:
        return {"tests": [], "evidence": [], "note": f"no '{metric}' values (every job failed?)"}
    return {**GATHER[v.kind](v, metric, df, axes), "metric": metric,
            "measured_on": measured_on(metric, df)}


def measured_on(metric: str, df) -> str:
    """For a speed metric (images/s, seconds), the devices its rows ran on (a CPU's name says
    which 16-bit arithmetic it has natively: cnnlab.machine.device_name); "" otherwise: a
    speed verdict holds for the machine it was measured on."""
    speed = metric.endswith(("per_sec", "_seconds"))
    if not speed or "device_name" not in df.columns:
        return ""
    return ", ".join(sorted(set(df["device_name"].dropna().astype(str))))


def _test(d, cell: dict, label: str, p_dir: tuple[float, int], **extra) -> dict:
    """One comparison as a plain record (JSON-ready): the effect and its 95% interval, the test,
    the raw p and the direction (+1 for the claim, -1 against)."""
    lo, hi = d.ci(0.95)
    n = f"{d.n_a} pairs" if d.paired else f"{d.n_a} vs {d.n_b}"
    bounds = list(getattr(d, "bounds", (d.effect, d.effect)))  # a censored median: what is known
    return {"cell": cell, "compare": label, "test": d.test, "n": n, "effect": d.effect,
            "ci_lo": lo, "ci_hi": hi, "p": p_dir[0], "direction": p_dir[1], "se": d.se,
            "df": d.df, "min_p": d.min_p, "scale": "difference", "bounds": bounds, **extra}


def _settle(v: VerdictSpec, part: dict, m: int) -> dict:
    """Outcomes after the correction: each test's, then the rule's verdict and text."""
    for t in part["tests"]:
        if t["test"] != "tolerance":
            t["outcome"] = _outcome(t)
            _explain(t, m)
    if part.get("note"):
        return {"kind": v.kind, "verdict": "inconclusive", "text": part["note"], "evidence": [],
                "tests": []}
    verdict = _rule_verdict(v, part)
    text = TEXT[v.kind](v, part, verdict)
    if part.get("measured_on"):
        text += f" (measured on {part['measured_on']})"
    return {"kind": v.kind, "verdict": verdict, "text": text,
            "evidence": part["evidence"], "tests": part["tests"]}


def _outcome(t: dict) -> str:
    if not math.isfinite(t["p_holm"]) or t["p_holm"] > ALPHA or t["direction"] == 0:
        # differ: a pair whose whole 95% interval lies within +-margin does not differ
        return "within margin" if t.get("within_margin") else "inconclusive"
    return "supported" if t["direction"] > 0 else "not supported"


def _explain(t: dict, m: int) -> None:
    """For an undecided comparison: the smallest effect the set-up could have detected (80%
    power, two-sided, at Holm's first-step level alpha/m), or why it cannot settle it at all."""
    t["detectable"], t["why"] = math.nan, ""
    if t["outcome"] != "inconclusive":
        return
    level = ALPHA / max(m, 1)
    if not math.isfinite(t["p"]):
        t["why"] = "fewer than two runs (or pairs) per arm: nothing to test"
    elif t["min_p"] > level:
        t["why"] = (f"{t['test']} on {t['n']} cannot reach p <= {level:.3g} "
                    f"(its smallest p is {t['min_p']:.3g}): more seeds needed")
    else:
        effect = stats.detectable_effect(t["se"], t["df"], alpha=level)
        t["detectable"] = math.exp(effect) if t["scale"] == "log ratio" else effect


def _rule_verdict(v: VerdictSpec, part: dict) -> str:
    """All-cells rules: supported when every comparison is decided for the claim, not supported
    when any is decided against it. `differ` needs one pair apart; it is not supported when every
    pair's 95% interval lies within +-margin. `best`: every recommended cell must be."""
    tests = part["tests"]
    outcomes = [t["outcome"] for t in tests]
    if v.kind == "best":
        return _combine([e["outcome"] for e in _best_cells(part)])
    if v.kind != "differ":
        return _combine(outcomes)
    if "supported" in outcomes:
        return "supported"
    if tests and all(t["outcome"] == "within margin" for t in tests):
        return "not supported"
    return "inconclusive"


def _combine(outcomes: list[str]) -> str:
    """Cells (or rules) -> one verdict: supported only if every one is, not supported if any is."""
    if outcomes and all(o == "supported" for o in outcomes):
        return "supported"
    return "not supported" if "not supported" in outcomes else "inconclusive"


def _when_cells(when: dict) -> list[dict]:
    """The cells of a `when` (axis -> value or list of values): every combination, or one cell
    of all rows when there is no `when`."""
    if not when:
        return [{}]
    lists = [val if isinstance(val, (list, tuple)) else [val] for val in when.values()]
    return [dict(zip(when, combo)) for combo in itertools.product(*lists)]


# ---------------------------------------------------------------- greater and ratio

def _gather_greater(v: VerdictSpec, metric: str, df, axes: list[str]) -> dict:
    tests = []
    for cell in _when_cells(v.when):
        sub = _select(df, cell)
        d = _compare(sub, v.a, v.b, metric, axes, v.paired)
        tests.append(_test(d, cell, f"{cond(v.a)} vs {cond(v.b)}", stats.two_sided(d),
                           a=arm_summary(_select(sub, v.a), metric),
                           b=arm_summary(_select(sub, v.b), metric)))
    return {"tests": tests, "evidence": tests}


def _gather_ratio(v: VerdictSpec, metric: str, df, axes: list[str]) -> dict:
    """metric at a / metric at b per cell, on the log scale (per seed when paired): the interval
    of the log ratio against [log low, log high] (stats.range_p)."""
    low, high = (list(v.range) + [None, None])[:2]
    bounds = [math.log(x) if x is not None else None for x in (low, high)]
    tests = []
    for cell in _when_cells(v.when):
        sub = _select(df, cell)
        d = _compare(sub, v.a, v.b, metric, axes, v.paired, log=True)
        t = _test(d, cell, f"{cond(v.a)} / {cond(v.b)}", stats.range_p(d, *bounds),
                  a=arm_summary(_select(sub, v.a), metric), b=arm_summary(_select(sub, v.b), metric))
        t.update(scale="log ratio", effect=math.exp(t["effect"]), ci_lo=math.exp(t["ci_lo"]),
                 ci_hi=math.exp(t["ci_hi"]), range=[low, high])
        tests.append(t)
    return {"tests": tests, "evidence": tests}


def _effect_text(t: dict, paired: bool) -> str:
    """'paired difference 0.0150 [0.0026, 0.0274] (paired t, p=0.035, Holm p=0.035)'."""
    what = {"log ratio": "ratio"}.get(t["scale"], "paired difference" if paired else "difference")
    if math.isfinite(t["effect"]):
        eff = f"{_num(t['effect'])} [{_num(t['ci_lo'])}, {_num(t['ci_hi'])}]"
    else:
        eff = _open_effect(t)
    note = (f"; {detectable_text(t)}" if math.isfinite(t.get("detectable", math.nan))
            else f"; {t['why']}" if t.get("why") else "")
    return (f"{what} {eff} ({t['test']}, p={_p(t['p'])}, Holm p={_p(t['p_holm'])}{note})")


def _open_effect(t: dict) -> str:
    """A median difference that censoring hides: the bounds it is known to lie within ('at least
    3.0', 'at most -2.0'), or that nothing is known when the runs on both sides never got there."""
    lo, hi = (list(t.get("bounds") or []) + [math.nan, math.nan])[:2]
    if t["scale"] == "log ratio":
        lo, hi = (math.exp(x) if math.isfinite(x) else x for x in (lo, hi))
    if math.isfinite(lo) and not math.isfinite(hi):
        return f"at least {_num(lo)} (censored runs)"
    if math.isfinite(hi) and not math.isfinite(lo):
        return f"at most {_num(hi)} (censored runs)"
    if math.isfinite(lo) and math.isfinite(hi):
        return f"between {_num(lo)} and {_num(hi)} (censored runs)"
    if math.isnan(t["p"]):
        return "not measured (no pairs of finished runs)"
    return "unknown: the runs on both sides never reached the target"


def detectable_text(t: dict) -> str:
    """'could detect 0.0429' (a difference), or for a ratio the factor from a bound."""
    if t.get("scale") == "log ratio":
        return f"could detect a ratio {_num(t['detectable'])}x away from a bound"
    return f"could detect {_num(t['detectable'])}"


def _greater_text(v: VerdictSpec, part: dict, verdict: str) -> str:
    return "; ".join(f"{cond(t['cell']) + ': ' if t['cell'] else ''}{part['metric']} at {cond(v.a)} "
                     f"{_pm(t['a'])} vs {cond(v.b)} {_pm(t['b'])}, "
                     f"{_effect_text(t, v.paired)}: {t['outcome']}" for t in part["tests"])


def _ratio_text(v: VerdictSpec, part: dict, verdict: str) -> str:
    low, high = (list(v.range) + [None, None])[:2]
    span = f"[{_num(low) if low is not None else '-inf'}, {_num(high) if high is not None else 'inf'}]"
    lines = [f"{cond(t['cell']) + ': ' if t['cell'] else ''}{cond(v.a)} {_pm(t['a'])} / "
             f"{cond(v.b)} {_pm(t['b'])} ({part['metric']}): {_effect_text(t, v.paired)} vs range "
             f"{span}: {t['outcome']}"
             for t in part["tests"]]
    return "; ".join(lines)


# ---------------------------------------------------------------- interaction

def _gather_interaction(v: VerdictSpec, metric: str, df, axes: list[str]) -> dict:
    """The gain a - b (per seed, a and b paired within a cell) where `more_in` minus the gain
    where `less_in`: one comparison of the two cells' gains, paired by seed with `paired: true`
    (the seeds of the two cells are then matched; Welch's test otherwise)."""
    keys = set(v.a) | set(v.b) | set(v.more_in) | set(v.less_in)
    on = [c for c in axes if c not in keys and c in df.columns]
    more, less = _gains(df, v, v.more_in, metric, on), _gains(df, v, v.less_in, metric, on)
    if v.paired:
        common = [k for k in more if k in less]
        xs, ys = [more[k] for k in common], [less[k] for k in common]
    else:
        xs, ys = list(more.values()), list(less.values())
    d = stats.compare(xs, ys, v.paired)
    t = _test(d, {}, f"gain of {cond(v.a)} over {cond(v.b)} at {cond(v.more_in)} vs at "
                     f"{cond(v.less_in)}", stats.two_sided(d),
              a=mean_ci(list(more.values())), b=mean_ci(list(less.values())))
    return {"tests": [t], "evidence": [t]}


def _gains(df, v: VerdictSpec, cell: dict, metric: str, on: list[str]) -> dict:
    """{the values of `on` (the seed and any other axis): metric(a) - metric(b)} within a cell."""
    sub = _select(df, cell)
    rows_a, rows_b = _select(sub, v.a), _select(sub, v.b)
    (va, _), (vb, _) = arm_values(rows_a, metric), arm_values(rows_b, metric)
    key = (lambda rows: list(zip(*(rows[c].astype(str) for c in on)))) if on else (lambda rows: [()] * len(rows))
    where_b = {k: x for k, x in zip(key(rows_b), vb)}
    return {k: x - where_b[k] for k, x in zip(key(rows_a), va)
            if k in where_b and math.isfinite(x) and math.isfinite(where_b[k])}


def _interaction_text(v: VerdictSpec, part: dict, verdict: str) -> str:
    t = part["tests"][0]
    return (f"gain in {part['metric']} of {cond(v.a)} over {cond(v.b)}: {_pm(t['a'])} at "
            f"{cond(v.more_in)} vs {_pm(t['b'])} at {cond(v.less_in)}; "
            f"{_effect_text(t, v.paired)}: {t['outcome']}")


# ---------------------------------------------------------------- best

def _gather_best(v: VerdictSpec, metric: str, df, axes: list[str]) -> dict:
    """In each recommended cell, the recommended level against every other level of `by`, seed
    by seed; the evidence keeps each level's summary for the table."""
    tests, evidence = [], []
    for rec in v.recommend:
        sub = _select(df, rec["when"])
        chosen = fmt_value(rec["best"])
        levels = {lv: arm_summary(g, metric) for lv, g in sub.groupby(sub[v.by].astype(str), sort=False)}
        levels = {lv: st for lv, st in levels.items() if st["n"] > 0}
        rivals = [lv for lv in levels if lv != chosen] if chosen in levels else []
        for lv in rivals:
            d = _compare(sub, {v.by: chosen}, {v.by: lv}, metric, axes, paired=True)
            tests.append(_test(d, dict(rec["when"]), f"{chosen} vs {lv}", stats.two_sided(d), rival=lv))
        top = max(levels, key=lambda lv: center(levels[lv])) if levels else None
        evidence.append({"cell": dict(rec["when"]), "recommended": chosen, "best": top,
                         "levels": levels, "beaten_by": [], "outcome": "inconclusive"})
    return {"tests": tests, "evidence": evidence}


def _best_cells(part: dict) -> list[dict]:
    """Each recommended cell's outcome, in place: supported when it is ahead of every rival after
    the correction, not supported when one beats it, else (or with no rivals) inconclusive."""
    for e in part["evidence"]:
        mine = [t for t in part["tests"] if t["cell"] == e["cell"]]
        e["beaten_by"] = [t["rival"] for t in mine if t["outcome"] == "not supported"]
        e["outcome"] = _combine([t["outcome"] for t in mine]) if mine else "inconclusive"
    return part["evidence"]


def _best_text(v: VerdictSpec, part: dict, verdict: str) -> str:
    return "; ".join(_best_line(e, [t for t in part["tests"] if t["cell"] == e["cell"]])
                     for e in _best_cells(part))


def _best_line(e: dict, tests: list[dict]) -> str:
    rec = e["levels"].get(e["recommended"], {"n": 0})
    text = f"{cond(e['cell'])}: recommended {e['recommended']} {_pm(rec)}"
    if e["best"] != e["recommended"] and e["best"] is not None:
        text += f", best {e['best']} {_pm(e['levels'][e['best']])}"
    if e["beaten_by"]:
        text += f", beaten (paired) by {', '.join(e['beaten_by'])}"
    won = sum(t["outcome"] == "supported" for t in tests)
    text += f", ahead of {won} of {len(tests)} rivals after correction" if tests else ""
    return f"{text}: {e['outcome']}"


# ---------------------------------------------------------------- differ

def _gather_differ(v: VerdictSpec, metric: str, df, axes: list[str]) -> dict:
    """Every pair of levels of `by` (paired by seed with `paired: true`)."""
    levels = {lv: arm_summary(sub, metric) for lv, sub in df.groupby(df[v.by].astype(str))}
    usable = [lv for lv, s in levels.items() if s["n"] > 0]
    if len(usable) < 2:
        return {"tests": [], "evidence": levels, "note": f"fewer than two levels of {v.by} have results"}
    tests = []
    for x, y in itertools.combinations(usable, 2):
        d = _compare(df, {v.by: x}, {v.by: y}, metric, axes, v.paired)
        p, direction = stats.two_sided(d)
        t = _test(d, {}, f"{v.by}={x} vs {y}", (p, 1 if direction else 0))
        t["within_margin"] = bool(v.margin > 0 and -v.margin <= t["ci_lo"] and t["ci_hi"] <= v.margin)
        tests.append(t)
    return {"tests": tests, "evidence": levels}


def _differ_text(v: VerdictSpec, part: dict, verdict: str) -> str:
    usable = {k: s for k, s in part["evidence"].items() if s["n"] > 0}
    best = max(usable, key=lambda k: center(usable[k]))
    worst = min(usable, key=lambda k: center(usable[k]))
    apart = [t for t in part["tests"] if t["outcome"] == "supported"]
    widest = max(part["tests"], key=lambda t: abs(t["effect"]) if math.isfinite(t["effect"]) else -1)
    return (f"{part['metric']} by {v.by}: best {best} {_pm(usable[best])}, worst {worst} "
            f"{_pm(usable[worst])}; {len(apart)} of {len(part['tests'])} pairs apart after "
            f"correction; largest: {widest['compare']} {_effect_text(widest, v.paired)}"
            f"{f' (margin {v.margin})' if v.margin else ''}")


# ---------------------------------------------------------------- ensemble

def _gather_ensemble(ensembles) -> dict:
    """ensembles: rows with a cell label, the members' accuracies and the ensemble's accuracy;
    each cell a one-sample t-test of the members against the ensemble's accuracy."""
    if ensembles is None or len(ensembles) == 0:
        return {"tests": [], "evidence": [], "note": "no ensemble could be scored"}
    tests = []
    for row in ensembles:
        e, members = row["ensemble_acc"], list(row["members"])
        d = stats.compare([e] * len(members), members, paired=True)
        t = _test(d, {"cell": row["cell"]}, "ensemble vs members", stats.two_sided(d),
                  members=mean_ci(members), ensemble_acc=e)
        t.update(test="one-sample t", n=f"{len(members)} members")
        tests.append(t)
    return {"tests": tests, "evidence": tests}


def _ensemble_text(v: VerdictSpec, part: dict, verdict: str) -> str:
    return "; ".join(f"{t['cell']['cell'] or 'all'}: ensemble {t['ensemble_acc']:.4f} vs members "
                     f"{_pm(t['members'])}, {_effect_text(t, False)}: {t['outcome']}"
                     for t in part["tests"])


# ---------------------------------------------------------------- near (a tolerance, not a test)

def _gather_near(v: VerdictSpec, metric: str, df, axes: list[str]) -> dict:
    """Each cell's mean of `metric` within `tolerance` (relative) of `expected` (a number, or a
    column whose mean in the cell is the expected value)."""
    sub = _select(_select(df, v.when), v.a)
    evidence = _near_evidence(v, metric, sub, axes)
    if not evidence:
        return {"tests": [], "evidence": [], "note": f"no rows where {cond({**v.when, **v.a})}"}
    tests = [{"cell": e["cell"], "compare": f"{metric} vs expected", "test": "tolerance",
              "n": str(e["n"]), "effect": e["relative"], "ci_lo": e["ci_lo"], "ci_hi": e["ci_hi"],
              "p": math.nan, "direction": 0, "scale": "relative deviation",
              "outcome": e["outcome"], "detectable": math.nan,
              "why": "no values to check" if e["outcome"] == "inconclusive" else
              f"a tolerance check (±{v.tolerance:g}), not a test"} for e in evidence]
    return {"tests": tests, "evidence": evidence}


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
            outcome, rel, span = "inconclusive", math.nan, (math.nan, math.nan)
        else:
            rel = got["mean"] / expected - 1
            outcome = "supported" if abs(rel) <= v.tolerance + 1e-12 else "not supported"
            span = sorted((got["ci_lo"] / expected - 1, got["ci_hi"] / expected - 1))
        evidence.append({"cell": dict(zip(groups, key)), "mean": got["mean"], "n": got["n"],
                         "expected": expected, "relative": rel, "outcome": outcome,
                         "ci_lo": span[0], "ci_hi": span[1]})
    return evidence


def _near_text(v: VerdictSpec, part: dict, verdict: str) -> str:
    evidence, metric = part["evidence"], part["metric"]
    off = [e for e in evidence if e["outcome"] != "supported"]
    worst = max(evidence, key=lambda e: abs(e["relative"]) if math.isfinite(e["relative"]) else -1)
    what = f"'{v.expected}'" if isinstance(v.expected, str) else f"{v.expected:g}"
    where = " where " + cond({**v.when, **v.a}) if v.when or v.a else ""
    return (f"{metric} / expected {what} - 1 within ±{v.tolerance:g} in {len(evidence) - len(off)} "
            f"of {len(evidence)} cells{where}; "
            f"largest deviation {worst['relative']:+.3f} at {cond(worst['cell']) or 'all'} "
            f"({worst['mean']:.4g} vs {worst['expected']:.4g})")


# rule kind -> how its comparisons are gathered, and its text once they are settled
GATHER = {"greater": _gather_greater, "ratio": _gather_ratio, "best": _gather_best,
          "differ": _gather_differ, "near": _gather_near, "interaction": _gather_interaction}
TEXT = {"greater": _greater_text, "ratio": _ratio_text, "best": _best_text,
        "differ": _differ_text, "near": _near_text, "ensemble": _ensemble_text,
        "interaction": _interaction_text}


def _num(x: float) -> str:
    if x is None or not math.isfinite(x):
        return str(x)
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.1f}" if abs(x) >= 100 else f"{x:.4f}"


def _p(p: float) -> str:
    return "-" if not math.isfinite(p) else f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def _pm(s: dict) -> str:
    if "text" in s:  # a censored time to target: median and how many reached it
        return f"({s['text']})"
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
