"""The face_model path at ~5,000 faces a side: time outside the training steps and peak memory.

Builds two facesets of real 256 px faces (the demo clips' aligned crops, each copy nudged in
brightness and position so every PNG differs) published in an artifact store with their
embedding sample, as the faceset asset leaves them. Then runs, each in a fresh process so its
RSS high-water mark (VmHWM: anonymous and file-backed pages) is its own, what face_model does:
open both decoded facesets (ops.trainset), pick the training rows, train a few steps (the rows
read from the memory maps onto the device), evaluate on the held-out faces. Once with the
decoded cache cold (a first run) and once warm (a resumed run: same work dir).

    python -m benchmarks.faceset_scale [--faces 5000] [--faces-b 5000] [--steps 4] [--device cpu]
        [--resolution 64] [--keep DIR]

outside_training_s = opening the facesets + reading the training rows onto the device (inside
train(), before its first step) + evaluation. Aims: under 20 s and 3 GB at ~5,000 faces.
Human lines, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

SIDES = ("a", "b")


def _seed_records(clip: Path, frames: range) -> list:
    """Real face records (256 px crops) of sampled frames of one demo clip."""
    from swapline.ops.faces import FaceAnalyzer
    from swapline.ops.facetable import extract_from_image
    from tests.conftest import video_frames

    analyzer, out = FaceAnalyzer(), []
    for index, frame in sorted(video_frames(clip, list(frames)).items()):
        out += extract_from_image(analyzer, frame, identity="x", source="bench", source_sha="0" * 64,
                                  frame_index=index, timestamp=0.0)[0][:1]
    return out


def _variant(record, i: int, identity: str):
    """Copy i of a face: brightness +-6 and a sub-pixel shift, so its PNG is its own."""
    import cv2

    from swapline.ops.facetable import encode_png, face_id

    rng = np.random.default_rng(i)
    shift = np.float32([[1, 0, rng.uniform(-1, 1)], [0, 1, rng.uniform(-1, 1)]])
    crop = cv2.warpAffine(record.image, shift, record.image.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)
    crop = np.clip(crop.astype(np.int16) + int(rng.integers(-6, 7)), 0, 255).astype(np.uint8)  # (S, S, 3)
    return replace(record, image=encode_png(crop), identity=identity, frame_index=i, face_id=face_id(identity, i, 0))


def _publish_faceset(store, identity: str, seeds: list, n: int) -> Path:
    """A faceset of n faces published like the faceset asset does: parquet + embedding sample."""
    from concurrent.futures import ThreadPoolExecutor

    from swapline.ops.faces import FaceAnalyzer
    from swapline.ops.facetable import read_faces, write_faces
    from swapline.ops.identity import sample_embeddings, write_embeddings

    with ThreadPoolExecutor(os.cpu_count()) as pool:  # PNG encoding releases the GIL
        records = list(pool.map(lambda i: _variant(seeds[i % len(seeds)], i, identity), range(n)))

    def build(tmp: Path) -> None:
        write_faces(tmp / "faceset.parquet", records)
        ids, embeddings = sample_embeddings(FaceAnalyzer(), read_faces(tmp / "faceset.parquet"),
                                            cache_dir=store.location("_cache", "embeddings"))
        write_embeddings(tmp, ids, embeddings)

    return store.publish(store.location(identity, "faceset"), build).path


def _child(args) -> dict:
    """One face_model run as the asset does it; timings and VmHWM of this process."""
    import torch

    import swapline.ops.train as train_module
    from swapline.ops.evaluate import evaluate, split_holdout
    from swapline.ops.faces import FaceAnalyzer
    from swapline.ops.model import ModelConfig
    from swapline.ops.train import TrainConfig, train
    from swapline.ops.trainset import at_resolution, open_faceset

    torch.set_num_threads(os.cpu_count() or 1)
    timings = {"to_device_s": 0.0}
    side_data = train_module._side_data

    def timed_side_data(*a, **kw):  # the rows read from the maps onto the device, inside train()
        start = time.perf_counter()
        result = side_data(*a, **kw)
        timings["to_device_s"] += time.perf_counter() - start
        return result

    train_module._side_data = timed_side_data
    sets, work = json.loads(args.child), Path(args.work)
    start = time.perf_counter()
    data = {side: open_faceset(Path(sets[side])) for side in SIDES}
    rows = {side: split_holdout(len(data[side]))[0] for side in SIDES}
    sized = {side: at_resolution(data[side], args.resolution) for side in SIDES}  # as face_model does
    timings["open_s"] = time.perf_counter() - start
    start = time.perf_counter()
    result = train(sized["a"][0], sized["b"][0], sized["a"][1], sized["b"][1], ModelConfig(resolution=args.resolution),
                   TrainConfig(iterations=args.target, batch_size=16, checkpoint_minutes=0, log_every=args.steps), args.device,
                   checkpoint_dir=work / "checkpoint", work_dir=work / "_work", index_a=rows["a"], index_b=rows["b"])
    timings["train_call_s"] = time.perf_counter() - start
    start = time.perf_counter()
    report = evaluate(work / "checkpoint", Path(sets["a"]), Path(sets["b"]), FaceAnalyzer(), args.device,
                      cache_dir=work / "embeddings")  # the store's embedding cache, as face_model passes it
    timings["evaluate_s"] = time.perf_counter() - start
    timings["outside_training_s"] = timings["open_s"] + timings["to_device_s"] + timings["evaluate_s"]
    status = Path("/proc/self/status").read_text()
    peak_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
    return {**{k: round(v, 2) for k, v in timings.items()}, "steps": result.step - result.start_step,
            "resumed": result.resumed_from is not None, "faces": {s: len(data[s]) for s in SIDES},
            "held_out": report["held_out"], "judged": report["judged"], "peak_rss_gb": round(peak_kb / 2**20, 2)}


def _run_child(args, sets: dict, work: Path, target: int) -> dict:
    command = [sys.executable, "-m", "benchmarks.faceset_scale", "--child", json.dumps(sets), "--work", str(work),
               "--target", str(target), "--steps", str(args.steps), "--device", args.device,
               "--resolution", str(args.resolution)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"face_model run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faces", type=int, default=5000)
    parser.add_argument("--faces-b", type=int, default=5000)
    parser.add_argument("--steps", type=int, default=4, help="training steps per run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--keep", type=Path, help="build the store here (and keep it) instead of a temp folder")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--target", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args)))
        return None
    return _parent(args)


def _parent(args) -> dict:
    from swapline.demo_media import fetch
    from swapline.ops.storage import ArtifactStore

    root = args.keep or Path(tempfile.mkdtemp(prefix="faceset_scale-"))
    store, media = ArtifactStore(root), fetch()
    start = time.perf_counter()
    seeds = {"a": _seed_records(media / "WolfgangLanger_Pexels.mp4", range(0, 472, 8)),
             "b": _seed_records(media / "single_face.mp4", range(0, 72, 2)) + _seed_records(media / "face_noface.mov", range(0, 169, 4))}
    sets = {side: str(_publish_faceset(store, f"bench{side}", seeds[side], n))
            for side, n in (("a", args.faces), ("b", args.faces_b))}
    print(f"built facesets of {args.faces} + {args.faces_b} faces (256 px, from {len(seeds['a'])} + {len(seeds['b'])} "
          f"real crops) in {time.perf_counter() - start:.0f} s under {root}")
    work = root / "model"
    runs = {"cold": _run_child(args, sets, work, args.steps), "warm_resumed": _run_child(args, sets, work, 2 * args.steps)}
    for name, run in runs.items():
        print(f"{name:13s} open {run['open_s']:.1f} s + rows to device {run['to_device_s']:.1f} s + evaluate "
              f"{run['evaluate_s']:.1f} s = {run['outside_training_s']:.1f} s outside training "
              f"(train() {run['train_call_s']:.1f} s for {run['steps']} steps, resumed {run['resumed']}); "
              f"peak RSS {run['peak_rss_gb']:.2f} GB")
    result = {"benchmark": "faceset_scale", "device": args.device, "resolution": args.resolution, "faces": runs["cold"]["faces"],
              "steps": args.steps, "runs": runs,
              "aims": {f"{name}_{aim}": ok for name, run in runs.items()
                       for aim, ok in (("under_20s", run["outside_training_s"] < 20), ("under_3gb", run["peak_rss_gb"] < 3))}}
    print("aims: " + "; ".join(f"{aim} {'met' if ok else 'MISSED'}" for aim, ok in result["aims"].items()))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
