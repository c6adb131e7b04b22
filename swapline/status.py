"""What is stale, missing or failed, per asset and partition, and a refresh that materializes
exactly that (Dagster's CLI cannot select "stale only").

Staleness is judged from the instance through public APIs (swapline/staleness.py): the code
version and input data versions Dagster records on each materialization against the current
ones, the same facts the UI's resolver reads. Its causes are direct only: a changed setting
makes `aligned_faces` STALE, while `faceset` stays FRESH until `aligned_faces` is rebuilt with a
new data version (an identical rebuild leaves it FRESH). So `status` marks what waits on a stale
or missing input, and `refresh` works in rounds, asking again after each: every source
partition that needs a run gets one run of what it needs (Dagster orders the stages inside),
then the unpartitioned assets that need one, in one run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import dagster as dg

from swapline import runner
from swapline.assets.automation import DATA_VERSION_TAG, observe_sources, sync_partitions, wanted_partitions
from swapline.jobs import Graph, Node, project_graph
from swapline.liveness import INTERRUPTED_TAG, PARTITION_TAG, reap_dead_runs, run_assets
from swapline.project import Project
from swapline.runner import Launch, RunSummary, StepLog, step_log
from swapline.staleness import stale_causes

FRESH, STALE, MISSING, FAILED = "FRESH", "STALE", "MISSING", "FAILED"


@dataclass(frozen=True)
class Row:
    key: dg.AssetKey
    partition: str | None
    status: str  # FRESH | STALE | MISSING | FAILED (the last attempt failed: causes say why and when)
    causes: tuple[str, ...] = ()
    waits_on: tuple[str, ...] = ()  # FRESH now, but these inputs are stale or missing

    @property
    def label(self) -> str:
        return _label(self.key, self.partition)

    @property
    def needs_run(self) -> bool:
        return self.status != FRESH


def project_status(project: Project, instance: dg.DagsterInstance, keys: list[dg.AssetKey] | None = None,
                   graph: Graph | None = None) -> list[Row]:
    """One row per materializable asset and partition, parents first (only `keys` if given).
    Partitions are the project file's local sources (not the instance's: a source just added to
    the file shows as MISSING before the sync sensor or `refresh` registered it) and the batches
    its URL sources' listings registered."""
    graph = graph or project_graph(project)
    failures, logs = failed_attempts(instance), {}
    rows: list[Row] = []
    for key, node in graph.items():
        if node.source or (keys is not None and key not in keys):
            continue
        for partition in _partitions(project, instance, node):
            if failed := _still_failed(instance, failures.get((key, partition)), key, partition, logs):
                rows.append(Row(key, partition, FAILED, failed))
                continue
            causes = stale_causes(instance, graph, key, partition)
            if causes is None:
                rows.append(Row(key, partition, MISSING, ("not materialized yet",)))
            else:
                rows.append(Row(key, partition, STALE if causes else FRESH, causes))
    return _mark_waiting(rows, graph)


def look_around(project: Project, instance: dg.DagsterInstance) -> list[str]:
    """What the CLI does before judging, with no daemon needed: partitions synced with the project
    file, dead runs cleaned up (their slots freed), and the sources' files looked at (the source
    watch's cheap fingerprint; content hashed only where it moved). Lines to show for each."""
    lines: list[str] = []
    sync_partitions(project, instance)
    reap_dead_runs(instance, echo=lambda line: lines.append(f"== {line}"))
    changed = [f"{e.asset_key.path[0]}[{e.partition}]" for e in observe_sources(project, instance)
               if "previous_version" in e.metadata and e.metadata["previous_version"].value != e.tags[DATA_VERSION_TAG]]
    if changed:
        lines.append(f"== files changed in {_few(tuple(changed))}")
    return lines


FAILED_LOOKBACK = 500  # recent failed runs searched for each asset partition's last attempt


def failed_attempts(instance: dg.DagsterInstance) -> dict[tuple[dg.AssetKey, str | None], dg.RunRecord]:
    """The newest failed run of each asset partition, among the recent failed runs."""
    out: dict[tuple[dg.AssetKey, str | None], dg.RunRecord] = {}
    records = instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]), limit=FAILED_LOOKBACK)
    for record in records:  # newest first
        run = record.dagster_run
        for key in run_assets(run):
            out.setdefault((key, run.tags.get(PARTITION_TAG)), record)
    return out


def _still_failed(instance: dg.DagsterInstance, record: dg.RunRecord | None, key: dg.AssetKey,
                  partition: str | None, logs: dict[str, StepLog]) -> tuple[str, ...]:
    """(reason, when) if the failed run is this asset partition's last attempt and failed there
    itself: nothing was materialized since, and its own step failed or was cut off (an asset
    merely skipped after another one failed is not its failure)."""
    if record is None:
        return ()
    latest = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None), limit=1).records
    failed_at = record.create_timestamp.timestamp()
    if latest and latest[0].timestamp >= failed_at:
        return ()
    run = record.dagster_run
    if run.run_id not in logs:
        logs[run.run_id] = step_log(instance, run.run_id)
    reason = failure_reason(run, logs[run.run_id], key)
    if reason is None:
        return ()
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(record.end_time or failed_at))
    return (reason, f"at {when}, run {run.run_id[:8]}")


def failure_reason(run: dg.DagsterRun, log: StepLog, key: dg.AssetKey) -> str | None:
    """Why `key` failed in this failed run, in one line (found dead, its step's own error, the
    run's message when no step ran); None when its step never started after another's failure."""
    step = log.step_of.get(key)
    cut_off = step in log.started and step not in log.ended
    if INTERRUPTED_TAG in run.tags and (cut_off or not log.started):
        return f"interrupted: {run.tags[INTERRUPTED_TAG]}"
    if step in log.errors:
        return runner.first_line(log.errors[step])
    if cut_off:
        return "the run ended during this step"
    if not log.started:
        return log.run_error or "the run failed"
    return None


def _partitions(project: Project, instance: dg.DagsterInstance, node: Node) -> list[str | None]:
    if node.partitions_def is None:
        return [None]
    identity = node.key.path[0]  # only per-source assets are partitioned: <identity>/<stage>
    existing = set(instance.get_dynamic_partitions(node.partitions))
    return sorted(wanted_partitions(project, identity, existing))  # a URL source's batches once listed


def _mark_waiting(rows: list[Row], graph: Graph) -> list[Row]:
    """A FRESH row whose input (or an input's input) is stale or missing may go stale once that
    input is rebuilt. Same partitions on both sides (one source's stages) pair up by key; an
    unpartitioned child (a faceset) waits on any of its parent's partitions."""
    pending: dict[tuple[dg.AssetKey, str | None], Row] = {}
    out = []
    for row in rows:  # parents first
        if row.status == FRESH:
            waits = [p.label for parent in sorted(graph[row.key].parents)
                     for (k, part), p in pending.items() if k == parent and _pairs(graph, row, parent, part)]
            row = Row(row.key, row.partition, row.status, row.causes, tuple(waits))
        if row.needs_run or row.waits_on:
            pending[(row.key, row.partition)] = row
        out.append(row)
    return out


def _pairs(graph: Graph, row: Row, parent: dg.AssetKey, parent_partition: str | None) -> bool:
    if row.partition is None or parent_partition is None:
        return True
    return graph[parent].partitions == graph[row.key].partitions and parent_partition == row.partition


def _label(key: dg.AssetKey, partition: str | None) -> str:
    return f"{key.to_user_string()}[{partition}]" if partition else key.to_user_string()


# --- refresh ------------------------------------------------------------------------------

def refresh(project: Project, instance: dg.DagsterInstance, *, echo: Callable[[str], None] = print,
            log_level: str = "INFO", log_file=None, only: set[dg.AssetKey] | None = None) -> RunSummary:
    """Materialize exactly the stale, missing and failed asset partitions, in rounds of Dagster
    runs (_next_round), asking again after each round: a rebuilt input with a new data version
    is what makes the next stage stale. Each asset partition runs at most once; a failure is
    handled as in `swapline run` (what waits on it in its run is skipped, a faceset still builds
    from the sources that worked). `only`: these assets, no others."""
    for line in look_around(project, instance):  # partitions, dead runs, the sources' files
        echo(line)
    graph = project_graph(project)
    summary, start, tried = RunSummary(log_file=log_file), time.monotonic(), set()
    while launches := _next_round(project_status(project, instance, graph=graph), graph, only, tried):
        for launch, rows in launches:
            outcomes = runner.run(project, instance, graph, launch, log_level)
            summary.outcomes += outcomes
            for row, outcome in zip(rows, outcomes):
                tried.add(row.label)
                echo(f"[{len(tried)}] {row.label} ({row.status.lower()}): {runner.record(summary, row.label, outcome)}")
            runner.stop_if_interrupted(outcomes, launch.label)
    summary.seconds = time.monotonic() - start
    if summary.outcomes:
        summary.report = runner.closing_report(instance, summary)
    return summary


def _next_round(rows: list[Row], graph: Graph, only: set[dg.AssetKey] | None, tried: set[str]) -> list[tuple[Launch, list[Row]]]:
    """The runs to launch now: rows that need a run, not tried yet in this refresh, with no input
    that is waiting itself (it may still change). One run per source partition; once none is
    left, one run of the unpartitioned rows (they read every partition)."""
    groups: dict[tuple[str, str | None], list[Row]] = {}
    for row in _ready(rows, graph):
        if row.label not in tried and (only is None or row.key in only):
            groups.setdefault((graph[row.key].partitions, row.partition), []).append(row)
    chosen = {group: rows for group, rows in groups.items() if group[1] is not None} or groups
    return [(Launch(f"{rows[0].key.path[0]}/{partition}" if partition else "unpartitioned assets",
                    tuple(row.key for row in rows), name, partition), rows) for (name, partition), rows in chosen.items()]


def _ready(rows: list[Row], graph: Graph) -> list[Row]:
    """Rows that need a run and whose inputs will not change first (none is waiting)."""
    waiting: set[tuple[dg.AssetKey, str | None]] = set()
    ready = []
    for row in rows:  # parents first
        parents = graph[row.key].parents
        if row.waits_on or any(key in parents and _pairs(graph, row, key, part) for key, part in waiting):
            waiting.add((row.key, row.partition))
        elif row.needs_run:
            ready.append(row)
    return ready


def dry_run_lines(project: Project, instance: dg.DagsterInstance) -> list[str]:
    rows = project_status(project, instance)
    now = [row for row in rows if row.needs_run]
    later = [row for row in rows if row.waits_on]
    lines = [f"would materialize ({row.status.lower()}): {row.label}" for row in now]
    lines += [f"then, if an input's data version changes: {row.label}" for row in later]
    return lines or ["nothing is stale or missing"]


# --- text ---------------------------------------------------------------------------------

MAX_CAUSES = 3  # a faceset over many changed sources lists a few and counts the rest


def status_lines(rows: list[Row], show_all: bool = False) -> list[str]:
    """Rows grouped by asset, each with its causes; FRESH rows only with `show_all`, except
    those waiting on a stale or missing input. Last, one summary line."""
    shown = [row for row in rows if show_all or row.needs_run or row.waits_on]
    lines: list[str] = []
    for key in dict.fromkeys(row.key for row in shown):
        group = [row for row in shown if row.key == key]
        width = max(len(row.partition or "") for row in group)
        lines.append(key.to_user_string())
        for row in group:
            reasons = row.causes or ((f"for now; waits on {_few(row.waits_on)}",) if row.waits_on else ("",))
            lead = f"  {row.partition:<{width}}  {row.status:<7}  " if row.partition else f"  {row.status:<7}  "
            lines.append((lead + reasons[0]).rstrip())
            lines += [" " * len(lead) + reason for reason in _more(reasons)]
    return lines + [_summary(rows)]


def _few(labels: tuple[str, ...]) -> str:
    more = f" and {len(labels) - MAX_CAUSES} more" if len(labels) > MAX_CAUSES else ""
    return ", ".join(labels[:MAX_CAUSES]) + more


def _more(reasons: tuple[str, ...]) -> list[str]:
    """The causes after the first, one a line, at most MAX_CAUSES in all."""
    rest = list(reasons[1:MAX_CAUSES])
    return rest + [f"and {len(reasons) - MAX_CAUSES} more like these"] if len(reasons) > MAX_CAUSES else rest


def _summary(rows: list[Row]) -> str:
    count = {status: sum(row.status == status for row in rows) for status in (STALE, MISSING, FRESH, FAILED)}
    waiting = sum(bool(row.waits_on) for row in rows)
    if not count[STALE] and not count[MISSING] and not count[FAILED]:
        return f"== all {len(rows)} asset partitions are fresh"
    waits = f", {waiting} of them waiting on those" if waiting else ""
    failed = f"{count[FAILED]} failed, " if count[FAILED] else ""
    return (f"== {failed}{count[STALE]} stale, {count[MISSING]} missing, {count[FRESH]} fresh{waits} "
            f"({len(rows)} asset partitions); `swapline refresh` materializes what is stale, missing or failed")
