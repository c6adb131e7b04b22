"""converted_video checks on real files: a real labelled conversion passes, an unlabelled,
silent or shortened copy of the same clip fails the matching check."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from swapline.ops.media import iter_video, verify_video, write_video
from swapline.ops.provenance import container_tags, draw_mark, sidecar
from swapline.quality_checks.video_checks import evaluate_converted

CLIP = "single_face.mp4"
KEY = dg.AssetKey(["conv", "converted_video"])
TAGS = container_tags("conv", "ab")


def labelled_copy(video, out, position="bottom_right"):
    """The source with the mark, the tags and its audio: what a conversion without a face writes."""
    write_video((draw_mark(f, position) for _, _, f in iter_video(video)), out, 30, audio_from=video, metadata=TAGS)


@pytest.fixture(scope="module")
def source(media_dir):
    path = media_dir / CLIP
    return path, verify_video(path).frames


def evaluate(source, output, sidecar_path, position="bottom_right") -> dict[str, dg.AssetCheckResult]:
    path, frames = source
    return {r.check_name: r for r in evaluate_converted(KEY, path, output, sidecar_path, source_frames=frames,
                                                        expected_tags=TAGS, mark_position=position)}


def test_labelled_conversion_passes(source, tmp_path):
    out = tmp_path / "conv.mp4"
    labelled_copy(source[0], out, "top_left")
    (tmp_path / "conv.provenance.json").write_text(json.dumps(sidecar(conversion="conv")))
    checks = evaluate(source, out, tmp_path / "conv.provenance.json", "top_left")
    assert all(c.passed for c in checks.values()), {n: c.metadata for n, c in checks.items()}
    assert checks["same_length"].metadata["output_frames"].value == source[1]
    mark = checks["labelled_synthetic"].metadata["mark"].data
    assert mark["error_vs_marked"] < mark["error_vs_unmarked"]


def test_unlabelled_silent_copy_fails_labels_and_audio(source, tmp_path):
    out = tmp_path / "plain.mp4"
    write_video((frame for _, _, frame in iter_video(source[0])), out, 30)  # no tags, mark, audio or sidecar
    checks = evaluate(source, out, tmp_path / "plain.provenance.json")
    labels = checks["labelled_synthetic"]
    assert not labels.passed and labels.severity == dg.AssetCheckSeverity.ERROR
    problems = labels.metadata["problems"].data
    assert any("container tag" in p for p in problems) and any("sidecar" in p for p in problems)
    assert any("mark" in p for p in problems)
    assert not checks["audio_kept"].passed and checks["audio_kept"].severity == dg.AssetCheckSeverity.WARN
    assert checks["same_length"].passed


def test_sidecar_must_say_synthetic(source, tmp_path):
    out = tmp_path / "conv.mp4"
    labelled_copy(source[0], out)
    (tmp_path / "conv.provenance.json").write_text(json.dumps({"synthetic": False}))
    problems = evaluate(source, out, tmp_path / "conv.provenance.json")["labelled_synthetic"].metadata["problems"].data
    assert problems == ["provenance sidecar conv.provenance.json does not say synthetic: true"]


def test_shortened_copy_fails_length(source, tmp_path):
    out = tmp_path / "short.mp4"
    frames = [frame for i, _, frame in iter_video(source[0]) if i < source[1] - 3]
    write_video(frames, out, 30, audio_from=source[0], metadata=TAGS)
    check = evaluate(source, out, tmp_path / "none.json")["same_length"]
    assert not check.passed and check.metadata["output_frames"].value == source[1] - 3
