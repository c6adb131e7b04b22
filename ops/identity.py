"""Is a faceset one person? Without reference photos, a talk-show source silently mixes in
guests; this samples the faces' embeddings and reports the ones far from the majority.

The same sample is every identity embedding of a faceset: the faceset asset stores it as
`embeddings.npy` (EMBEDDINGS) beside faceset.parquet, and the purity check, the model
evaluation's centroids and conversion's identity gate all read it (faceset_embeddings), so a
face is embedded once: by extraction when reference photos made it embed every face (the face
table's `embedding` column), else once per content in the embedding cache.
"""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np

from swapline.ops.faces import DetectedFace, transform_points
from swapline.ops.facetable import decode_image
from swapline.ops.storage import atomic_write_bytes

logger = logging.getLogger(__name__)

SAMPLE = 64  # embeddings cost ~60 ms each on CPU: enough to see a second person, for a stable
#             centroid (evaluation used 32) and as identity-gate references (conversion used 24)
EMBEDDINGS = "embeddings.npy"  # in a faceset folder: structured rows (face_id, embedding (128,))
MIXED_SHARE = 0.1  # more than this share of far-away faces means several people


def crop_embedding(analyzer, crop: np.ndarray, landmarks: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Embedding (128,) of an aligned crop, using its landmarks mapped into the crop."""
    points = transform_points(np.asarray(landmarks, np.float32).reshape(68, 2), np.asarray(matrix, np.float64).reshape(2, 3))
    x0, y0 = np.floor(points.min(axis=0)).astype(int)
    x1, y1 = np.ceil(points.max(axis=0)).astype(int)
    return analyzer.embed(crop, DetectedFace(bbox=(int(x0), int(y0), int(x1), int(y1)), landmarks=points, score=1.0))


def sample_embeddings(analyzer, table, limit: int = SAMPLE, cache_dir: Path | None = None,
                      load: Callable[[Any], Any] | None = None) -> tuple[list[str], np.ndarray]:
    """(face ids, embeddings (K, 128)) of up to `limit` faces.

    The sample is the faces with the smallest hash of their id: spread over all sources, and
    stable when faces are added (a new face joins only if its hash is small), so with the
    embedding cache a rebuild after adding photos computes few or no new embeddings.

    `table` holds the faces' image, landmarks and matrix; or, with `load`, a `content` column
    (what a face derives from, e.g. its face file's key and row) that keys the cache, and
    `load(rows)` returns those rows with their image, landmarks, matrix and embedding columns:
    called only for the faces the cache lacks, so a cached sample reads no image.
    """
    order = sorted(range(len(table)), key=lambda i: hashlib.sha1(table["face_id"].iloc[i].encode()).digest())
    rows = table.iloc[order[:limit]]
    if load is None:
        embeddings = [_cached_embedding(analyzer, row, cache_dir) for row in rows.itertuples()]
    else:
        embeddings = _by_content(analyzer, rows, cache_dir, load)
    return list(rows["face_id"]), np.stack(embeddings) if embeddings else np.zeros((0, 128), np.float32)


def _by_content(analyzer, rows, cache_dir: Path | None, load: Callable[[Any], Any]) -> list[np.ndarray]:
    paths = [_cache_path(cache_dir, hashlib.sha256(f"content:{c}".encode()).hexdigest()) for c in rows["content"]]
    found: dict[int, np.ndarray] = {}
    for index, path in enumerate(paths):
        embedding = _load(path)
        if embedding is not None:
            found[index] = embedding
    missing = [i for i in range(len(rows)) if i not in found]
    if missing:
        # A face new to this cache by content name (a faceset built before names were kept, or
        # one whose crop an older sample embedded) may still be known by its crop: that entry
        # serves it, at the cost of reading the image.
        for index, row in zip(missing, load(rows.iloc[missing]).itertuples()):
            found[index] = _cached_embedding(analyzer, row, cache_dir)
            _save(paths[index], found[index])
    return [found[i] for i in range(len(rows))]


def _cache_path(cache_dir: Path | None, digest: str) -> Path | None:
    return None if cache_dir is None else cache_dir / digest[:2] / f"{digest}.npy"


def _load(path: Path | None) -> np.ndarray | None:
    if path is None or not path.is_file():
        return None
    try:
        return np.load(path)
    except (OSError, ValueError):
        logger.warning("damaged embedding cache entry %s: recomputing", path)
        return None


def _save(path: Path | None, embedding: np.ndarray) -> None:
    if path is not None:
        buffer = io.BytesIO()
        np.save(buffer, embedding)
        atomic_write_bytes(path, buffer.getvalue())


def _cached_embedding(analyzer, row, cache_dir: Path | None) -> np.ndarray:
    stored = getattr(row, "embedding", None)
    if stored is not None and len(stored) == 128:  # extraction's identity filter embedded it already
        return np.asarray(stored, np.float32)
    # Keyed by exactly what the embedding is computed from: the crop and its landmarks.
    path = None if cache_dir is None else _cache_path(cache_dir, hashlib.sha256(
        row.image + np.asarray(row.landmarks, np.float32).tobytes() + np.asarray(row.matrix, np.float64).tobytes()).hexdigest())
    embedding = _load(path)
    if embedding is None:
        embedding = crop_embedding(analyzer, decode_image(row.image), row.landmarks, row.matrix)
        _save(path, embedding)
    return embedding


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


def _records(face_ids: list[str], embeddings: np.ndarray) -> np.ndarray:
    width = max((len(i) for i in face_ids), default=1)
    rows = np.zeros(len(face_ids), dtype=[("face_id", f"U{width}"), ("embedding", "<f4", (128,))])
    rows["face_id"], rows["embedding"] = face_ids, np.asarray(embeddings, np.float32).reshape(-1, 128)
    return rows


def write_embeddings(folder: Path, face_ids: list[str], embeddings: np.ndarray) -> Path:
    """The sample's embeddings as `folder`/EMBEDDINGS. .npy, not .npz: a zip stamps the time
    into its entries, and the same faces must give the same bytes (the artifact version)."""
    buffer = io.BytesIO()
    np.save(buffer, _records(face_ids, embeddings), allow_pickle=False)
    return atomic_write_bytes(Path(folder) / EMBEDDINGS, buffer.getvalue())


def read_embeddings(folder: Path) -> tuple[list[str], np.ndarray] | None:
    """(face ids, embeddings (K, 128) float32) stored in a faceset folder; None when it has none."""
    path = Path(folder) / EMBEDDINGS
    if not path.is_file():
        return None
    rows = np.load(path, allow_pickle=False)
    return [str(i) for i in rows["face_id"]], np.ascontiguousarray(rows["embedding"], np.float32).reshape(-1, 128)


def faceset_embeddings(folder: Path, analyzer, cache_dir: Path | None = None) -> tuple[list[str], np.ndarray]:
    """(face ids, embeddings (K, 128)) of a faceset folder's sample: the stored file, or, for
    a faceset built before it was stored, the same sample computed through the cache."""
    from swapline.ops.facetable import read_faces

    stored = read_embeddings(folder)
    if stored is not None:
        return stored
    logger.info("%s has no %s (an older faceset): embedding its sample", folder, EMBEDDINGS)
    return sample_embeddings(analyzer, read_faces(Path(folder) / "faceset.parquet"), cache_dir=cache_dir)


def faceset_reference_embeddings(faceset_dir: Path, analyzer, cache_dir: Path | None = None) -> np.ndarray | None:
    """(K, 128) embeddings of the person a faceset shows, for conversion's IdentityGate;
    None when the faceset has no faces."""
    _, embeddings = faceset_embeddings(faceset_dir, analyzer, cache_dir)
    return embeddings if len(embeddings) else None
