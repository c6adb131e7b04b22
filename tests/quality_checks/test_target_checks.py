"""Pose and lighting coverage on real faces: segments of the WolfgangLanger demo clip.

The segments were picked by measuring ops.faces.head_pose on every third frame of the clip:
frames 228-350 look at the camera (yaw -9..6), 351-390 too (yaw 3..9, a little lower), and
135-171 turn to the man's right (yaw -26..-34). The tests re-measure them before relying on it.
"""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from swapline.quality_checks.pose import axis_counts
from swapline.quality_checks.target_checks import evaluate_coverage
from tests.conftest import video_frames

CLIP = "WolfgangLanger_Pexels.mp4"
FACESET_FRAMES = range(228, 351, 3)  # frontal: the "faceset" of the rendered identity
FRONTAL_FRAMES = range(351, 391)  # frontal too: a target the faceset covers
TURNED_FRAMES = range(135, 172)  # the head turned: a target it does not
DARK = 0.3  # the same frames at 30% brightness
KEY = dg.AssetKey(["conv", "target_video"])


def face_rows(analyzer, frames: dict[int, np.ndarray], scale: float = 1.0) -> pd.DataFrame:
    """yaw, pitch, brightness of the largest face of each frame, measured by the real extractor."""
    from swapline.ops.facetable import extract_from_image

    rows = []
    for index, frame in frames.items():
        image = (frame * scale).astype(np.uint8)
        records, _ = extract_from_image(analyzer, image, identity="ben", source="test", source_sha=str(index),
                                        frame_index=index, timestamp=0.0)
        if records:
            rows.append({"yaw": records[0].yaw, "pitch": records[0].pitch, "brightness": records[0].brightness})
    return pd.DataFrame(rows)


def segment_frames(media_dir) -> dict[str, dict[int, np.ndarray]]:
    wanted = [*FACESET_FRAMES, *FRONTAL_FRAMES, *TURNED_FRAMES]
    frames = video_frames(media_dir / CLIP, wanted)
    return {name: {i: frames[i] for i in indexes}
            for name, indexes in (("faceset", FACESET_FRAMES), ("frontal", FRONTAL_FRAMES), ("turned", TURNED_FRAMES))}


@pytest.fixture(scope="module")
def tables(media_dir):
    from swapline.ops.faces import AnalyzerSettings, FaceAnalyzer

    analyzer = FaceAnalyzer(AnalyzerSettings(backend="dlib", face_size=96))
    frames = segment_frames(media_dir)
    out = {name: face_rows(analyzer, group) for name, group in frames.items()}
    out["dark"] = face_rows(analyzer, frames["frontal"], DARK)
    out["dark_faceset"] = face_rows(analyzer, frames["faceset"], DARK)
    return out


def results(faceset, target) -> dict[str, dg.AssetCheckResult]:
    return {r.check_name: r for r in evaluate_coverage(KEY, faceset, target, "ben")}


def test_segments_are_what_the_tests_assume(tables):
    for name in ("faceset", "frontal", "turned", "dark"):
        assert len(tables[name]) >= 0.9 * len(TURNED_FRAMES), name  # a face in nearly every frame
    assert tables["faceset"]["yaw"].abs().max() < 15 and tables["frontal"]["yaw"].abs().max() < 15
    assert tables["turned"]["yaw"].median() < -20


def test_frontal_faceset_warns_against_turned_target(tables):
    checks = results(tables["faceset"], tables["turned"])
    pose = checks["pose_coverage"]
    assert not pose.passed and pose.severity == dg.AssetCheckSeverity.WARN
    missing = pose.metadata["missing_bins"].data
    assert missing and {m["axis"] for m in missing} == {"yaw"} and all(m["bin"][1] <= -15 for m in missing)
    assert all(m["faceset_faces"] < m["target_faces"] for m in missing)
    assert "turned to their right" in pose.description and "add videos of ben" in pose.description
    assert checks["lighting_coverage"].passed  # same light: only the pose is missing


def test_frontal_faceset_covers_frontal_target(tables):
    checks = results(tables["faceset"], tables["frontal"])
    assert checks["pose_coverage"].passed and checks["pose_coverage"].metadata["missing_bins"].data == []
    assert checks["lighting_coverage"].passed


def test_dark_target_warns_against_bright_faceset(tables):
    checks = results(tables["faceset"], tables["dark"])
    light = checks["lighting_coverage"]
    assert not light.passed and light.severity == dg.AssetCheckSeverity.WARN
    assert "darker than anything in ben's faceset" in light.description
    assert light.metadata["target_median"].value < light.metadata["faceset_p5"].value
    assert checks["pose_coverage"].passed  # darkening moves no head


def test_bright_target_warns_against_dark_faceset(tables):
    light = results(tables["dark_faceset"], tables["frontal"])["lighting_coverage"]
    assert not light.passed and "brighter than anything in ben's faceset" in light.description


def test_bins_take_extremes_and_tolerance():
    # Outermost bins take what lies beyond the range; a tolerance lets neighbours count.
    assert axis_counts(np.array([-80.0, -50.0, 0.0, 14.0, 70.0, np.nan]), (-60, -45, 0, 15, 60)).tolist() == [2, 0, 2, 1]
    assert axis_counts(np.array([16.0]), (0, 15, 30), tolerance=5).tolist() == [1, 1]


def test_target_without_faces_has_nothing_to_cover(tables):
    empty = tables["frontal"].iloc[:0]
    assert all(r.passed for r in evaluate_coverage(KEY, tables["faceset"], empty, "ben"))
