"""Collection that grows: list every URL source, register what is new as a partition, and record
what happened, shared by `swapline collect`, `swapline run` and each identity's collection
schedule (assets/automation.py).

A URL source has no partition of its own: each listing that finds new entries registers one
partition, a batch (ops/ledger.py says why), and records an observation of
`<identity>/source_files` for it whose data version is the batch's (its key names its content).
The automation then collects, extracts and curates that partition like a new local source;
entries already collected are neither downloaded nor extracted again. An unreachable or broken
listing is a warning: the source's existing partitions, and every other source, are untouched.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import dagster as dg

from swapline.assets.automation import DATA_VERSION_TAG
from swapline.assets.common import sources_partitions
from swapline.ops import ledger
from swapline.ops.listing import ListingError, list_url, select
from swapline.ops.storage import hash_json
from swapline.project import Project, Source

logger = logging.getLogger(__name__)


@dataclass
class Collected:
    """Per identity: the partitions registered by this collection, and a line per source."""

    new_partitions: dict[str, list[str]] = field(default_factory=dict)
    singles: dict[str, list[str]] = field(default_factory=dict)  # batches of single-video URLs (re-checked each time)
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def batch_version(partition: str) -> str:
    """source_files' data version of a batch partition: its key names its entries."""
    return hash_json(["batch", partition])[:32]


def collect_urls(project: Project, instance: dg.DagsterInstance, root: Path, identities: list[str] | None = None,
                 echo: Callable[[str], None] = lambda line: None) -> Collected:
    """List every URL source of `identities` (all by default), register the new batches."""
    out = Collected()
    for identity in identities or list(project.identities):
        out.new_partitions[identity], out.singles[identity] = [], []
        for key, src in project.source_keys(identity).items():
            if src.url is None:
                continue
            line = _collect_one(project, instance, root, identity, key, src, out)
            out.lines.append(line)
            echo(line)
    return out


def _collect_one(project: Project, instance: dg.DagsterInstance, root: Path, identity: str, key: str, src: Source,
                 out: Collected) -> str:
    try:
        listing = list_url(src.url, project.downloads)  # the default per-host gate, shared with the Downloader
    except ListingError as exc:
        warning = f"warning: {identity}/{key}: {exc}; its collected entries and partitions are kept"
        out.warnings.append(warning)
        logger.warning(warning)
        return warning
    kept, dropped = select(listing.entries, src)
    source_dir = ledger.folder(root, identity, key)
    changes = ledger.record_listing(source_dir, key, kept, dropped, time.time())
    if listing.single and kept:
        out.singles[identity].append(ledger.read(source_dir)["entries"][kept[0].id]["batch"])
    events = []
    if changes.batch:
        instance.add_dynamic_partitions(sources_partitions(identity).name, [changes.batch])
        out.new_partitions[identity].append(changes.batch)
        events.append(_observation(identity, changes.batch, {"entries": len(changes.new), "url": src.url,
                                                             "listed": dg.MetadataValue.md(ledger.entries_table([e.as_dict() for e in changes.new]))}))
    for partition in sorted({ledger.read(source_dir)["entries"][i]["batch"] for i in changes.gone + changes.back}):
        gone = ledger.gone_in(source_dir, partition)  # marked, never deleted: the media and faces stay
        events.append(_observation(identity, partition, {"gone": dg.MetadataValue.json(gone), "url": src.url}))
    for event in events:
        instance.report_runless_asset_event(event)
    return f"{identity}/{key}: {changes.line()}" + (f" -> partition {changes.batch}" if changes.batch else "")


def _observation(identity: str, partition: str, metadata: dict) -> dg.AssetObservation:
    return dg.AssetObservation(dg.AssetKey([identity, "source_files"]), partition=partition,
                               tags={DATA_VERSION_TAG: batch_version(partition)}, metadata=metadata)


def collect(project: Project, instance: dg.DagsterInstance, root: Path, identities: list[str] | None = None,
            echo: Callable[[str], None] = print, log_level: str = "INFO", log_file=None):
    """`swapline collect`: what each identity's collection schedule does, in the terminal. List
    every URL source (new / known / filtered out / gone), register the new entries, then collect,
    extract and curate exactly what is new or stale for these identities (the new batches, a
    changed local source, the faceset); training and conversion are left to `run`/`refresh` or
    the automation. Returns the runs' summary."""
    from swapline.status import look_around, refresh

    who = identities or list(project.identities)
    for line in look_around(project, instance):  # partitions synced, dead runs cleaned, local files looked at
        echo(line)
    found = collect_urls(project, instance, root, who, echo=echo)
    new = sum(len(p) for p in found.new_partitions.values())
    echo(f"== {new} new batch(es) of entries" + (": collecting and extracting them" if new else ""))
    stages = ("source_media", "frames", "aligned_faces", "faceset")
    only = {dg.AssetKey([identity, stage]) for identity in who for stage in stages}
    return refresh(project, instance, echo=echo, log_level=log_level, log_file=log_file, only=only)
