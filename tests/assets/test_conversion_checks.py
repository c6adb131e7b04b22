"""target_faces analyses every frame of a target, and its coverage checks run in a real Dagster
instance against the rendered identity's faceset: real demo frames, written as target videos."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from swapline.build import build_assets, default_resources
from swapline.ops.faces import AnalyzerSettings, FaceAnalyzer
from swapline.ops.facetable import extract_from_image, write_faces
from swapline.ops.media import write_video
from swapline.ops.storage import ArtifactStore
from swapline.resources.storage import artifact_metadata
from tests.conftest import CONSENT
from tests.quality_checks.test_target_checks import DARK, segment_frames

TARGET_FPS = 8  # the segments' frames played slower: ~4 s clips, ~18 faces sampled at 4 fps


def publish_faceset(store: ArtifactStore, instance, identity: str, frames: dict[int, np.ndarray]) -> None:
    """A faceset of real faces, published where the faceset asset would put it and recorded in
    the instance (as a materialization reported from outside a run): inputs load what Dagster recorded."""
    analyzer = FaceAnalyzer(AnalyzerSettings(backend="dlib", face_size=96))
    records = [r for i, f in frames.items() for r in extract_from_image(
        analyzer, f, identity=identity, source="test", source_sha=str(i), frame_index=i, timestamp=0.0)[0][:1]]
    published = store.publish(store.location(identity, "faceset"), lambda tmp: write_faces(tmp / "faceset.parquet", records))
    instance.report_runless_asset_event(dg.AssetMaterialization(
        dg.AssetKey([identity, "faceset"]), metadata=artifact_metadata(published.path)))


@pytest.fixture
def coverage_run(media_dir, swapline_home, instance, write_project, tmp_path):
    frames = segment_frames(media_dir)
    clips = {"turned": frames["turned"], "frontal": frames["frontal"],
             "dark": {i: (f * DARK).astype(np.uint8) for i, f in frames["frontal"].items()}}
    for name, group in clips.items():
        write_video(group.values(), tmp_path / f"{name}.mp4", TARGET_FPS)
    single = str(media_dir / "single_face.mp4")
    project, _ = write_project({
        "identities": {who: {"consent": CONSENT, "sources": [{"video": single}]} for who in ("anna", "ben")},
        "swaps": {"ab": {"a": "anna", "b": "ben"}},
        "conversions": {name: {"swap": "ab", "video": str(tmp_path / f"{name}.mp4"), "direction": "a_to_b"} for name in clips},
        "extraction": {"face_size": 96},
    })
    store = ArtifactStore(swapline_home)
    publish_faceset(store, instance, "ben", frames["faceset"])  # ben's face is rendered (a_to_b)
    keys = [dg.AssetKey([name, stage]) for name in clips for stage in ("target_video", "target_faces")]
    result = dg.materialize(build_assets(project), selection=keys, instance=instance, resources=default_resources())
    assert result.success
    return result, store


def check_result(result, conversion: str, check: str):
    (evaluation,) = [e for e in result.get_asset_check_evaluations()
                     if e.asset_key == dg.AssetKey([conversion, "target_faces"]) and e.check_name == check]
    return evaluation


def test_target_faces_analysed_and_coverage_checked(coverage_run):
    result, store = coverage_run
    (materialization,) = [m for m in result.asset_materializations_for_node("turned__target_faces")]
    faces = pd.read_parquet(Path(materialization.metadata["table"].value))
    assert len(faces) >= 10 and faces["yaw"].median() < -20  # the turned head, found by the asset itself
    assert materialization.metadata["faces"].value == len(faces)
    # Every frame decoded once and analysed (no sample), one track, embedded when it appeared.
    assert materialization.metadata["frames"].value == materialization.metadata["detections_run"].value
    assert faces["embedding"].notna().sum() == materialization.metadata["embeddings"].value >= 1

    turned = check_result(result, "turned", "pose_coverage")
    assert not turned.passed and turned.severity == dg.AssetCheckSeverity.WARN
    assert "ben's faceset" in turned.description
    assert check_result(result, "frontal", "pose_coverage").passed
    assert check_result(result, "frontal", "lighting_coverage").passed
    dark = check_result(result, "dark", "lighting_coverage")
    assert not dark.passed and "darker than anything in ben's faceset" in dark.description
    assert check_result(result, "dark", "pose_coverage").passed
