"""`mask: occlusion` on the real demo clip: MediaPipe Hands (BlazePalm + hand landmarks via LiteRT)
finds the hand over the woman's mouth, the blend mask leaves the labelled hand pixels alone
where the hull mask paints over them, a frame without hands keeps the hull mask, the cut is
held over a missed detection, and missing model files say how to fetch them."""

from __future__ import annotations

import hashlib
import json
import logging

import cv2
import numpy as np
import pytest

from swapline import face_models
from swapline.ops import blazepalm, hands, occlusion, tflite
from swapline.ops.alignment import alignment_matrix, hull_mask, transform_points
from swapline.ops.blend import BlendOptions, face_mask
from tests.conftest import REPO, video_frames

CLIP = "WolfgangLanger_Pexels.mp4"
LABELS = json.loads((REPO / "tests" / "fixtures" / "hand_frames.json").read_text())
HAND_FRAMES = sorted(int(k) for k in LABELS["frames"])  # 72, 120, 168, 204: the hand over the mouth
FIRST_HAND = 58  # the palm detector first finds the raised hand about here; the tracker follows it
NO_HANDS = [0, 24, 300, 420]  # hands nowhere in the frame
SIZE = 256
logger = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    # The set-up folder when set-up filled it; else a private copy, fetched the same way (never
    # fill the shared folder from a test).
    if all((tflite.models_dir() / name).is_file() for name in (*tflite.MODEL_FILES, *tflite.HAND_FILES)):
        return tflite.models_dir()
    return face_models.fetch(tmp_path_factory.mktemp("mediapipe_models"))


@pytest.fixture(scope="module")
def clip_frames(media_dir):
    return video_frames(media_dir / CLIP, [*range(FIRST_HAND - 8, max(HAND_FRAMES) + 1), *NO_HANDS])


@pytest.fixture(scope="module")
def faces(models_dir, clip_frames):
    """Frame index -> the woman's face (one in every frame of the clip)."""
    from swapline.ops.faces import AnalyzerSettings, FaceAnalyzer

    analyzer = FaceAnalyzer(AnalyzerSettings(backend="mediapipe", detect_scale=1.0), face_models_dir=str(models_dir))
    return {i: analyzer.detect(frame)[0] for i, frame in clip_frames.items()}


@pytest.fixture(scope="module")
def landmarks(faces):
    return {i: face.landmarks for i, face in faces.items()}


@pytest.fixture(scope="module")
def tracked(models_dir, clip_frames, faces):
    """Frame index -> hands found, the tracker fed every frame in order with the face's box, as
    the converter does."""
    tracker = hands.HandTracker(str(models_dir))
    return {i: tracker(clip_frames[i], [faces[i].bbox]) for i in range(FIRST_HAND - 8, max(HAND_FRAMES) + 1)}


def labelled(index: int, shape=(360, 640)) -> np.ndarray:
    """(H, W) bool: the hand drawn in tests/fixtures/hand_frames.json."""
    mask = np.zeros(shape, np.uint8)
    for polygon in LABELS["frames"][str(index)]:
        cv2.fillPoly(mask, [np.array(polygon, np.int32)], 1)
    return mask.astype(bool)


def blend_alpha(points: np.ndarray, mask_name: str, frame_occluder=None, shape=(360, 640)) -> np.ndarray:
    """(H, W) alpha the swapped face is pasted with: one face's blend mask put back in the frame."""
    matrix = alignment_matrix(points, SIZE, 0.3)
    hull = hull_mask(transform_points(points, matrix), SIZE, 0)
    cut = None if frame_occluder is None else occlusion.warp_to_crop(frame_occluder, matrix, SIZE)
    return occlusion.to_frame(face_mask(hull, None, BlendOptions(mask=mask_name), cut), matrix, shape)


def test_model_files_are_pinned_and_match_the_decoder(models_dir):
    for name in tflite.HAND_FILES:
        assert hashlib.sha256((models_dir / name).read_bytes()).hexdigest() == face_models.SHA256[name], name
    assert "hand_landmark_full.tflite" in (models_dir / face_models.NOTICE_FILE).read_text()
    palm = tflite.load_model(str(models_dir / tflite.PALM_FILE))
    anchors = blazepalm.anchors()
    assert palm.input_shape == (1, 192, 192, 3) and len(anchors) == 24 * 24 * 2 + 12 * 12 * 6 == 2016
    assert sorted(palm.output_shapes) == [(1, 2016, 1), (1, 2016, 18)]
    np.testing.assert_allclose(anchors[0], anchors[1])  # two anchors per cell of the stride-8 grid
    np.testing.assert_allclose(anchors[2] - anchors[0], [1 / 24, 0], atol=1e-6)
    np.testing.assert_allclose(anchors[1152:1158], np.full((6, 2), 0.5 / 12), atol=1e-6)  # six per stride-16 cell
    assert tflite.load_model(str(models_dir / tflite.HAND_LANDMARK_FILE)).input_shape == (1, 224, 224, 3)


def test_hands_are_found_where_the_hand_covers_the_mouth(models_dir, clip_frames, faces, tracked):
    assert blazepalm.BlazePalm(str(models_dir))(clip_frames[FIRST_HAND + 2]), "the palm detector finds the raised hand"
    for index in HAND_FRAMES:
        found = tracked[index]
        assert len(found) == 1 and found[0].presence > 0.9, index
        drawn, truth = hands.hand_mask(clip_frames[index].shape, found) > 0.5, labelled(index)
        recall, extra = (drawn & truth).sum() / truth.sum(), (drawn & ~truth).sum() / truth.sum()
        logger.info("frame %d: the hand mask covers %.3f of the labelled hand, adds %.3f of its area", index, recall, extra)
        assert recall > 0.85, (index, recall)
        assert extra < 1.0, (index, extra)  # the hand, not the whole lower face
    assert not any(tracked[i] for i in range(FIRST_HAND - 8, FIRST_HAND - 3)), "no hand before she raises it"
    tracker = hands.HandTracker(str(models_dir))
    for index in NO_HANDS:
        tracker.reset()
        assert tracker(clip_frames[index]) == [] and tracker(clip_frames[index], [faces[index].bbox]) == [], index


def test_occlusion_mask_keeps_the_swap_off_the_labelled_hand(clip_frames, tracked, landmarks):
    painted = {"hull": [], "occlusion": []}  # per frame: share of labelled hand pixels pasted over (alpha > 0.5)
    for index in HAND_FRAMES:
        truth = labelled(index)
        occluder = hands.hand_mask(clip_frames[index].shape, tracked[index])
        for name in painted:
            alpha = blend_alpha(landmarks[index], name, occluder if name == "occlusion" else None)
            painted[name].append(float((alpha[truth] > 0.5).mean()))
    logger.info("labelled hand pixels painted over: hull %s, occlusion %s", painted["hull"], painted["occlusion"])
    hull, occ = np.mean(painted["hull"]), np.mean(painted["occlusion"])
    assert hull > 0.25 and min(painted["hull"]) > 0.1  # the failure the option fixes: the hull covers the hand
    assert occ < 0.02 and max(painted["occlusion"]) < 0.05
    # Where a finger crosses the face edge the blend still ends: no more than a thin rim is swapped.
    assert all(o < 0.2 * h for o, h in zip(painted["occlusion"], painted["hull"]))


def test_a_frame_without_hands_keeps_the_hull_mask(models_dir, clip_frames, faces, landmarks):
    cut = occlusion.Occlusion(models_dir=str(models_dir))
    for index in NO_HANDS:
        frame_occluder = cut.frame_mask(clip_frames[index], [faces[index].bbox])
        assert frame_occluder.shape == (360, 640) and not frame_occluder.any(), index
        points = landmarks[index]
        matrix = alignment_matrix(points, SIZE, 0.3)
        hull = hull_mask(transform_points(points, matrix), SIZE, 0)
        crop_cut = cut.crop_mask(frame_occluder, matrix, SIZE, track_id=7, t=index / 24)
        np.testing.assert_array_equal(face_mask(hull, None, BlendOptions(mask="occlusion"), crop_cut),
                                      face_mask(hull, None, BlendOptions(mask="hull")))


def test_the_cut_is_held_over_a_missed_detection_and_released_gradually(clip_frames, tracked, landmarks):
    index, dt = HAND_FRAMES[1], 1001 / 24000  # the clip's frame interval
    matrix = alignment_matrix(landmarks[index], SIZE, 0.3)
    seen = occlusion.warp_to_crop(hands.hand_mask(clip_frames[index].shape, tracked[index]), matrix, SIZE)
    missed = occlusion.warp_to_crop(hands.hand_mask(clip_frames[index].shape, []), matrix, SIZE)  # a dropped detection
    assert seen.mean() > 0.05 and not missed.any()
    smoother = occlusion.OccluderSmoother()
    # Detected at t-1 and t+1, missed at t: t still cuts the whole hand.
    outputs = [smoother(3, k * dt, mask) for k, mask in enumerate([seen, missed, seen])]
    np.testing.assert_array_equal(outputs[1], seen)
    # Then the hand goes for good: the cut stays for HOLD_S, then fades out a bounded step per frame.
    outputs += [smoother(3, (3 + k) * dt, missed) for k in range(12)]
    steps = [float(np.abs(b - a).max()) for a, b in zip(outputs[2:], outputs[3:])]
    assert max(steps) <= dt / occlusion.FADE_S + 1e-5, steps
    assert np.array_equal(outputs[4], seen) and not outputs[-1].any()
    # Another face's track has its own history.
    assert not smoother(4, 15 * dt, missed).any()


def test_real_detections_do_not_flicker_through_the_smoother(clip_frames, tracked, landmarks):
    """Over the frames where the hand covers the mouth the held cut changes less from frame to
    frame than the raw per-frame hand masks (landmark wobble, the odd dropped frame)."""
    matrix = alignment_matrix(landmarks[HAND_FRAMES[1]], SIZE, 0.3)  # one fixed crop: the hand moves in it
    raw = [occlusion.warp_to_crop(hands.hand_mask((360, 640), tracked[i]), matrix, SIZE) for i in range(100, 141)]
    smoother = occlusion.OccluderSmoother()
    held = [smoother(1, k * 1001 / 24000, mask) for k, mask in enumerate(raw)]
    change = [np.mean([np.abs(b - a).mean() for a, b in zip(seq, seq[1:])]) for seq in (raw, held)]
    logger.info("mean change between consecutive cuts: raw %.4f, held %.4f", *change)
    assert change[1] < change[0]
    assert all(h.min() >= 0 and h.max() <= 1 for h in held)


def test_missing_hand_models_name_the_file_and_the_command(tmp_path, models_dir):
    with pytest.raises(tflite.FaceModelsMissing) as error:
        occlusion.Occlusion(models_dir=str(tmp_path))
    message = str(error.value)
    assert tflite.PALM_FILE in message and str(tmp_path) in message and tflite.SETUP_COMMAND in message
    (tmp_path / tflite.PALM_FILE).write_bytes((models_dir / tflite.PALM_FILE).read_bytes())
    with pytest.raises(tflite.FaceModelsMissing, match=tflite.HAND_LANDMARK_FILE):
        hands.HandTracker(str(tmp_path))


def test_overlay_shows_the_mask_used(clip_frames, tracked, landmarks):
    index = HAND_FRAMES[0]
    frame = clip_frames[index]
    occluder = hands.hand_mask(frame.shape, tracked[index])
    alpha = blend_alpha(landmarks[index], "occlusion", occluder)
    shown = occlusion.overlay(frame, alpha, occluder)
    assert shown.shape == frame.shape and shown.dtype == np.uint8
    untouched = (alpha < 1e-6) & (occluder < 1e-6)
    np.testing.assert_array_equal(shown[untouched], frame[untouched])
    inside, cut = alpha > 0.9, occluder > 0.9
    assert shown[inside, 1].mean() > frame[inside, 1].mean() + 20  # green over the swapped face
    assert shown[cut, 0].mean() > frame[cut, 0].mean() + 20  # red over the hand


@pytest.fixture(scope="module")
def model(tmp_path_factory, clip_frames, landmarks):
    """A model trained two steps: its faces are not hers, which is all a paste test needs."""
    from swapline.ops.faces import align_face
    from swapline.ops.inference import load_for_inference
    from swapline.ops.model import ModelConfig
    from swapline.ops.train import TrainConfig, train

    crops = np.stack([align_face(clip_frames[i], alignment_matrix(landmarks[i], 128, 0.3), 128) for i in NO_HANDS])
    folder = tmp_path_factory.mktemp("model")
    train(crops, crops[::-1].copy(), None, None, ModelConfig(), TrainConfig(iterations=2, batch_size=4), "cpu",
          checkpoint_dir=folder)
    return load_for_inference(folder)


def test_a_conversion_with_mask_occlusion_leaves_the_fingers(media_dir, models_dir, model, tmp_path):
    """The converter end to end, from where the hand is raised to past frame 120: with 'hull'
    the swap covers the labelled fingers, with 'occlusion' they come through as they were."""
    from swapline.ops.convert import Converter, convert_video
    from swapline.ops.convert_options import ConvertOptions
    from swapline.ops.faces import AnalyzerSettings, FaceAnalyzer
    from swapline.ops.provenance import container_tags

    analyzer = FaceAnalyzer(AnalyzerSettings(backend="mediapipe", face_size=128), face_models_dir=str(models_dir))
    index = HAND_FRAMES[1]
    source = video_frames(media_dir / CLIP, [index])[index]
    truth = labelled(index)
    changed = {}
    for mask in ("hull", "occlusion"):
        options = ConvertOptions(mask=mask, start=2.4, end=5.1, side_by_side=mask == "occlusion")
        converter = Converter(analyzer, model, "a", "cpu", options, models_dir=str(models_dir))
        stats = convert_video(media_dir / CLIP, tmp_path / f"{mask}.mp4", converter, tags=container_tags("c", "s"))
        assert stats["swapped"] >= 60
        out = video_frames(tmp_path / f"{mask}.mp4", [index])[index]
        if options.side_by_side:
            shown, out = out[:, :640], out[:, 640:]
            assert shown[truth, 0].mean() > source[truth, 0].mean() + 20  # the preview tints the cut red
        diff = np.abs(out.astype(int) - source).max(axis=2)  # (H, W)
        changed[mask] = float((diff[truth] > 24).mean())
    logger.info("labelled hand pixels changed in the converted frame %d: %s", index, changed)
    assert changed["hull"] > 0.25 and changed["occlusion"] < 0.03


def test_a_jump_in_frames_starts_the_hand_tracking_afresh(models_dir, clip_frames, faces):
    """Frames the converter does not blend (no face to swap, outside start/end) never reach the
    tracker: after such a gap a hand's old place is not carried over."""
    occ = occlusion.Occlusion(("hands",), str(models_dir))
    tracker, resets = occ.occluders[0].tracker, []
    real_reset = tracker.reset
    occ.occluders[0].reset = lambda: resets.append(len(tracker._rois)) or real_reset()
    for index in range(FIRST_HAND, HAND_FRAMES[0] + 1):  # consecutive: the hand is followed
        occ.frame_mask(clip_frames[index], [faces[index].bbox], index)
    assert tracker._rois and resets == []
    occ.frame_mask(clip_frames[HAND_FRAMES[-1]], [faces[HAND_FRAMES[-1]].bbox], HAND_FRAMES[-1])
    assert resets and resets[0] > 0  # the jump dropped the followed hand's place before this frame
