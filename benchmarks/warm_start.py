"""Warm start on the demo data: steps to a held-out SSIM threshold, with and without a parent.

The user's case: a swap `anna_ben` is trained; a new swap names it as `parent` and starts its
encoder from it, with fresh decoders (`warm_start: encoder`, the default). Here the child is
trained on the same demo pair (the demo has two people only), so the figure is the best case of
encoder reuse; a child with a new person would gain less.

    python -m benchmarks.warm_start [--parent-steps 1500] [--max-steps 3000] [--every 100]
        [--threshold 0.6] [--preset lite] [--resolution 64] [--batch-size 16]

Needs the demo facesets (`./dev demo` builds them under $SWAPLINE_HOME). Every `--every` steps
the run stops, both decoders rebuild their held-out faces (the trainer's 5% split) and the
mean SSIM of A->A and B->B is compared with --threshold; training resumes from the work
checkpoint exactly (same batches as an uninterrupted run). Human lines, then one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def _facesets(home: Path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per side: training faces, training masks, held-out faces (the asset's split)."""
    from swapline.ops.evaluate import split_holdout
    from swapline.ops.storage import ArtifactStore
    from swapline.ops.trainset import load_faceset

    store, out = ArtifactStore(home), {}
    for side, who in (("a", "anna"), ("b", "ben")):
        published = store.current_or_none(store.location(who, "faceset"))
        if published is None:
            raise SystemExit(f"no faceset for {who} under {home}: run `./dev demo` first (or set SWAPLINE_HOME)")
        faces, masks = load_faceset(published.path / "faceset.parquet")
        train_idx, val_idx = split_holdout(len(faces))
        out[side] = (faces[train_idx], masks[train_idx], faces[val_idx])
    return out


def _run(data, model_config, args, folder: Path, warm_from: Path | None, steps_cap: int, threshold: float | None):
    """Train in chunks of args.every steps; returns [(step, val_ssim, seconds)] until the
    threshold is reached or steps_cap."""
    from swapline.ops.evaluate import reconstruction_metrics
    from swapline.ops.inference import load_for_inference
    from swapline.ops.train import TrainConfig, train

    curve, seconds, step = [], 0.0, 0
    while step < steps_cap:
        config = TrainConfig(iterations=min(step + args.every, steps_cap), batch_size=args.batch_size,
                             checkpoint_minutes=0, log_every=args.every)
        result = train(data["a"][0], data["b"][0], data["a"][1], data["b"][1], model_config, config, "cpu",
                       checkpoint_dir=folder / "out", work_dir=folder / "work", warm_from=warm_from)
        step, seconds = result.step, seconds + result.seconds
        model = load_for_inference(folder / "out")
        ssim = np.mean([reconstruction_metrics(model, data[s][2], s)["ssim"] for s in ("a", "b")])
        curve.append((step, round(float(ssim), 4), round(seconds, 1)))
        print(f"  step {step:5d}  held-out SSIM {ssim:.3f}  ({seconds:.0f} s training)", flush=True)
        if threshold is not None and ssim >= threshold:
            break
    return curve


def _reached(curve, threshold: float) -> dict:
    hit = next((c for c in curve if c[1] >= threshold), None)
    return {"steps": hit[0] if hit else None, "seconds": hit[2] if hit else None, "final_ssim": curve[-1][1]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parent-steps", type=int, default=1500)
    parser.add_argument("--max-steps", type=int, default=3000)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--threshold", type=float, default=0.6)
    parser.add_argument("--preset", default="lite")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)

    import torch

    from swapline.ops.model import ModelConfig

    torch.set_num_threads(os.cpu_count() or 1)
    home = Path(os.environ.get("SWAPLINE_HOME", ".swapline"))
    data = _facesets(home)
    model_config = ModelConfig(resolution=args.resolution, preset=args.preset)
    print(f"faces: anna {len(data['a'][0])} + {len(data['a'][2])} held out, ben {len(data['b'][0])} + {len(data['b'][2])}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(f"parent: {args.parent_steps} steps")
        started = time.monotonic()
        parent = _run(data, model_config, argparse.Namespace(**{**vars(args), "every": args.parent_steps}),
                      tmp / "parent", None, args.parent_steps, None)
        parent_seconds = time.monotonic() - started
        print("cold start (fresh encoder and decoders):")
        cold = _run(data, model_config, args, tmp / "cold", None, args.max_steps, args.threshold)
        print("warm start (the parent's encoder, fresh decoders):")
        warm = _run(data, model_config, args, tmp / "warm", tmp / "parent" / "out", args.max_steps, args.threshold)
    figures = {
        "threshold_ssim": args.threshold, "eval_every": args.every, "model": f"{args.preset}@{args.resolution}",
        "parent_steps": args.parent_steps, "parent_ssim": parent[-1][1], "parent_seconds": round(parent_seconds, 1),
        "cold": _reached(cold, args.threshold), "warm": _reached(warm, args.threshold),
        "cold_curve": cold, "warm_curve": warm,
    }
    if figures["cold"]["steps"] and figures["warm"]["steps"]:
        figures["warm_over_cold_steps"] = round(figures["warm"]["steps"] / figures["cold"]["steps"], 3)
        print(f"warm start needs {figures['warm_over_cold_steps']:.0%} of the cold start's steps to SSIM {args.threshold}")
    else:
        print("a run did not reach the threshold within --max-steps: raise it or lower --threshold")
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
