"""The whole graph, end to end, on real clips with tiny settings, in a real Dagster instance."""

from __future__ import annotations

import json

import av
import dagster as dg
import numpy as np
import pytest

from swapline.build import build_assets, default_resources
from swapline.ops.storage import ArtifactStore
from swapline.runner import materialize_project
from tests.conftest import CONSENT

pytestmark = pytest.mark.slow


def tiny_project(media) -> dict:
    return {
        "identities": {
            "anna": {"consent": CONSENT, "sources": [{"video": str(media / "WolfgangLanger_Pexels.mp4")}]},
            "ben": {"consent": CONSENT, "sources": [{"video": str(media / "single_face.mp4")}]},
        },
        "swaps": {"ab": {"a": "anna", "b": "ben", "resolution": 64, "preset": "lite", "iterations": 40, "batch_size": 8}},
        "conversions": {"ben_as_anna": {"swap": "ab", "video": str(media / "single_face.mp4"), "direction": "b_to_a"}},
        "extraction": {"sample_fps": 6, "face_size": 96, "max_frames": 24},
        "checks": {"min_faces": 5},  # tiny facesets on purpose: below recommended (WARN), not blocked
    }


def decode_all(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        has_audio = bool(container.streams.audio)
        duration = float(stream.duration * stream.time_base) if stream.duration else container.duration / 1e6
        return frames, has_audio, duration, dict(container.metadata)


def latest_version(instance, key: dg.AssetKey, partition: str | None = None) -> str:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None), limit=1
    ).records
    return records[0].asset_materialization.tags["dagster/data_version"]


def latest_check(instance, key: list[str], name: str):
    check = dg.AssetCheckKey(dg.AssetKey(key), name)
    (record,) = instance.event_log_storage.get_asset_check_execution_history(check, limit=1)
    return record.event.dagster_event.event_specific_data


def test_demo_graph_end_to_end(media_dir, swapline_home, instance, write_project):
    project, _ = write_project(tiny_project(media_dir))
    lines: list[str] = []
    summary = materialize_project(project, instance, echo=lines.append)
    assert summary.ok, summary.failed

    store = ArtifactStore(swapline_home)
    published = store.current(store.location("ben_as_anna", "converted_video"))
    source, src_audio, src_duration, _ = decode_all(media_dir / "single_face.mp4")
    output, out_audio, out_duration, tags = decode_all(published.path / "ben_as_anna.mp4")
    assert len(output) == len(source) == 72
    assert src_audio and out_audio
    assert abs(out_duration - src_duration) < 1.5 / 30
    assert "SYNTHETIC" in tags.get("comment", "")

    # The face region changed; the background far from the face did not (beyond codec noise).
    diff = np.abs(output[36].astype(np.int16) - source[36].astype(np.int16)).mean(axis=2)  # (H, W)
    h, w = diff.shape
    centre = diff[h // 4: 3 * h // 4, w // 4: 3 * w // 4].mean()
    corner = diff[: h // 6, : w // 6].mean()
    assert centre > 3 * corner + 2, (centre, corner)

    # The model carries its evidence: held-out metrics, identity transfer, preview and loss curve.
    model = store.current(store.location("ab", "face_model"))
    report = model.manifest()["evaluation"]
    assert report["held_out"]["a"] >= 1 and report["held_out"]["b"] >= 1
    assert 0.0 <= report["identity"]["a_to_b"] <= 1.0 and 0.0 < report["reconstruction"]["a_to_a"]["ssim"] <= 1.0
    assert (model.path / "preview.png").is_file() and (model.path / "loss_curve.png").is_file()

    # The UI shows a preview strip, speed and where the time went.
    (record,) = instance.fetch_materializations(dg.AssetKey(["ben_as_anna", "converted_video"]), limit=1).records
    metadata = record.asset_materialization.metadata
    assert "original | swapped" in metadata["preview"].value and metadata["realtime_factor"].value > 0
    assert set(metadata["stage_seconds"].value) == {"decode", "detect", "infer", "blend", "encode"}
    # Conversion detects nothing: target_faces analysed the target once, and since the target is
    # also ben's training source, the frames extraction analysed were not detected again there.
    assert metadata["detections_run"].value == 0
    (record,) = instance.fetch_materializations(dg.AssetKey(["ben_as_anna", "target_faces"]), limit=1).records
    analysed = record.asset_materialization.metadata
    assert analysed["frames"].value == 72 and analysed["seeded"].value > 0
    assert analysed["detections_run"].value + analysed["seeded"].value == 72

    sidecar = json.loads((published.path / "ben_as_anna.provenance.json").read_text())
    assert sidecar["synthetic"] is True and sidecar["face_rendered"] == "anna"
    assert set(sidecar["consent"]) == {"anna", "ben"} and sidecar["model"]["step"] == 40

    # The tiny facesets are far below the recommended size: the check warns (and does not block).
    check = dg.AssetCheckKey(dg.AssetKey(["ben", "faceset"]), "enough_faces")
    (record,) = instance.event_log_storage.get_asset_check_execution_history(check, limit=1)
    evaluation = record.event.dagster_event.event_specific_data
    assert evaluation.passed is False and evaluation.severity == dg.AssetCheckSeverity.WARN

    # The written video was checked: same length as the source, audio kept, labelled synthetic.
    for name in ("same_length", "audio_kept", "labelled_synthetic"):
        evaluation = latest_check(instance, ["ben_as_anna", "converted_video"], name)
        assert evaluation.passed, (name, evaluation.metadata)
    # The target's poses and light were compared with anna's faceset (rendered: b_to_a) before training.
    for name in ("pose_coverage", "lighting_coverage"):
        evaluation = latest_check(instance, ["ben_as_anna", "target_faces"], name)
        assert evaluation.severity == dg.AssetCheckSeverity.WARN and evaluation.metadata["faceset_faces"].value > 0

    # Re-collecting an unchanged source gives the same data version: downstream stays fresh.
    # So do frames and faces recomputed from it: their versions come from content, not run ids.
    partition = next(iter(project.source_keys("ben")))
    keys = [dg.AssetKey(["ben", stage]) for stage in ("source_media", "frames", "aligned_faces")]
    before = [latest_version(instance, key, partition) for key in keys]
    assert dg.materialize(build_assets(project), selection=keys, partition_key=partition, instance=instance,
                          resources=default_resources()).success
    assert [latest_version(instance, key, partition) for key in keys] == before
    faceset = dg.AssetKey(["ben", "faceset"])
    before = latest_version(instance, faceset)
    assert dg.materialize(build_assets(project), selection=[faceset], instance=instance, resources=default_resources()).success
    assert latest_version(instance, faceset) == before

    # More training, then a re-render: the target is decoded once more (to paint), nothing is
    # detected, and its analysis is not redone (target_faces stays as it was).
    data = tiny_project(media_dir)
    data["swaps"]["ab"]["iterations"] = 50
    more, _ = write_project(data)
    video = dg.AssetKey(["ben_as_anna", "converted_video"])
    assert dg.materialize(build_assets(more), selection=[dg.AssetKey(["ab", "face_model"]), video], instance=instance,
                          resources=default_resources()).success
    records = instance.fetch_materializations(video, limit=5).records
    assert len(records) == 2 and records[0].asset_materialization.metadata["detections_run"].value == 0
    assert records[0].asset_materialization.metadata["frames"].value == 72
    assert len(instance.fetch_materializations(dg.AssetKey(["ben_as_anna", "target_faces"]), limit=5).records) == 1
