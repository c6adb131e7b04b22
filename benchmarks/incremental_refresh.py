"""Incremental refresh by the automation: 10 new photos for an identity of ~1,000 photo faces.

Everything runs as `dagster dev` runs it, driven in-process (swapline.daemon) so each step can be
timed: the sync sensor's partitions, the source watch's observations, automation ticks
(`evaluate_automation_conditions` on the real conditions) and one `dg.materialize` per run the
daemon would launch (a source's stages together; the unpartitioned assets together). Measured is
the work (ticks and runs, in one warmed-up process), not the sensors' intervals (60 s, 30 s) nor
the few seconds each run's fresh process costs under `dagster dev`.

1. full: anna's ~1,000 photos (made from the demo clips' frames, benchmarks.incremental_extract)
   in one photo folder, from an empty instance and an empty cache, until her faceset is built.
2. incremental: 10 new photos in the folder; the watch observes them, the automation requests,
   runs until her faceset is fresh again. Ratio: incremental / full (aim: below 5%). The ticks'
   requests and runs are listed, and every (asset, partition) materialized in between.
3. the model: ben (60 photos) and a swap anna_ben are added to the project (a new identity: the
   code location is reloaded); the automation builds ben and trains the swap. Then 10 more photos
   for anna: the refresh ends with the model resuming from its checkpoint (steps reported).

    python -m benchmarks.incremental_refresh [--photos 1000] [--added 10] [--iterations 40]

Prints human-readable lines, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.incremental_extract import CLIPS, CONSENT, demo_frames, latest_metadata, step_seconds, write_photos


def refresh(daemon, instance, until: set[str] | None = None) -> dict:
    """One refresh as the daemon does it: a source-watch tick, then automation ticks and their runs
    until a tick requests nothing, or (`until`) until the tick that built those assets. Timed as a
    whole, then split into watching, evaluating and runs; the next tick's requests (untimed) show
    whether anything was left to do."""
    from swapline.daemon import describe, materialization_counts

    before, runs_before = materialization_counts(instance), {r.run_id for r in instance.get_runs()}
    start = time.perf_counter()
    observations = daemon.watch()
    watched = time.perf_counter() - start
    ticks = daemon.settle(until=until)
    seconds = time.perf_counter() - start
    failed = [run for tick in ticks for run in tick.runs if not run["success"]]
    if failed:
        raise SystemExit(f"automation runs failed: {failed}\n{describe(ticks)}")
    runs = sum(run["seconds"] for tick in ticks for run in tick.runs)
    changed = materialization_counts(instance) - before
    return {
        "seconds": round(seconds, 2),
        "breakdown": {"watch": round(watched, 2), "evaluate": round(seconds - watched - runs, 2), "runs": round(runs, 2)},
        "observed": sorted(f"{e.asset_key.to_user_string()}[{e.partition}]" for e in observations),
        "ticks": [{"requested": [f"{k}[{p}]" if p else k for k, p in t.requested], "runs": t.runs, "seconds": t.seconds}
                  for t in ticks],
        "materialized": sorted(f"{k}[{p}]" if p else k for k, p in changed),
        "next_tick_requested": daemon.evaluate() if until else [],
        "step_seconds": step_seconds(instance, {r.run_id for r in instance.get_runs()} - runs_before),
        "lines": describe(ticks).splitlines(),
    }


def warm_up(folder: Path, frames) -> None:
    """The same automation over 3 photos in a throwaway home and instance, first: imports and model
    loads are then paid before the full build is timed, as they are before the refresh (both
    measure the work; under `dagster dev` every run is a fresh process and pays them each time)."""
    import dagster as dg

    from swapline.assets.automation import sync_partitions
    from swapline.daemon import InProcessDaemon

    write_photos(frames, folder / "photos", 3, seed=9, prefix="w")
    os.environ["SWAPLINE_HOME"] = str(folder / "artifacts")
    project = write(folder / "swapline.yaml", {"identities": {"warm": {"consent": CONSENT, "sources": [{"photos": "photos"}]}},
                                               "extraction": {"backend": "dlib"}, "checks": {"min_faces": 1}})
    with dg.DagsterInstance.ephemeral() as instance:
        sync_partitions(project, instance)
        refresh(InProcessDaemon(folder / "swapline.yaml", instance), instance)


def write(project_file: Path, data: dict):
    from swapline.project import load_project

    project_file.write_text(yaml.safe_dump(data))
    return load_project(project_file)


def main(argv: list[str] | None = None) -> dict:
    import dagster as dg

    from swapline.assets.automation import sync_partitions
    from swapline.daemon import InProcessDaemon

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument("--added", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=40, help="training steps per model run (lite, 64 px)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="swapline-refresh-") as tmp:
        tmp = Path(tmp)
        frames = demo_frames()
        (tmp / "warm").mkdir()
        warm_up(tmp / "warm", frames)
        os.environ["SWAPLINE_HOME"] = str(tmp / "artifacts")
        write_photos(frames, tmp / "anna_photos", args.photos, seed=0, prefix="p")
        data = {"identities": {"anna": {"consent": CONSENT, "sources": [{"photos": "anna_photos"}]}},
                "extraction": {"backend": "dlib"}, "checks": {"min_faces": 5}}
        project_file = tmp / "swapline.yaml"
        project = write(project_file, data)
        print(f"{args.photos} photos from {len(frames)} frames of {', '.join(CLIPS)}; "
              f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")

        with dg.DagsterInstance.ephemeral() as instance:
            daemon = InProcessDaemon(project_file, instance)
            daemon.evaluate()  # the automation's first tick on an empty instance: nothing yet
            sync_partitions(project, instance)  # the sync sensor's requests, as the daemon applies them
            full = refresh(daemon, instance, until={"anna/faceset"})
            faces, kept = latest_metadata(instance, dg.AssetKey(["anna", "aligned_faces"])), \
                latest_metadata(instance, dg.AssetKey(["anna", "faceset"]))
            print(f"full: {full['seconds']} s ({full['breakdown']}), {faces['detections_run']} detections, {faces['faces']} faces, "
                  f"faceset {kept['kept']}\n  " + "\n  ".join(full["lines"]))

            write_photos(frames, tmp / "anna_photos", args.added, seed=1, prefix="new")
            incr = refresh(daemon, instance, until={"anna/faceset"})
            faces_incr = latest_metadata(instance, dg.AssetKey(["anna", "aligned_faces"]))
            frames_incr = latest_metadata(instance, dg.AssetKey(["anna", "frames"]))
            print(f"incremental (+{args.added} photos): {incr['seconds']} s ({incr['breakdown']}), observed "
                  f"{incr['observed']}, {faces_incr['detections_run']} detections, {faces_incr['cache_hits']} cache hits\n  "
                  + "\n  ".join(incr["lines"]) + f"\n  materialized: {incr['materialized']}"
                  f"\n  the next tick requests: {incr['next_tick_requested'] or 'nothing'}")

            # The model: a second identity and a swap (a reload), then new photos again.
            write_photos(frames, tmp / "ben_photos", 60, seed=2, prefix="b")
            data["identities"]["ben"] = {"consent": CONSENT, "sources": [{"photos": "ben_photos"}]}
            data["swaps"] = {"anna_ben": {"a": "anna", "b": "ben", "iterations": args.iterations, "batch_size": 8}}
            sync_partitions(write(project_file, data), instance)
            daemon.reload()
            first = refresh(daemon, instance)
            trained = latest_metadata(instance, dg.AssetKey(["anna_ben", "face_model"]))
            print(f"ben and anna_ben added: {first['seconds']} s; model trained {trained['steps_this_run']} steps "
                  f"to step {trained['step']}\n  " + "\n  ".join(first["lines"]))

            write_photos(frames, tmp / "anna_photos", args.added, seed=3, prefix="more")
            resumed_refresh = refresh(daemon, instance)
            resumed = latest_metadata(instance, dg.AssetKey(["anna_ben", "face_model"]))
            start_step = resumed["step"] - resumed["steps_this_run"]
            print(f"+{args.added} more photos of anna: {resumed_refresh['seconds']} s; the model resumed at step "
                  f"{start_step} and ran {resumed['steps_this_run']} steps to {resumed['step']}\n  "
                  + "\n  ".join(resumed_refresh["lines"]))

    ratio = incr["seconds"] / full["seconds"]
    print(f"incremental / full = {ratio:.4f} ({100 * ratio:.1f}%)")
    result = {
        "photos": args.photos, "added": args.added, "cores": os.cpu_count(),
        "faces": faces["faces"], "faceset_kept": kept["kept"],
        "full_seconds": full["seconds"], "incremental_seconds": incr["seconds"], "ratio": round(ratio, 4),
        "full_detections_run": faces["detections_run"], "incremental_detections_run": faces_incr["detections_run"],
        "incremental_cache_hits": faces_incr["cache_hits"], "photos_reused": frames_incr["photos_reused"],
        "full": {k: full[k] for k in ("breakdown", "ticks", "step_seconds")},
        "incremental": {k: incr[k] for k in ("breakdown", "observed", "ticks", "materialized", "next_tick_requested",
                                             "step_seconds")},
        "model": {
            "iterations": args.iterations, "first_steps": trained["steps_this_run"], "first_step": trained["step"],
            "resume_start_step": start_step, "resume_steps_this_run": resumed["steps_this_run"],
            "resume_step": resumed["step"], "resume_train_seconds": resumed["train_seconds"],
            "refresh_seconds": resumed_refresh["seconds"],
            "refresh": {k: resumed_refresh[k] for k in ("observed", "ticks", "materialized", "step_seconds")},
        },
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":  # the guard matters: extraction workers are spawned and re-import __main__
    main()
