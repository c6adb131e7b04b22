"""BlazePalm palm detection (MediaPipe's `palm_detection_full.tflite`, Apache-2.0).

The model sees a 192x192 letterbox of the frame in 0..1 (MediaPipe's `palm_detection_cpu`
graph) and scores 2016 SSD anchors: a 24x24 grid (stride 8) with 2 anchors per cell, then a
12x12 grid (stride 16) with 6 per cell (three stride-16 layers share one grid; each layer gives
an anchor of aspect 1 plus its interpolated-scale twin, all of fixed size, so only the centres
matter). Each anchor regresses a box and 7 palm keypoints, decoded like BlazeFace's; boxes are
merged with the same weighted NMS (ops.blazeface), whose letterbox this reuses too.

OpenCV is imported inside functions (this module is imported with the code location).
"""

from __future__ import annotations

import logging

import numpy as np

from swapline.ops import tflite
from swapline.ops.blazeface import Detection, letterbox, weighted_nms

logger = logging.getLogger(__name__)

INPUT_SIZE = 192
STRIDES = (8, 16, 16, 16)  # SsdAnchorsCalculator layers of the palm graph
MIN_SCORE = 0.5  # the graph's min_score_thresh
RAW_SCORE_CLIP = 80.0  # MediaPipe clips at 100; 80 keeps float32 exp() finite
NUM_KEYPOINTS = 7
# Keypoints: wrist centre, index MCP, middle MCP, ring MCP, pinky MCP, two on the thumb.
WRIST, MIDDLE_MCP = 0, 2


def anchors(size: int = INPUT_SIZE, strides: tuple[int, ...] = STRIDES) -> np.ndarray:
    """(2016, 2) anchor centres in 0..1 input units, in the order the model emits them: grid by
    grid, row-major, the anchors of one cell together."""
    out, i = [], 0
    while i < len(strides):
        stride, per_cell = strides[i], 0
        while i < len(strides) and strides[i] == stride:  # consecutive equal strides share a grid
            per_cell += 2
            i += 1
        cells = -(-size // stride)
        ys, xs = np.mgrid[0:cells, 0:cells]
        centres = np.stack([(xs.ravel() + 0.5) / cells, (ys.ravel() + 0.5) / cells], axis=1)  # (cells^2, 2)
        out.append(np.repeat(centres, per_cell, axis=0))
    return np.concatenate(out).astype(np.float32)


def decode(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchor_xy: np.ndarray,
           size: int = INPUT_SIZE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes (N, 4) x0 y0 x1 y1, keypoints (N, 7, 2), scores (N,)) in 0..1 input units. As in
    BlazeFace: regressions are input px offsets from the anchor centre, box size in px."""
    raw = raw_boxes.reshape(-1, 2 + NUM_KEYPOINTS, 2) / size  # (N, 9, 2): centre, size, keypoints
    centre = raw[:, 0] + anchor_xy
    half = raw[:, 1] / 2.0
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    keypoints = raw[:, 2:] + anchor_xy[:, None, :]
    scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores.reshape(-1), -RAW_SCORE_CLIP, RAW_SCORE_CLIP)))
    return boxes, keypoints, scores


class BlazePalm:
    """Palms in an RGB uint8 frame of any size, as `Detection`s (keypoints (7, 2)) in source px,
    surest first."""

    def __init__(self, models_dir: str = "", min_score: float = MIN_SCORE) -> None:
        from swapline.ops.hands import load_hand_model

        self.model = load_hand_model(tflite.PALM_FILE, models_dir)
        self.min_score = min_score
        self.size = self.model.input_shape[1]
        self.anchor_xy = anchors(self.size)
        # The anchor layout must match what the model emits, else every box is decoded wrongly.
        counts = {shape[1] for shape in self.model.output_shapes}
        if counts != {len(self.anchor_xy)}:
            raise ValueError(f"{tflite.PALM_FILE}: outputs {self.model.output_shapes} do not match "
                             f"{len(self.anchor_xy)} anchors (strides {STRIDES} on {self.size} px)")

    def __call__(self, image: np.ndarray) -> list[Detection]:
        tensor, scale, pad = letterbox(image, self.size)  # (S,S,3) in -1..1
        outputs = self.model(((tensor + 1.0) / 2.0)[None])  # this graph wants 0..1
        raw_boxes = next(o for o in outputs if o.shape[-1] == 4 + 2 * NUM_KEYPOINTS)  # (1, 2016, 18)
        raw_scores = next(o for o in outputs if o.shape[-1] == 1)  # (1, 2016, 1)
        boxes, keypoints, scores = decode(raw_boxes, raw_scores, self.anchor_xy, self.size)
        keep = (scores >= self.min_score) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        found = weighted_nms(boxes[keep], keypoints[keep], scores[keep])
        return [Detection(box=((box.reshape(2, 2) * self.size - pad) / scale).ravel(),
                          keypoints=(points * self.size - pad) / scale, score=score)
                for box, points, score in found]
