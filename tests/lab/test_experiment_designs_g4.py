"""The redesigned experiment files of C8-C10, C20-C24 and memory_format: each loads, composes at
both scales, keeps the budget it states, and its rules carry the tolerances its comment derives
from the sources (never from the results). The calculation experiments are run for real."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cnnlab.lab import experiment as exp
from cnnlab.lab import measures
from cnnlab.lab.sweep import validate_jobs

MINE = ["block_designs", "block_costs", "conv_algorithms", "layer_shares", "conv_arithmetic",
        "data_parallel", "data_pipeline", "model_sizes", "memory_format"]
README = Path(__file__).resolve().parents[2] / "README.md"


def _rules(spec):
    return [spec.verdict, *spec.also]


def _text(name: str) -> str:
    return (exp.experiments_dir() / f"{name}.yaml").read_text()


@pytest.mark.parametrize("name", MINE)
def test_each_file_loads_composes_and_says_what_it_cannot_settle(name):
    spec = exp.load(name)
    for scale in ("quick", "full"):
        jobs = exp.expand_grid(exp.sweep_overrides(spec, scale))
        assert jobs
        if spec.measure:
            assert measures.validate(spec.measure, jobs) == jobs
        elif scale == "quick":
            assert validate_jobs(exp.sweep_overrides(spec, scale)) == jobs
    head = _text(name).split("\nclaim:")[0]
    assert "cannot settle" in head and "fair test" in head
    assert "Quick scale" in head  # the measured or estimated time at the quick scale


def test_block_designs_trains_on_real_images_with_a_rate_per_design():
    spec = exp.load("block_designs")
    quick = exp.sweep_overrides(spec, "quick")
    assert "data=fashion_mnist" in quick and "trainer.threads=1" in quick
    assert spec.axes["model.block"] == ["7x7", "3x3x3", "5x5", "3x3x2"]
    # every design searches the same grid on validation; 1e-2 is inside it, not at its edge
    assert spec.tune == {"optim.lr": [3e-3, 1e-2, 3e-2]} and spec.tune_metric == "best_val_acc"
    assert len(exp.expand_grid(quick)) == 4 * 3 * 6 == 72  # the file's ~11-minute estimate
    pairs = [(r.a["model.block"], r.b["model.block"]) for r in _rules(spec)]
    assert pairs == [("3x3x3", "7x7"), ("3x3x2", "5x5")] and all(r.paired for r in _rules(spec))


def test_block_costs_checks_the_lectures_exact_ratios_and_the_slides_own_terms():
    spec = exp.load("block_costs")
    rules = {(r.metric, r.a["design"]): r for r in _rules(spec)}
    assert all(r.kind == "near" for r in rules.values())
    assert rules[("params_ratio", "three 3x3")].expected == pytest.approx(27 / 49, rel=1e-6)
    assert rules[("params_ratio", "two 3x3")].expected == 18 / 25
    assert rules[("params_ratio", "1x1 C/2, 3x3 C/2, 1x1 C")].expected == pytest.approx(3.25 / 9, rel=1e-6)
    assert rules[("macs_ratio", "1x3 then 3x1")].expected == pytest.approx(2 / 3, rel=1e-6)
    assert rules[("macs_ratio", "1x7 then 7x1")].expected == pytest.approx(2 / 7, rel=1e-6)
    for design, field in (("three 3x3", 7), ("two 3x3", 5), ("1x3 then 3x1", 3), ("1x7 then 7x1", 7)):
        assert rules[("receptive_field", design)].expected == field
        assert rules[("receptive_field", design)].tolerance == 0
    # the slide's "854M" at its precision, and the sum of its own six line items, exactly
    naive = rules[("macs", "naive")]
    assert naive.expected == 854e6 and naive.tolerance == pytest.approx(0.5 / 854, rel=1e-3)
    terms = 28 * 28 * (64 * 256 + 64 * 256 + 128 * 256 + 192 * 64 * 9 + 96 * 64 * 25 + 64 * 256)
    reduced = rules[("macs", "with 1x1 reductions")]
    assert reduced.expected == terms == 271_351_808 and reduced.tolerance == 0


def test_conv_algorithms_reads_large_as_every_kernel_above_3x3():
    spec = exp.load("conv_algorithms")
    fft = [r for r in _rules(spec) if r.a == {"algo": "fft"}]
    assert [r.when["kernel_area"] for r in fft] == [[49, 81, 121]]
    memory = [r for r in _rules(spec) if r.kind == "near"]
    assert len(memory) == 1 and memory[0].expected == "kernel_area"
    assert memory[0].tolerance == pytest.approx(1 / 9, rel=1e-6)  # one more input-sized buffer


def test_layer_shares_bounds_are_the_sources_figures():
    spec = exp.load("layer_shares")
    near = {r.metric: r for r in _rules(spec) if r.kind == "near"}
    macs, params = near["macs_share"], near["params_share"]
    lo, hi = macs.expected * (1 - macs.tolerance), macs.expected * (1 + macs.tolerance)
    assert (lo, hi) == (pytest.approx(0.90, abs=1e-7), pytest.approx(0.95, abs=1e-7))
    span = params.expected * params.tolerance
    assert params.expected == 0.05 and span == pytest.approx(0.025)  # 5% +- 2.5 points
    assert macs.when == params.when == {"model": "alexnet"}


def test_model_sizes_tolerances_are_the_papers_rounding_and_googlenet_has_no_fitted_range():
    spec = exp.load("model_sizes")
    rules = _rules(spec)
    assert rules[0].expected == "reference_params" and rules[0].tolerance == 0
    figures = {r.when["model"]: r for r in rules[1:]}
    assert set(figures) == {"alexnet", "vgg16"}  # no figure rule for googlenet or resnet50
    assert figures["alexnet"].expected * figures["alexnet"].tolerance == pytest.approx(5e6, rel=1e-6)
    assert figures["vgg16"].expected * figures["vgg16"].tolerance == pytest.approx(0.5e6, rel=1e-5)


def test_conv_arithmetic_checks_the_lectures_73728_at_two_strides():
    spec = exp.load("conv_arithmetic")
    (lecture,) = [r for r in _rules(spec) if r.expected == 73728]
    assert lecture.tolerance == 0 and len(lecture.when["case"]) == 2


def test_data_parallel_gives_each_process_the_cores_the_single_process_has():
    spec = exp.load("data_parallel")
    threads = [o for o in spec.base if o.startswith("trainer.threads=")]
    assert threads == [f"trainer.threads={spec.requires.cores_per_process}"]
    assert "not testable" in _text("data_parallel").split("\nclaim:")[0]
    assert exp.unmet_requirement(spec, {"cores": 2, "gpus": 0})


def test_data_pipeline_and_memory_format_rules():
    pipe = exp.load("data_pipeline")
    assert pipe.measure_args["workers"] == 2
    assert [r.when for r in _rules(pipe)] == [{"model": ["lenet5", "resnet8"]}, {"model": "lenet5"}]
    mem = exp.load("memory_format")
    assert mem.axes["trainer.threads"] == [1, 0] and mem.verdict.when["trainer.threads"] == [1, 0]
    assert len(exp.expand_grid(exp.sweep_overrides(mem))) == 20


@pytest.mark.slow
@pytest.mark.parametrize("name", ["model_sizes", "layer_shares", "conv_arithmetic", "block_costs"])
def test_the_calculations_support_their_claims_with_these_tolerances(name, outputs):
    from typer.testing import CliRunner

    from cnnlab.cli.main import app

    out = CliRunner().invoke(app, ["sweep", name, "--no-plots"])
    assert out.exit_code == 0, out.output
    (folder,) = (outputs / "sweeps").iterdir()
    verdict = json.loads((folder / "verdict.json").read_text())
    assert verdict["verdict"] == "supported", verdict["text"]


def test_readme_claims_table_says_what_each_set_up_cannot_settle():
    """Every experiment has a row with its old and new verdict (one of the verdict words), the
    effects behind it, and what its set-up cannot settle; the lead-in says which run it is."""
    from cnnlab.lab.verdicts import VERDICTS

    text = README.read_text()
    header = ("| experiment | claim | quick scale (CPU, offline) | old verdict (2026-11-29) | "
              "verdict now (time, `--jobs 2`) |")
    assert header in text
    table = text.split(header)[1].split("\n\n")[0]
    rows = [line for line in table.splitlines()[1:] if line.startswith("| `")]
    names = {re.match(r"\| `([^`]+)`", line).group(1) for line in rows}
    assert names == {p.stem for p in exp.list_experiments()}
    cells = [[c.strip() for c in line.strip().strip("|").split(" | ")] for line in rows]
    assert all(len(row) == 7 for row in cells)
    assert all(re.match(r"\*\*(.+?)\*\*", row[4]).group(1) in VERDICTS for row in cells)
    assert all(len(row[5]) > 20 for row in cells)  # the effects (or why there are none)
    assert all(len(row[6]) > 20 for row in cells)  # every experiment says what it cannot settle
    lead_in = text.split(header)[0].rstrip().rsplit("\n\n", 1)[-1]
    assert "run-all --quick --jobs 2" in lead_in and "--rejudge" in lead_in
