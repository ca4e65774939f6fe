"""Verdicts on sound statistics (cnnlab.lab.verdicts): every comparison's effect, 95% interval,
p and Holm-adjusted p against scipy and hand-computed numbers; the claim-level false-alarm rate
when nothing differs; censored times to target; the `ratio` rule; "not testable here"."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from typer.testing import CliRunner

from cnnlab.lab import catalogue, report, stats
from cnnlab.lab import experiment as exp
from cnnlab.lab.verdicts import VERDICTS, arm_summary, decide

runner = CliRunner()


def _greater(a, b, **kw):
    return exp.VerdictSpec(kind="greater", a=a, b=b, **kw)


def _rows(cells: dict, metric: str = "test_acc") -> pd.DataFrame:
    """{(reg, seed-list of values)} -> job rows with axes reg and seed."""
    return pd.DataFrame([{"reg": reg, "seed": s, metric: v} for reg, vals in cells.items()
                         for s, v in enumerate(vals)])


# ---------------------------------------------------------------- each comparison against scipy

def test_welch_comparison_reports_effect_interval_and_p_as_scipy():
    a, b = [0.80, 0.83, 0.81, 0.86], [0.78, 0.80, 0.77]
    spec = exp.ExperimentSpec(axes={"reg": ["x", "none"]}, verdict=_greater({"reg": "x"}, {"reg": "none"}))
    (t,) = decide(spec, _rows({"x": a, "none": b}))["tests"]
    ref = sps.ttest_ind(a, b, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert t["test"] == "Welch t" and t["n"] == "4 vs 3"
    assert t["effect"] == pytest.approx(np.mean(a) - np.mean(b))
    assert (t["ci_lo"], t["ci_hi"]) == pytest.approx((ci.low, ci.high), rel=1e-9)
    assert t["p"] == pytest.approx(ref.pvalue, rel=1e-9) and t["p_holm"] == pytest.approx(ref.pvalue)


def test_paired_comparison_is_scipys_ttest_rel_on_matched_seeds():
    a, b = [0.81, 0.71, 0.92], [0.80, 0.69, 0.90]
    spec = exp.ExperimentSpec(axes={"reg": ["x", "none"]},
                              verdict=_greater({"reg": "x"}, {"reg": "none"}, paired=True))
    result = decide(spec, _rows({"x": a, "none": b}))
    (t,) = result["tests"]
    ref = sps.ttest_rel(a, b)
    assert t["test"] == "paired t" and t["n"] == "3 pairs"
    assert t["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert (t["ci_lo"], t["ci_hi"]) == pytest.approx(tuple(ref.confidence_interval(0.95)), rel=1e-9)
    assert t["outcome"] == result["verdict"] == ("supported" if ref.pvalue <= 0.05 else "inconclusive")


# ---------------------------------------------------------------- Holm across a claim's rules

def _claim(regs):
    rules = [_greater({"reg": r}, {"reg": "none"}, paired=True) for r in regs]
    return exp.ExperimentSpec(axes={"reg": ["none", *regs]}, verdict=rules[0], also=rules[1:])


def test_holm_runs_over_every_rule_of_the_claim():
    """Rule 1 alone would be supported (paired p = 0.035); beside two rules with nothing to show,
    Holm multiplies it by 3 and the claim is inconclusive."""
    none = [0.50, 0.70, 0.90]
    cells = {"none": none, "a": [x + d for x, d in zip(none, (0.010, 0.015, 0.020))],
             "b": [x + d for x, d in zip(none, (0.02, -0.03, 0.01))],
             "c": [x + d for x, d in zip(none, (-0.01, 0.02, -0.005))]}
    result = decide(_claim(["a", "b", "c"]), _rows(cells))
    raw = [sps.ttest_rel(cells[r], none).pvalue for r in "abc"]
    assert raw[0] == pytest.approx(0.0351, abs=1e-4)  # significant on its own
    order = sorted(range(3), key=lambda i: raw[i])  # Holm by hand: k-th smallest x (3 - k)
    expected, running = [0.0] * 3, 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (3 - k) * raw[i]))
        expected[i] = running
    assert [t["p_holm"] for t in result["tests"]] == pytest.approx(expected, rel=1e-9)
    assert result["family"] == {"method": "Holm-Bonferroni", "comparisons": 3, "alpha": 0.05}
    assert result["tests"][0]["outcome"] == "inconclusive" and result["verdict"] == "inconclusive"
    assert decide(_claim(["a"]), _rows({"none": none, "a": cells["a"]}))["verdict"] == "supported"


def test_a_clear_contradiction_survives_the_correction():
    none = [0.50, 0.70, 0.90]
    # (each arm's differences spread a little: with none, 3 pairs go to the sign test, p >= 0.25)
    cells = {"none": none, "a": [x + 0.05 + 0.001 * s for s, x in enumerate(none)],
             "b": [x - 0.04 - 0.001 * s for s, x in enumerate(none)]}
    result = decide(_claim(["a", "b"]), _rows(cells))
    assert [p["verdict"] for p in result["parts"]] == ["supported", "not supported"]
    assert result["verdict"] == "not supported"


def _c19_rows(rng, regs):
    """Nothing differs: every regulariser is the baseline, plus a seed effect shared by the arms
    (so pairing matters) and independent noise."""
    seed_effect = rng.normal(0, 0.02, 3)
    return pd.DataFrame([{"reg": r, "seed": s, "test_acc": 0.8 + seed_effect[s] + rng.normal(0, 0.01)}
                         for r in ["none", *regs] for s in range(3)])


def _false_alarms(spec, make_rows, trials, seed=0):
    """(before, after): how often some comparison goes significantly against the claim at raw
    p < 0.05 (the old per-rule intervals), and how often the claim is now "not supported"."""
    rng = np.random.default_rng(seed)
    before = after = 0
    for _ in range(trials):
        result = decide(spec, make_rows(rng))
        before += any(t["p"] < 0.05 and t["direction"] < 0 for t in result["tests"])
        after += result["verdict"] == "not supported"
    return before / trials, after / trials


def test_claim_level_false_alarms_stay_near_5_percent_c19():
    """C19's seven paired rules against one baseline, nothing differing: one rule going the
    wrong way by chance used to make the claim "not supported" (about 1 in 8 here, the arms
    sharing the baseline); with Holm over the family it is at most about 5%."""
    regs = ["weight_decay", "early_stop", "label_smoothing", "dropout", "mixup", "cutout", "cutmix"]
    before, after = _false_alarms(_claim(regs), lambda rng: _c19_rows(rng, regs), trials=150)
    assert before >= 0.08
    assert after <= 0.05


LEVELS = ["scratch", "linear_probe", "multi_probe", "finetune_top", "finetune_all"]
QUADRANT = [("shapes_style", "10", "linear_probe"), ("shapes_style", "null", "finetune_top"),
            ("digits", "10", "multi_probe"), ("digits", "null", "finetune_all")]


def _c4_spec():
    recommend = [{"when": {"data": d, "data.train_per_class": None if n == "null" else 10}, "best": b}
                 for d, n, b in QUADRANT]
    return exp.ExperimentSpec(axes={"data": ["shapes_style", "digits"], "data.train_per_class": [10, None],
                                    "transfer": LEVELS},
                              verdict=exp.VerdictSpec(kind="best", by="transfer", recommend=recommend))


def _c4_rows(rng):
    rows = []
    for d, n, _ in QUADRANT:
        seed_effect = rng.normal(0, 0.03, 3)
        rows += [{"data": d, "data.train_per_class": n, "transfer": lv, "seed": s,
                  "test_acc": 0.7 + seed_effect[s] + rng.normal(0, 0.01)} for lv in LEVELS for s in range(3)]
    return pd.DataFrame(rows)


def test_claim_level_false_alarms_stay_near_5_percent_c4():
    """C4's 16 comparisons (4 cells x 4 rivals of the recommended strategy), all strategies
    equal: some rival "beat" the recommended one by chance in about a third of experiments; now
    at most about 5%."""
    spec = _c4_spec()
    assert decide(spec, _c4_rows(np.random.default_rng(1)))["family"]["comparisons"] == 16
    before, after = _false_alarms(spec, _c4_rows, trials=100)
    assert before >= 0.2
    assert after <= 0.05


# ---------------------------------------------------------------- what an undecided rule reports

def test_an_inconclusive_comparison_reports_the_smallest_detectable_effect():
    none = [0.50, 0.70, 0.90]
    cells = {"none": none, "a": [x + d for x, d in zip(none, (0.02, -0.01, 0.01))],
             "b": [x + d for x, d in zip(none, (-0.01, 0.0, 0.02))]}
    result = decide(_claim(["a", "b"]), _rows(cells))
    t = result["tests"][0]
    diffs = [0.02, -0.01, 0.01]
    se = np.std(diffs, ddof=1) / math.sqrt(3)
    expected = (sps.t.ppf(1 - 0.05 / 2 / 2, 2) + sps.t.ppf(0.8, 2)) * se  # alpha / m, m = 2
    assert t["outcome"] == "inconclusive" and t["detectable"] == pytest.approx(expected, rel=1e-6)
    assert "could detect" in result["text"]
    assert "Undecided: rule 1 (could detect" in report.parts_text(result)
    table = report.rules_table(result)
    assert list(table.columns) == ["rule", "cell", "compare", "effect [95% CI]", "test", "p", "Holm p",
                                   "outcome", "note"]
    assert table["effect [95% CI]"][0] == f"{t['effect']:.4f} [{t['ci_lo']:.4f}, {t['ci_hi']:.4f}]"
    assert report.family_text(result).startswith("Comparisons: Holm-Bonferroni over 2 comparisons")


def test_differ_compares_every_pair_and_needs_every_pair_within_the_margin():
    spec = exp.ExperimentSpec(axes={"reg": ["x", "y", "z"]},
                              verdict=exp.VerdictSpec(kind="differ", by="reg", margin=0.05))
    same = _rows({"x": [0.800, 0.801, 0.802], "y": [0.801, 0.800, 0.802], "z": [0.802, 0.801, 0.800]})
    result = decide(spec, same)
    assert result["family"]["comparisons"] == 3 and result["verdict"] == "not supported"
    apart = _rows({"x": [0.80, 0.81, 0.82], "y": [0.60, 0.61, 0.62], "z": [0.70, 0.71, 0.72]})
    assert decide(spec, apart)["verdict"] == "supported"


# ---------------------------------------------------------------- censored times to target

def _target_rows(cells: dict) -> pd.DataFrame:
    """{arm: [epoch reached or None]} with a 10-epoch budget: a run that never reached the target
    has epochs_to_target = epochs_run + 1 (cnnlab.lab.sweep.to_target's marker)."""
    return pd.DataFrame([{"act": arm, "seed": s, "epochs_run": 10,
                          "epochs_to_target": 11.0 if e is None else float(e)}
                         for arm, es in cells.items() for s, e in enumerate(es)])


def test_a_censored_measure_is_never_averaged():
    rows = _target_rows({"tanh": [3, 5, None, 4, None], "relu": [2, 2, 3, 2, 3]})
    s = arm_summary(rows[rows.act == "tanh"], "epochs_to_target")
    assert math.isnan(s["mean"]) and s["median"] == 5 and s["text"] == "median 5, reached 3/5 by 10"
    summary = report.summarise(rows.assign(status="done"), ["act", "seed"], "epochs_to_target")
    assert summary["mean"].isna().all()  # (3 + 5 + 11 + 4 + 11) / 5 = 6.8 is nowhere
    assert list(report.table_view(summary, None, ["act", "seed"])["value"]) == [
        "median 5, reached 3/5 by 10", "median 2, reached 5/5 by 10"]
    half = arm_summary(_target_rows({"x": [2, None, None, 3]}), "epochs_to_target")
    assert half["text"] == "median > 10, reached 2/4 by 10" and math.isnan(half["median"])


def test_a_rule_on_a_censored_measure_decides_by_rank_against_scipy():
    """Five seeds per arm, tanh never reaching the target, ReLU always: only the order is known,
    and the Mann-Whitney test on it (scipy, exact, a censored run as any value above the budget)
    decides: p = 2/252."""
    spec = exp.ExperimentSpec(axes={"act": ["tanh", "relu"]}, metric="epochs_to_target",
                              target=exp.TargetSpec(), verdict=_greater({"act": "tanh"}, {"act": "relu"}))
    rows = _target_rows({"tanh": [None] * 5, "relu": [3, 4, 4, 5, 3]})
    (t,) = decide(spec, rows)["tests"]
    ref = sps.mannwhitneyu([11] * 5, [3, 4, 4, 5, 3], method="exact")
    assert t["test"] == "Mann-Whitney (censored)" and t["p"] == pytest.approx(ref.pvalue)
    assert t["p"] == pytest.approx(2 / 252) and t["outcome"] == "supported"
    assert math.isnan(t["effect"]) and t["ci_hi"] == math.inf  # tanh's epochs are only bounded below


def test_too_few_seeds_for_a_rank_test_is_said_not_guessed():
    spec = exp.ExperimentSpec(axes={"act": ["tanh", "relu"]}, metric="epochs_to_target",
                              target=exp.TargetSpec(),
                              verdict=_greater({"act": "tanh"}, {"act": "relu"}, paired=True))
    result = decide(spec, _target_rows({"tanh": [None, 9, None], "relu": [3, 4, 4]}))
    (t,) = result["tests"]
    assert t["test"] == "sign test (censored)" and t["p"] == pytest.approx(sps.binomtest(3, 3).pvalue)
    assert result["verdict"] == "inconclusive" and "cannot reach p <= 0.05" in t["why"]
    assert report.parts_text(result).startswith("Cannot be settled by this set-up: rule 1")
    # every run observed: the ordinary paired t-test, as scipy's
    (t,) = decide(spec, _target_rows({"tanh": [8, 9, 7], "relu": [3, 4, 4]}))["tests"]
    assert t["test"] == "paired t" and t["p"] == pytest.approx(sps.ttest_rel([8, 9, 7], [3, 4, 4]).pvalue)


def test_rank_intervals_are_the_order_statistics_of_the_differences():
    a, b = [5, 7, 9, 11, 13], [1, 2, 3, 4, 6]
    r = stats.censored_independent(a, [False] * 5, b, [False] * 5)
    diffs = sorted(x - y for x in a for y in b)
    # P(U <= 2) = 4/252 <= 0.025 < P(U <= 3) = 7/252: the 3rd smallest and 3rd largest of 25
    assert r.ci(0.95) == (diffs[2], diffs[-3]) and r.effect == float(np.median(diffs))
    assert r.p == pytest.approx(sps.mannwhitneyu(a, b, method="exact").pvalue)
    d = stats.censored_paired([3, 4, 5, 6, 7, 8], [False] * 5 + [True], [1] * 6, [False] * 6)
    assert d.p == pytest.approx(sps.binomtest(6, 6).pvalue) and d.ci(0.95) == (2.0, math.inf)


# ---------------------------------------------------------------- the ratio rule

def _ratio_spec(low, high, paired=True):
    return exp.ExperimentSpec(axes={"reg": ["scratch", "tuned"]}, metric="epochs_to_target",
                              target=exp.TargetSpec(),
                              verdict=exp.VerdictSpec(kind="ratio", a={"reg": "scratch"},
                                                      b={"reg": "tuned"}, paired=paired, range=[low, high]))


def test_ratio_is_the_paired_log_ratio_with_its_interval_against_scipy():
    scratch, tuned = [12.0, 10.0, 15.0, 11.0], [5.0, 4.0, 6.0, 4.0]
    rows = pd.DataFrame([{"reg": r, "seed": s, "epochs_to_target": v, "epochs_run": 30}
                         for r, vals in (("scratch", scratch), ("tuned", tuned)) for s, v in enumerate(vals)])
    result = decide(_ratio_spec(2, 3), rows)
    (t,) = result["tests"]
    logs = sps.ttest_rel(np.log(scratch), np.log(tuned))
    ci = logs.confidence_interval(0.95)
    geometric_mean_ratio = math.exp(np.mean(np.log(scratch) - np.log(tuned)))
    assert t["scale"] == "log ratio" and t["effect"] == pytest.approx(geometric_mean_ratio)
    assert (t["ci_lo"], t["ci_hi"]) == pytest.approx((math.exp(ci.low), math.exp(ci.high)), rel=1e-9)
    assert 2 < t["ci_lo"] and t["ci_hi"] < 3 and result["verdict"] == "supported"
    assert decide(_ratio_spec(3.5, None), rows)["verdict"] == "not supported"  # wholly below 3.5
    assert decide(_ratio_spec(2.4, None), rows)["verdict"] == "inconclusive"  # straddles 2.4
    assert decide(_ratio_spec(None, 2.0), rows)["verdict"] == "not supported"  # wholly above 2


def test_ratio_ranges_are_checked(tmp_path):
    path = tmp_path / "r.yaml"
    for bad, match in (("[]", "needs range"), ("[null, null]", "needs range"), ("[3, 2]", "low above high"),
                       ("[0, 2]", "must be positive")):
        path.write_text("axes: {model: [lenet5, resnet8]}\nverdict: {kind: ratio, a: {model: lenet5}, "
                        f"b: {{model: resnet8}}, range: {bad}}}\n")
        with pytest.raises(exp.UsageError, match=match):
            exp.load(path)


# ---------------------------------------------------------------- not testable here

def test_requirements_against_machines():
    spec = exp.load("data_parallel")
    assert spec.requires is not None and "not testable here" in VERDICTS
    assert "4 cores, this machine has 2" in exp.unmet_requirement(spec, {"cores": 2, "gpus": 0})
    assert exp.unmet_requirement(spec, {"cores": 4, "gpus": 0}) is None
    assert exp.unmet_requirement(spec, {"cores": 16, "gpus": 2}) is None
    assert "one per process" in exp.unmet_requirement(spec, {"cores": 16, "gpus": 1})
    tiny = {"cores": 1, "gpus": 0}  # only these two ask anything of the machine
    assert [s.name for s in map(exp.load, exp.list_experiments())
            if exp.unmet_requirement(s, tiny)] == ["data_parallel", "transfer_quadrant_lite0"]


def test_an_experiment_not_testable_here_runs_no_job_and_says_why(outputs, tmp_path, monkeypatch):
    monkeypatch.setattr(exp, "machine_capacity", lambda: {"cores": 2, "gpus": 0})
    out = runner.invoke(_app(), ["sweep", "data_parallel", "--no-plots"])
    assert out.exit_code == 0, out.output
    (folder,) = (outputs / "sweeps").iterdir()
    assert not list((folder / "jobs").iterdir())  # nothing ran
    verdict = json.loads((folder / "verdict.json").read_text())
    assert verdict["verdict"] == "not testable here" and "4 cores" in verdict["text"]
    assert "claim C22: not testable here" in " ".join(out.output.split())
    rows = pd.DataFrame(catalogue.rows(outputs / "sweeps")).set_index("experiment")
    assert rows.loc["data_parallel", "verdict"] == "not testable here"
    md = catalogue.build(outputs / "sweeps", tmp_path / "rep").read_text()
    assert "### data_parallel (quick scale): not testable here" in md
    assert "1 not testable here" in md.split("## Summary")[1].split("\n\n")[1]


def test_a_machine_that_meets_the_requirement_plans_the_jobs(outputs, monkeypatch):
    from cnnlab.lab.sweep import plan

    monkeypatch.setattr(exp, "machine_capacity", lambda: {"cores": 8, "gpus": 0})
    p = plan([], outputs, experiment=exp.load("data_parallel"))
    assert p.untestable == "" and len(p.jobs) == 6
    monkeypatch.setattr(exp, "machine_capacity", lambda: {"cores": 2, "gpus": 0})
    assert plan([], outputs, experiment=exp.load("data_parallel")).untestable.startswith("needs 2 processes")
    assert plan([], outputs, experiment=exp.load("conv_arithmetic")).untestable == ""


def _app():
    from cnnlab.cli.main import app

    return app


# ---------------------------------------------------------------- the claims report

@pytest.mark.slow
def test_the_claims_report_notes_c9s_figures(tmp_path, monkeypatch):
    """Where the report quotes C9 (a finished block_costs sweep: a calculation and a short
    timing, about 15 s), it notes the slide's arithmetic slip."""
    monkeypatch.setenv("CNNLAB_OUTPUTS", str(tmp_path / "outputs"))
    out = runner.invoke(_app(), ["sweep", "block_costs"])
    assert out.exit_code == 0, out.output
    md = catalogue.build(tmp_path / "outputs" / "sweeps", tmp_path / "rep").read_text()
    c9 = md.split("## C9:")[1].split("\n## ")[0]
    assert "add up to 271M operations, not 358M" in c9 and "854M -> 271M, not 854M -> 358M" in c9


def _fake_job(sweep_dir, name: str, overrides: list[str], val_accs: list[float], test_acc: float):
    """A finished training job folder as cnnlab.lab.sweep leaves it (job.json, status, run/)."""
    from cnnlab.lab.jobs import write_job

    job = sweep_dir / "jobs" / name
    (job / "run").mkdir(parents=True)
    write_job(job, overrides=overrides, status="done")
    (job / "run" / "summary.json").write_text(json.dumps(
        {"test_acc": test_acc, "epochs_run": len(val_accs), "status": "done"}))
    lines = ["epoch,val_acc,epoch_seconds"] + [f"{i},{v},2.0" for i, v in enumerate(val_accs, 1)]
    (job / "run" / "metrics.csv").write_text("\n".join(lines) + "\n")


def test_a_sweep_report_shows_censored_times_and_the_correction(tmp_path):
    """report.build on job folders: tanh never reaches 0.6 in 4 epochs on two seeds of three
    (censored: "not reached by 4", never a number to average); the report names the test and
    the correction."""
    spec = exp.ExperimentSpec(claim="C15", axes={"act": ["relu", "tanh"]}, metric="epochs_to_target",
                              target=exp.TargetSpec(metric="val_acc", value=0.6),
                              verdict=_greater({"act": "tanh"}, {"act": "relu"}, paired=True),
                              also=[exp.VerdictSpec(kind="ratio", a={"act": "tanh"}, b={"act": "relu"},
                                                    paired=True, range=[2, None])])
    curves = {"relu": [[0.5, 0.7, 0.8, 0.9], [0.65, 0.7, 0.8, 0.8], [0.55, 0.62, 0.7, 0.8]],
              "tanh": [[0.3, 0.4, 0.5, 0.55], [0.3, 0.4, 0.5, 0.65], [0.2, 0.3, 0.4, 0.5]]}
    for act, runs in curves.items():
        for seed, vals in enumerate(runs):
            _fake_job(tmp_path, f"{act}{seed}", [f"act={act}", f"seed={seed}"], vals, 0.5)
    r = report.build(tmp_path, spec, "epochs_to_target", plots=False)
    summary = r.summary.set_index("act")
    assert summary.loc["tanh", "text"] == "median > 4, reached 1/3 by 4"
    assert summary.loc["relu", "text"] == "median 2, reached 3/3 by 4"
    md = (tmp_path / "report.md").read_text()
    assert "median > 4, reached 1/3 by 4" in md and "never averaged" in md
    assert "Comparisons: Holm-Bonferroni over 2 comparisons (family-wise alpha 0.05)" in md
    assert "sign test (censored) (3 pairs)" in md and "Cannot be settled by this set-up: rule 1" in md
    saved = json.loads((tmp_path / "verdict.json").read_text())
    assert saved["verdict"] == "inconclusive" and saved["family"]["comparisons"] == 2


def test_seconds_to_target_is_censored_with_its_run():
    rows = pd.DataFrame({"epochs_run": [4, 4], "epochs_to_target": [2.0, 5.0],
                         "seconds_to_target": [4.0, 10.0]})  # the second never reached it: 8 s watched
    s = arm_summary(rows, "seconds_to_target")
    assert s["reached"] == 1 and s["limit"] == 8.0 and s["text"] == "median > 8, reached 1/2 by 8"


# ---------------------------------------------------------------- interaction (C1)

def _interaction_rows(gain_small, gain_large, base=0.8):
    rows = []
    for size, gains in ((30, gain_small), (300, gain_large)):
        for seed, g in enumerate(gains):
            noise = 0.01 * ((seed * 7919 + size) % 5)  # shared by both arms of a seed: pairs cancel it
            rows.append({"aug": "none", "size": size, "seed": seed, "test_acc": base + noise})
            rows.append({"aug": "flip", "size": size, "seed": seed, "test_acc": base + noise + g})
    return pd.DataFrame(rows)


def _interaction_spec(paired=True):
    return exp.ExperimentSpec(axes={"aug": ["none", "flip"], "size": [30, 300]}, verdict=exp.VerdictSpec(
        kind="interaction", a={"aug": "flip"}, b={"aug": "none"}, more_in={"size": 30},
        less_in={"size": 300}, paired=paired))


def test_interaction_is_the_paired_difference_of_gains_against_scipy():
    small, large = [0.05, 0.07, 0.04, 0.06, 0.08], [0.01, 0.02, 0.00, 0.02, 0.01]
    out = decide(_interaction_spec(), _interaction_rows(small, large))
    (t,) = out["tests"]
    ref = sps.ttest_rel(small, large)
    assert t["effect"] == pytest.approx(np.mean(small) - np.mean(large))
    assert t["p"] == pytest.approx(ref.pvalue)
    assert (t["ci_lo"], t["ci_hi"]) == pytest.approx(tuple(ref.confidence_interval(0.95)))
    assert out["verdict"] == "supported" and "gain in test_acc of aug=flip over aug=none" in out["text"]
    # unpaired: Welch on the two cells' gains
    (w,) = decide(_interaction_spec(paired=False), _interaction_rows(small, large))["tests"]
    assert w["p"] == pytest.approx(sps.ttest_ind(small, large, equal_var=False).pvalue)
    # the gain shrinking the other way is decided against the claim
    assert decide(_interaction_spec(), _interaction_rows(large, small))["verdict"] == "not supported"


def test_interaction_rule_fields_are_checked(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("claim: C1\naxes: {aug: [none, flip], size: [30, 300]}\n"
                 "verdict: {kind: interaction, a: {aug: flip}, b: {aug: none}, more_in: {size: 30}}\n")
    with pytest.raises(exp.UsageError, match="more_in and less_in"):
        exp.load(f)
    f.write_text("claim: C1\naxes: {aug: [none, flip], size: [30, 300]}\n"
                 "verdict: {kind: interaction, a: {aug: flip}, b: {aug: none}, more_in: {size: 30},"
                 " less_in: {depth: 300}}\n")
    with pytest.raises(exp.UsageError, match="same axes"):
        exp.load(f)


def test_a_censored_effect_says_what_is_known():
    """The median difference of censored runs: a bound when one side reached the target, 'never
    reached on either side' when neither did (not a bare 'open')."""
    slow = _target_rows({"sigmoid": [None, None, None, None, None], "relu": [3, 4, 3, 5, 4]})
    spec = exp.ExperimentSpec(axes={"act": ["sigmoid", "relu"]}, target=exp.TargetSpec(),
                              metric="epochs_to_target", verdict=exp.VerdictSpec(
                                  kind="greater", a={"act": "sigmoid"}, b={"act": "relu"}, paired=True))
    (t,) = decide(spec, slow)["tests"]
    assert "at least 7.0000 (censored runs)" in decide(spec, slow)["text"]  # median of 11 - (3,4,3,5,4)
    both = _target_rows({"sigmoid": [None] * 5, "relu": [None] * 5})
    assert "both sides never reached the target" in decide(spec, both)["text"]


def test_a_speed_rule_says_which_machine_it_was_measured_on():
    spec = exp.ExperimentSpec(axes={"reg": ["x", "none"]},
                              verdict=_greater({"reg": "x"}, {"reg": "none"}, metric="images_per_sec"))
    df = _rows({"x": [110.0, 121.0, 118.0], "none": [100.0, 101.0, 99.0]}, metric="images_per_sec")
    df["device_name"] = "AMD EPYC (bf16: avx512_bf16; fp16: emulated)"
    result = decide(spec, df)
    assert result["text"].endswith("(measured on AMD EPYC (bf16: avx512_bf16; fp16: emulated))")
    # an accuracy rule is about the claim, not the machine
    spec = exp.ExperimentSpec(axes={"reg": ["x", "none"]}, verdict=_greater({"reg": "x"}, {"reg": "none"}))
    df = _rows({"x": [0.8, 0.82, 0.81], "none": [0.7, 0.71, 0.72]})
    df["device_name"] = "AMD EPYC"
    assert "measured on" not in decide(spec, df)["text"]
