"""Extraction never redoes work: re-materializing a photo source analyses only new photos."""

from __future__ import annotations

import av
import dagster as dg
import pytest

from swapline.build import build_assets, default_resources
from swapline.ops import facesegments
from swapline.ops.images import encode_jpeg
from tests.conftest import CONSENT

STAGES = ("source_media", "frames", "aligned_faces")


@pytest.fixture(scope="module")
def demo_frames(media_dir) -> list:
    """Seven frames of the two demo people, as RGB arrays."""
    picks = {"WolfgangLanger_Pexels.mp4": (0, 60, 120, 180, 240), "single_face.mp4": (5, 40)}
    frames = []
    for clip, indexes in picks.items():
        with av.open(str(media_dir / clip)) as container:
            frames += [f.to_ndarray(format="rgb24") for i, f in enumerate(container.decode(video=0)) if i in indexes]
    return frames


def materialize(project, instance, partition, stages=STAGES) -> dict[str, dg.AssetMaterialization]:
    keys = [dg.AssetKey(["anna", stage]) for stage in stages]
    result = dg.materialize(build_assets(project), selection=keys, partition_key=partition, instance=instance,
                            resources=default_resources())
    assert result.success
    return {stage: result.asset_materializations_for_node(f"anna__{stage}")[0] for stage in stages}


def value(materialization: dg.AssetMaterialization, name: str):
    return materialization.metadata[name].value


def test_rematerializing_analyses_only_new_photos(demo_frames, swapline_home, instance, write_project, tmp_path):
    folder = tmp_path / "anna_photos"
    folder.mkdir()
    for i, frame in enumerate(demo_frames[:5]):
        (folder / f"photo_{i}.jpg").write_bytes(encode_jpeg(frame))
    config = {"identities": {"anna": {"consent": CONSENT, "sources": [{"photos": str(folder)}]}},
              "extraction": {"face_size": 96, "backend": "dlib"}}
    project, _ = write_project(config)
    (partition,) = project.source_keys("anna")
    instance.add_dynamic_partitions("anna_sources", [partition])

    first = materialize(project, instance, partition)
    faces = first["aligned_faces"]
    assert value(faces, "detections_run") == 5 and value(faces, "cache_hits") == 0 and value(faces, "faces") == 5

    again = materialize(project, instance, partition)
    assert value(again["frames"], "photos_reused") == 5
    assert value(again["aligned_faces"], "detections_run") == 0 and value(again["aligned_faces"], "cache_hits") == 5
    for stage in ("frames", "aligned_faces"):  # same content, same version: downstream stays fresh
        assert again[stage].tags["dagster/data_version"] == first[stage].tags["dagster/data_version"]

    for i, frame in enumerate(demo_frames[5:7], start=5):
        (folder / f"photo_{i}.jpg").write_bytes(encode_jpeg(frame))
    grown = materialize(project, instance, partition)
    assert value(grown["frames"], "photos_reused") == 5
    assert value(grown["aligned_faces"], "detections_run") == 2 and value(grown["aligned_faces"], "cache_hits") == 5
    assert value(grown["aligned_faces"], "faces") == 7

    # A setting that changes results is a different cache: everything is analysed again.
    config["extraction"]["detect_scale"] = 1.0
    changed, _ = write_project(config)
    rescaled = materialize(changed, instance, partition, stages=("aligned_faces",))
    assert value(rescaled["aligned_faces"], "detections_run") == 7 and value(rescaled["aligned_faces"], "cache_hits") == 0


def test_growth_rewrites_few_segments_and_versions_do_not_depend_on_history(demo_frames, swapline_home, instance,
                                                                               write_project, tmp_path, monkeypatch):
    monkeypatch.setattr(facesegments, "SEGMENT_FRAMES", 2)  # 7 photos make several segments
    monkeypatch.setattr(facesegments, "MAX_FRAMES", 3)
    folder = tmp_path / "anna_photos"
    folder.mkdir()
    photos = {f"photo_{i}.jpg": encode_jpeg(frame) for i, frame in enumerate(demo_frames)}
    for name, data in photos.items():
        if name != "photo_3.jpg":  # added later, in the middle of the folder
            (folder / name).write_bytes(data)
    config = {"identities": {"anna": {"consent": CONSENT, "sources": [{"photos": str(folder)}]}},
              "extraction": {"face_size": 96, "backend": "dlib"}, "checks": {"min_faces": 1}}  # 7 faces may train
    project, _ = write_project(config)
    (partition,) = project.source_keys("anna")
    faceset = dg.AssetKey(["anna", "faceset"])

    def build_all(instance) -> tuple[dg.AssetMaterialization, str]:
        instance.add_dynamic_partitions("anna_sources", [partition])
        faces = materialize(project, instance, partition)["aligned_faces"]
        assert dg.materialize(build_assets(project), selection=[faceset], instance=instance,
                              resources=default_resources()).success
        (record,) = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=faceset), limit=1).records
        return faces, record.asset_materialization.tags["dagster/data_version"]

    first, _ = build_all(instance)
    (folder / "photo_3.jpg").write_bytes(photos["photo_3.jpg"])
    grown, grown_faceset = build_all(instance)
    assert value(first, "segments") >= 3 and value(grown, "detections_run") == 1
    assert 1 <= value(grown, "segments_written") < value(grown, "segments")

    # The same photos built at once, in another home and instance: the same versions.
    monkeypatch.setenv("SWAPLINE_HOME", str(tmp_path / "fresh_home"))
    with dg.DagsterInstance.ephemeral() as fresh:
        at_once, at_once_faceset = build_all(fresh)
    assert value(at_once, "segments_written") == value(at_once, "segments") == value(grown, "segments")
    assert at_once.tags["dagster/data_version"] == grown.tags["dagster/data_version"]
    assert at_once_faceset == grown_faceset
