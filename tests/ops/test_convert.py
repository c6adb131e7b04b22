"""Conversion on the real demo clips with a model trained a few steps: what comes out matches
the source (frames, timestamps, audio), only the replaced person's face changes, smoothing
steadies it, a second conversion detects nothing, and an interrupted one loses nothing."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from fractions import Fraction

import av
import numpy as np
import pytest

from swapline.ops.convert import Converter, ConvertOptions, convert_video
from swapline.ops.detections import DetectionCache
from swapline.ops.faces import AnalyzerSettings, FaceAnalyzer, align_face, alignment_matrix
from swapline.ops.media import iter_timed, write_video
from swapline.ops.provenance import container_tags
from tests.conftest import video_frames

TAGS = container_tags("c", "s")
ANNA, BEN = "WolfgangLanger_Pexels.mp4", "single_face.mp4"


def _crops(analyzer, path, indices):
    out = []
    for frame in video_frames(path, indices).values():
        face = analyzer.detect(frame)[0]
        out.append(align_face(frame, alignment_matrix(face.landmarks, 128, 0.3), 128))
    return np.stack(out)


@pytest.fixture(scope="module")
def analyzer():
    return FaceAnalyzer(AnalyzerSettings(face_size=128))


@pytest.fixture(scope="module")
def model(media_dir, analyzer, tmp_path_factory):
    """The lite 64 px model after 30 steps on real crops of both people."""
    from swapline.ops.inference import load_for_inference
    from swapline.ops.model import ModelConfig
    from swapline.ops.train import TrainConfig, train

    folder = tmp_path_factory.mktemp("model")
    a, b = _crops(analyzer, media_dir / ANNA, range(0, 240, 30)), _crops(analyzer, media_dir / BEN, range(0, 72, 9))
    train(a, b, None, None, ModelConfig(), TrainConfig(iterations=30, batch_size=8), "cpu", checkpoint_dir=folder)
    return load_for_inference(folder)


def decode(path):
    """(frames, times in seconds, fps, has audio) of a video, through PyAV."""
    frames, times = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(frame.pts * frame.time_base)
        return frames, times, float(stream.average_rate), bool(container.streams.audio)


def run(media_dir, analyzer, model, tmp_path, clip=BEN, name="out.mp4", **options):
    converter = Converter(analyzer, model, "a", "cpu", ConvertOptions(**options))
    stats = convert_video(media_dir / clip if isinstance(clip, str) else clip, tmp_path / name, converter, tags=TAGS)
    return stats, tmp_path / name


def test_output_keeps_frames_timestamps_audio_and_background(media_dir, analyzer, model, tmp_path):
    stats, out = run(media_dir, analyzer, model, tmp_path)
    source, src_times, src_fps, src_audio = decode(media_dir / BEN)
    output, out_times, out_fps, out_audio = decode(out)
    assert len(output) == len(source) == stats["frames"] == 72 and stats["swapped"] == 72
    assert out_times == src_times and out_fps == src_fps and src_audio and out_audio
    face = analyzer.detect(source[36])[0]
    x0, y0, x1, y1 = face.bbox
    diff = np.abs(output[36].astype(int) - source[36]).mean(axis=2)  # (H, W)
    assert diff[y0:y1, x0:x1].mean() > 8  # the face was replaced
    h, w = diff.shape
    assert diff[: h // 2, : x0 - 40].mean() < 2.5  # far from the face: codec noise only
    assert set(stats["stage_seconds"]) == {"decode", "detect", "infer", "blend", "encode"}


def test_variable_frame_rate_timestamps_survive(media_dir, analyzer, model, tmp_path):
    frames = [f for _, _, f in iter_timed(media_dir / BEN)][:30]
    times = [Fraction(i, 30) + (Fraction(1, 60) if i % 3 == 0 and i else 0) for i in range(30)]  # uneven gaps
    write_video(list(zip(frames, times)), tmp_path / "vfr.mp4", 30, time_base=Fraction(1, 600))
    _, out = run(media_dir, analyzer, model, tmp_path, clip=tmp_path / "vfr.mp4")
    _, src_times, _, _ = decode(tmp_path / "vfr.mp4")
    _, out_times, _, _ = decode(out)
    assert src_times == out_times == times


def test_only_the_replaced_person_changes(media_dir, analyzer, model, tmp_path):
    """Both demo people in one frame, side by side: with anna's reference faces only she changes."""
    anna, ben = video_frames(media_dir / ANNA, range(24)), video_frames(media_dir / BEN, range(24))
    pair = [np.concatenate([anna[i], ben[i]], axis=1) for i in range(24)]  # (360, 1280, 3)
    write_video(pair, tmp_path / "pair.mp4", 24, crf=12)
    references = np.stack([analyzer.embed(f, analyzer.detect(f)[0])
                           for f in video_frames(media_dir / ANNA, [100, 200, 300]).values()])
    converter = Converter(analyzer, model, "b", "cpu", ConvertOptions(), reference=references)
    stats = convert_video(tmp_path / "pair.mp4", tmp_path / "out.mp4", converter, tags=TAGS)
    source, output = decode(tmp_path / "pair.mp4")[0], decode(tmp_path / "out.mp4")[0]
    diff = np.abs(np.stack(output).astype(int) - np.stack(source)).mean(axis=(0, 3))  # (H, 2W)
    assert stats["faces"] == 24 and stats["tracks"] == 1
    assert diff[:, :640].max() > 30 and diff[:300, 640:].mean() < 2.5  # ben (right): codec noise only
    assert converter.gate.embedded <= 4  # embedded once per appearance, not per frame


def test_video_without_faces_passes_through_labelled(media_dir, analyzer, model, tmp_path):
    stats, out = run(media_dir, analyzer, model, tmp_path, clip="no_face.mp4")
    source, output = decode(media_dir / "no_face.mp4")[0], decode(out)[0]
    assert stats["swapped"] == 0 and len(output) == len(source) == stats["frames"]
    h = source[0].shape[0]
    assert np.abs(output[10][: h // 2].astype(int) - source[10][: h // 2]).mean() < 2.5
    with av.open(str(out)) as container:
        assert "SYNTHETIC" in container.metadata["comment"]


def test_smoothing_steadies_the_face_placement(media_dir, analyzer, model, tmp_path):
    smooth, _ = run(media_dir, analyzer, model, tmp_path, clip=ANNA, end=4.0)
    raw, _ = run(media_dir, analyzer, model, tmp_path, clip=ANNA, name="raw.mp4", end=4.0, smooth=False)
    # Same detections, same clip: smoothing cuts the jitter of the landmarks that place the face.
    assert raw["track_jitter_smoothed"] == pytest.approx(raw["track_jitter_raw"])
    assert smooth["track_jitter_smoothed"] < 0.6 * raw["track_jitter_smoothed"]


def test_time_range_side_by_side_and_detection_cache(media_dir, analyzer, model, tmp_path):
    cache = DetectionCache(tmp_path / "store", analyzer, "sha-of-ben")
    converter = Converter(analyzer, model, "a", "cpu", ConvertOptions(start=1.0, end=1.5, side_by_side=True), cache=cache)
    stats = convert_video(media_dir / BEN, tmp_path / "sbs.mp4", converter, tags=TAGS)
    assert stats["swapped"] == 15 and stats["detections_cached"] == 0 and cache.path.is_file()
    source, output = decode(media_dir / BEN)[0], decode(tmp_path / "sbs.mp4")[0]
    assert output[0].shape[1] == 2 * source[0].shape[1]
    outside, inside = output[10][:, 640:], output[36][:, 640:]  # 0.33 s and 1.2 s
    assert np.abs(outside[:200].astype(int) - source[10][:200]).mean() < 2.5
    assert np.abs(inside.astype(int) - source[36]).mean() > 2
    again = Converter(analyzer, model, "a", "cpu", ConvertOptions(start=1.0, end=1.5),
                      cache=DetectionCache(tmp_path / "store", analyzer, "sha-of-ben"))
    assert convert_video(media_dir / BEN, tmp_path / "again.mp4", again, tags=TAGS)["detections_cached"] == 15


CHILD = """
import sys, time
from swapline.ops.convert import Converter, ConvertOptions, convert_video
from swapline.ops.faces import AnalyzerSettings, FaceAnalyzer
from swapline.ops.model import FaceSwapAE, ModelConfig
from swapline.ops.provenance import container_tags

class Slow(Converter):  # slow enough to be killed mid-way
    def render(self, batch, stats):
        time.sleep(0.05 * len(batch))
        return super().render(batch, stats)

model = FaceSwapAE(ModelConfig()).eval()
converter = Slow(FaceAnalyzer(AnalyzerSettings(face_size=128)), model, "a", "cpu", ConvertOptions(batch_size=4))
convert_video(sys.argv[1], sys.argv[2], converter, tags=container_tags("c", "s"))
"""


def test_killed_conversion_leaves_the_previous_output(media_dir, analyzer, model, tmp_path):
    _, out = run(media_dir, analyzer, model, tmp_path)
    before = out.read_bytes()
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(media_dir / BEN), str(out)])
    try:
        deadline = time.monotonic() + 60
        while not any(p.name.startswith(".out.") for p in tmp_path.iterdir()):  # its temp file: encoding began
            assert child.poll() is None and time.monotonic() < deadline, "the child ended before it was killed"
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert out.read_bytes() == before
    assert len(decode(out)[0]) == 72
