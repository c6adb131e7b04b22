"""Face alignment geometry: the 68-point mean face, the similarity transform onto it,
warping a face crop, and the feathered hull mask.

Coordinates: landmarks are (x, y) in pixels, x to the right, y down, in the iBUG 300-W
68-point order that dlib's shape predictor emits (0-16 jaw, 17-26 brows, 27-35 nose,
36-47 eyes, 48-67 mouth). "Left" and "right" below mean the image's left and right.

Only numpy is imported at module level; OpenCV is imported inside the functions that
need it so the Dagster code location loads fast.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

# Inner points 17..67 of the mean face used by the original deepfakes/faceswap and DFL
# Umeyama aligners (the widely published `mean_face_x` / `mean_face_y`, which came from
# dlib's shape-predictor mean shape). They span [0, 1] in x and y, which is what makes
# `padding` a plain fraction of that unit square.
_MEAN_INNER_X = (
    0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124,
    0.904991, 0.98004, 0.490127, 0.490127, 0.490127, 0.490127, 0.36688, 0.426036,
    0.490127, 0.554217, 0.613373, 0.121737, 0.187122, 0.265825, 0.334606, 0.260918,
    0.182743, 0.645647, 0.714428, 0.793132, 0.858516, 0.79751, 0.719335, 0.254149,
    0.340985, 0.428858, 0.490127, 0.551395, 0.639268, 0.726104, 0.642159, 0.556721,
    0.490127, 0.423532, 0.338094, 0.290379, 0.428096, 0.490127, 0.552157, 0.689874,
    0.553364, 0.490127, 0.42689,
)
_MEAN_INNER_Y = (
    0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891,
    0.0187482, 0.038915, 0.106454, 0.203352, 0.307009, 0.409805, 0.515625, 0.587326,
    0.609345, 0.628106, 0.609345, 0.587326, 0.216423, 0.178758, 0.179852, 0.231733,
    0.245099, 0.244077, 0.231733, 0.179852, 0.178758, 0.216423, 0.244077, 0.245099,
    0.780233, 0.745405, 0.727388, 0.742578, 0.727388, 0.745405, 0.780233, 0.864805,
    0.902192, 0.909281, 0.902192, 0.864805, 0.784792, 0.778746, 0.785343, 0.778746,
    0.784792, 0.824182, 0.831803, 0.824182,
)
# The published mean face has no jaw. These 17 points were derived for swapline: the
# dlib landmarks of 65 real faces (the demo stills and every 10th frame of the two demo
# clips) were aligned onto the inner template above, their jaw points averaged, and the
# result made left/right symmetric about the template's midline x = 0.490127. They lie just outside [0, 1]
# (the jaw is wider than the brows and below the lip); they only feed the hull mask and
# never the alignment fit.
_MEAN_JAW = (
    (-0.0877, 0.2842), (-0.0895, 0.4352), (-0.0760, 0.5867), (-0.0466, 0.7367),
    (0.0084, 0.8787), (0.0954, 1.0053), (0.2069, 1.1093), (0.3396, 1.1840),
    (0.4901, 1.2064),
    (0.6406, 1.1840), (0.7734, 1.1093), (0.8849, 1.0053), (0.9719, 0.8787),
    (1.0268, 0.7367), (1.0562, 0.5867), (1.0698, 0.4352), (1.0680, 0.2842),
)

TEMPLATE_68: np.ndarray = np.concatenate(
    [np.asarray(_MEAN_JAW, dtype=np.float64), np.stack([_MEAN_INNER_X, _MEAN_INNER_Y], axis=1)]
)
TEMPLATE_68.setflags(write=False)

# Points the similarity fit uses: the jaw outline moves with pose and expression far more
# than brows, eyes, nose and mouth, so it would only pull the fit off.
ALIGN_POINTS = slice(17, 68)


def template_points(size: int, padding: float) -> np.ndarray:
    """TEMPLATE_68 in crop pixels: the unit square shrunk by `padding` on every side."""
    return (TEMPLATE_68 + padding) / (1.0 + 2.0 * padding) * size


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation; no
    reflection) taking `src` (N,2) onto `dst` (N,2), as a (2,3) matrix (Umeyama 1991)."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    # Flip the weakest axis when the best orthogonal fit would be a mirror image.
    d = np.array([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rotation = u @ np.diag(d) @ vt
    src_var = (src_c**2).sum() / len(src)
    scale = float((s * d).sum() / src_var) if src_var > 0 else 1.0
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


def alignment_matrix(landmarks: np.ndarray, size: int, padding: float) -> np.ndarray:
    """(2,3) float64 matrix mapping source pixels into the size x size aligned crop, fitted
    on landmarks 17..67 against the template scaled into the crop with `padding` margin."""
    landmarks = np.asarray(landmarks, dtype=np.float64).reshape(68, 2)
    target = template_points(size, padding)
    return umeyama(landmarks[ALIGN_POINTS], target[ALIGN_POINTS])


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a (2,3) affine matrix to (N,2) points."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    matrix = np.asarray(matrix, dtype=np.float64).reshape(2, 3)
    return points @ matrix[:, :2].T + matrix[:, 2]


def invert_matrix(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a (2,3) affine matrix (crop pixels back to source pixels)."""
    full = np.vstack([np.asarray(matrix, dtype=np.float64).reshape(2, 3), [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def matrix_scale(matrix: np.ndarray) -> float:
    """Uniform scale of a similarity matrix: crop pixels per source pixel."""
    matrix = np.asarray(matrix, dtype=np.float64).reshape(2, 3)
    return float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))


def _source_roi(matrix: np.ndarray, size: int, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """Source-pixel box (x0, y0, x1, y1) the crop samples from, clipped to the image,
    with a few pixels of slack for the interpolation kernel."""
    corners = transform_points([[0, 0], [size, 0], [0, size], [size, size]], invert_matrix(matrix))
    x0, y0 = np.floor(corners.min(axis=0)).astype(int) - 2
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + 2
    height, width = shape[:2]
    return max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)


def align_face(image_rgb: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Warp the face into a (size, size, 3) uint8 crop; pixels beyond the frame edge repeat
    the edge (border replicate) rather than going black, which a model would learn."""
    import cv2

    matrix = np.asarray(matrix, dtype=np.float64).reshape(2, 3).copy()
    scale = matrix_scale(matrix)
    x0, y0, x1, y1 = _source_roi(matrix, size, image_rgb.shape)
    if scale < 1.0 and x1 - x0 > 1 and y1 - y0 > 1:
        # warpAffine has no true area filter (it treats INTER_AREA as bilinear), so a big
        # face shrunk straight to the crop would alias; shrink its region with INTER_AREA
        # first, then warp the rest of the way at ~1:1.
        region = image_rgb[y0:y1, x0:x1]
        small = cv2.resize(
            region,
            (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))),
            interpolation=cv2.INTER_AREA,
        )
        sx, sy = small.shape[1] / (x1 - x0), small.shape[0] / (y1 - y0)
        # crop <- source is M; cv2.resize aligns pixel centres, so small pixel u sits at
        # source x0 + (u + 0.5) / sx - 0.5; crop <- small is M times that map.
        pre = np.array(
            [[1.0 / sx, 0.0, x0 + 0.5 / sx - 0.5], [0.0, 1.0 / sy, y0 + 0.5 / sy - 0.5], [0.0, 0.0, 1.0]]
        )
        matrix = matrix @ pre
        image_rgb = small
    elif x1 > x0 and y1 > y0 and (x0 > 0 or y0 > 0 or x1 < image_rgb.shape[1] or y1 < image_rgb.shape[0]):
        # Warping only the face's region keeps big frames cheap; edges still replicate
        # correctly because the region was clipped to the frame, not cut inside it.
        matrix[:, 2] += matrix[:, :2] @ np.array([x0, y0], dtype=np.float64)
        image_rgb = image_rgb[y0:y1, x0:x1]
    return cv2.warpAffine(
        np.ascontiguousarray(image_rgb),
        matrix,
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


def hull_mask(
    landmarks_in_crop: np.ndarray, size: int, feather: int, forehead: float = 0.15
) -> np.ndarray:
    """(size, size) float32 mask in [0, 1]: the convex hull of the 68 landmarks with the
    brows raised by `forehead` x (brow-to-chin distance), so the mask covers part of the
    forehead as the swapped face should; `feather` px of Gaussian falloff at the edge
    (the hull boundary lands at about 0.5; 0 gives a hard mask)."""
    import cv2

    points = np.asarray(landmarks_in_crop, dtype=np.float64).reshape(68, 2).copy()
    brows = points[17:27]
    chin = points[8]
    up = brows.mean(axis=0) - chin
    length = float(np.linalg.norm(up))
    if length > 0:
        points[17:27] = brows + up / length * forehead * length
    mask = np.zeros((size, size), dtype=np.float32)
    hull = cv2.convexHull(np.round(points).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1.0, lineType=cv2.LINE_AA)
    if feather > 0:
        # The kernel spans +-3 sigma so `feather` is the width of the visible falloff.
        mask = cv2.GaussianBlur(mask, (2 * feather + 1, 2 * feather + 1), feather / 3.0)
    return np.clip(mask, 0.0, 1.0).astype(np.float32)
