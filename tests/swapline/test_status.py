"""`swapline status` and `refresh` on one identity with a real short clip and a photo folder,
against real Dagster instances: what Dagster calls stale is listed with its cause, and a
refresh materializes exactly that (counted per partition in the instance)."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg

from swapline.cli import main
from swapline.project import PROJECT_ENV
from swapline.status import FAILED, FRESH, MISSING, STALE, dry_run_lines, project_status, refresh, status_lines
from tests.conftest import CONSENT

STAGES = ("source_media", "frames", "aligned_faces")


def ben(media_dir, photos=None, **extraction) -> dict:
    sources = [{"video": str(media_dir / "single_face.mp4")}] + ([{"photos": str(photos)}] if photos else [])
    return {
        "identities": {"ben": {"consent": CONSENT, "sources": sources}},
        "extraction": {"backend": "dlib", "sample_fps": 4, "face_size": 96, "max_frames": 8, "workers": 1, **extraction},
        "checks": {"min_faces": 1},  # a tiny faceset on purpose; its blocking check must not fail it
    }


def source(project, kind: str) -> str:
    return next(key for key in project.source_keys("ben") if key.startswith(kind))


def counts(project, instance) -> dict[str, int]:
    """Materializations recorded per asset partition, by label (e.g. "ben/frames[video_...]")."""
    out = {}
    for row in project_status(project, instance):
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=row.key, asset_partitions=[row.partition] if row.partition else None), limit=100
        ).records
        out[row.label] = len(records)
    return out


def by_label(rows) -> dict:
    return {row.label: row for row in rows}


def built(project, instance) -> dict[str, int]:
    summary = refresh(project, instance, echo=lambda line: None, log_level="WARNING")
    assert summary.ok, summary.failed
    return counts(project, instance)


def test_nothing_built_is_all_missing_and_a_refresh_leaves_nothing_stale(media_dir, photos, swapline_home, instance, write_project):
    project, _ = write_project(ben(media_dir, photos))
    rows = project_status(project, instance)
    # Every stage of both sources, asked per partition (asked without one, Dagster says FRESH), and the faceset.
    assert len(rows) == 2 * len(STAGES) + 1
    assert {row.status for row in rows} == {MISSING}
    assert all(row.causes == ("not materialized yet",) for row in rows)
    assert len(dry_run_lines(project, instance)) == len(rows)

    lines: list[str] = []
    summary = refresh(project, instance, echo=lines.append, log_level="WARNING")
    assert summary.ok and len(summary.succeeded) == len(rows), summary.failed
    # One Dagster run per source (its stages in order), then one for the faceset.
    order = [line.split("] ", 1)[1].split(" ")[0] for line in lines]
    sources = sorted(project.source_keys("ben"))
    assert order == [f"ben/{stage}[{key}]" for key in sources for stage in STAGES] + ["ben/faceset"]
    runs = instance.get_runs()
    assert len(runs) == 3 and sorted(run.tags.get("dagster/partition", "") for run in runs) == ["", *sources]

    assert set(counts(project, instance).values()) == {1}
    assert {row.status for row in project_status(project, instance)} == {FRESH}
    assert status_lines(project_status(project, instance)) == [f"== all {len(rows)} asset partitions are fresh"]
    assert dry_run_lines(project, instance) == ["nothing is stale or missing"]


def test_changed_setting_rebuilds_only_what_it_changes(media_dir, photos, swapline_home, instance, write_project):
    """A new sample_fps makes both sources' frames STALE (code version). Rebuilt, the video's
    frames change and make its aligned_faces STALE by data; the photos' frames come out the
    same (photos are not sampled by fps), so their aligned_faces stay as they are."""
    project, _ = write_project(ben(media_dir, photos))
    before = built(project, instance)

    project, _ = write_project(ben(media_dir, photos, sample_fps=2))
    video, stills = source(project, "video"), source(project, "photos")
    rows = by_label(project_status(project, instance))
    for part in (video, stills):
        assert rows[f"ben/frames[{part}]"].status == STALE
        assert rows[f"ben/frames[{part}]"].causes == ("code version changed (a setting or the algorithm)",)
        # Dagster's causes are direct only: downstream stays FRESH, marked as waiting.
        assert rows[f"ben/aligned_faces[{part}]"].status == FRESH
        assert rows[f"ben/aligned_faces[{part}]"].waits_on == (f"ben/frames[{part}]",)
    assert rows["ben/faceset"].status == FRESH and len(rows["ben/faceset"].waits_on) == 2
    text = "\n".join(status_lines(list(rows.values())))
    assert f"ben/frames\n  {stills}" in text and "2 stale, 0 missing" in text and "source_media" not in text

    lines: list[str] = []
    assert refresh(project, instance, echo=lines.append, log_level="WARNING").ok
    after = counts(project, instance)
    ran = {label for label in after if after[label] != before[label]}
    assert ran == {f"ben/frames[{video}]", f"ben/frames[{stills}]", f"ben/aligned_faces[{video}]", "ben/faceset"}, lines
    assert all(after[label] == before[label] + 1 for label in ran)
    # They ran because Dagster found them stale after the stage before, not because they were listed.
    assert any(line.startswith(f"[3] ben/aligned_faces[{video}] (stale)") for line in lines), lines
    assert {row.status for row in project_status(project, instance)} == {FRESH}


def test_upstream_data_change_is_named_as_the_cause(media_dir, swapline_home, instance, write_project):
    project, _ = write_project(ben(media_dir))
    built(project, instance)
    project, _ = write_project(ben(media_dir, sample_fps=2))
    video = source(project, "video")
    from swapline.build import build_assets, default_resources

    assert dg.materialize(build_assets(project), selection=[dg.AssetKey(["ben", "frames"])], partition_key=video,
                          instance=instance, resources=default_resources()).success
    rows = by_label(project_status(project, instance))
    assert rows[f"ben/aligned_faces[{video}]"].status == STALE
    assert rows[f"ben/aligned_faces[{video}]"].causes == (f"upstream ben/frames[{video}] has a new data version",)
    assert rows["ben/faceset"].waits_on == (f"ben/aligned_faces[{video}]",)


def test_new_source_builds_only_its_partition_and_the_faceset(media_dir, photos, swapline_home, instance, write_project):
    project, _ = write_project(ben(media_dir))
    before = built(project, instance)

    project, _ = write_project(ben(media_dir, photos))
    stills = source(project, "photos")
    # Listed from the project file before any sync: the new source is MISSING at every stage.
    rows = project_status(project, instance)
    assert {row.label for row in rows if row.status != FRESH} == {f"ben/{stage}[{stills}]" for stage in STAGES}
    lines: list[str] = []
    assert refresh(project, instance, echo=lines.append, log_level="WARNING").ok
    after = counts(project, instance)
    assert {label: n for label, n in after.items() if label in before} == {**before, "ben/faceset": 2}
    assert {label: n for label, n in after.items() if label not in before} == {f"ben/{stage}[{stills}]": 1 for stage in STAGES}
    assert lines[-1].startswith("[4] ben/faceset (stale)"), lines  # stale once the new faces were in
    assert {row.status for row in project_status(project, instance)} == {FRESH}


def test_cli_prints_status_and_dry_run(media_dir, tmp_path, monkeypatch, capsys, write_project):
    _, path = write_project(ben(media_dir))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("SWAPLINE_HOME", str(tmp_path / "artifacts"))
    monkeypatch.setenv(PROJECT_ENV, str(path))  # the CLI sets it; monkeypatch puts it back
    assert main(["status", "--project", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "ben/source_media" and "MISSING  not materialized yet" in out[1]
    assert out[-1].startswith("== 0 stale, 4 missing, 0 fresh (4 asset partitions)")
    assert main(["refresh", "--project", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "would materialize (missing): ben/faceset" and len(out) == 4


def test_a_broken_source_skips_its_later_stages_and_the_faceset_builds_from_the_rest(
        media_dir, tmp_path, swapline_home, instance, write_project):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes((media_dir / "single_face.mp4").read_bytes()[:4000])  # cut off after the header
    data = ben(media_dir)
    data["identities"]["ben"]["sources"].append({"video": str(broken)})
    project, _ = write_project(data)
    bad = next(key for key in project.source_keys("ben") if key.startswith("video_broken"))

    summary = refresh(project, instance, echo=lambda line: None, log_level="WARNING")
    assert set(summary.failed) == {f"ben/frames[{bad}]", f"ben/aligned_faces[{bad}]"}, summary.failed
    assert "cannot be decoded" in summary.failed[f"ben/frames[{bad}]"]
    assert summary.failed[f"ben/aligned_faces[{bad}]"] == "skipped: an upstream step failed"
    rows = by_label(project_status(project, instance))
    assert rows["ben/faceset"].status == FRESH and "ben/faceset" in summary.succeeded
    # The failed stage says so, with the reason and when; the one skipped after it is missing.
    failed = rows[f"ben/frames[{bad}]"]
    assert failed.status == FAILED and "cannot be decoded" in failed.causes[0] and failed.causes[1].startswith("at 20")
    assert rows[f"ben/aligned_faces[{bad}]"].status == MISSING


def _cli_env(tmp_path, monkeypatch, path) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("SWAPLINE_HOME", str(tmp_path / "artifacts"))
    monkeypatch.setenv(PROJECT_ENV, str(path))


def test_new_photos_are_seen_without_a_daemon_and_only_they_are_detected(media_dir, photos, tmp_path, monkeypatch,
                                                                           capfd, write_project):
    project, path = write_project(ben(media_dir, photos))
    _cli_env(tmp_path, monkeypatch, path)
    assert main(["refresh", "--project", str(path)]) == 0
    stills = source(project, "photos")
    shutil.copy(media_dir / "0-f1-su-ph.jpg", photos / "new.jpg")
    capfd.readouterr()

    assert main(["status", "--project", str(path)]) == 0
    out = capfd.readouterr().out
    assert f"== files changed in ben[{stills}]" in out
    assert f"{stills}  STALE    upstream ben/source_files[{stills}] has a new data version" in out, out

    assert main(["refresh", "--project", str(path)]) == 0
    out = capfd.readouterr().out
    assert f"ben/aligned_faces[{stills}] (stale): ok" in out and "ben/faceset (stale): ok" in out, out
    with dg.DagsterInstance.get() as instance:
        (record,) = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(["ben", "aligned_faces"]), asset_partitions=[stills]), limit=1).records
        assert record.asset_materialization.metadata["detections_run"].value == 1  # the new photo alone
    assert main(["status", "--project", str(path)]) == 0
    assert capfd.readouterr().out.splitlines()[-1].startswith("== all 7 asset partitions are fresh")


def test_a_failure_is_one_line_in_the_terminal_and_in_full_in_a_log(media_dir, tmp_path, monkeypatch, capfd, write_project):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes((media_dir / "single_face.mp4").read_bytes()[:4000])
    data = ben(media_dir)
    data["identities"]["ben"]["sources"].append({"video": str(broken)})
    project, path = write_project(data)
    _cli_env(tmp_path, monkeypatch, path)
    bad = next(key for key in project.source_keys("ben") if key.startswith("video_broken"))

    assert main(["run", "--project", str(path)]) == 1
    out, err = capfd.readouterr()
    failed = [line for line in out.splitlines() if "FAILED" in line]
    assert len(failed) == 1 and f"ben/{bad}" in failed[0] and "cannot be decoded" in failed[0], out
    assert "Traceback" not in out + err and len((out + err).splitlines()) < 20, out + err
    log = Path(out.split("what went wrong, in full: ")[1].split()[0])
    assert log.parent == tmp_path / "dagster_home" / "logs" and "Traceback" in log.read_text()

    assert main(["status", "--project", str(path)]) == 0
    out = capfd.readouterr().out
    assert f"{bad}  FAILED   " in out and "cannot be decoded" in out, out
