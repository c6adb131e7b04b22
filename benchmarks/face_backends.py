"""Face backends on the demo clips: faces found, ms per frame and landmark jitter, dlib vs mediapipe.

Jitter: the frame-to-frame motion of the largest face's 68 landmarks left after removing the
face's own motion (a least-squares similarity fit of one frame's landmarks onto the next), as a
share of the inter-ocular distance. Per-frame landmark noise shows up there; moving the head
does not. `temporal.landmark_jitter` (raw second difference) is reported beside it.

    python -m benchmarks.face_backends [--frames 90] [--clips single_face.mp4 ...]

Needs the demo media and the MediaPipe models (`./dev` fetches both; else
`python -m swapline.face_models` for the models). Prints human-readable
lines, then one JSON object as the last line; its `jitter_ratio` is mediapipe's / dlib's.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np

CLIPS = ("single_face.mp4", "WolfgangLanger_Pexels.mp4", "face_noface.mov", "noface_face.mov")
BACKENDS = ("dlib", "mediapipe")


def similarity_residual(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-point distance between b and the least-squares similarity image of a (Umeyama)."""
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    a0, b0 = a - mu_a, b - mu_b
    u, s, vt = np.linalg.svd(b0.T @ a0)
    d = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])  # a rotation, never a reflection
    rotation = u @ d @ vt
    scale = float(np.trace(np.diag(s) @ d) / max((a0 ** 2).sum(), 1e-12))
    return np.linalg.norm(b0 - scale * a0 @ rotation.T, axis=1)


def motion_jitter(tracks: list[np.ndarray | None]) -> float:
    """Mean non-rigid frame-to-frame landmark motion / inter-ocular distance (see the module doc)."""
    from swapline.ops.temporal import interocular

    values = [similarity_residual(np.asarray(a, np.float64), np.asarray(b, np.float64)).mean() / max(interocular(b), 1e-9)
              for a, b in zip(tracks, tracks[1:]) if a is not None and b is not None]
    return float(np.mean(values)) if values else math.nan


def clip_frames(path, limit: int) -> list[np.ndarray]:
    import av

    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) >= limit:
                break
    return frames


def run_backend(analyzer, clips: dict[str, list[np.ndarray]]) -> tuple[dict, dict[str, list]]:
    found, frames, seconds, tracks = 0, 0, 0.0, {}
    for name, images in clips.items():
        analyzer.detect(images[0])  # load the models outside the timing
        track = []
        for image in images:
            start = time.perf_counter()
            faces = analyzer.detect(image)
            seconds += time.perf_counter() - start
            frames += 1
            found += len(faces)
            track.append(faces[0].landmarks if faces else None)
        tracks[name] = track
    return {"faces_found": found, "frames": frames, "ms_per_frame": round(1000 * seconds / max(frames, 1), 2),
            "frames_with_face": sum(x is not None for t in tracks.values() for x in t)}, tracks


def jitters(tracks: dict[str, list], other: dict[str, list]) -> dict[str, float]:
    """Jitter over the frames where both backends found a face: a face only one of them finds
    (a false positive, or a hard pose) would otherwise weigh on one side only."""
    from swapline.ops.temporal import landmark_jitter

    shared = {name: [x if y is not None else None for x, y in zip(track, other[name])] for name, track in tracks.items()}
    return {"jitter": _mean(motion_jitter(t) for t in shared.values()),
            "accel_jitter": _mean(landmark_jitter(t) for t in shared.values()),
            "jitter_by_clip": {name: _json_float(motion_jitter(t)) for name, t in shared.items()}}


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 5)  # JSON has no NaN


def _mean(values) -> float | None:
    values = [v for v in values if not math.isnan(v)]
    return _json_float(float(np.mean(values)) if values else math.nan)


def extraction_fps(settings, frames: list[np.ndarray], models_dir: str) -> float:
    """Frames per second through extraction proper (ops.extract.extract_faces: detect, landmarks,
    align, describe, encode) on every core, no cache: what a new source costs."""
    import hashlib
    import tempfile
    from pathlib import Path

    from swapline.ops.extract import extract_faces
    from swapline.ops.faces import FaceAnalyzer
    from swapline.ops.images import encode_jpeg

    with tempfile.TemporaryDirectory() as tmp:
        entries = []
        for index, frame in enumerate(frames):
            data = encode_jpeg(frame)
            (Path(tmp) / f"{index}.jpg").write_bytes(data)
            entries.append({"index": index, "timestamp": index / 25, "file": f"{index}.jpg",
                            "sha256": hashlib.sha256(data).hexdigest(), "photo": ""})
        start = time.perf_counter()
        extract_faces(Path(tmp), {"frames": entries}, FaceAnalyzer(settings, face_models_dir=models_dir), identity="a",
                      source="s", reference=None, max_distance=0.6, workers=0)
        return round(len(frames) / (time.perf_counter() - start), 1)


def main(argv: list[str] | None = None) -> dict:
    import cv2

    from swapline.demo_media import fetch
    from swapline.ops.faces import AnalyzerSettings, FaceAnalyzer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=150, help="frames per clip (from the start)")
    parser.add_argument("--clips", nargs="*", default=list(CLIPS))
    parser.add_argument("--models-dir", default="", help="MediaPipe models (default: where `python -m swapline.face_models` puts them)")
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)  # both backends single-threaded: a per-core comparison
    media = fetch()
    clips = {name: clip_frames(media / name, args.frames) for name in args.clips}
    print(f"clips: {', '.join(f'{n} ({len(f)} frames, {f[0].shape[1]}x{f[0].shape[0]})' for n, f in clips.items())}")
    results, tracks = {}, {}
    for backend in BACKENDS:
        analyzer = FaceAnalyzer(AnalyzerSettings(backend=backend), face_models_dir=args.models_dir)
        results[backend], tracks[backend] = run_backend(analyzer, clips)
    for backend, other in zip(BACKENDS, BACKENDS[::-1]):
        r = results[backend]
        r.update(jitters(tracks[backend], tracks[other]))
        print(f"{backend:>9}: {r['faces_found']} faces in {r['frames']} frames ({r['frames_with_face']} with one), "
              f"{r['ms_per_frame']} ms/frame, jitter {r['jitter']} IOD (second difference {r['accel_jitter']}), "
              f"by clip {r['jitter_by_clip']}")
    first = next(iter(clips.values()))
    for backend in BACKENDS:  # after the per-core timing: this one uses every core
        results[backend]["extraction_fps"] = extraction_fps(AnalyzerSettings(backend=backend), first, args.models_dir)
    print("extraction frames/s on every core (" + next(iter(clips)) + "): "
          + ", ".join(f"{b} {results[b]['extraction_fps']}" for b in BACKENDS))
    ratio = results["mediapipe"]["jitter"] / results["dlib"]["jitter"]
    accel_ratio = results["mediapipe"]["accel_jitter"] / results["dlib"]["accel_jitter"]
    print(f"jitter ratio mediapipe/dlib: {ratio:.3f} (aim <= 0.7); second-difference ratio {accel_ratio:.3f}")
    summary = {"backends": results, "jitter_ratio": round(ratio, 4), "accel_jitter_ratio": round(accel_ratio, 4),
               "frames_per_clip": args.frames, "clips": list(clips)}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
