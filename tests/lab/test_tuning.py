"""Per-arm tuning (experiment `tune:`): parsing and checks, grid expansion, selection on the
validation split with the test split reported, and a real tiny tuned sweep."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from cnnlab.cli.main import app
from cnnlab.errors import UsageError
from cnnlab.lab import experiment as exp
from cnnlab.lab import report, tuning
from cnnlab.lab.jobs import write_job
from cnnlab.lab.sweep import plan
from cnnlab.lab.verdicts import decide, paired_differences

# the example experiment: two arms, each searching two learning rates on validation
EXAMPLE = """\
claim: C12
statement: a tiny tuned check (resnet8 beats lenet5 at each one's own best lr)
base: [data=digits, trainer.epochs=1, trainer.threads=1]
axes: {model: [lenet5, resnet8]}
tune: {optim.lr: [0.01, 0.03, 0.1]}
tune_metric: best_val_acc
tune_scales: {quick: {optim.lr: [0.03, 0.1]}}
seeds: [0, 1]
verdict: {kind: greater, a: {model: resnet8}, b: {model: lenet5}, paired: true}
scales: {full: [trainer.epochs=5]}
"""


def _write(tmp_path, text=EXAMPLE, name="tuned.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _load_with(tmp_path, old, new):
    assert old in EXAMPLE
    return exp.load(_write(tmp_path, EXAMPLE.replace(old, new)))


def test_tune_parses_and_expands_per_scale(tmp_path):
    spec = exp.load(_write(tmp_path))
    assert spec.tune == {"optim.lr": [0.01, 0.03, 0.1]} and spec.tune_metric == "best_val_acc"
    quick = exp.sweep_overrides(spec)
    assert quick[-2:] == ["optim.lr=0.03,0.1", "seed=0,1"]  # the quick grid, before the seeds
    assert "optim.lr=0.01,0.03,0.1" in exp.sweep_overrides(spec, "full")  # no full entry: `tune`
    assert tuning.mode("best_val_acc") == "max" and tuning.mode("val_loss") == "min"


def test_sweeps_without_tune_keep_their_overrides():
    spec = exp.ExperimentSpec(base=["data=digits"], axes={"model": ["lenet5", "resnet8"]}, seeds=[0, 1])
    assert exp.sweep_overrides(spec) == ["data=digits", "model=lenet5,resnet8", "seed=0,1"]
    jobs = pd.DataFrame([{"job": "a", "model": "lenet5", "seed": "0", "status": "done", "test_acc": 0.5}])
    marked, scores = tuning.mark(jobs, spec)
    assert scores is None and marked is jobs and tuning.selected(jobs) is jobs


@pytest.mark.parametrize("old, new, error", [
    ("axes: {model: [lenet5, resnet8]}", "axes: {model: [lenet5, resnet8], optim.lr: [0.1]}",
     "tune key 'optim.lr' is also an axis"),
    ("tune_metric: best_val_acc", "tune_metric: test_acc", "not a validation-split column"),
    ("tune: {optim.lr: [0.01, 0.03, 0.1]}", "tune: {optim.lr: []}", "non-empty list"),
    ("tune: {optim.lr: [0.01, 0.03, 0.1]}", "tune: {seed: [0, 1]}", "seed cannot be tuned"),
    ("trainer.threads=1]", "trainer.threads=1, optim.lr=0.1]", "also set by base or a scale"),
    ("{quick: {optim.lr:", "{quick: {optim.wd:", "not a tune key"),
    ("{quick: {optim.lr:", "{huge: {optim.lr:", "scale 'huge'"),
    ("verdict: {kind: greater, a: {model: resnet8}, b: {model: lenet5}, paired: true}",
     "verdict: {kind: differ, by: optim.lr}", "not a swept axis"),  # rules cannot name a tune key
])
def test_bad_tune_fails_when_the_file_is_read(tmp_path, old, new, error):
    with pytest.raises(UsageError, match=error):
        _load_with(tmp_path, old, new)


def test_unknown_tune_key_fails_at_plan_time_like_an_axis(tmp_path, outputs):
    text = EXAMPLE.replace("tune: {optim.lr: [0.01, 0.03, 0.1]}", "tune: {optim.lrr: [0.01, 0.1]}")
    spec = exp.load(_write(tmp_path, text.replace("tune_scales: {quick: {optim.lr: [0.03, 0.1]}}\n", "")))
    with pytest.raises(UsageError, match="optim.lrr"):
        plan([], outputs, experiment=spec)
    assert not (outputs / "sweeps").exists() or not list((outputs / "sweeps").iterdir())


def test_job_count_is_arms_times_settings_times_seeds(tmp_path, outputs):
    spec = exp.load(_write(tmp_path))
    quick = plan([], outputs, experiment=spec)  # tune_scales.quick: 2 lrs; every cell composes
    assert len(quick.jobs) == 2 * 2 * 2
    assert "2 arms x 2 settings (2 optim.lr) x 2 seeds = 8 jobs (x2 for tuning)" in quick.tuning
    assert len(exp.expand_grid(exp.sweep_overrides(spec, "full"))) == 2 * 3 * 2  # the whole grid
    assert "x3 for tuning" in tuning.describe(spec, "full")
    two_keys = _load_with(tmp_path, "tune: {optim.lr: [0.01, 0.03, 0.1]}",
                          "tune: {optim.lr: [0.01, 0.03, 0.1], optim.momentum: [0.0, 0.9]}")
    for scale, settings in (("quick", 2 * 2), ("full", 3 * 2)):  # the product of the keys' values
        jobs = exp.expand_grid(exp.sweep_overrides(two_keys, scale))
        assert len(jobs) == 2 * settings * 2 and len({tuple(j) for j in jobs}) == len(jobs)


def _fake_rows():
    """Two arms x three lrs x three seeds where validation and test disagree: lenet5 is best on
    validation at lr 0.01 but best on test at lr 0.1; resnet8 is best on validation at lr 0.1."""
    val = {("lenet5", "0.01"): 0.90, ("lenet5", "0.03"): 0.85, ("lenet5", "0.1"): 0.70,
           ("resnet8", "0.01"): 0.60, ("resnet8", "0.03"): 0.80, ("resnet8", "0.1"): 0.95}
    test = {("lenet5", "0.01"): 0.50, ("lenet5", "0.03"): 0.55, ("lenet5", "0.1"): 0.99,
            ("resnet8", "0.01"): 0.99, ("resnet8", "0.03"): 0.90, ("resnet8", "0.1"): 0.70}
    rows = []
    for (model, lr), v in val.items():
        rows += [{"job": f"{model}-{lr}-{s}", "model": model, "seed": str(s), "status": "done",
                  "optim.lr": lr, "best_val_acc": v + s / 100, "test_acc": test[model, lr] + s / 100}
                 for s in range(3)]
    return pd.DataFrame(rows)


def _spec(**verdict):
    return exp.ExperimentSpec(axes={"model": ["lenet5", "resnet8"]}, tune={"optim.lr": [0.01, 0.03, 0.1]},
                              seeds=[0, 1, 2], verdict=exp.VerdictSpec(**verdict) if verdict else None)


def test_selection_is_on_validation_and_reports_test():
    spec = _spec()
    jobs, scores = tuning.mark(_fake_rows(), spec)
    chosen = scores[scores.chosen].set_index("model")["optim.lr"].to_dict()
    assert chosen == {"lenet5": "0.01", "resnet8": "0.1"}  # the best-val settings, not the best-test
    kept = tuning.selected(jobs)
    assert len(kept) == 6 and set(kept.seed) == {"0", "1", "2"}  # every seed of the chosen setting
    summary = report.summarise(kept, ["model", "seed"], "test_acc").set_index("model")
    assert summary.loc["lenet5", "mean"] == pytest.approx(0.51)  # lr 0.01's test value
    assert summary.loc["resnet8", "mean"] == pytest.approx(0.71)  # lr 0.1's test value
    assert list(jobs.columns[:5]) == ["job", "model", "seed", "optim.lr", "tuned"]
    table = tuning.table(scores, spec)
    assert list(table.columns) == ["model", "optim.lr=0.01", "optim.lr=0.03", "optim.lr=0.1", "chosen"]
    assert table.set_index("model").loc["lenet5", "optim.lr=0.01"] == "0.9100 (n=3)"


def test_loss_is_minimised_ties_go_to_the_first_setting_and_nan_is_never_chosen():
    rows = _fake_rows().assign(val_loss=1.0)
    rows.loc[(rows.model == "lenet5") & (rows["optim.lr"] == "0.1"), "val_loss"] = 0.5
    rows.loc[(rows.model == "resnet8") & (rows["optim.lr"] == "0.01"), "val_loss"] = float("nan")
    spec = _spec()
    spec.tune_metric = "val_loss"
    scores = tuning.scores(rows, spec)
    chosen = scores[scores.chosen].set_index("model")["optim.lr"].to_dict()
    # lenet5: the lowest loss; resnet8: 0.03 and 0.1 tie, 0.01 is NaN: the first numeric in the grid
    assert chosen == {"lenet5": "0.1", "resnet8": "0.03"}
    assert tuning.scores(rows, spec, scale="full").chosen.sum() == 2
    nothing = rows.assign(val_loss=float("nan"))
    assert not tuning.scores(nothing, spec).chosen.any()
    assert tuning.selected(tuning.mark(nothing, spec)[0]).empty  # no validation score: no rows


def test_paired_verdict_pairs_by_seed_across_the_arms_own_settings():
    spec = _spec(kind="greater", a={"model": "resnet8"}, b={"model": "lenet5"}, paired=True)
    kept = tuning.selected(tuning.mark(_fake_rows(), spec)[0])
    # resnet8 at lr 0.1 (0.70, 0.71, 0.72) minus lenet5 at lr 0.01 (0.50, 0.51, 0.52), seed by seed
    diffs = paired_differences(kept, spec.verdict.a, spec.verdict.b, "test_acc", ["model", "seed"])
    assert diffs == pytest.approx([0.20] * 3)
    result = decide(spec, kept)
    assert "paired difference 0.2000" in result["text"]
    # the same 0.20 on all 3 seeds: no spread for a t-test, and the sign test on 3 pairs cannot
    # reach 0.05 (stats.no_spread), so the verdict asks for more seeds instead of claiming certainty
    assert result["tests"][0]["test"] == "sign test (no spread)"
    assert result["verdict"] == "inconclusive" and "more seeds needed" in result["text"]


def _fake_sweep(sweep_dir, rows):
    """Job folders as a finished sweep leaves them (job.json, status, run/summary.json)."""
    for r in rows.to_dict("records"):
        job_dir = sweep_dir / "jobs" / r["job"]
        (job_dir / "run").mkdir(parents=True)
        write_job(job_dir, overrides=[f"model={r['model']}", f"optim.lr={r['optim.lr']}", f"seed={r['seed']}"],
                  status="done")
        (job_dir / "run" / "summary.json").write_text(json.dumps(
            {"best_val_acc": r["best_val_acc"], "test_acc": r["test_acc"], "train_acc": 1.0}))


def test_report_shows_the_search_and_uses_the_chosen_rows(tmp_path):
    spec = _spec(kind="greater", a={"model": "resnet8"}, b={"model": "lenet5"}, paired=True)
    _fake_sweep(tmp_path, _fake_rows())
    r = report.build(tmp_path, spec, "test_acc", plots=False)
    results = pd.read_csv(tmp_path / "results.csv")
    assert len(results) == 18 and results.tuned.sum() == 6 and "optim.lr" in results.columns
    assert set(results[results.tuned]["optim.lr"].astype(str)) == {"0.01", "0.1"}
    summary = pd.read_csv(tmp_path / "summary.csv").set_index("model")
    assert summary.loc["lenet5", "mean"] == pytest.approx(0.51) and (summary.n == 3).all()
    assert r.verdict["tests"][0]["effect"] == pytest.approx(0.2) and len(r.jobs) == 6  # 0.71 - 0.51
    md = (tmp_path / "report.md").read_text()
    assert "Per-arm tuning of optim.lr" in md and "Jobs: 18 done" in md
    assert "| lenet5 | 0.9100 (n=3) | 0.8600 (n=3) | 0.7100 (n=3) | optim.lr=0.01 |" in md
    assert pd.read_csv(tmp_path / "tuning.csv").chosen.sum() == 2


@pytest.mark.slow
def test_a_tuned_sweep_runs_end_to_end_to_a_verdict(tmp_path, outputs):
    out = CliRunner().invoke(app, ["sweep", str(_write(tmp_path)), "--no-plots"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    assert "8 jobs (x2 for tuning)" in out.output
    (d,) = sorted((outputs / "sweeps").glob("tuned-*"))
    results = pd.read_csv(d / "results.csv")
    assert len(results) == 8 and set(results.status) == {"done"} and results.tuned.sum() == 4
    assert set(results["optim.lr"]) == {0.03, 0.1}  # the quick grid
    per_arm = results[results.tuned].groupby("model")["optim.lr"].nunique()
    assert (per_arm == 1).all()  # one setting per arm, every seed of it
    verdict = json.loads((d / "verdict.json").read_text())
    assert verdict["verdict"] in ("supported", "not supported", "inconclusive")
    assert "paired difference" in verdict["text"]
    kept = results[results.tuned]  # paired by seed within the chosen settings: one pair per seed
    assert len(paired_differences(kept, {"model": "resnet8"}, {"model": "lenet5"}, "test_acc",
                                  ["model", "seed"])) == 2
    assert "Per-arm tuning of optim.lr" in (d / "report.md").read_text()
