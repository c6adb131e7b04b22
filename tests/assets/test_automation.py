"""The partition-sync sensor and the collection schedules, against a real instance."""

from __future__ import annotations

import datetime

import dagster as dg
import yaml
from swapline.assets.automation import project_sync_sensor, sync_partitions

from swapline.build import build_definitions
from tests.conftest import CONSENT


def project_data(media, *videos: str) -> dict:
    return {"identities": {"ben": {"consent": CONSENT, "sources": [{"video": str(media / v)} for v in videos]}}}


def test_sensor_adds_and_removes_source_partitions(media_dir, instance, write_project):
    project, path = write_project(project_data(media_dir, "single_face.mp4", "face_noface.mov"))
    sensor = project_sync_sensor(path)
    result = sensor(dg.build_sensor_context(instance=instance))
    added = [r for r in result.dynamic_partitions_requests if isinstance(r, dg.AddDynamicPartitionsRequest)]
    assert added[0].partitions_def_name == "ben_sources" and sorted(added[0].partition_keys) == sorted(project.source_keys("ben"))

    sync_partitions(project, instance)  # what the daemon does with the requests
    assert isinstance(sensor(dg.build_sensor_context(instance=instance)), dg.SkipReason)

    # The user drops one video from the project file: its partition is deleted, the other kept.
    path.write_text(yaml.safe_dump(project_data(media_dir, "single_face.mp4")))
    result = sensor(dg.build_sensor_context(instance=instance))
    (request,) = result.dynamic_partitions_requests
    assert isinstance(request, dg.DeleteDynamicPartitionsRequest)
    kept = next(k for k in project.source_keys("ben") if k.startswith("video_single_face"))
    assert kept not in request.partition_keys and len(request.partition_keys) == 1


def test_sensor_skips_a_broken_project_file(media_dir, instance, write_project):
    _, path = write_project(project_data(media_dir, "single_face.mp4"))
    path.write_text("identities: {ben: {sources: []}}\n")
    result = project_sync_sensor(path)(dg.build_sensor_context(instance=instance))
    assert isinstance(result, dg.SkipReason) and "consent" in result.skip_message


def test_schedule_requests_every_source_of_the_identity(media_dir, write_project):
    project, path = write_project(project_data(media_dir, "single_face.mp4", "face_noface.mov"))
    defs = build_definitions(project, path)
    schedule = defs.get_schedule_def("collect_ben_schedule")
    assert schedule.cron_schedule == "0 3 * * *"
    with dg.instance_for_test() as instance:  # schedules need an instance with a ref, not an ephemeral one
        sync_partitions(project, instance)
        tick = datetime.datetime(2026, 11, 23, 3, tzinfo=datetime.timezone.utc)
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=tick,
                                            repository_def=defs.get_repository_def())
        requests = schedule.evaluate_tick(context).run_requests
        assert len({r.run_key for r in requests}) == len(requests)
    assert sorted(r.partition_key for r in requests) == sorted(project.source_keys("ben"))
