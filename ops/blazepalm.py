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
from swapline.ops.blazeface import Detection, check_anchors, decode, letterbox, ssd_detections

logger = logging.getLogger(__name__)

INPUT_SIZE = 192
STRIDES = (8, 16, 16, 16)  # SsdAnchorsCalculator layers of the palm graph
MIN_SCORE = 0.5  # the graph's min_score_thresh
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


class BlazePalm:
    """Palms in an RGB uint8 frame of any size, as `Detection`s (keypoints (7, 2)) in source px,
    surest first."""

    def __init__(self, models_dir: str = "", min_score: float = MIN_SCORE) -> None:
        from swapline.ops.hands import load_hand_model

        self.model = load_hand_model(tflite.PALM_FILE, models_dir)
        self.min_score = min_score
        self.size = self.model.input_shape[1]
        self.anchor_xy = anchors(self.size)
        check_anchors(self.model, self.anchor_xy, tflite.PALM_FILE, f"strides {STRIDES} on {self.size} px")

    def __call__(self, image: np.ndarray) -> list[Detection]:
        tensor, scale, pad = letterbox(image, self.size)  # (S,S,3) in -1..1
        outputs = self.model(((tensor + 1.0) / 2.0)[None])  # this graph wants 0..1; (1, 2016, 18), (1, 2016, 1)
        return [Detection(box=box, keypoints=points, score=score)
                for box, points, score in ssd_detections(outputs, decode, self.anchor_xy, self.size, self.min_score, scale, pad)]
