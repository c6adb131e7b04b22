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
        description="Torch hub folder holding FAN's weights (checkpoints/2DFAN4-11f355bf06.pth.tar); empty: $TORCH_HOME/hub or ~/.cache/torch/hub.",
    )

    def settings(self, extraction: Extraction) -> AnalyzerSettings:
        return AnalyzerSettings.of(extraction)

    def analyzer(self, extraction: Extraction, device: str = "cpu") -> FaceAnalyzer:
        """`device` (a TorchDevice's resolve()) runs FAN; the weights folder and the device are
        kept out of the settings, so neither changes the faces' version."""
        return FaceAnalyzer(self.settings(extraction), fan_weights_dir=self.fan_weights_dir, device=device)
