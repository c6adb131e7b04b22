"""Collection that grows, tried as a user would, offline: an RSS feed served on 127.0.0.1 points
at demo clips; real yt-dlp lists and downloads, real extraction, a real Dagster instance.
`collect` takes each item once, a new item is the only thing the next collection fetches and
extracts, a vanished item keeps its faces (marked gone), a broken feed changes nothing, and the
collection schedule registers and requests what is new."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest

from swapline.assets.common import sources_partitions
from swapline.build import build_definitions
from swapline.collection import collect, collect_urls
from swapline.ops import ledger
from tests.conftest import CONSENT
from tests.feeds import clips, feed_server, write_feed

pytestmark = pytest.mark.slow
EP = [{"guid": f"ep-{i}", "title": f"Episode {i}", "day": i, "file": f"ep{i}.mp4"} for i in (1, 2, 3)]


def project_data(base: str, media) -> dict:
    return {
        "identities": {
            "anna": {"consent": CONSENT, "sources": [{"url": f"{base}/feed.xml"}]},
            "ben": {"consent": CONSENT, "sources": [{"video": str(media / "single_face.mp4")}]},
        },
        "extraction": {"sample_fps": 2, "max_frames": 3, "face_size": 96},
        "checks": {"min_faces": 1, "recommended_faces": 2},
    }


def batches(instance, identity="anna") -> list[str]:
    return sorted(instance.get_dynamic_partitions(sources_partitions(identity).name))


def materialized(instance, key: list[str]) -> list[str | None]:
    return [r.partition_key for r in instance.fetch_materializations(dg.AssetKey(key), limit=100).records]


def video_gets(log) -> list[str]:
    """The videos requested (yt-dlp's generic extractor probes a file before downloading it)."""
    return sorted({path for method, path in log if path.endswith(".mp4")})


def test_feed_items_are_collected_once_and_new_ones_only(media_dir, swapline_home, instance, write_project, tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    clips(media_dir, www, {"ep1.mp4": "single_face.mp4", "ep2.mp4": "WolfgangLanger_Pexels.mp4", "ep3.mp4": "face_noface.mov"})
    with feed_server(www) as (base, log, broken):
        write_feed(www / "feed.xml", base, EP[:2])
        project, path = write_project(project_data(base, media_dir))
        lines: list[str] = []
        assert collect(project, instance, swapline_home, echo=lines.append).ok, lines
        (first,) = batches(instance)
        assert any("2 listed: 2 new, 0 known, 0 filtered out, 0 gone" in line and first in line for line in lines), lines
        assert video_gets(log) == ["/ep1.mp4", "/ep2.mp4"]  # each item downloaded once
        (record,) = instance.fetch_materializations(dg.AssetKey(["anna", "source_media"]), limit=1).records
        metadata = record.asset_materialization.metadata
        assert metadata["entries"].value == 2 and metadata["files"].value == 2 and "Episode 2" in metadata["listed"].value
        assert materialized(instance, ["anna", "faceset"]) == [None]

        # A third item: the next collection lists the feed and fetches only that one.
        write_feed(www / "feed.xml", base, EP)
        log.clear()
        lines.clear()
        assert collect(project, instance, swapline_home, echo=lines.append).ok, lines
        (second,) = set(batches(instance)) - {first}
        assert any("3 listed: 1 new, 2 known" in line for line in lines), lines
        assert {p for _, p in log if not p.endswith(".xml")} == {"/ep3.mp4"}  # the known items: not a request
        assert materialized(instance, ["anna", "source_media"]) == [second, first]  # the new batch only
        assert materialized(instance, ["anna", "aligned_faces"]) == [second, first]
        assert len(materialized(instance, ["anna", "faceset"])) == 2  # and the faceset, with it
        assert ledger.batch_entries(ledger.folder(swapline_home, "anna", ledger.source_of(second)), second)[0]["id"] == "rss:ep-3"

        # An item gone from the feed keeps its partition and faces; it is marked gone.
        write_feed(www / "feed.xml", base, EP[1:])
        lines.clear()
        assert collect(project, instance, swapline_home, echo=lines.append).ok
        assert any("2 listed: 0 new, 2 known, 0 filtered out, 1 gone" in line for line in lines), lines
        assert batches(instance) == sorted([first, second]) and len(materialized(instance, ["anna", "faceset"])) == 2
        (seen,) = instance.fetch_observations(dg.AssetRecordsFilter(dg.AssetKey(["anna", "source_files"]),
                                                                    asset_partitions=[first]), limit=1).records
        assert seen.asset_observation.metadata["gone"].value == ["rss:ep-1"]

        # A broken feed: a clear warning, nothing removed, the other identity unaffected.
        broken["/feed.xml"] = 404
        lines.clear()
        summary = collect(project, instance, swapline_home, echo=lines.append)
        assert summary.ok and batches(instance) == sorted([first, second])
        assert any(line.startswith("warning: anna/") and "404" in line and "kept" in line for line in lines), lines


def test_schedule_registers_new_items_and_requests_them(media_dir, swapline_home, write_project, tmp_path):
    with feed_server(tmp_path) as (base, log, _), dg.instance_for_test() as instance:
        write_feed(tmp_path / "feed.xml", base, EP[:2])
        project, path = write_project(project_data(base, media_dir))
        defs = build_definitions(project, path)
        schedule = defs.resolve_schedule_def("collect_anna_schedule")

        def tick(day: int) -> list[dg.RunRequest]:
            context = dg.build_schedule_context(instance=instance, scheduled_execution_time=dt.datetime(2026, 11, day, 3),
                                                repository_def=defs.get_repository_def())
            return list(schedule.evaluate_tick(context).run_requests)

        (request,) = tick(20)
        assert request.partition_key == batches(instance)[0] and log == [("GET", "/feed.xml")]
        assert tick(21) == []  # nothing new: nothing requested, nothing downloaded
        write_feed(tmp_path / "feed.xml", base, EP)
        (request,) = tick(22)
        assert request.partition_key in batches(instance) and len(batches(instance)) == 2
        assert all(path == "/feed.xml" for _, path in log)  # listing only: downloads are the runs' job


def test_a_channel_of_150_entries_stays_a_handful_of_partitions(swapline_home, instance, write_project, tmp_path):
    """Dagster stops propagating staleness past 100 upstream partitions: entries come in batches."""
    with feed_server(tmp_path) as (base, _, _):
        items = [{"guid": f"v{i}", "title": f"Video {i}", "day": 1 + i % 28, "file": f"v{i}.mp4"} for i in range(150)]
        write_feed(tmp_path / "feed.xml", base, items)
        project, _ = write_project({"identities": {"anna": {"consent": CONSENT, "sources": [{"url": f"{base}/feed.xml"}]}}})
        found = collect_urls(project, instance, swapline_home)
        assert len(found.new_partitions["anna"]) == 1 and len(batches(instance)) == 1
        write_feed(tmp_path / "feed.xml", base, items + [{"guid": "v150", "title": "New", "day": 28, "file": "v150.mp4"}])
        found = collect_urls(project, instance, swapline_home)
        (new,) = found.new_partitions["anna"]
        assert len(batches(instance)) == 2
        assert [e["id"] for e in ledger.batch_entries(ledger.folder(swapline_home, "anna", ledger.source_of(new)), new)] == ["rss:v150"]
        assert "151 listed: 1 new, 150 known" in found.lines[0]


def test_a_new_feed_item_flows_to_a_resumed_model_by_the_automation(media_dir, swapline_home, instance, write_project, tmp_path):
    """What `./dev ui` does with nobody typing: the schedule registers the new item; the automation
    collects and extracts only its partition, rebuilds the faceset, and the swap's model resumes."""
    from swapline.daemon import InProcessDaemon, describe, materialization_counts
    from swapline.runner import materialize_project

    www = tmp_path / "www"
    www.mkdir()
    clips(media_dir, www, {"ep1.mp4": "single_face.mp4", "ep2.mp4": "WolfgangLanger_Pexels.mp4"})
    with feed_server(www) as (base, _, _):
        write_feed(www / "feed.xml", base, EP[:1])
        data = project_data(base, media_dir)
        data["swaps"] = {"ab": {"a": "anna", "b": "ben", "iterations": 20, "batch_size": 4}}
        project, path = write_project(data)
        assert materialize_project(project, instance, echo=lambda _: None).ok
        trained = instance.fetch_materializations(dg.AssetKey(["ab", "face_model"]), limit=1).records[0]
        daemon = InProcessDaemon(path, instance)
        assert daemon.settle() == []  # built: nothing to do
        before = materialization_counts(instance)

        write_feed(www / "feed.xml", base, EP[:2])
        (new,) = collect_urls(project, instance, swapline_home).new_partitions["anna"]  # the schedule's listing
        ticks = daemon.settle()
        assert all(run["success"] for tick in ticks for run in tick.runs), describe(ticks)
        changed = set(materialization_counts(instance) - before)
        chain = {(f"anna/{stage}", new) for stage in ("source_media", "frames", "aligned_faces")}
        assert changed == chain | {("anna/faceset", None), ("ab/face_model", None)}, describe(ticks)
        model = instance.fetch_materializations(dg.AssetKey(["ab", "face_model"]), limit=1).records[0]
        assert model.asset_materialization.metadata["steps_this_run"].value == 20  # resumed, 20 more steps
        assert model.asset_materialization.metadata["step"].value == trained.asset_materialization.metadata["step"].value + 20


def test_collect_command_prints_what_it_found(media_dir, write_project, tmp_path, monkeypatch):
    import subprocess
    import sys

    www = tmp_path / "www"
    www.mkdir()
    clips(media_dir, www, {"ep1.mp4": "single_face.mp4"})
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("SWAPLINE_HOME", str(tmp_path / "artifacts"))
    with feed_server(www) as (base, _, _):
        write_feed(www / "feed.xml", base, EP[:1])
        _, path = write_project(project_data(base, media_dir))
        command = [sys.executable, "-m", "swapline.cli", "collect", "--project", str(path), "--identity", "anna"]
        first = subprocess.run(command, capture_output=True, text=True, timeout=300)
        again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "1 listed: 1 new, 0 known, 0 filtered out, 0 gone -> partition url_feed_" in first.stdout, first.stdout
    assert "anna/faceset (missing): ok" in first.stdout and "ben/" not in first.stdout, first.stdout
    assert again.returncode == 0 and "1 listed: 0 new, 1 known" in again.stdout, again.stdout
    assert "0 new batch(es)" in again.stdout and "collected in" in again.stdout
    bad = subprocess.run([*command[:-1], "nobody"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "no identity 'nobody'" in bad.stderr
