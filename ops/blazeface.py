"""BlazeFace full-range face detection (MediaPipe's `face_detection_full_range.tflite`, Apache-2.0).

The model sees a 192x192 letterbox of the frame (any aspect ratio, no distortion) and scores one
SSD anchor per cell of a 48x48 grid (stride 4, MediaPipe's `face_detection_full_range_common`
graph: one layer, offsets 0.5, fixed anchor size, no interpolated aspect ratio). Each anchor
regresses a box and six keypoints; boxes are merged with MediaPipe's weighted NMS, written here.

OpenCV is imported inside functions (this module is imported with the code location).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from swapline.ops import tflite

logger = logging.getLogger(__name__)

INPUT_SIZE = 192
STRIDE = 4
# MediaPipe uses 0.5. 0.6 drops a cartoon "face" in no_face.mp4 (0.52; FaceMesh said 0.93
# present), while real demo faces score >= 0.55 (one entering the frame), turned ones ~0.68.
MIN_SCORE = 0.6
NMS_IOU = 0.3  # its min_suppression_threshold (intersection over union)
# Measured on the demo clips' faces shrunk step by step: found from ~12 input px, always from 20.
MIN_INPUT_FACE = 20
RAW_SCORE_CLIP = 80.0  # MediaPipe clips at 100; 80 keeps float32 exp() finite
NUM_KEYPOINTS = 6
# Keypoint order: the eye on the image's left, the other eye, nose tip, mouth centre, then the
# two ear tragions in the same order (a frontal face's keypoint 0 is left of keypoint 1).
LEFT_EYE, RIGHT_EYE, NOSE, MOUTH = 0, 1, 2, 3


@dataclass
class Detection:
    box: np.ndarray  # (4,) x0, y0, x1, y1 in source px (unclipped)
    keypoints: np.ndarray  # (6, 2) source px
    score: float  # sigmoid confidence, 0..1


def anchors(size: int = INPUT_SIZE, stride: int = STRIDE) -> np.ndarray:
    """(N, 2) anchor centres in 0..1 input units, row-major over the grid as the model emits them."""
    cells = size // stride
    ys, xs = np.mgrid[0:cells, 0:cells]
    return np.stack([(xs.ravel() + 0.5) / cells, (ys.ravel() + 0.5) / cells], axis=1).astype(np.float32)


def letterbox(image: np.ndarray, size: int = INPUT_SIZE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(size x size float32 RGB in -1..1, (sx, sy), (pad_x, pad_y)): the image scaled to fit and
    centred on black, so a point p in input px is (p - pad) / scale in source px."""
    import cv2

    height, width = image.shape[:2]
    scale = size / max(height, width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    # INTER_AREA: a 1080p frame shrinks ~10x, and bilinear would alias fine detail into noise.
    small = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    pad_x, pad_y = (size - new_w) // 2, (size - new_h) // 2
    canvas = np.zeros((size, size, 3), np.float32)
    canvas[pad_y:pad_y + new_h, pad_x:pad_x + new_w] = small
    # Map back with the exact per-axis ratio the rounding produced.
    return canvas / 127.5 - 1.0, np.array([new_w / width, new_h / height], np.float32), np.array([pad_x, pad_y], np.float32)


def decode(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchor_xy: np.ndarray,
           size: int = INPUT_SIZE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes (N, 4) x0 y0 x1 y1, keypoints (N, K, 2), scores (N,)), in 0..1 input units; K from
    the regressions' width (4 + 2K: BlazeFace 6, BlazePalm 7). Regressions are input px offsets
    from the anchor centre (box size in px, not log-scaled)."""
    raw = raw_boxes.reshape(len(anchor_xy), -1, 2) / size  # (N, 2 + K, 2): centre, size, keypoints
    centre = raw[:, 0] + anchor_xy
    half = raw[:, 1] / 2.0
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    keypoints = raw[:, 2:] + anchor_xy[:, None, :]
    scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores.reshape(-1), -RAW_SCORE_CLIP, RAW_SCORE_CLIP)))
    return boxes, keypoints, scores


def iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    x0, y0 = np.maximum(box[0], others[:, 0]), np.maximum(box[1], others[:, 1])
    x1, y1 = np.minimum(box[2], others[:, 2]), np.minimum(box[3], others[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-12)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
                 threshold: float = NMS_IOU) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe's WEIGHTED non-maximum suppression: each cluster (boxes overlapping the best
    remaining one by more than `threshold` IoU) becomes its score-weighted mean box and
    keypoints, with the best score. Averaging many overlapping anchors steadies the box from
    frame to frame, which plain NMS (keep the single best) does not."""
    order = np.argsort(-scores, kind="stable")
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    remaining = np.ones(len(scores), dtype=bool)
    merged = []
    for i in range(len(scores)):
        if not remaining[i]:
            continue
        cluster = remaining & (iou(boxes[i], boxes) > threshold)
        cluster[i] = True
        weights = scores[cluster] / scores[cluster].sum()
        merged.append((weights @ boxes[cluster], np.tensordot(weights, keypoints[cluster], axes=1), float(scores[i])))
        remaining &= ~cluster
    return merged


class BlazeFace:
    """Faces in an RGB uint8 frame of any size, as `Detection`s in source px, surest first."""

    def __init__(self, models_dir: str = "", min_score: float = MIN_SCORE) -> None:
        self.model = tflite.load_model(str(tflite.model_path(tflite.DETECTOR_FILE, models_dir or None)))
        self.min_score = min_score
        self.size = self.model.input_shape[1]
        self.anchor_xy = anchors(self.size)
        check_anchors(self.model, self.anchor_xy, tflite.DETECTOR_FILE, f"stride {STRIDE} on {self.size} px")

    def __call__(self, image: np.ndarray, min_face: float | None = None) -> list[Detection]:
        """Faces of `image`; with `min_face` (source px), down to that size: the image is also
        searched in overlapping tiles small enough that such a face fills MIN_INPUT_FACE px of
        the model's input (`windows`), and the tiles' detections are merged."""
        height, width = image.shape[:2]
        found: list[tuple[np.ndarray, np.ndarray, float]] = []
        for x0, y0, x1, y1 in windows(height, width, min_face, self.size):
            whole = (x0, y0, x1, y1) == (0, 0, width, height)
            for box, points, score in self._window(image[y0:y1, x0:x1]):
                box, points = box + [x0, y0, x0, y0], points + [x0, y0]
                # A face cut by a tile's inner edge is whole in the overlapping tile.
                if whole or not _touches_inner_edge(box, (x0, y0, x1, y1), width, height):
                    found.append((box, points, score))
        if len(found) > 1:
            found = weighted_nms(np.stack([f[0] for f in found]), np.stack([f[1] for f in found]),
                                 np.array([f[2] for f in found], np.float32))
        return [Detection(box=box, keypoints=points, score=score) for box, points, score in found]

    def _window(self, image: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, float]]:
        """(box (4,), keypoints (6, 2), score) in the window's px, merged within it."""
        tensor, scale, pad = letterbox(image, self.size)
        return ssd_detections(self.model(tensor[None]), decode, self.anchor_xy, self.size, self.min_score, scale, pad)


def check_anchors(model, anchor_xy: np.ndarray, name: str, layout: str) -> None:
    """The anchor layout must match what the model emits, else every box is decoded wrongly."""
    counts = {shape[1] for shape in model.output_shapes}
    if counts != {len(anchor_xy)}:
        raise ValueError(f"{name}: outputs {model.output_shapes} do not match {len(anchor_xy)} anchors ({layout})")


def ssd_detections(outputs: list[np.ndarray], decode_fn, anchor_xy: np.ndarray, size: int, min_score: float,
                   scale: np.ndarray, pad: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """A BlazeFace-family model's outputs (regressions (1, N, 4 + 2K), scores (1, N, 1)) as
    (box (4,), keypoints (K, 2), score) in the letterboxed image's source px (`letterbox`'s
    scale and pad), merged by weighted NMS. `decode_fn`: the model's `decode`."""
    raw_scores = next(o for o in outputs if o.shape[-1] == 1)
    raw_boxes = next(o for o in outputs if o.shape[-1] != 1)
    boxes, keypoints, scores = decode_fn(raw_boxes, raw_scores, anchor_xy, size)
    keep = (scores >= min_score) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return [(((box.reshape(2, 2) * size - pad) / scale).ravel(), (points * size - pad) / scale, score)
            for box, points, score in weighted_nms(boxes[keep], keypoints[keep], scores[keep])]


def windows(height: int, width: int, min_face: float | None, size: int = INPUT_SIZE) -> list[tuple[int, int, int, int]]:
    """Square search windows (x0, y0, x1, y1) covering the image: the whole image, and, for
    faces down to `min_face` px, levels of tiles of side T = min_face * size / MIN_INPUT_FACE,
    2T, 4T ... until a tile would hold the whole image. Level T sees faces from T * MIN_INPUT_FACE
    / size (~T/10) px; its tiles overlap by a quarter, so any face up to T/4 lies whole in one of
    them, and bigger ones are whole in the next level's (which sees them from ~T/5)."""
    out = [(0, 0, width, height)]
    tile = int(round(min_face * size / MIN_INPUT_FACE)) if min_face else max(height, width)
    while tile < max(height, width):
        xs, ys = _starts(width, tile), _starts(height, tile)
        out += [(x, y, min(x + tile, width), min(y + tile, height)) for y in ys for x in xs]
        tile *= 2
    return out


def _starts(length: int, tile: int) -> list[int]:
    if tile >= length:
        return [0]
    return sorted({*range(0, length - tile, tile * 3 // 4), length - tile})


def _touches_inner_edge(box: np.ndarray, window: tuple[int, int, int, int], width: int, height: int) -> bool:
    x0, y0, x1, y1 = window
    margin = 2.0
    return bool((x0 > 0 and box[0] <= x0 + margin) or (y0 > 0 and box[1] <= y0 + margin)
                or (x1 < width and box[2] >= x1 - margin) or (y1 < height and box[3] >= y1 - margin))
