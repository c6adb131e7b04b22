"""The memory of an expanding URL source (a channel, playlist, feed, page or search): every entry
ever listed, which collection batch took it, when it was last seen, and whether it is gone.

Why batches: a followed channel reaches hundreds of entries, and Dagster stops propagating
staleness to an asset that depends on 100 or more upstream partitions. So entries are not one
partition each: each collection that finds new entries makes ONE partition, `<source key>--<hash
of its entry ids>`, holding exactly those entries (written once to `batches/<partition>.json`
and never changed: the partition key names its content). A first listing of 150 entries is one
partition; each later upload day adds one. Entries already collected are never downloaded again,
and an entry that disappears upstream keeps its media and faces: it is marked gone here.

Layout, under the identity's `source_files` folder (the observed asset this describes):
    <root>/<identity>/source_files/<source key>/ledger.json
    <root>/<identity>/source_files/<source key>/batches/<partition>.json
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swapline.ops.listing import Entry
from swapline.ops.storage import atomic_write_json, hash_json

logger = logging.getLogger(__name__)

SEP = "--"  # partition key = <source key>--<batch hash>; source keys never contain it (slugs with single "_")


def folder(root: Path, identity: str, source_key: str) -> Path:
    return Path(root) / identity / "source_files" / source_key


def batch_key(source_key: str, entry_ids: list[str]) -> str:
    return f"{source_key}{SEP}{hash_json(sorted(entry_ids))[:10]}"


def source_of(partition: str) -> str:
    """The source key a partition belongs to (a batch's, or the partition itself)."""
    return partition.split(SEP, 1)[0]


def is_batch(partition: str) -> bool:
    return SEP in partition


@dataclass
class Changes:
    """What one listing found, against what the ledger knew."""

    new: list[Entry] = field(default_factory=list)
    known: list[str] = field(default_factory=list)
    filtered: dict[str, str] = field(default_factory=dict)  # entry id -> why left out
    gone: list[str] = field(default_factory=list)  # known before, no longer listed (newly gone)
    back: list[str] = field(default_factory=list)  # gone before, listed again
    batch: str | None = None  # the partition holding the new entries

    def line(self) -> str:
        listed = len(self.new) + len(self.known) + len(self.filtered)
        return (f"{listed} listed: {len(self.new)} new, {len(self.known)} known, {len(self.filtered)} filtered out, "
                f"{len(self.gone)} gone" + (f", {len(self.back)} back" if self.back else ""))


def read(source_dir: Path) -> dict[str, Any]:
    path = source_dir / "ledger.json"
    return json.loads(path.read_text()) if path.is_file() else {"entries": {}}


def record_listing(source_dir: Path, source_key: str, kept: list[Entry], dropped: dict[str, str], now: float) -> Changes:
    """Update the ledger with one listing; write the new entries' batch. Atomic writes: a crash
    leaves the previous ledger (and at worst an unreferenced batch file, written first)."""
    ledger = read(source_dir)
    entries: dict[str, dict[str, Any]] = ledger["entries"]
    changes = Changes(filtered=dict(dropped))
    listed = {e.id for e in kept} | set(dropped)
    for e in kept:
        if e.id in entries:
            changes.known.append(e.id)
            if entries[e.id].get("gone"):
                changes.back.append(e.id)
            entries[e.id].update(last_seen=now, gone=False)
        else:
            changes.new.append(e)
    for entry_id, record in entries.items():
        if entry_id not in listed and not record.get("gone"):
            record.update(gone=True, gone_since=now)
            changes.gone.append(entry_id)
    if changes.new:
        changes.batch = batch_key(source_key, [e.id for e in changes.new])
        batch_file = source_dir / "batches" / f"{changes.batch}.json"
        if not batch_file.is_file():  # the same new entries listed twice make the same batch
            atomic_write_json(batch_file, {"partition": changes.batch, "entries": [e.as_dict() for e in changes.new]})
        for e in changes.new:
            entries[e.id] = {**e.as_dict(), "batch": changes.batch, "first_seen": now, "last_seen": now, "gone": False}
    atomic_write_json(source_dir / "ledger.json", ledger)
    return changes


def batch_entries(source_dir: Path, partition: str) -> list[dict[str, Any]]:
    """The entries a batch partition was registered with."""
    path = source_dir / "batches" / f"{partition}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such batch (was the source's folder removed?): run `swapline collect` again")
    return json.loads(path.read_text())["entries"]


def gone_in(source_dir: Path, partition: str) -> list[str]:
    """Entries of this batch that are no longer listed upstream (kept, never deleted)."""
    return sorted(i for i, r in read(source_dir)["entries"].items() if r.get("batch") == partition and r.get("gone"))


def entries_table(entries: list[dict[str, Any]], status: bool = False) -> str:
    """Markdown table of entries (as listed, or as collected with `status`) for Dagster metadata."""
    import time

    def row(e: dict[str, Any]) -> str:
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(e["uploaded"])) if e.get("uploaded") else ""
        state = (" collected |" if e.get("file") else f" failed: {e.get('error', '')[:80]} |") if status else ""
        return f"| {e['id']} | {e['title'][:60]} | {when} | {e.get('duration') or ''} |{state} {e['url']} |\n"

    head = "| entry | title | uploaded | seconds |" + (" status |" if status else "") + " url |\n"
    return head + "|---" * (6 if status else 5) + "|\n" + "".join(row(e) for e in entries[:200])
