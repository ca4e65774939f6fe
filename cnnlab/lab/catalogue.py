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

VERDICT_COLOURS = {"supported": "#1a7f37", "not supported": "#cf222e", "inconclusive": "#b35900",
                   "not testable here": "#6e7781"}  # green, red, amber, grey


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


def rejudge(root: Path) -> list[tuple[str, str]]:
    """Decide the latest sweep of each experiment under `root` again: its tables, verdict.json
    and report.md rebuilt from the jobs' results with this cnnlab's statistics and the rules of
    its experiment file as they are now (no job runs). Returns (experiment, new verdict) pairs."""
    from cnnlab.lab import experiment as exp
    from cnnlab.lab import report

    out = []
    for name, folder in sorted(latest_sweeps(root).items()):
        saved = _saved(folder)
        spec = exp.load(saved.get("experiment") or saved["name"])
        r = report.build(folder, spec, spec.metric)
        out.append((name, (r.verdict or {}).get("verdict") or "no verdict"))
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
    for col in axes:  # CSV read-back turns false into False, 10 into 10.0 and null into nan
        if col in summary.columns:
            summary[col] = summary[col].map(report.axis_text)
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
            _figure(e, png, figures / f"{e.name}-{png}")
    blocks = _blocks(entries, root, skipped or {}, out_dir)
    write_text_atomic(out_dir / "report.md", _markdown(blocks))
    write_text_atomic(out_dir / "report.html", _html(blocks))
    return out_dir / "report.md"


def _figure(e: Entry, png: str, dest: Path) -> None:
    """A sweep's plot copied into the report; its learning curves drawn again (legends of many
    series beside the axes, axis values formatted) when the job folders allow it."""
    from cnnlab.lab import report

    if png == "learning_curves.png":
        try:
            if report.redraw_curves(e.sweep_dir, e.spec, dest):
                return
        except (OSError, ValueError, KeyError):  # an odd job folder: the sweep's own plot will do
            pass
    shutil.copyfile(e.sweep_dir / "plots" / png, dest)


def _blocks(entries: list[Entry], root: Path, skipped: dict[str, str],
            out_dir: Optional[Path] = None) -> list[tuple[str, Any]]:
    """The report as (kind, content) blocks: h1/h2/h3/p/table/img/toc/anchor, rendered to md and
    html. Only claims with a finished sweep (or a skipped experiment) get a section; one line
    names the rest."""
    by_claim: dict[str, list[Entry]] = {}
    for e in entries:
        for c in claim_ids(e.spec.claim) or ["-"]:
            by_claim.setdefault(c, []).append(e)
    not_run = _not_run(skipped)
    listed = [c for c in [*CLAIMS, "-"] if by_claim.get(c) or not_run.get(c)]
    empty = [c for c in CLAIMS if c not in listed]
    body: list[tuple[str, Any]] = []
    shown: dict[str, str] = {}  # experiment -> the claim it was written out under
    for claim in listed:
        body.append(("h2", (_text(_claim_title(claim)), _anchor(claim))))
        if claim in NOTES:
            body.append(("p", _text(NOTES[claim])))
        body += [("p", _text(text)) for text in not_run.get(claim, [])]
        for e in by_claim.get(claim, []):
            body += _entry_blocks(e, claim, shown, out_dir)
    if empty:
        body.append(("h2", ("Claims with no finished sweep", "no-sweep")))
        body.append(("p", f"No finished sweep of an experiment for {', '.join(empty)} under the "
                          f"sweeps given (`cnnlab experiments` lists their experiments)."))
    return (_intro(entries, root, out_dir) + [("h2", ("Contents", "contents")),
                                              ("toc", _toc(listed, by_claim, empty))]
            + _summary(root) + body)


def _claim_title(claim: str) -> str:
    return f"{claim}: {CLAIMS[claim]}" if claim in CLAIMS else "cnnlab's own defaults"


def _toc(listed: list[str], by_claim: dict[str, list[Entry]], empty: list[str]) -> list:
    """(title, anchor, [(experiment, anchor, outcome)]) per section, in the report's order."""
    toc = [(_text(_claim_title(c)), _anchor(c),
            [(e.name, _anchor(e.name), e.outcome) for e in by_claim.get(c, [])]) for c in listed]
    tail = [("Claims with no finished sweep", "no-sweep", [])] if empty else []
    return [("Summary", "summary", []), *toc, *tail]


def _anchor(name: str) -> str:
    """A claim's or experiment's id in both renderings: lower case, [a-z0-9_-] only."""
    import re

    return re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-") or "defaults"


def _relative(path: Path, out_dir: Optional[Path]) -> str:
    """`path` as the report (in out_dir) reaches it: relative, forward slashes."""
    import os

    if out_dir is None:
        return Path(path).name
    try:
        return Path(os.path.relpath(Path(path).resolve(), Path(out_dir).resolve())).as_posix()
    except ValueError:  # another drive (Windows): a relative path cannot reach it
        return Path(path).name


def _intro(entries: list[Entry], root: Path, out_dir: Optional[Path] = None) -> list[tuple[str, Any]]:
    """The title, how to read the verdicts, and each machine the sweeps ran on."""
    keys = ("host_cpu", "cores", "gpu", "torch", "cnnlab", "python", "platform")
    machines = dict.fromkeys(json.dumps({k: e.machine.get(k) for k in keys}) for e in entries if e.machine)
    blocks: list[tuple[str, Any]] = [
        ("h1", "cnnlab: the lecture claims, tested"),
        ("p", f"Built {time.strftime('%Y-%m-%d %H:%M')} from the latest finished sweep of each "
              f"experiment under `{_relative(root, out_dir)}`. Each claim's rules break into comparisons over seeds "
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
        blocks.append(("p", _text("Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))))
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
    return [("h2", ("Summary", "summary")),
            ("p", "Experiments: " + ", ".join(f"{n} {v}" for v, n in counts.items()) + "."),
            # the experiments the report holds; the count above and one line below name the rest
            ("table", summary[~summary["verdict"].isin(["not run", "no experiment"])])]


def _not_run(skipped: dict[str, str]) -> dict[str, list[str]]:
    """Claim -> a line for each skipped experiment that tests it, saying why it did not run."""
    from cnnlab.lab import experiment as exp

    not_run: dict[str, list[str]] = {}
    for name, why in skipped.items():
        for c in claim_ids(exp.load(name).claim) or ["-"]:
            not_run.setdefault(c, []).append(f"{name} was not run: {why}")
    return not_run


def _entry_blocks(e: Entry, claim: str, shown: dict[str, str],
                  out_dir: Optional[Path] = None) -> list[tuple[str, Any]]:
    """One experiment under a claim: its verdict, what was run, its table and plots (once: under
    a later claim it points back to the first)."""
    import re

    v = e.verdict or {}
    first = e.name not in shown
    blocks: list[tuple[str, Any]] = [("h3", (f"{e.name} ({e.scale} scale): ", e.outcome,
                                             _anchor(e.name) if first else ""))]
    if not first:  # an experiment of several claims is written out under the first
        return blocks + [("p", f"Its table, plots and numbers are under "
                               f"[{shown[e.name]}](#{_anchor(shown[e.name])}) above.")]
    shown[e.name] = claim
    if e.failed:
        blocks.append(("p", f"{e.failed} of {e.jobs} jobs did not finish; the verdict uses the "
                            f"others. First error: {_text(e.first_error)}"))
    blocks.append(("p", f"Statement tested: {_text(e.spec.statement)}"))
    load = e.machine.get("load_average")
    blocks.append(("p", f"Seeds {e.seeds}, {e.jobs} jobs, "
                        f"{duration(e.seconds)}, run {e.created}"
                        f"{f' (load average {load[0]} at the start)' if load else ''}; "
                        f"sweep folder [{e.sweep_dir.name}]({_relative(e.sweep_dir, out_dir)})."))
    decided = re.sub(r"=(null|nan|None)\b", "=none", str(v.get("text", "-")))  # as the table
    blocks.append(("p", f"Decided by: {_text(decided)}"))
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
    return [("p", _text(report.family_text(v)) + ":"), ("table", report.rules_table(v)),
            ("p", _text(report.parts_text(v)))]


def _text(text: str) -> str:
    """Plain text (a statement, an error, a verdict's numbers) made safe to put in markdown: the
    characters that would start emphasis, code or an escape are escaped (k*k*Cin stays k*k*Cin);
    an underscore inside a word (layer_shares) starts nothing, so it stays as it is."""
    import re

    text = re.sub(r"([\\`*])", r"\\\1", str(text))
    return re.sub(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])", r"\\_", text)


def _md_table(df) -> str:
    """A markdown table; a `|` or a line break inside a cell cannot end the cell or the row."""
    from cnnlab.tables import fmt

    def cell(v) -> str:
        text = "-" if v is None or (isinstance(v, float) and v != v) else fmt(v)
        return _text(text).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(cell(str(c)) for c in df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def _toc_lines(toc) -> list[str]:
    """The table of contents as a markdown list: each section, the experiments under it."""
    out = []
    for title, anchor, experiments in toc:
        line = f"- [{title}](#{anchor})"
        if experiments:
            line += ": " + ", ".join(f"[{name}](#{a}) ({outcome})" for name, a, outcome in experiments)
        out.append(line)
    return out


def _markdown(blocks) -> str:
    out = []
    for kind, content in blocks:
        if kind == "h1":
            out += [f"# {content}", ""]
        elif kind == "h2":
            title, anchor = content
            out += [f'<a id="{anchor}"></a>', "", f"## {title}", ""]
        elif kind == "h3":
            head, outcome, anchor = content
            out += ([f'<a id="{anchor}"></a>', ""] if anchor else []) + [f"### {head}{outcome}", ""]
        elif kind == "p":
            out += [str(content), ""]
        elif kind == "table":
            out += [_md_table(content), ""]
        elif kind == "toc":
            out += [*_toc_lines(content), ""]
        elif kind == "img":
            out += [f"![{Path(content).stem}]({content})", ""]
    return "\n".join(out)


def _renderer():
    """markdown-it-py (CommonMark, tables on, raw HTML off: text from configs stays text)."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table")


def _verdict_html(text: str) -> str:
    """An outcome ("inconclusive (3 of 9 jobs did not finish)") with its verdict word coloured."""
    for word in sorted(VERDICT_COLOURS, key=len, reverse=True):
        if text == word or text.startswith(word + " ("):
            rest = html.escape(text[len(word):])
            return f'<span class="v v-{_anchor(word)}">{html.escape(word)}</span>{rest}'
    return html.escape(text)


def _colour_verdicts(rendered: str) -> str:
    """Verdict words that the renderer left as a whole table cell or an emphasis, coloured."""
    import re

    words = "|".join(re.escape(w) for w in sorted(VERDICT_COLOURS, key=len, reverse=True))
    rendered = re.sub(rf"<td>(({words})( \(\d+ of \d+ jobs did not finish\))?)</td>",
                      lambda m: f"<td>{_verdict_html(html.unescape(m.group(1)))}</td>", rendered)
    return re.sub(rf"<em>({words})</em>",
                  lambda m: f"<em>{_verdict_html(m.group(1))}</em>", rendered)


def _html_block(md, kind: str, content) -> str:
    if kind == "h1":
        return f"<h1>{md.renderInline(str(content))}</h1>"
    if kind == "h2":
        title, anchor = content
        return f'<h2 id="{anchor}">{md.renderInline(title)}</h2>'
    if kind == "h3":
        head, outcome, anchor = content
        ident = f' id="{anchor}"' if anchor else ""
        return f"<h3{ident}>{md.renderInline(head)}{_verdict_html(outcome)}</h3>"
    if kind == "p":
        return _colour_verdicts(md.render(str(content)))
    if kind == "table":
        return _colour_verdicts(md.render(_md_table(content))).replace("<table>", '<table class="t">', 1)
    if kind == "toc":
        return _colour_verdicts(md.render("\n".join(_toc_lines(content)) + "\n").replace(
            "<ul>", '<ul class="toc">', 1))
    if kind == "img":
        return f'<p><img src="{html.escape(content)}" alt="{html.escape(Path(content).stem)}"></p>'
    return ""


def _html(blocks) -> str:
    md = _renderer()
    body = [_html_block(md, kind, content) for kind, content in blocks]
    colours = "".join(f".v-{_anchor(w)}{{color:{c};font-weight:600}}" for w, c in VERDICT_COLOURS.items())
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
             "line-height:1.45}table.t{border-collapse:collapse;font-size:90%;margin:.5em 0}"
             "table.t td,table.t th{border:1px solid #ccc;padding:3px 8px;text-align:left;"
             "vertical-align:top}table.t th{background:#f3f3f3}img{max-width:100%}"
             "ul.toc{line-height:1.6}h2{border-bottom:1px solid #ddd;padding-bottom:.2em}"
             "code{background:#f3f3f3;padding:0 .2em}" + colours)
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>cnnlab claims report</title><style>{style}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")
