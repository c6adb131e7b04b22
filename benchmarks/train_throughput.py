"""Training throughput of the `original` preset: our step against a 2018-style baseline.

Ours: faces kept as uint8 on the device, batched tensor augmentation (ops/augment.py),
channels_last, bf16 autocast on CUDA, optional torch.compile. The baseline, measured in the
same run on the same architecture and loss: fp32, default memory format, no compile, and
each image augmented on the host with OpenCV in a Python loop (random warp via cv2.remap,
rotate/scale/shift via cv2.warpAffine, flip), as the 2018 tools fed their trainers.

    python -m benchmarks.train_throughput [--device cuda] [--resolutions 64 128] [--batch-size 64]
        [--steps 5] [--warmup 2] [--compile] [--peak-tflops 989]

images/s counts both sides (2 x batch per step). Peak memory: CUDA max allocated per
variant; on CPU the process's peak RSS after each variant (a high-water mark, so the second
variant's figure includes the first). MFU: FLOPs of one step (torch.utils.flop_counter)
/ step time / --peak-tflops (989 = H100 bf16 dense; meaningless on CPU, printed anyway).
Prints human-readable lines, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import time

import numpy as np

SIDES = ("a", "b")


def _faces(n: int, size: int, seed: int) -> np.ndarray:
    """Smooth random images (N,S,S,3) uint8: speed does not depend on the content."""
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    return np.stack([cv2.resize(s, (size, size), interpolation=cv2.INTER_CUBIC) for s in small])


def _cv2_augment(face: np.ndarray, mask: np.ndarray, rng: np.random.Generator):
    """One image the 2018 way: (S,S,3) uint8, (S,S) uint8 -> warped, target, mask (float32)."""
    import cv2

    size = face.shape[0]
    rotation, scale = rng.uniform(-10, 10), rng.uniform(0.95, 1.05)
    matrix = cv2.getRotationMatrix2D((size / 2, size / 2), rotation, scale)
    matrix[:, 2] += rng.uniform(-0.05, 0.05, 2) * size
    face = cv2.warpAffine(face, matrix, (size, size), borderMode=cv2.BORDER_REPLICATE)
    mask = cv2.warpAffine(mask, matrix, (size, size), borderMode=cv2.BORDER_REPLICATE)
    if rng.random() < 0.5:
        face, mask = face[:, ::-1], mask[:, ::-1]
    # The classic random warp: a 5x5 grid of control points jittered, interpolated to a map.
    grid = np.broadcast_to(np.linspace(0, size - 1, 5), (5, 5)).astype(np.float32)
    map_x = cv2.resize(grid + rng.normal(0, size / 32, (5, 5)).astype(np.float32), (size, size))
    map_y = cv2.resize(grid.T + rng.normal(0, size / 32, (5, 5)).astype(np.float32), (size, size))
    warped = cv2.remap(np.ascontiguousarray(face), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return warped.astype(np.float32) / 255, np.ascontiguousarray(face).astype(np.float32) / 255, mask.astype(np.float32) / 255


def _baseline_batch(faces, masks, batch, rng, device):
    """Per-image OpenCV loop, then host->device: (B,3,R,R) warped, target, (B,1,R,R) mask."""
    import torch

    items = [_cv2_augment(faces[i], masks[i], rng) for i in rng.integers(0, len(faces), batch)]
    warped, target, mask = (np.stack(x) for x in zip(*items))
    to = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    return to(warped).permute(0, 3, 1, 2), to(target).permute(0, 3, 1, 2), to(mask)[:, None]


def _make_step(model, optimizer, batches, fmt, autocast, batch):
    """One Adam step on both sides; the same loss for both variants (ops.loss.side_loss)."""
    import torch

    from swapline.ops.loss import side_loss

    def step():
        sides = [batches(s) for s in SIDES]
        warped = torch.cat([b[0] for b in sides]).contiguous(memory_format=fmt)  # (2B,3,R,R)
        with autocast():
            latents = model.encode(warped).split(batch)
            outputs = [model.decode(z, s) for z, s in zip(latents, SIDES)]
        loss = sum(side_loss(rgb.float(), m.float(), t, tm, "l1", 0.5, 0.5) for (rgb, m), (_, t, tm) in zip(outputs, sides))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return step


def _variant(name, resolution, args, device, faces, masks):
    import contextlib

    import torch

    from swapline.ops.augment import augment_pair
    from swapline.ops.inference import device_setup
    from swapline.ops.model import FaceSwapAE, ModelConfig

    ours = name == "ours"
    torch.manual_seed(0)
    if device.type == "cuda":  # device_setup sets these process-wide: the baseline stays plain fp32
        torch.backends.cudnn.benchmark = torch.backends.cuda.matmul.allow_tf32 = ours
    fmt, autocast = device_setup(device) if ours else (torch.contiguous_format, contextlib.nullcontext)
    model = FaceSwapAE(ModelConfig(resolution=resolution, preset="original")).to(device, memory_format=fmt)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.5, 0.999), fused=(device.type == "cuda" and ours) or None)
    if ours:
        gen = torch.Generator().manual_seed(0)
        rgb = torch.from_numpy(faces).to(device).permute(0, 3, 1, 2).contiguous()  # (N,3,R,R) uint8, resident
        msk = torch.from_numpy(masks).to(device)[:, None]  # (N,1,R,R) uint8

        def batches(_side):
            idx = torch.randint(len(rgb), (args.batch_size,), generator=gen).to(device)
            return augment_pair(rgb[idx].float() / 255, msk[idx].float() / 255, 1.0, gen)
        if args.compile and device.type == "cuda":
            model.encoder.compile()  # in place, as ops/train.py does: decode() indexes model.decoders
            for decoder in model.decoders.values():
                decoder.compile()
    else:
        rng = np.random.default_rng(0)
        batches = lambda _side: _baseline_batch(faces, masks, args.batch_size, rng, device)  # noqa: E731
    step = _make_step(model, optimizer, batches, fmt, autocast, args.batch_size)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(args.warmup):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    seconds = (time.perf_counter() - start) / args.steps
    util = gpu_utilisation(device)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB -> MiB
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    flops = counter.get_total_flops()
    return {"step_s": seconds, "images_per_s": 2 * args.batch_size / seconds, "peak_mib": peak,
            "tflops_per_step": flops / 1e12, "achieved_tflops": flops / seconds / 1e12,
            "mfu": flops / seconds / (args.peak_tflops * 1e12), "gpu_util_pct": util}


def gpu_utilisation(device):
    """GPU busy % as the driver reports it (torch via pynvml, else nvidia-smi); None on CPU."""
    if device.type != "cuda":
        return None
    import torch

    try:
        return float(torch.cuda.utilization(device))
    except Exception:  # pynvml missing: ask nvidia-smi
        if shutil.which("nvidia-smi"):
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=10).stdout.split()
            return float(out[device.index or 0]) if out else None
    return None


def main(argv: list[str] | None = None) -> dict:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help='"cpu", "cuda" or "cuda:N"')
    parser.add_argument("--resolutions", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--batch-size", type=int, default=64, help="per side")
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="torch.compile our variant (CUDA only)")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="device peak for MFU (H100 bf16 dense: 989)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    results = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
               "batch_size": args.batch_size, "steps": args.steps, "compile": args.compile}
    if device.type == "cuda":
        results["gpu"] = torch.cuda.get_device_name(device)
    for resolution in args.resolutions:
        faces, masks = _faces(256, resolution, 0), np.full((256, resolution, resolution), 255, np.uint8)
        row = {name: _variant(name, resolution, args, device, faces, masks) for name in ("baseline", "ours")}
        row["speedup"] = row["ours"]["images_per_s"] / row["baseline"]["images_per_s"]
        results[f"{resolution}px"] = row
        for name in ("baseline", "ours"):
            r = row[name]
            print(f"{resolution:>4}px {name:<8} {r['images_per_s']:8.1f} img/s  step {r['step_s']:.3f}s  "
                  f"peak {r['peak_mib']:.0f} MiB  {r['achieved_tflops']:.3f} TFLOP/s  MFU {100 * r['mfu']:.2f}%"
                  + (f"  GPU util {r['gpu_util_pct']:.0f}%" if r["gpu_util_pct"] is not None else ""))
        print(f"{resolution:>4}px ours / baseline: {row['speedup']:.2f}x")
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
