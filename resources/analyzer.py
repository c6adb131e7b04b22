"""The face analyzer: detector + 68-point landmark model, configured by the project's
`extraction:` settings; this resource adds what depends on the machine (where FAN's weights are)."""

import dagster as dg
from pydantic import Field

from swapline.ops.faces import AnalyzerSettings, FaceAnalyzer
from swapline.project import Extraction


class FaceAnalyzerResource(dg.ConfigurableResource):
    """Builds the face analyzer; the settings that change results come from the project file,
    so they are part of the face assets' code version."""

    fan_weights_dir: str = Field(
        default="",
        description="Torch hub folder holding FAN's weights (checkpoints/2DFAN4-*.zip); empty: $TORCH_HOME/hub or ~/.cache/torch/hub.",
    )

    def settings(self, extraction: Extraction) -> AnalyzerSettings:
        return AnalyzerSettings(
            backend=extraction.backend,
            detector=extraction.detector,
            upsample=extraction.upsample,
            detect_scale=extraction.detect_scale,
            min_face=extraction.min_face,
            face_size=extraction.face_size,
        )

    def analyzer(self, extraction: Extraction, device: str = "cpu") -> FaceAnalyzer:
        return FaceAnalyzer(self.settings(extraction))
