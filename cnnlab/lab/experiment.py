"""Experiment files (experiments/<name>.yaml): a lecture claim turned into a sweep and a verdict.

    claim: C18                      # id in the lecture-claims list
    statement: Optimisers differ ...
    metric: test_acc                # the number the table and the verdict use
    base: [data=digits, ...]        # overrides every job gets
    axes: {optim: [sgd, adam]}      # swept keys and their values (a grid)
    seeds: [0, 1, 2]
    table: {rows: optim, cols: null}
    verdict: {kind: differ, by: optim, margin: 0.01}
    scales: {quick: [...], full: [...]}   # extra overrides per scale (quick is the default)
    tune: {optim.lr: [0.01, 0.03, 0.1]}   # optional: a grid every arm searches (see below)

Verdicts are significance tests over seeds (cnnlab.lab.verdicts, cnnlab.lab.stats). Each rule
breaks into elementary comparisons, each with its effect, 95% interval and two-sided p-value: a
paired t-test of the per-seed differences with `paired: true` (rows that agree on every other
axis, the seed included), Welch's t-test of two independent groups otherwise. The comparisons of
all of a claim's rules (`verdict` and `also`) are one family, Holm-Bonferroni corrected at
family-wise alpha 0.05: a comparison is decided when its Holm-adjusted p is at most 0.05, in the
direction of its effect; otherwise it is *inconclusive*, and the report gives the smallest effect
the set-up could have detected (80% power at Holm's first-step level 0.05/N) or why it cannot
settle it at all (too few seeds for the test to ever reach that level).
Pairing is the experiment's choice, not automatic: it is valid whenever rows match by seed, but
with three seeds it halves the degrees of freedom (2 against about 4), so it pays only when the
seed makes the arms move together (the same network tested two ways, the same init or data
subset); say `paired: true` then.
- `greater`: metric where `a` exceeds metric where `b`, in every cell of `when` (a dict of axis ->
  value or list of values). Supported if a > b is decided in every cell; not supported if a < b
  is decided in any cell.
- `ratio` (with `range: [low, high]`, either bound may be null): metric at `a` divided by metric
  at `b`, in every cell of `when`, lies in the range: the comparison is of log values (per seed
  with `paired: true`, so the effect is the geometric mean of the per-seed ratios; else the
  ratio of the arms' geometric means), and its interval is the exponentiated interval of the
  log ratio. Supported in a cell when the interval lies inside the range (two one-sided tests at
  the bounds, Holm-corrected), not supported when it lies outside (below low or above high),
  inconclusive otherwise. Write the range with a comment citing where it comes from (C7's "2-3x
  faster": `range: [2, 3]`; C15's "several times": `range: [2, null]`), never fitted to a result.
- `differ`: metric differs across the levels of axis `by`: every pair of levels is compared.
  Supported if some pair is decided apart; not supported if every pair's 95% interval of the
  difference lies within +-`margin`; inconclusive otherwise.
- `ensemble` (with `ensemble: true`): in every cell, the averaged softmax of the seeds' runs is
  more accurate than its members (a one-sample t-test of the members' accuracies against the
  ensemble's); not supported if it is decided less accurate in any cell.
- `best` (with `by` and `recommend: [{when: {axis: value, ...}, best: level}, ...]`): in each
  listed cell, the recommended level of `by` is compared seed by seed with every other level.
  Supported if it is decided ahead of every other level in every cell; not supported if another
  level is decided ahead of it in any cell (C4's quadrant: 4 cells x 4 rivals = 16 comparisons).
- `near` (with `expected`: a number or a column, and `tolerance`): in every cell (all axes but the
  seed, within `when` and `a`), the mean of metric is within `tolerance` (relative) of the
  expected value: for measured quantities that a formula predicts (im2col's memory ~ k^2 x
  input, C10; parameter counts, C24). Not supported if any cell is outside. A tolerance check of
  a formula, not a significance test: it stays out of the Holm family.

- `interaction` (with `a`, `b`, `more_in` and `less_in`, cells of the same axes): the gain of
  `a` over `b` is larger in the cell `more_in` than in the cell `less_in` ("augmentation helps
  more the less data there is", C1: a difference of differences). The gain is taken seed by seed
  within each cell; with `paired: true` the two cells' gains are then paired by seed too, else
  Welch's test compares them. Supported if the larger gain is decided, not supported if the
  opposite is; one comparison in the family.

`also: [rule, ...]` adds rules to `verdict`; the claim is supported when every rule is, not
supported when any is not, and inconclusive otherwise.

Censored measures: `epochs_to_target` and `seconds_to_target` of a run that never reached the
target are censored: only "not reached by epoch N" is known (the row's epochs_to_target is
epochs_run + 1). They are never averaged: tables show each cell's median and how many runs
reached the target (cnnlab.lab.stats.censored; the median is given only when more than half
did), and a rule comparing them uses only the order of the runs, which censoring leaves intact:
when any run in the comparison is censored, `paired: true` uses the sign test of the per-seed
differences and otherwise the Mann-Whitney (Gehan) test, each with the order-statistic 95%
interval of the difference (a censored run's difference is bounded on one side only, so the
interval may be open), and the effect is the median difference (open when censoring hides it).
A censored run counts as slower than every run that reached the target, which is exact when all
runs have the same epoch budget. When no run is censored the t-tests apply as usual. Few seeds
cannot settle a rank test at all (the sign test on 3 pairs never gives p below 0.25): the verdict
then says so instead of guessing.

No spread: when the values leave a t-test no variance to estimate (the same difference on every
seed, as whole epoch counts often give), the comparison is the sign test (paired) or the
Mann-Whitney test instead, which cannot call 3 seeds "certain" (p >= 0.25). A run that diverged
is censored at its planned epochs, not at the epoch it stopped. Calculations (a `measure` that is
deterministic, such as parameter counts) are exact: a difference with no spread is certain.

`requires:` what the machine must offer for the experiment to mean anything (C22's speed-up
needs two processes with cores of their own):

    requires:
      processes: 2            # worker processes one job starts ...
      cores_per_process: 2    # ... each with this many cores of its own (on CPU)
      gpus: 0                 # CUDA GPUs needed in any case
      cores: 0                # logical cores needed in any case
      why: "two processes on the same cores measure contention, not data parallelism"

`processes` x `cores_per_process` must fit the cores this process may use, except where CUDA
GPUs are present: jobs then run one process per GPU (trainer.accelerator=auto), so `processes`
GPUs are needed instead. When a requirement is not met, `cnnlab sweep` and `run-all` run none of
the experiment's jobs and its verdict is "not testable here", with the reason.

`measure: <name>` (cnnlab.lab.measures) makes the jobs benchmarks or calculations instead of training
runs; each job gives several rows, and the measurement's key columns (bench-train's `pipeline`,
bench-conv's `layer`, `algo`, ...) may be named in rules and tables like axes.

Derived columns a rule may use besides the run metrics: `gap` (train_acc - test_acc) and, with
`target: {metric: val_acc, value: 0.9}`, `epochs_to_target` and `seconds_to_target`.

`exclusive: true` marks an experiment whose jobs measure speed or use every core themselves
(`run-all --jobs N` then still runs its jobs one at a time; measurement experiments always do).

`views: [center, tencrop, "multiscale:28,32,36"]` tests every finished run again with each
test-time view mode (cnnlab.evaluation.views, at the run's training crop size): the jobs table gets one row
per job and mode with a `views` column (an axis rules and tables may name), test_acc / test_top5
/ test_loss of that mode, and its cost `view_ms_per_image` and `views_per_image` (C3).

`paired: true` in a `greater`, `ratio` or `differ` rule compares a and b run by run instead of as
two groups: rows that agree on every other axis (the seed included: the same trained network
under two test modes, or two strategies from the same seed) are differenced, and the test of
the mean difference decides (`best` always compares its levels this way).

`tune: {key: [values], ...}` (per-arm tuning, so that no verdict rests on one setting that suits
one arm): every arm (one combination of the axes' values) runs every setting of this grid (the
product of its keys' values) under every seed, so the sweep has arms x settings x seeds jobs.
For each arm the setting with the best mean `tune_metric` over the arm's seeds is kept (ties: the
first in the grid as written) and only its rows reach the table, plots and verdict; report.md
shows every candidate's validation score and the choice, results.csv marks the kept rows
`tuned`. `tune_metric` (default `best_val_acc`) must be a validation-split column: highest wins
for *acc, lowest for *loss; the test split never influences the choice. A tune key may not be
an axis, the seed, or set by base or a scale, and rules cannot name it; paired rules pair by seed
and the other axes across the arms' own settings. `tune_scales: {quick: {optim.lr: [0.03, 0.1]}}`
replaces, at that scale, the values of the tune keys it names (cnnlab.lab.tuning).

An experiment file is data, whoever wrote it (check_is_data): everything that becomes an
override (base, scales, axes, tune, tune_scales, and overrides nested in their values, such as
transfer.pretrain's) sets config keys only. No `hydra.*` / `hydra/...` key (Hydra's own config:
callbacks, launchers, its run and sweep folders), no `_target_` anywhere, no resolver calls
(`${oc.env:...}`; a plain `${seed}` reference is fine), no `outputs` or `resume` (where runs write
is the command line's choice), and `data.root` / `transfer.source` only as relative paths inside
the project (no absolute path, `~` or `..`). `name:` is a plain name (letters, digits, _, -, .;
no `/`, no `..`), since the sweep folder is named after it.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Optional

from cnnlab.errors import UsageError
from cnnlab.lab import tuning
from cnnlab.lab.verdicts import fmt_value

from cnnlab.lab.spec import (  # noqa: F401  (the spec types, re-exported: exp.VerdictSpec, ...)
    JOB_METRICS, VIEW_METRICS, ExperimentSpec, RequiresSpec, TableSpec, TargetSpec, VerdictSpec)


def experiments_dir() -> Path:
    from cnnlab.config import conf_dir

    here = Path(__file__).resolve().parents[1]  # the cnnlab package
    for candidate in (here.parent / "experiments", here / "_experiments"):
        if candidate.is_dir():
            return candidate
    return conf_dir().parent / "experiments"


def list_experiments() -> list[Path]:
    return sorted(experiments_dir().glob("*.yaml"))


def load(path: str | Path) -> ExperimentSpec:
    """Read and type-check an experiment file; unknown keys and bad types are UsageErrors."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    path = Path(path)
    if not path.is_file():
        named = experiments_dir() / f"{path.stem}.yaml"
        if named.is_file():
            path = named
        else:
            names = ", ".join(p.stem for p in list_experiments())
            raise UsageError(f"no experiment file '{path}'; experiments: {names}")
    try:
        raw = OmegaConf.load(path)
        merged = OmegaConf.merge(OmegaConf.structured(ExperimentSpec), raw)
        spec: ExperimentSpec = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", "") or ""
        first = str(exc).strip().splitlines()[0]
        raise UsageError(f"{path.name}: {first}" + (f" (key: {key})" if key else "")) from exc
    except Exception as exc:
        raise UsageError(f"cannot read {path}: {str(exc).splitlines()[0]}") from exc
    spec.name = spec.name or _name_from(path.stem)
    check(spec, path.name)
    return spec


def _name_from(stem: str) -> str:
    """A file name as an experiment name: characters a name may not hold become '_'."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", stem).replace("..", "_").lstrip(".-")
    return name or "experiment"


def check(spec: ExperimentSpec, where: str = "experiment") -> None:
    """The file is data (check_is_data); rules naming columns must name swept axes (or the
    metric); fail before any job starts."""
    check_is_data(spec, where)
    if not spec.axes and not spec.measure:  # a measurement may be one job per seed
        raise UsageError(f"{where}: no axes to sweep")
    if not spec.seeds:
        raise UsageError(f"{where}: seeds is empty")
    for mode in spec.views:
        _check_view_mode(mode, where)
    axes, known = _columns(spec, where)
    for name in (spec.table.rows, spec.table.cols):
        if name and name not in axes:
            raise UsageError(f"{where}: table axis '{name}' is not a swept axis ({', '.join(sorted(axes))})")
    if spec.metric not in known:
        raise UsageError(f"{where}: metric '{spec.metric}' is not a column jobs produce "
                         f"({', '.join(sorted(known))})")
    if spec.also and spec.verdict is None:
        raise UsageError(f"{where}: 'also' adds rules to a verdict; give the first as verdict:")
    for v in ([spec.verdict] if spec.verdict else []) + list(spec.also):
        _check_rule(spec, v, axes, known, where)
    tuning.check(spec, known, where)
    _check_requires(spec.requires, where)


NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
FORBIDDEN_KEYS = ("outputs", "resume")  # where runs write, which run a job writes into
PATH_KEYS = ("data.root", "transfer.source")  # read from disk: relative paths inside the project only
_PAIR = re.compile(r"(?:^|(?<=[\[\],'\"\s({]))([+~]*[A-Za-z_][\w./@-]*)\s*=")
_RESOLVER = re.compile(r"\$\{\s*[\w.-]+\s*:")


def check_is_data(spec: ExperimentSpec, where: str = "experiment") -> None:
    """What an experiment file may contain (see the module docstring): a plain name, and overrides
    that set config keys only. One UsageError naming the file and the entry otherwise."""
    name = str(spec.name or "")
    if name and (not NAME.fullmatch(name) or ".." in name):
        raise UsageError(f"{where}: name '{name}' is not a plain name (letters, digits, _, - and "
                         f"., no '/' or '..'): the sweep folder is named after it")
    for entry, text in _override_entries(spec):
        why = override_problem(text)
        if why:
            raise UsageError(f"{where}: {entry} '{text}' {why}; an experiment file may only set "
                             f"config keys (README: What an experiment file may contain)")


def _override_entries(spec: ExperimentSpec):
    """(where in the file, override text) for everything of the file that becomes an override."""
    for i, o in enumerate(spec.base):
        yield f"base[{i}]", str(o)
    for scale, extra in spec.scales.items():
        for i, o in enumerate(extra or []):
            yield f"scales.{scale}[{i}]", str(o)
    grids = [("axes", spec.axes), ("tune", spec.tune)]
    grids += [(f"tune_scales.{scale}", grid) for scale, grid in spec.tune_scales.items()]
    for label, grid in grids:
        for key, values in (grid or {}).items():
            yield f"{label}.{key}", f"{key}={','.join(fmt_value(v) for v in values or [])}"


def override_problem(text: str) -> str:
    """Why an override may not come from an experiment file ('' if it may): a Hydra key, a
    `_target_`, a resolver call, `outputs`/`resume`, or a path key leaving the project; nested
    overrides (transfer.pretrain=['data.root=...']) count too."""
    if "_target_" in text.lower():
        return "names _target_ (a callable Hydra would call)"
    if _RESOLVER.search(text):
        return "calls a resolver (${name:...}); only plain ${key} references are allowed"
    top = text.split("=", 1)[0].strip()  # a deletion (~key) has no '='
    keys = [(top.lstrip("+~ "), len(text))] + [(m.group(1).lstrip("+~"), m.end())
                                             for m in _PAIR.finditer(text)]
    for key, end in keys:
        if re.match(r"hydra($|[./@])", key) or re.search(r"@\s*hydra($|[./])", key):
            return "sets a Hydra key (hydra.* or hydra/...)"
        bare = key.split("@")[0]
        if bare in FORBIDDEN_KEYS:
            return f"sets {bare}, which only the command line may set"
        if bare in PATH_KEYS and _leaves_project(text[end:]):
            return f"points {bare} outside the project (an absolute path, ~ or ..)"
    return ""


def _leaves_project(value: str) -> bool:
    """Whether any path in an override's value is absolute, starts at ~ or climbs with '..'."""
    for token in re.split(r"[,'\"\[\]\s(){}=]+", value):
        if token.startswith(("/", "~", "\\")) or re.match(r"[A-Za-z]:[\\/]", token):
            return True
        if ".." in re.split(r"[\\/]", token):
            return True
    return False


def _columns(spec: ExperimentSpec, where: str) -> tuple[set, set]:
    """(axes, metrics): the columns tables and rules may name. Axes are the swept keys, `views`
    and a measurement's row keys; metrics are the numbers its jobs produce."""
    axes = set(spec.axes) | ({"views"} if spec.views else set())
    if spec.measure:
        from cnnlab.lab import measures

        m = measures.get(spec.measure)
        measures.check_args(m, spec.measure_args, where)
        return axes | set(m.keys), set(m.metrics)
    known = (set(JOB_METRICS) | ({"epochs_to_target", "seconds_to_target"} if spec.target else set())
             | (set(VIEW_METRICS) if spec.views else set()))
    return axes, known


def _check_rule(spec: ExperimentSpec, v: VerdictSpec, axes: set, known: set, where: str) -> None:
    """A rule's own fields for its kind, then every column it names."""
    if v.kind not in RULE_CHECKS:
        raise UsageError(f"{where}: verdict kind '{v.kind}' is not one of: {', '.join(RULE_CHECKS)}")
    RULE_CHECKS[v.kind](spec, v, known | axes, where)
    if v.metric and v.metric not in known:
        raise UsageError(f"{where}: verdict names column '{v.metric}', which no job produces "
                         f"({', '.join(sorted(known))})")
    named = (list(v.a) + list(v.b) + list(v.when) + list(v.more_in) + list(v.less_in)
             + ([v.by] if v.by else [])
             + [k for rec in v.recommend for k in rec.get("when", {})])
    for key in named:
        if key not in axes:
            raise UsageError(f"{where}: verdict names column '{key}', which is not a swept axis "
                             f"({', '.join(sorted(axes))})")


def _check_greater(spec: ExperimentSpec, v: VerdictSpec, columns: set, where: str) -> None:
    if not v.a or not v.b:
        raise UsageError(f"{where}: a 'greater' verdict needs both a and b")


def _check_differ(spec: ExperimentSpec, v: VerdictSpec, columns: set, where: str) -> None:
    if not v.by:
        raise UsageError(f"{where}: a 'differ' verdict needs by: <axis>")


def _check_ensemble(spec: ExperimentSpec, v: VerdictSpec, columns: set, where: str) -> None:
    if not spec.ensemble:
        raise UsageError(f"{where}: an 'ensemble' verdict needs ensemble: true")


def _check_best(spec: ExperimentSpec, v: VerdictSpec, columns: set, where: str) -> None:
    if not v.by or not v.recommend:
        raise UsageError(f"{where}: a 'best' verdict needs by: <axis> and recommend: [{{when: ..., best: ...}}]")
    for rec in v.recommend:
        if set(rec) != {"when", "best"}:
            raise UsageError(f"{where}: each recommend entry has exactly 'when' and 'best', got {sorted(rec)}")
        if v.by in spec.axes and fmt_value(rec["best"]) not in {fmt_value(x) for x in spec.axes[v.by]}:
            raise UsageError(f"{where}: recommended {v.by}={rec['best']} is not one of the swept values")


def _check_near(spec: ExperimentSpec, v: VerdictSpec, columns: set, where: str) -> None:
    if v.expected is None or v.tolerance < 0:
        raise UsageError(f"{where}: a 'near' verdict needs expected: <number or column> and tolerance >= 0")
    if isinstance(v.expected, str) and v.expected not in columns:
        raise UsageError(f"{where}: expected column '{v.expected}' is not a column jobs produce")


def _check_ratio(spec: ExperimentSpec, v: VerdictSpec, columns: set, where: str) -> None:
    if not v.a or not v.b:
        raise UsageError(f"{where}: a 'ratio' verdict needs both a and b")
    bounds = list(v.range)
    if len(bounds) != 2 or all(x is None for x in bounds):
        raise UsageError(f"{where}: a 'ratio' verdict needs range: [low, high] (one may be null)")
    if any(x is not None and not x > 0 for x in bounds):
        raise UsageError(f"{where}: ratio range bounds must be positive, got {bounds}")
    if None not in bounds and bounds[0] > bounds[1]:
        raise UsageError(f"{where}: ratio range [{bounds[0]}, {bounds[1]}] has low above high")


def _check_interaction(spec: ExperimentSpec, v: VerdictSpec, columns: set, where: str) -> None:
    if not (v.a and v.b and v.more_in and v.less_in):
        raise UsageError(f"{where}: an 'interaction' verdict needs a, b, more_in and less_in")
    if set(v.more_in) != set(v.less_in):
        raise UsageError(f"{where}: more_in and less_in must name the same axes")
    metric = v.metric or spec.metric
    if metric in ("epochs_to_target", "seconds_to_target"):
        raise UsageError(f"{where}: an 'interaction' verdict cannot difference censored {metric}")


# verdict kind -> the check of its own fields (the kinds are described in the module docstring)
RULE_CHECKS = {"greater": _check_greater, "differ": _check_differ, "ensemble": _check_ensemble,
               "best": _check_best, "near": _check_near, "ratio": _check_ratio,
               "interaction": _check_interaction}


def _check_requires(req: Optional[RequiresSpec], where: str) -> None:
    if req is None:
        return
    if req.processes < 1 or min(req.cores_per_process, req.gpus, req.cores) < 0:
        raise UsageError(f"{where}: requires needs processes >= 1 and no negative count")


def machine_capacity() -> dict:
    """{cores, gpus}: the logical cores this process may use and the CUDA GPUs it sees."""
    import os

    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:
        gpus = 0
    return {"cores": cores, "gpus": gpus}


def unmet_requirement(spec: ExperimentSpec, machine: Optional[dict] = None) -> Optional[str]:
    """Why this machine cannot test the experiment's claim (its `requires:`), or None if it can
    (or the experiment requires nothing). `machine` ({cores, gpus}) defaults to this one."""
    req = spec.requires
    if req is None:
        return None
    have = machine if machine is not None else machine_capacity()
    cores, gpus = int(have.get("cores") or 0), int(have.get("gpus") or 0)
    missing = []
    if req.gpus > gpus:
        missing.append(f"{req.gpus} CUDA GPU(s), this machine has {gpus}")
    if req.cores > cores:
        missing.append(f"{req.cores} cores, this machine has {cores}")
    if req.processes > 1 and gpus:
        if req.processes > gpus:
            missing.append(f"{req.processes} CUDA GPUs (one per process), this machine has {gpus}")
    elif req.processes * req.cores_per_process > cores:
        missing.append(f"{req.processes} processes x {req.cores_per_process} cores = "
                       f"{req.processes * req.cores_per_process} cores, this machine has {cores}")
    if not missing:
        return None
    return "needs " + "; ".join(missing) + (f": {req.why}" if req.why else "")


def _check_view_mode(mode: str, where: str) -> None:
    from cnnlab.evaluation.views import MODES, parse_scales

    name, _, scales = str(mode).partition(":")
    if name not in MODES:
        raise UsageError(f"{where}: view mode '{mode}' is not one of: center, fivecrop, tencrop, multiscale:S1,S2,...")
    if name == "multiscale" and not parse_scales(scales):
        raise UsageError(f"{where}: view mode '{mode}' needs scales, e.g. multiscale:28,32,36")
    if name != "multiscale" and scales:
        raise UsageError(f"{where}: view mode '{mode}' takes no scales")


def sweep_overrides(spec: ExperimentSpec, scale: str = "quick") -> list[str]:
    """The Hydra multirun overrides of an experiment at a scale: base, scale, axes, the tune
    grid, seeds."""
    if scale not in ("quick", *spec.scales):
        raise UsageError(f"experiment {spec.name} has no scale '{scale}'; scales: "
                         f"{', '.join(['quick', *spec.scales])}")
    out = list(spec.base) + list(spec.scales.get(scale, []))
    for key, values in spec.axes.items():
        out.append(f"{key}={','.join(fmt_value(v) for v in values)}")
    out += tuning.overrides(spec, scale)  # per-arm tuning: each arm runs every setting
    out.append("seed=" + ",".join(str(s) for s in spec.seeds))
    return out


def expand_grid(overrides: list[str]) -> list[list[str]]:
    """The jobs of a multirun: the cartesian product of sweep values. A key given more than once
    (an experiment's `seed=0,1,2`, then `seed=0` on the command line) keeps its last values, as a
    single Hydra run would, instead of multiplying the grid with jobs that repeat each other."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as exc:
        raise UsageError(f"cannot parse overrides: {str(exc).splitlines()[0]}") from exc
    choices: dict[str, list[str]] = {}  # a key given twice: the last wins, in the first's place
    for ov in parsed:
        if ov.is_sweep_override():
            # booleans as the override was written (false), not as Python prints them (False)
            values = [fmt_value(v) if isinstance(v, bool) else s
                      for v, s in zip(ov.sweep_iterator(), ov.sweep_string_iterator())]
        else:
            values = [ov.get_value_element_as_str()]
        prefix = ov.get_key_element()
        choices[prefix.lstrip("+~")] = [f"{prefix}={v}" for v in values]
    return [list(job) for job in itertools.product(*choices.values())]
