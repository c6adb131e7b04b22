"""Hands in front of the face: the share of hand pixels a swap paints over, `hull` vs `occlusion`.

On the demo clip's frames where the woman's hand covers her mouth, with the hand drawn once by
hand (tests/fixtures/hand_frames.json): the blend mask each option gives (MediaPipe face
landmarks, MediaPipe Hands followed frame by frame as the converter does) is put back in the
frame, and the labelled hand pixels it pastes over (alpha > 0.5) are counted. With `--video`
(a converted demo video, e.g. the demo's anna_as_ben output) the same share is measured on its
pixels instead: labelled hand pixels that changed from the source by more than 12 levels.
Also: the hand finding's cost per frame.

    python -m benchmarks.hand_masks [--video converted.mp4]

Prints human-readable lines, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

LABELS = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "hand_frames.json"
SIZE = 256  # the crop side the masks are drawn at


def labelled(polygons: list, shape: tuple[int, int]) -> np.ndarray:
    import cv2

    mask = np.zeros(shape, np.uint8)
    for polygon in polygons:
        cv2.fillPoly(mask, [np.array(polygon, np.int32)], 1)
    return mask.astype(bool)


def frames_of(path: Path, wanted: set[int]) -> dict[int, np.ndarray]:
    import av

    out = {}
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                out[index] = frame.to_ndarray(format="rgb24")
            if index >= max(wanted):
                break
    return out


def blend_alpha(points: np.ndarray, mask: str, occluder: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    from swapline.ops import occlusion
    from swapline.ops.alignment import alignment_matrix, hull_mask, transform_points
    from swapline.ops.blend import BlendOptions, face_mask

    matrix = alignment_matrix(points, SIZE, 0.3)
    hull = hull_mask(transform_points(points, matrix), SIZE, 0)
    cut = None if occluder is None else occlusion.warp_to_crop(occluder, matrix, SIZE)
    return occlusion.to_frame(face_mask(hull, None, BlendOptions(mask=mask), cut), matrix, shape)


def main(argv: list[str] | None = None) -> dict:
    from swapline.demo_media import fetch
    from swapline.ops import hands
    from swapline.ops.faces import AnalyzerSettings, FaceAnalyzer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, help="a converted demo video (anna_as_ben) to measure on its pixels")
    args = parser.parse_args(argv)
    labels = json.loads(LABELS.read_text())
    hand_frames = sorted(int(k) for k in labels["frames"])
    source = frames_of(fetch() / labels["video"], set(range(hand_frames[0] - 20, hand_frames[-1] + 1)))
    analyzer = FaceAnalyzer(AnalyzerSettings(backend="mediapipe"))
    tracker, seconds, masks = hands.HandTracker(""), [], {}
    for index in sorted(source):  # every frame in order, as the converter feeds the tracker
        face = analyzer.detect(source[index])[0]
        start = time.perf_counter()
        found = tracker(source[index], [face.bbox])
        seconds.append(time.perf_counter() - start)
        if index in hand_frames:
            masks[index] = (face.landmarks, hands.hand_mask(source[index].shape, found))
    painted: dict[str, list[float]] = {"hull": [], "occlusion": []}
    for index in hand_frames:
        truth = labelled(labels["frames"][str(index)], source[index].shape[:2])
        points, occluder = masks[index]
        for name in painted:
            alpha = blend_alpha(points, name, occluder if name == "occlusion" else None, source[index].shape[:2])
            painted[name].append(round(float((alpha[truth] > 0.5).mean()), 4))
    result = {"frames": hand_frames, "painted_over": painted,
              "mean": {k: round(float(np.mean(v)), 4) for k, v in painted.items()},
              "hand_ms_per_frame": round(1000 * float(np.median(seconds)), 1)}
    print(f"labelled hand pixels painted over (blend alpha > 0.5), frames {hand_frames}: "
          f"hull {painted['hull']} (mean {result['mean']['hull']}), occlusion {painted['occlusion']} "
          f"(mean {result['mean']['occlusion']}); hand finding {result['hand_ms_per_frame']} ms/frame (median)")
    if args.video:
        converted = frames_of(args.video, set(hand_frames))
        changed = [round(float((np.abs(converted[i].astype(int) - source[i]).max(axis=2)[
            labelled(labels["frames"][str(i)], source[i].shape[:2])] > 12).mean()), 4) for i in hand_frames]
        result["video"] = {"path": str(args.video), "hand_pixels_changed": changed}
        print(f"{args.video}: labelled hand pixels changed from the source: {changed}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
