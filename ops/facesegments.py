"""Face tables stored as segments, so that growth rewrites only what changed.

A published face table (a source's `faces.parquet`, an identity's `faceset.parquet`) is a
folder of ordinary face-table files (ops.facetable), its segments, named `<ordinal>-<key>.parquet`
and read in name order (`read_faces`, or `pandas.read_parquet` on the folder). A segment holds
the faces of a run of consecutive frames; its key is a hash of everything its rows derive from
(the settings and the frames it covers), so the same key means the same bytes.

Boundaries are content-defined (as rsync's or restic's chunks): a frame ends its segment when a
hash of its identity falls in 1/SEGMENT_FRAMES of the range (or the segment reached MAX_FRAMES).
Where they fall depends on the frames alone, never on the order they arrived in: the same frames
give the same segments, bytes and version whether built at once or photo by photo, and a frame
added anywhere changes the one segment it lands in (rarely splitting it). A new version
hard-links the previous version's segments it needs again (`os.link`: no bytes copied; safe
because a published file is never written in place) and writes only the others, so adding 10
photos to 1,000 rewrites ~SEGMENT_FRAMES frames' faces, not 1,010.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swapline.ops.storage import hash_json, link_or_copy
from swapline.ops.unused import LIMIT

logger = logging.getLogger(__name__)

LAYOUT = 1  # bump when how tables are cut into segments, or named, changes
SEGMENT_FRAMES = 64  # average frames per segment: the most an addition rewrites, typically
MAX_FRAMES = 4 * SEGMENT_FRAMES  # a run of frames without a natural boundary is cut here
FACES, FACESET = "faces.parquet", "faceset.parquet"  # the table folders in a version folder
EMPTY = "00000-empty.parquet"  # a table without faces still holds one (empty) file: pandas reads it
_NAME = re.compile(r"^(\d{5,})-([0-9a-z]+)\.parquet$")


@dataclass(frozen=True)
class Segment:
    name: str  # file name inside the table folder: ordinal (the read order) and key
    key: str
    frames: list[dict[str, Any]]  # the frames-manifest entries it covers, in manifest order


def segment_paths(path: Path) -> list[Path]:
    """The files of a face table: the file itself, or a folder's segments in name order."""
    path = Path(path)
    if not path.is_dir():
        return [path]
    return sorted(p for p in path.iterdir() if p.suffix == ".parquet" and not p.name.startswith((".", "_")))


def segment_key(path: Path) -> str | None:
    """The key in a segment's file name; None for a single-file table or a foreign name."""
    match = _NAME.match(Path(path).name)
    return match.group(2) if match else None


def _frame_id(frame: dict[str, Any]) -> list:
    # Everything of a frame its rows derive from (ops.facecache.CachedImage.for_frame).
    return [frame["sha256"], int(frame["index"]), float(frame["timestamp"]), frame["photo"]]


def _ends_segment(frame: dict[str, Any]) -> bool:
    digest = hashlib.sha256(json.dumps(_frame_id(frame)).encode()).digest()
    return int.from_bytes(digest[:4], "big") % SEGMENT_FRAMES == 0


def plan_segments(frames: list[dict[str, Any]], settings: dict[str, Any]) -> list[Segment]:
    """The segments of a table of `frames` (manifest order), each keyed by `settings` (what,
    besides the frames, the rows derive from) and its frames."""
    runs, current = [], []
    for frame in frames:
        current.append(frame)
        if _ends_segment(frame) or len(current) >= MAX_FRAMES:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    segments = []
    for ordinal, run in enumerate(runs):
        key = hash_json({"layout": LAYOUT, "settings": settings, "frames": [_frame_id(f) for f in run]})[:16]
        segments.append(Segment(f"{ordinal:05d}-{key}.parquet", key, run))
    return segments


def previous_segments(table: Path | None) -> dict[str, Path]:
    """key -> file of a published table's segments (none for a single-file or missing table)."""
    if table is None or not Path(table).is_dir():
        return {}
    return {key: path for path in segment_paths(table) if (key := segment_key(path))}


def read_images(path: Path, rows: list[int]) -> list[bytes]:
    """The PNG crops of rows `rows` of one face-table file, reading only their row groups."""
    return read_columns(path, rows, ["image"])["image"]


def read_columns(path: Path, rows: list[int], columns: list[str]) -> dict[str, list]:
    """`columns` of rows `rows` of one face-table file (column -> values in `rows` order),
    reading only their row groups."""
    import pyarrow.parquet as pq

    file = pq.ParquetFile(path)
    columns = [c for c in columns if c in file.schema_arrow.names]  # an older table lacks `embedding`
    starts, start = [], 0
    for group in range(file.metadata.num_row_groups):
        starts.append(start)
        start += file.metadata.row_group(group).num_rows
    values: dict[str, dict[int, Any]] = {c: {} for c in columns}
    for group in sorted({_group_of(starts, row) for row in rows}):
        table = file.read_row_group(group, columns=columns)
        for column in columns:
            values[column].update({starts[group] + i: v for i, v in enumerate(table.column(column).to_pylist())})
    return {c: [values[c][row] for row in rows] for c in columns}


def _group_of(starts: list[int], row: int) -> int:
    import bisect

    return bisect.bisect_right(starts, row) - 1


def reusable(previous: Path | None, table: str) -> dict[str, tuple[Path, dict]]:
    """key -> (file, stats) of the segments of a previous version folder's `table`, as its
    manifest recorded them; nothing for a version without segments."""
    if previous is None or not (Path(previous) / "manifest.json").is_file():
        return {}
    return reusable_entries(Path(previous) / table, json.loads((Path(previous) / "manifest.json").read_text()).get("segments", []))


def reusable_entries(table: Path, entries: list[dict]) -> dict[str, tuple[Path, dict]]:
    """key -> (file, stats) of the manifest `entries` of a table folder whose files are there."""
    files = previous_segments(table)
    return {e["key"]: (files[e["key"]], e["stats"]) for e in entries if e["key"] in files}


def write_face_table(table: Path, segments: list[Segment], reuse: dict[str, tuple[Path, dict]], extract) -> list[dict]:
    """Build a table folder: link the segments `reuse` holds, extract and write the others.

    `extract(frames, first)` -> (records, stats) of those frames (`first`: the call that does
    the detecting, worth a progress line). With several segments to write, their frames are
    extracted together first (one worker pool, filling the face cache), then segment by segment
    from the cache, so each segment's stats are its own. Returns the manifest entries."""
    from swapline.ops.facetable import write_faces

    table.mkdir(parents=True, exist_ok=True)
    entries: dict[str, dict] = {}
    for segment in segments:
        found = reuse.get(segment.key)
        if found and link_or_copy(found[0], table / segment.name):
            entries[segment.name] = {"file": segment.name, "key": segment.key, "stats": found[1]}
    todo = [s for s in segments if s.name not in entries]
    if len(todo) > 1:
        extract([f for s in todo for f in s.frames], True)  # the detecting pass; rows read again below
    for segment in todo:
        records, stats = extract(segment.frames, len(todo) == 1)
        write_faces(table / segment.name, records)
        entries[segment.name] = {"file": segment.name, "key": segment.key, "stats": stats}
    if not segments:
        write_faces(table / EMPTY, [])
    logger.info("face table %s: %d segments linked, %d written", table, len(segments) - len(todo), len(todo))
    return [entries[s.name] for s in segments]


def total_stats(entries: list[dict], zero: dict[str, Any]) -> dict[str, Any]:
    """The table's stats: its segments' summed (`zero`: the keys, for a table without any).
    Numbers add up; lists (names of what was not used, ops/unused.py) are joined up to
    unused.LIMIT items; dicts (histograms) add up key by key. A segment built before a key
    existed simply lacks it."""
    total = _combine({}, zero)
    for entry in entries:
        total = _combine(total, entry["stats"])
    return total


def _combine(total: dict[str, Any], stats: dict[str, Any]) -> dict[str, Any]:
    out = dict(total)
    for name, value in stats.items():
        if isinstance(value, dict):
            out[name] = _combine(out.get(name) or {}, value)
        elif isinstance(value, list):
            out[name] = (list(out.get(name) or []) + value)[:LIMIT]
        else:
            out[name] = out.get(name, 0) + value
    return out
