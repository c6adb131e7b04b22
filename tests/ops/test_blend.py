"""The merger on a real frame with real dlib landmarks: masks, colour match, paste, measures."""

from __future__ import annotations

import logging
import time

import cv2
import numpy as np
import pytest

from swapline.ops.alignment import align_face, alignment_matrix, hull_mask, invert_matrix, transform_points
from swapline.ops.blend import (
    BlendOptions,
    boundary_gradient_ratio,
    color_stats,
    delta_e,
    face_mask,
    match_color,
    paste_face,
)
from tests.conftest import MEDIA, video_frame

SIZE = 256


class Scene:
    """One real frame, its face aligned into a crop, and the hard hull mask in both spaces."""

    def __init__(self, frame: np.ndarray, landmarks: np.ndarray):
        self.frame = frame  # (H, W, 3) uint8
        self.landmarks = landmarks  # (68, 2) frame px
        self.matrix = alignment_matrix(landmarks, SIZE, 0.3)  # (2, 3) frame -> crop
        self.crop = align_face(frame, self.matrix, SIZE)  # (S, S, 3)
        self.hard = hull_mask(transform_points(landmarks, self.matrix), SIZE, 0)  # (S, S)
        h, w = frame.shape[:2]
        self.hard_frame = cv2.warpAffine(self.hard, invert_matrix(self.matrix), (w, h))  # (H, W)

    def cut(self, rows: slice, cols: slice) -> Scene:
        """The same face in a window of the frame (cut by the window's edges)."""
        offset = np.array([cols.start or 0, rows.start or 0], dtype=np.float64)
        return Scene(np.ascontiguousarray(self.frame[rows, cols]), self.landmarks - offset)

    def rolled(self, degrees: float) -> Scene:
        """The frame turned about its centre: a rolled head."""
        h, w = self.frame.shape[:2]
        turn = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
        return Scene(cv2.warpAffine(self.frame, turn, (w, h), borderMode=cv2.BORDER_REFLECT),
                     transform_points(self.landmarks, turn))

    def scaled(self, factor: float) -> Scene:
        h, w = self.frame.shape[:2]
        size = (round(w * factor), round(h * factor))
        interp = cv2.INTER_CUBIC if factor > 1 else cv2.INTER_AREA
        return Scene(cv2.resize(self.frame, size, interpolation=interp), (self.landmarks + 0.5) * factor - 0.5)


@pytest.fixture(scope="module")
def scene() -> Scene:
    from swapline.ops.faces import FaceAnalyzer

    frame = video_frame(MEDIA / "WolfgangLanger_Pexels.mp4", 0)  # (360, 640, 3), face near the bottom edge
    faces = FaceAnalyzer().detect(frame)
    assert faces, "the demo clip's first frame has a face"
    return Scene(frame, faces[0].landmarks.astype(np.float64))


def tint(image: np.ndarray, shift=(15.0, 10.0, -12.0), gain: float = 1.0) -> np.ndarray:
    """`image` with its CIE Lab values shifted (real units) and contrast scaled: a colour gap."""
    lab = cv2.cvtColor(image.astype(np.float32) / 255, cv2.COLOR_RGB2LAB)
    mean = lab.reshape(-1, 3).mean(axis=0)
    lab = (lab - mean) * gain + mean + np.asarray(shift, np.float32)
    return np.clip(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB) * 255 + 0.5, 0, 255).astype(np.uint8)


def learned_like(scene: Scene) -> np.ndarray:
    """A soft mask of the kind a mask head outputs: an ellipse fitted to the crop landmarks,
    blurred (no trained model is needed to test how masks combine)."""
    mask = np.zeros((SIZE, SIZE), np.float32)
    ellipse = cv2.fitEllipse(transform_points(scene.landmarks, scene.matrix).astype(np.float32))
    cv2.ellipse(mask, ellipse, 1.0, -1)
    return cv2.GaussianBlur(mask, (15, 15), 4)


def whole_frame_paste(frame, face, mask, matrix) -> np.ndarray:
    """The naive reference: warp crop and mask onto the whole frame, blend everywhere."""
    h, w = frame.shape[:2]
    inverse = invert_matrix(matrix)
    face_full = cv2.warpAffine(face, inverse, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(mask, inverse, (w, h), flags=cv2.INTER_LINEAR)[..., None]  # (H, W, 1)
    return np.clip(frame * (1 - alpha) + face_full * alpha + 0.5, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------- options


@pytest.mark.parametrize("kwargs, message", [
    ({"mask": "ellipse"}, "unknown mask"),
    ({"color_match": "reinhard"}, "unknown color_match"),
    ({"feather": -1}, "feather must be >= 0"),
    ({"feather": 2.5}, "feather must be a whole number"),
    ({"erosion": True}, "erosion must be a whole number"),
])
def test_options_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BlendOptions(**kwargs)
    assert BlendOptions(mask="intersection", erosion=-3, feather=0, color_match="seamless").erosion == -3


# ---------------------------------------------------------------------------- masks


def test_hull_mask_modes(scene):
    learned = learned_like(scene)
    hard = face_mask(scene.hard, learned, BlendOptions(mask="hull", feather=0))
    assert hard.dtype == np.float32 and hard.shape == (SIZE, SIZE)
    np.testing.assert_array_equal(hard, scene.hard)
    both = face_mask(scene.hard, learned, BlendOptions(mask="intersection", feather=0))
    assert (both <= scene.hard + 1e-6).all() and (both <= learned + 1e-6).all()
    assert 0.3 * scene.hard.sum() < both.sum() < scene.hard.sum()  # a real overlap, not empty
    np.testing.assert_array_equal(face_mask(scene.hard, learned, BlendOptions(mask="learned", feather=0)), learned)
    for mode in ("learned", "intersection"):  # no learned mask: the hull
        np.testing.assert_array_equal(face_mask(scene.hard, None, BlendOptions(mask=mode, feather=0)), hard)


def test_erosion_and_feather(scene):
    area = scene.hard.sum()
    eroded = face_mask(scene.hard, None, BlendOptions(erosion=6, feather=0))
    dilated = face_mask(scene.hard, None, BlendOptions(erosion=-6, feather=0))
    assert eroded.sum() < area - 500 and dilated.sum() > area + 500
    assert (eroded <= scene.hard).all() and (dilated >= scene.hard).all()

    def soft_pixels(mask):
        return int(((mask > 0.05) & (mask < 0.95)).sum())

    soft, softer = (face_mask(scene.hard, None, BlendOptions(feather=f)) for f in (5, 15))
    assert soft_pixels(scene.hard) < soft_pixels(soft) < soft_pixels(softer)
    assert abs(softer.sum() - area) < 0.03 * area  # the edge stays where it was (~0.5 on the hull)
    assert 0.0 <= softer.min() and softer.max() <= 1.0
    # The same falloff as the feathered landmark hull of swapline.ops.alignment.
    feathered = hull_mask(transform_points(scene.landmarks, scene.matrix), SIZE, 9)
    assert np.abs(face_mask(scene.hard, None, BlendOptions(feather=9)) - feathered).max() < 0.01


def test_mask_fades_out_at_the_crop_border():
    full = np.ones((64, 64), np.float32)  # a mask on everywhere, as a sloppy learned mask can be
    mask = face_mask(full, full, BlendOptions(mask="learned", feather=5))
    assert mask[0].max() == 0 and mask[:, -1].max() == 0 and mask[32, 32] == 1.0


def test_occlusion_mask_is_the_hull_minus_the_occluder(scene):
    """A finger-like bar across the mouth (crop px; the real hands are in test_hands.py): cut out
    with a margin of 2/3 of the feather, so the fade ends on the bar's edge, not inside it."""
    from swapline.ops.convert_options import ConvertOptions

    assert ConvertOptions(mask="occlusion").blend() == BlendOptions(mask="occlusion")
    mouth = transform_points(scene.landmarks[48:68], scene.matrix)  # (20, 2) crop px
    bar = np.zeros((SIZE, SIZE), np.float32)
    y = int(mouth[:, 1].mean())
    cv2.rectangle(bar, (0, y - 8), (int(mouth[:, 0].mean()), y + 8), 1.0, -1)  # from the crop's left edge to mid-mouth
    for feather in (0, 9):
        hull = face_mask(scene.hard, None, BlendOptions(mask="hull", feather=feather))
        np.testing.assert_array_equal(face_mask(scene.hard, None, BlendOptions(mask="occlusion", feather=feather)), hull)
        cut = face_mask(scene.hard, None, BlendOptions(mask="occlusion", feather=feather), bar)
        assert cut.dtype == np.float32 and 0.0 <= cut.min() and cut.max() <= 1.0 and (cut <= hull + 1e-6).all()
        on_bar = (bar > 0) & (scene.hard > 0)
        assert on_bar.sum() > 300 and hull[on_bar].mean() > 0.9  # the hull alone paints the bar
        assert cut[on_bar].max() < 0.05, feather  # including its edge: the margin holds the feather off it
        away = cv2.dilate(bar, np.ones((4 * feather + 3, 4 * feather + 3), np.uint8)) == 0
        np.testing.assert_allclose(cut[away], hull[away], atol=1e-6)  # elsewhere the mask is unchanged
    # Nothing to cut: the same mask as without an occluder, for any mode.
    for mode in ("hull", "intersection", "occlusion"):
        options = BlendOptions(mask=mode)
        np.testing.assert_array_equal(face_mask(scene.hard, learned_like(scene), options, np.zeros_like(bar)),
                                      face_mask(scene.hard, learned_like(scene), options))


# ---------------------------------------------------------------------------- colour


def test_mean_std_matches_the_original_lab_statistics(scene):
    mask = face_mask(scene.hard, None, BlendOptions())
    shifted = tint(scene.crop, gain=0.8)
    target = color_stats(scene.crop, mask)
    assert target.shape == (2, 3) and target.dtype == np.float32
    assert np.abs(color_stats(shifted, mask)[0] - target[0]).max() > 9
    matched = match_color(shifted, scene.crop, mask, "mean_std")
    assert matched.dtype == np.uint8 and matched.shape == scene.crop.shape
    got = color_stats(matched, mask)
    assert np.abs(got[0] - target[0]).max() < 0.5  # Lab mean, real units
    assert np.abs(got[1] - target[1]).max() < 0.5  # and spread
    # Stats passed in (as the converter does after smoothing them) give the same result.
    given = match_color(shifted, scene.crop, mask, "mean_std", stats=(color_stats(shifted, mask), target))
    np.testing.assert_array_equal(given, matched)


def test_histogram_match_closes_the_colour_gap(scene):
    mask = face_mask(scene.hard, None, BlendOptions())
    tinted = tint(scene.crop, gain=1.2)
    before = delta_e(tinted, scene.crop, mask)
    after = delta_e(match_color(tinted, scene.crop, mask, "histogram"), scene.crop, mask)
    assert before > 15 and after < 0.1 * before


def test_none_and_seamless_leave_the_face_alone(scene):
    mask = face_mask(scene.hard, None, BlendOptions())
    tinted = tint(scene.crop)
    for mode in ("none", "seamless"):
        np.testing.assert_array_equal(match_color(tinted, scene.crop, mask, mode), tinted)
    with pytest.raises(ValueError, match="unknown colour match"):
        match_color(tinted, scene.crop, mask, "lut")


# ---------------------------------------------------------------------------- paste


def test_paste_touches_only_the_mask_footprint_at_1080p(scene):
    big = scene.scaled(3.0)  # 1920 x 1080, face ~660 px
    assert big.frame.shape == (1080, 1920, 3)
    mask = face_mask(big.hard, None, BlendOptions())
    face = 255 - big.crop  # the negative: even the faintest rim of the mask changes pixels
    before = big.frame.copy()
    out = paste_face(big.frame, face, mask, big.matrix)
    np.testing.assert_array_equal(big.frame, before)  # input untouched
    reference = whole_frame_paste(big.frame, face, mask, big.matrix)
    assert np.abs(out.astype(int) - reference).max() <= 1  # same blend, just fewer pixels computed
    alpha = cv2.warpAffine(mask, invert_matrix(big.matrix), (1920, 1080))
    np.testing.assert_array_equal(out[alpha == 0], big.frame[alpha == 0])
    changed = np.argwhere((out != big.frame).any(axis=-1))
    assert len(changed) > 100_000 and changed.min(0)[0] > 100 and changed.max(0)[1] < 1800

    def best_of(fn, n=3):
        times = []
        for _ in range(n):
            start = time.perf_counter()
            fn(big.frame, face, mask, big.matrix)
            times.append(time.perf_counter() - start)
        return min(times)

    # Loose: the ROI is about a fifth of the frame (benchmarks time it properly).
    assert best_of(paste_face) < 0.7 * best_of(whole_frame_paste)


def test_paste_footprint_of_a_rolled_head(scene):
    rolled = scene.rolled(40)  # the crop square stands on a corner in the frame
    mask = face_mask(rolled.hard, None, BlendOptions())
    face = 255 - rolled.crop
    out = paste_face(rolled.frame, face, mask, rolled.matrix)
    assert np.abs(out.astype(int) - whole_frame_paste(rolled.frame, face, mask, rolled.matrix)).max() <= 1
    alpha = cv2.warpAffine(mask, invert_matrix(rolled.matrix), rolled.frame.shape[1::-1])
    np.testing.assert_array_equal(out[alpha == 0], rolled.frame[alpha == 0])


def test_paste_of_the_own_face_reproduces_the_frame(scene):
    for s in (scene, scene.scaled(0.3)):  # 0.3: a small face, the crop is area-shrunk first
        mask = face_mask(s.hard, None, BlendOptions())
        out = paste_face(s.frame, s.crop, mask, s.matrix)
        assert delta_e(out, s.frame, s.hard_frame) < 2.0


def test_empty_or_off_frame_mask_returns_a_copy(scene):
    empty = np.zeros((SIZE, SIZE), np.float32)
    out = paste_face(scene.frame, scene.crop, empty, scene.matrix)
    assert out is not scene.frame and np.array_equal(out, scene.frame)
    away = scene.matrix.copy()
    away[:, 2] -= 5000  # the face lands far off the frame
    np.testing.assert_array_equal(paste_face(scene.frame, scene.crop, face_mask(scene.hard, None, BlendOptions()),
                                             away), scene.frame)


@pytest.mark.parametrize("window", ["whole", "chin_cut", "left_cut", "corner"])
def test_seamless_clone_closes_the_gap_even_at_the_frame_edge(scene, window, caplog):
    s = {"whole": scene, "chin_cut": scene.cut(slice(60, 300), slice(None)),
         "left_cut": scene.cut(slice(None), slice(400, None)),
         "corner": scene.cut(slice(170, None), slice(420, None))}[window]
    mask = face_mask(s.hard, None, BlendOptions())
    tinted = tint(s.crop)
    with caplog.at_level(logging.WARNING, logger="swapline.ops.blend"):
        cloned = paste_face(s.frame, tinted, mask, s.matrix, seamless=True)
    assert not caplog.records  # no fallback
    plain = paste_face(s.frame, tinted, mask, s.matrix)
    assert delta_e(plain, s.frame, s.hard_frame) > 15
    assert delta_e(cloned, s.frame, s.hard_frame) < 4
    assert abs(boundary_gradient_ratio(cloned, s.frame, s.hard_frame) - 1) < 0.1
    alpha = cv2.warpAffine(mask, invert_matrix(s.matrix), s.frame.shape[1::-1])
    np.testing.assert_array_equal(cloned[alpha == 0], s.frame[alpha == 0])


def test_seamless_falls_back_to_alpha_blend_on_a_tiny_mask(scene, caplog):
    tiny = np.zeros((SIZE, SIZE), np.float32)
    tiny[128:130, 128:130] = 1.0
    with caplog.at_level(logging.WARNING, logger="swapline.ops.blend"):
        out = paste_face(scene.frame, scene.crop, tiny, scene.matrix, seamless=True)
    assert any("alpha blend instead" in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(out, paste_face(scene.frame, scene.crop, tiny, scene.matrix))


# ---------------------------------------------------------------------------- measures


def test_delta_e_in_real_lab_units(scene):
    mask = scene.hard
    assert delta_e(scene.crop, scene.crop, mask) == 0.0
    small, large = (delta_e(tint(scene.crop, (d, d, -d)), scene.crop, mask) for d in (3.0, 10.0))
    assert 3 < small < large < 20
    black, white = np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 255, np.uint8)
    assert delta_e(black, white, np.ones((8, 8))) == pytest.approx(100, abs=0.1)  # L* 0 vs 100
    assert np.isnan(delta_e(black, white, np.zeros((8, 8))))


def test_boundary_gradient_ratio_sees_seams(scene):
    mask = face_mask(scene.hard, None, BlendOptions())
    matched = match_color(scene.crop, scene.crop, mask, "mean_std")
    smooth = paste_face(scene.frame, matched, mask, scene.matrix)
    assert 0.8 < boundary_gradient_ratio(smooth, scene.frame, scene.hard_frame) < 1.15
    hard = paste_face(scene.frame, tint(scene.crop, (20.0, 12.0, -15.0)), scene.hard, scene.matrix)
    assert boundary_gradient_ratio(hard, scene.frame, scene.hard_frame) > 1.8
    assert boundary_gradient_ratio(scene.frame, scene.frame, scene.hard_frame) == pytest.approx(1.0)
