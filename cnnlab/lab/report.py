"""A sweep's tables, verdict, plots and report.md, computed with pandas from its job folders.

results.csv: one row per job (the swept axes, then status and metrics).
summary.csv: grouped over every axis but the seed: mean, std, n and the 95% confidence interval.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from cnnlab.lab.experiment import ExperimentSpec, decide, mean_ci
from cnnlab.lab.sweep import job_table

AXIS_EXCLUDE = {"job", "status", "error"}


@dataclass
class Report:
    jobs: Any  # DataFrame, one row per job
    summary: Any  # DataFrame, one row per cell
    axes: list[str]
    verdict: Optional[dict]
    path: Path


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
        stats = mean_ci(pd.to_numeric(sub[metric], errors="coerce").tolist())
        extra = {"diverged": int((sub.status == "diverged").sum())} if "status" in sub else {}
        rows.append({**dict(zip(groups, key)), **stats, **extra})
    return pd.DataFrame(rows)


def build(sweep_dir: Path, spec: Optional[ExperimentSpec], metric: str = "test_acc",
          plots: bool = True) -> Report:
    """Write results.csv, summary.csv, verdict.json, plots/ and report.md into the sweep folder."""
    from cnnlab.run import write_text_atomic

    jobs = job_table(sweep_dir, spec.target if spec is not None else None)
    if spec is not None and spec.views and not jobs.empty:
        jobs = view_rows(sweep_dir, jobs, list(spec.views))
    axes = swept_axes(jobs, spec) if not jobs.empty else []
    front = [*axes, "status"]
    if not jobs.empty:
        jobs = jobs[[*front, *[c for c in jobs.columns if c not in front]]]
        jobs = _sorted(jobs, axes, spec)
    jobs.to_csv(sweep_dir / "results.csv", index=False)
    summary = summarise(jobs, axes, metric)
    summary.to_csv(sweep_dir / "summary.csv", index=False)
    ensembles = _ensembles(sweep_dir, jobs, axes) if spec is not None and spec.ensemble else None
    verdict = None
    if spec is not None and spec.verdict is not None:
        ok = jobs[jobs.status.isin(["done", "diverged"])] if not jobs.empty else jobs
        verdict = decide(spec, ok, ensembles)
        verdict = {"claim": spec.claim, "statement": spec.statement, **verdict}
        write_text_atomic(sweep_dir / "verdict.json", json.dumps(verdict, indent=2, default=_json) + "\n")
    images = _plots(sweep_dir, jobs, summary, axes, metric, spec) if plots and not summary.empty else []
    write_text_atomic(sweep_dir / "report.md", _markdown(sweep_dir, spec, jobs, summary, axes, metric,
                                                         verdict, images, ensembles))
    return Report(jobs=jobs, summary=summary, axes=axes, verdict=verdict, path=sweep_dir)


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
    the model and data loaded once."""
    from cnnlab.data import augment
    from cnnlab.evaluation import views as vw
    from cnnlab.data.loader import make_loader
    from cnnlab.evaluation.ensemble import load_run
    from cnnlab.evaluation.evaluate import predict_views

    cfg, model, bundle = load_run(run_dir)
    loader = make_loader(bundle.test, cfg.trainer.eval_batch_size, train=False, bundle=bundle,
                         device="cpu", seed=0, workers=cfg.data.workers)
    crop, resize = vw.geometry(bundle.image_size, min(augment.input_size(cfg.aug, bundle.image_size)))
    out = {}
    for mode in modes:
        name, _, scale_text = mode.partition(":")
        m = predict_views(model, loader, name, crop, vw.parse_scales(scale_text), resize=resize)
        out[mode] = {"test_acc": m["top1"], "test_top5": m["top5"], "test_loss": m["nll"],
                     "view_ms_per_image": m["ms_per_image"], "views_per_image": m["views"]}
    return out


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
    rows = (spec.table.rows if spec and spec.table.rows else None) or groups[0]
    cols = (spec.table.cols if spec and spec.table.cols else None)
    if cols is None and len(groups) == 2:
        cols = [g for g in groups if g != rows][0]
    view = summary.assign(value=summary.apply(cell_text, axis=1))
    if cols is None or cols not in groups or rows not in groups:
        return view[[*groups, "value"]]
    # more than two axes: the others stay as leading index columns (suite, layer x algo)
    index = [g for g in groups if g not in (rows, cols)] + [rows]
    table = view.pivot_table(index=index, columns=cols, values="value", aggfunc="first", sort=False)
    if table.isna().to_numpy().mean() > 0.5:  # most cells empty (design x comparison): stay long
        return view[[*groups, "value"]]
    # pivot sorts labels as strings (2, 64, 8); keep the order of the sorted summary instead
    order = list(dict.fromkeys(zip(*(view[i] for i in index)))) if len(index) > 1 else list(dict.fromkeys(view[rows]))
    table = table.reindex(index=order, columns=list(dict.fromkeys(view[cols])))
    table.columns = [f"{cols}={c}" for c in table.columns]
    return table.reset_index()


def _markdown(sweep_dir, spec, jobs, summary, axes, metric, verdict, images, ensembles=None) -> str:
    from cnnlab.tables import markdown_table

    lines = [f"# Sweep {sweep_dir.name}", ""]
    if spec is not None:
        lines += [f"**Claim {spec.claim}**: {spec.statement}", ""]
    if verdict is not None:
        lines += [f"**Verdict: {verdict['verdict']}** ({verdict['text']})", ""]
    per_job = jobs.drop_duplicates("job") if "job" in jobs.columns else jobs  # views repeat jobs
    counts = per_job.status.value_counts().to_dict() if not jobs.empty else {}
    lines += ["Jobs: " + ", ".join(f"{v} {k}" for k, v in counts.items()), ""]
    lines += [f"## {metric} (mean ± 95% CI half-width over seeds)", "",
              markdown_table(table_view(summary, spec, axes)), ""]
    if verdict is not None and spec.verdict.kind == "best" and verdict.get("evidence"):
        lines += [f"## {metric} of each {spec.verdict.by} in each cell, and the recommended one", "",
                  markdown_table(best_table(verdict["evidence"])), ""]
    if spec is not None and spec.views and "view_ms_per_image" in jobs.columns:
        lines += ["## Cost of each test-time view mode (test split, one process, one after another)", "",
                  markdown_table(view_costs(jobs)), ""]
    if ensembles:
        import pandas as pd

        lines += ["## Ensembles (averaged softmax of each cell's seeds, test split)", "",
                  markdown_table(pd.DataFrame([{"cell": e["cell"] or "all", "members": e["n_members"],
                                                "members mean": sum(e["members"]) / len(e["members"]),
                                                "best member": max(e["members"]),
                                                "ensemble": e["ensemble_acc"]} for e in ensembles])), ""]
    failed = jobs[jobs.status == "failed"] if not jobs.empty else jobs
    if not failed.empty:
        lines += ["## Failed jobs", ""]
        lines += [f"- {r.job}: {r.error}" for r in failed.itertuples()] + [""]
    for img in images:
        lines += [f"![{img}](plots/{img})", ""]
    lines += ["Tables: `results.csv` (one row per job), `summary.csv` (per cell).", ""]
    return "\n".join(lines)


def _numeric(values):
    import pandas as pd

    converted = pd.to_numeric(pd.Series(values), errors="coerce")
    return converted.notna().all(), converted


def _plots(sweep_dir: Path, jobs, summary, axes, metric, spec=None) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    out = sweep_dir / "plots"
    out.mkdir(exist_ok=True)
    written = []
    groups = [a for a in axes if a != "seed"]
    plotted = groups
    if spec is not None and getattr(spec, "measure", None) and spec.table.rows in groups:
        # a measurement has many key columns: one plot, the table's rows along x
        plotted = [spec.table.rows]
    for axis in plotted:
        others = [g for g in groups if g != axis]
        cols = spec.table.cols if spec is not None and axis == spec.table.rows else None
        if cols in others and not summary.duplicated([axis, cols]).any():
            others = [cols]  # the other keys follow from the row (a layer's suite and kernel)
        series = list(summary.groupby(others, sort=False)) if others else [((), summary)]
        numeric, _ = _numeric(summary[axis])
        # categories share one set of positions, so series with different levels line up
        cats = list(dict.fromkeys(summary[axis].astype(str)))
        many = len(series) > 8
        fig, ax = plt.subplots(figsize=(9 if many else 6, 4))
        for key, sub in series:
            if numeric:
                sub = sub.iloc[list(pd.to_numeric(sub[axis]).argsort())]
                x = pd.to_numeric(sub[axis])
            else:
                x = [cats.index(v) for v in sub[axis].astype(str)]
            err = [(sub["mean"] - sub["ci_lo"]).clip(lower=0).fillna(0).replace(math.inf, 0),
                   (sub["ci_hi"] - sub["mean"]).clip(lower=0).fillna(0).replace(math.inf, 0)]
            key = key if isinstance(key, tuple) else (key,)
            label = ", ".join(f"{o}={k}" for o, k in zip(others, key) if summary[o].nunique() > 1) or metric
            ax.errorbar(x, sub["mean"], yerr=err, marker="o", capsize=3, label=label)
        if not numeric:
            ax.set_xticks(list(range(len(cats))), cats, rotation=30, ha="right")
        elif (pd.to_numeric(summary[axis]) > 0).all() and \
                pd.to_numeric(summary[axis]).max() / pd.to_numeric(summary[axis]).min() >= 20:
            ax.set_xscale("log")
        ax.set_xlabel(axis)
        ax.set_ylabel(f"{metric} (mean, 95% CI)")
        ax.grid(alpha=0.3)
        if many:
            ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        else:
            ax.legend(fontsize=7)
        fig.tight_layout()
        name = f"{metric}_vs_{axis}.png".replace("/", "_")
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(name)
    curves = _curves(sweep_dir, jobs, groups)
    if curves is not None:
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, c in curves.items():
            ax.plot(c.index, c.values, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation accuracy (mean over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "learning_curves.png", dpi=110)
        plt.close(fig)
        written.append("learning_curves.png")
    return written


def _curves(sweep_dir: Path, jobs, groups):
    import pandas as pd

    if jobs.empty:
        return None
    frames = []
    for row in jobs[jobs.status.isin(["done", "diverged"])].to_dict("records"):
        path = sweep_dir / "jobs" / row["job"] / "run" / "metrics.csv"
        if path.exists():
            m = pd.read_csv(path)[["epoch", "val_acc"]]
            m["cell"] = ", ".join(f"{g}={row[g]}" for g in groups) or "all"
            frames.append(m)
    if not frames:
        return None
    allm = pd.concat(frames)
    return {cell: sub.groupby("epoch").val_acc.mean() for cell, sub in allm.groupby("cell")}
