"""The visible face in an aligned face crop, from a user-placed BiSeNet or XSeg ONNX file.

`FaceParser(models_dir, kind)(crop_rgb) -> (S, S) float32 in 0..1`: 1 where the crop shows face,
0 where something covers it (hair, a hand, a hat, a microphone) or where there is no face
(background, neck). A caller multiplies it into its blend mask, so an occluder in front of the
target face stays in the output. The mask is soft only along edges (from resizing the model's
map back to the crop); feathering is the caller's (ops/occlusion.cut_occluder).

* "bisenet": a face parser trained on CelebAMask-HQ's 19 classes (FaceFusion's
  bisenet_resnet_34.onnx; input 1x3x512x512 RGB normalised with ImageNet's mean/std, output
  1x19x512x512 logits). Visible face = the pixel's most likely class is a face class: skin,
  brows, eyes, nose, mouth, lips. Glasses count as face by default: CelebAMask-HQ labels a
  pair of glasses, lenses included, as one region over the eyes, so treating it as an occluder
  would keep the target's eyes behind the lenses (the swap's identity leaks) and cut a hole
  where the swapped eyes should be. `glasses_are_face=False` keeps the target's glasses instead.
* "xseg": DeepFaceLab's XSeg segmenter (FaceFusion's xseg_1.onnx; input 1x256x256x3, or
  1x3x256x256, BGR in 0..1, as DeepFaceLab feeds its OpenCV frames; output one channel in 0..1 =
  visible face). The layout is read from the file.

onnxruntime and OpenCV are imported inside functions (this module loads with the code location).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from swapline.ops import onnx_models

logger = logging.getLogger(__name__)

# CelebAMask-HQ's label order, as the BiSeNet face parsers (zllrunning/face-parsing.PyTorch) use it.
CELEBAMASK_CLASSES = (
    "background", "skin", "left_brow", "right_brow", "left_eye", "right_eye", "glasses", "left_ear", "right_ear",
    "earring", "nose", "mouth", "upper_lip", "lower_lip", "neck", "necklace", "cloth", "hair", "hat",
)
FACE_CLASSES = tuple(CELEBAMASK_CLASSES.index(n) for n in (
    "skin", "left_brow", "right_brow", "left_eye", "right_eye", "nose", "mouth", "upper_lip", "lower_lip"))
GLASSES = CELEBAMASK_CLASSES.index("glasses")
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)  # RGB
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
DEFAULT_SIZES = {"bisenet": 512, "xseg": 256}  # for exports with a dynamic input side


def visible_from_classes(classes: np.ndarray, glasses_are_face: bool = True) -> np.ndarray:
    """(H, W) float32 0/1 visible-face mask from an (H, W) CelebAMask-HQ class map."""
    face = FACE_CLASSES + ((GLASSES,) if glasses_are_face else ())
    return np.isin(np.asarray(classes), face).astype(np.float32)


def bisenet_input(crop_rgb: np.ndarray, size: int = 512, channels_last: bool = False) -> np.ndarray:
    """(1, 3, size, size) float32 (or (1, size, size, 3)): the crop resized, RGB in 0..1
    normalised with ImageNet's mean and std (what the parser was trained on)."""
    x = (_resize(crop_rgb, size).astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD  # (size, size, 3)
    return np.ascontiguousarray(x[None] if channels_last else x.transpose(2, 0, 1)[None])


def xseg_input(crop_rgb: np.ndarray, size: int = 256, channels_last: bool = True) -> np.ndarray:
    """(1, size, size, 3) float32 (or (1, 3, size, size)): the crop resized, BGR in 0..1."""
    x = _resize(crop_rgb, size)[..., ::-1].astype(np.float32) / 255.0  # (size, size, 3) BGR
    return np.ascontiguousarray(x[None] if channels_last else x.transpose(2, 0, 1)[None])


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    import cv2

    if image.shape[:2] == (size, size):
        return image
    shrink = image.shape[0] > size or image.shape[1] > size
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def to_crop(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A (h, w) model-space mask resized to a crop of `shape` (H, W, ...), float32 in 0..1."""
    import cv2

    mask = np.asarray(mask, np.float32)
    if mask.shape != tuple(shape[:2]):
        shrink = mask.shape[0] > shape[0] or mask.shape[1] > shape[1]
        mask = cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return np.clip(mask, 0.0, 1.0)


class FaceParser:
    """The visible face in aligned face crops, from a user-placed "bisenet" or "xseg" file. The
    file is looked for at construction (OnnxModelMissing names the path); the session loads on
    first use and is shared per process.

    `parser(crop_rgb (S, S, 3) uint8) -> (S, S) float32`, 1 = visible face."""

    def __init__(self, models_dir: onnx_models.Folder = None, kind: str = "bisenet", *,
                 glasses_are_face: bool = True, threads: int = 0) -> None:
        if kind not in DEFAULT_SIZES or onnx_models.spec(kind).role != "parser":
            raise ValueError(f"unknown face parser {kind!r}; expected one of {sorted(DEFAULT_SIZES)}")
        self.kind, self.glasses_are_face, self.threads = kind, glasses_are_face, threads
        self.path = onnx_models.model_path(kind, models_dir)

    @property
    def session(self) -> Any:
        return onnx_models.session(self.path, self.threads)

    def model_mask(self, crop_rgb: np.ndarray) -> np.ndarray:
        """(s, s) float32 visible face at the model's own resolution."""
        session = self.session
        spec = session.get_inputs()[0]
        channels_last, h, w = onnx_models.input_layout(spec.shape)
        size = h or w or DEFAULT_SIZES[self.kind]
        if self.kind == "bisenet":
            (logits, *_) = session.run(None, {spec.name: bisenet_input(crop_rgb, size, channels_last)})
            logits = np.asarray(logits)[0]  # (19, s, s); BiSeNet exports may add auxiliary heads after it
            if logits.shape[0] != len(CELEBAMASK_CLASSES):
                raise ValueError(f"{self.path.name}: expected {len(CELEBAMASK_CLASSES)} class maps, got {logits.shape}")
            return visible_from_classes(logits.argmax(axis=0), self.glasses_are_face)
        (out, *_) = session.run(None, {spec.name: xseg_input(crop_rgb, size, channels_last)})
        out = np.asarray(out, np.float32)
        if out.size != size * size:
            raise ValueError(f"{self.path.name}: expected one {size}x{size} mask, got {out.shape}")
        return out.reshape(size, size)  # (1, s, s, 1) or (1, 1, s, s): one channel either way

    def __call__(self, crop_rgb: np.ndarray) -> np.ndarray:
        crop_rgb = np.asarray(crop_rgb)
        if crop_rgb.ndim != 3 or crop_rgb.shape[2] != 3 or crop_rgb.dtype != np.uint8:
            raise ValueError(f"expected an RGB (S, S, 3) uint8 crop, got {crop_rgb.shape} {crop_rgb.dtype}")
        return to_crop(self.model_mask(crop_rgb), crop_rgb.shape)
