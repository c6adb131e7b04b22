"""MediaPipe FaceMesh: 468 face landmarks (`face_landmark.tflite`, Apache-2.0), and the 68 of them
in dlib's order so alignment, pose and masks work unchanged.

The network sees a 192x192 square crop rotated upright by the eye line: MediaPipe's ROI logic
(`face_detection_front_detection_to_roi`: the detector box centre, 1.5x its long side, rotated
by the keypoint-0 -> keypoint-1 eye line). A box without keypoints (another detector's) gets an
unrotated crop first, then one more pass from the landmarks it found (MediaPipe's tracking ROI).

OpenCV is imported inside functions (this module is imported with the code location).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from swapline.ops import tflite

logger = logging.getLogger(__name__)

NUM_POINTS = 468
Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in source px
ROI_SCALE = 1.5
# FaceMesh's face-present confidence below which a BlazeFace box is dropped: MediaPipe's own
# cut-off. Low-scoring BlazeFace boxes on faceless frames (0.5-0.67) get a presence near 0.
MIN_PRESENCE = 0.5
# Mesh points on the outer eye corners (image-left eye first): MediaPipe's tracking ROI uses
# them for the rotation, as we do for a box that came without detector keypoints.
EYE_CORNERS = (33, 263)

# dlib's 68-point layout picked from the mesh. dlib marks the visible contour and its own eye
# and lip corners, which are not always the mesh's canonical vertices (its face oval runs round
# the 3-D head, outside a frontal jaw line): each dlib point takes the vertex that lies closest
# to it on average over 28 frontal frames of three demo subjects, kept mirror-symmetric
# (point i and its mirror take mirrored vertices). 0.059 -> 0.041 inter-ocular mean error.
MESH_TO_68 = np.array([
    127, 234, 177, 215, 172, 136, 149, 148, 152, 377, 378, 365, 397, 435, 401, 454, 356,  # jaw 0-16
    70, 63, 105, 66, 107,  # image-left brow, outer to inner 17-21
    336, 296, 334, 293, 300,  # image-right brow, inner to outer 22-26
    168, 197, 5, 4,  # nose bridge to tip 27-30
    75, 97, 2, 326, 305,  # nostrils, left to right 31-35
    7, 159, 158, 155, 153, 144,  # image-left eye: outer corner, top, inner corner, bottom 36-41
    382, 385, 386, 249, 373, 380,  # image-right eye: inner corner, top, outer corner, bottom 42-47
    76, 39, 37, 0, 267, 269, 306,  # outer lip, upper, corner to corner 48-54
    405, 314, 17, 84, 181,  # outer lip, lower, right to left 55-59
    78, 82, 13, 312, 308,  # inner lip, upper 60-64
    317, 14, 87,  # inner lip, lower, right to left 65-67
], dtype=np.int64)


@dataclass
class Roi:
    centre: tuple[float, float]  # source px
    size: float  # side of the square, source px
    angle: float  # radians; the crop's x axis is the source direction (cos, sin) of this


@dataclass
class Mesh:
    points: np.ndarray  # (468, 3) float32: x, y in source px, z (depth) in the same px scale
    presence: float  # the model's face-present confidence, 0..1

    def landmarks68(self) -> np.ndarray:
        return self.points[MESH_TO_68, :2].astype(np.float32)


def roi_from_detection(box: Box | np.ndarray, eyes: np.ndarray | None) -> Roi:
    """Square ROI around a box (x0, y0, x1, y1), turned by the eye line when `eyes` ((2, 2):
    the image-left eye, then the other) are given."""
    x0, y0, x1, y1 = (float(v) for v in box)
    angle = 0.0
    if eyes is not None:
        (ax, ay), (bx, by) = eyes
        angle = math.atan2(by - ay, bx - ax)
    return Roi(((x0 + x1) / 2.0, (y0 + y1) / 2.0), ROI_SCALE * max(x1 - x0, y1 - y0), angle)


def roi_from_mesh(points: np.ndarray) -> Roi:
    """MediaPipe's tracking ROI: the landmarks' upright bounding box, turned by the outer eye
    corners. Steadier than a detector box, so it also refines a first, rough crop."""
    xy = np.asarray(points)[:, :2]
    eyes = xy[list(EYE_CORNERS)]
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    return roi_from_detection(np.concatenate([lo, hi]), eyes)


def roi_matrix(roi: Roi, size: int) -> np.ndarray:
    """2x3 affine from source px to crop px (crop centre = ROI centre, crop x along the angle)."""
    cos, sin = math.cos(roi.angle), math.sin(roi.angle)
    k = size / roi.size
    cx, cy = roi.centre
    rotation = k * np.array([[cos, sin], [-sin, cos]])
    offset = np.array([size / 2.0, size / 2.0]) - rotation @ np.array([cx, cy])
    return np.hstack([rotation, offset[:, None]])


class FaceMesh:
    """468 landmarks of the face in an ROI of an RGB uint8 frame."""

    def __init__(self, models_dir: str = "") -> None:
        self.model = tflite.load_model(str(tflite.model_path(tflite.LANDMARK_FILE, models_dir or None)))
        self.size = self.model.input_shape[1]

    def __call__(self, image: np.ndarray, roi: Roi) -> Mesh:
        import cv2

        matrix = roi_matrix(roi, self.size)
        # Replicate the border, as MediaPipe's ImageToTensor does: a face at the frame's edge
        # then sees smeared skin, not a black bar the network never saw in training.
        crop = cv2.warpAffine(image, matrix, (self.size, self.size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
        outputs = self.model((crop.astype(np.float32) / 255.0)[None])
        raw = next(o for o in outputs if o.size == NUM_POINTS * 3).reshape(NUM_POINTS, 3)
        flag = next(o for o in outputs if o.size == 1)
        inverse = cv2.invertAffineTransform(matrix)
        points = np.empty((NUM_POINTS, 3), np.float32)
        points[:, :2] = raw[:, :2] @ inverse[:, :2].T + inverse[:, 2]
        points[:, 2] = raw[:, 2] * roi.size / self.size
        presence = 1.0 / (1.0 + math.exp(-float(np.clip(flag.ravel()[0], -80.0, 80.0))))
        return Mesh(points, presence)

    def refined(self, image: np.ndarray, roi: Roi, passes: int = 1) -> Mesh:
        """The mesh after `passes` more crops, each from the previous landmarks' ROI."""
        mesh = self(image, roi)
        for _ in range(passes):
            mesh = self(image, roi_from_mesh(mesh.points))
        return mesh


class MediaPipeFaces:
    """BlazeFace boxes, then FaceMesh on each: the `mediapipe` backend of ops.faces.
    FaceModelsMissing (from ops.tflite) when either model file is not in `models_dir`."""

    def __init__(self, models_dir: str = "") -> None:
        from swapline.ops.blazeface import BlazeFace

        self.detector = BlazeFace(models_dir)
        self.mesh = FaceMesh(models_dir)

    def detect(self, image: np.ndarray, fallback: Callable[[np.ndarray], list[tuple[Box, float]]] | None = None,
               min_face: float | None = None) -> tuple[list[tuple[Box, float]], list[Mesh]]:
        """([(box x0 y0 x1 y1 in source px, score)], [mesh]) per face: BlazeFace's boxes (down
        to `min_face` px: blazeface.windows) that FaceMesh confirms. When none is left,
        `fallback` (another detector) is asked for boxes, and FaceMesh runs on those (kept
        whatever its presence: that detector decided)."""
        found = []
        for det in self.detector(image, min_face):
            box = tuple(float(v) for v in det.box)
            mesh = self.mesh(image, roi_from_detection(box, det.keypoints[[0, 1]]))
            if mesh.presence >= MIN_PRESENCE:
                found.append(((box, det.score), mesh))
        if found:
            return [f[0] for f in found], [f[1] for f in found]
        boxes = fallback(image) if fallback is not None else []
        # No eye keypoints: an upright crop, then one refining pass from the landmarks, so a
        # tilted face is still cropped upright.
        return boxes, [self.mesh.refined(image, roi_from_detection(box, None)) for box, _ in boxes]


def backend(models_dir: str = "", required: bool = True) -> MediaPipeFaces | None:
    """The `mediapipe` backend; for 'auto' (not `required`) None when its files are not set up."""
    if not required and not tflite.models_present(models_dir or None):
        logger.info("face backend 'auto': using dlib. MediaPipe face models not in %s (%s fetches them)",
                    tflite.models_dir(models_dir or None), tflite.SETUP_COMMAND)
        return None
    return MediaPipeFaces(models_dir)
