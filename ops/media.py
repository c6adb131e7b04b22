"""Videos with PyAV (FFmpeg is bundled in its wheels; there is no ffmpeg binary).

Untrusted videos are decoded in a child process (sample_video, verify_video): FFmpeg
has crashed the interpreter on streams truncated inside their first frame. iter_video
decodes in-process and is meant for files verify_video already accepted. Frames come
out upright: a phone video's display rotation is applied to every frame.
Still images live in ops/images.py; their API is re-exported here.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import av
import numpy as np

from swapline.ops import storage
from swapline.ops.images import IMAGE_SUFFIXES, BadMedia, encode_jpeg, load_image, normalize_photos
from swapline.ops.sandbox import IsolatedCrash, run_isolated
from swapline.ops.video_out import write_video

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_SUFFIXES", "BadMedia", "IsolatedCrash", "SampleResult", "SampledFrame", "VideoInfo",
    "iter_timed", "iter_video", "load_image", "stream_format", "normalize_photos", "probe", "sample_video", "verify_video",
    "write_video",
]

# FFmpeg reports damage as av.error.* (InvalidDataError is also a ValueError); a file
# that vanished or cannot be read is an OSError.
_DECODE_ERRORS = (av.error.FFmpegError, OSError, ValueError, EOFError)
# Edit lists may hide a frame or two that the header still counts; more is truncation.
_MISSING_FRAMES_TOLERATED = 2
_THUMB = 64  # side of the grey thumbnail used to compare frames


@dataclass
class VideoInfo:
    width: int
    height: int
    fps: float
    frames: int | None
    duration: float
    has_audio: bool
    codec: str
    # Display rotation in degrees counterclockwise; only known after decoding (0 from probe,
    # whose width/height are the stored size). Decoded frames already have it applied.
    rotation: int = 0


@dataclass
class SampledFrame:
    index: int  # source frame index, in presentation order
    timestamp: float  # seconds, presentation time as stored in the file
    file: str  # name relative to out_dir
    sha256: str


@dataclass
class SampleResult:
    frames: list[SampledFrame]
    decoded: int
    skipped_similar: int
    info: VideoInfo


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise BadMedia(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise BadMedia(f"{path}: empty file (0 bytes)")
    try:
        return av.open(str(path), mode="r")
    except _DECODE_ERRORS as exc:
        raise BadMedia(f"{path}: not a readable video ({exc})") from exc


def _describe(container: av.container.InputContainer, path: Path) -> VideoInfo:
    if not container.streams.video:
        raise BadMedia(f"{path}: contains no video stream")
    stream = container.streams.video[0]
    context = stream.codec_context
    if not context.width or not context.height:
        raise BadMedia(f"{path}: video stream has no frame size (unsupported or damaged)")
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    frames = stream.frames or None
    if stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    elif container.duration:
        duration = container.duration / av.time_base
    else:
        duration = frames / fps if frames and fps else 0.0
    return VideoInfo(
        width=context.width, height=context.height, fps=fps, frames=frames, duration=duration,
        has_audio=bool(container.streams.audio), codec=context.name,
    )


def probe(path: str | Path) -> VideoInfo:
    """Read a video's header (no decoding, so safe in-process) or raise BadMedia."""
    path = Path(path)
    with _open(path) as container:
        return _describe(container, path)


def _frame_time(frame: av.VideoFrame, index: int, fps: float) -> Fraction:
    if frame.pts is not None and frame.time_base:
        return frame.pts * frame.time_base
    return Fraction(index) / Fraction(fps or 1)  # streams without timestamps (raw, some AVI)


def _quarter_turns(frame: av.VideoFrame) -> int:
    return round(frame.rotation / 90) % 4 if frame.rotation else 0


def _rgb(frame: av.VideoFrame) -> np.ndarray:
    rgb = frame.to_ndarray(format="rgb24")
    turns = _quarter_turns(frame)
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def _thumbnail(frame: av.VideoFrame) -> np.ndarray:
    # Rotation does not matter here: only consecutive frames of one video are compared.
    return frame.reformat(width=_THUMB, height=_THUMB, format="gray").to_ndarray().astype(np.int16)


def _upright_info(info: VideoInfo, rotation: int) -> VideoInfo:
    if not rotation:
        return info
    turned = round(rotation / 90) % 2 == 1
    width, height = (info.height, info.width) if turned else (info.width, info.height)
    return replace(info, width=width, height=height, rotation=rotation)


def _check_complete(path: Path, info: VideoInfo, decoded: int) -> None:
    if decoded == 0:
        raise BadMedia(f"{path}: no frame could be decoded (truncated or damaged)")
    if info.frames and decoded < info.frames - _MISSING_FRAMES_TOLERATED:
        raise BadMedia(
            f"{path}: decoded only {decoded} of {info.frames} frames (truncated or damaged)"
        )
    if info.frames and decoded != info.frames:
        logger.info("%s: decoded %d frames, header says %d", path, decoded, info.frames)


def iter_video(path: str | Path) -> Iterator[tuple[int, float, np.ndarray]]:
    """Yield (frame index, timestamp in seconds, upright RGB uint8 array) in-process.

    For videos verify_video accepted: a damaged stream can crash FFmpeg here.
    """
    for index, time, rgb in iter_timed(path):
        yield index, float(time), rgb


@dataclass(frozen=True)
class StreamFormat:
    """What an output needs to match its source: pixel format, time base, nominal rate."""

    pix_fmt: str
    time_base: Fraction
    rate: Fraction


def stream_format(path: str | Path) -> StreamFormat:
    path = Path(path)
    with _open(path) as container:
        _describe(container, path)
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate or Fraction(30)
        return StreamFormat(stream.codec_context.pix_fmt or "yuv420p", Fraction(stream.time_base or 1 / rate), Fraction(rate))


def iter_timed(path: str | Path) -> Iterator[tuple[int, Fraction, np.ndarray]]:
    """Like iter_video, with each frame's exact presentation time in seconds (a Fraction), so
    a re-encode can keep the source's timestamps, variable frame rate included."""
    path = Path(path)
    container = _open(path)
    try:
        info = _describe(container, path)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for index, frame in enumerate(container.decode(stream)):
            yield index, _frame_time(frame, index, info.fps), _rgb(frame)
    except BadMedia:
        raise
    except _DECODE_ERRORS as exc:
        raise BadMedia(f"{path}: decoding failed ({exc})") from exc
    finally:
        container.close()


class _Sampler:
    """Keeps the first frame of each 1/sample_fps time slot unless it barely differs
    from the last kept frame. Slots come from timestamps, so variable frame rate works."""

    def __init__(self, sample_fps: float, source_fps: float, skip_similar: float):
        self.keep_all = sample_fps >= source_fps > 0
        self.rate = Fraction(sample_fps)
        self.skip_similar = skip_similar
        self.last_slot: int | None = None
        self.last_thumb: np.ndarray | None = None
        self.skipped = 0

    def wants(self, frame: av.VideoFrame, index: int, time: Fraction) -> bool:
        slot = index if self.keep_all else math.floor(time * self.rate)
        if self.last_slot is not None and slot <= self.last_slot:
            return False
        self.last_slot = slot  # a frame dropped as similar still uses up its slot
        if self.skip_similar <= 0:
            return True
        thumb = _thumbnail(frame)
        if self.last_thumb is not None:
            if float(np.abs(thumb - self.last_thumb).mean()) < self.skip_similar:
                self.skipped += 1
                return False
        self.last_thumb = thumb
        return True


def _scan(path: Path, visit: Callable[[int, Fraction, av.VideoFrame], bool]) -> tuple[VideoInfo, int]:
    """Decode the first video stream, calling visit(index, time, frame) until it returns
    False; return the info (rotation applied) and the number of frames decoded. A damaged
    stream, or one that ends early when read to the end, raises BadMedia."""
    decoded, rotation = 0, 0
    with _open(path) as container:
        info = _describe(container, path)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames = container.decode(stream)
        while True:
            try:  # only decoding: a failure inside visit (say, disk full) is not the file's fault
                frame = next(frames, None)
            except _DECODE_ERRORS as exc:
                raise BadMedia(f"{path}: decoding failed after {decoded} frames ({exc})") from exc
            if frame is None:
                break
            rotation = rotation or int(frame.rotation or 0)
            decoded += 1
            if not visit(decoded - 1, _frame_time(frame, decoded - 1, info.fps), frame):
                return _upright_info(info, rotation), decoded
    _check_complete(path, info, decoded)
    return _upright_info(info, rotation), decoded


def _sample_worker(
    path_str: str, out_dir: str, sample_fps: float, skip_similar: float, max_frames: int | None
) -> SampleResult:
    """Child-process body of sample_video (top-level so it pickles)."""
    path = Path(path_str)
    sampler = _Sampler(sample_fps, probe(path).fps, skip_similar)
    kept: list[SampledFrame] = []

    def visit(index: int, time: Fraction, frame: av.VideoFrame) -> bool:
        if sampler.wants(frame, index, time):
            data = encode_jpeg(_rgb(frame))
            name = f"f{index:06d}.jpg"
            storage.atomic_write_bytes(Path(out_dir) / name, data)
            kept.append(SampledFrame(index, float(time), name, hashlib.sha256(data).hexdigest()))
        return not max_frames or len(kept) < max_frames

    info, decoded = _scan(path, visit)
    return SampleResult(kept, decoded, sampler.skipped, info)


def sample_video(
    path: str | Path,
    out_dir: str | Path,
    sample_fps: float,
    skip_similar: float = 0.0,
    max_frames: int | None = None,
    *,
    timeout: float | None = None,
) -> SampleResult:
    """Decode a video in a child process and write about sample_fps frames a second
    as JPEGs f<index:06d>.jpg into out_dir (only those, never every frame).

    skip_similar: drop a frame whose mean absolute difference to the last kept frame
    (grey 64x64 thumbnail, 0..255) is below this. Raises BadMedia for a damaged or
    truncated file, IsolatedCrash if the decoder killed the child.
    """
    if sample_fps <= 0:
        raise ValueError(f"sample_fps must be positive, got {sample_fps}")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return run_isolated(
        _sample_worker, str(path), str(out_dir), float(sample_fps), float(skip_similar),
        max_frames, timeout=timeout, label=str(path),
    )


def _verify_worker(path_str: str) -> VideoInfo:
    info, decoded = _scan(Path(path_str), lambda index, time, frame: True)
    return replace(info, frames=decoded)


def verify_video(path: str | Path, *, timeout: float | None = None) -> VideoInfo:
    """Decode every frame in a child process; return the info with the decoded frame
    count (and rotation), or raise BadMedia / IsolatedCrash for a damaged file."""
    return run_isolated(_verify_worker, str(path), timeout=timeout, label=str(path))
