"""face_model trained data-parallel: torchrun with two CPU ranks (gloo) launched through Dagster
Pipes from the asset, then a later materialization resumes from its checkpoint."""

from __future__ import annotations

import dagster as dg
import pytest

from swapline.build import build_assets, default_resources
from swapline.ops.storage import ArtifactStore
from tests.assets.test_conversion_checks import publish_faceset
from tests.assets.test_pipeline import tiny_project
from tests.conftest import video_frames

pytestmark = pytest.mark.slow
KEY = dg.AssetKey(["ab", "face_model"])


def test_face_model_trains_on_two_ranks_through_pipes_and_resumes(media_dir, swapline_home, instance, write_project):
    data = tiny_project(media_dir)
    data["conversions"] = {}
    data["swaps"]["ab"].update(batch_size=4, gpus=2)  # as a user writes it in the project file
    write_project(data)
    store = ArtifactStore(swapline_home)
    # Real faces, published directly (no extraction run): frontal frames of the demo clip, one set per identity.
    frames = video_frames(media_dir / "WolfgangLanger_Pexels.mp4", range(228, 300, 4))
    publish_faceset(store, instance, "anna", {i: f for i, f in frames.items() if i % 8 == 4})
    publish_faceset(store, instance, "ben", {i: f for i, f in frames.items() if i % 8 == 0})

    def run(iterations: int):
        data["swaps"]["ab"]["iterations"] = iterations
        ddp, _ = write_project(data)
        result = dg.materialize(build_assets(ddp), selection=[KEY], instance=instance, resources=default_resources())
        assert result.success
        (materialization,) = [e.materialization for e in result.get_asset_materialization_events()]
        messages = [e.user_message for e in instance.all_logs(result.run_id)]
        # Rank 0's lines came through Pipes into this run's log (rank 1 has no Pipes connection).
        assert any(m.startswith("training on 2 ranks (gloo, cpu)") for m in messages), messages
        assert any(m.startswith(f"step {iterations}/{iterations} loss A") for m in messages), messages
        return store.current(store.location("ab", "face_model")).manifest(), materialization.metadata

    first, metadata = run(4)
    assert metadata["world_size"].value == 2 and metadata["per_rank_batch"].value == 2 and metadata["step"].value == 4
    assert metadata["faces_per_s"].value > 0 and metadata["ddp_backend"].value == "gloo"
    assert first["stopped_by"] == "iterations" and first["evaluation"]["held_out"]["a"] >= 1

    second, metadata = run(8)  # a later run continues from the published checkpoint
    assert second["start_step"] == 4 and second["step"] == 8 and metadata["steps_this_run"].value == 4
    assert [(r["start_step"], r["step"], r.get("world_size")) for r in second["runs"]] == [(0, 4, 2), (4, 8, 2)]
