"""MediaPipe Hands on video frames: BlazePalm boxes (ops.blazepalm), 21 hand landmarks
(`hand_landmark_full.tflite`, Apache-2.0) in a rotated ROI, and the hand drawn as a mask in
frame pixels: what `mask: occlusion` cuts out of the face (ops.occlusion).

ROIs follow MediaPipe's graphs: from a palm (`palm_detection_detection_to_roi`: the box turned
so wrist -> middle-finger MCP points up, shifted half a box towards the fingers, 2.6x its long
side) and, on the next frame, from the landmarks (`hand_landmark_landmarks_to_roi`: their box
in that orientation, shifted 0.1 up, 2x). The landmark ROI follows a hand the palm detector
loses once fingers alone cover the face, as MediaPipe's own tracking does.

Given the faces, palms are searched in a square around each face instead of the whole frame:
only hands near a face matter here, and a 640x360 frame letterboxed to 192 px leaves a hand too
few pixels (on the demo clip the palm is found in 5 of 31 hand frames whole, 15 in the square).

OpenCV is imported inside functions (this module is imported with the code location).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from swapline.ops import tflite
from swapline.ops.facemesh import Roi, roi_matrix

logger = logging.getLogger(__name__)

NUM_POINTS = 21
MIN_PRESENCE = 0.5  # MediaPipe's ThresholdingCalculator on the hand flag, for a hand followed
# ... and for a hand new from a palm detection: near a face the palm detector fires on a nose
# now and then, and the landmark model half-agrees (0.5-0.8 on the demo clip, real hands there
# 0.96-0.99 once over the face); a real hand missed for it is picked up a few frames later.
NEW_PRESENCE = 0.9
MAX_HANDS = 2
PALM_SCALE, PALM_SHIFT = 2.6, 0.5  # palm box -> hand ROI
TRACK_SCALE, TRACK_SHIFT = 2.0, 0.1  # landmarks -> next frame's ROI
SAME_HAND_IOU = 0.5  # MediaPipe's association threshold: above it two ROIs are one hand
# Two landmark sets whose boxes overlap by more than this share of the smaller are one hand seen
# from two ROIs (a tracked one and a palm's): their poses differ, so their ROIs need not overlap.
SAME_HAND_OVERLAP = 0.5
# Palm search square around a face: this many face sizes (a hand over a face is about its size,
# so it fills ~1/4 of the detector's input, inside its anchors' 0.15-0.75 scale range), at most
# the frame's short side.
SEARCH_FACES = 4.0
Box = tuple[float, float, float, float]  # x0, y0, x1, y1 source px
# Landmark layout: 0 wrist; thumb 1-4; index 5-8; middle 9-12; ring 13-16; pinky 17-20 (tips last).
WRIST, INDEX_MCP, MIDDLE_MCP, RING_MCP = 0, 5, 9, 13
TRACK_POINTS = [0, 1, 2, 3, 5, 6, 9, 10, 13, 14, 17, 18]  # the ones MediaPipe boxes: fingertips jitter
PALM = [0, 1, 2, 5, 9, 13, 17]
FINGERS = [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16], [0, 17, 18, 19, 20]]
# Drawn finger width as a share of the wrist -> middle MCP length. A finger is ~0.2 of it; the
# landmarks sit on the finger's axis and wobble, and a finger painted over is the failure we
# fix, so the stroke errs wide: 0.35 covers 0.95-0.99 of the hand labelled by eye on four demo
# frames (tests/fixtures/hand_frames.json), adding 0.15-0.30 of its area around it.
FINGER_WIDTH = 0.35
SETUP_HINT = "mask 'hull' needs no hand models"


def load_hand_model(name: str, models_dir: str = "") -> tflite.TfliteModel:
    """A hand model from the models folder; FaceModelsMissing naming the file and the set-up
    command when it is not there (never downloaded here)."""
    path = tflite.models_dir(models_dir or None) / name
    if not path.is_file():
        raise tflite.FaceModelsMissing(
            f"MediaPipe hand model not found: expected {path}. swapline never downloads models at run time; "
            f"fetch them once at set-up with\n  {tflite.SETUP_COMMAND} --dir '{path.parent}'\nor copy "
            f"{', '.join(tflite.HAND_FILES)} there (from the mediapipe 0.10.21 wheel). Another folder: set "
            f"${tflite.ENV_DIR}. Without them use a mask other than 'occlusion' ({SETUP_HINT}).")
    return tflite.load_model(str(path))


@dataclass
class Hand:
    points: np.ndarray  # (21, 3) float32: x, y in source px, z (depth) in the same px scale
    presence: float  # the model's hand-present confidence, 0..1

    @property
    def length(self) -> float:
        """Wrist to middle-finger MCP, source px: the hand's scale."""
        return float(np.linalg.norm(self.points[MIDDLE_MCP, :2] - self.points[WRIST, :2]))


def _oriented(centre: np.ndarray, up: np.ndarray, width: float, height: float, shift: float, scale: float) -> Roi:
    """MediaPipe's RectTransformation on a rect whose 'up' is the unit vector `up` (source px):
    shifted `shift` heights along `up`, squared on the long side, scaled."""
    centre = centre + shift * height * up
    # Crop y runs down, so crop-up is -(-sin, cos) = (sin, -cos) = up.
    return Roi((float(centre[0]), float(centre[1])), scale * max(width, height), math.atan2(up[0], -up[1]))


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-6 else np.array([0.0, -1.0])


def roi_from_palm(palm) -> Roi:
    """Hand ROI from a BlazePalm detection (box (4,), keypoints (7, 2), source px)."""
    from swapline.ops import blazepalm

    x0, y0, x1, y1 = (float(v) for v in palm.box)
    up = _unit(palm.keypoints[blazepalm.MIDDLE_MCP] - palm.keypoints[blazepalm.WRIST])
    return _oriented(np.array([(x0 + x1) / 2, (y0 + y1) / 2]), up, x1 - x0, y1 - y0, PALM_SHIFT, PALM_SCALE)


def roi_from_landmarks(points: np.ndarray) -> Roi:
    """Next frame's hand ROI from this frame's landmarks (21, 2+): their box in the hand's own
    orientation (wrist -> the MCPs of index, middle and ring, middle counted twice)."""
    xy = np.asarray(points, np.float64)[:, :2]
    knuckles = ((xy[INDEX_MCP] + xy[RING_MCP]) / 2 + xy[MIDDLE_MCP]) / 2
    up = _unit(knuckles - xy[WRIST])
    axes = np.array([[-up[1], up[0]], [up[0], up[1]]])  # rows: the rect's x axis (right), its up
    local = xy[TRACK_POINTS] @ axes.T  # (12, 2)
    lo, hi = local.min(axis=0), local.max(axis=0)
    centre = ((lo + hi) / 2) @ axes
    return _oriented(centre, up, hi[0] - lo[0], hi[1] - lo[1], TRACK_SHIFT, TRACK_SCALE)


def search_squares(shape: tuple[int, ...], faces: list[Box] | None) -> list[tuple[int, int, int]]:
    """(x0, y0, side) of the squares, inside the frame, the palm detector looks at: one
    centred on each face (shifted inward at the frame's edge), or the whole frame without faces."""
    height, width = shape[:2]
    if not faces:
        return [(0, 0, max(height, width))]  # the letterbox of the whole frame
    out = []
    for x0, y0, x1, y1 in faces:
        side = int(min(min(height, width), max(SEARCH_FACES * max(x1 - x0, y1 - y0), 64)))
        left = int(np.clip((x0 + x1) / 2 - side / 2, 0, width - side))
        top = int(np.clip((y0 + y1) / 2 - side / 2, 0, height - side))
        out.append((left, top, side))
    return out


def _square(roi: Roi) -> np.ndarray:
    (cx, cy), half = roi.centre, roi.size / 2
    return np.array([cx - half, cy - half, cx + half, cy + half])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    from swapline.ops.blazeface import iou

    return float(iou(a, b[None])[0])


def _same_hand(a: Hand, b: Hand) -> bool:
    (ax0, ay0), (ax1, ay1) = a.points[:, :2].min(axis=0), a.points[:, :2].max(axis=0)
    (bx0, by0), (bx1, by1) = b.points[:, :2].min(axis=0), b.points[:, :2].max(axis=0)
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    smaller = min((ax1 - ax0) * (ay1 - ay0), (bx1 - bx0) * (by1 - by0))
    return inter > SAME_HAND_OVERLAP * max(smaller, 1e-6)


class HandLandmarker:
    """21 landmarks of the hand in an ROI of an RGB uint8 frame."""

    def __init__(self, models_dir: str = "") -> None:
        self.model = load_hand_model(tflite.HAND_LANDMARK_FILE, models_dir)
        self.size = self.model.input_shape[1]

    def __call__(self, image: np.ndarray, roi: Roi) -> Hand:
        import cv2

        matrix = roi_matrix(roi, self.size)  # (2, 3) source -> crop
        crop = cv2.warpAffine(image, matrix, (self.size, self.size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)  # (224, 224, 3), as ImageToTensor's default
        # Outputs in the graph's order: landmarks, hand flag, handedness, world landmarks.
        raw, flag = (o.reshape(-1) for o in self.model((crop.astype(np.float32) / 255.0)[None])[:2])
        raw = raw.reshape(NUM_POINTS, 3)  # crop px
        inverse = cv2.invertAffineTransform(matrix)
        points = np.empty((NUM_POINTS, 3), np.float32)
        points[:, :2] = raw[:, :2] @ inverse[:, :2].T + inverse[:, 2]
        points[:, 2] = raw[:, 2] * roi.size / self.size
        return Hand(points, float(flag[0]))  # the flag is a probability already (no sigmoid in the graph)


class HandTracker:
    """Hands in consecutive frames of one video, MediaPipe-style: landmark ROIs carried from the
    previous frame, palm detection for the hands not yet followed. Stateful and not thread-safe:
    one per video, fed frames in order (`reset` after a jump)."""

    def __init__(self, models_dir: str = "", max_hands: int = MAX_HANDS) -> None:
        from swapline.ops.blazepalm import BlazePalm

        self.palms = BlazePalm(models_dir)
        self.landmarks = HandLandmarker(models_dir)
        self.max_hands = max_hands
        self._rois: list[Roi] = []
        self.palm_runs = 0

    def reset(self) -> None:
        self._rois = []

    def __call__(self, image: np.ndarray, faces: list[Box] | None = None) -> list[Hand]:
        """Hands in this frame (the next after the previous call's); `faces`: boxes to search
        around for new hands (None: the whole frame)."""
        rois, followed = list(self._rois), len(self._rois)
        if len(rois) < self.max_hands:
            for roi in self._palm_rois(image, faces):
                # A palm on a hand followed already would add the same hand twice.
                if all(_iou(_square(roi), _square(r)) <= SAME_HAND_IOU for r in rois):
                    rois.append(roi)
        hands: list[Hand] = []
        found = [hand for k, hand in enumerate(self.landmarks(image, roi) for roi in rois)
                 if hand.presence >= (MIN_PRESENCE if k < followed else NEW_PRESENCE)]
        for hand in sorted(found, key=lambda h: -h.presence):  # of two views of one hand, the surer
            if len(hands) < self.max_hands and not any(_same_hand(hand, h) for h in hands):
                hands.append(hand)
        self._rois = [roi_from_landmarks(h.points) for h in hands]
        return hands

    def _palm_rois(self, image: np.ndarray, faces: list[Box] | None) -> list[Roi]:
        rois = []
        for x0, y0, side in search_squares(image.shape, faces):
            self.palm_runs += 1
            for palm in self.palms(image if not faces else image[y0:y0 + side, x0:x0 + side]):
                palm.box = palm.box + np.array([x0, y0, x0, y0], np.float32)  # back to frame px
                palm.keypoints = palm.keypoints + np.array([x0, y0], np.float32)
                rois.append(roi_from_palm(palm))
        return rois


def hand_mask(shape: tuple[int, ...], hands: list[Hand], width: float = FINGER_WIDTH) -> np.ndarray:
    """(H, W) float32, 1 on the hands: the palm polygon filled and each finger a round-capped
    stroke `width` hand lengths wide along its joints."""
    import cv2

    mask = np.zeros(shape[:2], np.uint8)
    for hand in hands:
        xy = np.round(hand.points[:, :2] * 4).astype(np.int32)  # 2 fractional bits (shift=2)
        thickness = max(2, round(width * hand.length))
        cv2.fillConvexPoly(mask, cv2.convexHull(xy[PALM]), 255, lineType=cv2.LINE_AA, shift=2)
        cv2.polylines(mask, [xy[finger] for finger in FINGERS], False, 255, thickness=thickness,
                      lineType=cv2.LINE_AA, shift=2)
        # The palm polygon runs through the knuckles' centres: the stroke widens it to the skin edge.
        cv2.polylines(mask, [cv2.convexHull(xy[PALM])], True, 255, thickness=thickness, lineType=cv2.LINE_AA, shift=2)
    return mask.astype(np.float32) / 255.0
