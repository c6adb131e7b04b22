"""`swapline check` looks at every reference photo with the project's extraction settings: a group
photo or a photo without a face is an error naming the identity, the photo and its face count,
found before any run (extraction would take the group's largest face, or fail mid-run)."""

from __future__ import annotations

import shutil

import pytest

from swapline.cli import main
from tests.conftest import CONSENT


@pytest.fixture
def project_with(media_dir, tmp_path):
    """Write a project whose one identity has these demo stills as reference photos; its path."""

    def write(*references: str, backend: str = "dlib"):
        import yaml

        for name in references:
            shutil.copy(media_dir / name, tmp_path / name)
        path = tmp_path / "swapline.yaml"
        path.write_text(yaml.safe_dump({
            "identities": {"ben": {"consent": CONSENT, "sources": [{"video": str(media_dir / "single_face.mp4")}],
                                   "reference_photos": list(references)}},
            "extraction": {"backend": backend},
        }))
        return path

    return write


def test_a_group_photo_and_a_photo_without_a_face_are_errors(project_with, capsys):
    path = project_with("single_face.jpg", "multi_face.jpg", "BWPictureHuman.jpg")
    assert main(["check", "--project", str(path)]) == 2
    err = capsys.readouterr().err
    assert "2 reference photo problem(s)" in err
    assert "identities.ben.reference_photos[1] (multi_face.jpg): shows 3 faces" in err
    assert "identities.ben.reference_photos[2] (BWPictureHuman.jpg): shows no face" in err
    assert "single_face.jpg" not in err  # the good one is not blamed


def test_the_check_counts_faces_with_the_backend_the_run_uses(project_with, capsys, monkeypatch, tmp_path_factory):
    """The default backend (auto: mediapipe once set up) finds all five faces of the group photo
    (dlib's HOG three); the run would use the same. Its files missing: the check says so."""
    from swapline import face_models
    from swapline.ops import tflite

    if not tflite.models_present():  # a private copy, fetched as set-up does
        monkeypatch.setenv(tflite.ENV_DIR, str(face_models.fetch(tmp_path_factory.mktemp("face_models"))))
    assert main(["check", "--project", str(project_with("single_face.jpg", "multi_face.jpg", backend="auto"))]) == 2
    assert "(multi_face.jpg): shows 5 faces" in capsys.readouterr().err
    monkeypatch.setenv(tflite.ENV_DIR, str(tmp_path_factory.mktemp("empty")))
    assert main(["check", "--project", str(project_with("single_face.jpg", backend="mediapipe"))]) == 2
    err = capsys.readouterr().err
    assert "extraction.backend 'mediapipe' cannot start" in err and tflite.DETECTOR_FILE in err


def test_one_face_per_reference_photo_passes(project_with, capsys):
    path = project_with("single_face.jpg")
    assert main(["check", "--project", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ben: 1 source(s)" in out and "1 reference photo(s) of one face each" in out and out.rstrip().endswith("OK")


def test_one_person_advice_fits_whether_reference_photos_are_set():
    import dagster as dg

    from swapline.quality_checks.faceset_checks import one_person

    mixed = {"several_people": True, "sampled": 64, "outlier_share": 0.2, "outliers": ["3f1a", "9c2e"]}
    key = dg.AssetKey(["ben", "faceset"])
    without = one_person(key, mixed).metadata
    assert without["advice"].value == "add reference_photos to keep only this person" and without["reference_photos"].value is False
    with_refs = one_person(key, mixed, references=True).metadata["advice"].value
    assert "add reference_photos" not in with_refs
    assert "lower extraction.identity_distance" in with_refs and "3f1a, 9c2e" in with_refs
    assert "advice" not in one_person(key, {**mixed, "several_people": False}, references=True).metadata
