"""Which executor runs the asset steps, chosen by configuration when the definitions are built.

    SWAPLINE_EXECUTOR        unset: Dagster's default (`swapline run` and the demo run in-process;
                             runs launched from the UI use its multi-or-in-process default)
                             in_process | multiprocess | celery
    SWAPLINE_CELERY_BROKER   with celery, required: the broker URL, e.g. redis://host:6379/0
    SWAPLINE_CELERY_BACKEND  with celery: where step results go; unset: the broker (Redis is both)

With Celery every step is a task: CPU stages go to dagster-celery's default queue ("dagster"),
steps tagged with GPU_OP_TAGS to the `gpu` queue, served by one single-threaded worker per GPU
(docs/deploy.md). The `gpu` pool still decides how many GPU steps run at once: the run's
orchestrator claims the pool slot before it submits the task.

    python -m swapline.executors worker-yaml > celery.yaml   # the workers' `-y` file
    python -m swapline.executors run anna/source_media anna/frames --partition KEY   # a run, from a shell
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import dagster as dg

EXECUTOR_ENV = "SWAPLINE_EXECUTOR"
BROKER_ENV = "SWAPLINE_CELERY_BROKER"
BACKEND_ENV = "SWAPLINE_CELERY_BACKEND"
CHOICES = ("in_process", "multiprocess", "celery")

QUEUE_TAG = "dagster-celery/queue"  # the op tag dagster-celery routes a step by
CPU_QUEUE = "dagster"  # dagster-celery's default queue: every step without the tag
GPU_QUEUE = "gpu"
GPU_OP_TAGS = {QUEUE_TAG: GPU_QUEUE}  # op_tags of the assets in the `gpu` pool (face_model, converted_video)

# A Redis broker hands a message that stays unacknowledged longer than this to another worker.
# A worker busy with a training step has already reserved its next message (prefetch), so with
# Celery's default of 1 h that step would run twice. Runs are capped at 48 h (runner.py's
# max_runtime_seconds): one hour above the cap.
VISIBILITY_TIMEOUT_S = 49 * 3600
# dagster-celery's own transport defaults (connection retries), which config_source replaces whole.
_TRANSPORT_RETRIES = {"max_retries": 3, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}


def executor_from_env() -> dg.ExecutorDefinition | None:
    """The executor SWAPLINE_EXECUTOR names (read when the definitions are built); None when
    unset, which leaves Dagster's default in place."""
    choice = os.environ.get(EXECUTOR_ENV, "").strip().lower()
    if not choice:
        return None
    if choice == "in_process":
        return dg.in_process_executor
    if choice == "multiprocess":
        return dg.multiprocess_executor
    if choice == "celery":
        return celery_executor_def()
    raise ValueError(f"{EXECUTOR_ENV}={choice!r}: expected one of {', '.join(CHOICES)}")


def celery_executor_def() -> dg.ExecutorDefinition:
    from dagster_celery import celery_executor  # only deployments that pick Celery import it

    return celery_executor.configured(celery_config())


def celery_config() -> dict[str, Any]:
    """The Celery executor's config, which is also the workers' `-y` file (`execution.config`),
    so both ends agree on broker, backend and transport options. URLs stay references to their
    environment variables, resolved where a run starts or a worker starts: Dagster refuses
    dg.EnvVar objects in a config-schema executor's config, `{"env": NAME}` is the same there."""
    if not os.environ.get(BROKER_ENV):
        raise ValueError(f"{EXECUTOR_ENV}=celery needs {BROKER_ENV}, the broker URL (e.g. redis://host:6379/0)")
    backend = BACKEND_ENV if os.environ.get(BACKEND_ENV) else BROKER_ENV
    transport = {**_TRANSPORT_RETRIES, "visibility_timeout": VISIBILITY_TIMEOUT_S}
    return {"broker": {"env": BROKER_ENV}, "backend": {"env": backend},
            "config_source": {"broker_transport_options": transport}}


def worker_yaml() -> str:
    """What `dagster-celery worker start -y` reads: the executor's config under `execution.config`."""
    import yaml

    return yaml.safe_dump({"execution": {"config": celery_config()}}, sort_keys=False)


def run_assets(keys: list[str], partition: str | None = None, log_level: str | None = None) -> tuple[str, bool]:
    """One run of these assets (of one partitions definition) and partition of the project
    $SWAPLINE_PROJECT names, launched as `swapline run` launches its runs (swapline/jobs.py)
    through the instance at $DAGSTER_HOME, executed by the configured executor; (run id,
    success). Concurrent runs need a process each: Dagster sets up a run's loggers under locks
    that two runs in one process can deadlock on."""
    from swapline.jobs import execute, project_graph  # jobs builds the assets, which import this module
    from swapline.project import load_project, project_path

    project = load_project(project_path())
    asset_keys = [dg.AssetKey.from_user_string(k) for k in keys]
    graph = project_graph(project)
    names = {graph[key].partitions for key in asset_keys}
    if len(names) != 1:
        raise ValueError(f"one run holds one partitions definition; {keys} span {len(names)}")
    with dg.DagsterInstance.get() as instance:
        run_id = execute(project, instance, names.pop(), asset_keys, partition, tags={}, log_level=log_level or "INFO")
        return run_id, instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m swapline.executors")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("worker-yaml", help="print the Celery workers' -y file")
    run = commands.add_parser("run", help="run these assets through $DAGSTER_HOME's instance; prints the run id")
    run.add_argument("keys", nargs="+", help="asset keys, e.g. anna/source_media anna/frames")
    run.add_argument("--partition")
    run.add_argument("--log-level", help="of the run's console log (default: Dagster's, DEBUG)")
    args = parser.parse_args(argv)
    if args.command == "worker-yaml":
        print(worker_yaml(), end="")
        return 0
    run_id, success = run_assets(args.keys, args.partition, args.log_level)
    print(f"{run_id} {'SUCCESS' if success else 'FAILURE'}")
    return 0 if success else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
