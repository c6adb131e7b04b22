"""SCRFD face detection (Guo et al., 2021) from a user-placed ONNX file, decoded here.

The file is InsightFace's `scrfd_10g_bnkps.onnx` / `det_10g.onnx` (any SCRFD "_bnkps" export
with this layout works, e.g. the 2.5G one): one 1x3x640x640 input, nine outputs: per stride 8,
16 and 32 a score (N, 1), box distances (N, 4) and keypoint offsets (N, 10), with 2 anchors at
every location of the stride's grid, so N = 2 * (640 / stride)^2.

Conventions (re-derived from InsightFace's reference inference and its training configs):
* Input: the frame scaled to fit 640x640 keeping its aspect, at the top-left of a black canvas;
  RGB (InsightFace swaps its BGR frames to RGB, and SCRFD was trained with `to_rgb=True`),
  normalised (x - 127.5) / 128.
* Anchor centres sit at (column * stride, row * stride), no half-cell offset; rows run
  row-major over the grid with the 2 anchors of a location next to each other.
* Distances and offsets are in stride units: box = centre -/+ stride * (left, top | right,
  bottom); keypoint k = centre + stride * (dx_k, dy_k).
* Kept: score >= 0.5, then greedy NMS at IoU 0.4 (InsightFace's defaults) over at most the
  best 1000 candidates (InsightFace has no cap; see MAX_CANDIDATES).
Outputs are matched to strides by their shapes (width 1/4/10, row count), not by name or
order: det_10g names them "448", "471", ..., other exports "score_8", ...

onnxruntime and OpenCV are imported inside functions (this module loads with the code location).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np

from swapline.ops import onnx_models

logger = logging.getLogger(__name__)

INPUT_SIZE = 640
STRIDES = (8, 16, 32)
ANCHORS_PER_LOCATION = 2
MEAN, STD = 127.5, 128.0
SCORE_THRESHOLD = 0.5
IOU_THRESHOLD = 0.4
# NMS sees at most this many candidates, the best: a real frame gives tens (a few anchors per
# face), but a broken or random-weight model, or a face-like texture, can pass thousands, and
# greedy NMS costs up to candidates x kept (14k random-weight candidates: ~0.9 s a frame).
MAX_CANDIDATES = 1000
NUM_KEYPOINTS = 5  # the subject's right eye, left eye, nose tip, right and left mouth corner (image left to right)


class Detection(NamedTuple):
    box: np.ndarray  # (4,) float32 x0, y0, x1, y1, source px (pixel edges)
    score: float
    keypoints: np.ndarray  # (5, 2) float32 x, y, source px


def letterbox(image: np.ndarray, size: int = INPUT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(canvas (size, size, 3) uint8, scale (2,) network px per source px in x and y): the image
    resized to fit keeping its aspect, at the canvas's top-left, black elsewhere. The two scales
    differ only by the rounding of the resized sides."""
    import cv2

    h, w = image.shape[:2]
    fit = min(size / w, size / h)
    new_w, new_h = max(1, min(size, round(w * fit))), max(1, min(size, round(h * fit)))
    canvas = np.zeros((size, size, 3), np.uint8)
    interp = cv2.INTER_AREA if fit < 1 else cv2.INTER_LINEAR  # area: no aliasing when shrinking
    canvas[:new_h, :new_w] = cv2.resize(image, (new_w, new_h), interpolation=interp) if fit != 1 else image
    return canvas, np.array([new_w / w, new_h / h])


def to_tensor(canvas_rgb: np.ndarray) -> np.ndarray:
    """(1, 3, S, S) float32 network input from an RGB (S, S, 3) uint8 canvas."""
    x = (canvas_rgb.astype(np.float32) - MEAN) / STD  # (S, S, 3)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


@lru_cache(maxsize=16)
def anchor_centres(stride: int, size: int = INPUT_SIZE) -> np.ndarray:
    """(2 * (size/stride)^2, 2) float32 anchor centres (x, y) in network px, in output row order."""
    cells = size // stride
    ys, xs = np.mgrid[0:cells, 0:cells]
    centres = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride  # (cells^2, 2)
    centres = np.repeat(centres, ANCHORS_PER_LOCATION, axis=0)  # both anchors of a cell share it
    centres.flags.writeable = False  # cached: shared by every call
    return centres


def split_outputs(outputs: Sequence[np.ndarray], size: int = INPUT_SIZE) -> dict[int, tuple[np.ndarray, ...]]:
    """stride -> (scores (N,), distances (N, 4), keypoint offsets (N, 10)) from the nine raw
    outputs in any order, batched (1, N, C) or not (N, C)."""
    rows = {ANCHORS_PER_LOCATION * (size // s) ** 2: s for s in STRIDES}
    found: dict[tuple[int, int], np.ndarray] = {}
    for out in outputs:
        out = np.asarray(out, np.float32)
        flat = out.reshape(-1, out.shape[-1])  # (N, C)
        key = (rows.get(flat.shape[0], 0), flat.shape[1])
        if key[0] == 0 or key[1] not in (1, 4, 2 * NUM_KEYPOINTS) or key in found:
            raise ValueError(f"unexpected SCRFD output of shape {out.shape} for a {size}px input; "
                             f"expected (N, 1|4|10) with N in {sorted(rows)}")
        found[key] = flat
    if len(found) != 3 * len(STRIDES):
        raise ValueError(f"SCRFD has {3 * len(STRIDES)} outputs (scores, boxes, keypoints per stride), got {len(found)}")
    return {s: (found[(s, 1)][:, 0], found[(s, 4)], found[(s, 2 * NUM_KEYPOINTS)]) for s in STRIDES}


def decode(outputs: Sequence[np.ndarray], size: int = INPUT_SIZE,
           score_threshold: float = SCORE_THRESHOLD) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every anchor scoring >= score_threshold as (boxes (K, 4), scores (K,), keypoints (K, 5, 2)),
    float32, in network px, unsorted."""
    boxes, scores, points = [], [], []
    for stride, (score, dist, offsets) in split_outputs(outputs, size).items():
        keep = np.flatnonzero(score >= score_threshold)
        centre = anchor_centres(stride, size)[keep]  # (k, 2)
        d = dist[keep] * stride  # (k, 4) left, top, right, bottom
        boxes.append(np.concatenate([centre - d[:, :2], centre + d[:, 2:]], axis=1))
        points.append(centre[:, None, :] + offsets[keep].reshape(-1, NUM_KEYPOINTS, 2) * stride)
        scores.append(score[keep])
    return (np.concatenate(boxes).astype(np.float32), np.concatenate(scores).astype(np.float32),
            np.concatenate(points).astype(np.float32))


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of boxes (..., 4) x0 y0 x1 y1, broadcast: (4,) with (M, 4) gives
    (M,); (K, 1, 4) with (1, K, 4) the (K, K) matrix."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = w * h
    area_a = np.clip(a[..., 2] - a[..., 0], 0, None) * np.clip(a[..., 3] - a[..., 1], 0, None)
    area_b = np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)
    return inter / np.maximum(area_a + area_b - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = IOU_THRESHOLD) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first: a box is dropped when it
    overlaps an already kept one by IoU > iou_threshold. Memory is (K, K) for K boxes: callers
    cap K (MAX_CANDIDATES)."""
    order = np.argsort(-scores, kind="stable")
    ranked = np.asarray(boxes)[order]  # (K, 4) best first
    overlaps = iou(ranked[:, None], ranked[None]) > iou_threshold  # (K, K), computed once
    dropped = np.zeros(len(order), bool)
    for i in range(len(order)):  # a kept box drops the worse ones it overlaps
        if not dropped[i]:
            dropped[i + 1:] |= overlaps[i, i + 1:]
    return order[~dropped].astype(np.int64)


class ScrfdDetector:
    """Faces in RGB frames with a user-placed SCRFD file. The file is looked for at construction
    (OnnxModelMissing names the path); the session loads on first use and is shared per process.

    `detector(image_rgb) -> list[Detection(box, score, keypoints)]`, best first."""

    def __init__(self, models_dir: onnx_models.Folder = None, *, score_threshold: float = SCORE_THRESHOLD,
                 iou_threshold: float = IOU_THRESHOLD, max_candidates: int = MAX_CANDIDATES, threads: int = 0) -> None:
        self.path = onnx_models.model_path("scrfd", models_dir)
        self.score_threshold, self.iou_threshold, self.threads = score_threshold, iou_threshold, threads
        self.max_candidates = max_candidates

    @property
    def session(self) -> Any:
        return onnx_models.session(self.path, self.threads)

    @property
    def input_size(self) -> int:
        """The model's input side: a fixed-size export says so; a dynamic one gets 640 (SCRFD's
        evaluation size: larger finds smaller faces, slower)."""
        _, h, w = onnx_models.input_layout(self.session.get_inputs()[0].shape)
        if h != w:
            raise ValueError(f"{self.path.name}: expected a square input, got {h}x{w}")
        return h or INPUT_SIZE

    def detect(self, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(boxes (N, 4), scores (N,), keypoints (N, 5, 2)) float32 in source px, best first.
        Boxes are clipped to the frame (those left empty, e.g. in the letterbox padding, are
        dropped); keypoints are not (a face at the border has some outside it)."""
        image_rgb = np.asarray(image_rgb)
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
            raise ValueError(f"expected an RGB (H, W, 3) uint8 frame, got {image_rgb.shape} {image_rgb.dtype}")
        size = self.input_size
        canvas, scale = letterbox(image_rgb, size)
        session = self.session
        outputs = session.run(None, {session.get_inputs()[0].name: to_tensor(canvas)})
        boxes, scores, points = decode(outputs, size, self.score_threshold)
        boxes, points = boxes / np.tile(scale, 2), points / scale  # network px -> source px
        h, w = image_rgb.shape[:2]
        boxes = np.clip(boxes, 0, [w, h, w, h]).astype(np.float32)
        solid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, scores, points = boxes[solid], scores[solid], points[solid]
        if len(scores) > self.max_candidates:
            best = np.argpartition(-scores, self.max_candidates - 1)[: self.max_candidates]
            boxes, scores, points = boxes[best], scores[best], points[best]
        keep = nms(boxes, scores, self.iou_threshold)
        return boxes[keep], scores[keep], points[keep].astype(np.float32)

    def __call__(self, image_rgb: np.ndarray) -> list[Detection]:
        boxes, scores, points = self.detect(image_rgb)
        return [Detection(b, float(s), p) for b, s, p in zip(boxes, scores, points)]
