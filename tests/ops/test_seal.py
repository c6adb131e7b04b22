"""seal() signs and then checks the file as a stranger would: unmarked or unreadable output is refused."""

from __future__ import annotations

import pytest

from swapline.ops.media import write_video
from swapline.ops.seal import ProvenanceError, seal
from swapline.ops.signing_identity import ensure_local_identity
from swapline.ops.watermark import Watermarker, payload_for
from tests.conftest import video_frames


def _clip(media_dir, path, payload=None):
    frames = list(video_frames(media_dir / "single_face.mp4", range(12)).values())
    mark = Watermarker(payload).embed_frame if payload is not None else None
    write_video(frames, path, 30, mark=mark)


def test_a_marked_output_is_sealed_and_an_unmarked_one_is_refused(media_dir, tmp_path):
    identity = ensure_local_identity(tmp_path / "signing")
    payload = payload_for("c@run", "model-v1")
    facts = {"conversion": "c"}
    _clip(media_dir, tmp_path / "marked.mp4", payload)
    sealed = seal(tmp_path / "marked.mp4", identity, title="t", parent=media_dir / "single_face.mp4",
                  assertion=facts, payload=payload)
    assert sealed.c2pa_state == "Trusted" and sealed.watermark_bits_matched >= 56 and sealed.watermark_frames == 12
    _clip(media_dir, tmp_path / "plain.mp4")
    with pytest.raises(ProvenanceError, match="watermark is not found"):
        seal(tmp_path / "plain.mp4", identity, title="t", parent=media_dir / "single_face.mp4",
             assertion=facts, payload=payload)
