"""Extraction of one source: sample frames, then detect, align and record every face.

Frames are sampled to JPEG at a modest rate (never the whole video as PNGs), and each aligned
face is written together with its landmarks and transform in one table (ops.facetable), so
faces and alignment data cannot drift apart.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

from swapline.ops import collect
from swapline.ops.media import load_image, normalize_photos, sample_video

logger = logging.getLogger(__name__)


def sample_source(source: dict[str, Any], source_dir: Path, out_dir: Path, *, sample_fps: float,
                  skip_similar: float, max_frames: int | None) -> dict[str, Any]:
    """Frames of one collected source written into `out_dir`; returns the frames manifest.

    Videos are decoded in a child process (damaged media can crash FFmpeg); photos are
    normalised (EXIF orientation, colour mode) with a per-file reason for each one skipped.
    """
    if source["kind"] == "photos":
        kept, skipped = normalize_photos([Path(f["path"]) for f in source["files"]], out_dir)
        frames = [{"index": -1, "timestamp": 0.0, "file": k["file"], "sha256": k["sha256"], "photo": k["photo"]} for k in kept]
        return {"kind": "photos", "frames": frames, "skipped": skipped, "decoded": len(source["files"]), "skipped_similar": 0}
    path = collect.media_path(source, source_dir)
    result = sample_video(path, out_dir, sample_fps, skip_similar=skip_similar, max_frames=max_frames)
    frames = [{"index": f.index, "timestamp": f.timestamp, "file": f.file, "sha256": f.sha256, "photo": ""} for f in result.frames]
    info = result.info
    return {
        "kind": "video",
        "frames": frames,
        "skipped": [],
        "decoded": result.decoded,
        "skipped_similar": result.skipped_similar,
        "video": {"width": info.width, "height": info.height, "fps": info.fps, "duration": info.duration},
    }


def reference_embeddings(analyzer, photos: list[Path]) -> np.ndarray | None:
    """Embeddings (K, 128) of the largest face in each reference photo; None without references."""
    if not photos:
        return None
    rows = []
    for photo in photos:
        image = load_image(photo)
        faces = analyzer.detect(image)
        if not faces:
            raise ValueError(f"reference photo {photo} shows no detectable face: replace it")
        rows.append(analyzer.embed(image, faces[0]))
    return np.stack(rows).astype(np.float32)


def extract_faces(frames_dir: Path, frames: dict[str, Any], analyzer, *, identity: str, source: str,
                  reference: np.ndarray | None, max_distance: float,
                  progress: Callable[[int], None] | None = None) -> tuple[list, dict[str, int]]:
    """Detect, align and describe every face in the sampled frames of one source."""
    from swapline.ops.facetable import extract_from_image

    records: list = []
    stats = {"frames": len(frames["frames"]), "frames_with_face": 0, "faces": 0, "rejected_identity": 0, "too_small": 0}
    for i, frame in enumerate(frames["frames"]):
        image = load_image(frames_dir / frame["file"])
        found, frame_stats = extract_from_image(
            analyzer, image, identity=identity, source=source, source_sha=frame["sha256"],
            frame_index=frame["index"], timestamp=frame["timestamp"], photo=frame["photo"],
            reference=reference, max_distance=max_distance,
        )
        _merge(stats, frame_stats)
        stats["frames_with_face"] += bool(found)
        records.extend(found)
        if progress:
            progress(i + 1)
    stats["faces"] = len(records)
    return records, stats


def _merge(stats: dict[str, int], frame_stats: dict[str, Any]) -> None:
    for key in ("rejected_identity", "too_small"):
        value = frame_stats.get(key, 0)
        if isinstance(value, (int, float)) and not math.isnan(value):
            stats[key] += int(value)
