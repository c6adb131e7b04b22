"""After `swapline run` (./dev demo), the automation that `./dev ui` starts requests nothing: the
CLI's build and the daemon's view of the sources agree about what is up to date (issue 13).
Were the CLI not to record what it built from (runner.materialize_project's observe_sources), the
watch would see every source as new and the next tick would request source_media, frames and
aligned_faces of each: the backfill the issue saw."""

from __future__ import annotations

import shutil

import dagster as dg
import pytest

from swapline.assets.automation import observe_sources, partition_requests
from swapline.build import build_definitions
from swapline.runner import materialize_project, write_instance_yaml
from tests.conftest import CONSENT

pytestmark = pytest.mark.slow


def small_demo(root, media) -> dict:
    """The demo's shape at its smallest: a photo folder and a video as sources, a swap trained
    for two steps, a conversion of a few frames."""
    (root / "anna").mkdir()
    for name in ("0-f1-su-ph.jpg", "0-f15-hao-ph.jpg"):
        shutil.copy(media / name, root / "anna" / name)
    return {
        "identities": {"anna": {"consent": CONSENT, "sources": [{"photos": str(root / "anna")}]},
                       "ben": {"consent": CONSENT, "sources": [{"video": str(media / "single_face.mp4")}]}},
        "swaps": {"ab": {"a": "anna", "b": "ben", "iterations": 2, "batch_size": 2}},
        "conversions": {"ben_as_anna": {"swap": "ab", "video": str(media / "single_face.mp4"), "direction": "b_to_a",
                                        "options": {"end": 0.3}}},
        "extraction": {"backend": "dlib", "workers": 1, "sample_fps": 4, "face_size": 64, "max_frames": 6},
        "checks": {"min_faces": 1, "recommended_faces": 1},
    }


def test_the_first_automation_ticks_after_a_cli_build_request_nothing(media_dir, swapline_home, write_project,
                                                                      tmp_path, monkeypatch):
    project, path = write_project(small_demo(tmp_path, media_dir))
    home = tmp_path / "dagster_home"  # a real instance on disk, as the CLI makes it
    write_instance_yaml(home)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        summary = materialize_project(project, instance, echo=lambda line: None)
        assert summary.ok, summary.failed
        assert {step.split("/")[1] for step in summary.succeeded} >= {"faceset", "face_model", "converted_video"}

        # What `./dev ui`'s daemon does: sync partitions (nothing to add), tick the automation from
        # no cursor, let the source watch look at the files (recorded as the daemon records its
        # events), tick again. Either order of the two sensors must find nothing to do.
        assert partition_requests(project, instance) == []
        defs = build_definitions(project, path)
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        seen = observe_sources(project, instance)
        second = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        assert (requested(first), [(e.asset_key.to_user_string(), e.partition) for e in seen], requested(second)) == (set(), [], set())


def requested(result) -> set[tuple[str, str | None]]:
    return {(r.key.to_user_string(), p) for r in result.results if isinstance(r.key, dg.AssetKey)
            for p in result.get_requested_partitions(r.key)}
