"""Dead runs, with real processes on a real Dagster home: a run killed while it holds the `gpu`
pool's only slot is found dead, marked failed with the reason, its slot freed, and the run that
waited behind it goes on; while it waits, what it waits for is said in words."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import dagster as dg
import pytest

from swapline.liveness import INTERRUPTED_TAG, PID_TAG, host, judge, pool_wait, process_started_at, reap_dead_runs
from swapline.runner import write_instance_yaml

# A run that holds a `gpu` slot for `seconds`, tagged as swapline's runs are.
HOLDER = """
import sys, time, dagster as dg
from swapline.liveness import run_tags_here

@dg.asset(pool="gpu", name=sys.argv[1])
def hold() -> None:
    time.sleep(float(sys.argv[2]))

with dg.DagsterInstance.get() as instance:
    result = dg.materialize([hold], instance=instance, tags=run_tags_here(), raise_on_error=False)
sys.exit(0 if result.success else 1)
"""


@pytest.fixture
def home(tmp_path, monkeypatch):
    path = tmp_path / "dagster_home"
    write_instance_yaml(path)  # pools: one slot
    monkeypatch.setenv("DAGSTER_HOME", str(path))
    return path


def _start(name: str, seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOLDER, name, str(seconds)], env=os.environ.copy())


def _run_of(instance, pid: int, timeout: float = 60) -> dg.RunRecord:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if records := instance.get_run_records(dg.RunsFilter(tags={PID_TAG: str(pid)})):
            return records[0]
        time.sleep(0.2)
    raise AssertionError(f"no run of pid {pid} within {timeout}s")


def _until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout}s: {what}")


def test_a_killed_run_holding_the_gpu_slot_is_failed_and_its_slot_freed(home):
    holder = _start("holder", 300)
    waiter = None
    try:
        with dg.DagsterInstance.get() as instance:
            first = _run_of(instance, holder.pid)
            _until(lambda: instance.event_log_storage.get_concurrency_info("gpu").claimed_slots, 60, "the holder claims the slot")
            assert judge(instance, first).reason is None  # alive: its process is there

            waiter = _start("waiter", 0)
            second = _run_of(instance, waiter.pid)
            wait = _until(lambda: pool_wait(instance, second.dagster_run.run_id), 60, "the waiter waits for the slot")
            assert "pool gpu" in wait and first.dagster_run.run_id[:8] in wait and "holder" in wait, wait

            holder.send_signal(signal.SIGKILL)
            holder.wait(timeout=10)
            start = time.monotonic()
            dead = reap_dead_runs(instance)
            assert [v.run_id for v in dead] == [first.dagster_run.run_id]
            assert time.monotonic() - start < 5

            record = instance.get_run_record_by_id(first.dagster_run.run_id)
            assert record.dagster_run.status == dg.DagsterRunStatus.FAILURE
            assert "killed or crashed" in record.dagster_run.tags[INTERRUPTED_TAG]
            failure = instance.all_logs(first.dagster_run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
            assert "killed or crashed" in failure[-1].dagster_event.message
            # The slot is free: the waiter gets it and finishes.
            assert waiter.wait(timeout=60) == 0
            assert instance.get_run_record_by_id(second.dagster_run.run_id).dagster_run.status == dg.DagsterRunStatus.SUCCESS
            assert not instance.event_log_storage.get_concurrency_info("gpu").claimed_slots
            assert reap_dead_runs(instance) == []  # finished runs are left alone
    finally:
        for proc in (holder, waiter):
            if proc is not None and proc.poll() is None:
                proc.kill()


def test_a_reused_pid_is_not_taken_for_the_run(home):
    """After a reboot the recorded pid may belong to a newer process: that run is dead too."""
    assert process_started_at(os.getpid()) <= time.time()
    assert process_started_at(2**22 + 12345) is None
    with dg.DagsterInstance.get() as instance:
        @dg.asset
        def quick() -> None:
            return None

        # A run that says it started long before this (live) test process did.
        tags = {PID_TAG: str(os.getpid()), "swapline/host": host(), "swapline/started": "1000"}
        run = dg.materialize([quick], instance=instance, tags=tags).dagster_run
        record = instance.get_run_record_by_id(run.run_id)
        assert "is gone" in judge(instance, record).reason
