"""The face analyzer: detector, landmark model and their settings."""

from __future__ import annotations

from typing import Literal

import dagster as dg
from pydantic import Field

from swapline.ops.faces import AnalyzerSettings, FaceAnalyzer


class FaceAnalyzerResource(dg.ConfigurableResource):
    """Face detection + 68-point landmarks; its settings are part of every face's data version."""

    backend: Literal["dlib", "fan", "auto"] = Field(default="dlib", description="Landmark backend; dlib runs offline.")
    detector: Literal["hog", "cnn"] = Field(default="hog", description="dlib detector: HOG (fast) or MMOD CNN.")
    upsample: int = Field(default=0, ge=0, le=3, description="Detector upsampling passes (finds smaller faces, slower).")
    detect_scale: float = Field(default=0.5, gt=0, le=2, description="Detect on a frame scaled by this; landmarks at full size.")

    def settings(self, face_size: int, min_face: int) -> AnalyzerSettings:
        return AnalyzerSettings(
            backend=self.backend,
            detector=self.detector,
            upsample=self.upsample,
            detect_scale=self.detect_scale,
            min_face=min_face,
            face_size=face_size,
        )

    def analyzer(self, face_size: int, min_face: int) -> FaceAnalyzer:
        return FaceAnalyzer(self.settings(face_size, min_face))
