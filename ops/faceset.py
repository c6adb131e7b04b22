"""Turning per-source face tables into one training faceset: quality filter, near-duplicate
removal by perceptual hash, and a contact sheet for eyeballing the result.

Consecutive video frames give dozens of near-identical crops; training on them only
over-weights that moment. Of each group of near-duplicates the sharpest is kept.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from swapline.ops.facesegments import EMPTY, LAYOUT, read_columns, segment_key, segment_paths
from swapline.ops.facetable import COLUMNS, FORMAT_VERSION, copy_rows, read_faces, write_faces
from swapline.ops.storage import hash_json, link_or_copy

logger = logging.getLogger(__name__)


class FacesetSettings(BaseModel):
    """How a faceset is curated: the project file's `curation:` section (defined here once)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Measured on the demo faces: a JPEG q70 re-encode or a brightened copy is <= 4 away, distinct
    # frames of one talking person mostly > 10 (a 64-bit pHash put every aligned face of a static
    # speaker at distance 0).
    dedup_distance: int = Field(default=6, ge=0, le=256, description="Max pHash Hamming distance (of 256 bits) between two "
                                "faces counted as near-duplicates (the sharper is kept); 0: only identical hashes.")
    min_sharpness: float = Field(default=15.0, ge=0, description="Faces whose variance of Laplacian (inner face square) is "
                                 "below this are dropped as blurry.")
    min_face_size: float = Field(default=40.0, ge=0, description="Faces smaller than this (source px) are dropped.")

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def phash_ints(hashes: Any) -> np.ndarray:
    """pHash hex strings (16 hex digits per 64 bits) -> (N, words) uint64 array."""
    rows = [[int(h[i:i + 16], 16) for i in range(0, len(h), 16)] for h in hashes]
    return np.array(rows, dtype=np.uint64).reshape(len(rows), -1)


_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def popcount64(values: np.ndarray) -> np.ndarray:
    """Number of set bits of each uint64."""
    values = np.ascontiguousarray(values, dtype=np.uint64)
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(values).astype(np.int64)
    per_byte = _BYTE_POPCOUNT[values.view(np.uint8)].reshape(*values.shape, 8)
    return per_byte.sum(axis=-1, dtype=np.int64)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances between hash `a` (words,) and each row of `b` (M, words)."""
    return popcount64(np.bitwise_xor(np.asarray(a, dtype=np.uint64), b)).sum(axis=-1)


def dedup_keep(hashes: np.ndarray, sharpness: np.ndarray, max_distance: int) -> np.ndarray:
    """Boolean mask of faces to keep: greedily, sharpest first, a face is kept unless it is
    within `max_distance` of a face already kept. So every dropped face has a sharper
    near-duplicate in the set, and the sharpest of any cluster survives.

    Each face is compared only with the kept faces that share one of `max_distance + 1` bit
    blocks with it: two hashes that close differ in at most `max_distance` bits, so one block is
    untouched (pigeonhole). The same mask as comparing with every kept face, in time that grows
    with the faces rather than their square (a faceset of 5,000 re-curated at every addition)."""
    n = len(hashes)
    keep = np.zeros(n, dtype=bool)
    if n == 0:
        return keep
    # Stable sort: ties go to the earlier row, which the caller orders by face_id.
    order = np.argsort(-np.nan_to_num(sharpness, nan=-np.inf), kind="stable")
    blocks = _block_keys(hashes, max_distance + 1)  # (n, max_distance + 1) python ints
    buckets: list[dict[int, list[int]]] = [{} for _ in range(max_distance + 1)]
    for index in order.tolist():
        near = {i for bucket, key in zip(buckets, blocks[index]) for i in bucket.get(key, ())}
        if near and hamming(hashes[index], hashes[list(near)]).min() <= max_distance:
            continue
        keep[index] = True
        for bucket, key in zip(buckets, blocks[index]):
            bucket.setdefault(key, []).append(index)
    return keep


def _block_keys(hashes: np.ndarray, count: int) -> list[tuple[int, ...]]:
    """Each hash (words,) uint64 cut into `count` disjoint bit blocks, as ints (a block may be empty
    when there are more blocks than bits: it then matches everything, which only costs time)."""
    bits = hashes.shape[1] * 64
    edges = [bits * b // count for b in range(count + 1)]
    masks = [((1 << (hi - lo)) - 1, lo) for lo, hi in zip(edges, edges[1:])]
    values = [int.from_bytes(row.astype(">u8").tobytes(), "big") for row in hashes]
    return [tuple((value >> lo) & mask for mask, lo in masks) for value in values]


def _empty_table() -> Any:
    import pandas as pd

    return pd.DataFrame({name: [] for name in COLUMNS})


def build_faceset(frames: list[Any], settings: FacesetSettings) -> tuple[Any, dict[str, int]]:
    """Union of face tables -> (kept faces sorted by face_id, counts).

    Order of the filters: too small, then too blurry, then near-duplicates (only among
    faces of the same identity, so two people are never merged). A face_id seen twice
    (the same source passed twice) counts as a duplicate."""
    import pandas as pd

    non_empty = [frame for frame in frames if len(frame)]
    # No faces: an empty table with the given columns (read_metadata's bookkeeping ones too).
    table = pd.concat(non_empty, ignore_index=True) if non_empty else frames[0].iloc[:0] if frames else _empty_table()
    stats = {"raw": len(table), "kept": 0, "dropped_duplicate": 0, "dropped_blurry": 0, "dropped_small": 0}
    table = table.sort_values("face_id", kind="stable").reset_index(drop=True)

    unique = ~table["face_id"].duplicated()
    stats["dropped_duplicate"] += int((~unique).sum())
    table = table[unique]

    small = table["face_size"].astype(float) < settings.min_face_size
    stats["dropped_small"] = int(small.sum())
    table = table[~small]
    # NaN sharpness (unmeasurable) fails the >= test on purpose.
    sharp = table["sharpness"].astype(float) >= settings.min_sharpness
    stats["dropped_blurry"] = int((~sharp).sum())
    table = table[sharp].reset_index(drop=True)

    keep = np.zeros(len(table), dtype=bool)
    for _, rows in table.groupby("identity", sort=True).indices.items():
        hashes = phash_ints(table["phash"].to_numpy()[rows])
        sharpness = table["sharpness"].to_numpy(dtype=float)[rows]
        keep[rows] = dedup_keep(hashes, sharpness, settings.dedup_distance)
    stats["dropped_duplicate"] += int((~keep).sum())
    kept = table[keep].reset_index(drop=True)
    stats["kept"] = len(kept)
    logger.info("faceset: %s", stats)
    return kept, stats


@dataclass(frozen=True)
class FaceFile:
    """One file of a source's face table: a segment, or a whole single-file table."""

    path: Path
    key: str  # what its rows derive from: its segment key, or (single file) its table's version


def face_files(table: Path, version: str) -> list[FaceFile]:
    """The files of a published face table (`version`: its data version)."""
    return [FaceFile(p, segment_key(p) or f"{version}:{p.name}") for p in segment_paths(table)]


def read_metadata(files: list[FaceFile]) -> Any:
    """Every face of `files` without its image (the bytes a faceset rebuild need not read), plus
    `_file` (index into `files`) and `_row` (row in that file) to find the image when needed."""
    import pandas as pd

    parts = []
    for index, file in enumerate(files):
        part = read_faces(file.path, with_images=False)
        parts.append(part.assign(_file=index, _row=np.arange(len(part))))
    parts = [p for p in parts if len(p)]
    return pd.concat(parts, ignore_index=True) if parts else _empty_table().drop(columns=["image"]).assign(_file=0, _row=0)


def with_images(rows: Any, files: list[FaceFile]) -> Any:
    """`rows` (of read_metadata or ops.candidates.read_candidates) with their `image` column."""
    return with_columns(rows, files, ["image"])


def with_columns(rows: Any, files: list[FaceFile], columns: list[str]) -> Any:
    """`rows` with `columns` of their face table, read row group by row group (a column the
    file lacks, `embedding` of an older table, comes back as None)."""
    values: dict[str, list] = {c: [None] * len(rows) for c in columns}
    for index, group in rows.reset_index(drop=True).groupby("_file").indices.items():
        read = read_columns(files[index].path, rows["_row"].to_numpy()[group].tolist(), columns)
        for column, column_values in read.items():
            for position, value in zip(group, column_values):
                values[column][position] = value
    return rows.assign(**values)


def sample_rows(table: Any, limit: int) -> Any:
    """The rows ops.identity.sample_embeddings samples (smallest sha1 of the face_id), so only
    their crops are read; it then picks the same rows again from these."""
    digests = [hashlib.sha1(face_id.encode()).digest() for face_id in table["face_id"]]
    return table.iloc[sorted(range(len(digests)), key=digests.__getitem__)[:limit]]


def rows_content(rows: Any, source_keys: dict[str, str]) -> list[str]:
    """Per row, a name for what the face derives from: its source table's cache key (the
    settings; aligned_faces' manifest) and its face_id (its frame and place there), which stay
    the same when its segment is rewritten around it."""
    return [f"{source_keys[source]}:{face_id}" for source, face_id in zip(rows["source"], rows["face_id"])]


def write_faceset(folder: Path, kept: Any, files: list[FaceFile], previous: dict[str, Path]) -> dict[str, int]:
    """The kept faces as a segment folder: one segment per source file with kept faces, in
    source and frame order, keyed by that file and the rows kept of it. A key the previous
    faceset has is linked from it; only the others read their file's images and are written."""
    folder.mkdir(parents=True, exist_ok=True)
    counts = {"segments": 0, "segments_written": 0}
    for ordinal, (index, rows) in enumerate(sorted(kept.groupby("_file").indices.items())):
        chosen = sorted(int(r) for r in kept["_row"].to_numpy()[rows])
        key = hash_json({"layout": LAYOUT, "format": FORMAT_VERSION, "file": files[index].key, "rows": chosen})[:16]
        name = f"{ordinal:05d}-{key}.parquet"
        counts["segments"] += 1
        if key in previous and link_or_copy(previous[key], folder / name):
            continue
        copy_rows(files[index].path, folder / name, chosen)
        counts["segments_written"] += 1
    if not counts["segments"]:
        write_faces(folder / EMPTY, [])
    return counts


def render_sheet(crops: Callable[[list[str]], dict[str, np.ndarray]], ids: list[str],
                 previous: tuple[bytes, list[str]] | None = None, columns: int = 8, cell: int = 96) -> bytes:
    """contact_sheet of the faces `ids`; `crops(ids)` gives RGB crops by id. A face the
    `previous` sheet (its PNG and ids) shows is cut from it instead (the same pixels: cells are
    drawn alike), so only new faces are read and decoded."""
    old = _cells(*previous, columns, cell) if previous else {}
    new = crops([i for i in ids if i not in old])
    return _sheet([old[i] if i in old else _cell(new[i], cell) for i in ids], columns, cell)


def contact_sheet(images: list[np.ndarray], columns: int = 8, cell: int = 96) -> bytes:
    """PNG of the images in a grid of `cell`-px squares (aspect kept, dark padding)."""
    return _sheet([_cell(image, cell) for image in images], columns, cell)


def _cell(image: np.ndarray, cell: int) -> np.ndarray:
    import cv2

    out = np.full((cell, cell, 3), 32, dtype=np.uint8)
    image = np.asarray(image, dtype=np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    image = image[:, :, :3]
    height, width = image.shape[:2]
    scale = cell / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    top, left = (cell - size[1]) // 2, (cell - size[0]) // 2
    out[top : top + size[1], left : left + size[0]] = cv2.resize(image, size, interpolation=interpolation)
    return out


def _sheet(cells: list[np.ndarray], columns: int, cell: int) -> bytes:
    import cv2

    columns = max(1, min(columns, len(cells)))
    rows = max(1, -(-len(cells) // columns))
    sheet = np.full((rows * cell, columns * cell, 3), 32, dtype=np.uint8)
    for index, image in enumerate(cells):
        top, left = (index // columns) * cell, (index % columns) * cell
        sheet[top : top + cell, left : left + cell] = image
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding failed")
    return buffer.tobytes()


def _cells(png: bytes, ids: list[str], columns: int, cell: int) -> dict[str, np.ndarray]:
    """id -> cell of a sheet `render_sheet` drew (empty when it cannot be read as one)."""
    from swapline.ops.facetable import decode_image

    try:
        sheet = decode_image(png)
    except ValueError:
        return {}
    columns = max(1, min(columns, len(ids)))
    if sheet.shape[0] < -(-len(ids) // columns) * cell or sheet.shape[1] != columns * cell:
        return {}
    return {i: sheet[(n // columns) * cell:(n // columns + 1) * cell, (n % columns) * cell:(n % columns + 1) * cell]
            for n, i in enumerate(ids)}
