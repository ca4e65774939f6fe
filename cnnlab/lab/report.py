"""A sweep's tables, verdict, plots and report.md, computed with pandas from its job folders.

results.csv: one row per job (the swept axes, then status and metrics).
summary.csv: grouped over every axis but the seed: mean, std, n and the 95% confidence interval;
for a time to target (censored: a run may never reach it) the median, how many reached it and
the text of cnnlab.lab.stats.censored instead of a mean.
verdict.json: the verdict, each rule's comparisons (effect, 95% interval, p, Holm-adjusted p,
smallest detectable effect) and the correction; "not testable here" when the machine does not
meet the experiment's `requires:` (no job ran).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from cnnlab.lab import tuning
from cnnlab.lab.experiment import ExperimentSpec
from cnnlab.lab.sweep import job_table
from cnnlab.lab.verdicts import TARGET_METRICS, arm_summary, decide, detectable_text, mean_ci

AXIS_EXCLUDE = {"job", "status", "error", "device_name"}


@dataclass
class Report:
    jobs: Any  # DataFrame, one row per job
    summary: Any  # DataFrame, one row per cell
    axes: list[str]
    verdict: Optional[dict]
    path: Path
    tuning: Any = None  # DataFrame of per-arm tune scores and choices (experiment `tune:`), or None


def swept_axes(jobs, spec: Optional[ExperimentSpec]) -> list[str]:
    """The axes: the experiment's (and seed), or for ad-hoc sweeps every key that varies."""
    if spec is not None:
        views = ["views"] if spec.views and "views" in jobs.columns else []
        keys = []
        if spec.measure:  # the measurement's own row keys (pipeline, layer, algo, ...)
            from cnnlab.lab.measures import get

            keys = [k for k in get(spec.measure).keys if k in jobs.columns and k not in spec.axes
                    and jobs[k].nunique(dropna=False) > 1]
        return ([a for a in spec.axes if a in jobs.columns] + views + keys
                + (["seed"] if "seed" in jobs.columns else []))
    metrics = {"test_acc", "test_top5", "test_loss", "best_val_acc", "train_acc", "train_loss",
               "best_epoch", "epochs_run", "params", "train_seconds", "images_per_sec",
               "overhead_seconds", "gap", "epochs_to_target", "seconds_to_target"}
    return [c for c in jobs.columns if c not in AXIS_EXCLUDE | metrics and jobs[c].nunique() > 1]


def summarise(jobs, axes: list[str], metric: str):
    """Mean, std, n and 95% CI of `metric` for each cell (axes but seed), finished jobs only."""
    import pandas as pd

    groups = [a for a in axes if a != "seed"]
    ok = jobs[jobs.status.isin(["done", "diverged"])] if "status" in jobs else jobs
    if metric not in ok.columns or ok.empty:
        return pd.DataFrame(columns=[*groups, "mean", "std", "n", "ci_lo", "ci_hi"])
    rows = []
    grouped = ok.groupby(groups, sort=False, dropna=False) if groups else [((), ok)]
    for key, sub in grouped:
        key = key if isinstance(key, tuple) else (key,)
        if metric in TARGET_METRICS:  # censored: median and how many reached it, never a mean
            stats = arm_summary(sub, metric)
        else:
            stats = mean_ci(pd.to_numeric(sub[metric], errors="coerce").tolist())
        extra = {"diverged": int((sub.status == "diverged").sum())} if "status" in sub else {}
        rows.append({**dict(zip(groups, key)), **stats, **extra})
    return pd.DataFrame(rows)


def build(sweep_dir: Path, spec: Optional[ExperimentSpec], metric: str = "test_acc",
          plots: bool = True) -> Report:
    """Write results.csv, summary.csv, verdict.json, plots/ and report.md into the sweep folder."""
    from cnnlab.run import write_text_atomic

    jobs, axes = _job_rows(sweep_dir, spec)
    jobs, tuned = tuning.mark(jobs, spec, tuning.sweep_scale(sweep_dir))  # each arm's chosen setting
    jobs.to_csv(sweep_dir / "results.csv", index=False)
    if tuned is not None:
        tuned.to_csv(sweep_dir / "tuning.csv", index=False)
    kept = tuning.selected(jobs)  # tables, plots and verdict: the chosen settings' rows only
    summary = summarise(kept, axes, metric)
    summary.to_csv(sweep_dir / "summary.csv", index=False)
    ensembles = _ensembles(sweep_dir, kept, axes) if spec is not None and spec.ensemble else None
    verdict = _verdict(sweep_dir, spec, kept, ensembles)
    images = _plots(sweep_dir, kept, summary, axes, metric, spec) if plots and not summary.empty else []
    write_text_atomic(sweep_dir / "report.md", _markdown(sweep_dir, spec, jobs, summary, axes, metric,
                                                         verdict, images, ensembles, tuned))
    return Report(jobs=kept, summary=summary, axes=axes, verdict=verdict, path=sweep_dir, tuning=tuned)


def _job_rows(sweep_dir: Path, spec: Optional[ExperimentSpec]):
    """(jobs, axes): one row per job (per job and view mode with `views`), the axes and status
    in front, rows in the experiment's axis order."""
    if not (sweep_dir / "jobs").is_dir():  # an experiment not testable here ran no job
        import pandas as pd

        return pd.DataFrame(), []
    jobs = job_table(sweep_dir, spec.target if spec is not None else None)
    if spec is not None and spec.views and not jobs.empty:
        jobs = view_rows(sweep_dir, jobs, list(spec.views))
    if jobs.empty:
        return jobs, []
    axes = swept_axes(jobs, spec)
    front = [*axes, "status"]
    jobs = jobs[[*front, *[c for c in jobs.columns if c not in front]]]
    return _sorted(jobs, axes, spec), axes


def _verdict(sweep_dir: Path, spec: Optional[ExperimentSpec], jobs, ensembles) -> Optional[dict]:
    """The experiment's rules decided on the finished jobs, written to verdict.json; None if the
    sweep has no rule."""
    from cnnlab.run import write_text_atomic

    if spec is None or spec.verdict is None:
        return None
    untestable = _untestable(sweep_dir) if jobs.empty else ""  # resumed on a machine that can: decide
    if untestable:
        verdict = {"claim": spec.claim, "statement": spec.statement, "verdict": "not testable here",
                   "text": untestable, "evidence": [], "tests": []}
    else:
        ok = jobs[jobs.status.isin(["done", "diverged"])] if not jobs.empty else jobs
        verdict = {"claim": spec.claim, "statement": spec.statement, **decide(spec, ok, ensembles)}
    write_text_atomic(sweep_dir / "verdict.json", json.dumps(verdict, indent=2, default=_json) + "\n")
    return verdict


def _untestable(sweep_dir: Path) -> str:
    """Why the sweep ran no job (its sweep.yaml's `untestable`: the experiment's `requires:` not
    met where it was launched), or ''."""
    import yaml

    path = sweep_dir / "sweep.yaml"
    saved = yaml.safe_load(path.read_text()) if path.is_file() else None
    return str(saved.get("untestable") or "") if isinstance(saved, dict) else ""


def _sorted(jobs, axes: list[str], spec: Optional[ExperimentSpec]):
    """Rows in the experiment's axis order (numbers numerically, the rest as listed or by name)."""
    import pandas as pd

    from cnnlab.lab.verdicts import fmt_value

    keys = []
    for axis in axes:
        listed = [fmt_value(v) for v in (spec.views if axis == "views" else spec.axes.get(axis, []))] if spec else []
        col = jobs[axis].astype(str)
        if listed:
            keys.append(col.map({v: i for i, v in enumerate(listed)}).fillna(len(listed)))
        else:
            num = pd.to_numeric(col, errors="coerce")
            keys.append(num if num.notna().all() else col)
    if not keys:
        return jobs
    order = pd.DataFrame({f"k{i}": k.values for i, k in enumerate(keys)}).sort_values(
        [f"k{i}" for i in range(len(keys))], kind="stable").index
    return jobs.iloc[order].reset_index(drop=True)


def view_rows(sweep_dir: Path, jobs, modes: list[str]):
    """The jobs table with one row per job and test-time view mode (experiment `views`).

    Each finished run's best weights are tested on its test split under every mode, at the run's
    training crop size, all in this process one after another so the costs compare; test_acc,
    test_top5 and test_loss become that mode's, with view_ms_per_image and views_per_image.
    Scores are kept in views.csv (by job and mode) and reused when the report is built again.
    """
    import pandas as pd

    cache_path = sweep_dir / "views.csv"
    cache = {}
    if cache_path.exists():
        for r in pd.read_csv(cache_path).to_dict("records"):
            cache[(r["job"], r["views"])] = r
    rows, fresh = [], False
    for job in jobs.to_dict("records"):
        todo = [m for m in modes if (job["job"], m) not in cache]
        if job["status"] == "done" and todo:
            for mode, scores in _score_views(sweep_dir / "jobs" / job["job"] / "run", todo).items():
                cache[(job["job"], mode)] = {"job": job["job"], "views": mode, **scores}
            fresh = True
        for mode in modes:
            row = dict(job, views=mode)
            if job["status"] == "done":
                got = cache[(job["job"], mode)]
                row.update({k: got[k] for k in ("test_acc", "test_top5", "test_loss",
                                                 "view_ms_per_image", "views_per_image")})
            rows.append(row)
    if fresh:
        from cnnlab.run import write_text_atomic

        write_text_atomic(cache_path, pd.DataFrame(list(cache.values())).to_csv(index=False))
    return pd.DataFrame(rows)


def _score_views(run_dir: Path, modes: list[str]) -> dict[str, dict]:
    """One run's test split under each view mode ("center", "tencrop", "multiscale:S,..."),
    the model and data loaded once, at the side the run trained on."""
    from cnnlab.evaluation.runs import load_run, score_views

    scores = score_views(load_run(run_dir), modes)
    return {mode: {"test_acc": m["top1"], "test_top5": m["top5"], "test_loss": m["nll"],
                   "view_ms_per_image": m["ms_per_image"], "views_per_image": m["views"]}
            for mode, m in scores.items()}


def _ensembles(sweep_dir: Path, jobs, axes: list[str]) -> list[dict]:
    """For each cell, the seeds' runs as one ensemble (averaged softmax on the test split)."""
    import pandas as pd

    from cnnlab.evaluation.ensemble import ensemble_accuracy

    if jobs.empty:
        return []
    groups = [a for a in axes if a != "seed"]
    done = jobs[jobs.status == "done"]
    out = []
    for key, sub in (done.groupby(groups, sort=False) if groups else [((), done)]):
        if len(sub) < 2:
            continue
        key = key if isinstance(key, tuple) else (key,)
        result = ensemble_accuracy([sweep_dir / "jobs" / j / "run" for j in sub.job])
        out.append({"cell": ",".join(f"{g}={k}" for g, k in zip(groups, key)), **result})
    if out:
        pd.DataFrame([{**{k: v for k, v in r.items() if k != "members"},
                       "members_mean": sum(r["members"]) / len(r["members"]),
                       "best_member": max(r["members"])} for r in out]).to_csv(
            sweep_dir / "ensemble.csv", index=False)
    return out


def best_table(evidence: list[dict]):
    """Levels x cells of mean ± CI half-width, then the recommended level and the outcome."""
    import pandas as pd

    from cnnlab.lab.verdicts import cond

    cols = {}
    for e in evidence:
        label = cond(e["cell"])
        col = {lv: cell_text(st) for lv, st in e["levels"].items()}
        col["recommended"] = e["recommended"]
        col["best"] = e["best"]
        col["outcome"] = e["outcome"]
        cols[label] = col
    table = pd.DataFrame(cols)
    tail = ["recommended", "best", "outcome"]
    table = table.reindex([i for i in table.index if i not in tail] + tail).fillna("-")
    return table.reset_index(names="")


def view_costs(jobs):
    """Per view mode: views per image, mean ms per image and its ratio to the centre view."""
    done = jobs[jobs.status == "done"]
    costs = done.groupby("views", sort=False).agg(views_per_image=("views_per_image", "first"),
                                                  ms_per_image=("view_ms_per_image", "mean"))
    base = costs.ms_per_image.get("center")
    costs["vs_center"] = costs.ms_per_image / base if base else float("nan")
    return costs.reset_index()


def axis_text(v: Any) -> str:
    """An axis value as a reader wants it: 10 for 10 or 10.0 (a CSV read-back of a column with a
    gap turns ints into floats), none for nan / null / None (a key left unset), true / false."""
    import re

    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "none"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    text = str(v)
    if text in ("nan", "NaN", "null", "None", "<NA>"):
        return "none"
    return re.sub(r"^(-?\d+)\.0$", r"\1", text)


def _json(v):
    return None if isinstance(v, float) and math.isnan(v) else str(v)


def _num(x: float, scale: float) -> str:
    """Four decimals for accuracies and ratios; counts and rates (>= 1,000) as whole numbers."""
    if not math.isfinite(x):
        return str(x)
    if abs(scale) >= 1000:
        return f"{x:,.0f}"
    if abs(scale) >= 100:
        return f"{x:.1f}"
    return f"{x:.4f}"


def cell_text(row) -> str:
    text = row.get("text") if hasattr(row, "get") else None
    if isinstance(text, str):  # a censored time to target: "median 5, reached 3/3 by 30"
        return text
    if row["n"] == 0:
        return "-"
    mean = row["mean"]
    if row["n"] == 1 or not math.isfinite(row["ci_hi"]):
        return f"{_num(mean, mean)} (n={row['n']})"
    return f"{_num(mean, mean)} ± {_num(row['ci_hi'] - mean, mean)} (n={row['n']})"


def table_view(summary, spec: Optional[ExperimentSpec], axes: list[str]):
    """The experiment's table layout (rows x cols of mean ± CI half-width) as a DataFrame."""
    groups = [a for a in axes if a != "seed"]
    if summary.empty or not groups:
        return summary
    rows, cols = _table_axes(spec, groups)
    view = summary.assign(value=summary.apply(cell_text, axis=1))
    table = _pivot(view, groups, rows, cols) if cols in groups and rows in groups else None
    return view[[*groups, "value"]] if table is None else table


def _table_axes(spec: Optional[ExperimentSpec], groups: list[str]) -> tuple[str, Optional[str]]:
    """The axis down the table and the one across: the experiment's, else the first axis down
    and, with exactly two axes, the other across."""
    rows = (spec.table.rows if spec and spec.table.rows else None) or groups[0]
    cols = (spec.table.cols if spec and spec.table.cols else None)
    if cols is None and len(groups) == 2:
        cols = [g for g in groups if g != rows][0]
    return rows, cols


def _pivot(view, groups: list[str], rows: str, cols: str):
    """rows x cols of the cells' text, in the summary's order; None when most cells would be
    empty (then the long table reads better)."""
    # more than two axes: the others stay as leading index columns (suite, layer x algo)
    index = [g for g in groups if g not in (rows, cols)] + [rows]
    table = view.pivot_table(index=index, columns=cols, values="value", aggfunc="first", sort=False)
    if table.isna().to_numpy().mean() > 0.5:  # most cells empty (design x comparison): stay long
        return None
    # pivot sorts labels as strings (2, 64, 8); keep the order of the sorted summary instead
    order = list(dict.fromkeys(zip(*(view[i] for i in index)))) if len(index) > 1 else list(dict.fromkeys(view[rows]))
    table = table.reindex(index=order, columns=list(dict.fromkeys(view[cols])))
    table.columns = [f"{cols}={c}" for c in table.columns]
    return table.reset_index()


def _markdown(sweep_dir, spec, jobs, summary, axes, metric, verdict, images, ensembles=None,
              tuned=None) -> str:
    lines = [f"# Sweep {sweep_dir.name}", ""]
    if spec is not None:
        lines += [f"**Claim {spec.claim}**: {spec.statement}", ""]
    if verdict is not None:
        lines += [f"**Verdict: {verdict['verdict']}** ({verdict['text']})", ""]
    per_job = jobs.drop_duplicates("job") if "job" in jobs.columns else jobs  # views repeat jobs
    counts = per_job.status.value_counts().to_dict() if not jobs.empty else {}
    lines += ["Jobs: " + (", ".join(f"{v} {k}" for k, v in counts.items()) or "none ran"), ""]
    if not summary.empty:
        lines += _section(f"{metric} ({_what(metric)})", table_view(summary, spec, axes))
    lines += tuning.section(tuned, spec) if tuned is not None else []
    lines += _verdict_sections(spec, verdict, metric) if verdict is not None else []
    if spec is not None and spec.views and "view_ms_per_image" in jobs.columns:
        lines += _section("Cost of each test-time view mode (test split, one process, one after another)",
                          view_costs(jobs))
    if ensembles:
        lines += _section("Ensembles (averaged softmax of each cell's seeds, test split)",
                          _ensemble_table(ensembles))
    lines += _failed_lines(jobs)
    for img in images:
        lines += [f"![{img}](plots/{img})", ""]
    lines += ["Tables: `results.csv` (one row per job), `summary.csv` (per cell).", ""]
    return "\n".join(lines)


def _verdict_sections(spec: ExperimentSpec, verdict: dict, metric: str) -> list[str]:
    """A `best` rule's levels x cells, then every comparison of the claim's rules, the correction,
    and which parts the set-up settled."""
    lines = []
    if spec.verdict.kind == "best" and verdict.get("evidence"):
        lines += _section(f"{metric} of each {spec.verdict.by} in each cell, and the recommended one",
                          best_table(verdict["evidence"]))
    if verdict.get("tests"):
        lines += _section(family_text(verdict), rules_table(verdict))
        lines += [parts_text(verdict), ""]
    return lines


def _what(metric: str) -> str:
    if metric in TARGET_METRICS:
        return "median over seeds and how many runs reached the target; censored, never averaged"
    return "mean ± 95% CI half-width over seeds"


def family_text(verdict: dict) -> str:
    """'Comparisons: Holm-Bonferroni over 7 comparisons (family-wise alpha 0.05)'."""
    fam = verdict.get("family") or {}
    n = fam.get("comparisons", 0)
    return (f"Comparisons: {fam.get('method', 'Holm-Bonferroni')} over {n} comparison"
            f"{'' if n == 1 else 's'} (family-wise alpha {fam.get('alpha', 0.05)})")


def rules_table(verdict: dict):
    """One row per comparison of the claim's rules: what, effect [95% CI], test, p, Holm p,
    outcome, and for an undecided one the smallest detectable effect or why it cannot be settled."""
    import pandas as pd

    from cnnlab.lab.verdicts import cond

    rows = []
    for t in verdict.get("tests") or []:
        note = detectable_text(t) if _finite(t.get("detectable")) else t.get("why") or ""
        rows.append({"rule": t.get("rule", 1), "cell": cond(t["cell"]) or "all", "compare": t["compare"],
                     "effect [95% CI]": _effect(t) + _SCALES.get(t.get("scale"), ""),
                     "test": f"{t['test']} ({t['n']})",
                     "p": _pval(t["p"]), "Holm p": _pval(t.get("p_holm")), "outcome": t["outcome"],
                     "note": note})
    table = pd.DataFrame(rows)
    return table.fillna("") if not table.empty else table


def parts_text(verdict: dict) -> str:
    """Which of a claim's rules this set-up settled, which it left undecided (with the smallest
    effects it could have detected) and which it cannot settle at all (and why)."""
    groups: dict[str, list[str]] = {}
    for i, part in enumerate(verdict.get("parts") or [verdict], 1):
        label, why = _part_status(part)
        groups.setdefault(label, []).append(f"rule {i}" + (f" ({why})" if why else ""))
    return " ".join(f"{label}: {', '.join(groups[label])}." for label in
                    ("Settled", "Undecided", "Cannot be settled by this set-up") if label in groups)


def _part_status(part: dict) -> tuple[str, str]:
    """(Settled / Undecided / Cannot be settled by this set-up, and why) for one rule."""
    open_tests = [t for t in part.get("tests") or [] if t["outcome"] == "inconclusive"]
    if part["verdict"] in ("supported", "not supported"):
        return "Settled", part["verdict"]
    if open_tests and all(t.get("why") for t in open_tests):
        return "Cannot be settled by this set-up", open_tests[0]["why"]
    sized = [t for t in open_tests if _finite(t.get("detectable"))]
    worst = max(sized, key=lambda t: t["detectable"]) if sized else None
    return "Undecided", detectable_text(worst) if worst else ""


_SCALES = {"log ratio": " (ratio a/b)", "relative deviation": " (relative)"}  # else a - b


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _effect(t: dict) -> str:
    e, lo, hi = t.get("effect"), t.get("ci_lo"), t.get("ci_hi")
    if not _finite(e):
        return "open (censored)" if _finite(lo) or _finite(hi) else "-"
    bounds = f" [{_num(lo, e)}, {_num(hi, e)}]" if lo is not None and hi is not None else ""
    return f"{_num(e, e)}{bounds}"


def _pval(p) -> str:
    if not _finite(p):
        return "-"
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def _section(title: str, table) -> list[str]:
    from cnnlab.tables import markdown_table

    return [f"## {title}", "", markdown_table(table), ""]


def _ensemble_table(ensembles: list[dict]):
    """One row per cell: its members' mean and best accuracy beside the ensemble's."""
    import pandas as pd

    return pd.DataFrame([{"cell": e["cell"] or "all", "members": e["n_members"],
                          "members mean": sum(e["members"]) / len(e["members"]),
                          "best member": max(e["members"]),
                          "ensemble": e["ensemble_acc"]} for e in ensembles])


def _failed_lines(jobs) -> list[str]:
    failed = jobs[jobs.status == "failed"] if not jobs.empty else jobs
    if failed.empty:
        return []
    return ["## Failed jobs", "", *[f"- {r.job}: {r.error}" for r in failed.itertuples()], ""]


def _numeric(values):
    import pandas as pd

    converted = pd.to_numeric(pd.Series(values), errors="coerce")
    return converted.notna().all(), converted


def _plots(sweep_dir: Path, jobs, summary, axes, metric, spec=None) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")

    out = sweep_dir / "plots"
    out.mkdir(exist_ok=True)
    groups = [a for a in axes if a != "seed"]
    if metric in TARGET_METRICS and "median" in summary.columns:  # censored: medians, no bars
        summary = summary.assign(mean=summary["median"], ci_lo=summary["median"], ci_hi=summary["median"])
    plotted = groups
    if spec is not None and getattr(spec, "measure", None) and spec.table.rows in groups:
        # a measurement has many key columns: one plot, the table's rows along x
        plotted = [spec.table.rows]
    written = [_plot_axis(out, summary, groups, axis, metric, spec) for axis in plotted]
    curves = _curves(sweep_dir, jobs, groups)
    if curves is not None:
        written.append(_plot_curves(out, curves))
    return written


def _plot_axis(out: Path, summary, groups: list[str], axis: str, metric: str, spec) -> str:
    """metric against one axis, a line per combination of the other axes; returns the file name."""
    import matplotlib.pyplot as plt

    others, series = _series(summary, groups, axis, spec)
    numeric, _ = _numeric(summary[axis])
    # categories share one set of positions, so series with different levels line up
    cats = list(dict.fromkeys(summary[axis].astype(str)))
    many = len(series) > 8
    fig, ax = plt.subplots(figsize=(9 if many else 6, 4))
    for key, sub in series:
        key = key if isinstance(key, tuple) else (key,)
        label = ", ".join(f"{o}={axis_text(k)}" for o, k in zip(others, key)
                          if summary[o].nunique() > 1) or metric
        _errorbar(ax, sub, axis, cats if not numeric else None, label)
    _x_axis(ax, summary[axis], cats if not numeric else None)
    ax.set_xlabel(axis)
    ax.set_ylabel(f"{metric} (median)" if metric in TARGET_METRICS else f"{metric} (mean, 95% CI)")
    ax.grid(alpha=0.3)
    if many:
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend(fontsize=7)
    fig.tight_layout()
    name = f"{metric}_vs_{axis}.png".replace("/", "_")
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def _series(summary, groups: list[str], axis: str, spec) -> tuple[list[str], list]:
    """(others, series): the axes that tell a plot's lines apart, and (key, rows) per line."""
    others = [g for g in groups if g != axis]
    cols = spec.table.cols if spec is not None and axis == spec.table.rows else None
    if cols in others and not summary.duplicated([axis, cols]).any():
        others = [cols]  # the other keys follow from the row (a layer's suite and kernel)
    return others, list(summary.groupby(others, sort=False)) if others else [((), summary)]


def _errorbar(ax, sub, axis: str, cats: Optional[list], label: str) -> None:
    """One series' means with their 95% intervals; `cats` places categories (None: numeric x)."""
    import pandas as pd

    if cats is None:
        sub = sub.iloc[list(pd.to_numeric(sub[axis]).argsort())]
        x = pd.to_numeric(sub[axis])
    else:
        x = [cats.index(v) for v in sub[axis].astype(str)]
    err = [(sub["mean"] - sub["ci_lo"]).clip(lower=0).fillna(0).replace(math.inf, 0),
           (sub["ci_hi"] - sub["mean"]).clip(lower=0).fillna(0).replace(math.inf, 0)]
    ax.errorbar(x, sub["mean"], yerr=err, marker="o", capsize=3, label=label)


def _x_axis(ax, values, cats: Optional[list]) -> None:
    """Category labels, or a log scale for positive numbers spanning 20x or more."""
    import pandas as pd

    if cats is not None:
        ax.set_xticks(list(range(len(cats))), cats, rotation=30, ha="right")
        return
    x = pd.to_numeric(values)
    if (x > 0).all() and x.max() / x.min() >= 20:
        ax.set_xscale("log")


LEGEND_INSIDE = 8  # more series than this: the legend goes beside the axes, not over the lines


def _plot_curves(out: Path, curves: dict, name: str = "learning_curves.png") -> str:
    """Validation accuracy per epoch, one line per cell (mean over seeds); with many cells the
    legend sits right of the axes and line styles repeat less often than the 10 colours."""
    import matplotlib.pyplot as plt

    many = len(curves) > LEGEND_INSIDE
    # bbox_inches="tight" below widens the saved figure to hold a legend beside the axes
    fig, ax = plt.subplots(figsize=(6, max(4.0, 0.2 * len(curves)) if many else 4))
    for i, (label, c) in enumerate(curves.items()):
        ax.plot(c.index, c.values, label=label, linestyle=("-", "--", ":", "-.")[(i // 10) % 4])
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (mean over seeds)")
    ax.grid(alpha=0.3)
    if many:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    else:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / name, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return name


def redraw_curves(sweep_dir: Path, spec: Optional[ExperimentSpec], out_file: Path) -> bool:
    """The sweep's learning curves drawn again into `out_file` (the claims report's copy) from
    its results.csv and job folders, the sweep folder untouched; False when there is nothing to
    draw (no results.csv, no finished job with a metrics.csv)."""
    import pandas as pd

    path = Path(sweep_dir) / "results.csv"
    if not path.is_file() or path.stat().st_size <= 1:
        return False
    jobs = tuning.selected(pd.read_csv(path))
    if jobs.empty or "job" not in jobs.columns or "status" not in jobs.columns:
        return False
    groups = [a for a in swept_axes(jobs, spec) if a != "seed"]
    curves = _curves(Path(sweep_dir), jobs, groups)
    if curves is None:
        return False
    _plot_curves(out_file.parent, curves, out_file.name)
    return True


def _curves(sweep_dir: Path, jobs, groups):
    import pandas as pd

    if jobs.empty:
        return None
    frames = []
    for row in jobs[jobs.status.isin(["done", "diverged"])].to_dict("records"):
        path = sweep_dir / "jobs" / row["job"] / "run" / "metrics.csv"
        if path.exists():
            m = pd.read_csv(path)[["epoch", "val_acc"]]
            m["cell"] = ", ".join(f"{g}={axis_text(row[g])}" for g in groups) or "all"
            frames.append(m)
    if not frames:
        return None
    allm = pd.concat(frames)
    return {cell: sub.groupby("epoch").val_acc.mean() for cell, sub in allm.groupby("cell")}
