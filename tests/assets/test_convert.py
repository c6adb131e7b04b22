"""Conversion refuses an identity without consent, before any work."""

from __future__ import annotations

import dagster as dg
import pytest

from swapline.build import build_assets, default_resources
from swapline.ops.convert import ConsentError, require_consent
from tests.conftest import CONSENT


def test_require_consent_names_who_is_missing():
    require_consent({"anna": object(), "ben": object()})
    with pytest.raises(ConsentError, match="no consent declared for ben"):
        require_consent({"anna": object(), "ben": None})


def test_conversion_asset_refuses_without_consent(media_dir, swapline_home, instance, write_project):
    project, _ = write_project({
        "identities": {
            "anna": {"consent": CONSENT, "sources": [{"video": str(media_dir / "WolfgangLanger_Pexels.mp4")}]},
            "ben": {"consent": CONSENT, "sources": [{"video": str(media_dir / "single_face.mp4")}]},
        },
        "swaps": {"ab": {"a": "anna", "b": "ben"}},
        "conversions": {"c": {"swap": "ab", "video": str(media_dir / "single_face.mp4"), "direction": "b_to_a"}},
    })
    # A project built in code (not from YAML) can lack consent; the asset must still refuse.
    identities = dict(project.identities)
    identities["anna"] = identities["anna"].model_copy(update={"consent": None})
    unconsented = project.model_copy(update={"identities": identities})
    # Its inputs exist (recorded materializations of empty artifact folders): what stops it is consent.
    for key in (["ab", "face_model"], ["c", "target_video"], ["c", "target_faces"], ["ben", "faceset"]):
        folder = swapline_home.parent / "upstream" / "_".join(key) / "v-0"
        folder.mkdir(parents=True)
        instance.report_runless_asset_event(dg.AssetMaterialization(key, metadata={"artifact": dg.MetadataValue.path(str(folder))}))
    assets = build_assets(unconsented)
    key = dg.AssetKey(["c", "converted_video"])
    result = dg.materialize(assets, selection=[key], instance=instance, resources=default_resources(), raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    error = failure.step_failure_data.error
    assert error.cause.cls_name == "ConsentError" and "no consent declared for anna" in error.cause.message
    assert not (swapline_home / "c").exists()  # nothing was written
