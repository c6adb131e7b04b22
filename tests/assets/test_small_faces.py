"""The default backend finds every face down to `min_face`, and the run says what it left out.

A photo folder as a new user has one: the group photo and 1920x1080 photos of faces 75-125 px
wide (the demo stills' faces, hand-counted once in tests/fixtures/faces_labelled.json, shrunk;
benchmarks.face_recall makes them), plus a photo without a face. Extracted at the default
settings (backend auto -> mediapipe), every face at or above `min_face` is found; the run's
summary names the photo that gave none."""

from __future__ import annotations

import shutil

import pytest
from PIL import Image

from benchmarks.face_recall import labelled_stills, small_face_canvases
from swapline import face_models
from swapline.ops import tflite
from swapline.runner import materialize_project
from tests.conftest import CONSENT


@pytest.fixture
def models_dir(tmp_path_factory, monkeypatch):
    if not tflite.models_present():  # a private copy, fetched as set-up does; never the shared folder
        monkeypatch.setenv(tflite.ENV_DIR, str(face_models.fetch(tmp_path_factory.mktemp("face_models"))))
    return tflite.models_dir()


def test_group_photo_and_small_faces_are_all_found_and_the_rest_is_named(
        models_dir, media_dir, tmp_path, swapline_home, instance, write_project):
    stills = labelled_stills(media_dir)
    canvases = small_face_canvases({name: stills[name] for name in ("multi_face.jpg", "single_face.jpg")})
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(media_dir / "multi_face.jpg", folder / "group.jpg")
    for name, (canvas, _, _) in canvases.items():
        Image.fromarray(canvas).save(folder / f"{name}.jpg", quality=95)
    Image.new("RGB", (800, 600), (90, 140, 200)).save(folder / "sky.jpg")
    present = len(stills["multi_face.jpg"][1]) + sum(len(boxes) for _, boxes, _ in canvases.values())
    project, _ = write_project({
        "identities": {"crowd": {"consent": CONSENT, "sources": [{"photos": str(folder)}]}},
        "extraction": {"face_size": 96, "min_face": 40, "workers": 1}, "checks": {"min_faces": 1},
    })
    assert project.extraction.backend == "auto"
    summary = materialize_project(project, instance, echo=lambda line: None, log_level="WARNING")
    assert summary.ok, summary.failed
    (source,) = project.source_keys("crowd")
    import dagster as dg

    record = instance.fetch_materializations(dg.AssetRecordsFilter(
        asset_key=dg.AssetKey(["crowd", "aligned_faces"]), asset_partitions=[source]), limit=1).records[0]
    metadata = {k: v.value for k, v in record.asset_materialization.metadata.items()}
    assert metadata["backend"] == "mediapipe"
    assert metadata["faces"] >= present == 5 + 6, metadata  # the group's 5 and the six small faces
    report = "\n".join(summary.report)
    assert "sky.jpg" in report and "without a face" in report, report
