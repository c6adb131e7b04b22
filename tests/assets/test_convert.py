"""Conversion and training refuse an identity without live consent, before any work."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest

from swapline.build import build_assets, default_resources
from swapline.ops.consent import Consent, ConsentError, require_live_consent
from tests.conftest import CONSENT


def test_require_consent_names_who_is_missing():
    consent = Consent(**CONSENT)
    require_live_consent({"anna": consent, "ben": consent})
    with pytest.raises(ConsentError, match="no consent declared for ben"):
        require_live_consent({"anna": consent, "ben": None})


def test_revoked_or_expired_consent_is_refused_naming_the_record():
    given = Consent(**CONSENT)
    yesterday = dt.date.today() - dt.timedelta(days=1)
    revoked = given.model_copy(update={"revoked": yesterday})
    expired = Consent(**{**CONSENT, "date": str(yesterday - dt.timedelta(days=30)), "expires": str(yesterday)})
    assert given.lapsed() is None and revoked.lapsed() == f"revoked on {yesterday}"
    assert expired.lapsed() == f"expired on {yesterday}" and expired.lapsed(yesterday) is None
    with pytest.raises(ConsentError) as error:
        require_live_consent({"anna": given, "ben": revoked}, action="train ab")
    assert "Refusing to train ab" in str(error.value) and f"ben's consent of {given.given_by}" in str(error.value)
    assert "revoked on" in str(error.value) and "anna" not in str(error.value).split(":")[0]
    tomorrow = dt.date.today() + dt.timedelta(days=1)
    require_live_consent({"ben": given.model_copy(update={"revoked": tomorrow})})  # announced, not yet in force
    with pytest.raises(ValueError, match="before the consent was given"):
        Consent(**{**CONSENT, "revoked": "2000-01-01"})


@pytest.mark.parametrize("consent", ["none", "revoked"])
def test_conversion_asset_refuses_without_live_consent(media_dir, swapline_home, instance, write_project, consent):
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
    revoked = identities["anna"].consent.model_copy(update={"revoked": dt.date.today()})
    identities["anna"] = identities["anna"].model_copy(update={"consent": None if consent == "none" else revoked})
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
    expected = "no consent declared for anna" if consent == "none" else f"anna's consent of {CONSENT['given_by']}"
    assert error.cause.cls_name == "ConsentError" and expected in error.cause.message, error.cause.message
    assert not (swapline_home / "c").exists()  # nothing was written
