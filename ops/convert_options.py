"""What a conversion is asked to do, and the consent gate: light (no media or torch imports),
so the code location loads fast."""

from __future__ import annotations

from dataclasses import dataclass


class ConsentError(PermissionError):
    """An identity without declared consent cannot be rendered or converted."""


def require_consent(consents: dict[str, object | None]) -> None:
    """Refuse before doing any work when any identity involved lacks consent."""
    missing = [name for name, consent in consents.items() if consent is None]
    if missing:
        raise ConsentError(
            f"Refusing to convert: no consent declared for {', '.join(missing)}. Add consent (given_by, date, "
            "evidence) for every identity in the project file."
        )


@dataclass(frozen=True)
class ConvertOptions:
    mask: str = "hull"  # hull | learned | intersection
    erosion: int = 0
    feather: int = 9
    color_match: str = "mean_std"  # none | mean_std | histogram | seamless
    crf: int = 20
    mark_position: str = "bottom_right"
    smooth: bool = True  # One Euro landmarks + smoothed colour statistics; False = per-frame, as the rivals
    max_gap: int = 3  # missed detections bridged by interpolation
    batch_size: int = 16  # faces per model call
    start: float | None = None  # seconds; outside [start, end) frames pass through unchanged
    end: float | None = None
    side_by_side: bool = False  # output original | swapped next to each other
    identity_distance: float = 0.6  # max embedding distance to the replaced person's faces
    workers: int = 2  # detection threads

    def blend(self):
        from swapline.ops.blend import BlendOptions

        return BlendOptions(mask=self.mask, erosion=self.erosion, feather=self.feather, color_match=self.color_match)

    def in_range(self, t: float) -> bool:
        return (self.start is None or t >= self.start) and (self.end is None or t < self.end)
