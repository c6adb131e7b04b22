"""Conversion's face finding: which detections are the person being replaced, and a cache of
every frame's detections so a video is detected once, however often it is re-converted.

Re-converting is the common case (the model trained on, an option changed): DeepFaceLab and
faceswap detect the whole target again each time. Here the detections of a video are keyed
by its content hash and the analyzer's settings and stored under
`<artifact root>/_cache/detections/<settings key>/<video sha>.npz`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from swapline.ops.facecache import CACHE_DIR, analyzer_description
from swapline.ops.faces import DetectedFace, embedding_distance
from swapline.ops.storage import atomic_file, hash_json

logger = logging.getLogger(__name__)

CACHE_VERSION = 1


class DetectionCache:
    """Frame index -> detected faces of one video under one analyzer configuration."""

    def __init__(self, root: Path | None, analyzer: Any, video_sha: str | None):
        self.analyzer = analyzer_description(analyzer)  # what found the faces: a seed must match it
        key = hash_json({"analyzer": self.analyzer, "version": CACHE_VERSION})[:20]
        self.path = Path(root) / CACHE_DIR / "detections" / key / f"{video_sha}.npz" if root and video_sha else None
        self.faces: dict[int, list[DetectedFace]] = {}
        self.hits = 0
        self.loaded = self._load()

    def _load(self) -> bool:
        if self.path is None or not self.path.is_file():
            return False
        try:
            with np.load(self.path) as data:
                for index in data["done"].tolist():
                    self.faces[index] = []
                for i, index in enumerate(data["frame"].tolist()):
                    box = tuple(int(v) for v in data["bbox"][i])
                    self.faces[index].append(DetectedFace(box, data["landmarks"][i], float(data["score"][i])))
        except Exception as exc:  # noqa: BLE001 - a damaged cache file only costs time
            logger.warning("detection cache %s unreadable (%s): detecting again", self.path, exc)
            self.faces.clear()
            return False
        return True

    def get(self, index: int) -> list[DetectedFace] | None:
        found = self.faces.get(index)
        self.hits += found is not None
        return found

    def put(self, index: int, faces: list[DetectedFace]) -> None:
        self.faces[index] = faces

    def save(self) -> None:
        if self.path is None or not self.faces:
            return
        rows = [(index, face) for index, faces in sorted(self.faces.items()) for face in faces]
        arrays = {
            "done": np.array(sorted(self.faces), dtype=np.int64),
            "frame": np.array([i for i, _ in rows], dtype=np.int64),
            "bbox": np.array([f.bbox for _, f in rows], dtype=np.int32).reshape(-1, 4),
            "landmarks": np.array([f.landmarks for _, f in rows], dtype=np.float32).reshape(-1, 68, 2),
            "score": np.array([f.score for _, f in rows], dtype=np.float32),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(self.path, suffix=".npz") as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, **arrays)


def box_iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes; 0 for empty ones."""
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class IdentityGate:
    """Keeps only the faces of the person being replaced; other people stay untouched.

    With reference embeddings (the faceset of the person the video shows), a face is that
    person when its dlib embedding is within `max_distance` of the nearest reference. A
    face overlapping one decided in the previous frame inherits that decision, so the costly
    embedding runs once per appearance (and again every `reverify` frames). Without
    references the largest face is taken, as the 2018 tools did.
    """

    def __init__(self, analyzer: Any, reference: np.ndarray | None, max_distance: float, reverify: int = 30):
        self.analyzer, self.max_distance, self.reverify = analyzer, max_distance, reverify
        self.reference = None if reference is None or len(reference) == 0 else np.asarray(reference).reshape(-1, 128)
        self.previous: list[tuple[tuple[int, ...], bool, int]] = []  # (bbox, is target, age)
        self.embedded = 0

    def select(self, frame: np.ndarray, faces: list[DetectedFace]) -> list[DetectedFace]:
        if self.reference is None:
            return sorted(faces, key=lambda f: (f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]))[-1:]
        decided = []
        for face in faces:
            match = max(self.previous, key=lambda p: box_iou(p[0], face.bbox), default=None)
            if match is not None and box_iou(match[0], face.bbox) > 0.3 and match[2] < self.reverify:
                decided.append((face.bbox, match[1], match[2] + 1))
                continue
            self.embedded += 1
            distance = embedding_distance(self.analyzer.embed(frame, face), self.reference)
            decided.append((face.bbox, bool(distance <= self.max_distance), 0))
        self.previous = decided
        return [face for face, (_, keep, _) in zip(faces, decided) if keep]


def faceset_references(analyzer: Any, faceset_path: Path, cache_dir: Path | None = None) -> np.ndarray | None:
    """(K, 128) dlib embeddings of the person a video shows, for IdentityGate: the faceset's
    one embedding sample (ops.identity.faceset_embeddings, shared with curation's purity check
    and the model evaluation). `faceset_path`: the faceset folder or its faceset.parquet; None
    when the faceset has no faces."""
    from swapline.ops.identity import faceset_reference_embeddings
    from swapline.ops.trainset import faceset_parquet

    return faceset_reference_embeddings(faceset_parquet(faceset_path).parent, analyzer, cache_dir)
