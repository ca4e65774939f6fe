"""`cnnlab experiments run-all`: the chosen experiments' sweeps, one after another at a scale,
then one claims report (cnnlab.lab.catalogue).

Nothing here prints: `RunAll.steps` yields what becomes of each experiment as it happens, and
the command shows it. An experiment that cannot be planned or whose sweep fails is recorded and
the others still run; one whose data is not on this machine is skipped, and the report says why.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from cnnlab.errors import UsageError
from cnnlab.lab.claims import claim_ids


@dataclass
class Step:
    """What became of one experiment: `started` (its jobs run next), `finished` (with its
    sweep's report), `skipped` (its data is not here) or `failed`; `why` says why in one line."""

    index: int  # 1-based, of `total`
    total: int
    spec: Any  # ExperimentSpec
    event: str
    plan: Any = None  # SweepPlan; None if planning failed
    report: Any = None  # cnnlab.lab.report.Report, when finished
    why: str = ""


@dataclass
class RunAll:
    """The experiments run-all runs, and the ones that failed or were skipped so far."""

    chosen: list
    scale: str
    jobs: int  # training jobs side by side (joblib)
    outputs: Path
    started: float = field(default_factory=time.time)
    failed: list = field(default_factory=list)
    skipped: dict = field(default_factory=dict)  # experiment -> why it was not run

    def steps(self, plots: bool = True) -> Iterator[Step]:
        """Run each chosen experiment's sweep in turn, yielding its steps. A KeyboardInterrupt
        during a sweep comes through, after that experiment's `started` step."""
        for i, spec in enumerate(self.chosen, 1):
            yield from self._run(i, spec, plots)

    def report(self) -> Path:
        """The claims report over every sweep in the outputs folder; returns its report.md."""
        from cnnlab.lab import catalogue
        from cnnlab.lab.sweep import sweeps_root

        out = self.outputs / "reports" / time.strftime("%Y%m%d-%H%M%S")
        return catalogue.build(sweeps_root(self.outputs), out, skipped=self.skipped)

    def launcher(self, spec) -> list[str]:
        """Hydra overrides that run the experiment's jobs side by side, if it may."""
        if self.jobs <= 1 or spec.measure or spec.exclusive:
            return []
        # N jobs side by side share the cores: each gets its share, never all of them
        return ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={self.jobs}",
                f"trainer.threads={max(1, (os.cpu_count() or 1) // self.jobs)}"]

    def _run(self, i: int, spec, plots: bool) -> Iterator[Step]:
        from cnnlab.lab import experiment as exp
        from cnnlab.lab import report
        from cnnlab.lab.sweep import launch, missing_data, opened, plan

        spec.path = str(exp.experiments_dir() / f"{spec.name}.yaml")
        try:
            p = plan(self.launcher(spec), self.outputs, experiment=spec, scale=self.scale)
            absent = [] if spec.measure or p.untestable else missing_data(p.jobs)
        except Exception as exc:  # a missing launcher plugin, a bad cell: the others still run
            yield self._failed(i, spec, exc)
            return
        if absent:
            self.skipped[spec.name] = absent[0]
            yield Step(i, len(self.chosen), spec, "skipped", plan=p, why=absent[0])
            return
        try:
            with opened(p):  # created and locked until its report is written
                if not p.untestable:  # else launch only records the sweep, and its verdict says why
                    yield Step(i, len(self.chosen), spec, "started", plan=p)
                launch(p)
                built = report.build(p.sweep_dir, spec, p.metric, plots=plots)
        except Exception as exc:  # one broken experiment does not stop the catalogue
            yield self._failed(i, spec, exc, p)
            return
        yield Step(i, len(self.chosen), spec, "finished", plan=p, report=built)

    def _failed(self, i: int, spec, exc: Exception, p=None) -> Step:
        self.failed.append(spec.name)
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return Step(i, len(self.chosen), spec, "failed", plan=p, why=why)


def prepare(scale: str, only: Optional[str], skip: Optional[str], jobs: int,
            outputs: Path) -> RunAll:
    """The experiments to run: all, or those `only` names, less those `skip` names (both
    comma-separated experiment names or claim ids). Unknown names, and a scale that a chosen
    experiment lacks, are UsageErrors before anything runs."""
    from cnnlab.lab import experiment as exp

    specs = [exp.load(p) for p in exp.list_experiments()]
    want, drop = _picks(only), _picks(skip)
    known = {s.name for s in specs} | {c for s in specs for c in claim_ids(s.claim)}
    unknown = sorted((want | drop) - known)
    if unknown:
        raise UsageError(f"no experiment or claim {', '.join(unknown)}; see `cnnlab experiments`")
    chosen = [s for s in specs if (not want or _named(s, want)) and not _named(s, drop)]
    missing = [s.name for s in chosen if scale != "quick" and scale not in s.scales]
    if missing:
        raise UsageError(f"no '{scale}' scale in: {', '.join(missing)}")
    return RunAll(chosen=chosen, scale=scale, jobs=jobs, outputs=Path(outputs))


def _picks(text: Optional[str]) -> set[str]:
    """'c3, tencrop' -> {'C3', 'tencrop'}: claim ids upper-cased, experiment names as given."""
    return {t.strip().upper() if t.strip().upper().startswith("C") and t.strip()[1:].isdigit()
            else t.strip() for t in (text or "").split(",") if t.strip()}


def _named(spec, names: set[str]) -> bool:
    return spec.name in names or bool(set(claim_ids(spec.claim)) & names)
