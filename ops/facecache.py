"""Content-addressed caches that make extraction incremental: work is keyed by what an image
contains, never by where it sits, so adding 10 photos to a folder of 1,000 analyses 10.

    <root>/faces/<settings key>/<sha[:2]>/<sha>.arrow   the faces found in one image
    <root>/photos/v<n>/<sha[:2]>/<sha>.jpg               one photo, normalised (ops.images)

`root` is `<artifact root>/_cache` (a leading `_` cannot collide with an identity's slug).

Face entries: the key folder is a hash of everything that changes the result for the same
pixels: the analyzer's settings (its `describe()` when it has one, so "auto" resolved to FAN
and "auto" resolved to dlib do not share entries), the reference embeddings and the identity
distance, the face-table format (ROWS_COMPATIBLE_SINCE: a format that only added nullable
columns keeps the keys, and its older entries read with those columns null, e.g. format 2's
`embedding`, so upgrading re-extracts nothing) and this module's ENTRY_VERSION. One entry holds the
face-table rows of that image (PNG crops included) plus a `face_index` column and the
per-image stats; an image without faces is cached too (no rows). The rows are rewritten for
the frame that asks (source, identity, photo, frame index, timestamp and so face_id), so a
hit is byte-for-byte what a fresh extraction of that frame would have produced.

Entries are Arrow IPC files (reading one costs ~0.1 ms against ~0.6 ms for Parquet; the
PNGs inside are compressed already), each written atomically (temp file + rename), so
concurrent writers (the extraction workers, two runs) at worst write the same bytes twice.
Unlike published artifacts they are not fsynced (that made an entry ~3x as costly): after a
power loss an entry can be missing or unreadable (an Arrow file without its footer does not
open), and an unreadable entry is a miss that is overwritten. Nothing is ever evicted:
delete the folder to reclaim space.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from swapline.ops import facetable
from swapline.ops.storage import hash_json, link_or_copy

logger = logging.getLogger(__name__)

CACHE_DIR = "_cache"  # under the artifact root
ENTRY_VERSION = 1  # bump when an entry's layout or meaning changes
PHOTO_VERSION = 1  # bump when ops.images normalises photos differently
_ENTRY_KEY = b"swapline.facecache"
_STATS_KEY = b"stats"


def analyzer_description(analyzer: Any) -> dict[str, Any]:
    """What the analyzer would put in a manifest; the settings alone for a bare analyzer."""
    describe = getattr(analyzer, "describe", None)
    return describe() if callable(describe) else analyzer.settings.as_dict()


def reference_hash(reference: np.ndarray | None) -> str:
    if reference is None:
        return "none"
    array = np.ascontiguousarray(reference, dtype=np.float32)
    return hashlib.sha256(repr(array.shape).encode() + array.tobytes()).hexdigest()[:32]


@dataclass
class CachedImage:
    """The faces found in one image, as stored (row values belong to whichever frame made them)."""

    records: list[facetable.FaceRecord]
    face_indexes: list[int]
    stats: dict[str, int]

    def for_frame(self, frame: dict[str, Any], *, identity: str, source: str) -> list[facetable.FaceRecord]:
        """The records as this frame (a frames-manifest entry) would have produced them."""
        return [
            replace(record, identity=identity, source=source, frame_index=int(frame["index"]),
                    photo=frame["photo"], timestamp=float(frame["timestamp"]),
                    face_id=facetable.face_id(frame["sha256"], frame["index"], face_index))
            for record, face_index in zip(self.records, self.face_indexes)
        ]


def face_indexes(records: list[facetable.FaceRecord], source_sha: str, frame_index: int, detected: int) -> list[int]:
    """Each record's index among all faces detected in its image. extract_from_image does not
    return it, but it is what face_id hashes, so it is recovered from face_id."""
    by_id = {facetable.face_id(source_sha, frame_index, i): i for i in range(detected)}
    try:
        return [by_id[record.face_id] for record in records]
    except KeyError as exc:
        raise ValueError(f"face {exc} is not one of the {detected} faces detected in {source_sha[:12]}") from None


class FaceCache:
    """Per-image face records for one analyzer configuration; `hits`/`stored` count this object's use."""

    def __init__(self, root: Path, analyzer: Any, reference: np.ndarray | None, max_distance: float):
        key = {
            "analyzer": analyzer_description(analyzer),
            "reference": reference_hash(reference),
            "max_distance": float(max_distance) if reference is not None else None,
            "format": facetable.ROWS_COMPATIBLE_SINCE,
            "entry": ENTRY_VERSION,
        }
        self.key = hash_json(key)[:20]
        self.folder = Path(root) / "faces" / self.key
        self.hits = 0
        self.stored = 0

    def __getstate__(self) -> dict[str, Any]:  # sent to extraction workers: counters stay here
        return {"key": self.key, "folder": self.folder, "hits": 0, "stored": 0}

    def path(self, sha: str) -> Path:
        return self.folder / sha[:2] / f"{sha}.arrow"

    def get(self, sha: str) -> CachedImage | None:
        path = self.path(sha)
        if not path.is_file():
            return None
        try:
            entry = _read_entry(path)
        except Exception as exc:  # noqa: BLE001 - a damaged entry is only a miss
            logger.warning("face cache entry %s is unreadable (%s); extracting again", path, exc)
            return None
        self.hits += 1
        return entry

    def put(self, sha: str, records: list[facetable.FaceRecord], indexes: list[int], stats: dict[str, Any]) -> None:
        try:
            _write_entry(self.path(sha), records, indexes, stats)
            self.stored += 1
        except OSError as exc:  # the cache only saves time; a full disk fails the publish anyway
            logger.warning("could not write face cache entry for %s: %s", sha[:12], exc)


def _entry_schema() -> Any:
    import pyarrow as pa

    # The face table's own schema (so an entry follows FORMAT_VERSION) plus the face's index.
    schema = facetable._schema().append(pa.field("face_index", pa.int32()))
    return schema.remove_metadata()


def _write_entry(path: Path, records: list[facetable.FaceRecord], indexes: list[int], stats: dict[str, Any]) -> None:
    import pyarrow as pa
    import pyarrow.ipc as ipc

    rows = [record.row() for record in records]
    schema = _entry_schema()
    columns = {name: [row[name] for row in rows] for name in facetable.COLUMNS}
    columns["face_index"] = list(indexes)
    table = pa.Table.from_pydict(columns, schema=schema)
    metadata = {_ENTRY_KEY: str(ENTRY_VERSION).encode(),
                _STATS_KEY: json.dumps({k: int(v) for k, v in stats.items()}).encode()}
    table = table.replace_schema_metadata(metadata)

    def write(tmp: Path) -> None:
        with pa.OSFile(str(tmp), "wb") as sink, ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)

    _replace(path, write)


def _read_entry(path: Path) -> CachedImage:
    import pyarrow as pa
    import pyarrow.ipc as ipc

    table = ipc.open_file(pa.BufferReader(path.read_bytes())).read_all()
    metadata = table.schema.metadata or {}
    if metadata.get(_ENTRY_KEY) != str(ENTRY_VERSION).encode():
        raise ValueError(f"entry version {metadata.get(_ENTRY_KEY)!r}, expected {ENTRY_VERSION}")
    stats = json.loads(metadata[_STATS_KEY])
    records, indexes = [], []
    for row in table.to_pylist():
        indexes.append(int(row.pop("face_index")))
        row["bbox"] = tuple(row["bbox"])
        row["landmarks"] = np.asarray(row["landmarks"], dtype=np.float32).reshape(68, 2)
        row["matrix"] = np.asarray(row["matrix"], dtype=np.float64).reshape(2, 3)
        if row.get("embedding") is not None:  # absent or null in entries written before format 2
            row["embedding"] = np.asarray(row["embedding"], dtype=np.float32)
        records.append(facetable.FaceRecord(**row))
    return CachedImage(records, indexes, stats)


class PhotoCache:
    """Normalised photos (ops.images.normalize_photos output) by the original file's sha256,
    shared by hard links: a re-run links known photos into the new frames folder and decodes
    only new ones. Failed photos are not cached: a retry is how installing a missing decoder
    (HEIC) takes effect."""

    def __init__(self, root: Path):
        self.folder = Path(root) / "photos" / f"v{PHOTO_VERSION}"
        self.hits = 0
        self.stored = 0

    def path(self, sha: str) -> Path:
        return self.folder / sha[:2] / f"{sha}.jpg"

    def fetch(self, sha: str, dest: Path) -> bool:
        """Place the cached photo at `dest` (in an existing private build folder); False when it
        is not cached. One system call for a hit: a refresh places every photo of a source."""
        if not link_or_copy(self.path(sha), dest, make_parent=False):
            return False
        self.hits += 1
        return True

    def store(self, sha: str, normalised: Path) -> None:
        target = self.path(sha)
        if target.is_file():
            return
        try:
            _link_or_copy(normalised, target)
            self.stored += 1
        except OSError as exc:
            logger.warning("could not cache normalised photo %s: %s", sha[:12], exc)


def _link_or_copy(src: Path, dest: Path, atomic: bool = True) -> None:
    """Hard-link (no bytes copied) or copy `src` to `dest`. Sharing an inode is safe because
    nothing in swapline writes a published file in place."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if atomic:
        _replace(dest, lambda tmp: _link(src, tmp))
    else:
        _link(src, dest)


def _link(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError:  # another filesystem, or one without hard links
        shutil.copyfile(src, dest)


def _replace(path: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` to a fresh name beside `path`, then rename it onto `path` (atomic, not
    durable: see the module notes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
