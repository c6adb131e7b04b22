"""Pose binning shared by the data checks: which head orientations a set of faces covers.

Angles follow `swapline.ops.faces.head_pose`: yaw > 0 when the nose points toward the
image's right (the person turns to their own left), pitch > 0 when the face tilts up.

Small API, meant for reuse (e.g. comparing a target video's poses with a faceset):
    pose_histogram(yaw, pitch, yaw_edges, pitch_edges) -> (len(yaw)-1, len(pitch)-1) counts
    missing_bins(counts_1d, edges, min_count) -> [(lo, hi), ...]
    axis_counts(values, edges, tolerance) -> faces per 1-D bin, extremes in the outer bins
    describe_bin("yaw" | "pitch", lo, hi) -> "looking to their left (yaw -45..-30°)"
    histogram_png(counts, yaw_edges, pitch_edges) -> PNG bytes of a small heatmap
Faces outside the outermost edges are not counted (they are not "missing", just extreme).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def pose_histogram(yaw: Sequence[float], pitch: Sequence[float], yaw_edges: Sequence[float],
                   pitch_edges: Sequence[float]) -> np.ndarray:
    """Face counts per (yaw bin, pitch bin); NaN angles (pose unknown) are ignored."""
    yaw, pitch = np.asarray(yaw, dtype=float), np.asarray(pitch, dtype=float)
    known = np.isfinite(yaw) & np.isfinite(pitch)
    counts, _, _ = np.histogram2d(yaw[known], pitch[known], bins=[np.asarray(yaw_edges, float), np.asarray(pitch_edges, float)])
    return counts.astype(int)  # (yaw bins, pitch bins)


def axis_counts(values: Sequence[float], edges: Sequence[float], tolerance: float = 0.0) -> np.ndarray:
    """Faces per bin of one axis; the outermost bins take everything beyond the range (a target
    turned 70 degrees needs the most turned bin). With a tolerance, a face within that many
    degrees of a bin also counts for it (head_pose is good to ~10 degrees), so it may count twice."""
    values = np.asarray(values, dtype=float)
    values = np.clip(values[~np.isnan(values)], edges[0], edges[-1] - 1e-6)
    return np.array([int(((values >= lo - tolerance) & (values < hi + tolerance)).sum())
                     for lo, hi in zip(edges, edges[1:])])


def missing_bins(counts: Sequence[int], edges: Sequence[float], min_count: int) -> list[tuple[float, float]]:
    """The (lo, hi) bins of a 1-D histogram holding fewer than `min_count` faces."""
    return [(float(edges[i]), float(edges[i + 1])) for i, n in enumerate(counts) if n < min_count]


def _direction(axis: str, lo: float, hi: float) -> str:
    centre = (lo + hi) / 2
    if lo <= 0 <= hi or abs(centre) < 1e-9:
        return "looking straight at the camera" if axis == "yaw" else "with the head level"
    if axis == "yaw":
        # yaw > 0: nose toward the image's right, i.e. the person looks to their own left.
        side = "their left (the image's right)" if centre > 0 else "their right (the image's left)"
        return f"turned to {side}"
    return "looking up" if centre > 0 else "looking down"


def describe_bin(axis: str, lo: float, hi: float) -> str:
    """A bin in words, e.g. describe_bin("yaw", 30, 45) -> 'turned to their left (the image's right) (yaw 30..45°)'."""
    return f"{_direction(axis, lo, hi)} ({axis} {lo:g}..{hi:g}°)"


def histogram_png(counts: np.ndarray, yaw_edges: Sequence[float], pitch_edges: Sequence[float], cell: int = 28) -> bytes:
    """A small heatmap: columns are yaw bins (left to right as in the image), rows pitch bins
    (up at the top); brighter = more faces, dark red = empty. Counts are printed in each cell."""
    import cv2

    counts = np.asarray(counts, dtype=float)  # (yaw bins, pitch bins)
    grid = counts.T[::-1]  # rows: pitch from high (top) to low; columns: yaw
    rows, cols = grid.shape
    margin = 18
    image = np.full((rows * cell + margin, cols * cell + margin, 3), 255, np.uint8)
    scale = np.log1p(grid) / max(np.log1p(grid).max(), 1e-9)
    for r in range(rows):
        for c in range(cols):
            colour = (0, 0, 120) if grid[r, c] == 0 else tuple(int(v) for v in (40 + 200 * scale[r, c], 120 + 120 * scale[r, c], 40))
            y, x = r * cell, margin + c * cell
            cv2.rectangle(image, (x, y), (x + cell - 2, y + cell - 2), colour, -1)
            cv2.putText(image, str(int(grid[r, c])), (x + 3, y + cell // 2 + 4), cv2.FONT_HERSHEY_PLAIN, 0.8, (255, 255, 255), 1)
    cv2.putText(image, "yaw ->", (margin, rows * cell + 13), cv2.FONT_HERSHEY_PLAIN, 0.9, (0, 0, 0), 1)
    cv2.putText(image, "up", (0, 12), cv2.FONT_HERSHEY_PLAIN, 0.8, (0, 0, 0), 1)
    ok, png = cv2.imencode(".png", image)  # channels are BGR for cv2: colours above are BGR
    if not ok:
        raise RuntimeError("could not encode the pose histogram as PNG")
    return png.tobytes()
