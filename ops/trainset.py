"""Load a faceset table into the arrays the trainer wants: faces and their landmark-hull masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from swapline.ops.faces import hull_mask, transform_points
from swapline.ops.facetable import decode_image, read_faces


def load_faceset(path: Path, feather: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """faces (N, S, S, 3) uint8 and masks (N, S, S) uint8 (0..255) of a faceset.parquet."""
    table = read_faces(path)
    if table.empty:
        raise ValueError(f"{path} holds no faces: nothing to train on")
    faces = np.stack([decode_image(b) for b in table["image"]])  # (N, S, S, 3)
    size = faces.shape[1]
    masks = np.empty(faces.shape[:3], dtype=np.uint8)  # (N, S, S)
    for i, (landmarks, matrix) in enumerate(zip(table["landmarks"], table["matrix"])):
        points = transform_points(np.asarray(landmarks, np.float32).reshape(68, 2), np.asarray(matrix, np.float64).reshape(2, 3))
        masks[i] = np.round(hull_mask(points, size, feather) * 255).astype(np.uint8)
    return faces, masks
