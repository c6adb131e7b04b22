"""The merger: per face `face_mask` (which mask, erosion, feather, in crop px), `match_color`
(swapped crop towards the original's colours; `color_stats` lets the converter smooth them
over time) and `paste_face` (warp back, blend, optionally Poisson-clone); `delta_e` and
`boundary_gradient_ratio` measure the result (colour gap, visible seam).

Colour work is in float CIE Lab (real units, L 0..100), not quantised by OpenCV's 8-bit Lab
scaling. Only numpy is imported at module level (OpenCV inside the functions).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

MASKS = ("hull", "learned", "intersection", "occlusion")  # occlusion: the hull minus what covers it (ops.occlusion)
_LEARNED = ("learned", "intersection")
COLOR_MATCHES = ("none", "mean_std", "histogram", "seamless")

_MIN_PIXELS = 16  # fewer mask pixels than this give no meaningful colour statistics
_ALPHA_EPS = 0.5 / 255  # alpha below this cannot change a uint8 pixel, so it is "outside"
_STD_RATIO = (0.2, 5.0)  # bounds on the std gain, so a flat face cannot blow up noise
_SHRINK_ABOVE = 1.5  # crop px per frame px above which the crop is area-shrunk first


@dataclass(frozen=True)
class BlendOptions:
    mask: str = "hull"  # landmark hull / the model's learned mask / both intersected / hull minus occluders
    erosion: int = 0  # crop px to erode (+) or dilate (-) the mask before feathering
    feather: int = 9  # Gaussian falloff width in crop px at the mask edge
    color_match: str = "mean_std"

    def __post_init__(self) -> None:
        if self.mask not in MASKS:
            raise ValueError(f"unknown mask {self.mask!r}; expected one of {MASKS}")
        if self.color_match not in COLOR_MATCHES:
            raise ValueError(f"unknown color_match {self.color_match!r}; expected one of {COLOR_MATCHES}")
        for name in ("erosion", "feather"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"{name} must be a whole number of pixels, got {value!r}")
        if self.feather < 0:
            raise ValueError(f"feather must be >= 0 px, got {self.feather}")


def face_mask(hull: np.ndarray, learned: np.ndarray | None, options: BlendOptions,
              occluder: np.ndarray | None = None) -> np.ndarray:
    """(S,S) float32 in [0,1] in crop space from the HARD hull mask (S,S) and the model's
    `learned` mask (S,S) in [0,1] or None (a model without a mask head: 'learned' and
    'intersection' then use the hull; 'occlusion' uses the hull). Erosion (+) / dilation (-),
    minus `occluder` (S,S) in [0,1] when given (what covers the face, `occlusion.cut_occluder`),
    then Gaussian feather centred on the edge (which stays at ~0.5, as in `alignment.hull_mask`)."""
    import cv2

    hull = np.clip(np.asarray(hull, dtype=np.float32), 0.0, 1.0)
    if hull.ndim != 2 or hull.shape[0] != hull.shape[1]:
        raise ValueError(f"hull mask must be (S, S), got {hull.shape}")
    mask = hull
    if options.mask in _LEARNED and learned is not None:
        learned = np.clip(np.asarray(learned, dtype=np.float32).reshape(hull.shape), 0.0, 1.0)
        mask = learned if options.mask == "learned" else np.minimum(hull, learned)
    elif options.mask in _LEARNED:
        logger.debug("mask %r asked for but the model gave no learned mask: using the hull", options.mask)
    if options.erosion:
        k = 2 * abs(options.erosion) + 1
        morph = cv2.erode if options.erosion > 0 else cv2.dilate
        mask = morph(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    if occluder is not None:  # after erosion, so erosion moves the face's edge, not the cut's
        from swapline.ops.occlusion import cut_occluder

        mask = cut_occluder(mask, occluder, options.feather)
    if (f := options.feather) > 0:
        # The kernel spans +-3 sigma so `feather` is the width of the visible falloff.
        mask = _fade_crop_edge(cv2.GaussianBlur(mask, (2 * f + 1, 2 * f + 1), f / 3.0), f)
    return np.clip(mask, 0.0, 1.0).astype(np.float32)


def _fade_crop_edge(mask: np.ndarray, width: int) -> np.ndarray:
    """Ramp the mask to 0 at the crop border: a mask still on at the border would be cut
    off by the crop square when warped back, a straight hard seam in the frame."""
    i = np.arange(mask.shape[0], dtype=np.float32)
    ramp = np.clip(np.minimum(i, i[::-1]) / width, 0.0, 1.0)  # (S,): 0 on the border pixels
    return mask * ramp[:, None] * ramp[None, :]


def _lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB (..,3) -> float32 CIE Lab in real units (L 0..100, a/b about -128..127)."""
    import cv2

    return cv2.cvtColor(np.asarray(rgb, dtype=np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def _rgb8(lab: np.ndarray) -> np.ndarray:
    """float Lab -> uint8 RGB, out-of-gamut values clipped."""
    import cv2

    rgb = cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_LAB2RGB)
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _inside(mask: np.ndarray) -> np.ndarray:
    return np.asarray(mask) > 0.5  # (S,S) bool: the face proper, not its feathered rim


def color_stats(face: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(2,3) float32: row 0 the Lab mean, row 1 the Lab std of `face` (S,S,3) uint8 RGB
    inside mask > 0.5 (the whole crop when the mask has fewer than 16 pixels there)."""
    lab = _lab(face)  # (S,S,3)
    inside = _inside(mask)
    pixels = lab[inside] if inside.sum() >= _MIN_PIXELS else lab.reshape(-1, 3)  # (N,3)
    return np.stack([pixels.mean(axis=0), pixels.std(axis=0)]).astype(np.float32)


def match_color(swapped: np.ndarray, original: np.ndarray, mask: np.ndarray, mode: str,
                stats: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """The swapped crop (S,S,3) uint8 RGB with the original crop's colours inside `mask`.
    mean_std: Lab mean/std transfer (Reinhard); `stats` = (swapped_stats, original_stats),
    each (2,3) from `color_stats`, replaces the measured ones (temporally smoothed stats).
    histogram: per-channel Lab CDF matching. none / seamless: unchanged (seamless cloning
    happens in `paste_face`, which has the frame). Too small a mask: unchanged."""
    if mode not in COLOR_MATCHES:
        raise ValueError(f"unknown colour match {mode!r}; expected one of {COLOR_MATCHES}")
    if swapped.shape != original.shape or swapped.shape[:2] != np.shape(mask):
        raise ValueError(f"shapes differ: swapped {swapped.shape}, original {original.shape}, mask {np.shape(mask)}")
    if mode in ("none", "seamless"):
        return swapped
    if (stats is None or mode == "histogram") and _inside(mask).sum() < _MIN_PIXELS:
        return swapped
    if mode == "mean_std":
        if stats is None:
            stats = (color_stats(swapped, mask), color_stats(original, mask))
        return _transfer_mean_std(swapped, *stats)
    return _match_histogram(swapped, original, mask)


def _transfer_mean_std(swapped: np.ndarray, src: np.ndarray, ref: np.ndarray) -> np.ndarray:
    src, ref = np.asarray(src, np.float32).reshape(2, 3), np.asarray(ref, np.float32).reshape(2, 3)
    gain = np.clip(ref[1] / np.maximum(src[1], 1e-3), *_STD_RATIO)  # (3,)
    # The whole crop is transformed, not only the mask's inside, so the feathered rim
    # fades between consistently coloured pixels.
    return _rgb8((_lab(swapped) - src[0]) * gain + ref[0])  # Lab (S,S,3) -> RGB


def _match_histogram(swapped: np.ndarray, original: np.ndarray, mask: np.ndarray) -> np.ndarray:
    src_lab, ref_lab = _lab(swapped), _lab(original)  # (S,S,3) each
    inside = _inside(mask)
    levels = np.linspace(0.0, 1.0, 1025)
    out = np.empty_like(src_lab)
    for c in range(3):
        src_q = np.quantile(src_lab[..., c][inside], levels)
        ref_q = np.quantile(ref_lab[..., c][inside], levels)
        src_q = src_q + np.arange(len(levels)) * 1e-6  # strictly increasing for np.interp
        x = src_lab[..., c]
        mapped = np.interp(x, src_q, ref_q)
        # Outside the face's range (background in the rim) shift by the end offsets
        # instead of clamping, so those pixels keep their texture.
        mapped = np.where(x < src_q[0], x - src_q[0] + ref_q[0], mapped)
        out[..., c] = np.where(x > src_q[-1], x - src_q[-1] + ref_q[-1], mapped)
    return _rgb8(out)


def paste_face(frame: np.ndarray, face: np.ndarray, mask: np.ndarray, matrix: np.ndarray, *,
               seamless: bool = False) -> np.ndarray:
    """A new frame (H,W,3) uint8 with the crop `face` (S,S,3) uint8 warped back through the
    inverse of `matrix` (2,3, frame -> crop) and alpha-blended with the warped `mask` (S,S).
    Only the bounding box of the mask's footprint is warped and blended; every pixel outside
    it is the input's, bit for bit. seamless: Poisson clone (cv2 NORMAL_CLONE) of the face
    inside mask > 0.5 first, then the same feathered blend; falls back to the plain blend
    with a warning where cloning cannot run."""
    if face.shape[:2] != np.shape(mask) or frame.ndim != 3 or face.ndim != 3:
        raise ValueError(f"expected frame (H,W,3), face (S,S,3), mask (S,S); "
                         f"got {frame.shape}, {face.shape}, {np.shape(mask)}")
    out = frame.copy()
    face, mask, matrix = _prepare_crop(face, mask, matrix)
    roi = _footprint(mask, matrix, frame.shape)
    if roi is None:
        return out
    x0, y0, x1, y1 = roi
    face_roi, alpha = _warp_into(face, mask, matrix, roi)  # (h,w,3) uint8, (h,w) float32
    base = frame[y0:y1, x0:x1]
    if seamless and (cloned := _seamless_clone(base, face_roi, alpha)) is not None:
        face_roi = cloned
    out[y0:y1, x0:x1] = _alpha_blend(base, face_roi, alpha)
    return out


def _prepare_crop(face: np.ndarray, mask: np.ndarray, matrix: np.ndarray):
    """Area-shrink the crop when it is much finer than the frame (a small face): warping
    with a bilinear/cubic kernel alone would alias. Returns face, mask, adjusted matrix."""
    import cv2

    from swapline.ops.alignment import matrix_scale

    matrix = np.asarray(matrix, dtype=np.float64).reshape(2, 3)
    mask = np.asarray(mask, dtype=np.float32)
    scale = matrix_scale(matrix)  # crop px per frame px
    if scale <= _SHRINK_ABOVE:
        return face, mask, matrix
    small = max(2, round(face.shape[0] / scale))
    k = small / face.shape[0]
    face = cv2.resize(face, (small, small), interpolation=cv2.INTER_AREA)
    mask = cv2.resize(mask, (small, small), interpolation=cv2.INTER_AREA)
    # cv2.resize aligns pixel centres: small = k * (crop + 0.5) - 0.5.
    shrunk = k * matrix
    shrunk[:, 2] += 0.5 * k - 0.5
    return face, mask, shrunk


def _footprint(mask: np.ndarray, matrix: np.ndarray, shape: tuple[int, ...]):
    """Frame box (x0, y0, x1, y1), clipped, outside which the warped mask is below
    _ALPHA_EPS; None when the mask is empty or lands off the frame."""
    import cv2

    from swapline.ops.alignment import invert_matrix, transform_points

    on = cv2.findNonZero((mask > _ALPHA_EPS).astype(np.uint8))  # (N,1,2) or None
    if on is None:
        return None
    # The hull, not the crop-space box: a rolled head's box would map to a much bigger one.
    # Bilinear sampling reaches up to one crop pixel past an "on" pixel in x and y.
    hull = cv2.convexHull(on).reshape(-1, 1, 2).astype(np.float64)
    reach = (hull + np.array([[-1, -1], [1, -1], [-1, 1], [1, 1]], np.float64)).reshape(-1, 2)
    corners = transform_points(reach, invert_matrix(matrix))  # (4K,2) frame px
    x0, y0 = np.floor(corners.min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + 2  # exclusive end
    height, width = shape[:2]
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _warp_into(face: np.ndarray, mask: np.ndarray, matrix: np.ndarray, roi: tuple[int, int, int, int]):
    """Face (h,w,3) uint8 and alpha (h,w) float32 sampled for the frame box `roi`."""
    import cv2

    x0, y0, x1, y1 = roi
    # roi pixel -> crop point, used directly as the sampling map (WARP_INVERSE_MAP).
    to_crop = matrix.copy()
    to_crop[:, 2] += matrix[:, :2] @ np.array([x0, y0], dtype=np.float64)
    size = (x1 - x0, y1 - y0)
    # Cubic for the face (sharper when the crop is upscaled); the face border replicates
    # so a rim reaching the crop edge never blends in black.
    face_roi = cv2.warpAffine(face, to_crop, size, flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE)
    # Linear for the mask: no overshoot outside [0, 1], and the footprint above holds.
    alpha = cv2.warpAffine(mask, to_crop, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return face_roi, np.clip(alpha, 0.0, 1.0)


def _alpha_blend(base: np.ndarray, face: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    base_f = base.astype(np.float32)  # (h,w,3)
    blended = base_f + alpha[..., None] * (face.astype(np.float32) - base_f)
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def _seamless_clone(base: np.ndarray, face: np.ndarray, alpha: np.ndarray) -> np.ndarray | None:
    """Poisson-cloned face over `base` (both (h,w,3) uint8) inside alpha > 0.5, or None
    (warning logged) when cloning cannot run."""
    import cv2

    binary = (alpha > 0.5).astype(np.uint8) * 255  # (h,w)
    if (count := cv2.countNonZero(binary)) < _MIN_PIXELS:
        logger.warning("seamless clone skipped (mask of %d px is too small); alpha blend instead", count)
        return None
    # Pad so the mask never touches the image border (OpenCV zeroes the outer ring and
    # needs the clone box inside the destination): a face cut by the frame edge still
    # clones, its edge pinned to the reflected frame there.
    pad = 4
    dst = cv2.copyMakeBorder(base, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    src = cv2.copyMakeBorder(face, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    binary = cv2.copyMakeBorder(binary, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    x, y, w, h = cv2.boundingRect(binary)
    # OpenCV places the box at centre - size // 2; this centre puts it back where it was.
    centre = (x + w // 2, y + h // 2)
    try:
        cloned = cv2.seamlessClone(src, dst, binary, centre, cv2.NORMAL_CLONE)
    except cv2.error as exc:
        logger.warning("seamless clone failed (%s); alpha blend instead", str(exc).strip().splitlines()[-1])
        return None
    return cloned[pad:-pad, pad:-pad]


def delta_e(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Mean CIE76 colour difference (Euclidean in CIE Lab, real units) between uint8 RGB
    images `a` and `b` inside mask > 0.5; nan for an empty mask."""
    if a.shape != b.shape or a.shape[:2] != np.shape(mask):
        raise ValueError(f"shapes differ: {a.shape}, {b.shape}, mask {np.shape(mask)}")
    inside = _inside(mask)
    if not inside.any():
        return float("nan")
    diff = _lab(a)[inside] - _lab(b)[inside]  # (N,3)
    return float(np.sqrt((diff**2).sum(axis=1)).mean())


def boundary_gradient_ratio(output: np.ndarray, original: np.ndarray, mask: np.ndarray, width: int = 3) -> float:
    """Mean squared Sobel gradient magnitude of the grey `output` in the band within `width`
    px of the mask's 0.5 contour, over the same for `original` (all (H,W) full frame).
    ~1: no visible seam; a hard paste of a mismatched face gives >> 1. nan if no band."""
    import cv2

    if output.shape != original.shape or output.shape[:2] != np.shape(mask):
        raise ValueError(f"shapes differ: {output.shape}, {original.shape}, mask {np.shape(mask)}")
    inside = _inside(mask).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    band = (cv2.dilate(inside, kernel) > 0) & ~(cv2.erode(inside, kernel) > 0)  # (H,W)
    if not band.any():
        return float("nan")
    return _gradient_energy(output, band) / max(_gradient_energy(original, band), 1e-6)


def _gradient_energy(image: np.ndarray, band: np.ndarray) -> float:
    import cv2

    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gx, gy = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    return float((gx[band] ** 2 + gy[band] ** 2).mean())
