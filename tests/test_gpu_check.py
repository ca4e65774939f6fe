"""scripts/gpu_check.sh / gpu_check.py: the GPU check's argument handling, its refusal without a
GPU, and a shrunk real run on the CPU (--allow-cpu). None of this needs a GPU: CUDA is hidden
from every command here (CUDA_VISIBLE_DEVICES=''), so the tests behave alike on any machine."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "gpu_check.sh"
ALL = ["default", "shapes_fp32", "shapes_bf16", "shapes_fp16", "eval_tencrop", "bench_train",
       "bench_conv", "sweep", "devices2", "fashion_mnist"]


def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=sys.executable, CUDA_VISIBLE_DEVICES="")
    env.pop("OUT", None)
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO, check=False)


def lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def test_dry_run_lists_every_check_and_runs_nothing(tmp_path):
    out = tmp_path / "out"
    done = run("--dry-run", "--out", str(out))
    assert done.returncode == 0, done.stderr
    rows = [ln for ln in done.stdout.splitlines() if ln.startswith("| ") and "planned" in ln]
    assert [r.split("|")[1].strip() for r in rows] == ALL
    assert "cnnlab train trainer.accelerator=cuda\n" in done.stdout  # the default job, on cuda
    for preset in ("fp32", "bf16_mixed", "fp16_mixed"):
        assert f"precision={preset} trainer.accelerator=cuda" in done.stdout
    assert "cnnlab train trainer.devices=2 trainer.accelerator=cuda" in done.stdout
    assert not out.exists()  # nothing ran, nothing written


def test_dry_run_only_adds_what_a_check_needs():
    done = run("--dry-run", "--only", "eval_tencrop", "--allow-cpu")
    assert done.returncode == 0, done.stderr
    rows = [ln.split("|")[1].strip() for ln in done.stdout.splitlines() if "planned" in ln]
    assert rows == ["shapes_fp32", "eval_tencrop"]
    assert "trainer.accelerator=cpu" in done.stdout


@pytest.mark.parametrize("args, says", [
    (["--only", "default,nope"], "unknown check 'nope'; checks: default, shapes_fp32"),
    (["--skip", "bench-conv"], "unknown check 'bench-conv'"),
    (["--only", ","], "--only names no check"),
    (["--only", "eval_tencrop", "--skip", "shapes_fp32"], "eval_tencrop needs shapes_fp32"),
    (["--budget", "0"], "--budget must be more than 0"),
    (["--budget", "soon"], "argument --budget: invalid float value: 'soon'"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
])
def test_bad_check_names_are_refused_in_one_line(args, says, tmp_path):
    done = run(*args, "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert lines(done.stderr) == [lines(done.stderr)[0]] and done.stderr.startswith("error: ")
    assert says in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_no_cuda_device_is_refused_in_one_line(tmp_path):
    done = run("--only", "devices2", "--out", str(tmp_path / "out"))
    assert done.returncode == 1
    assert len(lines(done.stderr)) == 1
    assert done.stderr.startswith("error: no CUDA device found")
    assert "--allow-cpu" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out" / "gpu_check.md").exists()  # no check ran


@pytest.mark.slow
def test_a_package_cnnlab_needs_missing_is_one_line(tmp_path):
    deps = tmp_path / "deps" / "hydra"
    deps.mkdir(parents=True)
    (deps / "__init__.py").write_text("raise ImportError('not here')\n")
    done = run("--allow-cpu", "--only", "devices2", "--deps", str(deps.parent),
               "--out", str(tmp_path / "out"))
    assert done.returncode == 1
    assert len(lines(done.stderr)) == 1
    assert "cannot import what cnnlab needs: hydra (ImportError: not here)" in done.stderr


@pytest.mark.slow
def test_allow_cpu_runs_two_checks_and_writes_the_table(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    done = run("--allow-cpu", "--only", "default,devices2", "--out", str(out), "--work", str(work))
    assert done.returncode == 0, done.stdout + done.stderr
    table = (out / "gpu_check.md").read_text()
    assert table in done.stdout  # the one table, printed and saved
    rows = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[2:-1]]
            for ln in table.splitlines() if ln.startswith("| ") and "check" not in ln}
    assert list(rows) == ["default", "devices2"]
    assert rows["default"][1] == "ok" and rows["default"][3].startswith("test_acc ")
    assert rows["devices2"][1] == "ok"
    said = rows["devices2"][3]
    assert "error: trainer.accelerator=cuda but this machine has no CUDA device" in said
    saved = json.loads((out / "gpu_check.json").read_text())
    assert [c["status"] for c in saved["checks"]] == ["ok", "ok"]
    log = (out / "gpu_check.log").read_text()
    assert "===== default: cnnlab train trainer.accelerator=cpu" in log
    assert len(list((work / "default" / "runs").glob("*/summary.json"))) == 1


@pytest.mark.slow
def test_a_failed_check_does_not_stop_the_others(tmp_path, monkeypatch, capsys):
    g = gpu_check()
    read_any = lambda result, mode: "read"
    checks = [g.Check("bad", "a usage error", ["train", "model=nope"], 60, read_any),
              g.Check("slow", "killed at its limit", ["train"], 0.5, read_any),
              g.Check("error", "an expected error", ["train", "trainer.devices=2",
                                                     "trainer.accelerator=cuda"], 60,
                      g._read_error, expect_error=True)]
    monkeypatch.setattr(g, "plan", lambda mode: checks)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.delenv("OUT", raising=False)
    rc = g.main(["--allow-cpu", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "w")])
    assert rc == 1
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    saved = {c["check"]: c for c in report["checks"]}
    assert saved["bad"]["status"] == "FAILED"
    assert saved["bad"]["key"].startswith("exit 2: error: unknown model 'nope'")
    assert saved["slow"]["status"] == "FAILED"
    assert saved["slow"]["key"] == "timed out after 0.5 s"
    assert saved["error"]["status"] == "ok"
    assert "FAILED: bad, slow" in capsys.readouterr().out


def test_read_error_wants_one_line_and_no_traceback():
    g = gpu_check()
    check = g.Check("e", "", [], 1, g._read_error, expect_error=True)
    one = "error: trainer.devices=2 but this machine has 1 CUDA GPU(s)\n"
    ok = g.Result(check, "", rc=2, log=one)
    assert g._read_error(ok, "cuda").startswith("exit 2: error: trainer.devices=2")
    for rc, log in [(0, "fine\n"), (1, "Traceback (most recent call last):\nerror: x\n"),
                    (1, "warning: slow\nerror: x\n"), (1, "RuntimeError: x\n")]:
        with pytest.raises(g.Failed):
            g._read_error(g.Result(check, "", rc=rc, log=log), "cuda")


def test_a_run_on_the_wrong_device_fails(tmp_path):
    g = gpu_check()
    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text(json.dumps(
        {"status": "done", "device": "cpu", "test_acc": 0.99, "images_per_sec": 1.0}))
    result = g.Result(g.Check("d", "", [], 1, None), "", rc=0, outputs=tmp_path)
    with pytest.raises(g.Failed, match="ran on cpu, not cuda"):
        g._read_run(result, "cuda", min_acc=None)
    assert g._read_run(result, "cpu", min_acc=None).startswith("test_acc 0.9900")


@pytest.mark.slow
def test_the_gpu_commands_compose():
    """Every train and bench-train check's overrides are a valid config (typos fail here)."""
    from cnnlab.config import compose

    g = gpu_check()
    for check in g.plan("cuda"):
        if check.args[0] in ("train", "bench-train") and not check.expect_error:
            cfg = compose([a for a in check.args[1:] if "=" in a and not a.startswith("-")])
            assert cfg.trainer.accelerator == "cuda"
