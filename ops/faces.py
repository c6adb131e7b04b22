"""Face detection, 68-point landmarks, identity embeddings and per-face attributes.

Faces are found by dlib (HOG, or MMOD on request); their 68 landmarks come from dlib's shape
predictor or from FAN (`swapline.ops.fan`: more precise on turned and expressive faces), in
the same layout. Backend `mediapipe` (`swapline.ops.facemesh`) finds faces with BlazeFace and
takes the 68 from FaceMesh's 468 (kept as `DetectedFace.dense`); a frame where BlazeFace finds
no face falls back to the dlib detector, with FaceMesh landmarks on its boxes. The alignment
geometry (template, similarity fit, warping, hull mask) lives in `swapline.ops.alignment` and
is re-exported here, so callers need only this module.

dlib and OpenCV are imported inside functions: this module is imported when Dagster loads
the code location, and the dlib models (~100 MB) load once per process on first use.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from swapline.ops import detectors
from swapline.ops.alignment import (  # noqa: F401  (re-exported API)
    ALIGN_POINTS,
    TEMPLATE_68,
    align_face,
    alignment_matrix,
    hull_mask,
    invert_matrix,
    matrix_scale,
    template_points,
    transform_points,
)

logger = logging.getLogger(__name__)

BACKENDS = ("dlib", "fan", "mediapipe", "auto")
DETECTORS = tuple(detectors.DETECTORS)


class AnalyzerSettings(BaseModel):
    """Everything that changes which faces are found and how they are cropped; its `as_dict()`
    goes into the face assets' version hash. Defined once: the project file's `extraction:`
    section extends this model (swapline/project.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["dlib", "fan", "mediapipe", "auto"] = Field(default="auto", description="Landmarks: dlib (offline), FAN (needs its weights), mediapipe (BlazeFace + FaceMesh, needs its set-up files), auto = FAN when its weights are present, else mediapipe when its files are, else dlib.")
    detector: Literal["hog", "cnn", "scrfd"] = Field(default="hog", description="Box detector of the dlib and FAN backends (mediapipe's fallback): dlib HOG (fast, frontal), dlib MMOD CNN (slower, more poses), or SCRFD (a user-placed scrfd_10g_bnkps.onnx, run by onnxruntime; never downloaded).")
    upsample: int = Field(default=0, ge=0, le=3, description="Detector upsampling passes (finds smaller faces, ~4x slower each).")
    detect_scale: float = Field(default=0.5, gt=0, le=1, description="Detect on the frame scaled by this; landmarks at full size.")
    min_face: int = Field(default=40, ge=8, description="Faces narrower than this many source px are dropped (and counted).")
    face_size: int = Field(default=256, ge=64, le=1024, description="Aligned face crop size in pixels.")
    padding: float = Field(default=0.3, ge=0, le=1, description="Margin around the face template's unit square, as a fraction of it.")
    flip_input: bool = Field(default=False, description="FAN only: also run the mirrored face and average (2x the cost, steadier).")

    def as_dict(self) -> dict[str, Any]:
        # Only what changes results: where the weights are and which device runs them are
        # FaceAnalyzer arguments, not settings, so moving either keeps the faces' version.
        return self.model_dump(mode="json")

    @classmethod
    def of(cls, settings: BaseModel) -> "AnalyzerSettings":
        """The analyzer's part of a larger settings model (the project's `extraction:`)."""
        return cls(**settings.model_dump(include=set(cls.model_fields)))


@dataclass
class DetectedFace:
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 in source px, clipped to the frame
    landmarks: np.ndarray  # (68, 2) float32, source px
    score: float  # HOG SVM margin, MMOD confidence or BlazeFace probability; higher is surer
    dense: np.ndarray | None = None  # mediapipe: the (468, 3) FaceMesh points, source px


@lru_cache(maxsize=None)
def _shape_predictor() -> Any:
    import dlib
    import face_recognition_models

    return dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())


@lru_cache(maxsize=None)
def _face_encoder() -> Any:
    import dlib
    import face_recognition_models

    return dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location())


def as_rgb8(image: np.ndarray) -> np.ndarray:
    """A C-contiguous (H, W, 3) uint8 view/copy: dlib rejects gray, RGBA and strided arrays."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image, got shape {image.shape}")
    return np.ascontiguousarray(image)


class FaceAnalyzer:
    """Finds faces and their 68 landmarks, and embeds them for identity matching.

    `fan_weights_dir` (a torch hub folder; empty: torch's own) and `device` matter only to the
    FAN backend; `resolved_backend` says which landmark model "auto" settled on."""

    def __init__(self, settings: AnalyzerSettings | None = None, *, fan_weights_dir: str = "",
                 device: str = "cpu", face_models_dir: str = "") -> None:
        settings = settings or AnalyzerSettings()
        if settings.backend not in BACKENDS:
            raise ValueError(f"unknown face backend {settings.backend!r}; expected one of {BACKENDS}")
        if settings.detector not in DETECTORS:
            raise ValueError(f"unknown face detector {settings.detector!r}; expected one of {DETECTORS}")
        if not 0.0 < settings.detect_scale <= 1.0:
            raise ValueError(f"detect_scale must be in (0, 1], got {settings.detect_scale}")
        self.settings, self.face_models_dir = settings, face_models_dir
        if settings.detector == "scrfd":  # a missing file is an error now, naming where it goes
            from swapline.ops import onnx_models

            onnx_models.model_path("scrfd", face_models_dir or None)
        self._fan = None
        self._mediapipe = None
        if settings.backend in ("fan", "auto"):
            from swapline.ops import fan

            try:
                self._fan = fan.FanLandmarker(fan_weights_dir, device=device, flip_input=settings.flip_input)
            except fan.FanWeightsMissing as exc:
                if settings.backend == "fan":
                    raise
                logger.info("face backend 'auto': no FAN. %s", exc)
        if settings.backend == "mediapipe" or (settings.backend == "auto" and self._fan is None):
            from swapline.ops import facemesh

            self._mediapipe = facemesh.backend(face_models_dir, required=settings.backend == "mediapipe")
        self.resolved_backend = "fan" if self._fan is not None else "mediapipe" if self._mediapipe is not None else "dlib"

    def describe(self) -> dict[str, Any]:
        """The settings plus the landmark model actually used, for manifests and metadata."""
        model = (self._fan.weights.name if self._fan is not None else "mediapipe face_detection_full_range + face_landmark (468 -> 68)"
                 if self._mediapipe is not None else "dlib shape_predictor_68_face_landmarks")
        described = {**self.settings.as_dict(), "resolved_backend": self.resolved_backend, "landmark_model": model}
        if self._mediapipe is not None:  # what decides which faces it finds (the face cache's key follows it)
            from swapline.ops import blazeface

            described["detector_version"] = {"min_score": blazeface.MIN_SCORE, "min_input_face": blazeface.MIN_INPUT_FACE}
        return described

    def detect(self, image_rgb: np.ndarray) -> list[DetectedFace]:
        """Faces largest first; those narrower than `min_face` source px are left out."""
        return self.detect_with_stats(image_rgb)[0]

    def detect_with_stats(self, image_rgb: np.ndarray) -> tuple[list[DetectedFace], int]:
        """(faces largest first, number of faces dropped for being smaller than min_face)."""
        return self.detect_many([image_rgb])[0]

    def detect_many(self, images_rgb: list[np.ndarray]) -> list[tuple[list[DetectedFace], int]]:
        """`detect_with_stats` of each image; FAN runs once over the faces of all of them, so
        a caller with a GPU can hand over several frames at a time."""
        images = [as_rgb8(image) for image in images_rgb]
        boxes, scores, n_small, meshes = [], [], [], []
        for image in images:
            if self._mediapipe is not None:
                # A frame where BlazeFace finds nothing is searched again by the dlib detector.
                found, image_meshes = self._mediapipe.detect(image, fallback=self._boxes, min_face=self.settings.min_face)
            else:
                found, image_meshes = self._boxes(image), []
            kept = [i for i, (box, _) in enumerate(found) if min(box[2] - box[0], box[3] - box[1]) >= self.settings.min_face]
            boxes.append([found[i][0] for i in kept])
            scores.append([found[i][1] for i in kept])
            meshes.append([image_meshes[i] for i in kept] if image_meshes else [None] * len(kept))
            n_small.append(len(found) - len(kept))
        if self._mediapipe is not None:
            points = [[mesh.landmarks68() for mesh in image_meshes] for image_meshes in meshes]
        elif self._fan is not None:
            points = self._fan.landmarks_batch(images, boxes)
        else:
            points = [self._dlib_landmarks(image, image_boxes) for image, image_boxes in zip(images, boxes)]
        results = []
        for image, image_boxes, image_scores, image_points, image_meshes, small in zip(images, boxes, scores, points, meshes, n_small):
            height, width = image.shape[:2]
            faces = [DetectedFace(bbox=(max(0, round(x0)), max(0, round(y0)), min(width, round(x1)), min(height, round(y1))),
                                  landmarks=np.asarray(p, dtype=np.float32), score=float(score),
                                  dense=None if mesh is None else mesh.points)
                     for (x0, y0, x1, y1), score, p, mesh in zip(image_boxes, image_scores, image_points, image_meshes)]
            faces.sort(key=lambda f: (f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]), reverse=True)
            results.append((faces, small))
        return results

    @staticmethod
    def _dlib_landmarks(image: np.ndarray, boxes: list[tuple[float, float, float, float]]) -> list[np.ndarray]:
        import dlib

        predictor = _shape_predictor()
        points = []
        for x0, y0, x1, y1 in boxes:
            # Landmarks come from the full-resolution frame: the downscale only speeds up
            # the sliding-window search, it would cost landmark precision.
            shape = predictor(image, dlib.rectangle(round(x0), round(y0), round(x1), round(y1)))
            points.append(np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32))
        return points

    def _boxes(self, image: np.ndarray) -> list[tuple[tuple[float, float, float, float], float]]:
        """Detector boxes in source px (unclipped, right/bottom exclusive) with their scores."""
        import cv2

        scale = self.settings.detect_scale
        small = image
        if scale < 1.0:
            size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
            small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            # Map back with the exact ratio the rounding produced, not the nominal scale.
            sx, sy = image.shape[1] / size[0], image.shape[0] / size[1]
        else:
            sx = sy = 1.0
        # Threads extracting a refresh's few photos share the detector (dlib's take a lock in
        # ops/detectors.py); landmarks and the rest run in parallel.
        found = detectors.DETECTORS[self.settings.detector](small, self.settings.upsample, self.face_models_dir)
        return [((x0 * sx, y0 * sy, x1 * sx, y1 * sy), score) for (x0, y0, x1, y1), score in found]

    def embed(self, image_rgb: np.ndarray, face: DetectedFace) -> np.ndarray:
        """128-d dlib ResNet descriptor (same person: Euclidean distance < ~0.6)."""
        import dlib

        x0, y0, x1, y1 = face.bbox
        points = [dlib.point(round(float(x)), round(float(y))) for x, y in face.landmarks]
        shape = dlib.full_object_detection(dlib.rectangle(x0, y0, x1, y1), points)
        with detectors.LOCK:  # one dlib call at a time: a dlib detector may run in another thread (target analysis)
            descriptor = _face_encoder().compute_face_descriptor(as_rgb8(image_rgb), shape, 0)
        return np.asarray(descriptor, dtype=np.float32)


def embedding_distance(embedding: np.ndarray, references: np.ndarray) -> float:
    """Smallest Euclidean distance from one embedding to any of (K, 128) references."""
    references = np.asarray(references, dtype=np.float32).reshape(-1, 128)
    if len(references) == 0:
        return math.nan
    return float(np.linalg.norm(references - embedding[None, :], axis=1).min())


def _gray(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        return image.astype(np.float64)
    # ITU-R BT.601 luma, the weights JPEG and most "brightness" measures use.
    return image[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def sharpness(gray_crop: np.ndarray) -> float:
    """Variance of the Laplacian (higher is sharper); RGB input is converted to luma."""
    import cv2

    return float(cv2.Laplacian(_gray(gray_crop), cv2.CV_64F).var())


def brightness_contrast(crop: np.ndarray) -> tuple[float, float]:
    """(mean, standard deviation) of luma in 0..255."""
    luma = _gray(crop)
    return float(luma.mean()), float(luma.std())


# A generic 3-D head (mm-ish units) for the six landmarks used by head_pose, in camera-like
# axes: x right, y down, z away from the camera, so a frontal face has rotation identity.
_POSE_POINTS = (30, 8, 36, 45, 48, 54)  # nose tip, chin, eye outer corners, mouth corners
_POSE_MODEL = np.array(
    [
        (0.0, 0.0, 0.0),
        (0.0, 330.0, 65.0),
        (-225.0, -170.0, 135.0),
        (225.0, -170.0, 135.0),
        (-150.0, 150.0, 125.0),
        (150.0, 150.0, 125.0),
    ]
)


def pose_angles(rotation: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of a head rotation matrix in the `_POSE_MODEL` axes."""
    nose = -rotation[:, 2]  # the direction the face points; (0, 0, -1) faces the camera
    yaw = math.degrees(math.atan2(nose[0], -nose[2]))
    pitch = math.degrees(math.atan2(-nose[1], math.hypot(nose[0], nose[2])))
    across = rotation[:, 0]  # the face's left-to-right axis as the camera sees it
    roll = math.degrees(math.atan2(across[1], across[0]))
    return yaw, pitch, roll


def head_pose(landmarks: np.ndarray, image_shape: tuple[int, ...]) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from cv2.solvePnP of six landmarks against a generic
    3-D head, with a pinhole camera of focal length = image width (no calibration known).

    Signs, as seen in the image: yaw > 0 when the nose points toward the image's right
    (the subject turns to their own left); pitch > 0 when the face tilts up; roll > 0 when
    the face is rotated clockwise on screen (its eye line goes down to the right). A
    frontal upright face is (0, 0, 0). Rough: good to ~10 degrees, enough to bin poses."""
    import cv2

    landmarks = np.asarray(landmarks, dtype=np.float64).reshape(68, 2)
    image_points = landmarks[list(_POSE_POINTS)]
    height, width = image_shape[:2]
    focal = float(width)
    camera = np.array([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])
    # Start from "frontal, at the distance its eye span implies": the solver otherwise can
    # settle on the mirrored solution behind the camera for near-frontal faces.
    eye_span = max(float(np.linalg.norm(landmarks[45] - landmarks[36])), 1.0)
    depth = focal * 450.0 / eye_span
    nose = landmarks[30]
    tvec = np.array([[(nose[0] - width / 2.0) * depth / focal], [(nose[1] - height / 2.0) * depth / focal], [depth]])
    rvec = np.zeros((3, 1))
    ok, rvec, tvec = cv2.solvePnP(
        _POSE_MODEL, image_points, camera, None, rvec, tvec, True, flags=cv2.SOLVEPNP_ITERATIVE
    )
    if not ok:
        return math.nan, math.nan, math.nan
    rotation, _ = cv2.Rodrigues(rvec)
    return pose_angles(rotation)
