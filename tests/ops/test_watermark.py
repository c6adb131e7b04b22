"""ops.watermark on real demo clips: a mark embedded the way the converter encodes (rgb24 ->
yuv420p -> embed_frame -> libx264) survives H.264 re-encoding at CRF 23 and 28 and JPEG 50
stills, costs no more than the PSNR budget, and unmarked video (real and generated) reads as
unmarked."""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av
import cv2
import numpy as np
import pytest

from swapline.ops import watermark as wm
from tests.conftest import MEDIA

N_FRAMES = 30
RATE = Fraction(30)
TICK = Fraction(1, 90000)  # a finer tick than the frame rate, as ops.video_out may use
PAYLOAD = wm.payload_for("conversion-0001", "model-v7")
OTHER = wm.payload_for("conversion-0002", "model-v7")
CLIPS = ("WolfgangLanger_Pexels.mp4", "single_face.mp4")


def _rgb_frames(path: Path, count: int) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        frames = (frame.to_ndarray(format="rgb24") for frame in container.decode(video=0))
        return [rgb for _, rgb in zip(range(count), frames)]


def _encode(frames: list[av.VideoFrame], path: Path, crf: int) -> Path:
    """yuv420p frames -> libx264 MP4, their own pts / time_base kept (as ops.video_out)."""
    with av.open(str(path), "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=RATE, options={"crf": str(crf)})
        video.width, video.height, video.pix_fmt = frames[0].width, frames[0].height, "yuv420p"
        video.codec_context.time_base = TICK
        for frame in frames:
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    return path


def _decoded(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


def _reencode(path: Path, dest: Path, crf: int) -> Path:
    frames = [frame.reformat(format="yuv420p") for frame in _decoded(path)]
    for index, frame in enumerate(frames):
        frame.pts, frame.time_base = round(index / RATE / TICK), TICK
    return _encode(frames, dest, crf)


def _read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path))
    assert bgr is not None, path
    return np.ascontiguousarray(bgr[..., ::-1])


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def _frame_accuracy(planes) -> float:
    """Mean bit accuracy of single-frame decodes (no voting across frames)."""
    bits = wm.payload_bits(PAYLOAD)
    return float(np.mean([(wm.detect_planes([u]).bits == bits).mean() for u in planes]))


def _report(label: str, found: wm.Detection, planes=None) -> None:
    frame = f", single-frame bit accuracy {_frame_accuracy(planes):.3f}" if planes is not None else ""
    print(f"{label}: found={found.found} bits {found.bits_matched}/64 tile agreement {found.agreement:.3f} "
          f"over {found.frames} frames{frame}")


@pytest.fixture(scope="module", params=CLIPS)
def marked(request, tmp_path_factory) -> SimpleNamespace:
    """A clip's first frames, unmarked (yuv420p) and marked, and the marked video at CRF 20."""
    tmp = tmp_path_factory.mktemp("watermark")
    marker = wm.Watermarker(PAYLOAD)
    plain, frames = [], []
    for index, rgb in enumerate(_rgb_frames(MEDIA / request.param, N_FRAMES)):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts, frame.time_base = round(index / RATE / TICK), TICK
        plain.append(frame.reformat(format="yuv420p"))  # the converter's call, then the mark
        frames.append(marker.embed_frame(plain[-1]))
    return SimpleNamespace(clip=request.param, plain=plain, frames=frames, tmp=tmp,
                           path=_encode(frames, tmp / "marked.mp4", crf=20))


# ---------------------------------------------------------------- payload and frames


def test_payload_crc_catches_every_single_bit_flip():
    bits = wm.payload_bits(PAYLOAD)
    assert bits.shape == (64,) and bits.dtype == np.uint8 and wm.payload_ok(bits)
    assert PAYLOAD != OTHER and wm.payload_for("conversion-0001", "model-v7") == PAYLOAD
    for index in range(wm.PAYLOAD_BITS):
        flipped = bits.copy()
        flipped[index] ^= 1
        assert not wm.payload_ok(flipped)
    with pytest.raises(ValueError):
        wm.payload_bits(1 << 64)


@pytest.mark.parametrize("pix_fmt", wm.PLANAR_YUV)
def test_embed_frame_changes_only_u_and_keeps_timing(pix_fmt):
    rgb = _rgb_frames(MEDIA / "single_face.mp4", 1)[0]
    rgb = np.pad(rgb, ((0, 2), (0, 2), (0, 0)), mode="edge")  # 642 wide: line_size padding
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)
    frame.pts, frame.time_base = 3003, Fraction(1, 30000)
    before = wm.plane_array(frame.planes[1]).copy()
    out = wm.Watermarker(PAYLOAD).embed_frame(frame)
    assert np.array_equal(wm.plane_array(frame.planes[1]), before)  # the input is left alone
    assert (out.format.name, out.width, out.height, out.pts, out.time_base) == (pix_fmt, 642, 362, 3003, Fraction(1, 30000))
    planes = [(wm.plane_array(a), wm.plane_array(b)) for a, b in zip(frame.planes, out.planes)]
    assert np.array_equal(*planes[0]) and np.array_equal(*planes[2])
    assert np.abs(planes[1][0].astype(int) - planes[1][1]).max() <= 4  # <= step / 2, rounded
    found = wm.detect_planes([planes[1][1]], expected=[PAYLOAD])
    assert found.found and found.payload == PAYLOAD and found.bits_matched == 64


def test_torch_path_marks_like_the_numpy_path():
    """The torch ops a CUDA device runs, here on the CPU: same marks as the numpy path."""
    u = wm.u_plane(_rgb_frames(MEDIA / "WolfgangLanger_Pexels.mp4", 1)[0])
    marker = wm.Watermarker(PAYLOAD)
    marker._torch = True  # what device="cuda" selects; no GPU here
    by_torch, by_numpy = marker.embed_plane(u), wm.Watermarker(PAYLOAD).embed_plane(u)
    assert np.abs(by_torch.astype(int) - by_numpy).max() <= 1  # float rounding only
    assert wm.detect_planes([by_torch]).payload == PAYLOAD


def test_marked_video_keeps_timestamps(marked):
    times = [frame.time for frame in _decoded(marked.path)]
    assert times == pytest.approx([index / 30 for index in range(N_FRAMES)], abs=1e-4)


def test_mark_costs_under_the_psnr_budget(marked):
    scores = [_psnr(a.to_ndarray(format="rgb24"), b.to_ndarray(format="rgb24")) for a, b in zip(marked.plain, marked.frames)]
    print(f"{marked.clip}: PSNR marked vs unmarked RGB mean {np.mean(scores):.2f} dB, min {min(scores):.2f} dB")
    assert min(scores) >= 38


# ---------------------------------------------------------------- robustness


@pytest.mark.parametrize("crf", [23, 28])
def test_mark_survives_h264_reencoding(marked, crf):
    path = _reencode(marked.path, marked.tmp / f"crf{crf}.mp4", crf)
    found = wm.detect_file(path, expected=[OTHER, PAYLOAD])
    _report(f"{marked.clip} CRF {crf}", found, list(wm.video_planes(path)))
    assert found.found and found.expected_best == PAYLOAD and (found.bits_matched or 0) >= wm.MATCH_BITS
    blind = wm.detect_file(path)  # no expected payload: the CRC alone must recover it
    assert blind.found and blind.payload == PAYLOAD and blind.frames == N_FRAMES


def test_mark_survives_jpeg50_stills(marked):
    paths = []
    for index, frame in enumerate(_decoded(marked.path)[:10]):
        paths.append(marked.tmp / f"still{index}.jpg")
        cv2.imwrite(str(paths[-1]), frame.to_ndarray(format="bgr24"), [cv2.IMWRITE_JPEG_QUALITY, 50])
    found = wm.detect_images(paths, expected=[PAYLOAD])
    _report(f"{marked.clip} JPEG 50 x10", found, [wm.u_plane(_read_rgb(p)) for p in paths])
    assert found.found and (found.bits_matched or 0) >= wm.MATCH_BITS and found.payload == PAYLOAD
    assert (wm.detect_file(paths[0], expected=[PAYLOAD]).bits_matched or 0) >= wm.MATCH_BITS  # one still


@pytest.mark.parametrize("clip", ["WolfgangLanger_Pexels.mp4", "single_face.mp4", "no_face.mp4"])
def test_unmarked_demo_video_is_not_found(clip):
    found = wm.detect_file(MEDIA / clip, expected=[PAYLOAD])
    _report(f"unmarked {clip}", found, list(wm.video_planes(MEDIA / clip)))
    assert not found.found and (found.bits_matched or 0) < wm.MATCH_BITS and abs(found.agreement - 0.5) < 0.1
    assert not wm.detect_file(MEDIA / clip).found


def test_unmarked_generated_video_is_not_found(tmp_path):
    """Noise, gradients and flat frames: content with no natural texture to hide a bias."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 640, dtype=np.float32)
    frames = []
    for index in range(N_FRAMES):
        if index % 3 == 0:
            rgb = rng.integers(0, 256, (360, 640, 3), dtype=np.uint8)
        elif index % 3 == 1:
            rgb = np.stack([np.tile(ramp, (360, 1)), np.tile(ramp[::-1], (360, 1)), np.full((360, 640), 4.0 * index)], -1)
        else:
            rgb = np.full((360, 640, 3), (40 + 5 * index, 120, 200))
        frame = av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24")
        frame.pts, frame.time_base = round(index / RATE / TICK), TICK
        frames.append(frame.reformat(format="yuv420p"))
    path = _encode(frames, tmp_path / "generated.mp4", crf=23)
    found = wm.detect_file(path, expected=[PAYLOAD])
    _report("unmarked generated", found)
    assert not found.found and (found.bits_matched or 0) < wm.MATCH_BITS and abs(found.agreement - 0.5) < 0.1
    assert not wm.detect_file(path).found


# ---------------------------------------------------------------- cost


@pytest.mark.parametrize("size", [(640, 360), (1920, 1080)])
def test_embed_and_detect_cost_per_frame(size):
    small = _rgb_frames(MEDIA / "WolfgangLanger_Pexels.mp4", 1)[0]
    rgb = np.asarray(cv2.resize(small, size, interpolation=cv2.INTER_CUBIC), dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    marker = wm.Watermarker(PAYLOAD)
    marked = marker.embed_frame(frame)  # warm: layout cached, torch kernels loaded
    u = wm.plane_array(marked.planes[1]).copy()

    def median_ms(call, runs: int = 20) -> float:
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        return 1000 * float(np.median(times))

    embed = median_ms(lambda: marker.embed_frame(frame))
    detect = median_ms(lambda: wm.detect_planes([u]))
    print(f"{size[0]}x{size[1]}: embed_frame {embed:.2f} ms, detect {detect:.2f} ms per frame")
    assert wm.detect_planes([u]).payload == PAYLOAD
    assert embed < 50 and detect < 50  # generous: measured ~1 ms at 1080p on 2 cores
