"""Writing videos: H.264 MP4 through PyAV, the source's audio copied (or re-encoded to AAC),
container metadata kept, written atomically. Re-exported by ops.media."""

from __future__ import annotations

import contextlib
import itertools
import logging
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable, Iterator

import av
import numpy as np

from swapline.ops import storage

logger = logging.getLogger(__name__)

# MP4 holds these audio codecs as they are; anything else is re-encoded to AAC.
_MP4_AUDIO = {"aac", "mp3", "mp3float", "ac3", "eac3", "alac"}
# Keys the MP4 muxer writes as standard tags. Any other key needs its use_metadata_tags
# mode, else FFmpeg drops the key without a word.
_MP4_TAGS = {
    "title", "artist", "album_artist", "composer", "album", "date", "comment", "genre",
    "copyright", "grouping", "lyrics", "description", "synopsis", "show", "episode_id",
    "network", "keywords",
}


def _as_rate(fps: float | Fraction) -> Fraction:
    # 23.976... as a float becomes 24000/1001 again, which MP4 stores exactly.
    rate = fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(1001)
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return rate


def _even(rgb: np.ndarray) -> np.ndarray:
    pad_h, pad_w = rgb.shape[0] % 2, rgb.shape[1] % 2
    if pad_h or pad_w:  # yuv420p needs even sides: repeat the last row / column
        rgb = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return rgb


class _AudioFeed:
    """Muxes the source's audio as the video advances, so the output stays interleaved;
    audio that starts after the last video frame is left out."""

    def __init__(self, source: av.container.InputContainer, out: av.container.OutputContainer):
        self.out = out
        stream = source.streams.audio[0]
        self.copy = stream.codec_context.name in _MP4_AUDIO
        if self.copy:
            self.stream = out.add_stream_from_template(stream)
        else:
            context = stream.codec_context
            # Mono or stereo AAC plays everywhere; PyAV's resampler downmixes anything else.
            layout = "mono" if context.channels == 1 else "stereo"
            self.stream = out.add_stream("aac", rate=context.sample_rate, layout=layout, format="fltp")
        self.packets = self._packets(source, stream)
        self.pending: tuple[Fraction, av.Packet] | None = None
        self.written = 0

    def _packets(self, source, stream) -> Iterator[tuple[Fraction, av.Packet]]:
        for packet in source.demux(stream):
            if packet.dts is None:  # the demuxer's empty flush packet
                continue
            if self.copy:
                time = packet.pts * packet.time_base if packet.pts is not None else Fraction(0)
                packet.stream = self.stream
                yield time, packet
            else:
                for frame in packet.decode():
                    yield from self._timed(self.stream.encode(frame))
        if not self.copy:
            yield from self._timed(self.stream.encode(None))

    @staticmethod
    def _timed(packets: list[av.Packet]) -> Iterator[tuple[Fraction, av.Packet]]:
        for packet in packets:
            yield (packet.pts or 0) * (packet.time_base or 0), packet

    def mux_until(self, seconds: Fraction) -> None:
        while True:
            if self.pending is None:
                self.pending = next(self.packets, None)
                if self.pending is None:
                    return
            time, packet = self.pending
            if time >= seconds:
                return
            self.out.mux(packet)
            self.pending = None
            self.written += 1


# libx264 encodes these as they are; other source formats (10-bit, RGB, ...) become yuv420p.
# Frames reach the encoder as 8-bit RGB (decoding, the model and blending work in 8 bits), so
# a 10-bit source is written as 8-bit: a High 10 stream would hold no more precision and plays in
# few browsers and phones. The drop is recorded (bit_depths) and the run summary warns of it.
X264_PIX_FMTS = {"yuv420p", "yuv422p", "yuv444p"}


def output_pix_fmt(source_pix_fmt: str | None) -> str:
    """The pixel format write_video encodes a source of `source_pix_fmt` in."""
    return source_pix_fmt if source_pix_fmt in X264_PIX_FMTS else "yuv420p"


def bit_depth(pix_fmt: str | None) -> int:
    """Bits per sample of a pixel format (yuv420p: 8, yuv420p10le: 10; unknown: 8)."""
    try:
        return max(c.bits for c in av.VideoFormat(pix_fmt).components)
    except (TypeError, ValueError):
        return 8


def bit_depths(source: Path, output: Path) -> dict:
    """Pixel format and bit depth of `source`'s and `output`'s video (headers only):
    pix_fmt_in, bit_depth_in, pix_fmt_out, bit_depth_out."""
    out = {}
    for side, path in (("in", source), ("out", output)):
        with av.open(str(path)) as container:
            pix_fmt = container.streams.video[0].codec_context.pix_fmt or ""
        out.update({f"pix_fmt_{side}": pix_fmt, f"bit_depth_{side}": bit_depth(pix_fmt)})
    return out


def _timed(frames: Iterator, rate: Fraction) -> Iterator[tuple[np.ndarray, Fraction]]:
    """(rgb, seconds) pairs: given ones kept (variable frame rate), bare frames at index / rate."""
    for index, item in enumerate(frames):
        yield item if isinstance(item, tuple) else (item, index / rate)


def _encode(frames, tmp: Path, rate: Fraction, tick: Fraction, audio_from, metadata, crf, pix_fmt,
            mark: Callable[[av.VideoFrame], av.VideoFrame] | None) -> tuple[int, bool]:
    frames = _timed(frames, rate)
    first, first_time = next(frames, (None, None))
    if first is None:
        raise ValueError("write_video got no frames")
    flags = "+faststart" + ("+use_metadata_tags" if set(metadata) - _MP4_TAGS else "")
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(av.open(str(tmp), "w", format="mp4", options={"movflags": flags}))
        out.metadata.update(metadata)
        video = out.add_stream("libx264", rate=rate, options={"crf": str(crf)})
        video.height, video.width = _even(first).shape[:2]
        video.pix_fmt = output_pix_fmt(pix_fmt)
        video.codec_context.time_base = tick
        source = stack.enter_context(av.open(str(audio_from))) if audio_from else None
        feed = _AudioFeed(source, out) if source is not None and source.streams.audio else None
        count, last_pts, end = 0, -1, Fraction(0)
        for rgb, time in itertools.chain([(first, first_time)], frames):
            if rgb.shape != first.shape or rgb.dtype != np.uint8:
                raise ValueError(f"frame {count}: {rgb.shape} {rgb.dtype}, expected {first.shape} uint8")
            frame = av.VideoFrame.from_ndarray(_even(rgb), format="rgb24")
            if mark is not None:  # on the YUV planes the encoder takes as they are (a chroma mark survives)
                frame = mark(frame.reformat(format=video.pix_fmt))
            # The source's own timestamps (variable frame rate kept); never two frames on one tick.
            last_pts = max(round(Fraction(time) / tick), last_pts + 1)
            frame.pts, frame.time_base = last_pts, tick
            out.mux(video.encode(frame))
            count += 1
            end = max(end, Fraction(time) + 1 / rate)
            if feed:
                feed.mux_until(end)
        out.mux(video.encode(None))
        if feed:
            feed.mux_until(end)
    return count, bool(feed and feed.written)


def write_video(
    frames: Iterable[np.ndarray],
    out_path: str | Path,
    fps: float | Fraction,
    *,
    audio_from: Path | None = None,
    metadata: dict[str, str] | None = None,
    crf: int = 20,
    time_base: Fraction | None = None,
    pix_fmt: str = "yuv420p",
    mark: Callable[[av.VideoFrame], av.VideoFrame] | None = None,
) -> dict:
    """Encode RGB uint8 frames as H.264 MP4, atomically, with the audio of `audio_from`
    (copied when MP4 can hold it, else AAC) and `metadata` as container tags. A frame may come
    as (rgb, seconds) to keep its own presentation time (variable frame rate); `pix_fmt` is kept
    when libx264 takes it (X264_PIX_FMTS), else yuv420p. `mark` (e.g. an invisible watermark's
    embed_frame) gets each frame already in the encoder's pixel format and returns the frame to encode.

    Returns {"frames": count, "path": str, "audio": whether audio was written}; a `pix_fmt` of
    more bits than the one encoded is logged as a warning (bit_depths reads both from the files).
    """
    rate = _as_rate(fps)
    tick = Fraction(time_base) if time_base else 1 / rate
    out_path = Path(out_path)
    with storage.atomic_file(out_path) as tmp:
        count, audio = _encode(iter(frames), tmp, rate, tick, audio_from, dict(metadata or {}), crf, pix_fmt, mark)
    logger.info("wrote %s: %d frames at %s fps, audio=%s", out_path, count, rate, audio)
    written = output_pix_fmt(pix_fmt)
    if bit_depth(pix_fmt) > bit_depth(written):
        logger.warning("%s: the source's %s (%d-bit) was written as %s (%d-bit)", out_path.name, pix_fmt,
                       bit_depth(pix_fmt), written, bit_depth(written))
    return {"frames": count, "path": str(out_path), "audio": audio}
