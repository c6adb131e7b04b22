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
    monkeypatch.setattr(mediapipe._mediapipe, "detector", lambda image, min_face=None: [])
    found = mediapipe.detect(frames[FRAMES[0]])
    assert len(found) == 1 and found[0].dense is not None
    assert found[0].landmarks[36:42, 0].mean() < found[0].landmarks[42:48, 0].mean()


def test_facemesh_rejects_blazeface_boxes_without_a_face(mediapipe, media_dir):
    # noface_face.mov: before the face comes in, BlazeFace scores a few boxes just over its
    # threshold; FaceMesh's face-present confidence for them is near 0, and dlib finds nothing.
    frames = video_frames(media_dir / "noface_face.mov", [80, 85])
    lenient = blazeface.BlazeFace(mediapipe.face_models_dir, min_score=0.5)  # MediaPipe's own threshold
    for frame in frames.values():
        assert lenient(frame)  # the raw detector does fire here at MediaPipe's threshold
        found, meshes = mediapipe._mediapipe.detect(frame)  # ours (0.6), then FaceMesh: nothing
        assert found == [] and meshes == []
        assert max(facemesh.FaceMesh(mediapipe.face_models_dir)(frame, facemesh.roi_from_detection(
            tuple(float(v) for v in d.box), d.keypoints[[0, 1]])).presence for d in lenient(frame)) < facemesh.MIN_PRESENCE
        assert mediapipe.detect(frame) == []


def test_windows_cover_every_face_size_down_to_min_face():
    wins = blazeface.windows(1080, 1920, 40)
    assert wins[0] == (0, 0, 1920, 1080)
    for x0, y0, x1, y1 in wins:
        assert 0 <= x0 < x1 <= 1920 and 0 <= y0 < y1 <= 1080
    tiles = sorted({x1 - x0 for x0, y0, x1, y1 in wins[1:] if x1 - x0 == y1 - y0})
    assert tiles[0] == 384 and all(b == 2 * a for a, b in zip(tiles, tiles[1:]))  # 40 px -> 20 input px
    # Any face from 40 px up lies whole inside a tile of a level that sees it (side <= 9.6x the
    # face, overlap T/4): check a grid of positions.
    for size in (40, 90, 150, 300):
        for x in range(0, 1920 - size, 97):
            for y in range(0, 1080 - size, 89):
                assert any(x0 <= x and y0 <= y and x + size <= x1 and y + size <= y1 and x1 - x0 <= 9.6 * size
                           for x0, y0, x1, y1 in wins)
    assert blazeface.windows(360, 640, None) == [(0, 0, 640, 360)]  # without min_face: the whole frame only


def test_small_faces_in_a_large_photo_are_found_down_to_min_face(mediapipe, frames):
    """Faces of 50-110 px in a 1920x1080 photo: ~5-11 px of the model's input if it saw the whole
    photo. The tiles that min_face sets find every one."""
    import cv2

    face = frames[FRAMES[0]]  # 640x360, one face ~190 px wide
    canvas = np.full((1080, 1920, 3), 120, np.uint8)
    placed = []
    for i, width in enumerate((50, 60, 75, 90, 110)):
        small = cv2.resize(face, None, fx=width / 190, fy=width / 190, interpolation=cv2.INTER_AREA)
        x, y = 10 + i * 380, 150 + (i % 2) * 450
        canvas[y:y + small.shape[0], x:x + small.shape[1]] = small
        placed.append((x, y, x + small.shape[1], y + small.shape[0]))
    whole = mediapipe._mediapipe.detector(canvas)
    tiled = mediapipe._mediapipe.detector(canvas, min_face=40)
    assert len(whole) < 5 and len(tiled) == 5
    for x0, y0, x1, y1 in placed:  # each detection inside the picture it came from
        assert sum(x0 <= d.box[0] + (d.box[2] - d.box[0]) / 2 <= x1 and y0 <= d.box[1] + (d.box[3] - d.box[1]) / 2 <= y1
                   for d in tiled) == 1


def test_worker_processes_give_the_serial_records(models_dir, frames, tmp_path, monkeypatch):
    import hashlib

    from swapline.ops import extract
    from swapline.ops.images import encode_jpeg

    entries = []
    for index, frame in frames.items():
        data = encode_jpeg(frame)
        (tmp_path / f"{index}.jpg").write_bytes(data)
        entries.append({"index": index, "timestamp": index / 24, "file": f"{index}.jpg",
                        "sha256": hashlib.sha256(data).hexdigest(), "photo": ""})
    analyzer = faces.FaceAnalyzer(faces.AnalyzerSettings(backend="auto"), face_models_dir=str(models_dir))
    assert analyzer.resolved_backend == "mediapipe"
    options = {"identity": "a", "source": "s", "reference": None, "max_distance": 0.6}
    serial, serial_stats = extract.extract_faces(tmp_path, {"frames": entries}, analyzer, workers=1, **options)
    monkeypatch.setattr(extract, "POOL_MIN_FRAMES", 1)
    monkeypatch.setattr(extract, "CHUNK_FRAMES", 2)
    pooled, stats = extract.extract_faces(tmp_path, {"frames": entries}, analyzer, workers=2, **options)
    assert stats["workers"] == 2 and serial_stats["workers"] == 1 and len(serial) == len(frames)
    for a, b in zip(pooled, serial):
        assert a.face_id == b.face_id and np.array_equal(a.landmarks, b.landmarks) and a.image == b.image


def test_threads_run_their_own_interpreters_with_the_serial_results():
    """A converter detects in threads: each gets its own interpreter (LiteRT releases the GIL, so
    they run in parallel; one shared interpreter behind a lock held a 16-core machine to one
    core), and what each computes is what one thread computes alone."""
    import threading

    from swapline.ops.tflite import MODEL_FILES, load_model, models_dir

    model = load_model(str(models_dir() / MODEL_FILES[0]))
    rng = np.random.default_rng(0)
    inputs = [rng.random(model.input_shape, dtype=np.float32) for _ in range(4)]
    serial = [model(x) for x in inputs]
    results, interpreters = [None] * 4, [None] * 4

    def work(i: int) -> None:
        interpreters[i] = model._interpreter()
        results[i] = model(inputs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(i) for i in interpreters}) == 4
    for got, want in zip(results, serial):
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)


def test_target_analysis_detects_in_threads_in_frame_order(mediapipe, media_dir, monkeypatch):
    """target_faces detects on every core with MediaPipe: the faces per frame, their order and
    the seeded frames are what one thread gives (tracking and embedding run after, in order)."""
    from swapline.ops import target

    clip = video_frames(media_dir / "noface_face.mov", range(0, 160, 8))  # frames with and without a face
    frames = [(i, i / 30, rgb) for i, rgb in sorted(clip.items())]
    seeds = {frames[3][0]: []}
    monkeypatch.setattr(target.os, "cpu_count", lambda: 4)
    threaded = list(target._detected(mediapipe, iter(frames), seeds))
    assert [f[0] for f in threaded] == [f[0] for f in frames]
    assert threaded[3][3] == []
    for index, _, rgb, got in threaded:
        if index in seeds:
            continue
        want = mediapipe.detect(rgb)
        assert [f.bbox for f in got] == [f.bbox for f in want]
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g.landmarks, w.landmarks)
    assert sum(bool(f[3]) for f in threaded) > 0 and sum(not f[3] for f in threaded) > 1
