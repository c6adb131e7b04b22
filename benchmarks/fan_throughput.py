"""FAN landmark throughput: crops per second fed in batches vs one at a time.

Runs anywhere: randomly initialised FAN-4 weights are written to a temporary hub folder
(speed does not depend on the weights' values), so no download and no real weights needed.

    python -m benchmarks.fan_throughput [--device cuda] [--crops 256] [--batch-size 32] [--flip]

Prints human-readable lines, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def _rate(fn, count: int, repeats: int) -> float:
    """Best crops/s over `repeats` runs (the best is the least disturbed by other load)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()  # every path ends in a device-to-host copy, which waits for the GPU
        best = min(best, time.perf_counter() - start)
    return count / best


def main(argv: list[str] | None = None) -> dict:
    import torch

    from swapline.ops import fan

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help='"auto" (CUDA when present), "cpu", "cuda", "cuda:N"')
    parser.add_argument("--crops", type=int, default=0, help="crops per measurement (default: 256 on CUDA, 16 on CPU)")
    parser.add_argument("--batch-size", type=int, default=0, help="network batch (default: 32 on CUDA, 8 on CPU)")
    parser.add_argument("--flip", action="store_true", help="also run mirrored crops (flip_input)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    gpu = device.startswith("cuda")
    crops = args.crops or (256 if gpu else 16)
    batch = args.batch_size or (32 if gpu else 8)
    name = torch.cuda.get_device_name(device) if gpu else f"CPU ({torch.get_num_threads()} threads)"

    rng = np.random.default_rng(0)
    # 720p frames with one 200 px face box each: the end-to-end path crops, runs and decodes.
    frames = [rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8) for _ in range(min(crops, 8))]
    frames = [frames[i % len(frames)] for i in range(crops)]
    boxes = [[(540.0, 260.0, 740.0, 460.0)] for _ in range(crops)]
    inputs = rng.integers(0, 256, (crops, fan.INPUT_SIZE, fan.INPUT_SIZE, 3), dtype=np.uint8)

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "checkpoints").mkdir()
        torch.save(fan.fan_network().state_dict(), Path(tmp) / "checkpoints" / fan.STATE_DICT_FILE)
        batched = fan.FanLandmarker(tmp, device=device, flip_input=args.flip, batch_size=batch)
        single = fan.FanLandmarker(tmp, device=device, flip_input=args.flip, batch_size=1)
        start = time.perf_counter()
        batched.heatmaps(inputs[:batch])  # load the weights; first CUDA calls pick their kernels
        single.heatmaps(inputs[:1])
        warmup = time.perf_counter() - start
        result = {
            "device": device,
            "device_name": name,
            "torch": torch.__version__,
            "crops": crops,
            "batch_size": batch,
            "flip_input": args.flip,
            "warmup_s": round(warmup, 2),
            "network_batched_crops_per_s": _rate(lambda: batched.heatmaps(inputs), crops, args.repeats),
            "network_one_by_one_crops_per_s": _rate(lambda: [single.heatmaps(inputs[i:i + 1]) for i in range(crops)], crops, args.repeats),
            "end_to_end_batched_crops_per_s": _rate(lambda: batched.landmarks_batch(frames, boxes), crops, args.repeats),
            "end_to_end_one_by_one_crops_per_s": _rate(lambda: [single.landmarks(f, b) for f, b in zip(frames, boxes)], crops, args.repeats),
        }
    fan.load_network.cache_clear()
    for key in [k for k in result if k.endswith("_per_s")]:
        result[key] = round(result[key], 1)
    result["batched_speedup"] = round(result["network_batched_crops_per_s"] / result["network_one_by_one_crops_per_s"], 2)

    print(f"FAN-4 landmarks on {name} ({device}), torch {torch.__version__}, flip_input={args.flip}")
    print(f"{crops} crops of 256x256, batch {batch}; warm-up {result['warmup_s']} s; best of {args.repeats}")
    print(f"network only: {result['network_batched_crops_per_s']} crops/s batched, "
          f"{result['network_one_by_one_crops_per_s']} one by one ({result['batched_speedup']}x)")
    print(f"crop + network + decode from 720p frames: {result['end_to_end_batched_crops_per_s']} crops/s batched, "
          f"{result['end_to_end_one_by_one_crops_per_s']} one by one")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
