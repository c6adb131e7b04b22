"""Recovery after a crash, as a user meets it: how long until training carries on by itself.

1. `swapline run` builds a small project (the two demo clips, a swap whose runs train for
   `--budget` seconds each), plus an identity with `--photos` photos for the status timing.
2. `swapline status` is timed (it now looks at every source's files and at dead runs).
3. A second `swapline run` is killed with SIGKILL (supervisor and worker) after its first work
   checkpoint; `swapline refresh` is timed up to the moment training resumes from it (the
   "resuming from" line in the run's log), and to its end.
4. The same kill, then `dagster dev` (what `./dev ui` runs) is started on the home: timed up to
   the moment a run launched by the automation resumes the training, with nobody typing anything.

    python -m benchmarks.recovery [--photos 1000] [--budget 6] [--skip-ui]

Prints human-readable lines, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.incremental_extract import CONSENT, demo_frames, write_photos

REPO = Path(__file__).resolve().parents[1]
RESUMED = "(resuming from"


def swapline(*args: str) -> list[str]:
    return [sys.executable, "-m", "swapline.cli", *args]


def project_file(root: Path, media: Path, photos: int, budget: float) -> Path:
    identities = {
        "anna": {"consent": CONSENT, "sources": [{"video": str(media / "WolfgangLanger_Pexels.mp4")}]},
        "ben": {"consent": CONSENT, "sources": [{"video": str(media / "single_face.mp4")}]},
    }
    if photos:
        (root / "carl").mkdir()
        write_photos(demo_frames(), root / "carl", photos, 0, "carl")
        identities["carl"] = {"consent": CONSENT, "sources": [{"photos": str(root / "carl")}]}
    data = {"identities": identities,
            "swaps": {"ab": {"a": "anna", "b": "ben", "resolution": 64, "preset": "lite", "iterations": 10**6,
                             "batch_size": 8, "max_minutes": budget / 60, "checkpoint_minutes": 0.02}},
            "extraction": {"sample_fps": 6, "face_size": 96, "max_frames": 24}, "checks": {"min_faces": 5}}
    path = root / "swapline.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def kill_during_training(path: Path, pointer: Path) -> None:
    """Start `swapline run`, wait for a new work checkpoint, SIGKILL it and its worker."""
    import dagster as dg

    from swapline.liveness import LIVE_STATUSES, PID_TAG

    before = pointer.read_text() if pointer.exists() else ""
    proc = subprocess.Popen(swapline("run", "--project", str(path)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not pointer.exists() or pointer.read_text() == before:
        if proc.poll() is not None:
            raise SystemExit("swapline run ended before training wrote a checkpoint")
        time.sleep(0.1)
    with dg.DagsterInstance.get() as instance:
        (record,) = [r for r in instance.get_run_records(dg.RunsFilter(statuses=LIVE_STATUSES)) if PID_TAG in r.dagster_run.tags]
        proc.kill()
        os.kill(int(record.dagster_run.tags[PID_TAG]), signal.SIGKILL)
    proc.wait()


def resumed_at(instance, after: float) -> float | None:
    """Time of the first "resuming from" log line of a run created after `after`."""
    import dagster as dg

    for record in instance.get_run_records(dg.RunsFilter(created_after=_dt(after))):
        for entry in instance.all_logs(record.dagster_run.run_id):
            if not entry.is_dagster_event and RESUMED in entry.user_message:
                return entry.timestamp
    return None


def _dt(epoch: float):
    from datetime import datetime, timezone

    return datetime.fromtimestamp(epoch, tz=timezone.utc)


def time_refresh(path: Path) -> dict:
    import dagster as dg

    start = time.time()
    proc = subprocess.Popen(swapline("refresh", "--project", str(path)), stdout=subprocess.PIPE, text=True)
    first = None
    with dg.DagsterInstance.get() as instance:
        while proc.poll() is None:
            first = first or resumed_at(instance, start)
            time.sleep(0.2)
        first = first or resumed_at(instance, start)
    out = proc.stdout.read()
    if proc.returncode != 0:
        raise SystemExit(f"refresh failed:\n{out}")
    return {"to_resumed_training_s": round(first - start, 1) if first else None, "total_s": round(time.time() - start, 1)}


def time_dagster_dev(path: Path, timeout: float = 600) -> dict:
    import dagster as dg

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "SWAPLINE_PROJECT": str(path)}
    start = time.time()
    dev = subprocess.Popen([str(Path(sys.executable).parent / "dagster"), "dev", "-h", "127.0.0.1", "-p", str(port),
                            "-w", "workspace.yaml"], cwd=REPO, env=env, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with dg.DagsterInstance.get() as instance:
            while time.time() - start < timeout:
                if first := resumed_at(instance, start):
                    return {"to_resumed_training_s": round(first - start, 1)}
                time.sleep(1)
        return {"to_resumed_training_s": None}
    finally:
        os.killpg(dev.pid, signal.SIGTERM)
        try:
            dev.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument("--budget", type=float, default=6.0, help="seconds of training per run")
    parser.add_argument("--skip-ui", action="store_true", help="leave out the dagster dev restart")
    args = parser.parse_args()
    from swapline.demo_media import fetch
    from swapline.ops.storage import ArtifactStore
    from swapline.ops.workdir import POINTER

    root = Path(tempfile.mkdtemp(prefix="swapline-recovery-"))
    os.environ.update(DAGSTER_HOME=str(root / "dagster_home"), SWAPLINE_HOME=str(root / "artifacts"))
    path = project_file(root, fetch(), args.photos, args.budget)
    pointer = ArtifactStore(root / "artifacts").location("ab", "face_model", "_work") / POINTER
    start = time.time()
    subprocess.run(swapline("run", "--project", str(path)), check=True, stdout=subprocess.DEVNULL)
    result: dict = {"photos": args.photos, "build_s": round(time.time() - start, 1)}
    print(f"built in {result['build_s']} s ({args.photos} photos for carl)")

    timings = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run(swapline("status", "--project", str(path)), check=True, stdout=subprocess.DEVNULL)
        timings.append(round(time.perf_counter() - t0, 2))
    result["status_s"] = timings
    print(f"swapline status: {timings} s (each a fresh process: Python, Dagster and the definitions load too)")

    kill_during_training(path, pointer)
    result["refresh_after_kill"] = time_refresh(path)
    print(f"after kill -9: refresh resumed training after {result['refresh_after_kill']['to_resumed_training_s']} s, "
          f"done in {result['refresh_after_kill']['total_s']} s")
    if not args.skip_ui:
        kill_during_training(path, pointer)
        result["dagster_dev_after_kill"] = time_dagster_dev(path)
        print(f"after kill -9: dagster dev resumed training by itself after "
              f"{result['dagster_dev_after_kill']['to_resumed_training_s']} s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
