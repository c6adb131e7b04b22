"""`swapline run` ends with a summary read from what its runs recorded in the Dagster instance:
warnings first, then per source what extraction did not use (by name), then per asset ok or
failed. Tried on a real small run (a photo folder with a group photo, a picture without a face,
a broken file and a text file, reference photos set, and a video without a face), and on a
conversion's real checks: a soundtrack lost and a 10-bit source written as 8-bit."""

from __future__ import annotations

import shutil

import dagster as dg

from swapline.ops.media import iter_video
from swapline.ops.video_out import bit_depths, write_video
from swapline.quality_checks.faceset_checks import latest_evaluation
from swapline.quality_checks.video_checks import evaluate_converted, video_check_specs
from swapline.report import conversion_lines
from swapline.runner import Outcome, materialize_project
from swapline.summary import summary_lines
from tests.conftest import CONSENT
from tests.ops.test_bit_depth import make_ten_bit_clip


def sections(report: list[str]) -> list[tuple[str, list[str]]]:
    """The report's sections in order: (header without "== ", its indented lines stripped)."""
    out = []
    for line in report:
        if line.startswith("== "):
            out.append((line[3:], []))
        else:
            assert line.startswith("  "), line
            out[-1][1].append(line.strip())
    return out


def test_a_real_run_ends_with_warnings_then_what_each_source_left_out_then_each_asset(
        media_dir, tmp_path, swapline_home, instance, write_project):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("single_face.jpg", "multi_face.jpg", "BWPictureHuman.jpg"):
        shutil.copy(media_dir / name, folder / name)
    (folder / "broken.jpg").write_bytes(b"not a JPEG at all")
    (folder / "notes.txt").write_text("where these photos come from")
    project, _ = write_project({
        "identities": {"ben": {"consent": CONSENT, "reference_photos": [str(media_dir / "single_face.jpg")],
                               "sources": [{"photos": str(folder)}, {"video": str(media_dir / "no_face.mp4")}]}},
        "extraction": {"backend": "dlib", "sample_fps": 2, "face_size": 96, "max_frames": 3, "workers": 1},
        "checks": {"min_faces": 1},
    })
    summary = materialize_project(project, instance, echo=lambda line: None, log_level="WARNING")
    assert summary.ok, summary.failed
    photos, video = sorted(project.source_keys("ben"))
    parts = sections(summary.report)
    assert [header.split(" ")[0].rstrip(":") for header, _ in parts] == ["warnings", "source", "source", "assets"], summary.report

    warnings = parts[0][1]
    assert any(w.startswith(f"! ben/{video} gave 0 faces: 0 faces in ") and w.endswith("frames without any face")
               for w in warnings), warnings
    assert any(w.startswith("! ben/faceset: failed enough_faces (WARN: faces=1, min_faces=1") for w in warnings), warnings

    header, not_used = parts[1]
    assert header == f"source ben/{photos}: 4 faces in 3 photos: 1 kept, 3 rejected as someone else, 1 photo without any face"
    not_used = "\n".join(not_used)
    assert "not used: 1 photo without a face (BWPictureHuman.jpg)" in not_used
    assert "not used: 3 faces rejected as someone else, distance 0." in not_used and "(multi_face.jpg 0." in not_used
    assert "over threshold 0.6, kept 0.0" in not_used  # the reference photo itself is among the photos
    assert "not used: 1 file skipped (broken.jpg: not an image" in not_used
    assert "not used: 1 file left out (not photos) (notes.txt)" in not_used
    assert parts[2][0].startswith(f"source ben/{video}: 0 faces in ")

    header, assets = parts[3]
    assert header == "assets: 7 ok"
    assert assets[:3] == [f"ben/{stage:<24} 2 ok" for stage in ("source_media", "frames", "aligned_faces")]
    assert assets[3].startswith("ben/faceset                  ok; checks: ") and "failed: enough_faces WARN" in assets[3]

    # The summary repeats what the instance holds: the same counts are in the materialization.
    record = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey(["ben", "aligned_faces"]),
                                                                   asset_partitions=[photos]), limit=1).records[0]
    metadata = record.asset_materialization.metadata
    assert metadata["rejected_identity"].value == 3 and len(metadata["rejected_faces"].value) == 3
    margin = metadata["identity_margin"].value
    assert margin["threshold"] == 0.6 and margin["kept"]["faces"] == 1 and margin["rejected"]["min"] > 0.6


def test_a_conversion_that_lost_its_sound_and_two_bits_is_a_warning(media_dir, tmp_path, instance):
    clip = media_dir / "single_face.mp4"  # has a soundtrack
    output = tmp_path / "talk.mp4"
    write_video((rgb for _, _, rgb in iter_video(clip)), output, 30)  # no audio_from: the sound is lost
    depths = bit_depths(make_ten_bit_clip(media_dir, tmp_path), output)
    key = dg.AssetKey(["talk", "converted_video"])

    @dg.asset(key=key, check_specs=video_check_specs(key))
    def converted_video() -> dg.MaterializeResult:
        checks = evaluate_converted(key, clip, output, tmp_path / "talk.provenance.json", source_frames=72,
                                    expected_tags={}, mark_position="bottom_right")
        return dg.MaterializeResult(metadata={"frames": 72, "swapped": 0, "audio": False, **depths}, check_results=checks)

    result = dg.materialize([converted_video], instance=instance, raise_on_error=False)
    lines = summary_lines(instance, [Outcome(key, None, result.run_id, ok=True)])
    (_, warnings), (header, assets) = sections(lines)
    assert "! talk/converted_video: the output has no audio although the source has (check audio_kept failed)" in warnings
    assert f"! talk/converted_video: the 10-bit source ({depths['pix_fmt_in']}) became 8-bit (yuv420p) in the output" in warnings
    # No sidecar and no visible mark: the real labelled_synthetic check fails, and says why.
    assert any(w.startswith("! talk/converted_video: failed labelled_synthetic (ERROR: provenance sidecar") for w in warnings)
    assert header == "assets: 1 ok"
    assert assets[0].startswith("talk/converted_video         ok; checks: ")
    assert assets[0].endswith("failed: audio_kept WARN, labelled_synthetic ERROR")

    # `swapline report` shows the same conversion: the output's numbers, then each video check.
    report = conversion_lines("talk", instance, latest_evaluation)
    assert report[:2] == ["conversion talk:", "  no target checks yet"]
    assert report[2].startswith("  output: 72 frames, 0 swapped, audio NO, 8-bit yuv420p from a 10-bit source")
    audio = next(line for line in report if line.startswith("  audio_kept               WARN"))
    assert "source_audio=True" in audio and "output_audio=False" in audio
    assert any(line.startswith("  labelled_synthetic       ERROR") for line in report), report
