"""What a conversion is asked to do: light (no media or torch imports), so the code location
loads fast. The consent gate lives in ops/consent.py."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SPEED_ONLY = ("batch_size", "workers")


class ConvertOptions(BaseModel):
    """What a conversion is asked to do: the project file's `conversions.<name>.options`, defined
    here once (the project file embeds this model; the converter reads it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mask: Literal["hull", "learned", "intersection", "occlusion"] = Field(
        default="hull", description="Blend mask: the landmark hull, the model's learned mask, their intersection, or "
        "the hull minus what covers the face (hands, found by MediaPipe Hands: its models are fetched at set-up by "
        "`python -m swapline.face_models`), held over a few frames so it does not flicker. With side_by_side the "
        "original half then shows the mask used (green) and the cut (red).")
    face_parser: bool = Field(default=False, description="With mask 'occlusion', also cut what a user-placed face "
                              "parser (bisenet_resnet_34.onnx or xseg.onnx in the face models folder; never downloaded) "
                              "says is not face: a microphone, food, hair over the face.")
    erosion: int = Field(default=0, ge=-32, le=32, description="Shrink (+) or grow (-) the mask by this many face px.")
    feather: int = Field(default=9, ge=0, le=64, description="Width of the mask's soft edge, in face px.")
    color_match: Literal["none", "mean_std", "histogram", "seamless"] = Field(
        default="mean_std", description="Colour transfer: Lab mean/std (smoothed over time), histogram match, or "
        "Poisson seamless clone.")
    crf: int = Field(default=20, ge=0, le=51, description="H.264 quality (lower is better).")
    mark_position: Literal["bottom_right", "bottom_left", "top_right", "top_left"] = Field(
        default="bottom_right", description="Where the visible 'synthetic' mark goes (it cannot be turned off)."
    )
    smooth: bool = Field(default=True, description="Smooth landmarks (One Euro) and colour over time against jitter "
                         "and flicker; false swaps each frame on its own, as the 2018 tools did.")
    max_gap: int = Field(default=3, ge=0, le=30, description="Missed detections in a row bridged by interpolation.")
    batch_size: int = Field(default=16, ge=1, le=1024, description="Faces per model call.")
    start: float | None = Field(default=None, ge=0, description="Swap from this second on (earlier frames pass through).")
    end: float | None = Field(default=None, gt=0, description="Swap until this second (later frames pass through).")
    side_by_side: bool = Field(default=False, description="Preview mode: the original and the swap next to each other "
                               "(with mask 'occlusion', the original tinted with the mask used).")
    identity_distance: float = Field(default=0.6, gt=0, le=2, description="Only faces within this embedding distance "
                                     "of the replaced person's faceset are swapped; other people stay untouched.")
    workers: int = Field(default=2, ge=1, le=64, description="Face detection threads of a converter that detects as it renders (the converted_video asset does not: target_faces found every face once); speed only.")

    @model_validator(mode="after")
    def _range(self) -> "ConvertOptions":
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be after start ({self.start})")
        return self

    def output_settings(self) -> dict:
        """The options that change the rendered video: the conversion's code version. Batch size
        and threads change only speed, so changing them leaves the video fresh."""
        settings = {k: v for k, v in self.model_dump(mode="json").items() if k not in SPEED_ONLY}
        if not self.face_parser:  # added later: left out at its default, so existing conversions stay fresh
            settings.pop("face_parser")
        return settings

    def occluders(self) -> tuple[str, ...]:
        """What `mask: occlusion` cuts (ops/occlusion.py registries)."""
        return ("hands", "face_parsing") if self.face_parser else ("hands",)

    def blend(self):
        from swapline.ops.blend import BlendOptions

        return BlendOptions(mask=self.mask, erosion=self.erosion, feather=self.feather, color_match=self.color_match)

    def in_range(self, t: float) -> bool:
        return (self.start is None or t >= self.start) and (self.end is None or t < self.end)
