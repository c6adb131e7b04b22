"""The face table: one Parquet file per source holding every face crop WITH its metadata.

faceswap keeps crops as loose PNGs and their landmarks in a separate alignments file, and
the two drift apart (a crop deleted or re-extracted, the alignments not). Here one row is
one face and carries its own PNG, so a face and its alignment data cannot disagree. Read
it with `read_faces` (checks the version) or plain `pandas.read_parquet`.

The format version is stored in the Parquet schema metadata under `swapline.facetable`.
A published table is a folder of such files, its segments (ops.facesegments: growth rewrites
only the segment it touches); `read_faces` and `pandas.read_parquet` read a folder as one table.

Columns (FORMAT_VERSION 2):
    face_id            str     sha256(f"{source_sha}:{frame_index}:{face_index}")[:16]; stable
                               across re-runs with the same source and settings
    identity           str     the person this source is supposed to show
    source             str     partition key of the source (video or photo set)
    frame_index        int64   decoded frame number in the video; -1 for photos
    photo              str     path of the photo relative to its source; "" for video
    timestamp          float64 seconds from the start of the video (0.0 for photos)
    bbox               list<int32>[4]     detector box x0, y0, x1, y1 in source px
                                          (clipped to the frame)
    landmarks          list<float32>[136] 68 (x, y) pairs in source px, row-major
    matrix             list<float64>[6]   2x3 similarity matrix, source px -> crop px
    face_size          float64 source-px side of the template's unit square (outer brow
                               to outer brow, brows to lower lip; about 0.75x the dlib
                               detector box width): face_size / (1 + 2 * padding) / the
                               scale of `matrix`. Pose- and detector-independent.
    sharpness          float64 variance of the Laplacian of the crop's inner face square
    brightness         float64 mean luma (BT.601, 0..255) of the inner face square
    contrast           float64 standard deviation of that luma
    yaw, pitch, roll   float64 degrees, see `swapline.ops.faces.head_pose` for signs
    identity_distance  float64 smallest embedding distance to the identity's reference
                               faces; NaN when no reference was given
    phash              str     64 hex digits: imagehash.phash(hash_size=16) of the crop (256 bits)
    image              binary  PNG of the aligned RGB crop
    width, height      int32   crop size in px
    embedding          list<float32>[128] dlib embedding of the face in its source image,
                               computed where extraction embeds every face anyway (the
                               identity filter, i.e. reference photos given); null otherwise

Version history:
    1  first version.
    2  `embedding` added. Version 1 tables read with it all null.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from swapline.ops import faces
from swapline.ops.storage import atomic_file
from swapline.ops.unused import rejected_stats

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
# The oldest format whose rows are still valid rows of this one (later versions only added
# nullable columns): the face cache keys entries by it, so adding a column re-extracts nothing.
ROWS_COMPATIBLE_SINCE = 1
VERSION_KEY = b"swapline.facetable"
# Rows per Parquet row group: a few faces' crops (a contact sheet, an embedding sample) can be
# read without reading the rest of the file's images (ops.facesegments.read_images).
ROW_GROUP = 16  # 8 made reading a 1,000-face table's metadata ~1.5x slower


# Column name -> Arrow type name; the order is the file's column order.
_COLUMN_TYPES = {
    "face_id": "string", "identity": "string", "source": "string", "frame_index": "int64",
    "photo": "string", "timestamp": "float64", "bbox": "list<int32>",
    "landmarks": "list<float32>", "matrix": "list<float64>", "face_size": "float64",
    "sharpness": "float64", "brightness": "float64", "contrast": "float64", "yaw": "float64",
    "pitch": "float64", "roll": "float64", "identity_distance": "float64", "phash": "string",
    "image": "binary", "width": "int32", "height": "int32", "embedding": "list<float32>",
}
OPTIONAL_COLUMNS = ("embedding",)  # absent from older tables: read as nulls
COLUMNS: tuple[str, ...] = tuple(_COLUMN_TYPES)


def _schema() -> Any:
    import pyarrow as pa

    def arrow_type(name: str) -> Any:
        if name.startswith("list<"):
            return pa.list_(arrow_type(name[5:-1]))
        return pa.type_for_alias(name)

    return pa.schema(
        [(column, arrow_type(kind)) for column, kind in _COLUMN_TYPES.items()],
        metadata={VERSION_KEY: str(FORMAT_VERSION).encode()},
    )


@dataclass
class FaceRecord:
    face_id: str
    identity: str
    source: str
    frame_index: int
    photo: str
    timestamp: float
    bbox: tuple[int, int, int, int]
    landmarks: np.ndarray  # (68, 2) source px
    matrix: np.ndarray  # (2, 3)
    face_size: float
    sharpness: float
    brightness: float
    contrast: float
    yaw: float
    pitch: float
    roll: float
    identity_distance: float
    phash: str
    image: np.ndarray | bytes  # RGB uint8 crop, or its PNG
    width: int
    height: int
    embedding: np.ndarray | None = None  # (128,) float32 when extraction embedded the face

    def row(self) -> dict[str, Any]:
        """The record as one table row (lists and PNG bytes)."""
        row = {f.name: getattr(self, f.name) for f in fields(self)}
        row["bbox"] = [int(v) for v in self.bbox]
        row["landmarks"] = np.asarray(self.landmarks, dtype=np.float32).reshape(-1).tolist()
        row["matrix"] = np.asarray(self.matrix, dtype=np.float64).reshape(-1).tolist()
        row["image"] = self.image if isinstance(self.image, bytes) else encode_png(self.image)
        row["embedding"] = None if self.embedding is None else np.asarray(self.embedding, np.float32).reshape(-1).tolist()
        return row


def face_id(source_sha: str, frame_index: int, face_index: int) -> str:
    return hashlib.sha256(f"{source_sha}:{frame_index}:{face_index}".encode()).hexdigest()[:16]


def encode_png(image_rgb: np.ndarray) -> bytes:
    import cv2

    image = np.asarray(image_rgb, dtype=np.uint8)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    # RLE strategy: ~40% faster than the default filter search for ~4% larger files, same pixels.
    params = [cv2.IMWRITE_PNG_COMPRESSION, 3, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
    ok, buffer = cv2.imencode(".png", image, params)
    if not ok:
        raise ValueError("PNG encoding failed")
    return buffer.tobytes()


def decode_image(png_bytes: bytes) -> np.ndarray:
    """PNG (or any image) bytes -> (H, W, 3) RGB uint8."""
    import cv2

    image = cv2.imdecode(np.frombuffer(png_bytes, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("could not decode face image bytes")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def write_faces(path: Path, records: list[FaceRecord]) -> int:
    """Write the records (possibly none) as one face table, atomically; return the count."""
    rows = [record.row() for record in records]
    return _write_columns(path, {name: [row[name] for row in rows] for name in COLUMNS})


def write_table(path: Path, table: Any) -> int:
    """Write a DataFrame read by `read_faces` (e.g. a filtered faceset) back in the same format."""
    columns = {}
    for name in COLUMNS:
        values = table[name].tolist() if name in table else [None] * len(table)
        columns[name] = [v.tolist() if isinstance(v, np.ndarray) else v for v in values]
    return _write_columns(path, columns)


def copy_rows(source: Path, dest: Path, rows: list[int]) -> int:
    """Rows `rows` of the face-table file `source` written as the file `dest` (a faceset's
    segment), Arrow to Arrow: the bytes write_table gives for the same rows, without the
    round trip through Python objects. A table of an older format is rewritten in this one."""
    import pyarrow.parquet as pq

    file = pq.ParquetFile(source)
    if _version(source, file.schema_arrow) != FORMAT_VERSION or not file.schema_arrow.equals(_schema(), check_metadata=True):
        return write_table(dest, read_faces(source).iloc[rows])
    return _write_arrow(dest, file.read().take(rows))


def _write_columns(path: Path, columns: dict[str, list]) -> int:
    import pyarrow as pa

    return _write_arrow(path, pa.Table.from_pydict(columns, schema=_schema()))


def _write_arrow(path: Path, table: Any) -> int:
    import pyarrow.parquet as pq

    with atomic_file(Path(path)) as tmp:
        # PNG data is already compressed (zstd over it only costs time); zstd shrinks the rest.
        compression = {name: "none" if name == "image" else "zstd" for name in COLUMNS}
        pq.write_table(table, tmp, compression=compression, row_group_size=ROW_GROUP)
    return table.num_rows


def table_version(path: Path) -> int:
    """The format version of a face table file, or the newest among a segment folder's files."""
    import pyarrow.parquet as pq

    from swapline.ops.facesegments import segment_paths

    return max((_version(file, pq.read_schema(file)) for file in segment_paths(Path(path))), default=FORMAT_VERSION)


def _version(path: Path, schema: Any) -> int:
    metadata = schema.metadata or {}
    if VERSION_KEY not in metadata:
        raise ValueError(f"{path} is not a swapline face table (no {VERSION_KEY.decode()} metadata)")
    version = int(metadata[VERSION_KEY])
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path} is face table format {version}, newer than this swapline reads "
            f"({FORMAT_VERSION}); upgrade swapline or rebuild the faces"
        )
    return version


def read_faces(path: Path, with_images: bool = True) -> Any:
    """The face table (a file, or a folder of segments read in name order) as a pandas
    DataFrame (list columns hold numpy arrays). Leaving the images out skips most of the bytes."""
    import pandas as pd

    from swapline.ops.facesegments import segment_paths

    parts = [_read_file(file, with_images) for file in segment_paths(Path(path))]
    if not parts:
        return pd.DataFrame({c: [] for c in COLUMNS if with_images or c != "image"})
    return parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)


def _read_file(path: Path, with_images: bool) -> Any:
    import pyarrow.parquet as pq

    file = pq.ParquetFile(path)  # opened once: its schema and its rows (read_table costs ~2x per file)
    _version(path, file.schema_arrow)
    present = set(file.schema_arrow.names)
    columns = [c for c in COLUMNS if (with_images or c != "image") and c in present]
    frame = file.read(columns=columns).to_pandas()
    for name in OPTIONAL_COLUMNS:  # an older table: the column it predates, all null
        if name not in frame:
            frame[name] = None
    return frame[[c for c in COLUMNS if with_images or c != "image"]]


def _settings(analyzer: faces.FaceAnalyzer | faces.AnalyzerSettings) -> faces.AnalyzerSettings:
    return analyzer.settings if isinstance(analyzer, faces.FaceAnalyzer) else analyzer


def inner_square(crop: np.ndarray, padding: float) -> np.ndarray:
    """The crop without its padding: the template's unit square, i.e. the face itself,
    so a sharp or bright background does not hide a blurry or dark face."""
    margin = int(round(crop.shape[0] * padding / (1.0 + 2.0 * padding)))
    inner = crop[margin : crop.shape[0] - margin, margin : crop.shape[1] - margin]
    return inner if inner.size else crop


def crop_metrics(crop: np.ndarray, padding: float) -> dict[str, Any]:
    """The columns measured on the aligned crop alone: sharpness, brightness, contrast, phash."""
    import imagehash
    from PIL import Image

    inner = inner_square(crop, padding)
    brightness, contrast = faces.brightness_contrast(inner)
    return {
        "sharpness": faces.sharpness(inner),
        "brightness": brightness,
        "contrast": contrast,
        # 256 bits: a 64-bit pHash cannot tell apart aligned faces of a speaker who barely moves.
        "phash": str(imagehash.phash(Image.fromarray(crop), hash_size=16)),
    }


def make_record(
    image_rgb: np.ndarray,
    face: faces.DetectedFace,
    *,
    analyzer: faces.FaceAnalyzer | faces.AnalyzerSettings,
    identity: str,
    source: str,
    source_sha: str,
    frame_index: int,
    face_index: int,
    timestamp: float,
    photo: str = "",
    identity_distance: float = math.nan,
    embedding: np.ndarray | None = None,
) -> FaceRecord:
    """Align one detected face and measure it: the full row of the face table."""
    settings = _settings(analyzer)
    size, padding = settings.face_size, settings.padding
    matrix = faces.alignment_matrix(face.landmarks, size, padding)
    crop = faces.align_face(faces.as_rgb8(image_rgb), matrix, size)
    yaw, pitch, roll = faces.head_pose(face.landmarks, image_rgb.shape)
    return FaceRecord(
        face_id=face_id(source_sha, frame_index, face_index),
        identity=identity,
        source=source,
        frame_index=int(frame_index),
        photo=photo,
        timestamp=float(timestamp),
        bbox=tuple(int(v) for v in face.bbox),
        landmarks=np.asarray(face.landmarks, dtype=np.float32).reshape(68, 2),
        matrix=matrix,
        face_size=size / (1.0 + 2.0 * padding) / faces.matrix_scale(matrix),
        yaw=yaw,
        pitch=pitch,
        roll=roll,
        identity_distance=float(identity_distance),
        image=crop,
        width=int(crop.shape[1]),
        height=int(crop.shape[0]),
        embedding=None if embedding is None else np.asarray(embedding, np.float32).reshape(128),
        **crop_metrics(crop, padding),
    )


face_record = make_record  # the name the design notes use


def extract_from_image(
    analyzer: faces.FaceAnalyzer,
    image_rgb: np.ndarray,
    *,
    identity: str,
    source: str,
    source_sha: str,
    frame_index: int,
    timestamp: float,
    photo: str = "",
    reference: np.ndarray | None = None,
    max_distance: float = 0.6,
    distances: bool = False,
) -> tuple[list[FaceRecord], dict[str, int]]:
    """Detect, align and measure every face in one frame or photo, largest first.

    With `reference` (K, 128) embeddings, only faces within `max_distance` of the nearest
    reference are kept and the distance is recorded. face_index counts all detected faces,
    so a face keeps its face_id whether or not its neighbours pass the identity filter.
    Stats: detected (faces big enough), too_small, rejected_identity, kept; with `distances`,
    also each rejected face's distance (ops.unused.rejected_stats: what extraction reports)."""
    if reference is not None and len(reference) == 0:
        # An empty reference set would silently reject every face; make the caller choose.
        raise ValueError("reference has no embeddings; pass None to keep faces unfiltered")
    image = faces.as_rgb8(image_rgb)
    detected, n_small = analyzer.detect_with_stats(image)
    records: list[FaceRecord] = []
    rejected: list[float] = []
    for face_index, face in enumerate(detected):
        distance, embedding = math.nan, None
        if reference is not None:
            embedding = analyzer.embed(image, face)  # (128,) kept with the face: the faceset reuses it
            distance = faces.embedding_distance(embedding, reference)
            if distance > max_distance:
                rejected.append(distance)
                continue
        records.append(
            make_record(
                image, face, analyzer=analyzer, identity=identity, source=source,
                source_sha=source_sha, frame_index=frame_index, face_index=face_index,
                timestamp=timestamp, photo=photo, identity_distance=distance, embedding=embedding,
            )
        )
    stats = {"detected": len(detected), "too_small": n_small, "rejected_identity": len(rejected), "kept": len(records)}
    if distances:
        stats.update(rejected_stats(rejected))
    return records, stats
