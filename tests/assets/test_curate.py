"""An identity whose sources show two people: warned without references, clean with them."""

from __future__ import annotations

import av
import dagster as dg
from PIL import Image

from swapline.ops.facetable import read_faces
from swapline.ops.storage import ArtifactStore
from swapline.runner import materialize_project
from tests.conftest import CONSENT


def last_check(instance, identity: str, name: str):
    key = dg.AssetCheckKey(dg.AssetKey([identity, "faceset"]), name)
    (record,) = instance.event_log_storage.get_asset_check_execution_history(key, limit=1)
    return record.event.dagster_event.event_specific_data


def mixed_project(media, references=()):
    return {
        "identities": {"anna": {
            "consent": CONSENT,
            "sources": [{"video": str(media / "WolfgangLanger_Pexels.mp4")}, {"video": str(media / "single_face.mp4")}],
            "reference_photos": [str(r) for r in references],
        }},
        "extraction": {"sample_fps": 3, "face_size": 96},
    }


def test_mixed_people_warn_and_reference_photos_fix_it(media_dir, swapline_home, instance, write_project, tmp_path):
    project, _ = write_project(mixed_project(media_dir))
    assert materialize_project(project, instance, echo=lambda _: None).ok
    check = last_check(instance, "anna", "one_person")
    assert check.passed is False and check.severity == dg.AssetCheckSeverity.WARN

    with av.open(str(media_dir / "WolfgangLanger_Pexels.mp4")) as container:
        first = next(container.decode(video=0)).to_ndarray(format="rgb24")
    reference = tmp_path / "anna_ref.jpg"
    Image.fromarray(first).save(reference)
    project, _ = write_project(mixed_project(media_dir, [reference]), name="with_refs.yaml")
    assert materialize_project(project, instance, echo=lambda _: None).ok
    assert last_check(instance, "anna", "one_person").passed is True
    store = ArtifactStore(swapline_home)
    faces = read_faces(store.current(store.location("anna", "faceset")).path / "faceset.parquet", with_images=False)
    man_source = next(k for k in project.source_keys("anna") if k.startswith("video_single_face"))
    assert len(faces) > 0 and not (faces["source"] == man_source).any()
    assert (faces["identity_distance"] < 0.6).all()
