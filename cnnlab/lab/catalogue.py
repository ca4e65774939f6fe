"""The lecture-claims report: every claim, the latest finished sweep of each experiment that
tests it, its table, plots and verdict, in one report.md with figures and a report.html.

    cnnlab experiments                  the catalogue: claim -> experiments, quick time, verdict
    cnnlab experiments run-all          every experiment at a scale, then this report
    cnnlab report outputs/sweeps/       this report from the sweeps already there

A claim no experiment tests, or whose experiments have no finished sweep, is listed as such.
"""

from __future__ import annotations

import html
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from cnnlab.lab.claims import CLAIMS, NOTES, catalogue, claim_ids, sort_key
from cnnlab.lab.verdicts import fmt_value


@dataclass
class Entry:
    """One finished sweep of one experiment, read back from its folder."""

    name: str
    sweep_dir: Path
    spec: Any
    scale: str
    created: str
    seconds: float  # first job start to last job end
    jobs: int
    verdict: Optional[dict]
    table: Any  # DataFrame: the experiment's table layout
    plots: list = field(default_factory=list)
    machine: dict = field(default_factory=dict)
    seeds: list = field(default_factory=list)  # the seeds the sweep ran (its file may have changed since)
    failed: int = 0  # jobs that did not finish (failed, interrupted); a diverged run is a result
    first_error: str = ""

    @property
    def outcome(self) -> str:
        """The verdict, with how many jobs are missing from it when some did not finish."""
        v = (self.verdict or {}).get("verdict", "-")
        return f"{v} ({self.failed} of {self.jobs} jobs did not finish)" if self.failed else v


def latest_sweeps(root: Path) -> dict[str, Path]:
    """Experiment name -> its newest sweep folder under `root` that has a verdict."""
    out: dict[str, Path] = {}
    for d in sorted(Path(root).glob("*/sweep.yaml")):
        folder = d.parent
        if not (folder / "verdict.json").is_file():
            continue
        name = _saved(folder).get("name", folder.name)
        out[name] = folder  # sorted by name-time: the last one wins
    return out


def _saved(folder: Path) -> dict:
    import yaml

    return yaml.safe_load((folder / "sweep.yaml").read_text()) or {}


def read_entry(folder: Path) -> Optional[Entry]:
    """An Entry for a finished experiment sweep, or None for an ad-hoc sweep or a missing file."""
    from cnnlab.lab import experiment as exp
    from cnnlab.lab import report

    saved = _saved(folder)
    try:
        spec = exp.load(saved.get("experiment") or saved["name"])
    except Exception:
        return None
    jobs, summary = _csv(folder / "results.csv"), _csv(folder / "summary.csv")
    axes = report.swept_axes(jobs, spec) if not jobs.empty else []
    for col in axes:  # CSV read-back turns false into False and 0.1 into 0.1000: match the table
        if col in summary.columns:
            summary[col] = summary[col].map(fmt_value)
    plots = folder / "plots"
    return Entry(name=spec.name, sweep_dir=folder, spec=spec, scale=saved.get("scale", "quick"),
                 created=str(saved.get("created", "")), seconds=_seconds(folder),
                 jobs=len(list((folder / "jobs").glob("*/job.json"))),
                 verdict=json.loads((folder / "verdict.json").read_text()),
                 table=report.table_view(summary, spec, axes),
                 plots=sorted(p.name for p in plots.glob("*.png")) if plots.is_dir() else [],
                 machine=saved.get("machine") or {}, **_job_outcomes(jobs, spec))


def _csv(path: Path):
    import pandas as pd

    if not path.is_file() or path.stat().st_size <= 1:  # a sweep that ran no job writes an empty table
        return pd.DataFrame()
    return pd.read_csv(path)


def _seconds(folder: Path) -> float:
    """First job start to last job end, from the jobs' job.json (nan unless some have both)."""
    starts, ends = [], []
    for info in (folder / "jobs").glob("*/job.json"):
        j = json.loads(info.read_text())
        starts += [j["started"]] if j.get("started") else []
        ends += [j["ended"]] if j.get("ended") else []
    return (max(ends) - min(starts)) if starts and ends else float("nan")


def _job_outcomes(jobs, spec) -> dict:
    """Entry fields read from results.csv: jobs that did not finish, the first error and the
    seeds the sweep ran (the experiment file's, if the table has no seed column)."""
    import pandas as pd

    return {"failed": int((~jobs["status"].isin(["done", "diverged"])).sum()) if "status" in jobs else 0,
            "first_error": str(next((e for e in jobs.get("error", pd.Series(dtype=str)).dropna()), "")),
            "seeds": sorted(int(x) for x in jobs["seed"].dropna().unique()) if "seed" in jobs else list(spec.seeds)}


def rows(root: Optional[Path]) -> list[dict]:
    """The catalogue as rows: one per claim and experiment (a claim with none gets one row)."""
    from cnnlab.lab import experiment as exp

    specs = [exp.load(p) for p in exp.list_experiments()]
    latest = latest_sweeps(root) if root is not None and Path(root).is_dir() else {}
    entries = {s.name: read_entry(latest[s.name]) for s in specs if s.name in latest}
    out = [_row(claim, CLAIMS.get(claim, ""), name, entries.get(name))
           for claim, names in catalogue(specs).items() for name in names or [None]]
    out += [_row("-", s.statement, s.name, entries.get(s.name)) for s in specs if not claim_ids(s.claim)]
    return out


def _row(claim: str, statement: str, name: Optional[str], entry: Optional[Entry]) -> dict:
    """One catalogue row; `name` is None for a claim that no experiment tests."""
    return {"claim": claim, "statement": statement, "experiment": name or "(none)",
            "time": duration(entry.seconds) if entry else "-",
            "scale": entry.scale if entry else "-",
            "verdict": entry.outcome if entry and entry.verdict else
            ("not run" if name else "no experiment")}


def duration(seconds: float) -> str:
    """Seconds as "3 min 05 s" (or "42 s"); "-" for nan."""
    if seconds != seconds:  # nan
        return "-"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s:02d} s" if m else f"{s} s"


def build(root: Path, out_dir: Path, skipped: Optional[dict[str, str]] = None) -> Path:
    """Write report.md, report.html and figures/ for the latest sweep of every experiment under
    `root` (a sweeps folder), claim by claim; `skipped` (experiment -> why) notes those that did
    not run. Returns the report.md path."""
    from cnnlab.run import write_text_atomic

    latest = latest_sweeps(root)
    entries = [e for e in (read_entry(f) for f in latest.values()) if e is not None]
    entries.sort(key=lambda e: (sort_key(e.spec.claim), e.name))
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = out_dir / "figures"
    figures.mkdir(exist_ok=True)
    for e in entries:
        for png in e.plots:
            shutil.copyfile(e.sweep_dir / "plots" / png, figures / f"{e.name}-{png}")
    blocks = _blocks(entries, root, skipped or {})
    write_text_atomic(out_dir / "report.md", _markdown(blocks))
    write_text_atomic(out_dir / "report.html", _html(blocks))
    return out_dir / "report.md"


def _blocks(entries: list[Entry], root: Path, skipped: dict[str, str]) -> list[tuple[str, Any]]:
    """The report as (kind, content) blocks: h1/h2/p/table/img/list, rendered to md and html."""
    blocks = _intro(entries, root) + _summary(root)
    by_claim: dict[str, list[Entry]] = {}
    for e in entries:
        for c in claim_ids(e.spec.claim) or ["-"]:
            by_claim.setdefault(c, []).append(e)
    not_run = _not_run(skipped)
    shown: dict[str, str] = {}  # experiment -> the claim it was written out under
    for claim in [*CLAIMS, "-"]:
        found = by_claim.get(claim, [])
        if claim == "-" and not found and not not_run.get("-"):
            continue
        title = f"{claim}: {CLAIMS[claim]}" if claim in CLAIMS else "cnnlab's own defaults"
        blocks.append(("h2", title))
        if claim in NOTES:
            blocks.append(("p", NOTES[claim]))
        if not found:
            blocks.append(("p", "No finished sweep of an experiment for this claim."))
        blocks += [("p", text) for text in not_run.get(claim, [])]
        for e in found:
            blocks += _entry_blocks(e, claim, shown)
    return blocks


def _intro(entries: list[Entry], root: Path) -> list[tuple[str, Any]]:
    """The title, how to read the verdicts, and each machine the sweeps ran on."""
    keys = ("host_cpu", "cores", "gpu", "torch", "cnnlab", "python", "platform")
    machines = dict.fromkeys(json.dumps({k: e.machine.get(k) for k in keys}) for e in entries if e.machine)
    blocks: list[tuple[str, Any]] = [
        ("h1", "cnnlab: the lecture claims, tested"),
        ("p", f"Built {time.strftime('%Y-%m-%d %H:%M')} from the latest finished sweep of each "
              f"experiment under {root}. Each claim's rules break into comparisons over seeds "
              "(paired by seed where the experiment says so, Welch's t-test otherwise; rank tests "
              "for censored times to target), each with its effect, 95% interval and p-value; a "
              "claim's comparisons are Holm-Bonferroni corrected together at family-wise alpha "
              "0.05. *supported* / *not supported*: the corrected tests decide for / against the "
              "claim at this scale; *inconclusive*: they decide neither way, and the report gives "
              "the smallest effect the set-up could have detected or why it cannot settle it; "
              "*not testable here*: the machine lacks what the experiment requires, no job ran."),
    ]
    for m in machines:
        info = json.loads(m)
        blocks.append(("p", "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items())))
    return blocks


def _summary(root: Path) -> list[tuple[str, Any]]:
    """The catalogue table and a count of experiments by verdict."""
    import pandas as pd

    summary = pd.DataFrame(rows(root))
    named = summary.experiment != "(none)"  # one row per experiment; each claim without one counts
    counts = (pd.concat([summary[named].drop_duplicates("experiment"), summary[~named]])["verdict"]
              .str.replace(r" \(\d+ of \d+ jobs did not finish\)$", "", regex=True).value_counts())
    order = ["supported", "inconclusive", "not supported", "not testable here", "not run", "no experiment"]
    counts = counts.reindex([v for v in order if v in counts] + [v for v in counts.index if v not in order])
    return [("h2", "Summary"),
            ("p", "Experiments: " + ", ".join(f"{n} {v}" for v, n in counts.items()) + "."),
            ("table", summary)]


def _not_run(skipped: dict[str, str]) -> dict[str, list[str]]:
    """Claim -> a line for each skipped experiment that tests it, saying why it did not run."""
    from cnnlab.lab import experiment as exp

    not_run: dict[str, list[str]] = {}
    for name, why in skipped.items():
        for c in claim_ids(exp.load(name).claim) or ["-"]:
            not_run.setdefault(c, []).append(f"{name} was not run: {why}")
    return not_run


def _entry_blocks(e: Entry, claim: str, shown: dict[str, str]) -> list[tuple[str, Any]]:
    """One experiment under a claim: its verdict, what was run, its table and plots (once: under
    a later claim it points back to the first)."""
    v = e.verdict or {}
    blocks: list[tuple[str, Any]] = [("h3", f"{e.name} ({e.scale} scale): {e.outcome}")]
    if e.name in shown:  # an experiment of several claims is written out under the first
        return blocks + [("p", f"Its table, plots and numbers are under {shown[e.name]} above.")]
    shown[e.name] = claim
    if e.failed:
        blocks.append(("p", f"{e.failed} of {e.jobs} jobs did not finish; the verdict uses the "
                            f"others. First error: {e.first_error}"))
    blocks.append(("p", f"Statement tested: {e.spec.statement}"))
    load = e.machine.get("load_average")
    blocks.append(("p", f"Seeds {e.seeds}, {e.jobs} jobs, "
                        f"{duration(e.seconds)}, run {e.created}"
                        f"{f' (load average {load[0]} at the start)' if load else ''}; "
                        f"sweep folder {e.sweep_dir.name}."))
    blocks.append(("p", f"Decided by: {v.get('text', '-')}"))
    blocks += _rule_blocks(v)
    blocks.append(("p", f"{e.spec.metric} ({report_what(e.spec.metric)}):"))
    blocks.append(("table", e.table))
    blocks += [("img", f"figures/{e.name}-{png}") for png in e.plots]
    return blocks


def report_what(metric: str) -> str:
    from cnnlab.lab.report import _what

    return _what(metric)


def _rule_blocks(v: dict) -> list[tuple[str, Any]]:
    """The correction, every comparison of the claim's rules, and which parts this set-up
    settled, left undecided or cannot settle (verdicts from before the comparisons: nothing)."""
    from cnnlab.lab import report

    if not v.get("tests"):
        return []
    return [("p", report.family_text(v) + ":"), ("table", report.rules_table(v)),
            ("p", report.parts_text(v))]


def _markdown(blocks) -> str:
    from cnnlab.tables import markdown_table

    out = []
    for kind, content in blocks:
        if kind == "h1":
            out += [f"# {content}", ""]
        elif kind == "h2":
            out += [f"## {content}", ""]
        elif kind == "h3":
            out += [f"### {content}", ""]
        elif kind == "p":
            out += [str(content), ""]
        elif kind == "table":
            out += [markdown_table(content), ""]
        elif kind == "img":
            out += [f"![{Path(content).stem}]({content})", ""]
    return "\n".join(out)


def _html(blocks) -> str:
    body = []
    for kind, content in blocks:
        if kind in ("h1", "h2", "h3"):
            body.append(f"<{kind}>{html.escape(str(content))}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{html.escape(str(content))}</p>")
        elif kind == "table":
            body.append(content.to_html(index=False, border=0, classes="t", na_rep="-"))
        elif kind == "img":
            body.append(f'<p><img src="{html.escape(content)}" alt="{html.escape(Path(content).stem)}"></p>')
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
             "line-height:1.45}table.t{border-collapse:collapse;font-size:90%;margin:.5em 0}"
             "table.t td,table.t th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             "table.t th{background:#f3f3f3}img{max-width:640px}")
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>cnnlab claims report</title><style>{style}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")
