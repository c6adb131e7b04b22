"""The faces a faceset chose from (its candidates), stored beside it so that the next build reads
only the new face files' metadata.

Rebuilding a faceset after 10 new photos read the metadata of every segment of every source
(one Parquet open and a list-column conversion per file: ~50 ms at 1,000 faces, growing with
every segment). The candidates table holds, per face, only the columns curation and the
per-face checks use (the landmarks reduced to the one number the checks need), with the key of
the face file it came from and its row there (ops.faceset.FaceFile: the key names everything
the rows derive from, so the same key means the same rows). A build takes the rows of the
files whose key the previous version lists and reads only the other files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from swapline.ops.storage import atomic_file

CANDIDATES = "candidates.parquet"  # in a faceset version folder
COLUMNS = ["face_id", "identity", "source", "face_size", "sharpness", "brightness", "yaw", "pitch", "phash"]
BOX_GROWTH = 0.25  # landmarks may stick out of the detector box a little (chin, brows)


def landmarks_in_box(landmarks: Any, bbox: Any) -> np.ndarray:
    """Per face, the share of its 68 landmarks inside its detector box grown by BOX_GROWTH."""
    out = []
    for points, box in zip(landmarks, bbox):
        xy = np.asarray(points, dtype=float).reshape(-1, 2)
        x0, y0, x1, y1 = (float(v) for v in box)
        gx, gy = (x1 - x0) * BOX_GROWTH, (y1 - y0) * BOX_GROWTH
        inside = (xy[:, 0] >= x0 - gx) & (xy[:, 0] <= x1 + gx) & (xy[:, 1] >= y0 - gy) & (xy[:, 1] <= y1 + gy)
        out.append(float(inside.mean()) if len(xy) else 0.0)
    return np.asarray(out)


def file_candidates(path: Path, key: str) -> Any:
    """The candidate rows of one face-table file: COLUMNS, landmarks_in_box, file_key, row."""
    from swapline.ops.facetable import read_faces

    table = read_faces(path, with_images=False)
    if not len(table):
        return _empty()
    return table[COLUMNS].assign(landmarks_in_box=landmarks_in_box(table["landmarks"], table["bbox"]),
                                 file_key=key, row=np.arange(len(table)))


def read_candidates(files: list, previous: Path | None) -> Any:
    """Every face of `files` (ops.faceset.FaceFile) as candidate rows with `_file` (index into
    `files`) and `_row`, in file and row order; rows of a file the `previous` candidates table
    lists are taken from it."""
    import pandas as pd

    index_of = {file.key: index for index, file in enumerate(files)}
    if len(index_of) != len(files):  # a key names what rows derive from: two files cannot share one
        raise ValueError(f"face files with the same key: {sorted(k for k in index_of if sum(f.key == k for f in files) > 1)}")
    parts, known = [], set()
    if previous is not None and Path(previous).is_file():
        stored = pd.read_parquet(previous)
        stored = stored[stored["file_key"].isin(index_of)]
        known = set(stored["file_key"])
        parts.append(stored)
    parts += [file_candidates(file.path, file.key) for file in files if file.key not in known]
    parts = [part for part in parts if len(part)]
    table = pd.concat(parts, ignore_index=True) if parts else _empty()
    table = table.assign(_file=table["file_key"].map(index_of).astype(np.int64), _row=table["row"].astype(np.int64))
    return table.sort_values(["_file", "_row"], kind="stable").drop(columns=["row"]).reset_index(drop=True)


def write_candidates(path: Path, table: Any, files: list) -> None:
    """The rows of `read_candidates` (any order) as a Parquet file, in file and row order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = table.sort_values(["_file", "_row"], kind="stable")
    out = rows[COLUMNS + ["landmarks_in_box"]].assign(file_key=[files[int(i)].key for i in rows["_file"]],
                                                      row=rows["_row"].to_numpy(np.int64))
    with atomic_file(Path(path)) as tmp:
        pq.write_table(pa.Table.from_pandas(out, preserve_index=False), tmp, compression="zstd")


def _empty() -> Any:
    import pandas as pd

    return pd.DataFrame({name: [] for name in [*COLUMNS, "landmarks_in_box", "file_key", "row"]})
