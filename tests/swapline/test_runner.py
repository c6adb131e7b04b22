"""`swapline run` and `refresh` launch real Dagster runs through the instance (dg.execute_job with
the reconstructable job of swapline/jobs.py), grouped as Dagster's graph requires: one run per
source partition, then one for the unpartitioned assets. Tried on one identity with a real short
clip and a photo folder; and no module of the package reaches into Dagster's private modules."""

from __future__ import annotations

import ast
import os
import shutil
from pathlib import Path

import dagster as dg
import pytest

from swapline import jobs
from swapline.jobs import UNPARTITIONED
from swapline.runner import materialize_project, write_instance_yaml
from swapline.status import FRESH, project_status, refresh
from tests.swapline.test_status import STAGES, ben, counts, source

PACKAGE = Path(__file__).resolve().parents[2] / "swapline"


@pytest.fixture
def launched(monkeypatch) -> list[tuple]:
    """Every dg.execute_job call: (job pointer, asset selection, tags)."""
    calls, real = [], dg.execute_job

    def spy(job, instance, **kwargs):
        calls.append((job, kwargs.get("asset_selection"), kwargs.get("tags")))
        return real(job, instance, **kwargs)

    monkeypatch.setattr(dg, "execute_job", spy)
    return calls


def pointer(run: dg.DagsterRun) -> tuple[str, str, list]:
    """(module, function, arguments) the run's job is rebuilt from in any process."""
    code = run.job_code_origin.repository_origin.code_pointer
    return code.reconstructor_pointer.module, code.reconstructor_pointer.fn_name, list(code.reconstructable_args)


def test_run_is_one_real_run_per_partition_then_one_for_the_rest(media_dir, photos, swapline_home, instance,
                                                                    write_project, launched):
    project, _ = write_project(ben(media_dir, photos))
    lines: list[str] = []
    summary = materialize_project(project, instance, echo=lines.append, log_level="WARNING")
    assert summary.ok, summary.failed
    sources = sorted(project.source_keys("ben"))
    # One line per source partition and per unpartitioned asset, as `swapline run` prints them.
    assert [line.split(": ")[0] for line in lines] == [f"[1/3] ben/{sources[0]}", f"[2/3] ben/{sources[1]}", "[3/3] ben/faceset"]

    runs = list(reversed(instance.get_runs()))  # oldest first
    assert len(runs) == len(launched) == 3 and all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs)
    chain = {dg.AssetKey(["ben", stage]) for stage in STAGES}
    for run, partition in zip(runs, sources):
        assert run.tags["dagster/partition"] == partition and run.asset_selection == chain
        assert pointer(run) == ("swapline.jobs", "assets_job", ["ben_sources", pointer(run)[2][1]])
    last = runs[-1]
    assert "dagster/partition" not in last.tags and last.asset_selection == {dg.AssetKey(["ben", "faceset"])}
    assert pointer(last)[:2] == ("swapline.jobs", "assets_job") and pointer(last)[2][0] == UNPARTITIONED
    assert {run.job_name for run in runs} == {"swapline_ben_sources", "swapline_unpartitioned"}
    assert {row.status for row in project_status(project, instance)} == {FRESH}


def test_refresh_after_new_photos_reruns_exactly_that_partition_and_downstream(media_dir, photos, swapline_home,
                                                                                instance, write_project, launched):
    project, _ = write_project(ben(media_dir, photos))
    assert materialize_project(project, instance, echo=lambda line: None, log_level="WARNING").ok
    before, runs_before = counts(project, instance), len(instance.get_runs())
    stills, video = source(project, "photos"), source(project, "video")

    shutil.copy(media_dir / "0-f1-su-ph.jpg", photos / "new.jpg")
    lines: list[str] = []
    summary = refresh(project, instance, echo=lines.append, log_level="WARNING")
    assert summary.ok, summary.failed
    after = counts(project, instance)
    assert {label for label in after if after[label] != before[label]} == {
        *(f"ben/{stage}[{stills}]" for stage in STAGES), "ben/faceset"}, lines
    assert all(after[label] - before[label] == 1 for label in after if after[label] != before[label])
    # Every run of the refresh is the photos' partition or the unpartitioned faceset, never the video's.
    new = instance.get_runs(limit=len(instance.get_runs()) - runs_before)
    assert new and {run.tags.get("dagster/partition") for run in new} == {stills, None}
    assert all(video not in str(tags) for _, _, tags in launched[-len(new):])
    assert {row.status for row in project_status(project, instance)} == {FRESH}


def _private_dagster(path: Path) -> list[str]:
    """`import dagster._...`, `from dagster._... import` and `dg._...` / `dagster._...` in a module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        found += [f"{path}:{node.lineno}: import {n}" for n in names if n.startswith("dagster._")]
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ("dg", "dagster") \
                and node.attr.startswith("_"):
            found.append(f"{path}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_no_module_of_the_package_uses_private_dagster():
    # The stage folders (assets/, ops/, ...) are part of the package through symlinks: follow them.
    modules = [Path(root) / name for root, _, files in os.walk(PACKAGE, followlinks=True)
               for name in files if name.endswith(".py") and "__pycache__" not in root]
    assert len(modules) > 50
    assert [hit for path in modules for hit in _private_dagster(path)] == []


def test_runs_go_through_the_executor_the_deployment_configures(media_dir, swapline_home, tmp_path, write_project,
                                                                monkeypatch):
    """SWAPLINE_EXECUTOR=multiprocess: each step runs in a process of its own, which rebuilds the
    job from the run's pointer and the project file $SWAPLINE_PROJECT names."""
    project, path = write_project(ben(media_dir))
    monkeypatch.setenv("SWAPLINE_EXECUTOR", "multiprocess")
    monkeypatch.setenv("SWAPLINE_PROJECT", str(path))
    write_instance_yaml(tmp_path / "dagster_home")  # the CLI's instance: on disk, which the steps' processes reach
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    with dg.DagsterInstance.get() as instance:
        summary = materialize_project(project, instance, echo=lambda line: None, log_level="WARNING")
        assert summary.ok, summary.failed
        runs = instance.get_runs()
        assert len(runs) == 2
        pids = {entry.dagster_event.pid for run in runs for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START)}
        assert len(pids) == len(STAGES) + 1 and os.getpid() not in pids


def test_a_process_rebuilding_the_job_refuses_a_project_file_changed_since_launch(media_dir, swapline_home, write_project,
                                                                                    monkeypatch):
    """A step's process (multiprocess, a Celery worker) reads the project file: were it edited
    since the run was planned, its code versions would not be the ones the run was judged by."""
    project, path = write_project(ben(media_dir))
    monkeypatch.setenv("SWAPLINE_PROJECT", str(path))
    monkeypatch.setattr(jobs, "_LAUNCHED", {})  # as in another process: nothing launched there
    launched = jobs.fingerprint(project)
    assert jobs.assets_job("ben_sources", launched).name == "swapline_ben_sources"
    write_project(ben(media_dir, sample_fps=2))
    with pytest.raises(RuntimeError, match="changed since this run was launched"):
        jobs.assets_job("ben_sources", launched)
