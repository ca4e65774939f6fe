"""Per-arm tuning (an experiment's `tune:`): every arm searches a small grid, on validation.

An arm is one combination of the experiment's axes values. With

    tune: {optim.lr: [0.01, 0.03, 0.1]}      # several keys: their product
    tune_metric: best_val_acc                # default; a validation-split column
    tune_scales: {quick: {optim.lr: [0.03, 0.1]}}

every arm runs every setting of the grid under every seed (arms x settings x seeds jobs). From
the job rows, `mark` picks for each arm the setting with the best mean `tune_metric` over the
arm's finished seeds (highest for *acc, lowest for *loss) and flags that setting's rows (every
seed) with `tuned`; tables, plots and verdicts use only those rows, so each arm's test metric is
reported at its own best setting, and the choice never sees the test split.

Rules of the choice:
- a setting's score is the mean over the arm's finished (done or diverged) jobs of that setting
  (failed jobs do not count; `n` says how many did); a missing or NaN score in any of them (a
  run that diverged before validating, no validation split) makes the setting's score NaN, and a
  NaN score is never chosen. An arm with no numeric score has no chosen setting, and so no rows
  in the tables or the verdict.
- ties (scores within 1e-12) go to the setting that comes first in the grid the sweep ran
  (at its scale) as written: keys in the order of `tune`, values in the order listed.

`tune_scales: {<scale>: {key: [values]}}` replaces, at that scale, the values of the keys it
names (each must be a `tune` key); the other keys keep their `tune` values.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Any, Optional

from cnnlab.errors import UsageError
from cnnlab.lab.verdicts import fmt_value

if TYPE_CHECKING:
    from cnnlab.lab.spec import ExperimentSpec

FINISHED_ROWS = ("done", "diverged")


def grid(spec: ExperimentSpec, scale: str = "quick") -> dict[str, list]:
    """The tune grid at a scale: `tune`, with the keys `tune_scales[scale]` names replaced."""
    return {**dict(spec.tune), **dict(getattr(spec, "tune_scales", {}).get(scale, {}))}


def settings(values: dict[str, list]) -> list[dict]:
    """Every combination of a grid's values, in grid order."""
    return [dict(zip(values, combo)) for combo in itertools.product(*values.values())]


def overrides(spec: ExperimentSpec, scale: str = "quick") -> list[str]:
    """The sweep overrides of the tune grid (one comma-separated override per key)."""
    return [f"{key}={','.join(fmt_value(v) for v in values)}" for key, values in grid(spec, scale).items()]


def describe(spec: ExperimentSpec, scale: str, n_jobs: int = 0) -> str:
    """One line on how tuning multiplies the jobs ('' without `tune`)."""
    if not getattr(spec, "tune", None):
        return ""
    g = grid(spec, scale)
    n_settings = len(settings(g))
    arms = math.prod(len(v) for v in spec.axes.values())
    n_jobs = n_jobs or arms * n_settings * len(spec.seeds)  # a search sweeper: the grid's count
    keys = " x ".join(f"{len(v)} {k}" for k, v in g.items())
    return (f"per-arm tuning on {spec.tune_metric}: {arms} arms x {n_settings} settings ({keys}) "
            f"x {len(spec.seeds)} seeds = {n_jobs} jobs (x{n_settings} for tuning)")


def mode(metric: str) -> str:
    """'max' for an accuracy, 'min' for a loss."""
    if metric.endswith("acc"):
        return "max"
    if metric.endswith("loss"):
        return "min"
    raise UsageError(f"tune_metric '{metric}' is neither an accuracy (*acc) nor a loss (*loss)")


def check(spec: ExperimentSpec, known: set, where: str) -> None:
    """`tune`, `tune_metric` and `tune_scales` make sense together and with the rest of the file."""
    if not spec.tune:
        if getattr(spec, "tune_scales", None):
            raise UsageError(f"{where}: tune_scales without tune")
        return
    if spec.measure:
        raise UsageError(f"{where}: tune needs training jobs; a measurement ({spec.measure}) has none")
    _check_keys(spec, where)
    metric = spec.tune_metric
    if metric not in known or not metric.startswith(("val_", "best_val_")):
        validation = sorted(k for k in known if k.startswith(("val_", "best_val_")))
        raise UsageError(f"{where}: tune_metric '{metric}' is not a validation-split column jobs "
                         f"produce ({', '.join(validation)}); tuning never looks at the test split")
    mode(metric)
    for scale, sub in spec.tune_scales.items():
        if scale != "quick" and scale not in spec.scales:
            raise UsageError(f"{where}: tune_scales names scale '{scale}', which is not quick or in scales")
        _check_values(sub, f"{where}: tune_scales.{scale}")
        extra = [k for k in sub if k not in spec.tune]
        if extra:
            raise UsageError(f"{where}: tune_scales.{scale} names {', '.join(extra)}, not a tune key "
                             f"({', '.join(spec.tune)})")


def _check_keys(spec: ExperimentSpec, where: str) -> None:
    """Tune keys are neither axes, nor the seed, nor set by base or a scale."""
    _check_values(spec.tune, f"{where}: tune")
    for key in spec.tune:
        if key in spec.axes:
            raise UsageError(f"{where}: tune key '{key}' is also an axis; an axis is compared, a "
                             f"tune key is searched within each arm: give it one role")
        if key == "seed":
            raise UsageError(f"{where}: seed cannot be tuned")
        fixed = [o for o in [*spec.base, *itertools.chain(*spec.scales.values())]
                 if str(o).lstrip("+~").partition("=")[0] == key]
        if fixed:
            raise UsageError(f"{where}: tune key '{key}' is also set by base or a scale ({fixed[0]})")


def _check_values(values: dict, where: str) -> None:
    for key, listed in values.items():
        if not isinstance(listed, (list, tuple)) or not listed:
            raise UsageError(f"{where}.{key}: give a non-empty list of values to search")


def _text(x: Any) -> str:
    """A cell as an override writes it (results.csv reads true back as True, 0.1 as 0.1)."""
    return str(x).lower() if str(x) in ("True", "False") else fmt_value(x)


def _rank(spec: ExperimentSpec, scale: str = "quick"):
    """setting (tuple of texts, tune key order) -> its place in the grid of `scale` as written
    (values that grid does not list come after, by text)."""
    listed = {k: [_text(v) for v in values] for k, values in grid(spec, scale).items()}

    def rank(setting: tuple) -> tuple:
        return tuple(listed[k].index(v) if v in listed[k] else len(listed[k])
                     for k, v in zip(spec.tune, setting)) + setting
    return rank


def sweep_scale(sweep_dir) -> str:
    """The scale a sweep folder ran at (its sweep.yaml), quick if it does not say."""
    import yaml
    from pathlib import Path

    path = Path(sweep_dir) / "sweep.yaml"
    try:
        saved = yaml.safe_load(path.read_text()) if path.is_file() else None
    except (OSError, yaml.YAMLError):
        saved = None
    return str(saved.get("scale") or "quick") if isinstance(saved, dict) else "quick"


def arm_columns(jobs, spec: ExperimentSpec) -> list[str]:
    return [a for a in spec.axes if a in jobs.columns]


def scores(jobs, spec: ExperimentSpec, scale: str = "quick"):
    """One row per arm and tune setting: the arm's axes, the tune keys (as text), the setting's
    mean `tune_metric` over the arm's finished jobs (`score`), their count `n`, and `chosen`."""
    import pandas as pd

    arm, keys = arm_columns(jobs, spec), list(spec.tune)
    cols = [*arm, *keys]
    if jobs.empty or any(k not in jobs.columns for k in keys):
        return pd.DataFrame(columns=[*cols, "score", "n", "chosen"])
    ok = jobs[jobs.status.isin(FINISHED_ROWS)] if "status" in jobs else jobs
    ok = ok.drop_duplicates("job") if "job" in ok.columns else ok  # views repeat a job's row
    ok = ok.assign(**{c: ok[c].map(_text) for c in cols})
    rows = []
    for key, sub in ok.groupby(cols, sort=False):
        values = pd.to_numeric(sub[spec.tune_metric], errors="coerce") if spec.tune_metric in sub \
            else pd.Series([math.nan] * len(sub))
        rows.append({**dict(zip(cols, key)), "score": float(values.mean(skipna=False)), "n": len(sub)})
    table = pd.DataFrame(rows, columns=[*cols, "score", "n"])
    return _choose(table, arm, keys, spec, scale)


def _choose(table, arm: list[str], keys: list[str], spec: ExperimentSpec, scale: str):
    """Flag each arm's best setting: the best finite score, ties to the first in grid order.
    Rows come back by arm (as they came), then setting in grid order."""
    sign = 1.0 if mode(spec.tune_metric) == "max" else -1.0
    rank = _rank(spec, scale)
    arms = [tuple(r) for r in table[arm].itertuples(index=False)]
    first_seen = list(dict.fromkeys(arms))
    place = [(first_seen.index(a), rank(tuple(s))) for a, s in zip(arms, table[keys].itertuples(index=False))]
    table = table.iloc[sorted(range(len(table)), key=place.__getitem__)].reset_index(drop=True)
    table["chosen"] = False
    groups = table.groupby(arm, sort=False) if arm else [((), table)]
    for _, sub in groups:
        finite = sub[sub.score.map(math.isfinite)]
        if finite.empty:
            continue
        best = (sign * finite.score).max()
        table.loc[finite[sign * finite.score >= best - 1e-12].index[0], "chosen"] = True
    return table


def mark(jobs, spec: Optional[ExperimentSpec], scale: str = "quick"):
    """(jobs, scores): every job row, with a `tuned` column (True on the rows of their arm's
    chosen setting) and the tune keys before `status`, rows by arm, then setting in grid order;
    and the per-arm scores table. (jobs, None) when the experiment has no `tune`."""
    if spec is None or not spec.tune or jobs.empty:
        return jobs, None
    table = scores(jobs, spec, scale)
    cols = [*arm_columns(jobs, spec), *spec.tune]
    if any(c not in jobs.columns for c in cols):
        return jobs.assign(tuned=False), table
    chosen = {tuple(r) for r in table[table.chosen][cols].itertuples(index=False)}
    texts = [tuple(_text(x) for x in r) for r in jobs[cols].itertuples(index=False)]
    jobs = jobs.assign(tuned=[t in chosen for t in texts])
    arms = list(dict.fromkeys(t[:-len(spec.tune)] for t in texts))  # in the table's order
    rank = _rank(spec, scale)
    order = sorted(range(len(jobs)), key=lambda i: (arms.index(texts[i][:-len(spec.tune)]),
                                                    rank(texts[i][-len(spec.tune):])))
    front = [c for c in jobs.columns if c not in (*spec.tune, "tuned")]
    at = front.index("status") if "status" in front else len(front)
    columns = [*front[:at], *spec.tune, "tuned", *front[at:]]
    return jobs.iloc[order][columns].reset_index(drop=True), table


def selected(jobs):
    """The rows tables, plots and verdicts use: the chosen settings' (all rows without tuning)."""
    return jobs[jobs["tuned"].astype(bool)].reset_index(drop=True) if "tuned" in jobs.columns else jobs


def table(scores_table, spec: ExperimentSpec):
    """For the report: one row per arm, each candidate setting's validation score (mean, n) and
    the chosen setting."""
    import pandas as pd

    keys = list(spec.tune)
    arm = [c for c in scores_table.columns if c not in (*keys, "score", "n", "chosen")]
    rows = {}
    for r in scores_table.to_dict("records"):
        label = ",".join(f"{k}={r[k]}" for k in keys)
        row = rows.setdefault(tuple(r[a] for a in arm), {**{a: r[a] for a in arm}, "chosen": "none"})
        row[label] = "-" if not math.isfinite(r["score"]) else f"{r['score']:.4f} (n={r['n']})"
        if r["chosen"]:
            row["chosen"] = label
    out = pd.DataFrame(list(rows.values()))
    return out[[c for c in out.columns if c != "chosen"] + ["chosen"]] if not out.empty else out


def section(scores_table, spec: ExperimentSpec) -> list[str]:
    """report.md's tuning section: the table above, under a heading that says what was chosen."""
    from cnnlab.tables import markdown_table

    keys = ", ".join(spec.tune)
    return [f"## Per-arm tuning of {keys}: mean {spec.tune_metric} (validation split) over seeds",
            "", "Each arm keeps its best setting (ties: the first in the grid); the tables, plots "
            "and verdict use only the kept rows (`tuned` in results.csv; every score in tuning.csv).",
            "", markdown_table(table(scores_table, spec)), ""]
