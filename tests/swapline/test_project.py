"""The project file: every user mistake is one clear ProjectError naming file, key and fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from swapline.project import ProjectError, load_project

MEDIA = Path(__file__).resolve().parents[2] / "demo" / "media"
CONSENT = {"given_by": "Anna Example", "date": "2024-05-01", "evidence": "signed release form #12"}


def base() -> dict:
    return {
        "identities": {
            "anna": {"consent": dict(CONSENT), "sources": [{"video": str(MEDIA / "WolfgangLanger_Pexels.mp4")}]},
            "ben": {"consent": dict(CONSENT), "sources": [{"video": str(MEDIA / "single_face.mp4")},
                                                          {"url": "https://example.org/ben.mp4"}]},
        },
        "swaps": {"anna_ben": {"a": "anna", "b": "ben"}},
        "conversions": {"c1": {"swap": "anna_ben", "video": str(MEDIA / "single_face.mp4"), "direction": "b_to_a"}},
    }


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "swapline.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def error_for(tmp_path: Path, data: dict) -> str:
    path = write(tmp_path, data)
    with pytest.raises(ProjectError) as info:
        load_project(path)
    message = str(info.value)
    assert str(path) in message  # always names the file
    return message


def test_valid_project_loads_with_stable_keys(tmp_path):
    project = load_project(write(tmp_path, base()))
    keys = list(project.source_keys("ben"))
    assert len(keys) == 2 and keys[0].startswith("video_single_face_") and keys[1].startswith("url_ben_")
    data = base()
    data["identities"]["ben"]["sources"].reverse()  # reordering sources keeps each key
    assert sorted(load_project(write(tmp_path, data)).source_keys("ben")) == sorted(keys)


def test_relative_paths_resolve_from_the_project_folder(tmp_path):
    data = base()
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.mp4").write_bytes((MEDIA / "single_face.mp4").read_bytes())
    data["identities"]["anna"]["sources"] = [{"video": "clips/a.mp4"}]
    project = load_project(write(tmp_path, data))
    assert project.identities["anna"].sources[0].video == tmp_path / "clips" / "a.mp4"


def test_unknown_key(tmp_path):
    data = base()
    data["swaps"]["anna_ben"]["iteratons"] = 5
    message = error_for(tmp_path, data)
    assert "swaps.anna_ben.iteratons" in message and "unknown key" in message


def test_downloads_section(tmp_path):
    assert load_project(write(tmp_path, base())).downloads.max_download_mb == 2048  # the default, when absent
    data = base()
    data["downloads"] = {"max_download_mb": 100, "stall_timeout_seconds": 5, "retries": 1, "host_pause_seconds": 0}
    downloads = load_project(write(tmp_path, data)).downloads
    assert downloads.max_bytes == 100 * 1024 * 1024 and downloads.stall_timeout_seconds == 5 and downloads.retries == 1
    data["downloads"] = {"max_size_mb": 100, "retries": -1}
    message = error_for(tmp_path, data)
    assert "downloads.max_size_mb: unknown key" in message and "downloads.retries" in message


def test_missing_consent(tmp_path):
    data = base()
    del data["identities"]["ben"]["consent"]
    message = error_for(tmp_path, data)
    assert "identities.ben.consent" in message and "given_by, date, evidence" in message


def test_consent_missing_a_field(tmp_path):
    data = base()
    del data["identities"]["anna"]["consent"]["evidence"]
    assert "identities.anna.consent.evidence" in error_for(tmp_path, data)


def test_identity_name_not_a_slug(tmp_path):
    data = base()
    data["identities"]["Bad Name"] = data["identities"].pop("ben")
    data["swaps"]["anna_ben"]["b"] = "anna"
    message = error_for(tmp_path, data)
    assert "Bad Name" in message and "slug" in message


def test_swap_with_unknown_identity(tmp_path):
    data = base()
    data["swaps"]["anna_ben"]["b"] = "carl"
    message = error_for(tmp_path, data)
    assert "swaps.anna_ben.b" in message and "unknown identity 'carl'" in message


def test_conversion_with_unknown_swap(tmp_path):
    data = base()
    data["conversions"]["c1"]["swap"] = "nope"
    assert "conversions.c1.swap: unknown swap 'nope'" in error_for(tmp_path, data)


def test_missing_local_path(tmp_path):
    data = base()
    data["identities"]["anna"]["sources"].append({"photos": "no/such/folder"})
    message = error_for(tmp_path, data)
    assert "identities.anna.sources[1].photos: no folder at" in message


def test_malformed_and_file_urls(tmp_path):
    for bad in ("not a url", "file:///etc/passwd", "ftp://x.org/a.mp4"):
        data = base()
        data["identities"]["ben"]["sources"][1] = {"url": bad}
        message = error_for(tmp_path, data)
        assert "identities.ben.sources.1" in message and "http(s) URL" in message


def test_source_with_two_kinds(tmp_path):
    data = base()
    data["identities"]["ben"]["sources"][0]["photos"] = str(MEDIA)
    assert "exactly one of url:, video: or photos:" in error_for(tmp_path, data)


def test_not_yaml_and_missing_file(tmp_path):
    path = tmp_path / "swapline.yaml"
    path.write_text("identities: [unclosed\n")
    with pytest.raises(ProjectError, match="not valid YAML"):
        load_project(path)
    with pytest.raises(ProjectError, match="project file not found"):
        load_project(tmp_path / "nope.yaml")


def test_env_var_names_the_project(tmp_path, monkeypatch):
    path = write(tmp_path, base())
    monkeypatch.setenv("SWAPLINE_PROJECT", str(path))
    assert set(load_project().identities) == {"anna", "ben"}


def test_cli_reports_mistakes_without_traceback(tmp_path, capsys):
    from swapline.cli import main

    data = base()
    del data["identities"]["ben"]["consent"]
    assert main(["check", "--project", str(write(tmp_path, data))]) == 2
    err = capsys.readouterr().err
    assert "identities.ben.consent" in err and "Traceback" not in err
