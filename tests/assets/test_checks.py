"""Data checks on real demo faces: too few faces warn then block, one source warns on
diversity, a blocked identity stops its own swap and not another, and the CLI report says
what is missing."""

from __future__ import annotations

import dagster as dg

from swapline.build import build_assets, default_resources
from swapline.ops.facetable import read_faces
from swapline.ops.storage import ArtifactStore
from swapline.project import Checks
from swapline.quality_checks import gx_suite
from swapline.quality_checks.faceset_checks import latest_evaluation
from swapline.report import report_lines
from swapline.runner import materialize_project
from tests.conftest import CONSENT

CLIPS = {"a1": "WolfgangLanger_Pexels.mp4", "b1": "single_face.mp4", "a2": "face_noface.mov", "b2": "noface_face.mov"}


def four_people(media, min_faces: int) -> dict:
    tiny = {"iterations": 5, "batch_size": 4}
    return {
        "identities": {name: {"consent": CONSENT, "sources": [{"video": str(media / clip)}]} for name, clip in CLIPS.items()},
        "swaps": {"s1": {"a": "a1", "b": "b1", **tiny}, "s2": {"a": "a2", "b": "b2", **tiny}},
        "extraction": {"sample_fps": 3, "face_size": 96, "max_frames": 10},
        "checks": {"min_faces": min_faces, "recommended_faces": 300},
    }


def evaluation(instance, asset: list[str], name: str):
    found = latest_evaluation(instance, dg.AssetCheckKey(dg.AssetKey(asset), name))
    assert found is not None, (asset, name)
    return found


def test_blocked_identity_stops_only_its_swap(media_dir, swapline_home, instance, write_project):
    # Measured: at these settings b2's clip gives 0 faces (its face appears after frame 10), the others 7 to 10.
    project, _ = write_project(four_people(media_dir, min_faces=7))
    summary = materialize_project(project, instance, echo=lambda _: None)

    faces = {name: evaluation(instance, [name, "faceset"], "enough_faces") for name in CLIPS}
    assert faces["b2"].metadata["faces"].value < 7 <= min(faces[n].metadata["faces"].value for n in ("a1", "b1", "a2"))
    assert not faces["b2"].passed and faces["b2"].severity == dg.AssetCheckSeverity.ERROR
    assert not faces["a2"].passed and faces["a2"].severity == dg.AssetCheckSeverity.WARN  # below 300, above 7
    assert summary.failed["b2/faceset"] == "faceset b2 failed check enough_faces"
    assert summary.failed["s2/face_model"] == "skipped: faceset b2 failed check enough_faces"
    assert "s1/face_model" in summary.succeeded and "a2/faceset" in summary.succeeded

    # The model of the healthy swap reports its checks; a 5-step run has a finite loss and a preview.
    assert evaluation(instance, ["s1", "face_model"], "losses_finite").passed
    assert evaluation(instance, ["s1", "face_model"], "preview_produced").passed

    # Materializing the blocked swap directly is refused by the asset itself, naming who and why.
    result = dg.materialize(build_assets(project), selection=[dg.AssetKey(["s2", "face_model"])], instance=instance,
                            resources=default_resources(), raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure).step_failure_data.error
    assert "faceset b2 failed check enough_faces" in (failure.message + str(failure.cause and failure.cause.message))

    # One source per identity: all of it from one video warns on diversity.
    diversity = evaluation(instance, ["a1", "faceset"], "source_diversity")
    assert not diversity.passed and diversity.metadata["largest_share"].value == 1.0

    # The pose histogram image is in the metadata, with the bins in words.
    pose = evaluation(instance, ["a1", "faceset"], "pose_coverage")
    assert pose.metadata["histogram"].value.startswith("![")
    assert all("yaw" in m or "pitch" in m for m in pose.metadata["missing_bins"].value)

    # The CLI report names the blocked identity, the missing poses, and the model's checks.
    text = "\n".join(report_lines(project, instance, ArtifactStore(swapline_home)))
    assert "swaps with b2 will not train: failed enough_faces" in text
    assert "missing: faces turned to" in text and "swap s1:" in text and "losses_finite" in text


def test_gx_reports_failing_share_and_examples(media_dir, swapline_home, instance, write_project):
    project, _ = write_project({"identities": {"b1": {"consent": CONSENT, "sources": [{"video": str(media_dir / CLIPS["b1"])}]}},
                                "extraction": {"sample_fps": 3, "face_size": 96}, "checks": {"min_faces": 5}})
    assert materialize_project(project, instance, echo=lambda _: None).ok
    check = evaluation(instance, ["b1", "faceset"], "enough_faces")
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN  # 8 faces: enough to train, few

    # Then the same faces with a hard minimum above their count: ERROR, and the run fails.
    stricter, _ = write_project({**project.model_dump(mode="json", exclude={"checks"}), "checks": {"min_faces": 50}},
                                name="strict.yaml")
    summary = materialize_project(stricter, instance, echo=lambda _: None)
    assert summary.failed["b1/faceset"] == "faceset b1 failed check enough_faces"
    assert evaluation(instance, ["b1", "faceset"], "enough_faces").severity == dg.AssetCheckSeverity.ERROR

    # GX over the real faces, with the sharpness bar at their median: about half fail.
    store = ArtifactStore(swapline_home)
    table = read_faces(store.current(store.location("b1", "faceset")).path / "faceset.parquet", with_images=False)
    bar = float(table["sharpness"].median())
    outcome = gx_suite.validate_faces(table, Checks(expected_sharpness=bar, min_faces=5))
    blurry = set(table.loc[table["sharpness"] < bar, "face_id"])
    sharpness = outcome["per_column"]["sharpness"]
    assert not outcome["success"] and not sharpness["passed"]
    assert abs(sharpness["failing_share"] - len(blurry) / len(table)) < 1e-3
    assert sharpness["examples"] and set(sharpness["examples"]) <= blurry
    assert outcome["per_column"]["brightness"]["passed"]
