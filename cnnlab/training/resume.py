"""What a checkpoint must hold to continue a run bit for bit, and finding the run to continue.

last.pt (written by the engine after every epoch, and mid-epoch on SIGINT/SIGTERM) holds the
model, optimizer, scheduler and precision state (loss scaler, stochastic-rounding generator), the
epochs done, the position in the interrupted epoch (batches done, the augmentation generator, the
epoch's running sums), the global step, best-so-far, the metrics history and the RNG states of
torch, numpy and Python. The epoch's sample order is a function of (seed, epoch), so the position
is just a batch index. `resume=auto` picks the newest unfinished run of the same config (by
`config_hash`) whose last.pt loads; `resume=<run folder>` and `cnnlab resume RUN` name one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from cnnlab import checkpoint, locks
from cnnlab.errors import CnnlabError, UsageError

FORMAT = 2  # last.pt layout; 1 had no precision, position, history or global step
# keys that do not change what a run computes, so a resumed run may differ in them
IGNORED = (("resume",), ("outputs",), ("trainer", "progress"), ("trainer", "logger"))


@dataclass
class LoopState:
    """What a snapshot covers besides the loop's counters: the live objects whose state last.pt
    and a rollback point hold, and the run whose metrics.csv a restore rewinds."""
    net: Any
    optimizer: Any
    scheduler: Any
    precision: Any
    run: Any = None


@dataclass
class Found:
    """The run a resumed training continues in (its folder locked for this writer before its
    last.pt was read, so no other writer changes it underneath), and that loaded last.pt."""
    root: Path
    state: dict
    run: Any = None  # cnnlab.run.Run, holding the folder's lock


def _locked_load(root: Path, ckpt: Path) -> Found:
    """Lock the run folder (a second writer gets the holder's name), then read its last.pt."""
    from cnnlab.run import Run

    run = Run(root)
    try:
        return Found(root, checkpoint.load(ckpt), run)
    except BaseException:
        run.close()
        raise


def snapshot(loop: LoopState, result, epochs_done: int, position: Optional[dict] = None,
             copy: bool = True) -> dict:
    """The full training state (see the module docstring). copy=False shares the live tensors
    (for a save that happens at once); the default clones them (a rollback point kept in memory)."""
    clone = copy
    model = {k: v.detach().clone() if clone else v for k, v in loop.net.state_dict().items()}
    opt = loop.optimizer.state_dict()
    return {
        "format": FORMAT, "model": model,
        "optimizer": _deepcopy(opt) if clone else opt,
        "scheduler": loop.scheduler.state_dict() if loop.scheduler is not None else None,
        "precision": loop.precision.state_dict(),
        "epoch": epochs_done, "position": position, "global_step": result.global_step,
        "best_metric": result.best_metric, "best_epoch": result.best_epoch,
        "since_best": result.since_best, "history": [dict(r) for r in result.history],
        "train_seconds": result.train_seconds, "images_seen": result.images_seen,
        "skipped_steps": result.skipped_steps, "nan_steps": result.nan_steps,
        "rollbacks": result.rollbacks, "lr_factor": 0.5 ** result.rollbacks,
        "rng": checkpoint.rng_state(),
        "threads": _threads(),  # a resumed run under trainer.threads=auto keeps the count
    }


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _deepcopy(state: dict) -> dict:
    import copy as _copy

    return _copy.deepcopy(state)


def restore(state: dict, loop: LoopState, result) -> tuple[int, Optional[dict]]:
    """Load `state` into `loop` and `result`; returns (epochs done, position in the next)."""
    if state.get("format", 1) < FORMAT or "precision" not in state:
        raise CnnlabError("this last.pt predates exact resume (no loader position or precision "
                          "state); start a new run")
    where = getattr(state, "path", "the rollback point")
    checkpoint.fit_weights(loop.net, state["model"], where)
    try:
        loop.optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError) as exc:
        raise CnnlabError(f"{where}: optimizer state does not fit this run's optimizer "
                          f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from exc
    if loop.scheduler is not None and state.get("scheduler") is not None:
        loop.scheduler.load_state_dict(state["scheduler"])
    loop.precision.load_state_dict(state["precision"])
    for key in ("global_step", "best_metric", "best_epoch", "since_best", "train_seconds",
                "images_seen", "skipped_steps", "nan_steps", "rollbacks"):
        setattr(result, key, state[key])
    result.history = [dict(r) for r in state["history"]]
    run = loop.run
    if run is not None:
        run.rewrite_metrics(result.history)  # rows written after the checkpoint are dropped
        best = run.checkpoints / "best.pt"
        if result.best_epoch and best.is_file():
            result.best_state = checkpoint.load(best)["model"]
    checkpoint.set_rng_state(state["rng"])  # last: nothing above may draw from the generators
    return int(state["epoch"]), state.get("position")


def rollback(good: dict, loop: LoopState, result) -> tuple[int, Optional[dict]]:
    """Back to the last good state with the learning rate halved once more (0.5^rollbacks of
    the configured rate); the counters of bad steps and rollbacks keep counting."""
    rollbacks, nan_steps = result.rollbacks, result.nan_steps
    epoch, position = restore(good, loop, result)
    result.rollbacks, result.nan_steps = rollbacks, nan_steps
    scale_lr(loop.optimizer, loop.scheduler, 0.5 ** rollbacks / good["lr_factor"])
    return epoch, position


def scale_lr(optimizer, scheduler, factor: float) -> None:
    """Multiply every learning rate an optimizer and its scheduler hold by `factor`."""
    for group in optimizer.param_groups:
        for key in ("lr", "initial_lr", "max_lr", "min_lr"):  # OneCycleLR keeps the last three
            if isinstance(group.get(key), (int, float)):
                group[key] = group[key] * factor
    if scheduler is not None and hasattr(scheduler, "base_lrs"):
        scheduler.base_lrs = [lr * factor for lr in scheduler.base_lrs]
    if scheduler is not None and hasattr(scheduler, "_last_lr"):
        scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]


def is_oom(exc: BaseException) -> bool:
    import torch

    text = str(exc)
    return (isinstance(exc, getattr(torch, "OutOfMemoryError", ())) or "out of memory" in text
            or "can't allocate memory" in text)


def out_of_memory(cfg, exc: BaseException) -> CnnlabError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
    return CnnlabError(f"out of memory with trainer.batch_size={cfg.batch_size}: lower "
                       f"trainer.batch_size (or data.image_size, the model's width) ({first})")


# --- finding the run to continue -----------------------------------------------------------------

def config_hash(cfg) -> str:
    """A short hash of what a run computes: the resolved config without IGNORED keys."""
    from cnnlab.config.hashing import config_hash as hash_of

    # through the schema, so a config read back from config.yaml has the same types
    return hash_of(cfg, ignore=IGNORED, length=16, schema=True)


def _run_hash(root: Path) -> Optional[str]:
    from omegaconf import OmegaConf

    try:
        return config_hash(OmegaConf.to_container(OmegaConf.load(root / "config.yaml")))
    except Exception:  # noqa: BLE001 - an unreadable config is simply not a match
        return None


def _status(root: Path) -> Optional[str]:
    try:
        return json.loads((root / "summary.json").read_text(encoding="utf-8")).get("status")
    except (OSError, ValueError):
        return None


FINISHED = ("done", "diverged")


def _summary(root: Path) -> dict:
    try:
        return json.loads((root / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def run_root(spec: str) -> Path:
    """The run folder `resume=<spec>` names: the folder itself, or the one of a checkpoint in it."""
    path = Path(spec)
    return path if path.is_dir() or path.suffix != ".pt" else path.parent.parent


def own_outputs(root: Path, configured: str) -> Path:
    """The outputs folder the run folder `root` belongs to, where its results row goes. Its
    config records `outputs` as it was given, perhaps relative to the folder the run was started
    from; the run folder's place says which folder that was: <outputs>/runs/<id>,
    <outputs>/sweeps/<sweep>/jobs/<job>/run or <outputs>/cache/pretrain/<key>. Elsewhere,
    `configured` as it is."""
    root = Path(root).resolve()
    up = [root, *root.parents]
    for depth, name in ((1, "runs"), (4, "sweeps"), (2, "cache")):
        if len(up) > depth + 1 and up[depth].name == name:
            return up[depth + 1]
    return Path(configured)


def has_row(outputs: Path, run_id: str) -> bool:
    """Whether the results table of `outputs` has a row of run `run_id`."""
    import csv

    from cnnlab.results import table_path

    try:
        with open(table_path(outputs), newline="", encoding="utf-8") as f:
            return any(row.get("run_id") == run_id for row in csv.DictReader(f))
    except FileNotFoundError:
        return False


def unrecorded(cfg) -> Optional[Path]:
    """The run `cfg.resume` asks for when it finished without its results row (summary.json
    written, the table append lost to a crash), else None. A named run counts when its summary
    is not marked recorded (also one from before the mark) and its table lacks the row; with
    auto, the newest run of this config whose summary says the row is still to come."""
    spec = str(cfg.resume)
    if spec != "auto":
        root = run_root(spec)
        summary = _summary(root)
        if summary.get("status") not in FINISHED or summary.get("recorded", False) is True:
            return None
        if has_row(own_outputs(root, cfg.outputs), root.name) and "recorded" not in summary:
            return None  # an earlier version's finished run: refused by find() as before
        return root if _run_hash(root) == config_hash(cfg) else None
    runs = Path(cfg.outputs) / "runs"
    found = sorted(runs.glob("*/summary.json"), key=lambda p: p.stat().st_mtime,
                   reverse=True) if runs.is_dir() else []
    want = None
    for path in found:
        summary = _summary(path.parent)
        if summary.get("status") not in FINISHED or summary.get("recorded", True) is not False:
            continue
        want = want or config_hash(cfg)
        if _run_hash(path.parent) == want:
            return path.parent
    return None


def find(cfg, ctx=None) -> Optional[Found]:
    """The run `cfg.resume` asks for: auto (None when there is none) or a run folder/last.pt."""
    spec = str(cfg.resume)
    if ctx is not None:
        raise UsageError("resume works with one process (trainer.devices=1) for now")
    want = config_hash(cfg)
    if spec == "auto":
        runs = Path(cfg.outputs) / "runs"
        found = sorted(runs.glob("*/checkpoints/last.pt"), key=lambda p: p.stat().st_mtime,
                       reverse=True) if runs.is_dir() else []
        for ckpt in found:
            root = ckpt.parent.parent
            if _status(root) in ("done", "diverged") or _run_hash(root) != want:
                continue
            try:  # a run another writer holds now (a requeued job's twin) is refused, by name
                return _locked_load(root, ckpt)
            except locks.FolderInUse:
                raise
            except CnnlabError:  # unreadable (e.g. from an old version): try the next one
                continue
        return None
    path = Path(spec)
    root = path if path.is_dir() else path.parent.parent
    ckpt = path if path.is_file() else root / "checkpoints" / "last.pt"
    if not ckpt.is_file():
        raise UsageError(f"resume={spec}: no checkpoint there (expected {ckpt})")
    if _run_hash(root) != want:
        raise UsageError(f"resume={spec}: that run's config.yaml differs from this config; "
                         f"continue it with `cnnlab resume {root}`")
    if _status(root) in ("done", "diverged"):
        raise UsageError(f"resume={spec}: that run has finished ({_status(root)})")
    return _locked_load(root, ckpt)
