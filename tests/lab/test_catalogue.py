"""The claims catalogue and the one report (cnnlab.lab.claims, cnnlab.lab.catalogue, `cnnlab report`)."""

import json

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from cnnlab.lab import catalogue
from cnnlab.lab import experiment as exp
from cnnlab.lab import measures
from cnnlab.lab.claims import CLAIMS, claim_ids
from cnnlab.cli.main import app

runner = CliRunner()


def test_every_claim_has_an_experiment_and_every_experiment_names_known_claims():
    specs = [exp.load(p) for p in exp.list_experiments()]
    covered = {c for s in specs for c in claim_ids(s.claim)}
    assert set(CLAIMS) == {f"C{i}" for i in range(1, 25)}
    assert covered <= set(CLAIMS)
    missing = sorted(set(CLAIMS) - covered, key=lambda c: int(c[1:]))
    assert not missing, f"claims without an experiment: {missing}"


def test_claim_ids_parse_lists_and_the_no_claim_marker():
    assert claim_ids("C8, C9") == ["C8", "C9"] and claim_ids("c10") == ["C10"] and claim_ids("-") == []


@pytest.fixture(scope="module")
def _made_sweeps(tmp_path_factory):
    """Two finished sweeps of the shipped layer_shares / conv_arithmetic experiments, made once
    by the real sweep code (both are calculations: seconds, no training)."""
    outputs = tmp_path_factory.mktemp("catalogue") / "outputs"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CNNLAB_OUTPUTS", str(outputs))
        for name in ("conv_arithmetic", "layer_shares"):
            out = runner.invoke(app, ["sweep", name])
            assert out.exit_code == 0, out.output
    return outputs / "sweeps"


@pytest.fixture
def fake_sweeps(_made_sweeps, outputs):
    """A copy of those sweeps in this test's outputs folder (a test may doctor its copy)."""
    import shutil

    shutil.copytree(_made_sweeps, outputs / "sweeps")
    return outputs / "sweeps"


def test_report_renders_every_claim_with_tables_plots_and_verdicts(fake_sweeps, tmp_path):
    out = runner.invoke(app, ["report", str(fake_sweeps), "--out", str(tmp_path / "rep")])
    assert out.exit_code == 0, out.output
    md = (tmp_path / "rep" / "report.md").read_text()
    html = (tmp_path / "rep" / "report.html").read_text()
    # a report of two sweeps: the claims they test get a section, one line names the rest
    ran = {c for n in ("conv_arithmetic", "layer_shares") for c in claim_ids(exp.load(n).claim)}
    for claim in CLAIMS:
        assert (f"## {claim}: " in md) == (claim in ran)
    assert "### conv_arithmetic (quick scale): supported" in md
    assert "### layer_shares (quick scale): supported" in md
    n_run = len(catalogue.latest_sweeps(fake_sweeps))
    n_idle = len(exp.list_experiments()) - n_run
    assert f"Experiments: {n_run} supported, {n_idle} not run." in md
    (line,) = [ln for ln in md.splitlines() if ln.startswith("No finished sweep")]
    assert line.startswith("No finished sweep of an experiment for C1, C2, ")  # not run here
    assert all(c in line.replace(",", " ").split() for c in CLAIMS if c not in ran)
    assert "Machine: host_cpu" in md and "torch" in md
    assert "<table" in html and '<h2 id="c21">C21: ' in html and html.count("<img") == md.count("![")
    figures = list((tmp_path / "rep" / "figures").glob("*.png"))
    assert figures and all(f.stat().st_size > 1000 for f in figures)
    assert md.count("![") == len(figures)


def test_a_flipped_result_flips_the_reported_verdict(fake_sweeps, tmp_path):
    """Rebuild a sweep's verdict from doctored rows: linear layers now do most of the arithmetic."""
    from cnnlab.lab import report

    folder = catalogue.latest_sweeps(fake_sweeps)["layer_shares"]
    for rows_csv in (folder / "jobs").glob("*/rows.csv"):
        df = pd.read_csv(rows_csv)
        conv, lin = df.kind == "conv", df.kind == "linear"
        df.loc[conv, "macs_share"], df.loc[lin, "macs_share"] = 0.05, 0.95
        df.to_csv(rows_csv, index=False)
    report.build(folder, exp.load("layer_shares"), "params_share", plots=False)
    assert json.loads((folder / "verdict.json").read_text())["verdict"] == "not supported"
    runner.invoke(app, ["report", str(fake_sweeps), "--out", str(tmp_path / "rep")])
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "### layer_shares (quick scale): not supported" in md and "Experiments: 1 supported, 1 not supported, " in md


def test_experiments_lists_the_catalogue_with_last_verdicts(fake_sweeps):
    out = runner.invoke(app, ["experiments"])
    assert out.exit_code == 0, out.output
    assert "conv_arithmetic" in out.output and "C21" in out.output and "supported" in out.output
    assert "not run" in out.output
    rows = pd.DataFrame(catalogue.rows(fake_sweeps))
    assert set(rows.claim) >= set(CLAIMS)
    assert rows.set_index("experiment").loc["conv_arithmetic", "verdict"] == "supported"


def test_report_of_a_folder_without_sweeps_is_a_usage_error(tmp_path):
    (tmp_path / "empty").mkdir()
    out = runner.invoke(app, ["report", str(tmp_path / "empty")])
    assert out.exit_code == 2 and "no finished experiment sweep" in out.output
    out = runner.invoke(app, ["report", str(tmp_path / "nope")])
    assert out.exit_code == 2 and "no sweeps folder" in out.output


def test_run_all_rejects_unknown_names_before_running_anything(outputs):
    out = runner.invoke(app, ["experiments", "run-all", "--only", "C99,bogus"])
    assert out.exit_code == 2 and "C99" in out.output and not (outputs / "sweeps").exists()


def test_run_all_runs_the_chosen_experiments_and_writes_one_report(outputs):
    out = runner.invoke(app, ["experiments", "run-all", "--only", "C21,C24", "--no-plots"])
    assert out.exit_code == 0, out.output
    names = {catalogue._saved(d)["name"] for d in (outputs / "sweeps").iterdir()}
    assert names == {"conv_arithmetic", "model_sizes"}
    (report_dir,) = list((outputs / "reports").iterdir())
    md = (report_dir / "report.md").read_text()
    assert "### model_sizes (quick scale):" in md and "### conv_arithmetic (quick scale): supported" in md


def test_sweep_yaml_records_the_machine(fake_sweeps):
    folder = catalogue.latest_sweeps(fake_sweeps)["conv_arithmetic"]
    machine = yaml.safe_load((folder / "sweep.yaml").read_text())["machine"]
    assert machine["cores"] >= 1 and machine["torch"] and machine["host_cpu"]


def test_calculation_measures_are_flagged():
    assert measures.get("conv-arithmetic").calculation and not measures.get("bench-train").calculation


@pytest.mark.slow
def test_run_all_skips_an_experiment_whose_data_is_missing_and_the_report_says_why(outputs, tmp_path,
                                                                                  monkeypatch):
    # conftest hides the OS package's Fashion-MNIST, so regularizers' quick scale finds no data
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "no-data-here"))
    out = runner.invoke(app, ["experiments", "run-all", "--only", "regularizers,C21",
                              "--jobs", "2", "--no-plots"])
    assert out.exit_code == 0, out.output
    assert "regularizers skipped" in out.output and "fashion_mnist" in out.output
    # the measurement ran (in-process, --jobs does not apply); the skipped one left no folder
    names = {catalogue._saved(d)["name"] for d in (outputs / "sweeps").iterdir()}
    assert names == {"conv_arithmetic"}
    (report_dir,) = list((outputs / "reports").iterdir())
    md = (report_dir / "report.md").read_text()
    c19 = md.split("## C19:")[1].split("\n## ")[0]
    assert "regularizers was not run: " in c19 and "apt-get install dataset-fashion-mnist" in c19


def test_jobs_that_did_not_finish_are_named_beside_the_verdict(fake_sweeps, tmp_path):
    folder = catalogue.latest_sweeps(fake_sweeps)["layer_shares"]
    df = pd.read_csv(folder / "results.csv", dtype={"error": str})
    df.loc[df.index[0], ["status", "error"]] = ["failed", "DataError: cifar10 is not here"]
    df.to_csv(folder / "results.csv", index=False)
    runner.invoke(app, ["report", str(fake_sweeps), "--out", str(tmp_path / "rep")])
    md = (tmp_path / "rep" / "report.md").read_text()
    n = catalogue.read_entry(folder).jobs
    assert f"### layer_shares (quick scale): supported (1 of {n} jobs did not finish)" in md
    assert "First error: DataError: cifar10 is not here" in md
    assert "Experiments: 2 supported, " in md  # still counted by its verdict


def _html_of(fake_sweeps, out_dir):
    """The report's HTML parsed: (text of each h1/h2/h3, toc links, styled spans, cells, the
    ids, the raw text)."""
    from html.parser import HTMLParser

    class Parse(HTMLParser):
        def __init__(self):
            super().__init__()
            self.stack, self.heads, self.links, self.spans, self.ids = [], [], [], [], set()
            self.cells, self.text = [], []

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            self.stack.append((tag, a))
            if "id" in a:
                self.ids.add(a["id"])
            if tag == "a" and "href" in a:
                self.links.append(a["href"])
            if tag in ("h1", "h2", "h3", "td", "th"):
                self.text = []

        def handle_endtag(self, tag):
            _, a = self.stack.pop() if self.stack else (None, {})
            if tag in ("h1", "h2", "h3"):
                self.heads.append((tag, "".join(self.text)))
            if tag in ("td", "th"):
                self.cells.append("".join(self.text))

        def handle_data(self, data):
            self.text.append(data)
            if self.stack and self.stack[-1][0] == "span":
                self.spans.append((self.stack[-1][1].get("class", ""), data))

    out = runner.invoke(app, ["report", str(fake_sweeps), "--out", str(out_dir)])
    assert out.exit_code == 0, out.output
    raw = (out_dir / "report.html").read_text()
    p = Parse()
    p.feed(raw)
    return p, raw


def test_html_report_renders_markdown_colours_verdicts_and_links_a_contents(fake_sweeps, tmp_path):
    p, raw = _html_of(fake_sweeps, tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    # markdown rendered, not escaped: no stars around verdicts, real <em> and <code>
    assert "*inconclusive*" not in raw and "<em>" in raw and "&lt;" not in raw.split("<body>")[1][:50]
    # plain text stays plain: C21's k*k*Cin*Cout is no emphasis, in md and in html
    assert "<em>k</em>" not in raw and "k*k*Cin*Cout" in raw and r"k\*k\*Cin" in md
    # verdicts coloured: in the headings and in the summary table
    assert ("v v-supported", "supported") in p.spans
    assert "color:#1a7f37" in raw and "color:#cf222e" in raw and "color:#b35900" in raw
    assert ("h3", "conv_arithmetic (quick scale): supported") in p.heads
    # text cells left-aligned
    assert "text-align:left" in raw and "text-align:right" not in raw
    # a table of contents whose links land on ids (md and html)
    assert "#summary" in p.links and "#c21" in p.links and "#conv_arithmetic" in p.links
    assert all(link[1:] in p.ids for link in p.links if link.startswith("#"))
    assert "- [C21: " in md and '<a id="c21"></a>' in md and "](#conv_arithmetic)" in md
    # the summary table lists the two experiments the report holds, not the 24 that did not run
    summary = md.split("## Summary")[1].split("<a id=")[0]
    assert "| conv_arithmetic |" in summary and "| augmentation_datasize |" not in summary


def test_report_paths_are_relative_to_the_report(fake_sweeps, tmp_path):
    _, raw = _html_of(fake_sweeps, tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    assert str(tmp_path) not in md and str(tmp_path) not in raw
    folder = catalogue.latest_sweeps(fake_sweeps)["conv_arithmetic"]
    rel = f"../outputs/sweeps/{folder.name}"
    assert f"]({rel})" in md and f'href="{rel}"' in raw
    assert (tmp_path / "rep" / rel).resolve() == folder.resolve()


@pytest.mark.parametrize("value, text", [(10.0, "10"), (10, "10"), (float("nan"), "none"),
                                         (None, "none"), ("null", "none"), ("nan", "none"),
                                         ("0.1", "0.1"), (True, "true"), ("shapes", "shapes"),
                                         (0.5, "0.5"), ("10.0", "10")])
def test_axis_values_print_as_a_reader_writes_them(value, text):
    from cnnlab.lab.report import axis_text

    assert axis_text(value) == text


def test_a_gap_in_a_numeric_axis_reads_back_as_none_not_nan(fake_sweeps, tmp_path):
    """A column with an unset value (null) reads back from CSV as floats and nan: the table
    shows 10 and none."""
    folder = catalogue.latest_sweeps(fake_sweeps)["conv_arithmetic"]
    entry = catalogue.read_entry(folder)
    axis = entry.table.columns[0]
    summary = pd.read_csv(folder / "summary.csv")
    values = [10, None] * (len(summary) // 2) + [10] * (len(summary) % 2)
    summary[axis] = values
    summary.to_csv(folder / "summary.csv", index=False)
    table = catalogue.read_entry(folder).table
    cells = set(table[axis].astype(str))
    assert cells <= {"10", "none"} and "none" in cells


def test_a_report_figure_of_many_learning_curves_keeps_its_legend_outside(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from cnnlab.lab import report

    curves = {f"data=digits, data.train_per_class={n}, transfer=s{i}": pd.Series([0.1, 0.5, 0.9],
                                                                                 index=[1, 2, 3])
              for i in range(10) for n in (10, "none")}
    captured = {}
    real = matplotlib.figure.Figure.savefig

    def spy(fig, *a, **k):
        fig.canvas.draw()
        ax, = fig.axes
        legend = ax.get_legend()
        captured["outside"] = legend.get_window_extent().x0 >= ax.get_window_extent().x1
        return real(fig, *a, **k)

    matplotlib.figure.Figure.savefig = spy
    try:
        report._plot_curves(tmp_path, curves)
    finally:
        matplotlib.figure.Figure.savefig = real
    assert captured["outside"]


def test_rejudge_decides_each_sweep_again_without_training(fake_sweeps, tmp_path):
    """A verdict.json left by older statistics (doctored here) is decided again from the jobs'
    results by `cnnlab report --rejudge`; no job runs (the job folders are unchanged)."""
    import json

    folder = catalogue.latest_sweeps(fake_sweeps)["conv_arithmetic"]
    stale = json.loads((folder / "verdict.json").read_text())
    stale["verdict"] = "not supported"
    (folder / "verdict.json").write_text(json.dumps(stale))
    jobs_before = sorted(p.stat().st_mtime_ns for p in (folder / "jobs").rglob("*") if p.is_file())
    out = runner.invoke(app, ["report", str(fake_sweeps), "--out", str(tmp_path / "rep"), "--rejudge"])
    assert out.exit_code == 0, out.output
    assert "conv_arithmetic: supported" in out.output
    assert json.loads((folder / "verdict.json").read_text())["verdict"] == "supported"
    assert sorted(p.stat().st_mtime_ns for p in (folder / "jobs").rglob("*") if p.is_file()) == jobs_before
    assert "conv_arithmetic (quick scale): supported" in (tmp_path / "rep" / "report.md").read_text()
