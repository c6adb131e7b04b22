"""Face box detectors, by name: the `extraction.detector` setting (ops.faces.AnalyzerSettings).

Each takes an RGB uint8 image, the upsampling passes (dlib's) and the face-models folder, and
returns [((x0, y0, x1, y1) px, right/bottom exclusive, score)]. dlib's detectors keep their
image pyramid in the object, so they run under LOCK, one call at a time per process; an
onnxruntime session is safe to call from several threads.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any, Callable

import numpy as np

LOCK = threading.Lock()


@lru_cache(maxsize=None)
def _hog_detector() -> Any:
    import dlib

    return dlib.get_frontal_face_detector()


@lru_cache(maxsize=None)
def _cnn_detector() -> Any:
    import dlib
    import face_recognition_models

    return dlib.cnn_face_detection_model_v1(face_recognition_models.cnn_face_detector_model_location())


def _hog(image: np.ndarray, upsample: int, _models_dir: str) -> list:
    with LOCK:
        rects, scores, _ = _hog_detector().run(image, upsample, 0.0)
    return [((r.left(), r.top(), r.right() + 1, r.bottom() + 1), float(s)) for r, s in zip(rects, scores)]


def _mmod(image: np.ndarray, upsample: int, _models_dir: str) -> list:
    with LOCK:
        found = _cnn_detector()(image, upsample)
    return [((d.rect.left(), d.rect.top(), d.rect.right() + 1, d.rect.bottom() + 1), float(d.confidence)) for d in found]


def _scrfd(image: np.ndarray, _upsample: int, models_dir: str) -> list:
    return [(tuple(float(v) for v in d.box), d.score) for d in _scrfd_detector(models_dir)(image)]


@lru_cache(maxsize=None)
def _scrfd_detector(models_dir: str) -> Any:
    from swapline.ops.scrfd import ScrfdDetector

    return ScrfdDetector(models_dir or None)


# detector name -> (image, upsample, models folder) -> [((x0, y0, x1, y1) px, right/bottom exclusive, score)].
# scrfd: a user-placed ONNX file (ops/onnx_models.py), never downloaded.
DETECTORS: dict[str, Callable[[np.ndarray, int, str], list]] = {"hog": _hog, "cnn": _mmod, "scrfd": _scrfd}
