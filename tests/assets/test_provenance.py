"""Provenance that survives (issue 15), on the demo-like pipeline's real output: the C2PA manifest
reads Trusted against the local CA, tampering reads Invalid, a remux loses the manifest but not
the watermark, re-encoding (CRF 23, 28) and JPEG q50 stills keep the watermark, unmarked video is
not recognised, and a damaged signing key fails the conversion with nothing published."""

from __future__ import annotations

import json
import shutil

import av
import cv2
import dagster as dg
import pytest

from swapline.build import build_assets, default_resources
from swapline.cli import main
from swapline.ops.audit import AuditLog
from swapline.ops.storage import ArtifactStore
from swapline.ops.watermark import MATCH_BITS, detect_file, detect_images
from swapline.runner import materialize_project
from tests.assets.test_pipeline import tiny_project

pytestmark = pytest.mark.slow
VIDEO = dg.AssetKey(["ben_as_anna", "converted_video"])


def verify(capsys, path, home) -> tuple[int, dict]:
    code = main(["verify", str(path), "--json", "--home", str(home)])
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def reencode(src, dst, crf: int | None) -> None:
    """Decode and encode again at the same size (crf) or copy the packets (None: a remux)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", format="mp4") as out:
        stream = inp.streams.video[0]
        if crf is None:
            copy = out.add_stream_from_template(stream)
            for packet in inp.demux(stream):
                if packet.dts is not None:
                    packet.stream = copy
                    out.mux(packet)
            return
        enc = out.add_stream("libx264", rate=stream.average_rate, options={"crf": str(crf)})
        enc.width, enc.height, enc.pix_fmt = stream.width, stream.height, "yuv420p"
        for frame in inp.decode(stream):
            frame.pts = None
            out.mux(enc.encode(frame))
        out.mux(enc.encode(None))


def test_output_is_signed_watermarked_logged_and_fails_closed(media_dir, swapline_home, instance, write_project,
                                                               tmp_path, capsys):
    project, _ = write_project(tiny_project(media_dir))
    assert materialize_project(project, instance, echo=lambda _: None).ok
    output = ArtifactStore(swapline_home).current(ArtifactStore(swapline_home).location("ben_as_anna", "converted_video"))
    video = output.path / "ben_as_anna.mp4"

    code, result = verify(capsys, video, swapline_home)
    assert code == 0 and result["c2pa_state"] == "Trusted" and result["c2pa_codes"] == []
    assert result["digital_source_type"].endswith("compositeWithTrainedAlgorithmicMedia")
    assert result["watermark_found"] and result["watermark_bits_matched"] >= MATCH_BITS
    assert result["conversion"] == "ben_as_anna" and result["audit"]["matched_by"] == "file hash"
    assert result["sidecar"]["hash_matches"] and result["audit"]["chain_ok"]
    sidecar = json.loads((output.path / "ben_as_anna.provenance.json").read_text())
    assert sidecar["watermark"]["payload"] == result["watermark_payload"] and sidecar["c2pa"]["c2pa_state"] == "Trusted"

    flipped = tmp_path / "flipped.mp4"  # one byte of the media data changed
    data = bytearray(video.read_bytes())
    data[data.index(b"mdat") + 4000] ^= 0xFF
    flipped.write_bytes(bytes(data))
    code, result = verify(capsys, flipped, swapline_home)
    assert result["c2pa_state"] == "Invalid" and any("bmffHash" in c for c in result["c2pa_codes"]), result
    assert result["sidecar"] is None

    remuxed = tmp_path / "remuxed.mp4"
    reencode(video, remuxed, None)
    code, result = verify(capsys, remuxed, swapline_home)
    assert code == 0 and result["c2pa_state"] == "none" and result["watermark_found"]
    assert result["conversion"] == "ben_as_anna" and result["audit"]["matched_by"] == "watermark"

    payloads = AuditLog.in_home(swapline_home).payloads()
    for crf in (23, 28):
        copy = tmp_path / f"crf{crf}.mp4"
        reencode(video, copy, crf)
        found = detect_file(copy, payloads)
        print(f"CRF {crf}: {found.bits_matched}/64 bits, agreement {found.agreement:.3f}")
        assert found.found and found.bits_matched >= MATCH_BITS, (crf, found)
    stills = []
    for i, frame in enumerate(av.open(str(video)).decode(video=0)):
        if i % 7 == 0 and len(stills) < 10:
            stills.append(tmp_path / f"still{i}.jpg")
            cv2.imwrite(str(stills[-1]), frame.to_ndarray(format="bgr24"), [cv2.IMWRITE_JPEG_QUALITY, 50])
    found = detect_images(stills, payloads)
    assert len(stills) == 10 and found.found and found.bits_matched >= MATCH_BITS, found

    for clip in ("single_face.mp4", "WolfgangLanger_Pexels.mp4"):  # never marked
        code, result = verify(capsys, media_dir / clip, swapline_home)
        print(f"unmarked {clip}: {result['watermark_bits_matched']} bits, agreement {result.get('watermark_agreement')}")
        assert code == 1 and not result["watermark_found"] and result["c2pa_state"] == "none"
        assert 0.35 < result["watermark_agreement"] < 0.75 and result["conversion"] is None

    # A damaged signing key: the conversion fails, says why, publishes nothing, logs nothing.
    versions = sorted(p.name for p in output.path.parent.iterdir())
    records = AuditLog.in_home(swapline_home).verify().records
    key = swapline_home / "signing" / "signer.key"
    saved = tmp_path / "signer.key"
    shutil.copy(key, saved)
    key.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    for damage in ("corrupted", "missing"):
        result = dg.materialize(build_assets(project), selection=[VIDEO], instance=instance,
                                resources=default_resources(), raise_on_error=False)
        assert not result.success
        error = next(e for e in result.all_events if e.is_step_failure).step_failure_data.error
        assert error.cause.cls_name == "SigningError" and "signer" in error.cause.message, error.cause.message
        assert sorted(p.name for p in output.path.parent.iterdir()) == versions
        assert AuditLog.in_home(swapline_home).verify().records == records
        key.unlink(missing_ok=True)  # next: the key file missing
    shutil.copy(saved, key)
