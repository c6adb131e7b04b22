"""Conversion quality: jitter, flicker, colour gap and seams, as ratios to the source video.

    python -m benchmarks.convert_quality [--seconds 8] [--steps 600] [--modes none mean_std histogram seamless]

A lite 64 px model is trained --steps on faces of the demo clips (anna: WolfgangLanger_Pexels,
ben: single_face + face_noface), then the first --seconds of anna's clip are converted to
ben's face with smoothing on and off, for each colour-match mode. On each output:
- landmark jitter: landmarks detected on the output (dlib), frame-to-frame acceleration per
  inter-ocular distance (ops.temporal.landmark_jitter), over the same on the source;
- flicker: frame-to-frame second difference of the face region's mean Lab colour, over the source's;
- colour gap: mean CIE76 ΔE between the swapped face region and the original face region, per
  pixel (`delta_e`: counts every difference of features too, as a different person has them)
  and between the regions' mean colours (`mean_color_gap`, ΔE units: what colour matching fixes);
- seam: gradient energy along the blend-mask boundary over the source frame's (~1 = no seam).
The face region is the landmark hull of the source's own detections in that frame.
Human lines, then one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

SIZE = 128


def _crops(analyzer, frames):
    from swapline.ops.faces import align_face, alignment_matrix

    out = []
    for frame in frames:
        if faces := analyzer.detect(frame):
            out.append(align_face(frame, alignment_matrix(faces[0].landmarks, SIZE, 0.3), SIZE))
    return np.stack(out)


def _model(analyzer, media: Path, steps: int, folder: Path):
    from swapline.ops.inference import load_for_inference
    from swapline.ops.media import iter_video
    from swapline.ops.model import ModelConfig
    from swapline.ops.train import TrainConfig, train

    anna = _crops(analyzer, [f for i, _, f in iter_video(media / "WolfgangLanger_Pexels.mp4") if i % 3 == 0])
    ben = _crops(analyzer, [f for clip in ("single_face.mp4", "face_noface.mov")
                            for i, _, f in iter_video(media / clip) if i % 2 == 0])
    print(f"training lite@64 for {steps} steps on {len(anna)} + {len(ben)} faces", flush=True)
    train(anna, ben, None, None, ModelConfig(), TrainConfig(iterations=steps, batch_size=16), "cpu", checkpoint_dir=folder)
    return load_for_inference(folder)


def _regions(analyzer, frames):
    """Per frame: source landmarks (68,2) or None, and the face region mask (H,W) float32."""
    import cv2

    from swapline.ops.faces import alignment_matrix, hull_mask, invert_matrix, transform_points

    out = []
    for frame in frames:
        faces = analyzer.detect(frame)
        if not faces:
            out.append((None, None))
            continue
        landmarks = faces[0].landmarks
        matrix = alignment_matrix(landmarks, SIZE, 0.3)
        hull = hull_mask(transform_points(landmarks, matrix), SIZE, 0)
        full = cv2.warpAffine(hull, invert_matrix(matrix), frame.shape[1::-1], flags=cv2.INTER_LINEAR)
        out.append((landmarks, full))
    return out


def _measure(analyzer, frames, regions) -> dict:
    """Jitter of landmarks found on `frames`, flicker, and (vs the source) colour gap and seam."""
    import cv2

    landmarks = [faces[0].landmarks if (faces := analyzer.detect(f)) else None for f in frames]
    means = np.array([cv2.cvtColor(f, cv2.COLOR_RGB2LAB)[m > 0.5].mean(0) if m is not None else np.full(3, np.nan)
                      for f, (_, m) in zip(frames, regions)])
    return {"landmarks": landmarks, "means": means}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--modes", nargs="+", default=["none", "mean_std", "histogram", "seamless"])
    parser.add_argument("--erosion", type=int, default=0, help="mask erosion in face px (ConvertOptions.erosion)")
    args = parser.parse_args(argv)

    from swapline.demo_media import fetch
    from swapline.ops.blend import boundary_gradient_ratio, delta_e
    from swapline.ops.convert import Converter, ConvertOptions, convert_video
    from swapline.ops.faces import AnalyzerSettings, FaceAnalyzer
    from swapline.ops.media import iter_video, write_video
    from swapline.ops.provenance import container_tags
    from swapline.ops.temporal import color_flicker, landmark_jitter

    media, analyzer = fetch(), FaceAnalyzer(AnalyzerSettings(face_size=SIZE))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = _model(analyzer, media, args.steps, tmp / "model")
        frames = [f for _, t, f in iter_video(media / "WolfgangLanger_Pexels.mp4") if t < args.seconds]
        clip = tmp / "clip.mp4"
        write_video(frames, clip, 24000 / 1001, crf=12)
        source = [f for _, _, f in iter_video(clip)]
        regions = _regions(analyzer, source)
        base = _measure(analyzer, source, regions)
        src_jitter, src_flicker = landmark_jitter(base["landmarks"]), color_flicker(base["means"])
        print(f"source: {len(source)} frames, landmark jitter {src_jitter:.4f} IOD, flicker {src_flicker:.3f}")
        results = {}
        for mode in args.modes:
            for smooth in (True, False):
                name = f"{mode}{'' if smooth else '_unsmoothed'}"
                converter = Converter(analyzer, model, "b", "cpu", ConvertOptions(color_match=mode, smooth=smooth, erosion=args.erosion))
                convert_video(clip, tmp / f"{name}.mp4", converter, tags=container_tags("q", "q"))
                output = [f for _, _, f in iter_video(tmp / f"{name}.mp4")]
                got = _measure(analyzer, output, regions)
                pairs = [(o, s, m) for o, s, (_, m) in zip(output, source, regions) if m is not None]
                results[name] = {
                    "jitter_ratio": round(landmark_jitter(got["landmarks"]) / src_jitter, 3),
                    "flicker_ratio": round(color_flicker(got["means"]) / src_flicker, 3),
                    "delta_e": round(float(np.nanmean([delta_e(o, s, m) for o, s, m in pairs])), 2),
                    # 8-bit OpenCV Lab: L is scaled by 255/100, a and b offset by 128 (unit steps).
                    "mean_color_gap": round(float(np.nanmean(np.linalg.norm(
                        (got["means"] - base["means"]) * [100 / 255, 1, 1], axis=1))), 2),
                    "seam_ratio": round(float(np.nanmean([boundary_gradient_ratio(o, s, m) for o, s, m in pairs])), 3),
                    "faces_found_on_output": sum(x is not None for x in got["landmarks"]),
                }
                print(f"{name:22s} {results[name]}", flush=True)
    figures = {"frames": len(source), "source_jitter_iod": round(src_jitter, 5), "source_flicker": round(src_flicker, 4),
               "train_steps": args.steps, "results": results}
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
