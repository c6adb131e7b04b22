"""Runs that died without reporting: found, marked failed and their pool slots freed.

A run whose process is killed (kill -9, out of memory, a reboot, a closed laptop lid) stays
STARTED in Dagster's storage, and a run that held the `gpu` pool's one slot keeps it: the next
training waits forever. Dagster's own run monitoring cannot see a dead run worker under the
default run launcher, and frees slots only after the run has ended. So swapline looks itself:

- Every run records where it runs. The CLI's runs carry `swapline/host`, `swapline/pid` and
  `swapline/started` tags; a run launched by the daemon (`./dev ui`) has Dagster's own engine
  event "Started process for run (pid: N)", written by its run worker on the daemon's host.
- On this host a run is dead when its process is gone, or when that pid now belongs to a
  process started after the run (the pid was reused after a reboot).
- A run on another host cannot be checked that way: it is judged by its heartbeat, the time of
  its newest event (training logs every ~10 s, conversion every few seconds), and declared dead
  after REMOTE_TIMEOUT_S without one.

A dead run is marked failed with the reason, tagged `swapline/interrupted` (the automation
resumes what it was building: assets/common.py `ResumeInterrupted`) and its pool slots freed.
`swapline run`/`refresh` do this before and while they run; the `dead_runs` sensor does it
under the daemon. The two instance calls used are the ones behind the UI's "mark as failed"
and "free concurrency slots" actions.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import Callable

import dagster as dg

HOST_TAG, PID_TAG, STARTED_TAG = "swapline/host", "swapline/pid", "swapline/started"
ASSETS_TAG = "swapline/assets"  # what an in-process run builds (its run has no asset selection of its own)
INTERRUPTED_TAG = "swapline/interrupted"  # value: the reason, set when a run is found dead
PARTITION_TAG = "dagster/partition"
REMOTE_TIMEOUT_S = 30 * 60  # a run on another host with no event for this long is dead
DEAD_REASON = "the process ended without reporting: killed or crashed"
LIVE_STATUSES = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def host() -> str:
    return socket.gethostname()


def run_tags_here(keys: list[dg.AssetKey] | None = None) -> dict[str, str]:
    """Tags that say where a run launched from this process runs (and which assets it builds)."""
    tags = {HOST_TAG: host(), PID_TAG: str(os.getpid()), STARTED_TAG: f"{time.time():.0f}"}
    return tags | ({ASSETS_TAG: ",".join(key.to_user_string() for key in keys)} if keys else {})


def run_assets(run: dg.DagsterRun) -> set[dg.AssetKey]:
    """The assets a run builds: its asset selection, or the tag of an in-process run."""
    if run.asset_selection:
        return set(run.asset_selection)
    return {dg.AssetKey.from_user_string(key) for key in run.tags.get(ASSETS_TAG, "").split(",") if key}


@dataclass(frozen=True)
class Verdict:
    run_id: str
    reason: str | None  # None: alive (or cannot be judged yet)


def process_started_at(pid: int) -> float | None:
    """Epoch seconds at which process `pid` started; None when there is no such process."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
        boot = next(float(line.split()[1]) for line in open("/proc/stat") if line.startswith("btime"))
    except FileNotFoundError:
        return None
    except OSError:  # no /proc (not Linux): only existence can be asked
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()  # after the command name in parentheses: field 3 on
    if fields[0] in ("Z", "X"):  # a zombie (not reaped by its new parent) or dead: gone
        return None
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time in clock ticks


def run_process(instance: dg.DagsterInstance, run: dg.DagsterRun) -> tuple[str | None, int | None]:
    """(host, pid) of the process executing `run`; host None means this host."""
    if PID_TAG in run.tags:
        return run.tags.get(HOST_TAG), int(run.tags[PID_TAG])
    for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        if entry.user_message.startswith("Started process for run (pid: "):
            return None, int(entry.user_message.split("pid: ")[1].split(")")[0])
    return None, None


def judge(instance: dg.DagsterInstance, record: dg.RunRecord, now: float | None = None) -> Verdict:
    run, now = record.dagster_run, now or time.time()
    where, pid = run_process(instance, run)
    if (where is not None and where != host()) or pid is None:  # no process to look at: the heartbeat
        last = _last_event_time(instance, run.run_id) or record.create_timestamp.timestamp()
        if now - last > REMOTE_TIMEOUT_S:
            return Verdict(run.run_id, f"no event from {where or 'its run worker'} for {(now - last) / 60:.0f} min: presumed dead")
        return Verdict(run.run_id, None)
    began = process_started_at(pid)
    run_began = float(run.tags.get(STARTED_TAG) or record.start_time or record.create_timestamp.timestamp())
    if began is None or began > run_began + 5:  # gone, or the pid now names a newer process
        return Verdict(run.run_id, f"{DEAD_REASON} (pid {pid} is gone)")
    return Verdict(run.run_id, None)


def _last_event_time(instance: dg.DagsterInstance, run_id: str) -> float | None:
    records = instance.get_records_for_run(run_id, limit=1, ascending=False).records
    return records[0].event_log_entry.timestamp if records else None


def reap_dead_runs(instance: dg.DagsterInstance, echo: Callable[[str], None] = lambda line: None) -> list[Verdict]:
    """Mark every dead in-progress run failed, tag it interrupted and free its slots."""
    dead = []
    for record in instance.get_run_records(dg.RunsFilter(statuses=LIVE_STATUSES)):
        verdict = judge(instance, record)
        if verdict.reason:
            mark_dead(instance, record.dagster_run, verdict.reason)
            echo(f"run {verdict.run_id[:8]} ({describe_run(record.dagster_run)}) marked failed: {verdict.reason}; its slots are free")
            dead.append(verdict)
    return dead


def mark_dead(instance: dg.DagsterInstance, run: dg.DagsterRun, reason: str) -> None:
    instance.add_run_tags(run.run_id, {INTERRUPTED_TAG: reason})
    instance.report_run_failed(run, f"swapline: {reason}")
    instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)


def describe_run(run: dg.DagsterRun) -> str:
    keys = sorted(key.to_user_string() for key in run_assets(run))
    what = ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "") if keys else run.job_name
    return what + (f"[{run.tags[PARTITION_TAG]}]" if PARTITION_TAG in run.tags else "")


def pool_wait(instance: dg.DagsterInstance, run_id: str, pools: tuple[str, ...] = ("gpu",)) -> str | None:
    """What run `run_id` waits for, in words, when one of its steps waits for a pool slot."""
    for pool in pools:
        info = instance.event_log_storage.get_concurrency_info(pool)
        pending = [step for step in info.pending_steps if step.run_id == run_id and step.assigned_timestamp is None]
        if not pending:
            continue
        holders = {slot.run_id: slot.step_key for slot in info.claimed_slots if slot.run_id != run_id}
        held = "; ".join(_holder(instance, holder, step) for holder, step in holders.items()) or "no run (slots being freed)"
        return (f"waiting for a slot in pool {pool} (limit {info.slot_count}) since "
                f"{pending[0].enqueued_timestamp.astimezone().strftime('%H:%M:%S')}, held by {held}")
    return None


def _holder(instance: dg.DagsterInstance, run_id: str, step_key: str) -> str:
    record = instance.get_run_record_by_id(run_id)
    if record is None:
        return f"run {run_id[:8]} (deleted)"
    where, pid = run_process(instance, record.dagster_run)
    since = time.strftime("%H:%M:%S", time.localtime(record.start_time or record.create_timestamp.timestamp()))
    place = f"pid {pid}" + (f" on {where}" if where and where != host() else "") if pid else "a run worker"
    what = describe_run(record.dagster_run) if run_assets(record.dagster_run) else f"step {step_key}"
    return f"run {run_id[:8]} ({what}, {record.dagster_run.status.value}, {place}, since {since})"


def interrupted_partitions(instance: dg.DagsterInstance, key: dg.AssetKey, lookback: int = 200) -> dict[str | None, int]:
    """For each partition of `key` (None: unpartitioned) among the recent runs that targeted it:
    how many of its newest finished runs in a row were found dead (0: the newest was not)."""
    streaks: dict[str | None, int] = {}
    done: set[str | None] = set()
    finished = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
    for record in instance.get_run_records(dg.RunsFilter(statuses=finished), limit=lookback):  # newest first
        run = record.dagster_run
        if key not in run_assets(run):
            continue
        partition = run.tags.get(PARTITION_TAG)
        if partition in done:
            continue
        if INTERRUPTED_TAG in run.tags:
            streaks[partition] = streaks.get(partition, 0) + 1
        else:
            streaks.setdefault(partition, 0)
            done.add(partition)
    return streaks
