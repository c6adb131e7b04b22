"""Conversion: swap the face in every frame of a video and blend it back, audio kept.

Per frame: detect + align (the extraction code), encode with the shared encoder and decode
with the other identity's decoder, colour-match inside the face mask, warp back with the
inverse alignment transform, feathered blend, visible 'synthetic' mark, H.264 encode.
Frames stream through (decode -> swap -> encode), so memory is bounded for any length.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from swapline.ops.faces import align_face, alignment_matrix, hull_mask, transform_points
from swapline.ops.media import iter_video, probe, write_video
from swapline.ops.provenance import draw_mark

logger = logging.getLogger(__name__)


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
    feather: int = 9
    color_match: str = "mean_std"
    crf: int = 20
    mark_position: str = "bottom_right"


def match_mean_std(swapped: np.ndarray, original: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Transfer the original face's Lab mean/std (inside the mask) onto the swapped face."""
    import cv2

    inside = mask > 0.5
    if inside.sum() < 16:
        return swapped
    src = cv2.cvtColor(swapped, cv2.COLOR_RGB2LAB).astype(np.float32)
    ref = cv2.cvtColor(original, cv2.COLOR_RGB2LAB).astype(np.float32)
    s_mean, s_std = src[inside].mean(0), src[inside].std(0) + 1e-3
    r_mean, r_std = ref[inside].mean(0), ref[inside].std(0) + 1e-3
    out = (src - s_mean) / s_std * r_std + r_mean
    return cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


class FrameSwapper:
    """Swaps the largest face of a frame with the model's `to_side` decoder."""

    def __init__(self, analyzer, model, to_side: str, device: str, options: ConvertOptions):
        self.analyzer, self.model, self.to_side, self.device, self.options = analyzer, model, to_side, device, options
        self.size = analyzer.settings.face_size

    def __call__(self, frame: np.ndarray) -> tuple[np.ndarray, bool]:
        import cv2

        from swapline.ops.train import swap_batch

        faces = self.analyzer.detect(frame)
        if not faces:
            return frame, False
        matrix = alignment_matrix(faces[0].landmarks, self.size, self.analyzer.settings.padding)  # (2, 3)
        crop = align_face(frame, matrix, self.size)  # (S, S, 3)
        swapped, _ = swap_batch(self.model, crop[None], self.to_side, self.device)  # (1, S, S, 3)
        mask = hull_mask(transform_points(faces[0].landmarks, matrix), self.size, self.options.feather)  # (S, S)
        face = swapped[0]
        if self.options.color_match == "mean_std":
            face = match_mean_std(face, crop, mask)
        h, w = frame.shape[:2]
        inverse = cv2.invertAffineTransform(matrix)
        face_full = cv2.warpAffine(face, inverse, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        mask_full = cv2.warpAffine(mask, inverse, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)[..., None]  # (H, W, 1)
        blended = frame.astype(np.float32) * (1 - mask_full) + face_full.astype(np.float32) * mask_full
        return np.clip(blended + 0.5, 0, 255).astype(np.uint8), True


def convert_video(video: Path, out_path: Path, swapper: Callable[[np.ndarray], tuple[np.ndarray, bool]], *,
                  options: ConvertOptions, tags: dict[str, str],
                  progress: Callable[[int], None] | None = None) -> dict:
    """Write the converted video to `out_path` (atomically) and return counts and timing."""
    info = probe(video)
    counts = {"frames": 0, "swapped": 0}
    start = time.monotonic()

    def frames() -> Iterator[np.ndarray]:
        for _, _, frame in iter_video(video):
            out, swapped = swapper(frame)
            counts["frames"] += 1
            counts["swapped"] += swapped
            if progress:
                progress(counts["frames"])
            yield draw_mark(out, options.mark_position)  # the decoded array is ours: marking in place is safe

    written = write_video(frames(), out_path, info.fps, audio_from=video, metadata=tags, crf=options.crf)
    seconds = time.monotonic() - start
    return {**counts, "audio": written["audio"], "seconds": round(seconds, 2),
            "fps": round(counts["frames"] / max(seconds, 1e-6), 2), "source_frames": info.frames}
