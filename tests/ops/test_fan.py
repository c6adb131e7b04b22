"""FAN landmarks: weights lookup (never a download), the network's layout, and the crop /
heatmap conventions, checked on hand-computed numbers and on a stand-in network whose heatmap
peaks sit exactly where a bright blob is. Random weights make the real network's output
meaningless, so it is only checked to load and to answer in the right shape and place."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from swapline.ops import faces, fan
from swapline.project import Extraction
from swapline.resources.analyzer import FaceAnalyzerResource

# face-alignment 1.5.0's FAN(4) state dict, measured by loading its models/fan.py (torch only)
# and hashing "name:shape" lines sorted by name; with equal weights its output and ours were
# identical (max abs difference 0.0 on random input).
FA_LAYOUT = (1129, 23874504, "dd58afd62632b7236a14dff4884529c80b671241c77f9a9f1d5415fb90231b6e")


@pytest.fixture(autouse=True)
def no_download(no_network, monkeypatch):
    """Any connection attempt (tests/conftest.py) or torch hub download fails the test."""
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)


class BlobFinder(torch.nn.Module):
    """Stand-in for FAN: every heatmap is the crop's brightness pooled to 64 x 64, so all 68
    peaks fall where the bright blob is."""

    def forward(self, x):
        return torch.nn.functional.avg_pool2d(x.mean(1, keepdim=True), 4).repeat(1, 68, 1, 1)


@pytest.fixture(scope="module")
def scripted_hub(tmp_path_factory):
    """A hub folder holding the stand-in as face-alignment 1.4's TorchScript file."""
    hub = tmp_path_factory.mktemp("hub_ts")
    (hub / "checkpoints").mkdir()
    traced = torch.jit.trace(BlobFinder(), torch.rand(2, 3, 256, 256))
    torch.jit.save(traced, str(hub / "checkpoints" / fan.TORCHSCRIPT_FILE))
    return hub


@pytest.fixture(scope="module")
def fan_hub(tmp_path_factory):
    """A hub folder holding randomly initialised FAN(4) weights under face-alignment 1.5's name."""
    hub = tmp_path_factory.mktemp("hub_sd")
    (hub / "checkpoints").mkdir()
    torch.manual_seed(0)
    torch.save(fan.fan_network().state_dict(), hub / "checkpoints" / fan.STATE_DICT_FILE)
    yield hub
    fan.load_network.cache_clear()  # ~100 MB of network per cached entry


def blob_image(centres, shape=(360, 480), sigma=3.0) -> np.ndarray:
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)  # pixel-centre coordinates
    image = np.zeros(shape)
    for cx, cy in centres:
        image = np.maximum(image, np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2)))
    return np.repeat((image * 255).round().astype(np.uint8)[..., None], 3, axis=2)


def test_network_layout_matches_face_alignment():
    state = fan.fan_network().state_dict()
    layout = "\n".join(f"{name}:{tuple(t.shape)}" for name, t in sorted(state.items()))
    found = (len(state), sum(t.numel() for t in state.values()), hashlib.sha256(layout.encode()).hexdigest())
    assert found == FA_LAYOUT


def test_window_follows_face_alignment_framing():
    # A 124.8 px box: window side 200 * (124.8 + 124.8) / 195 = 256, centre raised 0.12 * 124.8.
    centre, side = fan.box_window((65.6, 80.576, 190.4, 205.376))
    assert side == pytest.approx(256.0)
    np.testing.assert_allclose(centre, (128.0, 128.0), atol=1e-9)
    # A window at 1:1 whose top-left edge is the frame's is the frame's top-left 256 px.
    np.testing.assert_allclose(fan.window_matrix(np.array([128.0, 128.0]), 256.0), [[1, 0, 0], [0, 1, 0]], atol=1e-12)
    image = np.random.default_rng(0).integers(0, 256, (300, 320, 3), dtype=np.uint8)
    np.testing.assert_array_equal(fan.crop_window(image, np.array([128.0, 128.0]), 256.0), image[:256, :256])
    # At 2x, source pixel 36 (edges 36..37) becomes crop pixels 0 and 1 (centre 0.5).
    matrix = fan.window_matrix(np.array([100.0, 50.0]), 128.0)
    assert matrix[0, 0] * 36 + matrix[0, 2] == pytest.approx(0.5)


def test_heatmap_peak_maps_back_to_the_known_pixel():
    maps = np.zeros((2, 68, 64, 64), dtype=np.float32)
    maps[:, 0, 20, 40] = 1.0  # point 0 peaks at cell x=40, y=20 ...
    maps[:, 0, 20, 41], maps[:, 0, 20, 39] = 0.5, 0.2  # ... leaning right
    maps[:, 0, 19, 40], maps[:, 0, 21, 40] = 0.6, 0.1  # ... and up
    maps[:, 1, 32, 32] = 1.0  # point 1: a lone peak, no lean
    maps[:, 2, 63, 0] = 1.0  # point 2: on the border, never refined
    maps[:, 2, 62, 0] = 0.9
    peaks, scores = fan.heatmap_peaks(maps)
    # Cell centres are at +0.5; a lean moves a quarter cell.
    np.testing.assert_allclose(peaks[0, :3], [(40.75, 20.25), (32.5, 32.5), (0.5, 63.5)])
    assert scores[0, :3].tolist() == [1.0, 1.0, 1.0]
    # A 256 px window at the origin: 4 px per cell, minus half a pixel for pixel centres.
    points = fan.peaks_to_image(peaks[0, :3], np.array([128.0, 128.0]), 256.0)
    np.testing.assert_allclose(points, [(162.5, 80.5), (129.5, 129.5), (1.5, 253.5)])
    # A 128 px window centred at (300, 200): 2 px per cell from (236, 136).
    points = fan.peaks_to_image(peaks[1, :2], np.array([300.0, 200.0]), 128.0)
    np.testing.assert_allclose(points, [(317.0, 176.0), (300.5, 200.5)])


def test_mirror_order_is_the_layouts_symmetry():
    order = fan.MIRROR_ORDER
    np.testing.assert_array_equal(order[order], np.arange(68))  # its own inverse
    assert (order[36], order[39], order[48], order[8], order[30]) == (45, 42, 54, 8, 30)
    mirrored = faces.TEMPLATE_68[order] * (-1, 1) + (1, 0)  # the mean face mirrored and relabelled
    assert np.abs(mirrored - faces.TEMPLATE_68).max() < 0.03


@pytest.mark.parametrize("flip", [False, True])
def test_crop_and_decode_round_trip(scripted_hub, flip):
    blobs = [(150.3, 120.7), (330.0, 250.5)]
    frames = [blob_image(blobs), blob_image([(200.0, 180.0)]), blob_image([])]
    boxes = [[(100, 80, 200, 180), (280, 200, 380, 300)], [(150, 130, 250, 230)], []]
    marker = fan.FanLandmarker(scripted_hub, flip_input=flip, batch_size=2)
    assert marker.weights.name == fan.TORCHSCRIPT_FILE
    found = marker.landmarks_batch(frames, boxes)
    assert [p.shape for p in found] == [(2, 68, 2), (1, 68, 2), (0, 68, 2)]
    # A 100 px box gives a 205 px window, 3.2 source px per heatmap cell: the quarter-cell
    # refinement leaves at most ~1 px.
    for points, expected in zip([found[0][0], found[0][1], found[1][0]], [blobs[0], blobs[1], (200.0, 180.0)]):
        assert np.abs(points - expected).max() < 1.2


def test_missing_weights_say_what_where_and_how(tmp_path, monkeypatch):
    with pytest.raises(fan.FanWeightsMissing) as caught:
        faces.FaceAnalyzer(faces.AnalyzerSettings(backend="fan"), fan_weights_dir=str(tmp_path))
    message = str(caught.value)
    assert isinstance(caught.value, FileNotFoundError)
    assert fan.STATE_DICT_FILE in message and fan.WEIGHTS_URL + fan.STATE_DICT_FILE in message
    assert str(tmp_path / "checkpoints" / fan.STATE_DICT_FILE) in message
    assert "curl -L" in message and "torch.hub.load_state_dict_from_url" in message
    # "auto" falls back (to dlib, with no MediaPipe files either), and says so.
    auto = faces.FaceAnalyzer(faces.AnalyzerSettings(backend="auto"), fan_weights_dir=str(tmp_path), face_models_dir=str(tmp_path))
    assert auto.resolved_backend == "dlib" and auto.describe()["resolved_backend"] == "dlib"
    # No folder given: torch's hub folder, which follows TORCH_HOME.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert fan.hub_dir("") == tmp_path / "torch" / "hub"
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in fan.missing_message()


def test_fan_backend_on_a_real_face(fan_hub, media_dir):
    image = np.asarray(Image.open(media_dir / "single_face.jpg").convert("RGB"))
    analyzer = faces.FaceAnalyzer(faces.AnalyzerSettings(backend="auto", detect_scale=1.0), fan_weights_dir=str(fan_hub))
    assert analyzer.resolved_backend == "fan"
    info = analyzer.describe()
    assert info["backend"] == "auto" and info["resolved_backend"] == "fan"
    assert info["landmark_model"] == fan.STATE_DICT_FILE
    (face,) = analyzer.detect(image)
    assert face.landmarks.shape == (68, 2) and face.landmarks.dtype == np.float32
    # Random weights put the points anywhere in FAN's window, but never outside it.
    dlib_face = faces.FaceAnalyzer(faces.AnalyzerSettings(backend="dlib", detect_scale=1.0)).detect(image)[0]
    assert face.bbox == dlib_face.bbox
    centre, side = fan.box_window(face.bbox)
    assert np.all(np.abs(face.landmarks - centre) <= side / 2 + 1)


def test_detect_many_matches_one_by_one(scripted_hub, media_dir):
    image = np.asarray(Image.open(media_dir / "single_face.jpg").convert("RGB"))
    analyzer = faces.FaceAnalyzer(faces.AnalyzerSettings(backend="fan"), fan_weights_dir=str(scripted_hub))
    (one, small), (two, _), (none, _) = analyzer.detect_many([image, image[:, ::-1], np.zeros((64, 64, 3), np.uint8)])
    assert len(one) == len(two) == 1 and none == [] and small == 0
    np.testing.assert_allclose(one[0].landmarks, analyzer.detect(image)[0].landmarks)


def test_resource_and_settings(scripted_hub):
    resource = FaceAnalyzerResource(fan_weights_dir=str(scripted_hub))
    analyzer = resource.analyzer(Extraction(backend="fan", flip_input=True), device="cpu")
    assert analyzer.resolved_backend == "fan" and analyzer._fan.flip_input
    settings = analyzer.settings.as_dict()
    assert settings["flip_input"] is True and settings["backend"] == "fan"
    # Where the weights live and what runs them do not change results: not hashed.
    assert not {"fan_weights_dir", "device", "resolved_backend"} & set(settings)
    assert faces.AnalyzerSettings(flip_input=True).as_dict() != faces.AnalyzerSettings().as_dict()
