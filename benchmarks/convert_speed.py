"""Conversion speed: frames/s of the whole converter next to a decode-then-encode-only pass
of the same clip, measured in the same run, and where the time goes.

    python -m benchmarks.convert_speed [--device cpu] [--resolution 64] [--preset lite]
        [--height 0] [--seconds 0] [--batch-size 16] [--workers 2]

Default: the demo clip (WolfgangLanger_Pexels.mp4, 640x360, 472 frames) with a 64 px lite
model (random weights: speed does not depend on them). For the GPU figure:
`--device cuda --resolution 128 --height 1080 --seconds 60` builds a 1080p30 clip of 60 s by
scaling and looping the demo clip first, and reports the real-time factor (video seconds per
wall second) and the GPU's utilisation sampled during conversion.
Ours is measured three ways: the converter detecting inline (as before target_faces existed),
target_faces' one analysis of the target, and converted_video rendering from that table (what
every re-render after more training costs). Human lines, then one JSON object.
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


def _model_and_analyzer(args):
    import torch

    from swapline.ops.faces import AnalyzerSettings, FaceAnalyzer
    from swapline.ops.model import FaceSwapAE, ModelConfig

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = FaceSwapAE(ModelConfig(resolution=args.resolution, preset=args.preset)).to(device, memory_format=torch.channels_last).eval()
    return model, FaceAnalyzer(AnalyzerSettings(face_size=max(128, args.resolution)), device=str(device))


def _analyse(clip: Path, table: Path, args) -> tuple[dict, float]:
    """target_faces' work: decode once in a child process, detect, track, embed."""
    from swapline.ops.faces import AnalyzerSettings
    from swapline.ops.target import analyse_target

    started = time.perf_counter()
    stats = analyse_target(clip, table, AnalyzerSettings(face_size=max(128, args.resolution)), device=args.device)
    return stats, time.perf_counter() - started


def _ours(clip: Path, out: Path, args, table: Path | None, mark=None):
    """converted_video's work: from target_faces' table (`table`), or detecting inline as the
    converter did before target_faces existed (`table` None)."""
    from swapline.ops.convert import Converter, ConvertOptions, convert_video
    from swapline.ops.provenance import container_tags
    from swapline.ops.target import planned_faces, read_table

    model, analyzer = _model_and_analyzer(args)
    options = ConvertOptions(batch_size=args.batch_size, workers=args.workers)
    planned = planned_faces(read_table(table), None, options.identity_distance) if table else None
    converter = Converter(analyzer, model, "b", args.device, options, planned=planned)
    sampler = _GpuSampler(model_device(model))
    sampler.start()
    stats = convert_video(clip, out, converter, tags=container_tags("bench", "bench"), mark=mark)
    sampler.stop.set()
    stats.pop("preview")
    util = sampler.samples
    return stats, (sum(util) / len(util) if util else None)


def model_device(model):
    return next(model.parameters()).device


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
        inline, util = _ours(clip, tmp / "inline.mp4", args, None)
        print(f"conversion detecting inline (before target_faces): {inline['fps']:7.1f} frames/s  "
              f"ratio {inline['fps'] / base_fps:.2f}  stages {inline['stage_seconds']}  GPU busy {util}")
        analysed, analyse_s = _analyse(clip, tmp / "target_faces.parquet", args)
        print(f"target_faces (decode once + detect + track, outside the GPU pool): {info.frames / analyse_s:7.1f} frames/s, "
              f"{analysed['faces']} faces, {analysed['tracks']} tracks")
        render, util = _ours(clip, tmp / "render.mp4", args, tmp / "target_faces.parquet")
        print(f"converted_video from the table (a re-render): {render['fps']:7.1f} frames/s  ratio {render['fps'] / base_fps:.2f}  "
              f"detections {render['detections_run']}  stages {render['stage_seconds']}  GPU busy {util}")
    first = analyse_s + render["seconds"]
    figures = {
        "clip": {"width": info.width, "height": info.height, "frames": info.frames, "seconds": round(info.duration, 2)},
        "device": args.device, "model": f"{args.preset}@{args.resolution}", "baseline_fps": round(base_fps, 1),
        "inline_fps": inline["fps"], "inline_ratio": round(inline["fps"] / base_fps, 3),
        "analyse_fps": round(info.frames / analyse_s, 2), "render_fps": render["fps"],
        "render_ratio": round(render["fps"] / base_fps, 3), "render_detections_run": render["detections_run"],
        "first_conversion_fps": round(info.frames / first, 2), "realtime_factor_render": round(info.duration / render["seconds"], 3),
        "stage_seconds_render": render["stage_seconds"], "gpu_util_pct": util, "swapped": render["swapped"],
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
