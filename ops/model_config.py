"""The model's configuration (resolution and preset widths), without torch: the project file
and the code location read it, and neither should load torch to do so (ops/model.py builds the
networks from it)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

SIDES = ("a", "b")
RESOLUTIONS = (64, 128, 256)
BASE_RESOLUTION = 64  # the resolution the preset widths below are written for
MIN_CHANNELS = 16


@dataclass(frozen=True)
class Widths:
    encoder: tuple[int, ...]  # strided 5x5 convs, 64 -> 4 px
    dense: int  # the bottleneck vector
    bottleneck: int  # channels of the 4x4 map the second dense layer is reshaped to
    upscale: int  # channels of the encoder's 8x8 output (first pixel-shuffle)
    decoder: tuple[int, ...]  # pixel-shuffle upscales, 8 -> 64 px


PRESETS: dict[str, Widths] = {
    # Small enough to train at ~15 steps/s (batch 16 per side) on two CPU cores: demos, tests.
    "lite": Widths((16, 32, 64, 128), 256, 128, 64, (48, 32, 16)),
    # The 2018 "Original" model's layer sizes.
    "original": Widths((128, 256, 512, 1024), 1024, 1024, 512, (256, 128, 64)),
    # Wider everywhere; meant for a GPU.
    "large": Widths((192, 384, 768, 1536), 1536, 1024, 768, (384, 192, 96)),
}


@dataclass(frozen=True)
class ModelConfig:
    resolution: int = 64  # 64 | 128 | 256
    preset: str = "lite"  # lite | original | large

    def __post_init__(self) -> None:
        if self.resolution not in RESOLUTIONS:
            raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {self.resolution}")
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {self.preset!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def extra_stages(self) -> int:
        """Stages added at each end for resolutions above 64 px (one per doubling)."""
        return int(math.log2(self.resolution // BASE_RESOLUTION))

    def encoder_channels(self) -> tuple[int, ...]:
        first = PRESETS[self.preset].encoder[0]
        extra = tuple(max(first >> k, MIN_CHANNELS) for k in range(self.extra_stages, 0, -1))
        return extra + PRESETS[self.preset].encoder

    def decoder_channels(self) -> tuple[int, ...]:
        last = PRESETS[self.preset].decoder[-1]
        extra = tuple(max(last >> k, MIN_CHANNELS) for k in range(1, self.extra_stages + 1))
        return PRESETS[self.preset].decoder + extra
