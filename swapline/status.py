"""What is stale or missing, per asset and partition, as Dagster itself judges it; and a refresh
that materializes exactly that (Dagster's CLI cannot select "stale only").

Staleness comes from Dagster's `CachingStaleStatusResolver`, the same resolver the UI uses, so
`swapline status` and the UI agree. Three of its ways shape the code below:
- It must be asked per partition: a partitioned asset asked without a partition key answers
  FRESH. So every source partition is asked on its own.
- Its causes are direct only: a changed setting makes `aligned_faces` STALE, while `faceset`
  stays FRESH until `aligned_faces` is rebuilt with a new data version (and an identical rebuild
  leaves it FRESH). `status` therefore marks what waits on a stale or missing input, and
  `refresh` goes stage by stage, asking again after each stage.
- 100-partition cutoff: a partition depending on 100 or more upstream partitions (a faceset
  fed by 100+ sources) is not checked for new upstream data at all and reads FRESH
  (`SKIP_PARTITION_DATA_VERSION_DEPENDENCY_THRESHOLD`); see assets/extract.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import dagster as dg
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleCause, StaleCauseCategory
from dagster._time import get_current_datetime

from swapline.assets.automation import DATA_VERSION_TAG, observe_sources, sync_partitions, wanted_partitions
from swapline.assets.common import sources_partitions
from swapline.build import build_assets, default_resources
from swapline.liveness import INTERRUPTED_TAG, PARTITION_TAG, reap_dead_runs, run_assets
from swapline.project import Project
from swapline.runner import RunSummary, Step, first_line, run_step

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


def asset_graph(project: Project):
    return dg.Definitions(assets=build_assets(project), resources=default_resources()).resolve_asset_graph()


def project_status(project: Project, instance: dg.DagsterInstance, keys: list[dg.AssetKey] | None = None,
                   graph=None) -> list[Row]:
    """One row per materializable asset and partition, in `stages` order (only `keys` if given).
    Partitions are the project file's local sources (not the instance's: a source just added to
    the file shows as MISSING before the sync sensor or `refresh` registered it) and the batches
    its URL sources' listings registered."""
    graph = graph or asset_graph(project)
    resolver = _resolver(instance, graph)
    failures = failed_attempts(instance)
    rows: list[Row] = []
    for key in (key for stage in stages(graph) for key in stage):
        if keys is not None and key not in keys:
            continue
        for partition in _partitions(project, instance, graph, key):
            if failed := _still_failed(instance, failures.get((key, partition)), key, partition):
                rows.append(Row(key, partition, FAILED, failed))
                continue
            status = resolver.get_status(key, partition).value
            causes = tuple(_cause_text(c) for c in resolver.get_stale_causes(key, partition)) if status == STALE else ()
            rows.append(Row(key, partition, status, causes or (("not materialized yet",) if status == MISSING else ())))
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
                  partition: str | None) -> tuple[str, ...]:
    """(reason, when) if the failed run is this asset partition's last attempt: nothing was
    materialized and no run started after it."""
    if record is None:
        return ()
    latest = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None), limit=1).records
    failed_at = record.create_timestamp.timestamp()
    if latest and latest[0].timestamp >= failed_at:
        return ()
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(record.end_time or failed_at))
    return (failure_reason(instance, record.dagster_run), f"at {when}, run {record.dagster_run.run_id[:8]}")


def failure_reason(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str:
    """Why a run failed, in one line: found dead, a step's own error, or the run's message."""
    if INTERRUPTED_TAG in run.tags:
        return f"interrupted: {run.tags[INTERRUPTED_TAG]}"
    for entry in instance.all_logs(run.run_id, of_type={dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE}):
        event = entry.dagster_event
        if event.event_type == dg.DagsterEventType.STEP_FAILURE and event.step_failure_data.error:
            return first_line(event.step_failure_data.error)
        if event.message:
            return event.message.strip().splitlines()[0]
    return "the run failed"


def stages(graph) -> list[list[dg.AssetKey]]:
    """Materializable assets in the order they can run: an asset after its parents and after
    what its checks read (a target video's coverage checks read a faceset, so the target runs
    after it, as in runner.plan). Source assets (files observed outside Dagster) are never run,
    only observed; a new observation shows as their child's STALE cause."""
    depth: dict[dg.AssetKey, int] = {}

    def depth_of(key: dg.AssetKey) -> int:
        if key not in depth:
            node = graph.get(key)
            deps = set(node.parent_keys) | {dep for check in node.check_keys for dep in graph.get(check).parent_entity_keys}
            depth[key] = 1 + max((depth_of(dep) for dep in deps - {key} if dep in graph.materializable_asset_keys), default=-1)
        return depth[key]

    keys = sorted(graph.materializable_asset_keys, key=lambda k: (depth_of(k), k.to_user_string()))
    return [[k for k in keys if depth[k] == level] for level in sorted(set(depth[k] for k in keys))]


def _resolver(instance: dg.DagsterInstance, graph) -> CachingStaleStatusResolver:
    # A resolver caches everything it reads: build a new one for each question.
    view = AssetGraphView(temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
                          instance=instance, asset_graph=graph)
    return CachingStaleStatusResolver(instance=instance, asset_graph=graph, loading_context=view)


def _partitions(project: Project, instance: dg.DagsterInstance, graph, key: dg.AssetKey) -> list[str | None]:
    if not graph.get(key).is_partitioned:
        return [None]
    identity = key.path[0]  # only per-source assets are partitioned: <identity>/<stage>
    existing = set(instance.get_dynamic_partitions(sources_partitions(identity).name))
    return sorted(wanted_partitions(project, identity, existing))  # a URL source's batches once listed


def _cause_text(cause: StaleCause) -> str:
    if cause.category == StaleCauseCategory.CODE:
        return "code version changed (a setting or the algorithm)"
    if cause.dependency is not None:
        dep = _label(cause.dependency.asset_key, cause.dependency.partition_key)
        if cause.category == StaleCauseCategory.DATA:
            return f"upstream {dep} has a new data version" if "version" in cause.reason else f"upstream {dep}: {cause.reason}"
        return f"{cause.reason.removeprefix('has a ')} ({dep})"
    return cause.reason.removeprefix("has ")


def _mark_waiting(rows: list[Row], graph) -> list[Row]:
    """A FRESH row whose input (or an input's input) is stale or missing may go stale once that
    input is rebuilt. Same partitions on both sides (one source's stages) pair up by key; an
    unpartitioned child (a faceset) waits on any of its parent's partitions."""
    pending: dict[tuple[dg.AssetKey, str | None], Row] = {}
    out = []
    for row in rows:  # stages order: parents first
        if row.status == FRESH:
            waits = [p.label for parent in sorted(graph.get(row.key).parent_keys)
                     for (k, part), p in pending.items() if k == parent and _pairs(graph, row, parent, part)]
            row = Row(row.key, row.partition, row.status, row.causes, tuple(waits))
        if row.needs_run or row.waits_on:
            pending[(row.key, row.partition)] = row
        out.append(row)
    return out


def _pairs(graph, row: Row, parent: dg.AssetKey, parent_partition: str | None) -> bool:
    if row.partition is None or parent_partition is None:
        return True
    return graph.get(parent).partitions_def == graph.get(row.key).partitions_def and parent_partition == row.partition


def _label(key: dg.AssetKey, partition: str | None) -> str:
    return f"{key.to_user_string()}[{partition}]" if partition else key.to_user_string()


# --- refresh ------------------------------------------------------------------------------

def refresh(project: Project, instance: dg.DagsterInstance, *, resources: dict | None = None,
            echo: Callable[[str], None] = print, log_level: str = "INFO", log_file=None,
            only: set[dg.AssetKey] | None = None) -> RunSummary:
    """Materialize exactly the stale, missing and failed asset partitions, one run each, stage by
    stage in topological order, asking Dagster again before each stage: a rebuilt input with
    a new data version is what makes the next stage stale. Failures are handled as in
    `swapline run` (runner.run_step): a step after a failed input is skipped, except a
    faceset, which still builds from the sources that worked. `only`: these assets, no others."""
    for line in look_around(project, instance):  # partitions, dead runs, the sources' files
        echo(line)
    assets, graph = build_assets(project), asset_graph(project)
    resources = resources or default_resources()
    summary, start, ran = RunSummary(log_file=log_file), time.monotonic(), {}
    for level in stages(graph):
        level = [key for key in level if only is None or key in only]
        for row in project_status(project, instance, keys=level, graph=graph) if level else []:
            if not row.needs_run:
                continue
            ran[row.label] = row
            step = Step(row.label, [row.key], row.partition, after=_after(graph, row, [ran[label] for label in summary.failed]))
            echo(f"[{len(ran)}] {row.label} ({row.status.lower()}): {run_step(step, assets, instance, resources, summary, log_level)}")
    summary.seconds = time.monotonic() - start
    return summary


def _after(graph, row: Row, failed: list[Row]) -> tuple[str, ...]:
    """The failed steps of this refresh that make `row` pointless to run: its inputs' failures,
    except partitions feeding an unpartitioned aggregate (a faceset builds from the sources
    that worked, as in runner.plan)."""
    parents = graph.get(row.key).parent_keys
    return tuple(f.label for f in failed if f.key in parents and not (row.partition is None and f.partition)
                 and _pairs(graph, row, f.key, f.partition))


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
