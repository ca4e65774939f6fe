"""One writer at a time for a run or a sweep folder (cnnlab.locks): a second writer, in another
process or another thread, gets one line naming the holder and changes nothing."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading

import pytest
from typer.testing import CliRunner

from cnnlab.cli.main import app

runner = CliRunner()
HOLD = ("import sys\nfrom cnnlab.locks import FolderLock\n"
        "lock = FolderLock(sys.argv[1], 'run folder').acquire()\nprint('held', flush=True)\nsys.stdin.read()\n")


@pytest.fixture
def holder(tmp_path):
    """A second process holding the lock of a folder until the test closes its stdin."""
    procs = []

    def hold(folder):
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield hold
    for proc in procs:
        proc.stdin.close()
        proc.wait(timeout=30)


def test_a_second_process_is_told_who_holds_the_folder(tmp_path, holder):
    from cnnlab.locks import FolderInUse, FolderLock

    folder = tmp_path / "run"
    folder.mkdir()
    proc = holder(folder)
    with pytest.raises(FolderInUse) as err:
        FolderLock(folder, "run folder").acquire()
    line = str(err.value)
    assert "\n" not in line and f"is in use by pid {proc.pid} on host {socket.gethostname()}" in line
    assert f"remove {folder / '.lock'} if that process is gone" in line
    proc.stdin.close()
    proc.wait(timeout=30)  # the holder ends: the operating system drops its lock
    with FolderLock(folder) as lock:
        assert lock.held and json.loads((folder / ".lock.owner").read_text())["pid"] == os.getpid()
    assert not (folder / ".lock.owner").exists()


def test_of_threads_racing_for_one_folder_exactly_one_wins(tmp_path):
    from cnnlab.locks import FolderInUse, FolderLock

    start, won, lost = threading.Barrier(8), [], []

    def race():
        start.wait()
        try:
            won.append(FolderLock(tmp_path).acquire())
        except FolderInUse:
            lost.append(1)

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(lost) == 7


def test_a_run_folder_is_locked_until_its_final_summary(tmp_path):
    from cnnlab.locks import FolderInUse
    from cnnlab.run import Run

    run = Run.create_at(tmp_path / "run")
    seen = []
    thread = threading.Thread(target=lambda: _try(lambda: Run(run.root), seen))
    thread.start()
    thread.join()
    assert isinstance(seen[0], FolderInUse) and "run" in str(seen[0])
    run.write_summary({"status": "running"})
    with pytest.raises(FolderInUse):
        Run(run.root)
    run.write_summary({"status": "interrupted"})  # written last: another writer may continue it
    Run(run.root).close()


def _try(fn, out):
    try:
        out.append(fn())
    except Exception as exc:  # noqa: BLE001 - the test looks at which exception
        out.append(exc)


def _interrupted_run(outputs):
    """A finished tiny run marked interrupted, as a run stopped by a signal after its last epoch."""
    out = runner.invoke(app, ["train", "data=digits", "model=lenet5", "trainer.epochs=2",
                              "trainer.threads=1", "trainer.progress=none"])
    assert out.exit_code == 0, out.output
    (run_dir,) = (outputs / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").write_text(json.dumps({**summary, "status": "interrupted"}))
    return run_dir


def test_two_resumes_of_one_run_the_second_is_refused_and_changes_nothing(outputs, holder):
    run_dir = _interrupted_run(outputs)
    before = {p: p.read_bytes() for p in (run_dir / "metrics.csv", run_dir / "checkpoints" / "last.pt")}
    proc = holder(run_dir)  # the first `cnnlab resume`, still writing
    for args in (["resume", str(run_dir)],
                 ["train", "data=digits", "model=lenet5", "trainer.epochs=2", "trainer.threads=1",
                  "trainer.progress=none", "resume=auto"]):
        out = runner.invoke(app, args)
        assert out.exit_code == 1, out.output
        assert f"{run_dir}/ is in use by pid {proc.pid}" in out.output
        assert len(out.output.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in before} == before
    assert len((outputs / "results.csv").read_text().strip().splitlines()) == 2  # header + first run
