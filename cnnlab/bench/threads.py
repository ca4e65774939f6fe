"""`cnnlab bench-train --vs-threads`: does trainer.threads=auto (cnnlab.threads) hold up on a quiet
and on a loaded machine?

Each measurement is a fresh process that starts as `cnnlab train` does (cnnlab.threads.prepare()
before torch is imported, so OpenMP gets the wait policy a real run gets), builds the job's
parts and times `steps` training steps through cnnlab's own loader after `warmup` steps. The
figure is images per second over the whole measured stretch (wall time, no trimmed means: a
thread that waits for a core shows up as it would in a run). Settings: auto and each thread
count 1, 2, 4, ... up to the usable CPUs, in rounds (the order rotates), first quiet, then
with `load` busy processes that the benchmark starts itself and stops at the end (each also
stops by itself after a time limit, should this process die). The verdict is auto's rate over
the best setting's, per condition (medians over the rounds).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from cnnlab.errors import CnnlabError, UsageError

CONDITIONS = ("quiet", "loaded")
LOAD_LIMIT_S = 1800  # a busy process of the benchmark ends by itself after this long
TARGET = 0.8  # auto / best, in both conditions (issue 20)


@dataclass
class ThreadsResult:
    settings: list  # "auto", then the thread counts
    load: int  # busy processes in the loaded condition
    rates: dict = field(default_factory=dict)  # (condition, setting) -> [images/s per round]
    threads: dict = field(default_factory=dict)  # (condition, setting) -> threads it ran with
    why: dict = field(default_factory=dict)  # condition -> auto's reason (the last round's)
    cpu: str = ""

    def rate(self, condition: str, setting: str) -> float:
        values = self.rates.get((condition, setting)) or [float("nan")]
        return statistics.median(values)

    def best(self, condition: str) -> str:
        return max(self.settings, key=lambda s: self.rate(condition, s))

    def ratio(self, condition: str) -> float:
        """auto's rate over the best setting's (1.0 when auto is the best)."""
        return self.rate(condition, "auto") / self.rate(condition, self.best(condition))


def thread_counts(cpus: int) -> list[int]:
    """1, 2, 4, ... up to `cpus`, and `cpus` itself."""
    counts, n = [], 1
    while n < cpus:
        counts.append(n)
        n *= 2
    return counts + [cpus]


def check_args(steps: int, warmup: int, repeats: int, load: int | None) -> None:
    from cnnlab.bench.train import check_args as check_counts

    check_counts(steps, warmup, repeats, 0)
    if load is not None and load < 1:
        raise UsageError(f"--load must be at least 1 busy process, got {load}")


def run(overrides: list[str], steps: int = 30, warmup: int = 3, repeats: int = 2,
        load: int | None = None, conditions=CONDITIONS, echo=print, timeout: float = 600) -> ThreadsResult:
    """Measure every setting in every condition (see the module docstring)."""
    from cnnlab import machine, threads

    check_args(steps, warmup, repeats, load)
    cpus = threads.usable_cpus()
    load = load or cpus
    settings = ["auto", *(str(n) for n in thread_counts(cpus))]
    result = ThreadsResult(settings, load, cpu=machine.cpu_name())
    for condition in conditions:
        with background_load(load if condition == "loaded" else 0):
            for r in range(repeats):
                order = settings[r % len(settings):] + settings[:r % len(settings)]
                for setting in order:
                    rec = measure(overrides, setting, steps, warmup, timeout)
                    result.rates.setdefault((condition, setting), []).append(rec["images_per_sec"])
                    result.threads[(condition, setting)] = rec["threads"]
                    if setting == "auto":
                        result.why[condition] = rec["why"]
                    echo(f"  {condition:6s} round {r + 1}/{repeats} threads={setting:4s} "
                         f"({rec['threads']} thread(s)): {rec['images_per_sec']:,.0f} img/s")
    return result


def measure(overrides: list[str], setting: str, steps: int, warmup: int, timeout: float) -> dict:
    """One measurement in a fresh process (python -m cnnlab.bench.threads)."""
    spec = json.dumps({"overrides": list(overrides), "setting": setting, "steps": steps,
                       "warmup": warmup})
    try:
        done = subprocess.run([sys.executable, "-m", "cnnlab.bench.threads", spec], capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise CnnlabError(f"threads={setting}: a measurement took over {timeout:.0f} s") from exc
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        why = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise CnnlabError(f"threads={setting}: the measuring process failed ({why})")
    return json.loads(lines[-1])


@contextmanager
def background_load(n: int) -> Iterator[list]:
    """`n` busy processes (a Python loop each) for the length of the block."""
    code = f"import time\nend = time.time() + {LOAD_LIMIT_S}\nwhile time.time() < end:\n    pass\n"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(n)]
    try:
        if procs:
            time.sleep(0.5)  # running before the first measurement samples the machine
        yield procs
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def _measure_here(spec: dict) -> dict:
    """The measuring process: start as `cnnlab train` does, then time the job's steps."""
    from cnnlab import threads

    threads.prepare()  # before torch: the wait policy a real run would get
    from cnnlab.config import compose

    cfg = compose([*spec["overrides"], f"trainer.threads={spec['setting']}", "trainer.progress=none"])
    import torch

    from cnnlab.bench.train import _Clock, _Epochs, _stepper
    from cnnlab.training.recipe import build_parts

    parts = build_parts(cfg)
    loader, clock = parts.train_loader, _Clock(parts.device)

    def epoch_iter(epoch: int):
        loader.set_epoch(epoch)
        return iter(loader)

    batches = _Epochs(epoch_iter)
    stepper = _stepper(parts.model, cfg, parts.precision, clock)
    for _ in range(spec["warmup"]):
        stepper(batches)
    images, start = 0, clock.now()
    for _ in range(spec["steps"]):
        images += stepper(batches)[1]
    seconds = clock.now() - start
    stepper.close()
    return {"setting": spec["setting"], "threads": torch.get_num_threads(),
            "images_per_sec": images / seconds, "why": parts.threads_why,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "")}


def rows(result: ThreadsResult) -> list[tuple[dict, dict]]:
    """(head extras, metrics) per condition and setting, for outputs/bench.csv."""
    out = []
    for condition in CONDITIONS:
        best = result.best(condition) if (condition, "auto") in result.rates else None
        for setting in result.settings:
            if (condition, setting) not in result.rates:
                continue
            out.append(({"bench_pipeline": f"threads={setting}", "bench_condition": condition},
                        {"bench_images_per_sec": result.rate(condition, setting),
                         "bench_threads": result.threads[(condition, setting)],
                         "bench_vs_best": result.rate(condition, setting) / result.rate(condition, best),
                         "bench_load_processes": result.load if condition == "loaded" else 0,
                         "bench_rounds": len(result.rates[(condition, setting)])}))
    return out


def main(argv: list[str]) -> int:
    try:
        print(json.dumps(_measure_here(json.loads(argv[0]))), flush=True)
    except CnnlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
