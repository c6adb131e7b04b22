"""Conversion plumbing on real clips: frames pass through, labels are always applied."""

from __future__ import annotations

import av
import numpy as np
from swapline.ops.convert import ConvertOptions, convert_video, match_mean_std
from swapline.ops.provenance import container_tags, draw_mark


def test_video_without_faces_is_copied_with_label(media_dir, tmp_path):
    calls = []

    def no_face(frame):
        calls.append(1)
        return frame, False

    out = tmp_path / "out.mp4"
    stats = convert_video(media_dir / "no_face.mp4", out, no_face, options=ConvertOptions(),
                          tags=container_tags("c", "s"))
    with av.open(str(media_dir / "no_face.mp4")) as ref:
        decoded = sum(1 for _ in ref.decode(video=0))  # the header's count (98) overstates it (95)
    assert stats["frames"] == len(calls) == decoded and stats["swapped"] == 0
    with av.open(str(out)) as src, av.open(str(media_dir / "no_face.mp4")) as ref:
        assert src.streams.video[0].frames in (0, decoded) and sum(1 for _ in src.decode(video=0)) == decoded
        src.seek(0)
        assert "SYNTHETIC" in src.metadata["comment"]
        first = next(src.decode(video=0)).to_ndarray(format="rgb24")
        original = next(ref.decode(video=0)).to_ndarray(format="rgb24")
    h, w = first.shape[:2]
    # Away from the mark the frame is the source (codec noise only); the mark itself differs.
    assert np.abs(first[: h // 2].astype(int) - original[: h // 2]).mean() < 3
    assert np.abs(first[-h // 12:, -w // 5:].astype(int) - original[-h // 12:, -w // 5:]).mean() > 10


def test_mark_position_is_configurable():
    frame = np.full((360, 640, 3), 128, np.uint8)
    top_left = draw_mark(frame.copy(), "top_left")
    assert (top_left[:40, :200] != 128).any() and (top_left[-40:, -200:] == 128).all()


def test_colour_match_moves_the_face_towards_the_target():
    rng = np.random.default_rng(0)
    original = np.clip(rng.normal(150, 20, (64, 64, 3)), 0, 255).astype(np.uint8)
    swapped = np.clip(rng.normal(90, 10, (64, 64, 3)), 0, 255).astype(np.uint8)
    mask = np.ones((64, 64), np.float32)
    matched = match_mean_std(swapped, original, mask)
    assert abs(matched.mean() - original.mean()) < 0.2 * abs(swapped.mean() - original.mean())
