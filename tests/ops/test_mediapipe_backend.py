"""The `mediapipe` face backend (BlazeFace + FaceMesh via LiteRT) on real demo faces, against dlib."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from swapline import face_models
from swapline.ops import blazeface, facemesh, faces, tflite
from tests.conftest import video_frames

FRAMES = [3, 21, 45, 69]  # none of them among the frames MESH_TO_68 was checked on


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    # The set-up folder when ./dev filled it; else a private copy, fetched the same way. Never
    # fill the shared folder from here: "auto" would change backend halfway through a session.
    if tflite.models_present():
        return tflite.models_dir()
    return face_models.fetch(tmp_path_factory.mktemp("face_models"))


@pytest.fixture(scope="module")
def mediapipe(models_dir):
    return faces.FaceAnalyzer(faces.AnalyzerSettings(backend="mediapipe", detect_scale=1.0), face_models_dir=str(models_dir))


@pytest.fixture(scope="module")
def dlib_analyzer():
    return faces.FaceAnalyzer(faces.AnalyzerSettings(backend="dlib", detect_scale=1.0))


@pytest.fixture(scope="module")
def frames(media_dir):
    return video_frames(media_dir / "single_face.mp4", FRAMES)


def interocular(points: np.ndarray) -> float:
    return float(np.linalg.norm(points[45] - points[36]))


def test_anchors_match_the_model_outputs(models_dir):
    model = tflite.load_model(str(tflite.model_path(tflite.DETECTOR_FILE, models_dir)))
    anchors = blazeface.anchors()
    assert model.input_shape == (1, 192, 192, 3)
    assert sorted(model.output_shapes) == [(1, len(anchors), 1), (1, len(anchors), 16)]
    assert len(anchors) == 48 * 48 and np.allclose(anchors[1] - anchors[0], [1 / 48, 0])


def test_weighted_nms_merges_overlaps_and_keeps_separate_faces():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], np.float32)
    points = np.zeros((3, 6, 2), np.float32)
    merged = blazeface.weighted_nms(boxes, points, np.array([0.9, 0.3, 0.8], np.float32))
    assert len(merged) == 2
    np.testing.assert_allclose(merged[0][0], [0.25, 0, 10.25, 10], atol=1e-5)  # score-weighted
    assert merged[0][2] == pytest.approx(0.9)


def test_mesh_to_68_keeps_the_dlib_layout(mediapipe, frames):
    assert len(facemesh.MESH_TO_68) == 68 and len(set(facemesh.MESH_TO_68.tolist())) == 68
    face = mediapipe.detect(frames[FRAMES[0]])[0]
    p = face.landmarks
    assert face.dense is not None and face.dense.shape == (468, 3)
    np.testing.assert_array_equal(p, face.dense[facemesh.MESH_TO_68, :2])
    assert p[36:42, 0].mean() < p[42:48, 0].mean()  # image-left eye left of the other
    assert p[17:22, 0].mean() < p[22:27, 0].mean()  # brows likewise
    assert p[17:27, 1].mean() < p[36:48, 1].mean() < p[30, 1] < p[48:68, 1].mean() < p[8, 1]  # brows, eyes, nose, mouth, chin
    assert p[36:48, 0].min() < p[30, 0] < p[36:48, 0].max()  # nose between the eyes
    assert p[0, 0] < p[8, 0] < p[16, 0] and p[48, 0] < p[51, 0] < p[54, 0]  # jaw and mouth run left to right
    assert np.all(np.diff(p[27:31, 1]) > 0)  # nose bridge runs down to the tip


def test_landmarks_agree_with_dlib_on_frontal_frames(mediapipe, dlib_analyzer, frames):
    errors, pixels = [], []
    for index, frame in frames.items():
        ours, theirs = mediapipe.detect(frame), dlib_analyzer.detect(frame)
        assert len(ours) == 1 and len(theirs) == 1, index
        a, b = ours[0].landmarks, theirs[0].landmarks
        pixels.append(np.linalg.norm(a - b, axis=1))
        errors.append(pixels[-1] / interocular(b))
    errors = np.stack(errors)
    print(f"mean error vs dlib: {np.mean(pixels):.2f} px")
    groups = {"jaw": slice(0, 17), "brows": slice(17, 27), "nose": slice(27, 36), "eyes": slice(36, 48), "mouth": slice(48, 68)}
    print("mean error vs dlib (inter-ocular units):", round(float(errors.mean()), 4),
          {name: round(float(errors[:, s].mean()), 4) for name, s in groups.items()})
    assert errors[:, 17:].mean() < 0.08  # inner face: a few px at ~100 px eye span
    assert errors.mean() < 0.10


def test_group_photo_finds_the_faces_dlib_finds(mediapipe, dlib_analyzer, media_dir):
    image = np.asarray(Image.open(media_dir / "multi_face.jpg").convert("RGB"))
    ours, theirs = mediapipe.detect(image), dlib_analyzer.detect(image)
    print(f"multi_face.jpg: mediapipe {len(ours)} faces, dlib HOG {len(theirs)}")
    assert len(ours) == 5 and len(ours) >= len(theirs)  # the photo has five people, all frontal
    for face in ours:
        assert face.landmarks.shape == (68, 2) and 0.0 < face.score <= 1.0


def test_missing_model_files_say_how_to_fetch_them(tmp_path):
    with pytest.raises(tflite.FaceModelsMissing) as err:
        faces.FaceAnalyzer(faces.AnalyzerSettings(backend="mediapipe"), face_models_dir=str(tmp_path))
    message = str(err.value)
    assert tflite.DETECTOR_FILE in message and str(tmp_path) in message and "python -m swapline.face_models" in message


def test_auto_prefers_mediapipe_when_its_files_are_present(models_dir, tmp_path):
    auto = faces.AnalyzerSettings(backend="auto")
    no_fan = str(tmp_path / "no-fan")  # a hub folder without FAN's weights
    with_files = faces.FaceAnalyzer(auto, fan_weights_dir=no_fan, face_models_dir=str(models_dir))
    without = faces.FaceAnalyzer(auto, fan_weights_dir=no_fan, face_models_dir=str(tmp_path))
    assert with_files.resolved_backend == "mediapipe" and with_files.describe()["resolved_backend"] == "mediapipe"
    assert without.resolved_backend == "dlib" and without.describe()["resolved_backend"] == "dlib"


def test_a_frame_blazeface_misses_falls_back_to_dlib(mediapipe, frames, monkeypatch):
    monkeypatch.setattr(mediapipe._mediapipe, "detector", lambda image: [])
    found = mediapipe.detect(frames[FRAMES[0]])
    assert len(found) == 1 and found[0].dense is not None
    assert found[0].landmarks[36:42, 0].mean() < found[0].landmarks[42:48, 0].mean()


def test_facemesh_rejects_blazeface_boxes_without_a_face(mediapipe, media_dir):
    # noface_face.mov: before the face comes in, BlazeFace scores a few boxes just over its
    # threshold; FaceMesh's face-present confidence for them is near 0, and dlib finds nothing.
    frames = video_frames(media_dir / "noface_face.mov", [80, 85])
    for frame in frames.values():
        assert mediapipe._mediapipe.detector(frame)  # the raw detector does fire here
        assert mediapipe.detect(frame) == []
