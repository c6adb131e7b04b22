"""`swapline gc`: reclaim the disk of artifact versions nothing needs any more.

Publishing keeps every version (ops/storage.py): a run may still be reading an older one, and
the UI's earlier materializations name theirs. gc keeps a version when
- one of the last `keep` materializations of its asset partition names it (the `artifact`
  metadata entry; for an asset without one, any path entry inside a version folder);
- the partition's `current.json` names it;
- a run may be reading it: while runs are in progress, every version materialized since the
  oldest of them began, and per partition the newest one materialized before that (what such a
  run's inputs load: resources/storage.py reads the latest recorded materialization);
- it was published within the grace period (a writer outside Dagster, or one between its
  rename and its pointer; republishing identical content counts as publishing);
- or no materialization in this Dagster instance names any version of its folder: a folder
  Dagster knows nothing about (another DAGSTER_HOME, a copy from elsewhere) is not judged.
The rest is removed (ops/retention.py: renamed to trash, then deleted). Dead runs are marked
failed first, as `status` does, or a killed run would hold its versions forever.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping

import dagster as dg

from swapline.ops import retention
from swapline.resources.storage import ARTIFACT

IN_PROGRESS = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
               dg.DagsterRunStatus.CANCELING]
PAGE = 1000


@dataclass(frozen=True)
class Policy:
    keep: int = 3  # materializations per asset partition whose versions stay
    grace_s: float = 3600.0

    def __post_init__(self):
        if self.keep < 1:  # the latest materialization is what the next run reads
            raise ValueError("keep must be at least 1")


@dataclass(frozen=True)
class Removal:
    location: Path
    versions: tuple[Path, ...]
    bytes: int


@dataclass
class Plan:
    removals: list[Removal] = field(default_factory=list)
    unjudged: list[Path] = field(default_factory=list)  # folders no materialization names: left alone


@dataclass
class _Needed:
    versions: set[Path] = field(default_factory=set)
    known: set[Path] = field(default_factory=set)  # locations some materialization points into


def run_gc(root: Path, policy: Policy, dry_run: bool) -> int:
    """`swapline gc` on the instance of $DAGSTER_HOME: mark dead runs failed, collect, print per
    folder what was freed; the exit status."""
    from swapline.liveness import reap_dead_runs

    home = os.environ.get("DAGSTER_HOME", "")
    if not home or not Path(home).is_dir():  # no records: every folder would be left alone, so say why instead
        print(f"error: no Dagster instance at {home!r}: set DAGSTER_HOME to the one that built the artifacts", file=sys.stderr)
        return 2
    with dg.DagsterInstance.get() as instance:
        reap_dead_runs(instance, echo=print)
        try:
            result = collect(instance, root, policy, dry_run)
        except retention.Busy as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    for line in report_lines(result, root.resolve(), dry_run):
        print(line, flush=True)
    return 0


def plan(instance: dg.DagsterInstance, root: Path, policy: Policy, now: float | None = None) -> Plan:
    """What gc would remove under `root` now, per location."""
    now, root = time.time() if now is None else now, root.resolve()
    needed = _needed(instance, root, policy.keep, in_progress_since(instance))
    result = Plan()
    for loc in retention.locations(root):
        doomed = tuple(v for v in loc.versions if v not in needed.versions and v != loc.current
                       and not retention.is_young(v, policy.grace_s, now))
        if not doomed:
            continue
        if loc.path not in needed.known:
            result.unjudged.append(loc.path)
            continue
        result.removals.append(Removal(loc.path, doomed, sum(retention.folder_bytes(v) for v in doomed)))
    return result


def collect(instance: dg.DagsterInstance, root: Path, policy: Policy, dry_run: bool = False) -> Plan:
    """Plan, and unless `dry_run` remove; the returned plan holds what was actually removed."""
    root = root.resolve()
    if not root.is_dir():
        return Plan()
    with retention.exclusive(root):
        todo = plan(instance, root, policy)
        if dry_run:
            return todo
        return Plan([_remove(r, policy.grace_s) for r in todo.removals], todo.unjudged)


def _remove(removal: Removal, grace_s: float) -> Removal:
    freed = retention.sweep_trash(removal.location)
    gone = []
    for version in removal.versions:
        size = retention.folder_bytes(version)
        if retention.remove_version(removal.location, version, grace_s):
            gone.append(version)
            freed += size
    return Removal(removal.location, tuple(gone), freed)


def in_progress_since(instance: dg.DagsterInstance) -> float | None:
    """When the oldest run still in progress started (a queued run: when it was created)."""
    records = instance.get_run_records(dg.RunsFilter(statuses=IN_PROGRESS))
    return min((r.start_time or r.create_timestamp.timestamp() for r in records), default=None)


def _needed(instance: dg.DagsterInstance, root: Path, keep: int, since: float | None) -> _Needed:
    needed = _Needed()
    for key in instance.get_asset_keys():
        _add_needed(needed, instance, key, root, keep, since)
    return needed


def _add_needed(needed: _Needed, instance: dg.DagsterInstance, key: dg.AssetKey, root: Path, keep: int,
                since: float | None) -> None:
    seen: Counter = Counter()
    read_before: set[str | None] = set()
    for record in _materializations(instance, key):
        materialization = record.asset_materialization
        folder = version_folder(materialization.metadata, root) if materialization is not None else None
        if folder is None:
            continue
        partition = record.partition_key
        needed.known.add(folder.parent)
        seen[partition] += 1
        recent = since is not None and record.timestamp >= since
        # Newest first: the first one before `since` is what runs in progress may have loaded.
        read = since is not None and not recent and partition not in read_before
        if read:
            read_before.add(partition)
        if seen[partition] <= keep or recent or read:
            needed.versions.add(folder)


def _materializations(instance: dg.DagsterInstance, key: dg.AssetKey) -> Iterator[dg.EventLogRecord]:
    """Every materialization of `key`, newest first."""
    cursor = None
    while True:
        result = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=PAGE, cursor=cursor)
        yield from result.records
        if not result.has_more:
            return
        cursor = result.cursor


def version_folder(metadata: Mapping[str, dg.MetadataValue], root: Path) -> Path | None:
    """The version folder under `root` a materialization names: its `artifact` entry, else the
    first path entry that lies inside a version folder (a model's checkpoint, a video)."""
    entries = [metadata[ARTIFACT]] if ARTIFACT in metadata else []
    entries += [value for name, value in metadata.items() if name != ARTIFACT]
    for entry in entries:
        if isinstance(entry, dg.PathMetadataValue) and (folder := _enclosing_version(Path(str(entry.value)), root)):
            return folder
    return None


def _enclosing_version(path: Path, root: Path) -> Path | None:
    path = Path(os.path.normpath(path))
    if not path.is_relative_to(root):
        return None
    for candidate in (path, *path.parents):
        if candidate == root:
            return None
        if candidate.name.startswith(retention.VERSION_PREFIX):
            return candidate
    return None


def report_lines(result: Plan, root: Path, dry_run: bool) -> list[str]:
    """Per folder what was (or would be) freed, then the total."""
    verb = "would free" if dry_run else "freed"
    lines = []
    for removal in result.removals:
        if removal.versions or removal.bytes:
            names = ", ".join(v.name for v in removal.versions)
            lines.append(f"{_rel(removal.location, root)}: {verb} {len(removal.versions)} version(s), "
                         f"{_size(removal.bytes)}: {names}")
    for path in result.unjudged:
        lines.append(f"{_rel(path, root)}: left alone: no materialization in this Dagster instance names its versions "
                     "(is DAGSTER_HOME the one that built them?)")
    total = sum(r.bytes for r in result.removals)
    count = sum(len(r.versions) for r in result.removals)
    if not count and not total:
        return lines + ["== nothing to free" + (" (dry run)" if dry_run else "")]
    folders = sum(1 for r in result.removals if r.versions or r.bytes)
    return lines + [f"== {'dry run: ' if dry_run else ''}{verb} {_size(total)} in {count} version(s) of {folders} folder(s)"]


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n:,} bytes ({n / scale:.1f} {unit})"
    return f"{n:,} bytes"
