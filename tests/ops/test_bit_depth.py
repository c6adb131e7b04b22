"""A 10-bit source: conversion writes 8-bit H.264 (frames are 8-bit RGB by then) and says so:
the source's and the output's pixel formats and bit depths are read back from the files, and the
writer logs the drop. The 10-bit clip is made here from a real demo clip."""

from __future__ import annotations

import logging

import av
import numpy as np
import pytest

from swapline.ops.media import iter_video, stream_format
from swapline.ops.video_out import bit_depth, bit_depths, write_video

# (codec, container, pixel format) tried in turn: H.264 High 10 where PyAV's libx264 has it.
TEN_BIT = [("libx264", "mp4", "yuv420p10le"), ("libx265", "mp4", "yuv420p10le"), ("ffv1", "mkv", "yuv420p10le")]


def ten_bit_encoder() -> tuple[str, str, str] | None:
    for codec, container, pix_fmt in TEN_BIT:
        try:
            formats = {f.name for f in av.codec.Codec(codec, "w").video_formats or []}
        except ValueError:  # av.codec.codec.UnknownCodecError: not in this build
            continue
        if pix_fmt in formats:
            return codec, container, pix_fmt
    return None


def make_ten_bit_clip(media_dir, folder):
    """12 frames of the real single_face.mp4 re-encoded at 10 bits; skips the test without an encoder."""
    found = ten_bit_encoder()
    if found is None:
        pytest.skip("this PyAV build has no 10-bit video encoder (tried libx264, libx265, ffv1)")
    codec, container_format, pix_fmt = found
    path = folder / f"ten_bit.{container_format}"
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=30)
        stream.width, stream.height, stream.pix_fmt = 640, 360, pix_fmt
        for index, _, rgb in iter_video(media_dir / "single_face.mp4"):
            if index >= 12:
                break
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)))
        out.mux(stream.encode(None))
    return path


@pytest.fixture
def ten_bit_clip(media_dir, tmp_path):
    return make_ten_bit_clip(media_dir, tmp_path)


def test_a_ten_bit_source_is_written_as_eight_bit_and_says_so(ten_bit_clip, tmp_path, caplog):
    source = stream_format(ten_bit_clip)
    assert bit_depth(source.pix_fmt) == 10
    frames = [rgb for _, _, rgb in iter_video(ten_bit_clip)]
    assert len(frames) == 12 and frames[0].dtype == np.uint8
    out = tmp_path / "out.mp4"
    with caplog.at_level(logging.WARNING, logger="swapline.ops.video_out"):
        write_video(frames, out, source.rate, pix_fmt=source.pix_fmt)
    assert bit_depths(ten_bit_clip, out) == {"pix_fmt_in": source.pix_fmt, "bit_depth_in": 10,
                                             "pix_fmt_out": "yuv420p", "bit_depth_out": 8}
    assert "(10-bit) was written as yuv420p (8-bit)" in caplog.text


def test_an_eight_bit_source_keeps_its_depth(media_dir, tmp_path, caplog):
    clip = media_dir / "single_face.mp4"
    frames = [rgb for index, _, rgb in iter_video(clip) if index < 6]
    out = tmp_path / "out.mp4"
    with caplog.at_level(logging.WARNING, logger="swapline.ops.video_out"):
        write_video(frames, out, 30, pix_fmt=stream_format(clip).pix_fmt)
    depths = bit_depths(clip, out)
    assert depths["bit_depth_in"] == depths["bit_depth_out"] == 8 and "-bit" not in caplog.text
