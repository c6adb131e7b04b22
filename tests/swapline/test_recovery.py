"""After a crash the next run carries on by itself, tried as a user would, with real processes:
`swapline run` killed with SIGKILL while it trains (supervisor and worker both, as a reboot or
an out-of-memory kill leaves them), then the automation, `status` and `refresh`; and Ctrl-C
during training, which must stop within seconds with the work saved and the slot free."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import dagster as dg
import pytest

from swapline.build import build_definitions
from swapline.liveness import LIVE_STATUSES, PID_TAG, run_assets
from swapline.ops.storage import ArtifactStore
from swapline.ops.workdir import POINTER
from swapline.runner import write_instance_yaml
from tests.assets.test_pipeline import tiny_project

pytestmark = pytest.mark.slow
MODEL = dg.AssetKey(["ab", "face_model"])


def swapline(*args: str) -> list[str]:
    return [sys.executable, "-m", "swapline.cli", *args]


def training_run(instance) -> dg.DagsterRun | None:
    for record in instance.get_run_records(dg.RunsFilter(statuses=LIVE_STATUSES)):
        if MODEL in run_assets(record.dagster_run):
            return record.dagster_run
    return None


def wait_for_new_checkpoint(pointer, proc, timeout: float = 300) -> dict:
    """The work checkpoint pointer once it names a newer checkpoint than now (training is on)."""
    before = pointer.read_text() if pointer.exists() else ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "swapline ended before training wrote a work checkpoint"
        if pointer.exists() and (text := pointer.read_text()) != before:
            return json.loads(text)
        time.sleep(0.1)
    raise AssertionError("no new work checkpoint")


def budgeted_training(media_dir, tmp_path, monkeypatch, write_project, minutes: float):
    """The tiny project without conversions, in its own Dagster and artifact homes (as the CLI
    uses them), each training run stopping after `minutes` with a work checkpoint about every
    second. Returns (project data, project, project file, artifact store)."""
    data = tiny_project(media_dir)
    data["conversions"] = {}
    data["swaps"]["ab"].update(iterations=100000, max_minutes=minutes, checkpoint_minutes=0.02)
    project, path = write_project(data)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("SWAPLINE_HOME", str(tmp_path / "artifacts"))
    return data, project, path, ArtifactStore(tmp_path / "artifacts")


def test_killed_training_resumes_by_automation_or_refresh_and_ctrl_c_stops_cleanly(
        media_dir, tmp_path, monkeypatch, write_project):
    _, project, path, store = budgeted_training(media_dir, tmp_path, monkeypatch, write_project, 0.1)  # 6 s a run
    pointer = store.location("ab", "face_model", "_work") / POINTER
    log = tmp_path / "out.txt"

    subprocess.run(swapline("run", "--project", str(path)), check=True, timeout=900, stdout=log.open("w"))
    first = store.current(store.location("ab", "face_model")).manifest()

    # A second run trains on; once it saved a work checkpoint, both its processes die at once.
    proc = subprocess.Popen(swapline("run", "--project", str(path)), stdout=log.open("w"), stderr=subprocess.STDOUT)
    crash_point = wait_for_new_checkpoint(pointer, proc)
    with dg.DagsterInstance.get() as instance:
        run = training_run(instance)
        proc.send_signal(signal.SIGKILL)
        os.kill(int(run.tags[PID_TAG]), signal.SIGKILL)
        proc.wait(timeout=10)
        time.sleep(0.5)
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED  # as the crash left it
        assert instance.event_log_storage.get_concurrency_info("gpu").claimed_slots  # and it holds the slot

        # Under the daemon: the dead_runs sensor cleans up, then the automation asks for the training.
        defs = build_definitions(project, path)
        sensor = next(s for s in defs.sensors if s.name == "dead_runs")
        skip = sensor(dg.build_sensor_context(instance=instance))
        assert "killed or crashed" in skip.skip_message
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        assert not instance.event_log_storage.get_concurrency_info("gpu").claimed_slots
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        requested = {(r.key, p) for r in result.results if isinstance(r.key, dg.AssetKey) for p in result.get_requested_partitions(r.key)}
        assert requested == {(MODEL, None)}

    status = subprocess.run(swapline("status", "--project", str(path)), capture_output=True, text=True, timeout=120)
    assert "ab/face_model" in status.stdout and "FAILED   interrupted: the process ended without reporting" in status.stdout, status.stdout

    start = time.monotonic()
    refresh = subprocess.run(swapline("refresh", "--project", str(path)), capture_output=True, text=True, timeout=600)
    assert refresh.returncode == 0, refresh.stdout + refresh.stderr
    assert "ab/face_model (failed): ok" in refresh.stdout, refresh.stdout
    print(f"refresh after the kill: {time.monotonic() - start:.1f}s")
    resumed = store.current(store.location("ab", "face_model")).manifest()
    runs = [(r["start_step"], r["stopped_by"]) for r in resumed["runs"]]
    assert runs[0] == (0, "time") and runs[1] == (first["step"], "killed or crashed")
    assert resumed["runs"][1]["step"] >= crash_point["step"] and runs[2] == (resumed["runs"][1]["step"], "time")
    assert resumed["start_step"] == resumed["runs"][1]["step"]  # from the crashed run's checkpoint, not redone
    assert resumed["losses"][0][0] <= first["step"]  # the loss curve covers every run

    # Ctrl-C while training: out within 10 s, the work checkpoint newer, the slot free.
    proc = subprocess.Popen(swapline("run", "--project", str(path)), stdout=log.open("w"), stderr=subprocess.STDOUT)
    wait_for_new_checkpoint(pointer, proc)
    proc.send_signal(signal.SIGINT)
    start = time.monotonic()
    assert proc.wait(timeout=10) == 130, log.read_text()
    assert time.monotonic() - start < 10
    assert json.loads(pointer.read_text())["step"] > resumed["step"]
    with dg.DagsterInstance.get() as instance:
        assert not instance.event_log_storage.get_concurrency_info("gpu").claimed_slots
        assert training_run(instance) is None
    assert "training interrupted at step" in log.read_text() or "stopping" in log.read_text()


def test_conversion_killed_while_encoding_is_rebuilt_whole_by_refresh(media_dir, tmp_path, monkeypatch, write_project):
    from tests.assets.test_pipeline import decode_all

    data = tiny_project(media_dir)
    clip = media_dir / "WolfgangLanger_Pexels.mp4"  # 472 frames: long enough to be caught mid-encode
    data["conversions"] = {"anna_as_ben": {"swap": "ab", "video": str(clip), "direction": "a_to_b"}}
    project, path = write_project(data)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("SWAPLINE_HOME", str(tmp_path / "artifacts"))
    store = ArtifactStore(tmp_path / "artifacts")
    video = dg.AssetKey(["anna_as_ben", "converted_video"])
    write_instance_yaml(tmp_path / "dagster_home")  # the test watches the instance from the start

    proc = subprocess.Popen(swapline("run", "--project", str(path)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with dg.DagsterInstance.get() as instance:
        deadline, run = time.monotonic() + 600, None
        while run is None or not any("frames converted" in e.user_message for e in instance.all_logs(run.run_id)
                                     if not e.is_dagster_event):
            assert proc.poll() is None and time.monotonic() < deadline, "the conversion ended before it was caught"
            run = next((r.dagster_run for r in instance.get_run_records(dg.RunsFilter(statuses=LIVE_STATUSES))
                        if video in run_assets(r.dagster_run)), None)
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        os.kill(int(run.tags[PID_TAG]), signal.SIGKILL)
        proc.wait(timeout=10)
    assert store.current_or_none(store.location("anna_as_ben", "converted_video")) is None  # nothing half-written published

    refresh = subprocess.run(swapline("refresh", "--project", str(path)), capture_output=True, text=True, timeout=600)
    assert refresh.returncode == 0 and "anna_as_ben/converted_video (failed): ok" in refresh.stdout, refresh.stdout
    published = store.current(store.location("anna_as_ben", "converted_video"))
    source, _, _, _ = decode_all(clip)
    output, has_audio, _, tags = decode_all(published.path / "anna_as_ben.mp4")
    assert len(output) == len(source) and has_audio and "SYNTHETIC" in tags.get("comment", "")
    assert json.loads((published.path / "anna_as_ben.provenance.json").read_text())["synthetic"] is True
