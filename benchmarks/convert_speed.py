"""Conversion speed: frames/s of the whole converter next to a decode-then-encode-only pass
of the same clip, measured in the same run, and where the time goes.

    python -m benchmarks.convert_speed [--device cpu] [--resolution 64] [--preset lite]
        [--height 0] [--seconds 0] [--batch-size 16] [--workers 2]

Default: the demo clip (WolfgangLanger_Pexels.mp4, 640x360, 472 frames) with a 64 px lite
model (random weights: speed does not depend on them). For the GPU figure:
`--device cuda --resolution 128 --height 1080 --seconds 60` builds a 1080p30 clip of 60 s by
scaling and looping the demo clip first, and reports the real-time factor (video seconds per
wall second) and the GPU's utilisation sampled during conversion.
Ours is run twice: cold, and again with the per-video detection cache (a re-conversion after
more training). Human lines, then one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _clip(args, folder: Path) -> Path:
    """The demo clip, or a scaled and looped version of it (height x 16:9, 30 fps, N seconds)."""
    from swapline.demo_media import fetch

    source = fetch() / "WolfgangLanger_Pexels.mp4"
    if not args.height and not args.seconds:
        return source
    import cv2

    from swapline.ops.media import iter_video, write_video

    frames = [f for _, _, f in iter_video(source)]
    height = args.height or frames[0].shape[0]
    width = round(height * frames[0].shape[1] / frames[0].shape[0] / 2) * 2
    total = round((args.seconds or len(frames) / 24) * 30)

    def looped():
        for i in range(total):  # back and forth, so the loop has no jump cut
            k = i % (2 * len(frames) - 2)
            frame = frames[k if k < len(frames) else 2 * len(frames) - 2 - k]
            yield cv2.resize(frame, (width, height), interpolation=cv2.INTER_CUBIC)

    out = folder / f"clip_{height}p_{total}f.mp4"
    write_video(looped(), out, 30, crf=18, audio_from=source)
    return out


def _baseline(clip: Path, out: Path) -> float:
    """Decode every frame and encode it again with the converter's encoder settings."""
    from swapline.ops.media import iter_timed, stream_format, write_video

    fmt = stream_format(clip)
    started = time.perf_counter()
    write_video(((rgb, t) for _, t, rgb in iter_timed(clip)), out, fmt.rate, audio_from=clip, crf=20,
                time_base=fmt.time_base, pix_fmt=fmt.pix_fmt)
    return time.perf_counter() - started


class _GpuSampler(threading.Thread):
    def __init__(self, device):
        super().__init__(daemon=True)
        self.device, self.samples, self.stop = device, [], threading.Event()

    def run(self):
        from benchmarks.train_throughput import gpu_utilisation

        while not self.stop.wait(0.5):
            if (util := gpu_utilisation(self.device)) is not None:
                self.samples.append(util)


def _ours(clip: Path, out: Path, args, cache_root: Path | None):
    import torch

    from swapline.ops.convert import Converter, ConvertOptions, convert_video
    from swapline.ops.detections import DetectionCache
    from swapline.ops.faces import AnalyzerSettings, FaceAnalyzer
    from swapline.ops.model import FaceSwapAE, ModelConfig
    from swapline.ops.provenance import container_tags

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = FaceSwapAE(ModelConfig(resolution=args.resolution, preset=args.preset)).to(device, memory_format=torch.channels_last).eval()
    analyzer = FaceAnalyzer(AnalyzerSettings(face_size=max(128, args.resolution)), device=str(device))
    options = ConvertOptions(batch_size=args.batch_size, workers=args.workers)
    converter = Converter(analyzer, model, "b", str(device), options, cache=DetectionCache(cache_root, analyzer, "bench"))
    sampler = _GpuSampler(device)
    sampler.start()
    stats = convert_video(clip, out, converter, tags=container_tags("bench", "bench"))
    sampler.stop.set()
    stats.pop("preview")
    util = sampler.samples
    return stats, (sum(util) / len(util) if util else None)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--preset", default="lite")
    parser.add_argument("--height", type=int, default=0, help="scale the clip to this height (0: as it is)")
    parser.add_argument("--seconds", type=float, default=0, help="loop the clip to this length at 30 fps (0: as it is)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="detection threads")
    args = parser.parse_args(argv)

    from swapline.ops.media import probe

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = _clip(args, tmp)
        info = probe(clip)
        print(f"clip: {clip.name} {info.width}x{info.height}, {info.frames} frames, {info.duration:.1f} s; "
              f"model {args.preset}@{args.resolution} on {args.device}")
        base_s = _baseline(clip, tmp / "baseline.mp4")
        base_fps = info.frames / base_s
        print(f"decode + encode only:  {base_fps:7.1f} frames/s")
        cold, util = _ours(clip, tmp / "cold.mp4", args, tmp / "store")
        print(f"conversion (cold):     {cold['fps']:7.1f} frames/s  ratio {cold['fps'] / base_fps:.2f}  "
              f"stages {cold['stage_seconds']}  GPU busy {util}")
        warm, _ = _ours(clip, tmp / "warm.mp4", args, tmp / "store")
        print(f"re-conversion (cached detections): {warm['fps']:7.1f} frames/s ratio {warm['fps'] / base_fps:.2f}")
    figures = {
        "clip": {"width": info.width, "height": info.height, "frames": info.frames, "seconds": round(info.duration, 2)},
        "device": args.device, "model": f"{args.preset}@{args.resolution}",
        "baseline_fps": round(base_fps, 1), "convert_fps": cold["fps"], "ratio": round(cold["fps"] / base_fps, 3),
        "realtime_factor": round(info.duration / cold["seconds"], 3), "stage_seconds": cold["stage_seconds"],
        "reconvert_fps": warm["fps"], "reconvert_ratio": round(warm["fps"] / base_fps, 3),
        "detections_cached": warm["detections_cached"], "gpu_util_pct": util, "swapped": cold["swapped"],
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
