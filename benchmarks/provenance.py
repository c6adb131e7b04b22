"""Provenance layers: what the invisible watermark and the C2PA signature cost, and what survives.

    python -m benchmarks.provenance [--device cpu] [--frames 60]

1. Watermark embed (on the yuv420p frame the encoder receives) and detect time per 1080p frame
   (the demo clip's frames scaled up), on `--device` (cuda: the embedding runs there).
2. Conversion frames/s on the demo clip (640x360, 472 frames, 64 px lite model with random
   weights, rendering from target_faces' table as every converted_video does) without the layers
   and with them (watermark in every frame, then C2PA signing and the read-back of the manifest
   and the watermark): alternated, 2 runs each, best of each. Aim: the layers add <= 10%.
3. Robustness on a marked demo clip (`--frames` frames): bits matched (voted) and single-frame
   bit accuracy after H.264 CRF 23, CRF 28 (same resolution) and JPEG quality 50 stills, and on
   unmarked video (the demo clips: near chance); PSNR of the marked frames against the unmarked.

Human lines, then one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.convert_speed import _analyse, _ours
from tests.assets.test_provenance import reencode  # the same re-encode the test checks


def _median_ms(fn, repeat: int = 20) -> float:
    fn()  # warm-up (layout tables, allocations)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(1000 * statistics.median(times), 2)


def frame_costs(source: Path, device: str) -> dict:
    import av
    import cv2

    from swapline.ops.media import iter_video
    from swapline.ops.watermark import Watermarker, detect_planes, payload_for, plane_array

    rgb = cv2.resize(next(iter(iter_video(source)))[2], (1920, 1080), interpolation=cv2.INTER_CUBIC)
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    marker = Watermarker(payload_for("bench", "v1"), device=device)
    u = plane_array(marker.embed_frame(frame).planes[1]).copy()
    return {"embed_frame_ms": _median_ms(lambda: marker.embed_frame(frame)),
            "rgb_to_yuv_ms": _median_ms(lambda: av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")),
            "detect_ms": _median_ms(lambda: detect_planes([u]))}


def conversion_fps(clip: Path, folder: Path, args) -> dict:
    """converted_video's render, bare and with every provenance layer (watermark, sign, read back)."""
    from swapline.ops.seal import seal
    from swapline.ops.signing_identity import ensure_local_identity
    from swapline.ops.watermark import Watermarker, payload_for

    table = folder / "target_faces.parquet"
    _analyse(clip, table, args)
    identity = ensure_local_identity(folder / "signing")
    payload = payload_for("bench@run", "model")
    runs: dict[str, list[float]] = {"bare": [], "layers": []}
    for attempt in range(2):
        for kind in ("bare", "layers"):
            out = folder / f"{kind}{attempt}.mp4"
            start = time.perf_counter()
            mark = Watermarker(payload, device=args.device).embed_frame if kind == "layers" else None
            stats, _ = _ours(clip, out, args, table, mark=mark)
            if kind == "layers":
                seal(out, identity, title="bench", parent=clip, assertion={"conversion": "bench"}, payload=payload)
            runs[kind].append(stats["frames"] / (time.perf_counter() - start))
    bare, layers = max(runs["bare"]), max(runs["layers"])
    return {"fps_bare": round(bare, 2), "fps_with_layers": round(layers, 2),
            "added_time": round(bare / layers - 1, 4), "runs": {k: [round(v, 2) for v in vs] for k, vs in runs.items()}}


def _per_frame_accuracy(planes, bits) -> float:
    from swapline.ops.watermark import detect_planes

    return round(float(np.mean([np.mean(detect_planes([u]).bits == bits) for u in planes])), 4)


def robustness(media: Path, folder: Path, frames: int) -> dict:
    import av
    import cv2

    from swapline.ops.media import iter_video, write_video
    from swapline.ops.watermark import Watermarker, detect_file, detect_images, payload_bits, payload_for, video_planes

    payload = payload_for("bench@run", "model")
    rgb = [f for _, _, f in iter_video(media / "WolfgangLanger_Pexels.mp4")][:frames]
    marked = folder / "marked.mp4"
    write_video(rgb, marked, 24, mark=Watermarker(payload).embed_frame)
    bits, result = payload_bits(payload), {}
    for crf in (23, 28):
        copy = folder / f"crf{crf}.mp4"
        reencode(marked, copy, crf)
        found = detect_file(copy, [payload], max_frames=frames)
        result[f"crf{crf}"] = {"bits_matched": found.bits_matched, "found": found.found,
                               "frame_bit_accuracy": _per_frame_accuracy(video_planes(copy, frames), bits)}
    stills = []
    for i, frame in enumerate(av.open(str(marked)).decode(video=0)):
        if i % max(1, frames // 10) == 0 and len(stills) < 10:
            stills.append(folder / f"still{i}.jpg")
            cv2.imwrite(str(stills[-1]), frame.to_ndarray(format="bgr24"), [cv2.IMWRITE_JPEG_QUALITY, 50])
    found = detect_images(stills, [payload])
    result["jpeg50"] = {"bits_matched": found.bits_matched, "found": found.found, "stills": len(stills)}
    for clip in ("WolfgangLanger_Pexels.mp4", "single_face.mp4"):
        found = detect_file(media / clip, [payload], max_frames=frames)
        result[f"unmarked_{clip}"] = {"bits_matched": found.bits_matched, "found": found.found,
                                      "bit_agreement": round(float(found.agreement), 4)}
    result["psnr_db"] = _psnr(rgb[: min(frames, 30)], Watermarker(payload))
    return result


def _psnr(frames, marker) -> float:
    """Marked vs unmarked, both through the same rgb -> yuv420p -> rgb path."""
    import av

    values = []
    for rgb in frames:
        yuv = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        plain = yuv.to_ndarray(format="rgb24").astype(np.float64)
        marked = marker.embed_frame(yuv).to_ndarray(format="rgb24").astype(np.float64)
        values.append(10 * np.log10(255 ** 2 / max(np.mean((plain - marked) ** 2), 1e-12)))
    return round(float(np.mean(values)), 2)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, default=60, help="frames of the marked clip for the robustness figures")
    args = parser.parse_args(argv)
    args.resolution, args.preset, args.batch_size, args.workers = 64, "lite", 16, 2

    from swapline.demo_media import fetch

    media = fetch()
    with tempfile.TemporaryDirectory(prefix="swapline-provenance-") as tmp:
        folder = Path(tmp)
        costs = frame_costs(media / "WolfgangLanger_Pexels.mp4", args.device)
        print(f"1080p frame on {args.device}: embed {costs['embed_frame_ms']} ms (the rgb->yuv conversion the encoder "
              f"does anyway: {costs['rgb_to_yuv_ms']} ms), detect {costs['detect_ms']} ms")
        speed = conversion_fps(media / "WolfgangLanger_Pexels.mp4", folder, args)
        print(f"conversion of the demo clip: {speed['fps_bare']} fps bare, {speed['fps_with_layers']} fps with watermark + "
              f"C2PA signing + read-back: +{100 * speed['added_time']:.1f}% time (aim <= 10%)")
        robust = robustness(media, folder, args.frames)
        for name, r in robust.items():
            print(f"  {name}: {r}")
    result = {"device": args.device, **costs, **speed, "robustness": robust,
              "model_note": "64 px lite model, random weights (speed does not depend on them)"}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
