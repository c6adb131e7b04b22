"""Turning per-source face tables into one training faceset: quality filter, near-duplicate
removal by perceptual hash, and a contact sheet for eyeballing the result.

Consecutive video frames give dozens of near-identical crops; training on them only
over-weights that moment. Of each group of near-duplicates the sharpest is kept.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from swapline.ops.facetable import COLUMNS

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
    near-duplicate in the set, and the sharpest of any cluster survives."""
    n = len(hashes)
    keep = np.zeros(n, dtype=bool)
    if n == 0:
        return keep
    # Stable sort: ties go to the earlier row, which the caller orders by face_id.
    order = np.argsort(-np.nan_to_num(sharpness, nan=-np.inf), kind="stable")
    kept_hashes = np.empty_like(hashes)  # (n, words)
    n_kept = 0
    for index in order:
        if n_kept and hamming(hashes[index], kept_hashes[:n_kept]).min() <= max_distance:
            continue
        kept_hashes[n_kept] = hashes[index]
        n_kept += 1
        keep[index] = True
    return keep


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
    table = pd.concat(non_empty, ignore_index=True) if non_empty else _empty_table()
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


def contact_sheet(images: list[np.ndarray], columns: int = 8, cell: int = 96) -> bytes:
    """PNG of the images in a grid of `cell`-px squares (aspect kept, dark padding)."""
    import cv2

    columns = max(1, min(columns, len(images)))
    rows = max(1, -(-len(images) // columns))
    sheet = np.full((rows * cell, columns * cell, 3), 32, dtype=np.uint8)
    for index, image in enumerate(images):
        image = np.asarray(image, dtype=np.uint8)
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        image = image[:, :, :3]
        height, width = image.shape[:2]
        scale = cell / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        thumb = cv2.resize(image, size, interpolation=interpolation)
        top = (index // columns) * cell + (cell - size[1]) // 2
        left = (index % columns) * cell + (cell - size[0]) // 2
        sheet[top : top + size[1], left : left + size[0]] = thumb
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding failed")
    return buffer.tobytes()
