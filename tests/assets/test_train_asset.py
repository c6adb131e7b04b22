"""face_model as a user runs it: a time budget stops a run, the next materialization resumes."""

from __future__ import annotations

import dagster as dg
import pytest

from swapline.build import build_assets, default_resources
from swapline.ops.storage import ArtifactStore
from swapline.runner import materialize_project
from tests.assets.test_pipeline import tiny_project

pytestmark = pytest.mark.slow


def test_time_budget_stops_and_the_next_run_resumes(media_dir, swapline_home, instance, write_project):
    data = tiny_project(media_dir)
    data["conversions"] = {}
    data["swaps"]["ab"].update(iterations=100000, max_minutes=0.05)  # 3 s of training per run
    project, _ = write_project(data)
    assert materialize_project(project, instance, echo=lambda _: None).ok
    store = ArtifactStore(swapline_home)
    first = store.current(store.location("ab", "face_model")).manifest()
    assert first["stopped_by"] == "time" and 0 < first["step"] < 100000 and first["start_step"] == 0

    key = dg.AssetKey(["ab", "face_model"])
    result = dg.materialize(build_assets(project), selection=[key], instance=instance, resources=default_resources())
    assert result.success
    second = store.current(store.location("ab", "face_model")).manifest()
    # Continued from the first run's checkpoint: its steps are not done again.
    assert second["start_step"] == first["step"] and second["step"] > first["step"]
    # The history covers both runs: the loss curve from the first step, each run with its stop reason.
    assert second["losses"][0][0] <= first["step"] < second["losses"][-1][0]
    assert [(r["start_step"], r["step"], r["stopped_by"]) for r in second["runs"]][:1] == [(0, first["step"], "time")]
    assert len(second["runs"]) == 2 and second["runs"][1]["start_step"] == first["step"]
    (materialization,) = [e.materialization for e in result.get_asset_materialization_events()]
    assert materialization.metadata["steps_this_run"].value == second["step"] - first["step"]
    assert materialization.metadata["training_runs"].value.count("| time |") >= 1
