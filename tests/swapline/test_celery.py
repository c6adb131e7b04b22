"""The same graph on Celery workers, for real: a Redis broker, two single-threaded workers with a
DAGSTER_HOME each, runs launched through the instance with a reconstructable job (the workers
rebuild it from its pointer), on SQLite and on Postgres instance storage."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from swapline.assets.automation import observe_sources, sync_partitions
from swapline.build import build_definitions
from swapline.executors import (
    BACKEND_ENV,
    BROKER_ENV,
    CPU_QUEUE,
    EXECUTOR_ENV,
    GPU_OP_TAGS,
    GPU_QUEUE,
    QUEUE_TAG,
    VISIBILITY_TIMEOUT_S,
    celery_config,
    executor_from_env,
    worker_yaml,
)
from swapline.project import load_project
from tests.assets.test_automation import CHAIN, PHOTOS, photo_project
from tests.conftest import REPO
from tests.services import celery_worker, postgres_missing, postgres_server, redis_missing, redis_server

CELERY_WORKER = "Celery worker"  # the engine-event metadata entry dagster-celery fills with the worker's hostname
GPU_STEP_S = 1.5


# --- Executor by configuration: no broker needed ----------------------------------------------------


def test_executor_is_chosen_by_configuration(monkeypatch):
    monkeypatch.delenv(EXECUTOR_ENV, raising=False)
    assert executor_from_env() is None  # Dagster's default: nothing changes for the demo
    monkeypatch.setenv(EXECUTOR_ENV, "in_process")
    assert executor_from_env() is dg.in_process_executor
    monkeypatch.setenv(EXECUTOR_ENV, "multiprocess")
    assert executor_from_env() is dg.multiprocess_executor
    monkeypatch.setenv(EXECUTOR_ENV, "celery")
    monkeypatch.delenv(BROKER_ENV, raising=False)
    with pytest.raises(ValueError, match=BROKER_ENV):
        executor_from_env()
    monkeypatch.setenv(BROKER_ENV, "redis://secret@broker:6379/0")
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    assert executor_from_env().name == "celery"
    config = celery_config()  # URLs stay env references: no secret lands in the definitions or the yaml
    assert config["broker"] == config["backend"] == {"env": BROKER_ENV} and "secret" not in worker_yaml()
    assert config["config_source"]["broker_transport_options"]["visibility_timeout"] == VISIBILITY_TIMEOUT_S > 48 * 3600
    assert yaml.safe_load(worker_yaml())["execution"]["config"] == config
    monkeypatch.setenv(EXECUTOR_ENV, "dask")
    with pytest.raises(ValueError, match="in_process, multiprocess, celery"):
        executor_from_env()


def test_gpu_pool_steps_go_to_the_gpu_queue(monkeypatch):
    """Every asset of the demo graph in the `gpu` pool (face_model, converted_video) carries the
    op tag that sends its step to the `gpu` Celery queue: the pool says how many, the queue where."""
    monkeypatch.delenv(EXECUTOR_ENV, raising=False)
    path = REPO / "demo" / "swapline.yaml"
    defs = build_definitions(load_project(path), path)
    gpu = {a.key.to_user_string(): dict(a.op.tags) for a in defs.assets if isinstance(a, dg.AssetsDefinition) and a.op.pool == "gpu"}
    assert {key.split("/")[-1] for key in gpu} == {"face_model", "converted_video"}
    assert all(tags.get(QUEUE_TAG) == GPU_QUEUE for tags in gpu.values()), f"add op_tags=GPU_OP_TAGS to these assets: {gpu}"


# --- Two workers, for real --------------------------------------------------------------------------


@dg.asset(pool="gpu", op_tags=GPU_OP_TAGS)
def gpu_one() -> dg.MaterializeResult:
    time.sleep(GPU_STEP_S)  # long enough that two unserialised steps would overlap
    return dg.MaterializeResult()


@dg.asset(pool="gpu", op_tags=GPU_OP_TAGS)
def gpu_two() -> dg.MaterializeResult:
    time.sleep(GPU_STEP_S)
    return dg.MaterializeResult()


def gpu_pool_job() -> dg.JobDefinition:
    """Two light steps in the `gpu` pool, on the `gpu` queue: what the workers rebuild."""
    job = dg.define_asset_job("gpu_pool_job", selection=[gpu_one, gpu_two])
    return dg.Definitions(assets=[gpu_one, gpu_two], jobs=[job], executor=executor_from_env()).resolve_job_def("gpu_pool_job")


def instance_config(storage: str, postgres_url: str | None) -> dict:
    """One slot in every pool (as swapline's own instance has: runner.write_instance_yaml)."""
    config: dict = {"concurrency": {"pools": {"default_limit": 1}}}
    if storage == "postgres":
        config["storage"] = {"postgres": {"postgres_url": postgres_url}}
    return config


@pytest.fixture
def postgres_url(request):
    if request.param != "postgres":
        yield None
        return
    if reason := postgres_missing():
        pytest.skip(reason)
    with postgres_server() as url:
        yield url


@pytest.mark.slow
@pytest.mark.timeout(300)
# dagster-celery registers its task again on every submission; Celery warns each time.
@pytest.mark.filterwarnings("ignore:Task name 'execute_plan' is already registered")
@pytest.mark.parametrize("postgres_url", ["sqlite", "postgres"], indirect=True)
def test_two_celery_workers_share_the_extraction_and_the_gpu_pool_serialises(
        postgres_url, media_dir, swapline_home, write_project, tmp_path, monkeypatch):
    """Two identities' extraction runs on two workers, each with its own DAGSTER_HOME: both
    workers took steps; then two `gpu`-pool steps on two idle `gpu`-queue workers ran one by one."""
    if reason := redis_missing():
        pytest.skip(reason)
    storage = "postgres" if postgres_url else "sqlite"
    project, path = write_project(photo_project(tmp_path / "photos", media_dir, PHOTOS))
    with redis_server(tmp_path / "redis") as broker:
        env = {"SWAPLINE_PROJECT": str(path), EXECUTOR_ENV: "celery", BROKER_ENV: broker, "SWAPLINE_HOME": str(swapline_home),
               "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}  # the workers import tests.* and swapline
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        config_yaml = tmp_path / "celery.yaml"
        config_yaml.write_text(worker_yaml())
        homes = [tmp_path / f"home-w{i}" for i in (1, 2)]
        for home in homes:  # each worker's own DAGSTER_HOME, as on separate hosts
            home.mkdir()
            (home / "dagster.yaml").write_text(yaml.safe_dump(instance_config(storage, postgres_url)))
        with (dg.instance_for_test(overrides=instance_config(storage, postgres_url)) as instance,
              celery_worker("w1", (CPU_QUEUE, GPU_QUEUE), config_yaml, homes[0], env) as w1,
              celery_worker("w2", (CPU_QUEUE, GPU_QUEUE), config_yaml, homes[1], env) as w2):
            sync_partitions(project, instance)
            observe_sources(project, instance)
            runs = extract_side_by_side(project)
            assert workers_of(instance, runs) == {w1, w2}, "both workers executed extraction steps"
            for who in PHOTOS:
                assert instance.get_latest_materialization_event(dg.AssetKey([who, "aligned_faces"])) is not None
            gpu_run = dg.execute_job(dg.reconstructable(gpu_pool_job), instance=instance)
            assert gpu_run.success, describe_failure(instance, gpu_run)
            assert_gpu_steps_serialised(instance, gpu_run.run_id)
            if storage == "postgres":  # no SQLite storage anywhere: not the launcher's, not the workers'
                assert not [p for root in (tmp_path, Path(instance.root_directory)) for p in root.rglob("*.db")]


def extract_side_by_side(project) -> list[str]:
    """source_media, frames and aligned_faces of one partition of each identity: one run per
    identity (a run holds one partitions definition), launched at once, each from its own process
    as the daemon launches runs (two runs starting in one process can deadlock in Dagster's
    logging setup). Returns the run ids; every run must succeed."""
    runs = []
    for who in PHOTOS:
        (partition,) = project.source_keys(who)
        runs.append(subprocess.Popen([sys.executable, "-m", "swapline.executors", "run", *(f"{who}/{s}" for s in CHAIN),
                                      "--partition", partition], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outcomes = [run.communicate(timeout=150) for run in runs]
    assert all(run.returncode == 0 for run in runs), [err[-3000:] for _, err in outcomes]
    return [out.split()[-2] for out, _ in outcomes]


def describe_failure(instance: dg.DagsterInstance, result: dg.JobExecutionResult) -> str:
    failures = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    return "; ".join(str(e.dagster_event.step_failure_data.error.message)[:500] for e in failures) or "failed"


def workers_of(instance: dg.DagsterInstance, runs: list[str]) -> set[str]:
    """Hostnames of the Celery workers that executed the runs' steps, from the engine events."""
    names = set()
    for run_id in runs:
        for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
            metadata = entry.dagster_event.engine_event_data.metadata
            if CELERY_WORKER in metadata:
                names.add(metadata[CELERY_WORKER].value)
    return names


def assert_gpu_steps_serialised(instance: dg.DagsterInstance, run_id: str) -> None:
    """Both GPU steps went to the `gpu` queue and never overlapped, although both were ready when
    the run started and two idle workers listened on that queue: the orchestrator held the second
    one back (not even submitted) until the first freed the pool's one slot. dagster-celery logs
    no "blocked by pool" event, so the submission time is the evidence."""
    logs = [e for e in instance.all_logs(run_id) if e.dagster_event and e.step_key]
    submitted = {e.step_key: e for e in logs if "Submitting celery task" in (e.message or "")}
    assert {k: e.message for k, e in submitted.items()} == {
        step: f'Submitting celery task for step "{step}" to queue "{GPU_QUEUE}".' for step in ("gpu_one", "gpu_two")}
    spans: dict[str, list[float]] = {}
    for e in logs:
        if e.dagster_event.event_type in (dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS):
            spans.setdefault(e.step_key, []).append(e.timestamp)
    (first, (a_start, a_end)), (second, (b_start, _)) = sorted(((k, sorted(t)) for k, t in spans.items()), key=lambda kv: kv[1])
    assert a_end - a_start >= GPU_STEP_S and a_end <= b_start, f"GPU steps overlapped: {spans}"
    assert submitted[second].timestamp >= a_end, f"{second} was submitted before {first} freed the pool slot"
