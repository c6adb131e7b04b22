"""Face detection, landmarks, alignment, embeddings and attributes on real demo faces."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from PIL import Image

from swapline.demo_media import fetch
from swapline.ops import faces
from tests.conftest import video_frame


@pytest.fixture(scope="module")
def media():
    return fetch()


@pytest.fixture(scope="module")
def analyzer():
    return faces.FaceAnalyzer(faces.AnalyzerSettings(backend="dlib", detect_scale=1.0))  # the dlib-specific tests


@pytest.fixture(scope="module")
def still(media):
    return np.asarray(Image.open(media / "single_face.jpg").convert("RGB"))


@pytest.fixture(scope="module")
def still_face(analyzer, still):
    found = analyzer.detect(still)
    assert len(found) == 1
    return found[0]


def test_template_is_the_mean_face():
    t = faces.TEMPLATE_68
    assert t.shape == (68, 2)
    inner = t[17:]
    assert inner.min() >= 0.0 and inner.max() <= 1.0
    assert t[36:42, 0].mean() < t[42:48, 0].mean()  # image-left eye left of the other
    assert t[36:48, 1].mean() < t[30, 1] < t[48:68, 1].mean() < t[8, 1]  # eyes, nose, mouth, chin
    # The jaw was made symmetric about the inner template's midline.
    mid = t[27:31, 0].mean()
    np.testing.assert_allclose(t[:17, 0] - mid, -(t[16::-1, 0] - mid), atol=1e-4)


def test_alignment_matrix_recovers_a_known_similarity():
    target = faces.template_points(256, 0.3)
    angle, scale = math.radians(25), 0.7
    forward = np.array([[scale * math.cos(angle), -scale * math.sin(angle), 40.0],
                        [scale * math.sin(angle), scale * math.cos(angle), -12.0]])
    source = faces.transform_points(target, faces.invert_matrix(forward))
    matrix = faces.alignment_matrix(source, 256, 0.3)
    np.testing.assert_allclose(matrix, forward, atol=1e-9)
    # A mirrored face still gets a proper rotation, never a reflection.
    mirrored = source * np.array([-1.0, 1.0])
    assert np.linalg.det(faces.alignment_matrix(mirrored, 256, 0.3)[:, :2]) > 0


def test_landmarks_on_a_real_face(still_face, still):
    x0, y0, x1, y1 = still_face.bbox
    points = still_face.landmarks
    assert points.shape == (68, 2) and points.dtype == np.float32
    slack = 0.1 * (x1 - x0)  # dlib's box is tight; jaw points may touch its edge
    assert (points[:, 0] >= x0 - slack).all() and (points[:, 0] <= x1 + slack).all()
    assert (points[:, 1] >= y0 - slack).all() and (points[:, 1] <= y1 + slack).all()
    left_eye, right_eye = points[36:42].mean(axis=0), points[42:48].mean(axis=0)
    nose, mouth = points[30], points[48:68].mean(axis=0)
    assert left_eye[0] < right_eye[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < mouth[1]
    assert still_face.score > 0


def test_alignment_maps_a_real_face_onto_the_template(still_face, still):
    size, padding = 256, 0.3
    matrix = faces.alignment_matrix(still_face.landmarks, size, padding)
    aligned = faces.transform_points(still_face.landmarks, matrix)
    target = faces.template_points(size, padding)
    error = np.linalg.norm(aligned[17:] - target[17:], axis=1)
    # Measured 3.7 px: what is left is this smiling face's own shape, not the fit.
    assert error.mean() < 4.5
    # Least squares: nudging the fitted matrix only makes it worse.
    for delta in np.eye(6) * 1e-3:
        worse = faces.transform_points(still_face.landmarks[17:], matrix + delta.reshape(2, 3))
        assert (np.linalg.norm(worse - target[17:], axis=1) ** 2).sum() > (error**2).sum()
    crop = faces.align_face(still, matrix, size)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    # Upscaling (scale ~1.04 here) warps only the face's region: same pixels as a full warp.
    direct = cv2.warpAffine(still, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    assert np.abs(crop.astype(int) - direct).max() <= 1
    back = faces.transform_points(aligned, faces.invert_matrix(matrix))
    np.testing.assert_allclose(back, still_face.landmarks, atol=1e-3)


def test_align_face_downscales_a_big_face_without_shifting_it(still_face, still):
    # A 64 px crop of a ~150 px face (scale 0.26) takes the INTER_AREA pre-shrink path. It
    # must land on the same pixels as a warp of the anti-aliased (blurred) photo: measured
    # 1.4 grey levels apart, versus 4.9 for a plain, aliasing warp.
    matrix = faces.alignment_matrix(still_face.landmarks, 64, 0.3)
    crop = faces.align_face(still, matrix, 64).astype(float)
    smooth = cv2.GaussianBlur(still, (0, 0), 0.5 / faces.matrix_scale(matrix))
    reference = cv2.warpAffine(smooth, matrix, (64, 64), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    assert np.abs(crop - reference).mean() < 2.5


def test_detect_scale_finds_the_same_face(media, analyzer):
    half = faces.FaceAnalyzer(faces.AnalyzerSettings(backend="dlib", detect_scale=0.5))
    for name in ("WolfgangLanger_Pexels.mp4", "single_face.mp4"):
        frame = video_frame(media / name, 0)
        full, fast = analyzer.detect(frame), half.detect(frame)
        assert len(full) == len(fast) == 1
        # Landmarks come from the full-resolution frame either way (measured < 1 px apart).
        assert np.linalg.norm(full[0].landmarks - fast[0].landmarks, axis=1).mean() < 3


def test_small_faces_are_dropped_and_counted(still):
    strict = faces.FaceAnalyzer(faces.AnalyzerSettings(backend="dlib", detect_scale=1.0, min_face=400))
    assert strict.detect_with_stats(still) == ([], 1)


def test_no_face(media, analyzer):
    assert analyzer.detect_with_stats(video_frame(media / "no_face.mp4", 0)) == ([], 0)


def test_multiple_faces_largest_first(media, analyzer):
    group = np.asarray(Image.open(media / "multi_face.jpg").convert("RGB"))
    found = analyzer.detect(group)
    assert len(found) >= 3
    areas = [(f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]) for f in found]
    assert areas == sorted(areas, reverse=True)


def test_embeddings_separate_two_people(media, analyzer):
    def embed(name, index):
        frame = video_frame(media / name, index)
        return analyzer.embed(frame, analyzer.detect(frame)[0])

    # Frames 0 and 300: the woman's face unoccluded (around frame 120 her hand covers it).
    woman_a, woman_b = embed("WolfgangLanger_Pexels.mp4", 0), embed("WolfgangLanger_Pexels.mp4", 300)
    man = embed("single_face.mp4", 0)
    assert woman_a.shape == (128,) and woman_a.dtype == np.float32
    same = np.linalg.norm(woman_a - woman_b)
    assert same < 0.6  # measured 0.50
    assert min(np.linalg.norm(woman_a - man), np.linalg.norm(woman_b - man)) > 0.6  # 0.80, 0.85
    assert faces.embedding_distance(man, np.stack([woman_a, woman_b])) > 0.6


@pytest.mark.parametrize("yaw,pitch,roll", [(20, 0, 0), (0, 15, 0), (0, 0, 10), (-25, -10, 5)])
def test_head_pose_recovers_a_projected_head(yaw, pitch, roll):
    rotation = None
    for axis, degrees in (("z", roll), ("y", yaw), ("x", pitch)):
        c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
        step = {
            "z": [[c, -s, 0], [s, c, 0], [0, 0, 1]],
            "y": [[c, 0, -s], [0, 1, 0], [s, 0, c]],  # positive: nose toward image right
            "x": [[1, 0, 0], [0, c, s], [0, -s, c]],  # positive: nose up
        }[axis]
        rotation = np.array(step) if rotation is None else rotation @ np.array(step)
    camera = np.array([[640.0, 0, 320], [0, 640.0, 240], [0, 0, 1]])
    rvec, _ = cv2.Rodrigues(rotation)
    projected, _ = cv2.projectPoints(faces._POSE_MODEL, rvec, np.array([15.0, -10.0, 3000.0]), camera, None)
    landmarks = np.zeros((68, 2))
    landmarks[list(faces._POSE_POINTS)] = projected.reshape(-1, 2)
    expected = faces.pose_angles(rotation)
    np.testing.assert_allclose(faces.head_pose(landmarks, (480, 640, 3)), expected, atol=0.5)
    assert np.sign(expected[0]) == np.sign(yaw) and np.sign(expected[2]) == np.sign(roll)
    assert np.sign(expected[1]) == np.sign(pitch)


def test_head_pose_signs_on_a_real_face(analyzer, still, still_face):
    yaw, pitch, roll = faces.head_pose(still_face.landmarks, still.shape)
    assert abs(yaw) < 30 and abs(pitch) < 30 and abs(roll) < 15  # a near-frontal portrait
    mirrored = np.ascontiguousarray(still[:, ::-1])
    m_yaw, _, m_roll = faces.head_pose(analyzer.detect(mirrored)[0].landmarks, mirrored.shape)
    assert np.sign(m_yaw) == -np.sign(yaw) and abs(m_yaw + yaw) < 8
    centre = (still.shape[1] / 2, still.shape[0] / 2)
    turned = cv2.warpAffine(still, cv2.getRotationMatrix2D(centre, -15, 1.0), still.shape[1::-1])  # clockwise
    _, _, t_roll = faces.head_pose(analyzer.detect(turned)[0].landmarks, turned.shape)
    assert abs((t_roll - roll) - 15) < 4


def test_hull_mask(still_face):
    size = 256
    points = faces.transform_points(still_face.landmarks, faces.alignment_matrix(still_face.landmarks, size, 0.3))
    hard = faces.hull_mask(points, size, 0)
    soft = faces.hull_mask(points, size, 12)
    for mask in (hard, soft):
        assert mask.shape == (size, size) and mask.dtype == np.float32
        assert mask.min() >= 0 and mask.max() <= 1
    nose = np.round(points[30]).astype(int)
    assert soft[nose[1], nose[0]] == pytest.approx(1.0) and soft[0, 0] == 0.0
    # Raised brows: just above the highest brow point is still inside.
    brow = np.round(points[19]).astype(int)
    assert hard[brow[1] - 8, brow[0]] == 1.0
    assert ((soft > 0.05) & (soft < 0.95)).sum() > ((hard > 0.05) & (hard < 0.95)).sum()


def test_sharpness_and_brightness(still_face, still):
    crop = faces.align_face(still, faces.alignment_matrix(still_face.landmarks, 256, 0.3), 256)
    blurred = cv2.GaussianBlur(crop, (0, 0), 2.0)
    assert faces.sharpness(blurred) < faces.sharpness(crop) / 2
    gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    assert faces.sharpness(gray) == pytest.approx(faces.sharpness(crop), rel=0.05)
    mean, std = faces.brightness_contrast(crop)
    brighter, same_std = faces.brightness_contrast(np.clip(crop.astype(int) + 10, 0, 255).astype(np.uint8))
    assert 0 < mean < 255 and std > 0
    assert brighter > mean and same_std == pytest.approx(std, rel=0.05)


def test_backends_and_settings(tmp_path):
    assert faces.AnalyzerSettings().as_dict()["detect_scale"] == 0.5
    assert faces.FaceAnalyzer(faces.AnalyzerSettings(backend="auto")).settings.backend == "auto"
    with pytest.raises(FileNotFoundError):  # no FAN weights in an empty hub folder
        faces.FaceAnalyzer(faces.AnalyzerSettings(backend="fan"), fan_weights_dir=str(tmp_path))
    with pytest.raises(ValueError):
        faces.FaceAnalyzer(faces.AnalyzerSettings(detector="mtcnn"))


# Hand-read on an 8x nearest-neighbour enlargement of scikit-image's astronaut (512 x 512 RGB)
# with a 10 px grid drawn on it, in pixel coordinates (x right, y down): each eye's centre
# (midway between its corners, on the iris), the nose tip (the highlight just above the
# nostrils) and the mouth's centre (midway between its corners, on the teeth). A dlib overlay
# on the same enlargement was then checked by eye: every point sits on its feature.
ASTRONAUT_EYE_IMAGE_LEFT = (203.0, 101.5)  # the subject's right eye
ASTRONAUT_EYE_IMAGE_RIGHT = (246.0, 103.0)
ASTRONAUT_NOSE_TIP = (224.5, 127.0)
ASTRONAUT_MOUTH = (223.5, 145.0)


def test_dlib_landmarks_land_on_the_astronauts_features(analyzer):
    from skimage import data  # ships the photo in its wheel: no download

    (face,) = analyzer.detect(data.astronaut())  # an ~90 px face: needs detect_scale 1.0
    points = face.landmarks
    found = {
        "eye_image_left": points[36:42].mean(axis=0),
        "eye_image_right": points[42:48].mean(axis=0),
        "nose_tip": points[30],
        "mouth": points[48:68].mean(axis=0),
    }
    expected = {"eye_image_left": ASTRONAUT_EYE_IMAGE_LEFT, "eye_image_right": ASTRONAUT_EYE_IMAGE_RIGHT,
                "nose_tip": ASTRONAUT_NOSE_TIP, "mouth": ASTRONAUT_MOUTH}
    for name, position in expected.items():
        assert np.linalg.norm(found[name] - np.array(position)) < 4.0, (name, found[name], position)
