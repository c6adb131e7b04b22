"""User-placed ONNX face models (SCRFD, BiSeNet, XSeg): where they are looked for (never
downloaded), the SCRFD decoding and the visible-face masks, checked on hand-built numbers, and
through real onnxruntime sessions on stand-in files saved under the exact names: networks with
random weights (right names and shapes; their output is meaningless, so only checked for shape
and range) and constant networks whose raw output is hand-built (so the answer is known)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from swapline.ops import face_parsing, onnx_models, scrfd, tflite
from tests.conftest import video_frames

ROWS = {s: 2 * (640 // s) ** 2 for s in scrfd.STRIDES}  # anchors per stride: 12800, 3200, 800


pytestmark = pytest.mark.usefixtures("no_network")  # nothing here may download a model (tests/conftest.py)


def export(net: nn.Module, example: torch.Tensor, path, input_name: str, output_names: list[str]) -> None:
    with torch.no_grad():
        torch.onnx.export(net.eval(), example, str(path), dynamo=False, input_names=[input_name], output_names=output_names)


SCRFD_NAMES = [f"{kind}_{s}" for kind in ("score", "bbox", "kps") for s in scrfd.STRIDES]


class TinyScrfd(nn.Module):
    """SCRFD's interface: 1x3x640x640 in; per stride a head with 2 anchors per cell giving
    (N, 1) sigmoid scores, (N, 4) distances and (N, 10) keypoint offsets."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.heads = nn.ModuleList(nn.Conv2d(8, 2 * (1 + 4 + 10), 1) for _ in scrfd.STRIDES)

    def forward(self, x):
        f = torch.relu(self.stem(nn.functional.avg_pool2d(x, 8)))  # (1, 8, 80, 80)
        scores, boxes, points = [], [], []
        for i, head in enumerate(self.heads):
            y = head(nn.functional.avg_pool2d(f, 2**i) if i else f)  # (1, 30, H, W)
            y = y.permute(0, 2, 3, 1).reshape(-1, 15)  # (H*W*2, 15): the 2 anchors of a cell adjacent
            scores.append(torch.sigmoid(y[:, :1]))
            boxes.append(nn.functional.softplus(y[:, 1:5]))
            points.append(y[:, 5:])
        return (*scores, *boxes, *points)


class Constant(nn.Module):
    """Answers the given arrays whatever the input (zero times the input keeps it in the graph)."""

    def __init__(self, *arrays: np.ndarray) -> None:
        super().__init__()
        for i, a in enumerate(arrays):
            self.register_buffer(f"out{i}", torch.from_numpy(np.asarray(a, np.float32)))
        self.n = len(arrays)

    def forward(self, x):
        zero = x.mean() * 0
        return tuple(getattr(self, f"out{i}") + zero for i in range(self.n))


def raw_outputs(known: list[tuple[int, int, float, tuple, tuple]]) -> list[np.ndarray]:
    """SCRFD's nine raw outputs, all scores zero but for `known`: (stride, row, score, distances
    (4,), keypoint offsets (10,)) in stride units. Order: scores, boxes, keypoints by stride."""
    score = {s: np.zeros((ROWS[s], 1), np.float32) for s in scrfd.STRIDES}
    box = {s: np.ones((ROWS[s], 4), np.float32) for s in scrfd.STRIDES}
    kps = {s: np.zeros((ROWS[s], 10), np.float32) for s in scrfd.STRIDES}
    for stride, row, value, dist, offsets in known:
        score[stride][row], box[stride][row], kps[stride][row] = value, dist, offsets
    return [d[s] for d in (score, box, kps) for s in scrfd.STRIDES]


def row_of(stride: int, col: int, line: int, anchor: int) -> int:
    return (line * (640 // stride) + col) * 2 + anchor


# One face at stride 16, cell (column 5, row 3) -> centre (80, 48), second anchor.
FACE = (16, row_of(16, 5, 3, 1), 0.9, (1.0, 2.0, 3.0, 4.0), (-1, -1, 1, -1, 0, 0, -1, 1, 1, 1))
FACE_BOX = [80 - 16, 48 - 32, 80 + 48, 48 + 64]
FACE_POINTS = [[64, 32], [96, 32], [80, 48], [64, 64], [96, 64]]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A models folder with random-weight stand-ins under the exact file names."""
    folder = tmp_path_factory.mktemp("face_models")
    torch.manual_seed(0)
    export(TinyScrfd(), torch.zeros(1, 3, 640, 640), folder / "scrfd_10g_bnkps.onnx", "input.1", SCRFD_NAMES)
    bisenet = nn.Sequential(nn.AvgPool2d(8), nn.Conv2d(3, 19, 3, padding=1), nn.Upsample(scale_factor=8))
    export(bisenet, torch.zeros(1, 3, 512, 512), folder / "bisenet_resnet_34.onnx", "input", ["output"])
    export(XsegNhwc(), torch.zeros(1, 256, 256, 3), folder / "xseg.onnx", "input", ["output"])
    return folder


class XsegNhwc(nn.Module):
    """XSeg's interface: (1, 256, 256, 3) in 0..1 -> (1, 256, 256, 1) sigmoid."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 5, padding=2)

    def forward(self, x):
        return torch.sigmoid(self.conv(x.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)


@pytest.fixture(scope="module")
def frame(media_dir):
    return video_frames(media_dir / "single_face.mp4", [10])[10]  # (360, 640, 3) RGB


def test_registry_and_available(models, tmp_path, monkeypatch):
    assert set(onnx_models.REGISTRY) == {"scrfd", "bisenet", "xseg"}
    assert onnx_models.available(models) == {n: models / f for n, f in
                                             [("scrfd", "scrfd_10g_bnkps.onnx"), ("bisenet", "bisenet_resnet_34.onnx"), ("xseg", "xseg.onnx")]}
    assert onnx_models.available(tmp_path) == {}
    (tmp_path / "det_10g.onnx").write_bytes(b"")  # InsightFace's own name for the same network
    assert onnx_models.available(tmp_path) == {"scrfd": tmp_path / "det_10g.onnx"}
    # No folder: the MediaPipe models folder, which follows $SWAPLINE_FACE_MODELS.
    monkeypatch.setenv(tflite.ENV_DIR, str(models))
    assert list(onnx_models.available()) == ["scrfd", "bisenet", "xseg"]
    assert isinstance(onnx_models.load("scrfd"), scrfd.ScrfdDetector)
    assert onnx_models.load("xseg").kind == "xseg"
    with pytest.raises(KeyError, match="unknown ONNX face model"):
        onnx_models.find("retinaface")


@pytest.mark.parametrize("name", ["scrfd", "bisenet", "xseg"])
def test_missing_file_names_path_source_and_no_download(name, tmp_path, monkeypatch):
    entry = onnx_models.REGISTRY[name]
    with pytest.raises(onnx_models.OnnxModelMissing) as caught:
        onnx_models.load(name, tmp_path)
    message = str(caught.value)
    assert isinstance(caught.value, FileNotFoundError)
    assert str(tmp_path / entry.files[0]) in message and "never downloads" in message
    assert "github.com/" in message and tflite.ENV_DIR in message
    # The classes themselves say the same at construction, before any session is made.
    monkeypatch.setenv(tflite.ENV_DIR, str(tmp_path / "env"))
    with pytest.raises(onnx_models.OnnxModelMissing, match=str(tmp_path / "env" / entry.files[0])):
        scrfd.ScrfdDetector() if name == "scrfd" else face_parsing.FaceParser(kind=name)


def test_providers_prefer_cuda_only_when_offered(monkeypatch):
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert onnx_models.providers() == ["CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    assert onnx_models.providers() == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_anchor_decodes_to_known_box_and_keypoints():
    centres = scrfd.anchor_centres(16)
    assert centres.shape == (3200, 2) and centres[row_of(16, 5, 3, 1)].tolist() == [80, 48]
    assert centres[row_of(16, 5, 3, 0)].tolist() == [80, 48] and centres[row_of(16, 6, 3, 0)].tolist() == [96, 48]
    outputs = raw_outputs([FACE, (32, row_of(32, 19, 19, 0), 0.4, (1, 1, 1, 1), (0,) * 10)])  # 2nd below 0.5
    boxes, scores, points = scrfd.decode(outputs)
    np.testing.assert_allclose(boxes, [FACE_BOX])
    np.testing.assert_allclose(scores, [0.9])
    np.testing.assert_allclose(points, [FACE_POINTS])
    # Any output order and batched (1, N, C) outputs decode the same (matched by shape, not order).
    shuffled = [outputs[i][None] for i in (8, 0, 4, 2, 6, 1, 7, 3, 5)]
    for got, want in zip(scrfd.decode(shuffled), (boxes, scores, points)):
        np.testing.assert_array_equal(got, want)
    assert len(scrfd.decode(outputs, score_threshold=0.3)[1]) == 2
    with pytest.raises(ValueError, match="9 outputs"):
        scrfd.decode(outputs[:8])


def test_nms_merges_overlaps_and_keeps_separate_boxes():
    boxes = np.array([[0, 0, 10, 10], [100, 100, 120, 120], [1, 1, 11, 11], [5, 1, 15, 11]], np.float32)
    scores = np.array([0.8, 0.7, 0.9, 0.6], np.float32)
    # Box 2 (best) overlaps box 0 by 81/119 = 0.68: merged; box 3 overlaps box 2 by 60/140 = 0.43 > 0.4:
    # merged; the far box 1 stays.
    np.testing.assert_allclose(scrfd.iou(boxes[2], boxes[[0, 3]]), [81 / 119, 60 / 140])
    assert scrfd.nms(boxes, scores).tolist() == [2, 1]
    assert scrfd.nms(boxes, scores, iou_threshold=0.5).tolist() == [2, 1, 3]
    # A chain: B overlaps A and C (0.43 each), A and C barely (0.11). B goes with A, so it drops
    # nothing: C stays.
    chain = np.array([[0, 0, 10, 10], [4, 0, 14, 10], [8, 0, 18, 10]], np.float32)
    assert scrfd.nms(chain, np.array([0.9, 0.8, 0.7])).tolist() == [0, 2]


def test_letterbox_keeps_aspect_at_top_left(frame):
    canvas, scale = scrfd.letterbox(frame)
    assert canvas.shape == (640, 640, 3) and scale.tolist() == [1.0, 1.0]
    np.testing.assert_array_equal(canvas[:360], frame)
    assert not canvas[360:].any()
    big = np.repeat(np.repeat(frame, 2, axis=0), 2, axis=1)  # 1280 x 720
    canvas, scale = scrfd.letterbox(big)
    assert scale.tolist() == [0.5, 0.5] and not canvas[360:].any() and canvas[:360].any()
    tensor = scrfd.to_tensor(canvas)
    assert tensor.shape == (1, 3, 640, 640) and tensor.dtype == np.float32
    assert tensor[0, :, 639, 639].tolist() == [-127.5 / 128] * 3  # black padding, normalised
    np.testing.assert_allclose(tensor[0, :, 0, 0], (canvas[0, 0].astype(np.float32) - 127.5) / 128)  # RGB kept


def test_known_output_through_onnxruntime_maps_back_to_source_px(tmp_path, frame):
    """A constant SCRFD saved as det_10g.onnx: the hand-built face comes back through letterbox
    and decoding at twice its network coordinates on a 1280 x 720 frame."""
    export(Constant(*raw_outputs([FACE])), torch.zeros(1, 3, 640, 640), tmp_path / "det_10g.onnx", "input.1", SCRFD_NAMES)
    detector = scrfd.ScrfdDetector(tmp_path)
    assert detector.path.name == "det_10g.onnx" and detector.input_size == 640
    big = np.repeat(np.repeat(frame, 2, axis=0), 2, axis=1)
    ((box, score, points),) = detector(big)
    np.testing.assert_allclose(box, np.array(FACE_BOX) * 2, atol=1e-4)
    np.testing.assert_allclose(points, np.array(FACE_POINTS) * 2, atol=1e-4)
    assert score == pytest.approx(0.9)


def test_random_scrfd_runs_on_a_real_frame(models, frame):
    detector = scrfd.ScrfdDetector(models)
    assert detector.path == models / "scrfd_10g_bnkps.onnx"
    assert [o.name for o in detector.session.get_outputs()] == SCRFD_NAMES
    assert [o.shape for o in detector.session.get_outputs()] == [[ROWS[s], c] for c in (1, 4, 10) for s in scrfd.STRIDES]
    boxes, scores, points = detector.detect(frame)
    # Random weights: scores near 0.5 everywhere, so some pass; what passes must be well formed.
    assert 0 < len(scores) <= scrfd.MAX_CANDIDATES and boxes.shape == (len(scores), 4) and points.shape == (len(scores), 5, 2)
    assert boxes.dtype == scores.dtype == points.dtype == np.float32
    assert np.all(scores >= scrfd.SCORE_THRESHOLD) and np.all(np.diff(scores) <= 0)
    assert np.all((boxes >= 0) & (boxes <= [640, 360, 640, 360])) and np.all(boxes[:, 2:] > boxes[:, :2])
    assert np.isfinite(points).all()
    # What NMS kept overlaps nothing kept before it by more than the threshold.
    for i in range(1, len(boxes)):
        assert scrfd.iou(boxes[i], boxes[:i]).max() <= scrfd.IOU_THRESHOLD
    found = detector(frame)
    assert len(found) == len(scores) and found[0].keypoints.shape == (5, 2)
    # The candidate cap keeps the best: with a cap of 1, the single best anchor of the frame.
    detector.max_candidates = 1
    assert detector.detect(frame)[1].tolist() == scores[:1].tolist()


def test_class_map_to_visible_face():
    classes = np.arange(19).reshape(1, 19).repeat(2, axis=0)  # every class, twice
    face = {"skin", "left_brow", "right_brow", "left_eye", "right_eye", "nose", "mouth", "upper_lip", "lower_lip"}
    want = np.array([n in face for n in face_parsing.CELEBAMASK_CLASSES], np.float32)
    np.testing.assert_array_equal(face_parsing.visible_from_classes(classes, glasses_are_face=False), [want, want])
    with_glasses = face_parsing.visible_from_classes(classes)
    assert with_glasses.dtype == np.float32 and with_glasses[0, 6] == 1 and with_glasses.sum() == 2 * (len(face) + 1)
    for occluder in ("hair", "hat", "background", "neck", "cloth", "left_ear", "earring"):
        assert with_glasses[0, face_parsing.CELEBAMASK_CLASSES.index(occluder)] == 0


def test_bisenet_input_is_imagenet_normalised_rgb():
    red = np.zeros((128, 128, 3), np.uint8)
    red[..., 0] = 255
    x = face_parsing.bisenet_input(red)
    assert x.shape == (1, 3, 512, 512) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 7, 300], [(1 - 0.485) / 0.229, -0.456 / 0.224, -0.406 / 0.225], rtol=1e-6)
    xs = face_parsing.xseg_input(red)
    assert xs.shape == (1, 256, 256, 3) and xs[0, 5, 5].tolist() == [0.0, 0.0, 1.0]  # BGR, 0..1


def test_known_class_map_through_onnxruntime(tmp_path, frame):
    """A constant BiSeNet: skin on the left half, hair on the right (glasses in one corner)."""
    logits = np.zeros((1, 19, 512, 512), np.float32)
    logits[0, 1, :, :256] = logits[0, 17, :, 256:] = 5.0
    logits[0, 6, :64, :64] = 9.0
    export(Constant(logits), torch.zeros(1, 3, 512, 512), tmp_path / "bisenet_resnet_34.onnx", "input", ["output"])
    crop = np.ascontiguousarray(frame[:256, 140:396])  # (256, 256, 3) real pixels
    mask = face_parsing.FaceParser(tmp_path, "bisenet")(crop)
    assert mask.shape == (256, 256) and mask.dtype == np.float32
    assert (mask[32:, :126] == 1).all() and (mask[:, 130:] == 0).all() and (mask[:30, :30] == 1).all()
    no_glasses = face_parsing.FaceParser(tmp_path, "bisenet", glasses_are_face=False)(crop)
    assert (no_glasses[:30, :30] == 0).all() and (no_glasses[40:, :126] == 1).all()


def test_random_parsers_on_a_real_crop(models, frame):
    crop = np.ascontiguousarray(frame[52:308, 192:448])  # (256, 256, 3)
    for kind, size in (("bisenet", 512), ("xseg", 256)):
        parser = face_parsing.FaceParser(models, kind)
        assert parser.path.name == onnx_models.REGISTRY[kind].files[0]
        assert parser.session.get_inputs()[0].shape[1:] == ([3, size, size] if kind == "bisenet" else [size, size, 3])
        for side in (96, 256, 600):  # crops of any size come back at their size
            mask = parser(crop if side == 256 else np.ascontiguousarray(np.resize(crop, (side, side, 3))))
            assert mask.shape == (side, side) and mask.dtype == np.float32
            assert mask.min() >= 0 and mask.max() <= 1
    with pytest.raises(ValueError, match="unknown face parser"):
        face_parsing.FaceParser(models, "scrfd")


def test_xseg_channels_first_and_known_output(tmp_path, frame):
    mask = np.zeros((1, 1, 256, 256), np.float32)
    mask[0, 0, 100:] = 1.0  # visible face from row 100 down
    export(Constant(mask), torch.zeros(1, 3, 256, 256), tmp_path / "xseg_1.onnx", "input", ["output"])
    parser = face_parsing.FaceParser(tmp_path, "xseg")
    assert parser.path.name == "xseg_1.onnx"
    out = parser(np.ascontiguousarray(frame[:128, :128]))  # half the model's size: rows 50+ visible
    assert out.shape == (128, 128) and (out[:50] == 0).all() and (out[50:] == 1).all()


def test_scrfd_as_the_analyzers_detector(tmp_path, frame):
    """`extraction.detector: scrfd`: its boxes (here the constant network's known face, found on
    the half-size frame detect_scale makes) come back in source px, and dlib's predictor puts
    68 landmarks in them. Not placed: the analyzer refuses to start, naming the file."""
    from swapline.ops import faces

    with pytest.raises(onnx_models.OnnxModelMissing, match="scrfd_10g_bnkps.onnx"):
        faces.FaceAnalyzer(faces.AnalyzerSettings(backend="dlib", detector="scrfd"), face_models_dir=str(tmp_path))
    export(Constant(*raw_outputs([FACE])), torch.zeros(1, 3, 640, 640), tmp_path / "scrfd_10g_bnkps.onnx", "input.1", SCRFD_NAMES)
    analyzer = faces.FaceAnalyzer(faces.AnalyzerSettings(backend="dlib", detector="scrfd", detect_scale=0.5, min_face=10),
                                  face_models_dir=str(tmp_path))
    big = np.repeat(np.repeat(frame, 2, axis=0), 2, axis=1)  # 1280x720: the detector sees 640x360
    (face,) = analyzer.detect(big)
    np.testing.assert_allclose(face.bbox, np.round(np.array(FACE_BOX) * 2), atol=2)
    assert face.landmarks.shape == (68, 2) and face.score == pytest.approx(0.9)


def test_a_placed_parser_cuts_what_is_not_face_from_the_occlusion_mask(tmp_path, frame):
    """`mask: occlusion` with `face_parser: true` and a user's BiSeNet placed: its non-face
    pixels (here, a constant map: hair over the right half) are cut in the face's crop."""
    from swapline.ops import occlusion
    from swapline.ops.convert_options import ConvertOptions

    assert ConvertOptions(mask="occlusion").occluders() == ("hands",)
    options = ConvertOptions(mask="occlusion", face_parser=True)
    assert options.occluders() == ("hands", "face_parsing") and options.output_settings()["face_parser"] is True
    assert "face_parser" not in ConvertOptions().output_settings()  # existing conversions keep their version
    with pytest.raises(onnx_models.OnnxModelMissing):
        occlusion.Occlusion(("face_parsing",), str(tmp_path))  # asked for, not placed: refused up front
    logits = np.zeros((1, 19, 512, 512), np.float32)
    logits[0, 1, :, :256] = logits[0, 17, :, 256:] = 5.0  # skin | hair
    export(Constant(logits), torch.zeros(1, 3, 512, 512), tmp_path / "bisenet_resnet_34.onnx", "input", ["output"])
    parsing = occlusion.Occlusion(("face_parsing",), str(tmp_path))
    crop = np.ascontiguousarray(frame[:128, 200:328])
    cut = parsing.crop_mask(None, np.eye(2, 3), 128, track_id=0, t=0.0, crop=crop)
    assert cut.shape == (128, 128) and (cut[:, :60] == 0).all() and (cut[:, 68:] == 1).all()
    # Limited to the inside of the face: the parser's "not face" around it is not cut.
    hull = np.zeros((128, 128), np.float32)
    hull[20:108, 20:108] = 1.0
    inside = occlusion.interior(hull, 9)
    kept = parsing.crop_mask(None, np.eye(2, 3), 128, track_id=1, t=0.0, crop=crop, inside=inside)
    assert (kept[:, 110:] == 0).all() and (kept[30:98, 68:98] == 1).all() and inside[20:26].sum() == 0
