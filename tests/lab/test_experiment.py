import math

import pandas as pd
import pytest

from cnnlab.lab import experiment as exp
from cnnlab.errors import UsageError
from cnnlab.lab.sweep import validate_jobs
from cnnlab.lab.verdicts import decide, fmt_value, mean_ci, paired_differences


def test_grid_expansion_is_the_cartesian_product_in_order():
    jobs = exp.expand_grid(["data=digits", "model=lenet5,resnet8", "seed=0,1,2"])
    assert len(jobs) == 6
    assert jobs[0] == ["data=digits", "model=lenet5", "seed=0"]
    assert jobs[-1] == ["data=digits", "model=resnet8", "seed=2"]



def test_a_key_given_twice_keeps_its_last_values_in_its_first_place():
    # an experiment's own seeds, then seed=0 on the command line: 2 jobs, not 2 x 3 repeats
    jobs = exp.expand_grid(["seed=0,1,2", "model=lenet5,resnet8", "seed=0"])
    assert jobs == [["seed=0", "model=lenet5"], ["seed=0", "model=resnet8"]]
    # a scale's epochs after the base's; '+key' and 'key' name the same key
    assert exp.expand_grid(["trainer.epochs=20", "+x=1", "trainer.epochs=5", "x=2,3"]) == [
        ["trainer.epochs=5", "x=2"], ["trainer.epochs=5", "x=3"]]

def test_mean_ci_against_hand_computed_t_interval():
    s = mean_ci([0.1, 0.2, 0.3])
    t_975_2 = 4.302652729911275  # Student t, 97.5% quantile, 2 degrees of freedom (table value)
    assert s["mean"] == pytest.approx(0.2) and s["std"] == pytest.approx(0.1) and s["n"] == 3
    assert s["ci_hi"] - s["mean"] == pytest.approx(t_975_2 * 0.1 / math.sqrt(3))
    one = mean_ci([0.5])
    assert one["n"] == 1 and math.isinf(one["ci_hi"])
    assert mean_ci([float("nan")])["n"] == 0


def _spec(**verdict):
    return exp.ExperimentSpec(axes={"aug": ["all", "none"], "size": [10, 100]},
                              verdict=exp.VerdictSpec(**verdict))


def _rows(values):
    rows = []
    for (aug, size), accs in values.items():
        rows += [{"aug": aug, "size": str(size), "seed": s, "test_acc": a} for s, a in enumerate(accs)]
    return pd.DataFrame(rows)


def test_greater_supported_not_supported_and_inconclusive():
    spec = _spec(kind="greater", a={"aug": "all"}, b={"aug": "none"}, when={"size": 10})
    clear_win = _rows({("all", 10): [0.80, 0.81, 0.82], ("none", 10): [0.60, 0.61, 0.62]})
    assert decide(spec, clear_win)["verdict"] == "supported"
    clear_loss = _rows({("all", 10): [0.50, 0.51, 0.52], ("none", 10): [0.60, 0.61, 0.62]})
    assert decide(spec, clear_loss)["verdict"] == "not supported"
    overlap = _rows({("all", 10): [0.50, 0.70, 0.60], ("none", 10): [0.55, 0.65, 0.60]})
    result = decide(spec, overlap)
    assert result["verdict"] == "inconclusive" and "size=10" in result["text"]


def test_a_boolean_axis_read_back_from_csv_matches_the_rule(tmp_path):
    """results.csv stores model.lrn=true as True; a rule naming {model.lrn: true} must still find it."""
    spec = exp.ExperimentSpec(axes={"model.lrn": [True, False]},
                              verdict=exp.VerdictSpec(kind="greater", a={"model.lrn": True}, b={"model.lrn": False}))
    rows = pd.DataFrame([{"model.lrn": lrn, "seed": s, "test_acc": acc + s / 100}
                         for lrn, acc in ((True, 0.8), (False, 0.6)) for s in range(3)])
    rows.to_csv(tmp_path / "results.csv", index=False)
    result = decide(spec, pd.read_csv(tmp_path / "results.csv"))
    assert result["verdict"] == "supported", result["text"]


def test_greater_needs_every_when_cell():
    spec = _spec(kind="greater", a={"aug": "all"}, b={"aug": "none"}, when={"size": [10, 100]})
    mixed = _rows({("all", 10): [0.80, 0.81, 0.82], ("none", 10): [0.60, 0.61, 0.62],
                   ("all", 100): [0.90, 0.91, 0.92], ("none", 100): [0.90, 0.92, 0.91]})
    assert decide(spec, mixed)["verdict"] == "inconclusive"


def test_differ_supported_not_supported_and_inconclusive():
    spec = _spec(kind="differ", by="aug", margin=0.05)
    apart = _rows({("all", 10): [0.80, 0.81, 0.82], ("none", 10): [0.60, 0.61, 0.62]})
    assert decide(spec, apart)["verdict"] == "supported"
    same = _rows({("all", 10): [0.800, 0.801, 0.802], ("none", 10): [0.801, 0.800, 0.802]})
    assert decide(spec, same)["verdict"] == "not supported"
    noisy = _rows({("all", 10): [0.5, 0.9, 0.7], ("none", 10): [0.6, 0.8, 0.7]})
    assert decide(spec, noisy)["verdict"] == "inconclusive"


def test_bad_experiment_files_fail_before_any_job(tmp_path):
    bad_key = tmp_path / "bad_key.yaml"
    bad_key.write_text("claim: C1\naxes: {model: [lenet5]}\nnope: 1\n")
    with pytest.raises(UsageError, match="nope"):
        exp.load(bad_key)
    bad_rule = tmp_path / "bad_rule.yaml"
    bad_rule.write_text("axes: {model: [lenet5, resnet8]}\n"
                        "verdict: {kind: greater, a: {aug: flip}, b: {model: lenet5}}\n")
    with pytest.raises(UsageError, match="verdict names column 'aug'"):
        exp.load(bad_rule)
    bad_choice = tmp_path / "bad_choice.yaml"
    bad_choice.write_text("axes: {model: [lenet5, resnt8]}\n")
    spec = exp.load(bad_choice)
    with pytest.raises(UsageError, match="unknown model 'resnt8'"):
        validate_jobs(exp.sweep_overrides(spec))


@pytest.mark.slow
@pytest.mark.parametrize("path", exp.list_experiments(), ids=lambda p: p.stem)
def test_every_shipped_experiment_parses_and_its_quick_scale_composes(path):
    from cnnlab.lab import measures, tuning
    from cnnlab.lab.claims import CLAIMS, claim_ids

    spec = exp.load(path)
    assert spec.statement and (spec.claim == "-" or set(claim_ids(spec.claim)) <= set(CLAIMS))
    calculation = spec.measure and measures.get(spec.measure).calculation
    assert len(spec.seeds) >= (1 if calculation else 3)  # timings and training runs vary
    assert "full" in spec.scales
    for scale in ("quick", "full"):  # composes; model options fit the model
        overrides = exp.sweep_overrides(spec, scale)
        if spec.measure:
            jobs = measures.validate(spec.measure, exp.expand_grid(overrides))
        else:
            jobs = validate_jobs(overrides)
        settings = len(tuning.settings(tuning.grid(spec, scale)))  # per-arm tuning: 1 without tune
        assert len(jobs) == math.prod(len(v) for v in spec.axes.values()) * len(spec.seeds) * settings


def test_paired_greater_sees_a_consistent_gain_that_overlapping_groups_hide():
    spec = exp.ExperimentSpec(axes={"size": [10]}, views=["center", "tencrop"],
                              verdict=exp.VerdictSpec(kind="greater", paired=True,
                                                      a={"views": "tencrop"}, b={"views": "center"}))
    # seeds differ a lot, but ten-crop adds 0.01-0.02 to every seed's network
    center = [0.50, 0.70, 0.90]
    rows = [{"size": "10", "seed": s, "views": "center", "test_acc": a} for s, a in enumerate(center)]
    rows += [{"size": "10", "seed": s, "views": "tencrop", "test_acc": a + 0.01 + 0.005 * s}
             for s, a in enumerate(center)]
    df = pd.DataFrame(rows)
    result = decide(spec, df)
    assert result["verdict"] == "supported" and "paired difference 0.0150" in result["text"]
    spec.verdict.paired = False  # the same rows as two groups: the intervals overlap
    assert decide(spec, df)["verdict"] == "inconclusive"
    spec.verdict.paired = True
    worse = df.assign(test_acc=[*center, *(a - 0.02 - 0.001 * s for s, a in enumerate(center))])
    assert decide(spec, worse)["verdict"] == "not supported"
    # differences pair rows of the same seed only: a missing partner drops out
    assert paired_differences(df[df.seed != 1].iloc[:-1], {"views": "tencrop"},
                                  {"views": "center"}, "test_acc", ["size", "seed", "views"]) == [
        pytest.approx(0.01)]


def test_view_modes_in_an_experiment_are_checked(tmp_path):
    path = tmp_path / "views.yaml"
    path.write_text("axes: {model: [lenet5]}\nviews: [center, sixcrop]\n")
    with pytest.raises(UsageError, match="sixcrop"):
        exp.load(path)
    path.write_text("axes: {model: [lenet5]}\nviews: [center, 'multiscale:']\n")
    with pytest.raises(UsageError, match="needs scales"):
        exp.load(path)
    path.write_text("axes: {model: [lenet5]}\ntable: {rows: views}\n")
    with pytest.raises(UsageError, match="not a swept axis"):
        exp.load(path)  # `views` is an axis only when the experiment lists view modes
    path.write_text("axes: {model: [lenet5]}\nviews: [center, tencrop]\ntable: {rows: views}\n"
                    "metric: view_ms_per_image\n")
    assert exp.load(path).views == ["center", "tencrop"]


def _quadrant_rows(cells):
    rows = []
    for (size, strategy), accs in cells.items():
        rows += [{"size": size, "transfer": strategy, "seed": s, "test_acc": a} for s, a in enumerate(accs)]
    return pd.DataFrame(rows)


def test_best_verdict_per_cell():
    spec = exp.ExperimentSpec(
        axes={"size": ["10", "null"], "transfer": ["probe", "tune"]},
        verdict=exp.VerdictSpec(kind="best", by="transfer", recommend=[
            {"when": {"size": 10}, "best": "probe"}, {"when": {"size": None}, "best": "tune"}]))
    exp.check(spec)
    # the recommended level must be decided ahead of every rival (Holm over both cells): the
    # probe leads by 0.050-0.052 on every seed (a lead of 0.01-0.03, p = 0.07, would not do)
    wins = _quadrant_rows({("10", "probe"): [0.80, 0.70, 0.90], ("10", "tune"): [0.75, 0.649, 0.848],
                           ("null", "probe"): [0.80, 0.81, 0.82], ("null", "tune"): [0.90, 0.91, 0.93]})
    result = decide(spec, wins)
    assert result["verdict"] == "supported" and "size=null: recommended tune" in result["text"]
    # the probe is clearly beaten seed by seed in the small cell (+0.050 to +0.052 on every seed)
    beaten = wins.assign(test_acc=[0.80, 0.70, 0.90, 0.85, 0.751, 0.952, 0.80, 0.81, 0.82, 0.90, 0.91, 0.93])
    result = decide(spec, beaten)
    assert result["verdict"] == "not supported" and "beaten (paired) by tune" in result["text"]
    # second by a hair, not significantly: inconclusive
    close = wins.assign(test_acc=[0.80, 0.70, 0.90, 0.81, 0.69, 0.92, 0.80, 0.81, 0.82, 0.90, 0.91, 0.93])
    assert decide(spec, close)["verdict"] == "inconclusive"
    from cnnlab.lab.report import best_table

    table = best_table(decide(spec, wins)["evidence"])
    assert list(table.columns) == ["", "size=10", "size=null"]
    assert list(table[""]) == ["probe", "tune", "recommended", "best", "outcome"]


def test_best_verdict_checks_its_recommendations(tmp_path):
    path = tmp_path / "q.yaml"
    path.write_text("axes: {transfer: [a, b]}\nverdict: {kind: best, by: transfer, "
                    "recommend: [{when: {transfer: a}, best: c}]}\n")
    with pytest.raises(UsageError, match="not one of the swept values"):
        exp.load(path)


def test_override_values_are_quoted_as_hydra_needs():
    assert fmt_value(None) == "null"
    assert fmt_value(["data=shapes", "trainer.epochs=15"]) == "['data=shapes','trainer.epochs=15']"
    assert fmt_value([1.0, 0.1]) == "[1.0,0.1]"
    from cnnlab.config import compose

    jobs = exp.expand_grid(exp.sweep_overrides(exp.ExperimentSpec(
        axes={"transfer.pretrain": [["data=shapes", "trainer.epochs=1"]], "data.train_per_class": [10, None]})))
    assert [compose(j).data.train_per_class for j in jobs] == [10, 10, 10, None, None, None]  # x 3 seeds
    assert list(compose(jobs[0]).transfer.pretrain) == ["data=shapes", "trainer.epochs=1"]


def test_seconds_to_target_sums_epoch_times_and_censors(tmp_path):
    from cnnlab.lab.sweep import to_target

    csv = tmp_path / "metrics.csv"
    csv.write_text("epoch,val_acc,epoch_seconds\n1,0.5,2.0\n2,0.85,3.0\n3,0.9,4.0\n")
    assert to_target(csv, "val_acc", 0.8) == (2.0, 5.0)
    assert to_target(csv, "val_acc", 0.95) == (4.0, pytest.approx(9.0 * 4 / 3))


def test_a_diverged_run_is_censored_at_its_planned_epochs(tmp_path):
    """A run that diverged at epoch 2 of 20 would never have reached the target: it is 'not
    reached by epoch 20' (21, open), like a run that trained all 20 epochs without getting there,
    not 'not reached by epoch 2' (3), which would rank it ahead of a run that got there at 10."""
    import json

    from cnnlab.lab.sweep import job_table

    job = tmp_path / "jobs" / "j1"
    (job / "run").mkdir(parents=True)
    (job / "job.json").write_text(json.dumps({"overrides": ["seed=0"]}))
    (job / "status").write_text("diverged")
    (job / "run" / "summary.json").write_text(json.dumps({"epochs_run": 2, "test_acc": 0.1}))
    (job / "run" / "config.yaml").write_text("trainer:\n  epochs: 20\n")
    (job / "run" / "metrics.csv").write_text("epoch,val_acc,epoch_seconds\n1,0.3,2.0\n2,,2.0\n")
    row = job_table(tmp_path, exp.TargetSpec(metric="val_acc", value=0.8)).iloc[0]
    assert row["status"] == "diverged"
    assert row["epochs_to_target"] == 21.0 and row["seconds_to_target"] == pytest.approx(2.0 * 21)
    # the same run had it stopped for another reason: censored where it stopped
    (job / "status").write_text("done")
    assert job_table(tmp_path, exp.TargetSpec(metric="val_acc", value=0.8)).iloc[0]["epochs_to_target"] == 3.0


def test_a_job_row_carries_the_device_its_speed_was_measured_on(tmp_path):
    import json

    from cnnlab.lab.report import swept_axes
    from cnnlab.lab.sweep import job_table

    for name, seed in (("j1", 0), ("j2", 1)):
        job = tmp_path / "jobs" / name
        (job / "run").mkdir(parents=True)
        (job / "job.json").write_text(json.dumps({"overrides": [f"seed={seed}"]}))
        (job / "status").write_text("done")
        (job / "run" / "summary.json").write_text(json.dumps(
            {"test_acc": 0.5, "images_per_sec": 100.0 + seed, "device_name": f"CPU {name}"}))
    jobs = job_table(tmp_path)
    assert jobs["device_name"].tolist() == ["CPU j1", "CPU j2"]
    assert "device_name" not in swept_axes(jobs, None)  # where it ran is no swept axis
