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
    for claim in CLAIMS:
        assert f"## {claim}: " in md
    assert "### conv_arithmetic (quick scale): supported" in md
    assert "### layer_shares (quick scale): supported" in md
    n_run = len(catalogue.latest_sweeps(fake_sweeps))
    n_idle = len(exp.list_experiments()) - n_run
    assert f"Experiments: {n_run} supported, {n_idle} not run." in md
    assert "No finished sweep of an experiment for this claim." in md  # e.g. C1, not run here
    assert "Machine: host_cpu" in md and "torch" in md
    assert "<table" in html and "<h2>C21: " in html and html.count("<img") == md.count("![")
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
