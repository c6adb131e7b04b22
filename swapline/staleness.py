"""Whether an asset partition needs a run, and why, read from the instance through Dagster's
public event APIs and the provenance tags Dagster writes on every materialization:

    dagster/code_version                  the definition's code version when it was built
    dagster/input_data_version/<input>    each input's data version then
    dagster/input_event_pointer/<input>   the storage id of the input's newest event then

A partition is MISSING before its first materialization, and STALE when its code version moved
(a setting or the algorithm: assets/common.py `code_version`) or an input it was built from has
a new data version since. Like the UI's resolver, causes are direct only: a rebuilt input with a
new data version is what makes its child stale (an identical rebuild changes nothing), so
status marks what waits on a stale input and refresh asks again after each round of runs.

An input partition counts as new when an event for it was recorded after the pointer and its
data version differs from the one it had at the pointer. The same check covers an unpartitioned
aggregate (a faceset over all its sources' faces, however many: Dagster's own resolver stops
looking at 100) and a source's observations (`<identity>/source_files`).
"""

from __future__ import annotations

import dagster as dg

from swapline.assets.automation import DATA_VERSION_TAG
from swapline.jobs import Graph, Node

CODE_VERSION_TAG = "dagster/code_version"
INPUT_VERSION_PREFIX = "dagster/input_data_version/"
INPUT_POINTER_PREFIX = "dagster/input_event_pointer/"
NULL_POINTER = "NULL"  # the input had no event when this was built
CODE_CHANGED = "code version changed (a setting or the algorithm)"
PAGE = 1000  # input events read at a time after a pointer (Dagster's cap is 10,000)


def stale_causes(instance: dg.DagsterInstance, graph: Graph, key: dg.AssetKey, partition: str | None) -> tuple[str, ...] | None:
    """Why this asset partition needs a run, in words: () when fresh, None when never built."""
    node = graph[key]
    record = latest(instance, node, partition)
    if record is None:
        return None
    tags = record.asset_materialization.tags or {}
    causes = [CODE_CHANGED] if node.code_version and tags.get(CODE_VERSION_TAG) != node.code_version else []
    recorded = {name.removeprefix(INPUT_VERSION_PREFIX) for name in tags if name.startswith(INPUT_VERSION_PREFIX)}
    for parent in (graph[p] for p in node.parents if p in graph):
        name = parent.key.to_user_string()
        if name not in recorded:
            causes.append(f"new dependency on {name}")
        elif parent.partitions_def is None:
            causes += _changed_unpartitioned(instance, parent, tags[INPUT_VERSION_PREFIX + name])
        else:
            pointer = tags.get(INPUT_POINTER_PREFIX + name, NULL_POINTER)
            wanted = [partition] if partition and parent.partitions == node.partitions else None  # None: all of them
            causes += [f"upstream {name}[{p}] has a new data version" for p in _changed_partitions(instance, parent, wanted, pointer)]
    causes += [f"removed dependency on {name}" for name in sorted(recorded - {p.to_user_string() for p in node.parents})]
    return tuple(causes)


def latest(instance: dg.DagsterInstance, node: Node, partition: str | None, *, after: int | None = None,
           before: int | None = None) -> dg.EventLogRecord | None:
    """The newest event carrying the data version of `node` (an observation for a source), for
    one partition or any, optionally between storage ids."""
    found = _events(instance, node, [partition] if partition else None, after=after, before=before, limit=1)
    return found[0] if found else None


def data_version(record: dg.EventLogRecord | None) -> str | None:
    if record is None:
        return None
    event = record.asset_materialization or record.asset_observation
    return (event.tags or {}).get(DATA_VERSION_TAG) if event else None


def _events(instance: dg.DagsterInstance, node: Node, partitions: list[str] | None, *, after: int | None = None,
            before: int | None = None, limit: int | None = 1) -> list[dg.EventLogRecord]:
    """Newest first, `limit` of them (None: every one, page by page)."""
    fetch = instance.fetch_observations if node.source else instance.fetch_materializations
    records_filter = dg.AssetRecordsFilter(asset_key=node.key, asset_partitions=partitions,
                                           after_storage_id=after, before_storage_id=before)
    found, cursor = [], None
    while True:
        page = fetch(records_filter, limit=limit or PAGE, cursor=cursor)
        found += page.records
        if limit or not page.has_more:
            return found
        cursor = page.cursor


def _changed_unpartitioned(instance: dg.DagsterInstance, parent: Node, recorded: str) -> list[str]:
    # Dagster's defaults: a source never observed is assumed to exist ("INITIAL"), an asset never
    # built has none ("NULL"); an input recorded as INITIAL that is NULL now has not changed.
    record = latest(instance, parent, None)
    current = (data_version(record) or "INITIAL") if record is not None or parent.source else "NULL"
    if recorded == current or (recorded, current) == ("INITIAL", "NULL"):
        return []
    return [f"upstream {parent.key.to_user_string()} has a new data version"]


def _changed_partitions(instance: dg.DagsterInstance, parent: Node, wanted: list[str] | None, pointer: str) -> list[str]:
    """The input's partitions (`wanted`, or all) recorded again since `pointer` with a data
    version other than the one they had then (a new partition has none then)."""
    cursor = None if pointer == NULL_POINTER else int(pointer)
    newest: dict[str, str | None] = {}
    for record in _events(instance, parent, wanted, after=cursor, limit=None):
        newest.setdefault(record.partition_key, data_version(record))
    if wanted is None:  # an unpartitioned child reads the partitions that exist now
        existing = set(parent.partitions_def.get_partition_keys(dynamic_partitions_store=instance))
        newest = {p: v for p, v in newest.items() if p in existing}
    changed = []
    for partition, version in sorted(newest.items()):
        before = latest(instance, parent, partition, before=cursor + 1) if cursor is not None else None
        if data_version(before) != version:
            changed.append(partition)
    return changed
