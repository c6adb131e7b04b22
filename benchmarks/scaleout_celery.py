"""Scale-out on Celery: the extraction of two identities on two Celery workers against one, on
this machine, in the same invocation; and what one Celery step costs over the in-process executor.

- Extraction: source_media, frames and aligned_faces of one video partition per identity, one run
  per identity, both launched at once (each from its own process, as the daemon launches runs).
  Each identity's clip is the demo's longest clip played `--loops` times, ben's mirrored, every
  pass a little brighter: the same work for both, and nothing the face cache (keyed by pixels)
  could reuse. Each measurement starts from an empty artifact store and instance; the workers
  are single-threaded (-P threads -c 1, OMP/BLAS/OpenCV threads 1). Wall time: first RUN_START
  to last RUN_SUCCESS (process start-up excluded); the best of `--repeats`.
- Per-step overhead: a chain of no-op assets, in-process against Celery (one worker), divided by
  its length: what each Celery step adds (its 1 s poll tick, the broker round trip, the worker
  rebuilding the job).

    python -m benchmarks.scaleout_celery [--sample-fps 20] [--loops 3] [--repeats 1]

Needs redis-server (tests/services.py starts a throwaway one). Prints human-readable lines, then
one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import dagster as dg
import yaml

from swapline.executors import BROKER_ENV, CPU_QUEUE, EXECUTOR_ENV, celery_executor_def, worker_yaml
from tests.conftest import CONSENT
from tests.services import celery_worker, redis_missing, redis_server

REPO = Path(__file__).resolve().parents[1]
CLIP = REPO / "demo" / "media" / "WolfgangLanger_Pexels.mp4"
CHAIN = ("source_media", "frames", "aligned_faces")
NOOP_STEPS = 6
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _noop_asset(i: int) -> dg.AssetsDefinition:
    @dg.asset(name=f"noop_{i}", deps=[f"noop_{i - 1}"] if i else [])
    def step() -> dg.MaterializeResult:
        return dg.MaterializeResult()

    return step


NOOPS = [_noop_asset(i) for i in range(NOOP_STEPS)]


def noop_chain(executor: str) -> dg.JobDefinition:
    """NOOP_STEPS no-op assets in a chain on the named executor (the workers rebuild it)."""
    chosen = celery_executor_def() if executor == "celery" else dg.in_process_executor
    job = dg.define_asset_job("noop_chain", selection=NOOPS)
    return dg.Definitions(assets=NOOPS, jobs=[job], executor=chosen).resolve_job_def("noop_chain")


def clip(src: Path, dst: Path, loops: int, flip: bool) -> Path:
    """`src` played `loops` times, each pass brightened a little more (and flipped left-right for
    the second identity): the same decoding and detection work per pass, never the same pixels,
    so the content-keyed face cache finds nothing to reuse, within a clip or across the two."""
    import av
    import numpy as np

    with av.open(str(dst), "w") as out:
        stream = None
        for loop in range(loops):
            with av.open(str(src)) as inp:
                if stream is None:
                    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
                    stream = out.add_stream(codec, rate=inp.streams.video[0].average_rate)
                    stream.width, stream.height, stream.pix_fmt = inp.streams.video[0].width, inp.streams.video[0].height, "yuv420p"
                for frame in inp.decode(video=0):
                    rgb = frame.to_ndarray(format="rgb24")
                    rgb = np.clip(rgb.astype(np.int16) + 3 * loop, 0, 255).astype(np.uint8)
                    out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:, ::-1] if flip else rgb), format="rgb24")))
        out.mux(stream.encode())
    return dst


def write_project(root: Path, sample_fps: float, loops: int) -> Path:
    """Two identities, one generated clip each; every sampled frame analysed (skip_similar 0), one
    detection process per step (workers 1), so a step's work is known and single-threaded."""
    clips = {who: clip(CLIP, root / f"{who}.mp4", loops, flip=(who == "ben")) for who in ("anna", "ben")}
    data = {"identities": {who: {"consent": CONSENT, "sources": [{"video": str(path)}]} for who, path in clips.items()},
            "extraction": {"backend": "dlib", "workers": 1, "sample_fps": sample_fps, "skip_similar": 0}}
    path = root / "swapline.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def fresh_homes(root: Path) -> None:
    """An empty artifact store and instance (one slot per pool, as swapline's own) for this process."""
    for name in ("DAGSTER_HOME", "SWAPLINE_HOME"):
        os.environ[name] = tempfile.mkdtemp(prefix=name.lower() + "-", dir=root)
    config = {"concurrency": {"pools": {"default_limit": 1}}, "telemetry": {"enabled": False}}
    (Path(os.environ["DAGSTER_HOME"]) / "dagster.yaml").write_text(yaml.safe_dump(config))


def run_span(instance: dg.DagsterInstance, run_ids: list[str]) -> float:
    records = instance.get_run_records(dg.RunsFilter(run_ids=run_ids))
    assert all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in records), [r.dagster_run.status for r in records]
    return max(r.end_time for r in records) - min(r.start_time for r in records)


def step_seconds(instance: dg.DagsterInstance, run_ids: list[str]) -> dict[str, float]:
    """Each step's own duration (STEP_START to STEP_SUCCESS), by run-qualified step key."""
    out: dict[str, float] = {}
    for run_id in run_ids:
        starts = {}
        for e in instance.all_logs(run_id, of_type={dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS}):
            if e.dagster_event.event_type == dg.DagsterEventType.STEP_START:
                starts[e.step_key] = e.timestamp
            else:
                out[e.step_key] = round(e.timestamp - starts[e.step_key], 2)
    return out


def extraction(workers: int, root: Path, project: Path, config_yaml: Path, env: dict[str, str]) -> dict:
    """Both identities' extraction on `workers` single-threaded Celery workers."""
    from contextlib import ExitStack

    from swapline.assets.automation import observe_sources, sync_partitions
    from swapline.project import load_project

    fresh_homes(root)
    loaded = load_project(project)
    with ExitStack() as stack, dg.DagsterInstance.get() as instance:
        for i in range(workers):
            stack.enter_context(celery_worker(f"bench{workers}-{i}", (CPU_QUEUE,), config_yaml,
                                              Path(tempfile.mkdtemp(prefix="worker-", dir=root)), env))
        sync_partitions(loaded, instance)
        observe_sources(loaded, instance)
        run_ids = launch_together([([f"{who}/{s}" for s in CHAIN], next(iter(loaded.source_keys(who)))) for who in loaded.identities])
        return {"seconds": round(run_span(instance, run_ids), 2), "steps": step_seconds(instance, run_ids),
                "workers": workers_by_step(instance, run_ids)}


def launch_together(runs: list[tuple[list[str], str]]) -> list[str]:
    """One process per run (two runs starting in one process can deadlock in Dagster's logging
    setup), each past its imports and job build before a shared start line, so that process
    start-up under load does not stagger the runs."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(len(runs)), context.Queue()
    processes = [context.Process(target=_run_at_start_line, args=(keys, partition, barrier, results)) for keys, partition in runs]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=900) for _ in processes]
    for process in processes:
        process.join(60)
    if not all(success for _, success in outcomes):
        raise RuntimeError(f"an extraction run failed: {outcomes}")
    return [run_id for run_id, _ in outcomes]


def _run_at_start_line(keys: list[str], partition: str, barrier, results) -> None:
    from swapline.executors import run_assets
    from swapline.jobs import project_graph
    from swapline.project import load_project, project_path

    quiet_celery_warning()
    project_graph(load_project(project_path()))  # imports and a first build before the start line
    barrier.wait()
    results.put(run_assets(keys, partition, log_level="WARNING"))


def quiet_celery_warning() -> None:
    """dagster-celery registers its task again on every submission; Celery warns each time."""
    warnings.filterwarnings("ignore", message="Task name 'execute_plan' is already registered")


def workers_by_step(instance: dg.DagsterInstance, run_ids: list[str]) -> dict[str, str]:
    """Which Celery worker ran each step (dagster-celery's engine event names it)."""
    return {e.step_key: e.dagster_event.engine_event_data.metadata["Celery worker"].value.split("@")[0]
            for run_id in run_ids for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
            if "Celery worker" in e.dagster_event.engine_event_data.metadata}


def noop_overhead(root: Path, config_yaml: Path, env: dict[str, str], steps: int = NOOP_STEPS) -> dict:
    """Seconds per step a Celery step adds over in-process, from a chain of no-op steps."""
    fresh_homes(root)
    job = {name: dg.build_reconstructable_job("benchmarks.scaleout_celery", "noop_chain", (name,)) for name in ("in_process", "celery")}
    with dg.DagsterInstance.get() as instance, \
            celery_worker("bench-noop", (CPU_QUEUE,), config_yaml, Path(tempfile.mkdtemp(prefix="worker-", dir=root)), env):
        seconds = {}
        for name in ("in_process", "celery", "in_process", "celery"):  # the second of each counts: imports warm
            result = dg.execute_job(job[name], instance=instance, run_config=QUIET)
            seconds[name] = run_span(instance, [result.run_id])
    return {"in_process_s": round(seconds["in_process"], 2), "celery_s": round(seconds["celery"], 2),
            "per_step_overhead_s": round((seconds["celery"] - seconds["in_process"]) / steps, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample-fps", type=float, default=20.0)
    parser.add_argument("--loops", type=int, default=3, help="passes of the demo clip per identity: the work per step")
    parser.add_argument("--repeats", type=int, default=1, help="measure each worker count this many times; the best counts")
    args = parser.parse_args()
    quiet_celery_warning()
    if reason := redis_missing():
        sys.exit(f"scaleout_celery: {reason}")
    with tempfile.TemporaryDirectory(prefix="swapline-scaleout-") as tmp:
        root = Path(tmp)
        project = write_project(root, args.sample_fps, args.loops)
        with redis_server(root / "redis") as broker:
            env = {"SWAPLINE_PROJECT": str(project), EXECUTOR_ENV: "celery", BROKER_ENV: broker, "PYTHONPATH": str(REPO),
                   # single-threaded workers: no library may spread one step over the cores
                   "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENCV_FOR_THREADS_NUM": "1"}
            os.environ.update(env)
            config_yaml = root / "celery.yaml"
            config_yaml.write_text(worker_yaml())
            # SWAPLINE_HOME is per measurement: the workers take it from this process's environment.
            started = time.perf_counter()
            best = {}
            for workers in [1, 2] * args.repeats:
                got = extraction(workers, root, project, config_yaml, env)
                print(f"extraction of 2 identities, {workers} worker(s): {got['seconds']:.1f}s; steps {got['steps']} on {got['workers']}")
                if workers not in best or got["seconds"] < best[workers]["seconds"]:
                    best[workers] = got
            one, two = best[1], best[2]
            overhead = noop_overhead(root, config_yaml, env)
            print(f"{NOOP_STEPS} chained no-op steps: in-process {overhead['in_process_s']:.2f}s, "
                  f"Celery {overhead['celery_s']:.2f}s: {overhead['per_step_overhead_s']:.2f}s more per step")
    ratio = round(two["seconds"] / one["seconds"], 3)
    print(f"2 workers take {ratio:.2f} of 1 worker's time (aim <= 0.6); whole benchmark {time.perf_counter() - started:.0f}s")
    print(json.dumps({"celery_2_over_1_workers": ratio, "extraction_1_worker_s": one["seconds"],
                      "extraction_2_workers_s": two["seconds"], "celery_step_overhead_s": overhead["per_step_overhead_s"],
                      "noop_chain": {"steps": NOOP_STEPS, **overhead}, "sample_fps": args.sample_fps, "loops": args.loops, "repeats": args.repeats,
                      "cpus": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
