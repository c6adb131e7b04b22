"""What covers a face, for `mask: occlusion`: the face region minus its occluders.

* `OCCLUDERS`: name -> factory; a factory takes the models folder and returns a function from
  an RGB frame (H, W, 3) uint8 and its faces' boxes to an occluder mask (H, W) float32 in 0..1,
  frame px (the boxes say where to look: only what covers a face matters). Only
  "hands" (MediaPipe Hands, ops.hands) ships. `CROP_OCCLUDERS` is the same per face crop:
  "face_parsing", a user-supplied face parser (no face-parsing weights come with any package
  set-up may fetch; `face_parser: true` in the conversion's options).
* `Occlusion`: the converter's per-video helper: the union of the occluders on a frame, warped
  into each face's crop, held over time per face track (`OccluderSmoother`).
* `cut_occluder`: how `blend.face_mask` subtracts one before feathering.
* `overlay`: the mask used, drawn over a frame for inspection (side_by_side previews).

Only numpy at module level; OpenCV and the models load inside functions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

# (RGB frame (H, W, 3) uint8, the faces' boxes x0 y0 x1 y1 in frame px) -> (H, W) float32 0..1
FrameOccluder = Callable[[np.ndarray, list], np.ndarray]
CropOccluder = Callable[[np.ndarray], np.ndarray]  # a face's aligned crop (S, S, 3) uint8 -> (S, S) float32 0..1
HOLD_S = 0.1  # an occluder pixel stays fully cut this long after it was last seen ...
FADE_S = 0.15  # ... then fades out over this long (the change per frame stays bounded)
FORGET_S = 2.0  # a track unseen this long is dropped (it has ended)


class _Hands:
    """The "hands" occluder: MediaPipe Hands followed from frame to frame (`reset` after a jump)."""

    def __init__(self, models_dir: str) -> None:
        from swapline.ops.hands import HandTracker

        self.tracker = HandTracker(models_dir)
        self.reset = self.tracker.reset

    def __call__(self, rgb: np.ndarray, faces: list | None) -> np.ndarray:
        from swapline.ops.hands import hand_mask

        return hand_mask(rgb.shape, self.tracker(rgb, faces))


def _hands(models_dir: str) -> FrameOccluder:
    return _Hands(models_dir)


# Occluders found on the whole frame, by name; every occluder asked for is unioned.
OCCLUDERS: dict[str, Callable[[str], FrameOccluder]] = {
    "hands": _hands,
}
PARSERS = ("bisenet", "xseg")  # ops/onnx_models.py names, in order of preference


def _face_parsing(models_dir: str) -> CropOccluder:
    """Whatever a user-placed face parser (BiSeNet, else XSeg) says is not visible face: a
    microphone, food, hair over the face. Neither placed: OnnxModelMissing names the file."""
    from swapline.ops import onnx_models
    from swapline.ops.face_parsing import FaceParser

    placed = onnx_models.available(models_dir or None)
    parser = FaceParser(models_dir or None, next((k for k in PARSERS if k in placed), PARSERS[0]))
    return lambda crop: 1.0 - parser(crop)


# Occluders found per face in its aligned crop, by name (ConvertOptions.face_parser asks for it).
CROP_OCCLUDERS: dict[str, Callable[[str], CropOccluder]] = {"face_parsing": _face_parsing}


def interior(hull: np.ndarray, feather: int) -> np.ndarray:
    """(S, S) float32: the hull shrunk by the margin `cut_occluder` grows a cut by, so a crop
    occluder's cut stays inside the face after growing."""
    import cv2

    grow = round(2 * feather / 3)
    hull = np.asarray(hull, np.float32)
    return cv2.erode(hull, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1,) * 2)) if grow > 0 else hull


def cut_occluder(mask: np.ndarray, occluder: np.ndarray, feather: int) -> np.ndarray:
    """`mask` (S, S) with `occluder` (S, S, 0..1, crop px) removed. The occluder grows by two
    thirds of the feather first (two sigmas of its Gaussian): feathering centres the fade on the
    edge, so without the margin the swapped face would reach half a feather onto the fingers at
    up to half strength; with it the fade is down to ~2% on the occluder's edge."""
    import cv2

    occluder = np.clip(np.asarray(occluder, np.float32).reshape(mask.shape), 0.0, 1.0)
    if (grow := round(2 * feather / 3)) > 0:
        occluder = cv2.dilate(occluder, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1)))
    return mask * (1.0 - occluder)


@dataclass
class _Held:
    value: np.ndarray  # (S, S) the strongest recent occluder level per pixel
    stamp: np.ndarray  # (S, S) when each pixel last reached that level, seconds
    last: float  # the track's latest time


class OccluderSmoother:
    """Per face track, in crop space: an occluder appears at once (a finger painted over even
    for one frame is the failure), and each pixel is held for HOLD_S after it was last seen,
    then fades over FADE_S. A detection dropped for a frame or two then still cuts, landmark
    wobble does not flicker the edge, and a withdrawn hand releases the face gradually (at most
    1/FADE_S per second). Crop space moves with the face, so a hand resting on it stays put."""

    def __init__(self, hold: float = HOLD_S, fade: float = FADE_S) -> None:
        self.hold, self.fade = hold, fade
        self._tracks: dict[int, _Held] = {}

    def __call__(self, track_id: int, t: float, occluder: np.ndarray) -> np.ndarray:
        occluder = np.asarray(occluder, np.float32)
        for stale in [k for k, h in self._tracks.items() if t - h.last > FORGET_S or t < h.last - FORGET_S]:
            del self._tracks[stale]
        held = self._tracks.get(track_id)
        if held is None or held.value.shape != occluder.shape:
            self._tracks[track_id] = _Held(occluder.copy(), np.full(occluder.shape, t, np.float32), t)
            return occluder
        age = np.maximum(t - held.stamp, 0.0)
        level = held.value * np.clip(1.0 - (age - self.hold) / self.fade, 0.0, 1.0)  # (S, S)
        fresh = occluder >= level
        held.value = np.where(fresh, occluder, held.value)
        held.stamp = np.where(fresh, np.float32(t), held.stamp)
        held.last = t
        return np.maximum(occluder, level)


class Occlusion:
    """The occluders of one conversion: `frame_mask` once per frame (in order: trackers keep
    state), `crop_mask` per face. Building it loads the models, so a missing file fails before
    any frame is converted."""

    def __init__(self, names: tuple[str, ...] = ("hands",), models_dir: str = "") -> None:
        unknown = [n for n in names if n not in OCCLUDERS and n not in CROP_OCCLUDERS]
        if unknown:
            raise ValueError(f"unknown occluders {unknown}; expected some of {sorted({*OCCLUDERS, *CROP_OCCLUDERS})}")
        self.occluders = [OCCLUDERS[name](models_dir) for name in names if name in OCCLUDERS]
        self.crop_occluders = [CROP_OCCLUDERS[name](models_dir) for name in names if name in CROP_OCCLUDERS]
        self.smoother = OccluderSmoother()
        self.last_index: int | None = None

    def frame_mask(self, rgb: np.ndarray, faces: list | None = None, index: int | None = None) -> np.ndarray:
        """(H, W) float32: the union of every occluder on this frame; `faces`: boxes (x0, y0,
        x1, y1 frame px) of the faces to be blended (None: look everywhere). `index`: the
        frame's number; after a gap (frames without a face to blend, outside start/end) the
        trackers start afresh instead of carrying a hand's place across it."""
        if index is not None and self.last_index is not None and index != self.last_index + 1:
            for occluder in self.occluders:
                getattr(occluder, "reset", lambda: None)()
        self.last_index = index
        out = np.zeros(rgb.shape[:2], np.float32)
        for occluder in self.occluders:
            np.maximum(out, occluder(rgb, faces), out=out)
        return out

    def crop_mask(self, frame_mask: np.ndarray | None, matrix: np.ndarray, size: int, track_id: int,
                  t: float, crop: np.ndarray | None = None, inside: np.ndarray | None = None) -> np.ndarray:
        """(S, S) float32: the frame occluder warped into a face's crop (`matrix` 2x3 frame ->
        crop), with the crop occluders' masks of `crop` (S, S, 3), held over time for its track.
        `inside` (S, S): where a crop occluder counts (`interior`): a parser calls background
        and neck "not face" too, and cut (then grown) there it would shrink the whole mask."""
        cut = warp_to_crop(frame_mask, matrix, size)
        for occluder in self.crop_occluders if crop is not None else []:
            part = occluder(crop)
            np.maximum(cut, part if inside is None else part * inside, out=cut)
        return self.smoother(track_id, t, cut)


def warp_to_crop(frame_mask: np.ndarray | None, matrix: np.ndarray, size: int) -> np.ndarray:
    """(S, S) float32: a frame mask (H, W) seen through `matrix` (2x3, frame -> crop); zeros
    for None or an empty mask (the common case, skipped)."""
    import cv2

    if frame_mask is None or not frame_mask.any():
        return np.zeros((size, size), np.float32)
    return cv2.warpAffine(np.asarray(frame_mask, np.float32), np.asarray(matrix, np.float64), (size, size),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def to_frame(crop_mask: np.ndarray, matrix: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(H, W) float32: a crop mask (S, S) put back in the frame (inverse of `matrix`)."""
    import cv2

    height, width = shape[:2]
    return cv2.warpAffine(np.asarray(crop_mask, np.float32), np.asarray(matrix, np.float64), (width, height),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def overlay(rgb: np.ndarray, blend: np.ndarray | None, occluder: np.ndarray | None) -> np.ndarray:
    """The frame (H, W, 3) uint8 with the blend mask used tinted green (its strength) and the
    occluder cut from it tinted red: what `mask: occlusion` did, for a side-by-side preview."""
    out = rgb.astype(np.float32)
    for mask, colour in ((blend, (0.0, 255.0, 0.0)), (occluder, (255.0, 0.0, 0.0))):
        if mask is not None:
            alpha = 0.5 * np.clip(mask, 0.0, 1.0)[..., None]  # (H, W, 1)
            out += alpha * (np.array(colour, np.float32) - out)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
