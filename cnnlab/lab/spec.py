"""The typed form of an experiment file (what cnnlab.lab.experiment.load returns): plain
dataclasses, importing nothing else of cnnlab's lab, so the modules that compute with a spec
(verdicts, tuning) can name its types without importing the loader that imports them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

JOB_METRICS = ("test_acc", "test_top5", "test_loss", "best_val_acc", "train_acc", "train_loss",
               "best_epoch", "epochs_run", "train_seconds", "images_per_sec", "gap")
VIEW_METRICS = ("view_ms_per_image", "views_per_image")


@dataclass
class TableSpec:
    rows: Optional[str] = None
    cols: Optional[str] = None
    value: Optional[str] = None


@dataclass
class VerdictSpec:
    kind: str = "greater"
    metric: Optional[str] = None  # default: the experiment's metric
    a: Dict[str, Any] = field(default_factory=dict)
    b: Dict[str, Any] = field(default_factory=dict)
    when: Dict[str, Any] = field(default_factory=dict)
    by: Optional[str] = None
    margin: float = 0.0
    paired: bool = False  # greater/ratio/differ: a vs b within matched runs (same seed, other axes)
    recommend: List[Dict[str, Any]] = field(default_factory=list)  # best: [{when: {...}, best: level}]
    expected: Optional[Any] = None  # near: a number or the name of a column holding the expected value
    tolerance: float = 0.0  # near: allowed relative deviation |mean / expected - 1|
    range: List[Optional[float]] = field(default_factory=list)  # ratio: [low, high], either may be null
    more_in: Dict[str, Any] = field(default_factory=dict)  # interaction: the gain a - b here ...
    less_in: Dict[str, Any] = field(default_factory=dict)  # ... exceeds the gain here


@dataclass
class RequiresSpec:
    """What the machine must offer for the experiment to test its claim (see the docstring)."""

    processes: int = 1  # worker processes one job starts ...
    cores_per_process: int = 0  # ... each with this many cores of its own (CPU)
    gpus: int = 0  # CUDA GPUs needed in any case
    cores: int = 0  # logical cores needed in any case
    why: str = ""  # the sentence the "not testable here" verdict gives


@dataclass
class TargetSpec:
    """Epochs until a per-epoch metric first reaches a value (the `epochs_to_target` column)."""

    metric: str = "val_acc"
    value: float = 0.9


@dataclass
class ExperimentSpec:
    claim: str = "?"
    statement: str = ""
    metric: str = "test_acc"
    base: List[str] = field(default_factory=list)
    axes: Dict[str, List[Any]] = field(default_factory=dict)
    seeds: List[int] = field(default_factory=lambda: [0, 1, 2])
    table: TableSpec = field(default_factory=TableSpec)
    verdict: Optional[VerdictSpec] = None
    scales: Dict[str, List[str]] = field(default_factory=dict)
    target: Optional[TargetSpec] = None
    ensemble: bool = False  # also score the averaged softmax of each cell's seeds (C17)
    views: List[str] = field(default_factory=list)  # test-time view modes per run (C3)
    also: List[VerdictSpec] = field(default_factory=list)  # more rules; the claim needs them all
    measure: Optional[str] = None  # a cnnlab.lab.measures name: benchmark/calculation jobs, not training
    measure_args: Dict[str, Any] = field(default_factory=dict)
    exclusive: bool = False  # jobs time themselves or use every core: never run beside each other
    tune: Dict[str, List[Any]] = field(default_factory=dict)  # per-arm search grid (cnnlab.lab.tuning)
    tune_metric: str = "best_val_acc"  # a validation-split column the search maximises (*acc) or minimises
    tune_scales: Dict[str, Dict[str, List[Any]]] = field(default_factory=dict)  # scale -> smaller grid
    requires: Optional[RequiresSpec] = None  # else "not testable here" (see the docstring)
    name: str = ""
    notes: str = ""
