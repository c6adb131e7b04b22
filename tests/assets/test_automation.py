"""The partition-sync sensor, the collection schedules and the declarative automation (source watch,
conditions, blocking checks), against real instances and real materializations."""

from __future__ import annotations

import datetime
import os
import shutil
from pathlib import Path

import dagster as dg
import yaml

from swapline.assets.automation import project_sync_sensor, sync_partitions
from swapline.build import build_assets, build_definitions, default_resources
from swapline.daemon import InProcessDaemon, describe, materialization_counts
from swapline.quality_checks.faceset_checks import latest_evaluation
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
    # Removing a source changes no data version: the faceset is rebuilt from the rest on purpose.
    (run,) = result.run_requests
    assert run.asset_selection == [dg.AssetKey(["ben", "faceset"])]
    defs = build_definitions(project, path)
    tick = defs.get_sensor_def("project_partitions_sync").evaluate_tick(
        dg.build_sensor_context(instance=instance, repository_def=defs.get_repository_def()))
    assert [r.asset_selection for r in tick.run_requests] == [[dg.AssetKey(["ben", "faceset"])]]


def test_sensor_skips_a_broken_project_file(media_dir, instance, write_project):
    _, path = write_project(project_data(media_dir, "single_face.mp4"))
    path.write_text("identities: {ben: {sources: []}}\n")
    result = project_sync_sensor(path)(dg.build_sensor_context(instance=instance))
    assert isinstance(result, dg.SkipReason) and "consent" in result.skip_message


def test_schedule_requests_every_source_of_the_identity(media_dir, write_project, swapline_home):
    project, path = write_project(project_data(media_dir, "single_face.mp4", "face_noface.mov"))
    defs = build_definitions(project, path)
    schedule = defs.resolve_schedule_def("collect_ben_schedule")
    assert schedule.cron_schedule == "0 3 * * *"
    with dg.instance_for_test() as instance:  # schedules need an instance with a ref, not an ephemeral one
        sync_partitions(project, instance)
        tick = datetime.datetime(2026, 11, 23, 3, tzinfo=datetime.timezone.utc)
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=tick, repository_def=defs.get_repository_def())
        requests = schedule.evaluate_tick(context).run_requests
        assert len({r.run_key for r in requests}) == len(requests)
    assert sorted(r.partition_key for r in requests) == sorted(project.source_keys("ben"))


# --- Declarative automation, driven in-process as the daemon drives it (swapline.daemon) ------------

PHOTOS = {"anna": ["0-f1-su-ph.jpg", "0-f15-hao-ph.jpg"], "ben": ["15-f13-anc-ph.jpg", "45-m7-di-ph.jpg"]}
CHAIN = ("source_media", "frames", "aligned_faces")


def photo_project(root: Path, media: Path, people: dict[str, list[str]], **extra) -> dict:
    """One photo-folder source per person, with real demo stills; dlib in-process (fast, offline)."""
    for who, files in people.items():
        (root / who).mkdir(parents=True, exist_ok=True)
        for name in files:
            shutil.copy(media / name, root / who / name)
    return {"identities": {who: {"consent": CONSENT, "sources": [{"photos": str(root / who)}]} for who in people},
            "extraction": {"backend": "dlib", "workers": 1},
            "checks": {"min_faces": 1, "recommended_faces": 1}, **extra}


def built(project, path: Path, instance) -> InProcessDaemon:
    """A project built by the automation alone, from an empty instance: the partitions synced,
    the sources observed, then ticks until nothing more is requested."""
    daemon = InProcessDaemon(path, instance)
    assert daemon.evaluate() == []  # the first tick sees nothing to do: no partitions yet
    sync_partitions(project, instance)
    assert {e.partition for e in daemon.watch()} == {k for who in project.identities for k in project.source_keys(who)}
    ticks = daemon.settle()
    assert all(run["success"] for tick in ticks for run in tick.runs), describe(ticks)
    assert {key for tick in ticks for key, _ in tick.requested} >= {f"{who}/faceset" for who in project.identities}
    return daemon


def chain(identity: str, partition: str, stages=CHAIN) -> set:
    return {(f"{identity}/{stage}", partition) for stage in stages}


def latest_metadata(instance, key: list[str]) -> dict:
    (record,) = instance.fetch_materializations(dg.AssetKey(key), limit=1).records
    return {name: value.value for name, value in record.asset_materialization.metadata.items()}


def test_identical_content_requests_nothing_new_photos_request_their_partition(media_dir, swapline_home, instance,
                                                                              write_project, tmp_path):
    project, path = write_project(photo_project(tmp_path, media_dir, PHOTOS))
    daemon = built(project, path, instance)
    (anna,) = project.source_keys("anna")
    assets = build_assets(project)
    eager = dg.Definitions(resources=default_resources(), assets=[
        a.map_asset_specs(lambda spec: spec.replace_attributes(automation_condition=dg.AutomationCondition.eager()))
        if isinstance(a, dg.AssetsDefinition) else a for a in assets])
    eager_cursor = dg.evaluate_automation_conditions(defs=eager, instance=instance).cursor

    # The same photos collected again (as the daily schedule does) and a file touched: the data
    # versions do not change, so nothing is requested; plain eager() would re-extract.
    assert dg.materialize(assets, selection=[dg.AssetKey(["anna", "source_media"])], partition_key=anna,
                          instance=instance, resources=default_resources()).success
    os.utime(tmp_path / "anna" / PHOTOS["anna"][0])
    # The touch is remembered (one observation, so the content is not hashed again next minute),
    # with the data version it had.
    (seen,) = daemon.watch()
    assert seen.tags["dagster/data_version"] == seen.metadata["previous_version"].value
    assert daemon.watch() == []
    assert daemon.evaluate() == []
    eager_requests = dg.evaluate_automation_conditions(defs=eager, instance=instance, cursor=eager_cursor)
    assert eager_requests.get_requested_partitions(dg.AssetKey(["anna", "frames"])) == {anna}

    # New photos in anna's folder: one observation, then exactly her source's stages, then her
    # faceset; ben's work is neither requested nor re-materialized.
    before = materialization_counts(instance)
    shutil.copy(media_dir / "single_face.jpg", tmp_path / "anna" / "new.jpg")
    (observed,) = daemon.watch()
    assert (observed.asset_key, observed.partition) == (dg.AssetKey(["anna", "source_files"]), anna)
    ticks = daemon.settle()
    assert [set(t.requested) for t in ticks] == [chain("anna", anna), {("anna/faceset", None)}], describe(ticks)
    assert all(run["success"] for tick in ticks for run in tick.runs)
    changed = materialization_counts(instance) - before
    assert set(changed) == chain("anna", anna) | {("anna/faceset", None)}
    assert not any(key.startswith("ben/") for key, _ in changed)
    faces = latest_metadata(instance, ["anna", "aligned_faces"])
    assert faces["detections_run"] == 1 and faces["cache_hits"] == len(PHOTOS["anna"])  # only the new photo analysed


def test_a_new_source_requests_only_its_partition(media_dir, swapline_home, instance, write_project, tmp_path):
    data = photo_project(tmp_path, media_dir, {"anna": PHOTOS["anna"]})
    project, path = write_project(data)
    daemon = built(project, path, instance)
    (old,) = project.source_keys("anna")
    before = materialization_counts(instance)

    photo_project(tmp_path, media_dir, {"more": PHOTOS["ben"]})
    data["identities"]["anna"]["sources"].append({"photos": str(tmp_path / "more")})
    project, _ = write_project(data)
    sync_partitions(project, instance)  # the sync sensor's requests, as the daemon applies them
    (new,) = set(project.source_keys("anna")) - {old}
    assert [e.partition for e in daemon.watch()] == [new]
    ticks = daemon.settle()
    assert [set(t.requested) for t in ticks] == [chain("anna", new), {("anna/faceset", None)}], describe(ticks)
    assert all(run["success"] for tick in ticks for run in tick.runs)
    changed = materialization_counts(instance) - before
    assert set(changed) == chain("anna", new) | {("anna/faceset", None)}  # the old source untouched
    assert latest_metadata(instance, ["anna", "faceset"])["sources"] == 2


def test_a_changed_detector_setting_requests_all_extraction_that_used_it(media_dir, swapline_home, instance,
                                                                        write_project, tmp_path):
    data = photo_project(tmp_path, media_dir, {"anna": PHOTOS["anna"], "extra": PHOTOS["ben"][:1], "ben": PHOTOS["ben"]})
    data["identities"]["anna"]["sources"].append(data["identities"].pop("extra")["sources"][0])
    project, path = write_project(data)
    daemon = built(project, path, instance)
    assert len(project.source_keys("anna")) == 2

    data["extraction"]["detector"] = "cnn"
    write_project(data)
    daemon.reload()  # a changed setting reaches Dagster with a reloaded code location
    assert daemon.watch() == []
    # Every partition of the asset whose code version holds the detector, of every identity (the
    # setting is project-wide); the frames before it, and the facesets after it, wait for data.
    assert set(daemon.evaluate()) == {("anna/aligned_faces", k) for k in project.source_keys("anna")} | {
        ("ben/aligned_faces", k) for k in project.source_keys("ben")}
    assert daemon.evaluate() == []  # requested once, not on every tick


def test_a_failed_blocking_check_holds_back_only_the_swaps_of_that_identity(media_dir, swapline_home, instance,
                                                                            write_project, tmp_path):
    # carl has one face, below min_faces: his enough_faces check fails with ERROR. anna and ben
    # have two, below recommended_faces: theirs fail with WARN, which must not hold training back.
    tiny = {"iterations": 2, "batch_size": 2}
    data = photo_project(tmp_path, media_dir, {**PHOTOS, "carl": ["single_face.jpg"]},
                         swaps={"ab": {"a": "anna", "b": "ben", **tiny}, "ac": {"a": "anna", "b": "carl", **tiny}})
    data["checks"] = {"min_faces": 2, "recommended_faces": 300}
    project, path = write_project(data)
    daemon = InProcessDaemon(path, instance)
    sync_partitions(project, instance)
    daemon.watch()
    ticks = daemon.settle()  # its first tick comes after the sources were observed: built as missing at start
    # Facesets and models were requested together; within that run Dagster skipped ac's model.
    assert {"ab/face_model", "ac/face_model"} <= {key for key, _ in ticks[-1].requested}, describe(ticks)
    outcome = {who: latest_evaluation(instance, dg.AssetCheckKey(dg.AssetKey([who, "faceset"]), "enough_faces"))
               for who in ("anna", "ben", "carl")}
    assert {who: (e.passed, e.severity.value) for who, e in outcome.items()} == {
        "anna": (False, "WARN"), "ben": (False, "WARN"), "carl": (False, "ERROR")}
    assert latest_metadata(instance, ["ab", "face_model"])["step"] == 2
    assert not instance.fetch_materializations(dg.AssetKey(["ac", "face_model"]), limit=1).records

    # New photos of anna, in later runs: her faceset and the swap with ben are requested, not
    # the swap with carl, whose faceset still fails. ab resumes from its checkpoint.
    shutil.copy(media_dir / "multi_face.jpg", tmp_path / "anna" / "group.jpg")
    daemon.watch()
    daemon.run(daemon.evaluate())
    assert daemon.evaluate() == [("ab/face_model", None), ("anna/faceset", None)]
    # (evaluated, not run: the next tick would request them again only after a new change)

    # More photos of carl: his faceset is rebuilt first (the gate reads its current result), and
    # once it passes the minimum his swap is requested.
    shutil.copy(media_dir / "0-f1-su-ph.jpg", tmp_path / "carl" / "more.jpg")
    daemon.watch()
    daemon.run(daemon.evaluate())
    assert daemon.evaluate() == [("carl/faceset", None)]
    daemon.run([("carl/faceset", None)])
    assert latest_evaluation(instance, dg.AssetCheckKey(dg.AssetKey(["carl", "faceset"]), "enough_faces")).severity.value == "WARN"
    assert daemon.evaluate() == [("ac/face_model", None)]


def test_sensors_run_by_default_and_automate_every_asset(media_dir, swapline_home, instance, write_project, tmp_path):
    project, path = write_project(photo_project(tmp_path, media_dir, PHOTOS, swaps={"ab": {"a": "anna", "b": "ben"}}))
    defs = build_definitions(project, path)
    sensors = {s.name: s for s in defs.sensors}
    assert set(sensors) == {"project_partitions_sync", "source_watch", "dead_runs", "swapline_automation"}
    assert all(s.default_status == dg.DefaultSensorStatus.RUNNING for s in sensors.values())
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.automation_condition is not None or node.is_observable, key

    # The watch sensor itself: only synced partitions are looked at; what it saw is remembered in
    # the observations the daemon records, so the next tick skips; a new photo is one observation
    # carrying the content hash.
    watch = sensors["source_watch"]
    assert watch(dg.build_sensor_context(instance=instance)).asset_events == []
    sync_partitions(project, instance)
    first = watch(dg.build_sensor_context(instance=instance))
    assert {(e.asset_key.path[0], e.partition) for e in first.asset_events} == {
        (who, key) for who in PHOTOS for key in project.source_keys(who)}
    for event in first.asset_events:  # as the daemon records a sensor's asset events
        instance.report_runless_asset_event(event)
    assert watch(dg.build_sensor_context(instance=instance)).skip_reason is not None
    shutil.copy(media_dir / "single_face.jpg", tmp_path / "ben" / "new.jpg")
    (event,) = watch(dg.build_sensor_context(instance=instance)).asset_events
    (ben,) = project.source_keys("ben")
    collected = dg.materialize(build_assets(project), selection=[dg.AssetKey(["ben", "source_media"])], partition_key=ben,
                               instance=instance, resources=default_resources())
    assert event.partition == ben and event.tags["dagster/data_version"] == collected.asset_materializations_for_node(
        "ben__source_media")[0].tags["dagster/data_version"]  # the watch and the collection agree
