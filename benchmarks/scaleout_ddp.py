"""Data-parallel training (ops/distributed.py): step time and faces/s against world size, and
the equivalence error of two ranks against one process.

    python -m benchmarks.scaleout_ddp [--device cpu|cuda] [--preset lite] [--resolution 64]
        [--batch-size 8] [--steps 20] [--warmup 3] [--compile]

Every variant trains the same model at the same PER-RANK batch (--batch-size faces per side),
so a world of W ranks steps a global batch W times as large; faces/s counts both sides of the
global batch (2 x batch x W per step), never iterations. Variants, all timing the real step:
  plain   train.py's one-process step (_train_step), the path gpus: 1 takes;
  ddp-W   W torchrun ranks running train_ddp's step: this rank's shard, DDP(PairForward),
          Adam, and the per-step flag all-reduce. CPU: the cores are split between the ranks
          (threads a rank = cores / W), so on a 2-core machine two ranks cannot be faster than
          one; CUDA: one GPU a rank (ddp-1 against plain shows the DDP overhead).
The equivalence error: max |parameter difference| after a few plain-SGD steps of 2 ranks
(half of each fixed global batch each) against one process on the whole batch (fp32, CPU).
Prints human lines, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIDES = ("a", "b")
EQUIV_BATCH, EQUIV_STEPS = 8, 3


def _faces(n: int, size: int, seed: int) -> np.ndarray:
    """Smooth random faces (N,S,S,3) uint8: speed does not depend on the content."""
    import cv2

    small = np.random.default_rng(seed).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    return np.stack([cv2.resize(s, (size, size), interpolation=cv2.INTER_CUBIC) for s in small])


def _setup(args, device, world: int):
    """Faces resident on the device, model, Adam and sampler as training builds them."""
    import torch

    from swapline.ops.inference import device_setup
    from swapline.ops.model import ModelConfig
    from swapline.ops.train import TrainConfig, _build, _side_data

    config = TrainConfig(iterations=1, batch_size=args.batch_size * world, compile=args.compile)
    model_config = ModelConfig(resolution=args.resolution, preset=args.preset)
    fmt, autocast = device_setup(device)
    data = {s: _side_data(_faces(256, args.resolution, i), None, args.resolution, device) for i, s in enumerate(SIDES)}
    model, optimizer, sampler = _build(model_config, config, device, fmt)
    if args.compile and device.type == "cuda":
        model.encoder.compile()
        for decoder in model.decoders.values():
            decoder.compile()
    torch.manual_seed(0)
    return config, fmt, autocast, data, model, optimizer, sampler


def _time(step, args, device) -> float:
    """Seconds a step: warmup, then the mean over --steps, synchronised on CUDA."""
    import torch

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(args.warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    return (time.perf_counter() - start) / args.steps


def plain(args) -> dict:
    import torch

    from swapline.ops.train import _train_step

    device = torch.device(args.device)
    config, fmt, autocast, data, model, optimizer, sampler = _setup(args, device, 1)
    seconds = _time(lambda: _train_step(model, optimizer, data, config, sampler, fmt, autocast), args, device)
    return {"ranks": 1, "threads": torch.get_num_threads(), "step_s": seconds, "faces_per_s": 2 * args.batch_size / seconds}


def _rank(args) -> None:
    """One torchrun rank: time train_ddp's step; rank 0 writes the slowest rank's time."""
    import torch
    import torch.distributed as dist

    from swapline.ops import distributed as ddp

    with ddp.process_group(args.device) as (rank, world, name):
        device = torch.device(name)
        config, fmt, autocast, data, model, optimizer, sampler = _setup(args, device, world)
        augmenter, control = torch.Generator().manual_seed(config.seed + rank), dist.new_group(backend="gloo")
        net = torch.nn.parallel.DistributedDataParallel(ddp.PairForward(model), device_ids=[device.index] if device.type == "cuda" else None,
                                                        gradient_as_bucket_view=True)

        def step():
            ddp.update(net, optimizer, ddp.rank_batches(data, config, sampler, augmenter, rank, world), config, fmt, autocast)
            ddp.agree([False, False, False], control)

        seconds = torch.tensor([_time(step, args, device)])
        dist.all_reduce(seconds, op=dist.ReduceOp.MAX, group=control)  # a step ends when the slowest rank's does
        if world == 2 and device.type == "cpu":
            _equivalence_rank(rank, world, args.out + ".safetensors")
        if rank == 0:
            Path(args.out).write_text(json.dumps({"ranks": world, "threads": torch.get_num_threads(), "step_s": seconds.item(),
                                                  "faces_per_s": 2 * args.batch_size * world / seconds.item()}))


# ---------------------------------------------------------------- equivalence (CPU, fp32, plain SGD)

def _equivalence_batches(step: int):
    import torch

    g = torch.Generator().manual_seed(100 + step)
    out = []
    for _ in SIDES:
        target = torch.rand((EQUIV_BATCH, 3, 64, 64), generator=g)  # (B,3,R,R)
        warped = (target + 0.1 * torch.randn(target.shape, generator=g)).clamp(0, 1)
        out.append((warped, target, torch.ones(EQUIV_BATCH, 1, 64, 64)))  # uniform masks: the L1 is a plain mean
    return out


def _sgd(net, model, batches_of) -> None:
    import torch

    from swapline.ops.distributed import update
    from swapline.ops.train import TrainConfig

    optimizer, config = torch.optim.SGD(model.parameters(), lr=1.0), TrainConfig(iterations=1, batch_size=EQUIV_BATCH)
    for step in range(EQUIV_STEPS):
        update(net, optimizer, batches_of(step), config, torch.channels_last, contextlib.nullcontext)


def _lite():
    import torch

    from swapline.ops.model import FaceSwapAE, ModelConfig

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return FaceSwapAE(ModelConfig(resolution=64, preset="lite")).to(memory_format=torch.channels_last)


def _equivalence_rank(rank: int, world: int, out: str) -> None:
    import torch
    from safetensors.torch import save_file

    from swapline.ops.distributed import PairForward

    model, per = _lite(), EQUIV_BATCH // world
    net = torch.nn.parallel.DistributedDataParallel(PairForward(model))
    _sgd(net, model, lambda step: [tuple(t[rank * per : (rank + 1) * per] for t in side) for side in _equivalence_batches(step)])
    if rank == 0:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out)


def equivalence_error(path: str) -> float:
    from safetensors.torch import load_file

    from swapline.ops.distributed import PairForward

    ddp, one = load_file(path), _lite()
    _sgd(PairForward(one), one, _equivalence_batches)
    return max((ddp[k] - v).abs().max().item() for k, v in one.state_dict().items())


# ---------------------------------------------------------------- the runs

def launch(args, world: int, threads: int, folder: Path) -> dict:
    out = folder / f"ddp{world}.json"
    rank_args = ["--device", args.device, "--preset", args.preset, "--resolution", str(args.resolution),
                 "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--warmup", str(args.warmup),
                 "--rank", "--out", str(out)] + (["--compile"] if args.compile else [])
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}",
               "-m", "benchmarks.scaleout_ddp", *rank_args]
    done = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": str(threads)}, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"ddp-{world} failed:\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> dict:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--preset", default=None, help="default: lite on CPU, original on CUDA")
    parser.add_argument("--resolution", type=int, default=None, help="default: 64 on CPU, 128 on CUDA")
    parser.add_argument("--batch-size", type=int, default=None, help="faces per side per RANK (default: 8 CPU, 64 CUDA)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 20 CPU, 100 CUDA)")
    parser.add_argument("--warmup", type=int, default=None, help="default: 3 CPU, 20 CUDA (compile: first steps compile)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the networks (CUDA only, as training does)")
    parser.add_argument("--rank", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cuda = args.device == "cuda"
    for name, cpu_value, cuda_value in (("preset", "lite", "original"), ("resolution", 64, 128), ("batch_size", 8, 64),
                                        ("steps", 20, 100), ("warmup", 3, 20)):
        if getattr(args, name) is None:
            setattr(args, name, cuda_value if cuda else cpu_value)
    if args.rank:
        _rank(args)
        return {}
    cores = os.cpu_count() or 1
    worlds = [1, max(1, torch.cuda.device_count())] if cuda else [1, 2]
    results = {"device": args.device, "torch": torch.__version__, "cores": cores, "preset": args.preset,
               "resolution": args.resolution, "per_rank_batch": args.batch_size, "steps": args.steps, "compile": args.compile}
    if cuda:
        results["gpu"] = torch.cuda.get_device_name(0)
    variants = {"plain": plain(args)}
    with tempfile.TemporaryDirectory() as folder:
        for world in sorted(set(worlds)):
            variants[f"ddp-{world}"] = launch(args, world, 1 if cuda else max(1, cores // world), Path(folder))
        if not cuda:
            results["equivalence_max_abs_error"] = equivalence_error(str(Path(folder) / "ddp2.json.safetensors"))
    results["variants"] = variants
    for name, v in variants.items():
        print(f"{name:<7} ranks {v['ranks']}  threads/rank {v['threads']}  step {1000 * v['step_s']:7.1f} ms  "
              f"{v['faces_per_s']:8.1f} faces/s")
    results["ddp1_over_plain_faces_per_s"] = variants["ddp-1"]["faces_per_s"] / variants["plain"]["faces_per_s"]
    print(f"ddp-1 / plain faces/s: {results['ddp1_over_plain_faces_per_s']:.3f}")
    if "ddp-2" in variants:
        results["ddp2_over_ddp1_step_time"] = variants["ddp-2"]["step_s"] / variants["ddp-1"]["step_s"]
        results["ddp2_over_ddp1_faces_per_s"] = variants["ddp-2"]["faces_per_s"] / variants["ddp-1"]["faces_per_s"]
        print(f"ddp-2 / ddp-1: step time {results['ddp2_over_ddp1_step_time']:.2f}x, "
              f"faces/s {results['ddp2_over_ddp1_faces_per_s']:.2f}x (same per-rank batch)")
    if "equivalence_max_abs_error" in results:
        print(f"2 ranks vs 1 process, {EQUIV_STEPS} SGD steps: max |param diff| {results['equivalence_max_abs_error']:.2e}")
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
