#!/usr/bin/env python3
"""Run cnnlab's CUDA path end to end on one GPU and print one table (check, command, status,
seconds, key figure). Usually started as `bash scripts/gpu_check.sh --out DIR`.

Each check runs `python -m cnnlab ...` from this source tree (PYTHONPATH=<repo>, so what is
tested is the working tree, installed or not) under its own time limit, with its own outputs
folder (CNNLAB_OUTPUTS), and must show that it ran on CUDA. A failed check does not stop the
others; the exit status is 1 if any failed, 2 for bad arguments. Nothing is installed and
nothing is downloaded: the data is generated (shapes) or packaged (scikit-learn's digits;
Fashion-MNIST only where /usr/share/datasets/fashion-mnist exists).

--out DIR receives three files: gpu_check.md (the table, rewritten after every check, so a
killed run still leaves what it got), gpu_check.json (the same rows and the machine) and
gpu_check.log (every check's command, exit status and full output). The runs themselves go to
--work DIR (default: a new temporary folder), which stays.

Without a CUDA device the script refuses (exit 1) unless --allow-cpu, which runs a shrunk
version of every check on the CPU: that is how its argument handling and table are tested on
machines without a GPU (tests/test_gpu_check.py). --dry-run prints the plan and runs nothing.

Python packages: everything cnnlab imports must be importable by this Python. A machine that
lacks some pure-Python ones (Hydra, OmegaConf and ANTLR's runtime are missing from some GPU
images) can be given them with --deps DIR, a folder put first on PYTHONPATH; `--prepare-deps
DIR` fills such a folder on a machine that has them, by copying them (no network).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# pure-Python packages cnnlab needs that a GPU image may lack: import name -> distribution
PURE_DEPS = {"hydra": "hydra-core", "omegaconf": "omegaconf", "antlr4": "antlr4-python3-runtime"}
NEEDED = ["torch", "torchvision", "typer", "rich", "hydra", "omegaconf", "pandas", "sklearn",
          "filelock", "matplotlib", "scipy", "safetensors"]
BUDGET_S = 300.0  # all checks together; the GPU target is under 5 minutes


class Failed(Exception):
    """A check that ran but did not show what it should; the message is its key figure."""


@dataclass
class Check:
    name: str
    what: str
    args: list  # cnnlab's arguments; "{run:NAME}" is the run folder of check NAME
    limit_s: float
    read: Callable  # (Result, mode) -> key figure; raises Failed
    needs: str | None = None
    expect_error: bool = False
    skip_reason: str | None = None


@dataclass
class Result:
    check: Check
    command: str
    status: str = "planned"  # planned | ok | FAILED | skipped
    seconds: float = 0.0
    key: str = ""
    rc: int | None = None
    outputs: Path | None = None
    log: str = ""
    run_dir: Path | None = field(default=None, repr=False)


# ---------------------------------------------------------------- the checks


def plan(mode: str) -> list:
    """The checks, in order, for mode 'cuda' (the real thing) or 'cpu' (shrunk, for tests)."""
    cuda = mode == "cuda"
    system = os.environ.get("CNNLAB_SYSTEM_DATASETS") or "/usr/share/datasets"
    fashion = Path(system) / "fashion-mnist"
    acc = ["trainer.accelerator=cuda"] if cuda else ["trainer.accelerator=cpu", "trainer.threads=1"]
    tiny = [] if cuda else ["trainer.epochs=1", "trainer.train_eval_size=0"]
    shapes = (["data=shapes", "trainer.epochs=5"] if cuda else
              ["data=shapes", "data.num_train=200", "data.num_test=100", "model=lenet5"] + tiny)
    checks = [
        Check("default", "the default job on the GPU", ["train"] + acc +
              ([] if cuda else ["data.train_per_class=10"] + tiny), 150,
              lambda r, m: _read_run(r, m, min_acc=0.95 if m == "cuda" else None)),
    ]
    for preset in ("fp32", "bf16_mixed", "fp16_mixed"):
        checks.append(Check(f"shapes_{preset.split('_')[0]}", f"data=shapes, precision={preset}",
                            ["train"] + shapes + [f"precision={preset}"] + acc, 150,
                            lambda r, m: _read_run(r, m, min_acc=0.2 if m == "cuda" else None)))
    checks += [
        Check("eval_tencrop", "ten-crop evaluation of the shapes_fp32 run",
              ["eval", "{run:shapes_fp32}", "--tencrop", "--device", mode], 90, _read_eval,
              needs="shapes_fp32"),
        Check("bench_train", "bench-train against a DataLoader",
              ["bench-train", "model=resnet8", "data=shapes", "aug=alexnet"] + acc +
              (["--vs-dataloader", "--steps", "30", "--warmup", "5", "--repeats", "3",
                "--workers", "4"] if cuda else
               ["data.num_train=200", "data.num_test=100", "--vs-dataloader", "--steps", "2",
                "--warmup", "1", "--repeats", "1", "--workers", "0"]), 150, _read_bench_train),
        # cuDNN: the library algorithm on CUDA; needs bench-conv's --device (see the report)
        Check("bench_conv", "bench-conv, quick, library = cuDNN",
              ["bench-conv", "--quick", "--out", "conv",
               "--precision", "fp32,fp16" if cuda else "fp32"] +
              (["--device", "cuda"] if cuda else ["--algos", "library,im2col", "--shape",
                                                  "1,4,8,8,4,3,3,1,1", "--repeats", "1"]),
              150, _read_bench_conv),
        Check("sweep", "a sweep of two tiny jobs",
              ["sweep", "model=lenet5,resnet8", "--no-plots"] + acc +
              (["trainer.epochs=3"] if cuda else ["data.train_per_class=10"] + tiny), 150,
              _read_sweep),
        Check("devices2", "trainer.devices=2 on one GPU: a one-line error",
              ["train", "trainer.devices=2", "trainer.accelerator=cuda"], 90, _read_error,
              expect_error=True),
        Check("fashion_mnist", "Fashion-MNIST from the OS package",
              ["train", "data=fashion_mnist", "trainer.epochs=1"] + acc +
              ([] if cuda else ["data.train_per_class=10", "model=lenet5"] + tiny[1:]), 150,
              lambda r, m: _read_run(r, m, min_acc=0.5 if m == "cuda" else None),
              skip_reason=None if fashion.is_dir() else
              f"no {fashion} (OS package dataset-fashion-mnist)"),
    ]
    return checks


def _summary(result: Result) -> dict:
    runs = sorted((result.outputs / "runs").glob("*/summary.json"))
    if len(runs) != 1:
        raise Failed(f"expected one run folder under {result.outputs}/runs, found {len(runs)}")
    result.run_dir = runs[0].parent
    return json.loads(runs[0].read_text())


def _on(device: str, mode: str) -> None:
    if not str(device).startswith(mode):
        raise Failed(f"ran on {device or 'an unknown device'}, not {mode}")


def _read_run(result: Result, mode: str, min_acc: float | None) -> str:
    s = _summary(result)
    if s.get("status") != "done":
        raise Failed(f"run status {s.get('status')}")
    _on(s.get("device", ""), mode)
    acc = float(s["test_acc"])
    key = (f"test_acc {acc:.4f}, {float(s.get('images_per_sec', 0)):,.0f} img/s, "
           f"{s.get('epochs_run')} epochs, {'channels_last' if s.get('channels_last') else 'NCHW'}")
    if s.get("skipped_steps") or s.get("loss_scale", 1.0) != 1.0:
        key += f", skipped_steps {s.get('skipped_steps')}, loss_scale {s.get('loss_scale'):g}"
    if min_acc is not None and acc < min_acc:
        raise Failed(f"{key}: test_acc below {min_acc}")
    return key


def _csv(path: Path) -> list:
    import csv

    if not path.is_file():
        raise Failed(f"no {path}")
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _read_eval(result: Result, mode: str) -> str:
    rows = {r.get("eval_mode"): r for r in _csv(result.outputs / "results.csv")}
    if "tencrop" not in rows or "center" not in rows:
        raise Failed(f"no center and tencrop rows in {result.outputs}/results.csv")
    return (f"center top1 {float(rows['center']['eval_top1']):.4f}, tencrop top1 "
            f"{float(rows['tencrop']['eval_top1']):.4f}, "
            f"{float(rows['tencrop']['eval_ms_per_image']):.3f} ms/image")


def _read_bench_train(result: Result, mode: str) -> str:
    rows = {r.get("bench_pipeline", ""): r for r in _csv(result.outputs / "bench.csv")}
    ours = next((r for p, r in rows.items() if p.startswith("cnnlab")), None)
    if ours is None:
        raise Failed(f"no cnnlab row in {result.outputs}/bench.csv")
    _on(ours.get("device", ""), mode)
    return (f"cnnlab {float(ours['bench_images_per_sec']):,.0f} img/s, "
            f"{float(ours['bench_vs_ceiling']):.2f}x ceiling, "
            f"{float(ours['bench_vs_dataloader']):.2f}x DataLoader")


def _read_bench_conv(result: Result, mode: str) -> str:
    rows = [r for r in _csv(result.outputs / "conv" / "conv.csv") if r.get("supported") == "True"]
    lib = [r for r in rows if r["algo"] == "library"]
    if not lib:
        raise Failed("no supported library rows in conv.csv")
    _on(lib[0].get("device", ""), mode)
    best = max(lib, key=lambda r: float(r["gflops"]))
    return (f"{len(rows)} rows; library best {float(best['gflops']):,.1f} GFLOP/s "
            f"({best['layer']}, {best['precision']})")


def _read_sweep(result: Result, mode: str) -> str:
    rows = [r for r in _csv(result.outputs / "results.csv") if r.get("sweep")]
    done = [r for r in rows if r.get("status") == "done"]
    if len(rows) != 2 or len(done) != 2:
        raise Failed(f"{len(done)} of {len(rows)} sweep rows done (2 expected)")
    for r in done:
        _on(r.get("device", ""), mode)
    return "2/2 jobs done, test_acc " + ", ".join(f"{float(r['test_acc']):.4f}" for r in done)


def _read_error(result: Result, mode: str) -> str:
    if result.rc == 0:
        raise Failed("exit 0; an error was expected")
    if "Traceback" in result.log:
        raise Failed("a traceback instead of a one-line error")
    lines = [ln for ln in result.log.splitlines() if ln.strip()]
    if len(lines) != 1 or not lines[0].startswith("error: "):
        raise Failed(f"{len(lines)} lines of output, not one 'error: ' line")
    return f"exit {result.rc}: {lines[0]}"


# ---------------------------------------------------------------- running


def child_env(outputs: Path, deps: Path | None, mode: str) -> dict:
    env = dict(os.environ)
    path = [str(REPO)] + ([str(deps)] if deps else [])
    if env.get("PYTHONPATH"):
        path.append(env["PYTHONPATH"])
    env.update(PYTHONPATH=os.pathsep.join(path), PYTHONUNBUFFERED="1", COLUMNS="200",
               CNNLAB_OUTPUTS=str(outputs))
    env.pop("CNNLAB_DEBUG", None)
    if mode == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def run_one(result: Result, argv: list, env: dict, limit_s: float) -> None:
    """Run argv with a time limit, in its own process group (a sweep's or a launcher's
    children go with it on a timeout); its output lands in result.log."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=env["CNNLAB_OUTPUTS"], stdin=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            result.rc = proc.wait(timeout=limit_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            result.rc = None
        log.seek(0)
        result.log = log.read()
    result.seconds = time.perf_counter() - t0


def execute(result: Result, mode: str, done: dict, env: dict, limit_s: float) -> None:
    check = result.check
    args = [_fill(a, done) for a in check.args]
    result.command = "cnnlab " + shlex.join(args)
    run_one(result, [sys.executable, "-m", "cnnlab", *args], env, limit_s)
    if result.rc is None:
        result.status, result.key = "FAILED", f"timed out after {limit_s:.3g} s"
        return
    if result.rc != 0 and not check.expect_error:
        result.status, result.key = "FAILED", f"exit {result.rc}: {_last_line(result.log)}"
        return
    try:
        result.key = check.read(result, mode)
        result.status = "ok"
    except Failed as exc:
        result.status, result.key = "FAILED", str(exc)
    except Exception as exc:  # noqa: BLE001  (an unreadable figure fails the check, not the script)
        result.status, result.key = "FAILED", f"reading the outputs: {type(exc).__name__}: {exc}"


def _fill(arg: str, done: dict) -> str:
    m = re.fullmatch(r"\{run:(\w+)\}", arg)
    if not m:
        return arg
    found = done.get(m.group(1))
    if found is not None and found.run_dir:
        return str(found.run_dir)
    return f"<run folder of {m.group(1)}>"


def _last_line(text: str) -> str:
    """The line of a log that says what went wrong: cnnlab's 'error: ...' line, else the last
    line (a traceback's exception, or the text inside a usage-error box)."""
    lines = [ln.strip(" \t│╭╮╰╯─") for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    errors = [ln for ln in lines if ln.startswith("error:")]
    return (errors or lines or ["(no output)"])[-1][:300]


# ---------------------------------------------------------------- the table


def table(results: list, title: str) -> str:
    head = ["check", "command", "status", "seconds", "key figure"]
    rows = [[r.check.name, f"`{r.command}`", r.status,
             f"{r.seconds:.1f}" if r.status in ("ok", "FAILED") else "-",
             r.key.replace("|", "/")] for r in results]
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    return "\n".join([title, "", line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [line(r) for r in rows]) + "\n"


def write_outputs(out: Path, results: list, title: str, machine: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.md").write_text(table(results, title), encoding="utf-8")
    (out / "gpu_check.json").write_text(json.dumps({"machine": machine, "checks": [
        {"check": r.check.name, "command": r.command, "status": r.status,
         "seconds": round(r.seconds, 2), "key": r.key, "rc": r.rc} for r in results]}, indent=2))


def append_log(out: Path, result: Result) -> None:
    with (out / "gpu_check.log").open("a", encoding="utf-8") as fh:
        fh.write(f"===== {result.check.name}: {result.command}\n"
                 f"===== status {result.status}, exit {result.rc}, {result.seconds:.1f} s: "
                 f"{result.key}\n{result.log}\n")


# ---------------------------------------------------------------- the machine


PROBE = r"""
import importlib, json, sys
missing = []
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception as exc:
        missing.append(f"{name} ({type(exc).__name__}: {exc})")
info = {"python": sys.version.split()[0], "missing": missing}
try:
    import torch
    info.update(torch=torch.__version__, cuda=torch.version.cuda,
                available=torch.cuda.is_available())
    if info["available"]:
        info.update(gpus=torch.cuda.device_count(), name=torch.cuda.get_device_name(0),
                    cudnn=torch.backends.cudnn.version(),
                    capability=".".join(map(str, torch.cuda.get_device_capability(0))))
except Exception as exc:
    info["torch_error"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(info))
"""


def probe(env: dict) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, *NEEDED, "cnnlab.cli.main"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"missing": [f"the probe failed: {_last_line(proc.stderr)}"]}


def describe(info: dict, mode: str) -> str:
    if mode == "cuda":
        return (f"{info.get('name')} x{info.get('gpus')} (sm {info.get('capability')}), "
                f"torch {info.get('torch')}, CUDA {info.get('cuda')}, cuDNN {info.get('cudnn')}, "
                f"Python {info.get('python')}, {os.cpu_count()} CPUs")
    return (f"CPU only (--allow-cpu, shrunk checks), torch {info.get('torch')}, "
            f"Python {info.get('python')}")


def prepare_deps(folder: Path) -> int:
    """Copy the pure-Python packages of PURE_DEPS that this Python has into `folder`."""
    import importlib.util

    folder.mkdir(parents=True, exist_ok=True)
    for name, dist in PURE_DEPS.items():
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            print(f"error: {dist} (import {name}) is not importable here; nothing to copy",
                  file=sys.stderr)
            return 1
        src = Path(next(iter(spec.submodule_search_locations)))
        shutil.copytree(src, folder / name, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        print(f"copied {dist} from {src} to {folder / name}")
    return 0


# ---------------------------------------------------------------- the command line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse prints the usage too)
        self.exit(2, f"error: {message} (see --help)\n")


def parse(argv: list) -> argparse.Namespace:
    names = [c.name for c in plan("cuda")]
    p = _Parser(prog="scripts/gpu_check.sh", description=__doc__.split("\n\n")[0],
                                epilog="checks: " + ", ".join(names))
    add = p.add_argument
    add("--out", type=Path,
        help="where gpu_check.md/.json/.log go (default $OUT, else a new temporary folder)")
    add("--work", type=Path, help="where the runs go (default: a new temporary folder)")
    add("--only", help="comma list of checks to run")
    add("--skip", help="comma list of checks to leave out")
    add("--dry-run", action="store_true",
        help="print the commands and the planned table; run nothing")
    add("--allow-cpu", action="store_true",
        help="without a CUDA device, run shrunk checks on the CPU (for tests)")
    add("--budget", type=float, default=BUDGET_S,
        help=f"seconds for all checks together (default {BUDGET_S:.0f})")
    add("--deps", type=Path, help="a folder of pure-Python packages to put first on PYTHONPATH")
    add("--prepare-deps", type=Path, metavar="DIR",
        help="copy Hydra, OmegaConf and ANTLR's runtime from this Python into DIR and exit")
    return p.parse_args(argv)


def usage(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def select(checks: list, only: str | None, skip: str | None) -> list:
    """The checks --only/--skip leave, with what a kept one needs; ValueError for bad names."""
    names = [c.name for c in checks]
    split = lambda text: [t.strip() for t in (text or "").split(",") if t.strip()]
    wanted, dropped = split(only), split(skip)
    for n in wanted + dropped:
        if n not in names:
            raise ValueError(f"unknown check '{n}'; checks: {', '.join(names)}")
    if only is not None and not wanted:
        raise ValueError("--only names no check")
    keep = {n for n in (wanted or names) if n not in dropped}
    for c in checks:
        if c.name in keep and c.needs and c.needs not in keep:
            if c.needs in dropped:
                raise ValueError(f"check {c.name} needs {c.needs}, which --skip leaves out")
            keep.add(c.needs)
    return [c for c in checks if c.name in keep]


def main(argv: list | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.prepare_deps:
        return prepare_deps(args.prepare_deps)
    if args.budget <= 0:
        return usage("--budget must be more than 0 seconds")
    if args.deps and not args.deps.is_dir():
        return usage(f"--deps {args.deps}: no such folder")
    mode = "cpu" if args.allow_cpu else "cuda"
    try:
        checks = select(plan(mode), args.only, args.skip)
    except ValueError as exc:
        return usage(str(exc))
    results = [Result(c, "cnnlab " + shlex.join([_fill(a, {}) for a in c.args])) for c in checks]
    if args.dry_run:
        for r in results:
            print(r.command)
        print()
        print(table(results, f"gpu_check plan ({mode})"), end="")
        return 0
    return run_all(args, results)


def run_all(args: argparse.Namespace, results: list) -> int:
    out = args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else None)
    out = Path(out or tempfile.mkdtemp(prefix="gpu_check-")).resolve()
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu_check-work-")).resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        (out / "gpu_check.log").write_text("", encoding="utf-8")
    except OSError as exc:
        print(f"error: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1
    mode = "cpu" if args.allow_cpu else "cuda"
    info = probe(child_env(work, args.deps, mode))
    if info.get("missing") or info.get("torch_error"):
        what = "; ".join(info.get("missing") or [info["torch_error"]])
        print(f"error: {sys.executable} cannot import what cnnlab needs: {what} "
              "(pure-Python ones can come with --deps DIR, see --prepare-deps)", file=sys.stderr)
        return 1
    if mode == "cuda" and not info.get("available"):
        print(f"error: no CUDA device found (torch {info.get('torch')}, torch.cuda.is_available() "
              "is False); this script checks the GPU path; --allow-cpu runs shrunk checks on "
              "the CPU",
              file=sys.stderr)
        return 1
    title = f"gpu_check {time.strftime('%Y-%m-%d %H:%M')}: {describe(info, mode)}"
    print(title, flush=True)
    deadline = time.perf_counter() + args.budget
    done: dict = {}
    for r in results:
        left = deadline - time.perf_counter()
        need = done.get(r.check.needs) if r.check.needs else None
        r.outputs = work / r.check.name
        if r.check.skip_reason:
            r.status, r.key = "skipped", r.check.skip_reason
        elif r.check.needs and (need is None or need.status != "ok" or need.run_dir is None):
            r.status, r.key = "skipped", f"needs {r.check.needs}, which did not pass"
        elif left < 5:
            r.status, r.key = "FAILED", f"not run: the --budget of {args.budget:.0f} s was used up"
        else:
            r.outputs.mkdir(parents=True, exist_ok=True)
            env = child_env(r.outputs, args.deps, mode)
            execute(r, mode, done, env, min(r.check.limit_s, left))
        done[r.check.name] = r
        print(f"{r.check.name}: {r.status} ({r.seconds:.1f} s) {r.key}", flush=True)
        append_log(out, r)
        write_outputs(out, results, title, info)
    print()
    print(table(results, title), end="")
    failed = [r.check.name for r in results if r.status == "FAILED"]
    verdict = f"FAILED: {', '.join(failed)}" if failed else "none failed"
    print(f"\n{len(results) - len(failed)} of {len(results)} checks not failed; {verdict}. "
          f"Logs: {out / 'gpu_check.log'}; runs: {work}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
