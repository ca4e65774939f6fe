"""trainer.threads=auto (cnnlab.threads): the usable CPUs, the load at the start, the processes
sharing them, and OpenMP's wait policy."""

from __future__ import annotations

import sys

import pytest
import torch  # noqa: F401  (imported, as in a process that trains: prepare() then leaves OpenMP alone)

from cnnlab import threads


def test_cgroup_quota_reads_v2_and_v1(tmp_path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("max 100000\n")
    assert threads.cgroup_quota(v2) is None
    (v2 / "cpu.max").write_text("150000 100000\n")
    assert threads.cgroup_quota(v2) == 1.5
    v1 = tmp_path / "v1" / "cpu"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert threads.cgroup_quota(tmp_path / "v1") is None
    (v1 / "cpu.cfs_quota_us").write_text("300000\n")
    assert threads.cgroup_quota(tmp_path / "v1") == 3.0
    assert threads.cgroup_quota(tmp_path / "nothing") is None


def test_usable_cpus_is_cut_to_the_quota(monkeypatch):
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda _: set(range(8)), raising=False)
    monkeypatch.setattr(threads, "cgroup_quota", lambda: 2.5)
    assert threads.usable_cpus() == 3
    monkeypatch.setattr(threads, "cgroup_quota", lambda: None)
    assert threads.usable_cpus() == 8


def test_busy_cpus_is_the_median_of_others_runnable_tasks(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    stat.write_text("cpu  1 2 3\nprocs_running 4\nprocs_blocked 0\n")
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(threads, "usable_cpus", lambda: 4)
    assert threads.busy_cpus(samples=3, gap=0, stat=stat) == 3.0  # less this process
    # a process that may use 2 of the machine's 8 CPUs sees its share of the others
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(threads, "usable_cpus", lambda: 2)
    assert threads.busy_cpus(samples=1, gap=0, stat=stat) == pytest.approx(0.75)
    assert threads.busy_cpus(stat=tmp_path / "missing") == 0.0


@pytest.mark.parametrize("cpus, jobs, busy, want", [
    (2, 1, 0.0, 2),   # an idle 2-core machine: both cores
    (2, 1, 0.4, 2),   # a little noise does not cost a core
    (2, 1, 1.0, 1),   # one core taken: one thread, which waits for nobody
    (2, 1, 5.0, 1),   # never below one
    (16, 4, 0.0, 4),  # four parallel jobs: a quarter each
    (16, 1, 10.0, 6),  # ten CPUs busy: the six idle ones
    (16, 4, 14.0, 2),
])
def test_auto_takes_the_idle_share_of_the_usable_cpus(monkeypatch, cpus, jobs, busy, want):
    monkeypatch.setattr(threads, "usable_cpus", lambda: cpus)
    plan = threads.plan("auto", jobs=jobs, busy=busy)
    assert plan.threads == want
    assert f"{cpus} usable CPU(s)" in plan.why and f"{jobs} process(es)" in plan.why


def test_a_number_is_taken_as_given_and_zero_is_every_cpu(monkeypatch):
    monkeypatch.setattr(threads, "usable_cpus", lambda: 6)
    assert threads.plan(3).threads == 3
    assert threads.plan(0).threads == 6


def test_parallel_jobs_come_from_the_argument_or_the_environment(monkeypatch):
    monkeypatch.setenv(threads.JOBS_ENV, "3")
    assert threads.parallel_jobs() == 3
    assert threads.parallel_jobs(2) == 2
    monkeypatch.setenv(threads.JOBS_ENV, "many")
    assert threads.parallel_jobs() == 1


def _prepare_without_torch(monkeypatch, cpus, busy, machine=None):
    monkeypatch.delitem(sys.modules, "torch", raising=False)  # as a command that has not imported it yet
    monkeypatch.setenv("OMP_WAIT_POLICY", "")  # restored (unset) after the test
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.delenv(threads.JOBS_ENV, raising=False)
    monkeypatch.setattr(threads, "usable_cpus", lambda: cpus)
    monkeypatch.setattr(threads, "busy_cpus", lambda: busy)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: machine or cpus)
    monkeypatch.setattr(threads, "_BUSY_AT_START", None)
    return threads.prepare()


def test_several_threads_on_shared_cpus_yield_instead_of_spinning(monkeypatch):
    plan = _prepare_without_torch(monkeypatch, cpus=8, busy=2.0)
    assert plan.threads == 6 and plan.passive
    assert threads.os.environ["OMP_WAIT_POLICY"] == "passive"
    # the plan a run makes later reuses the load sampled before torch started its threads
    assert threads.plan("auto").busy == 2.0


def test_an_idle_machine_and_a_single_thread_keep_openmps_default(monkeypatch):
    plan = _prepare_without_torch(monkeypatch, cpus=8, busy=0.0)
    assert plan.threads == 8 and not plan.passive and "OMP_WAIT_POLICY" not in threads.os.environ
    plan = _prepare_without_torch(monkeypatch, cpus=2, busy=1.0)  # one thread: nothing to wait for
    assert plan.threads == 1 and "OMP_WAIT_POLICY" not in threads.os.environ


def test_a_users_wait_policy_is_kept_and_torch_already_imported_changes_nothing(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "active")
    assert threads.prepare() is None  # torch is imported in this process
    monkeypatch.delitem(sys.modules, "torch")
    monkeypatch.setattr(threads, "usable_cpus", lambda: 8)
    monkeypatch.setattr(threads, "busy_cpus", lambda: 2.0)
    monkeypatch.setattr(threads, "_BUSY_AT_START", None)
    threads.prepare()
    assert threads.os.environ["OMP_WAIT_POLICY"] == "active"


def test_a_run_sets_torchs_threads_from_the_plan_and_logs_why(outputs, monkeypatch):
    from cnnlab.training.recipe import train
    from conftest import tiny

    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "_BUSY_AT_START", None)
    monkeypatch.setattr(threads, "busy_cpus", lambda: 99.0)  # a machine busy with other work
    try:
        s = train(tiny("data=digits", "model=lenet5", "trainer.epochs=1", "trainer.threads=auto"))
        assert s["threads"] == 1
        log = (outputs / "runs" / s["run_id"] / "train.log").read_text()
        assert "threads: 1 thread(s):" in log and "99.0 busy with other work" in log
    finally:
        torch.set_num_threads(before)


def test_threads_accepts_auto_and_counts_and_refuses_the_rest():
    from cnnlab.config import compose
    from cnnlab.errors import UsageError

    assert compose([]).trainer.threads == "auto"
    assert compose(["trainer.threads=3"]).trainer.threads == 3
    for bad in ("trainer.threads=-1", "trainer.threads=many"):
        with pytest.raises(UsageError, match="trainer.threads"):
            compose([bad])


def test_a_resumed_auto_run_keeps_the_thread_count_of_its_first_sitting(outputs, monkeypatch):
    import json

    from typer.testing import CliRunner

    from cnnlab.cli.main import app

    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "_BUSY_AT_START", None)
    monkeypatch.setattr(threads, "usable_cpus", lambda: 2)
    monkeypatch.setattr(threads, "busy_cpus", lambda: 0.0)  # idle: auto takes 2 threads
    runner = CliRunner()
    try:
        out = runner.invoke(app, ["train", "data=digits", "data.train_per_class=20", "model=lenet5",
                                  "trainer.epochs=1", "trainer.progress=none"])
        assert out.exit_code == 0, out.output
        (run_dir,) = (outputs / "runs").iterdir()
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["threads"] == 2
        (run_dir / "summary.json").write_text(json.dumps({**summary, "status": "interrupted"}))
        monkeypatch.setattr(threads, "busy_cpus", lambda: 99.0)  # now busy: auto alone would take 1
        out = runner.invoke(app, ["resume", str(run_dir)])
        assert out.exit_code == 0, out.output
        assert json.loads((run_dir / "summary.json").read_text())["threads"] == 2
        assert "as the run's first sitting" in (run_dir / "train.log").read_text()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("n_jobs, want", [(2, 2), (-1, "cpus"), (-2, "cpus-1"), (None, None), (0, None)])
def test_a_joblib_sweeps_parallel_jobs_share_the_cpus(monkeypatch, n_jobs, want):
    from types import SimpleNamespace

    from hydra.core.hydra_config import HydraConfig

    from cnnlab.training import device

    monkeypatch.setattr(HydraConfig, "initialized", staticmethod(lambda: True))
    monkeypatch.setattr(HydraConfig, "get", staticmethod(
        lambda: SimpleNamespace(launcher={} if n_jobs is None else {"n_jobs": n_jobs})))
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    expected = {"cpus": 8, "cpus-1": 7}.get(want, want)
    assert device._sweep_jobs() == expected
