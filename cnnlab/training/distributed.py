"""Data-parallel training over N processes: process group set-up, launch and the collectives the
engine needs. `plan(cfg)` picks one of three modes:

- single: trainer.devices=1 outside torchrun and srun. The plain one-process path; nothing here
  touches torch.distributed (no launcher import, no process group).
- launch: `cnnlab train trainer.devices=N` (N > 1, or auto = one process per CUDA GPU, 1 without
  CUDA) starts N workers on this machine with torch.distributed's elastic launcher, the machinery
  behind torchrun (`torchrun --standalone --nproc-per-node=N`: c10d rendezvous on a free
  localhost port, no restarts). Each worker runs `train` in join mode; the command returns rank
  0's summary.
- join: a launcher has started this process as one rank of a job, so cnnlab joins the process
  group (env://) instead of launching. trainer.devices must be auto or the world size.

      torchrun --standalone --nproc-per-node=2 -m cnnlab train trainer.devices=2 ...
          (torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)
      export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
      export MASTER_PORT=29500
      srun --ntasks-per-node=2 cnnlab train trainer.devices=auto ...
          (srun sets SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID; the batch script exports
          MASTER_ADDR and MASTER_PORT, without which a Slurm task runs on its own)

What N processes do (cnnlab/training/recipe.py and cnnlab/training/engine.py call the hooks below):

- backend gloo on CPU, NCCL on CUDA with one GPU per local rank. On CPU (trainer.threads auto
  or 0) each process takes an equal share of the cores, auto of the idle ones (torchrun sets
  OMP_NUM_THREADS=1 for the same reason: N processes x all cores oversubscribes the machine).
- every rank builds the same seeded splits; a training epoch is one seeded permutation of which
  rank r takes every N-th sample from r (the last len % N samples of the epoch's order are left
  out, so every rank takes the same number of steps). trainer.batch_size is per process: the
  global batch is N x trainer.batch_size, and DDP averages the gradients, so a net without batch
  norm takes the same steps as one process with the global batch, up to float summation order.
  Batch norm normalises each process's batch unless trainer.sync_bn (SyncBatchNorm, CUDA only).
- model initialisation is the run seed's on every rank (DDP also broadcasts rank 0's weights);
  augmentation and dropout draw from per-rank streams derived from (seed, rank) (`rank_seed`).
- train loss and accuracy sums are all-reduced each epoch. Validation and test are evaluated by
  rank 0 alone over the whole split, with the same loader and batches as a one-process run, and
  broadcast: the numbers are exactly a one-process evaluation of the same weights (sharding would
  change the batch composition and so the float rounding). Evaluation is a small share of an
  epoch (no backward pass), so the other ranks' wait costs little.
- trainer.lr_scaling=linear multiplies optim.lr by N (Goyal et al. 2017, "Accurate, large
  minibatch SGD", sec. 2.1; they pair it with a 5-epoch warm-up: sched.warmup_epochs).
- rank 0 alone writes the run folder, checkpoints, logs and the one results row.
- a failing rank writes its error to a file and exits; the launcher stops the others and the
  parent raises the earliest error as one line (a UsageError keeps exit code 2). The process
  group is destroyed when the run ends.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from cnnlab.config.checks import LR_SCALINGS, check_processes  # noqa: F401  (checked at compose)
from cnnlab.errors import CnnlabError, UsageError

_ACTIVE: Optional["Context"] = None  # this process's group while a distributed run is on
_LAUNCHED_AT: Optional[float] = None  # a launched worker: time.time() when the parent's train began


@dataclass(frozen=True)
class JoinEnv:
    """Where a launcher placed this process: its ranks, and who set them."""

    source: str  # torchrun | slurm
    rank: int
    world: int
    local_rank: int
    local_world: int


@dataclass(frozen=True)
class Plan:
    mode: str  # single | launch | join
    world: int = 1
    env: Optional[JoinEnv] = None


def _int(env: Mapping[str, str], key: str) -> int:
    try:
        return int(str(env[key]).split("(")[0])  # Slurm writes "2(x3)" for repeated counts
    except ValueError:
        raise UsageError(f"environment variable {key}={env[key]!r} is not a whole number") from None


def detect(env: Optional[Mapping[str, str]] = None) -> Optional[JoinEnv]:
    """The ranks a launcher gave this process (join mode), or None to run or launch here.

    torchrun (and the elastic launcher's workers) set RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR;
    Slurm's srun sets SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, and counts only with
    MASTER_ADDR and MASTER_PORT exported (a batch script's own shell has SLURM_* too). A world of
    one process is no group: None."""
    env = os.environ if env is None else env
    if all(k in env for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")):
        world = _int(env, "WORLD_SIZE")
        found = JoinEnv("torchrun", _int(env, "RANK"), world, _int(env, "LOCAL_RANK"),
                        _int(env, "LOCAL_WORLD_SIZE") if "LOCAL_WORLD_SIZE" in env else world)
    elif all(k in env for k in ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "MASTER_ADDR",
                                "MASTER_PORT")):
        world = _int(env, "SLURM_NTASKS")
        if "SLURM_NTASKS_PER_NODE" in env:
            local = _int(env, "SLURM_NTASKS_PER_NODE")
        else:
            local = max(1, world // _int(env, "SLURM_NNODES")) if "SLURM_NNODES" in env else world
        found = JoinEnv("slurm", _int(env, "SLURM_PROCID"), world, _int(env, "SLURM_LOCALID"),
                        local)
    else:
        return None
    if found.world <= 1:
        return None
    if not (0 <= found.rank < found.world and 0 <= found.local_rank < found.local_world):
        raise UsageError(f"{found.source} gave rank {found.rank} (local {found.local_rank}) "
                         f"outside a world of {found.world} ({found.local_world} on this node)")
    return found


def main_process() -> bool:
    """False in the ranks other than 0 of a torchrun/srun job: they print no summary table."""
    env = detect()
    return env is None or env.rank == 0


def resolve_devices(value: Any) -> int:
    """trainer.devices as a process count: N >= 1, or auto (the CUDA GPUs, 1 without CUDA)."""
    text = str(value).strip().lower()
    if text == "auto":
        import torch

        return max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1
    if isinstance(value, bool) or not text.isdigit() or int(text) < 1:
        raise UsageError(f"trainer.devices={value} is not allowed: it must be at least 1 or auto")
    return int(text)


def check(cfg: Any, world: int) -> None:
    """Settings a run of `world` processes cannot honour: one line, before anything starts. The
    config-only ones ran at compose when trainer.devices was a number; auto resolves here."""
    check_processes(cfg, world)
    if world == 1:
        return
    device = str(cfg.trainer.accelerator)
    if device in ("auto", "cuda"):
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if device == "cuda" and gpus == 0:
            raise UsageError("trainer.accelerator=cuda but this machine has no CUDA device")
        if gpus and world > gpus:
            raise UsageError(f"trainer.devices={world} but this machine has {gpus} CUDA GPU(s); "
                             "NCCL runs one process per GPU")
        on_cuda = gpus > 0
    else:
        on_cuda = False
    if cfg.trainer.get("sync_bn", False) and not on_cuda:
        raise UsageError("trainer.sync_bn=true needs CUDA (torch's SyncBatchNorm refuses CPU "
                         "tensors); on CPU use model.norm=group or a net without batch norm")


def plan(cfg: Any) -> Plan:
    """single, launch or join for this process (see the module docstring); checks first."""
    if _ACTIVE is not None:
        # a run nested inside a distributed one (transfer.source=pretrain) runs in-process
        check(cfg, 1)
        return Plan("single")
    env = detect()
    if env is not None:
        wanted = str(cfg.trainer.devices).strip().lower()
        if wanted != "auto" and resolve_devices(cfg.trainer.devices) != env.world:
            raise UsageError(f"trainer.devices={cfg.trainer.devices} but {env.source} started "
                             f"{env.world} processes; set trainer.devices={env.world} or auto")
        check(cfg, env.world)
        return Plan("join", env.world, env)
    world = resolve_devices(cfg.trainer.devices)
    check(cfg, world)
    return Plan("launch", world) if world > 1 else Plan("single")


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank `rank`'s own random streams (augmentation, dropout): the run seed on
    rank 0; on the others a SeedSequence child of it, far from every small run seed, so a seed
    sweep's runs never share a stream."""
    if rank == 0:
        return int(seed)
    import numpy as np

    child = np.random.SeedSequence(int(seed), spawn_key=(int(rank),))
    return int(child.generate_state(1, np.uint64)[0] >> 2)  # < 2**62: torch takes it


class Context:
    """This process's place in a joined process group and the collectives the engine uses."""

    def __init__(self, env: JoinEnv, device, backend: str):
        self.rank, self.world = env.rank, env.world
        self.local_rank, self.local_world = env.local_rank, env.local_world
        self.device, self.backend = device, backend
        self.launched_at = _LAUNCHED_AT  # None under torchrun/srun
        self.source = "cnnlab launch" if _LAUNCHED_AT is not None else env.source

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def default_threads(self) -> int:
        """Intra-op threads per process on CPU: an equal share of this node's cores."""
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return max(1, (cores or 1) // self.local_world)

    def wrap(self, model):
        """The model inside DistributedDataParallel (gradients averaged over the ranks)."""
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def all_sum(self, *values) -> list:
        """Sums over all ranks of scalars or 0-d tensors, as Python floats (float64 on the wire)."""
        import torch
        import torch.distributed as dist

        t = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=self.device).reshape(())
                         for v in values])
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def from_main(self, fn: Callable[[], Any]) -> Any:
        """fn() run on rank 0 alone; every rank gets its (picklable) result."""
        import torch.distributed as dist

        box = [fn() if self.is_main else None]
        # NCCL moves the pickled bytes through this rank's GPU; gloo through the CPU
        dist.broadcast_object_list(box, src=0,
                                   device=self.device if self.backend == "nccl" else None)
        return box[0]

    def barrier(self) -> None:
        import torch.distributed as dist

        if self.backend == "nccl":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()

    def close(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def setup(p: Plan, cfg: Any) -> Context:
    """Join the process group of a join-mode plan: pick the device and backend, init env://."""
    global _ACTIVE
    import torch
    import torch.distributed as dist

    from cnnlab.training.device import resolve_device

    env = p.env
    device = resolve_device(cfg.trainer.accelerator)
    if device.type == "cuda":
        if env.local_rank >= torch.cuda.device_count():
            raise UsageError(f"local rank {env.local_rank} has no GPU: this node has "
                             f"{torch.cuda.device_count()}")
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if env.source == "slurm":  # env:// reads these; srun sets only its own names
        os.environ.update(RANK=str(env.rank), WORLD_SIZE=str(env.world),
                          LOCAL_RANK=str(env.local_rank))
    dist.init_process_group(backend, init_method="env://", rank=env.rank, world_size=env.world)
    _ACTIVE = Context(env, device, backend)
    return _ACTIVE


def teardown(ctx: Optional[Context]) -> None:
    """Leave the process group (end of a run, failed or not)."""
    global _ACTIVE
    if ctx is not None:
        _ACTIVE = None
        ctx.close()


@contextlib.contextmanager
def _quiet_launcher():
    """The elastic agent logs every worker start and failure with a traceback (through torch's
    own log handlers, which ignore propagation); cnnlab reports one line instead. The parent only
    waits on its workers meanwhile, so its logging is off while it does (--debug keeps it)."""
    import logging

    if os.environ.get("CNNLAB_DEBUG", "") not in ("", "0"):
        yield
        return
    before = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(before)


def launch(cfg: Any, world: int, train_fn: Callable[..., dict], *, run_dir=None,
           job_started: Optional[float] = None, started: Optional[float] = None) -> dict:
    """Run `train_fn(cfg)` (the recipe's train, passed in: this module never imports the recipe)
    in `world` local worker processes; rank 0's summary.

    The workers are started by torch.distributed's elastic launcher (spawned processes, c10d
    rendezvous on a free localhost port, no restarts); each joins the group from the
    environment the launcher sets. A worker's error comes back as one CnnlabError.
    started: time.time() when the caller's train began (the run's wall_seconds count from it)."""
    import secrets
    import tempfile

    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # the ranks' error records and the agent's per-attempt folders, removed when the run ends
    errors = Path(tempfile.mkdtemp(prefix="cnnlab-ranks-"))
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=world, rdzv_backend="c10d",
                          rdzv_endpoint="localhost:0", run_id=f"cnnlab-{secrets.token_hex(6)}",
                          max_restarts=0, monitor_interval=0.25, start_method="spawn",
                          logs_specs=DefaultLogsSpecs(log_dir=str(errors / "agent")))
    try:
        with _quiet_launcher(), _own_signal_handlers():
            out = elastic_launch(config, _worker)(train_fn, cfg,
                                                  None if run_dir is None else str(run_dir),
                                                  job_started, started or time.time(), str(errors))
    except ChildFailedError as exc:
        raise _rank_error(exc, errors) from None
    except SignalException:
        raise KeyboardInterrupt from None
    finally:
        shutil.rmtree(errors, ignore_errors=True)
    return out[0]


SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT")  # those torch's elastic agent takes over


@contextlib.contextmanager
def _own_signal_handlers():
    """The elastic agent installs handlers that turn SIGINT/SIGTERM into its SignalException and
    leaves them installed when it returns: a later Ctrl-C in this process (the next job of a
    sweep, run-all's next experiment) would then raise SignalException instead of
    KeyboardInterrupt, be recorded as a failure and exit 1 instead of 130. Put ours back."""
    import signal

    saved = {name: signal.getsignal(getattr(signal, name)) for name in SIGNALS
             if hasattr(signal, name)}
    try:
        yield
    finally:
        for name, handler in saved.items():
            if handler is not None:
                signal.signal(getattr(signal, name), handler)


def _worker(train_fn: Callable[..., dict], cfg: Any, run_dir: Optional[str],
            job_started: Optional[float], started: float, errors: str):
    """One launched rank: `train` in join mode. An error is written to errors/rank-<r>.json and
    the process exits with the error's code, without a traceback (unless CNNLAB_DEBUG)."""
    global _LAUNCHED_AT
    import signal

    def interrupt_once(signum, frame):
        # Ctrl-C reaches every worker, and then the launcher forwards its own SIGINT: the second
        # must not cut short the first one's clean-up (rank 0's "interrupted" summary)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt_once)
    _LAUNCHED_AT = started
    try:
        summary = train_fn(cfg, run_dir=run_dir, job_started=job_started)
        atexit.register(_exit_now)
        return summary if os.environ.get("RANK", "0") == "0" else None
    except BaseException as exc:  # noqa: BLE001 - every way a rank ends goes to the parent
        code = 130 if isinstance(exc, KeyboardInterrupt) else getattr(exc, "exit_code", 1)
        rank = os.environ.get("RANK", "?")
        record = {"rank": rank, "time": time.time(), "type": type(exc).__name__,
                  "module": type(exc).__module__, "message": str(exc).strip(), "exit_code": code}
        tmp = Path(errors) / f".rank-{rank}.tmp"
        tmp.write_text(json.dumps(record), encoding="utf-8")
        tmp.replace(Path(errors) / f"rank-{rank}.json")
        if os.environ.get("CNNLAB_DEBUG", "") not in ("", "0"):
            import traceback

            traceback.print_exc()
        _exit_now(code)


def _exit_now(code: int = 0) -> None:
    """End a worker without the interpreter's teardown of torch (1-2 s measured on the 2-core
    CI-class machine under load): the launcher returns only when every worker has exited. A
    finished worker calls it as its last exit handler, once its result is handed over."""
    import logging
    import sys

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _rank_error(exc, errors: Path) -> BaseException:
    """The earliest error any rank recorded (the root cause: a rank whose peer died fails after
    it), as the cnnlab error class it was, or a one-line CnnlabError naming the rank."""
    from cnnlab import errors as cnnlab_errors

    records = []
    for path in errors.glob("rank-*.json"):
        try:
            records.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    if not records:
        rank, failure = exc.get_first_failure()
        how = (f"signal {failure.signal_name()}" if failure.exitcode < 0
               else f"exit code {failure.exitcode}")
        return CnnlabError(f"rank {rank} of the data-parallel run ended with {how}")
    first = min(records, key=lambda r: r["time"])
    if first["type"] == "KeyboardInterrupt":
        return KeyboardInterrupt()
    cls = getattr(cnnlab_errors, first["type"], None)
    if first["module"] == cnnlab_errors.__name__ and isinstance(cls, type) \
            and issubclass(cls, CnnlabError):
        return cls(first["message"])  # the CLI prints it as it prints a one-process error
    lines = first["message"].splitlines()
    err = CnnlabError(f"rank {first['rank']}: {first['type']}: {lines[0] if lines else ''} "
                      "(rerun with --debug for the traceback)")
    err.exit_code = int(first["exit_code"]) or 1
    return err
