"""Collection and per-source failure isolation, in a real Dagster instance."""

from __future__ import annotations

import shutil

import dagster as dg

from swapline.build import build_assets, default_resources
from swapline.collection import collect_urls
from swapline.ops.storage import ArtifactStore, sha256_file
from swapline.runner import materialize_project
from tests.conftest import CONSENT


def test_url_source_downloaded_by_yt_dlp_from_localhost(media_dir, swapline_home, instance, write_project, http_root):
    root, base_url = http_root
    (root / "ben_clip.mp4").write_bytes((media_dir / "single_face.mp4").read_bytes())
    project, _ = write_project({"identities": {"ben": {"consent": CONSENT, "sources": [{"url": f"{base_url}/ben_clip.mp4"}]}}})
    (partition,) = collect_urls(project, instance, swapline_home).new_partitions["ben"]  # one URL, one entry, one batch
    result = dg.materialize(build_assets(project), selection=[dg.AssetKey(["ben", "source_media"])],
                            partition_key=partition, instance=instance, resources=default_resources())
    assert result.success
    store = ArtifactStore(swapline_home)
    published = store.current(store.location("ben", "source_media", partition))
    manifest = published.manifest()
    (entry,) = manifest["entries"]
    assert manifest["kind"] == "batch" and entry["sha256"] == sha256_file(media_dir / "single_face.mp4")
    assert sha256_file(published.path / entry["file"]) == entry["sha256"] and entry["url"] == f"{base_url}/ben_clip.mp4"
    assert (swapline_home / "ben" / "source_media" / "download-archive.txt").read_text().strip()  # yt-dlp recorded it

    # Collected again with the artifact in place: kept, not downloaded, and the same data version.
    def version(run):
        return run.asset_materializations_for_node("ben__source_media")[0].tags["dagster/data_version"]

    kept = dg.materialize(build_assets(project), selection=[dg.AssetKey(["ben", "source_media"])],
                          partition_key=partition, instance=instance, resources=default_resources())
    assert kept.success and version(kept) == version(result)

    # The artifact is lost but the archive remembers the video: it is fetched again, same content.
    shutil.rmtree(swapline_home / "ben" / "source_media")
    again = dg.materialize(build_assets(project), selection=[dg.AssetKey(["ben", "source_media"])],
                           partition_key=partition, instance=instance, resources=default_resources())
    assert again.success
    assert store.current(store.location("ben", "source_media", partition)).manifest()["entries"][0]["sha256"] == entry["sha256"]


def test_truncated_video_fails_only_its_own_partition(media_dir, swapline_home, instance, write_project, tmp_path):
    broken = tmp_path / "broken.mp4"
    data = (media_dir / "WolfgangLanger_Pexels.mp4").read_bytes()
    broken.write_bytes(data[: len(data) // 3])  # cut mid-stream: the moov atom is at the end
    project, _ = write_project({
        "identities": {
            "ben": {"consent": CONSENT, "sources": [{"video": str(media_dir / "single_face.mp4")}, {"video": str(broken)}]},
        },
        "extraction": {"sample_fps": 2, "face_size": 96},  # no max_frames: the truncation check needs the whole decode
        "checks": {"min_faces": 1},  # a handful of faces on purpose: this test is about the broken source
    })
    good, bad = project.source_keys("ben")
    summary = materialize_project(project, instance, echo=lambda _: None)
    assert set(summary.failed) == {f"ben/{bad}"}, summary.failed
    assert "cannot be decoded" in summary.failed[f"ben/{bad}"] or "broken.mp4" in summary.failed[f"ben/{bad}"]
    assert {f"ben/{good}", "ben/faceset"} <= set(summary.succeeded)
    store = ArtifactStore(swapline_home)
    faceset = store.current(store.location("ben", "faceset")).manifest()
    assert faceset["missing_sources"] == [bad] and faceset["stats"]["kept"] > 0


def test_single_video_url_is_downloaded_again_only_when_its_file_changed(media_dir, swapline_home, instance, write_project, tmp_path):
    from tests.feeds import feed_server

    www = tmp_path / "www"
    www.mkdir()
    shutil.copy(media_dir / "single_face.mp4", www / "clip.mp4")
    with feed_server(www) as (base, requests, _):
        project, _ = write_project({"identities": {"ben": {"consent": CONSENT, "sources": [{"url": f"{base}/clip.mp4"}]}},
                                    "downloads": {"host_pause_seconds": 0}})
        (partition,) = collect_urls(project, instance, swapline_home).new_partitions["ben"]

        def collect() -> tuple[str, list]:
            requests.clear()
            run = dg.materialize(build_assets(project), selection=[dg.AssetKey(["ben", "source_media"])],
                                 partition_key=partition, instance=instance, resources=default_resources())
            assert run.success
            return run.asset_materializations_for_node("ben__source_media")[0].tags["dagster/data_version"], list(requests)

        first, _ = collect()
        kept, asked = collect()
        assert kept == first and asked == [("HEAD", "/clip.mp4")]  # unchanged: asked, not downloaded

        shutil.copy(media_dir / "no_face.mp4", www / "clip.mp4")  # new content behind the same URL
        changed, asked = collect()
        assert changed != first and ("GET", "/clip.mp4") in asked
    store = ArtifactStore(swapline_home)
    (entry,) = store.current(store.location("ben", "source_media", partition)).manifest()["entries"]
    assert entry["sha256"] == sha256_file(media_dir / "no_face.mp4")
