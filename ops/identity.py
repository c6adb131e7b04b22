"""Is a faceset one person? Without reference photos, a talk-show source silently mixes in
guests; this samples the faces' embeddings and reports the ones far from the majority."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from swapline.ops.faces import DetectedFace, transform_points
from swapline.ops.facetable import decode_image

logger = logging.getLogger(__name__)

SAMPLE = 64  # embeddings cost ~60 ms each on CPU: a sample is enough to see a second person
MIXED_SHARE = 0.1  # more than this share of far-away faces means several people


def crop_embedding(analyzer, crop: np.ndarray, landmarks: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Embedding (128,) of an aligned crop, using its landmarks mapped into the crop."""
    points = transform_points(np.asarray(landmarks, np.float32).reshape(68, 2), np.asarray(matrix, np.float64).reshape(2, 3))
    x0, y0 = np.floor(points.min(axis=0)).astype(int)
    x1, y1 = np.ceil(points.max(axis=0)).astype(int)
    return analyzer.embed(crop, DetectedFace(bbox=(int(x0), int(y0), int(x1), int(y1)), landmarks=points, score=1.0))


def sample_embeddings(analyzer, table, limit: int = SAMPLE, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """(face ids, embeddings (K, 128)) of up to `limit` faces drawn evenly at random."""
    rows = table.sample(n=min(limit, len(table)), random_state=seed) if len(table) else table
    embeddings = [crop_embedding(analyzer, decode_image(r.image), r.landmarks, r.matrix) for r in rows.itertuples()]
    return list(rows["face_id"]), np.stack(embeddings) if embeddings else np.zeros((0, 128), np.float32)


def purity(face_ids: list[str], embeddings: np.ndarray, max_distance: float) -> dict[str, Any]:
    """Distances from the medoid (the face closest to all others): the majority person.

    Returns the share of sampled faces farther than `max_distance` from it, a few of their
    ids (to look at), and whether that share says several people are mixed in.
    """
    if len(embeddings) < 3:
        return {"sampled": len(embeddings), "outlier_share": 0.0, "outliers": [], "several_people": False}
    pairwise = np.linalg.norm(embeddings[:, None, :] - embeddings[None, :, :], axis=-1)  # (K, K)
    medoid = int(np.argmin(np.median(pairwise, axis=1)))
    far = pairwise[medoid] > max_distance
    share = float(far.mean())
    return {
        "sampled": len(embeddings),
        "outlier_share": round(share, 3),
        "outliers": [face_ids[i] for i in np.flatnonzero(far)[:8]],
        "several_people": share > MIXED_SHARE,
    }
