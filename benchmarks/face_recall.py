"""Detection recall per face backend: faces found of faces present, on labelled stills and on
photos of small faces.

- The demo stills, with the faces counted by hand once (tests/fixtures/faces_labelled.json):
  the group photo, a 2560x1912 photo with one turned face, five single-face photos.
- Small faces: each demo still's labelled faces shrunk to 75-125 px wide and placed on a grey
  1920x1080 canvas, four to a canvas (present by construction).

A detection finds the labelled face whose box holds its centre; one in no box (and no ambiguous
region) is a false positive.

    python -m benchmarks.face_recall [--models-dir DIR]

Prints human-readable lines, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "faces_labelled.json"
SMALL_WIDTHS = (75, 90, 105, 125)


def labelled_stills(media: Path) -> dict[str, tuple[np.ndarray, list, list]]:
    """name -> (RGB image, face boxes, ambiguous boxes)."""
    from PIL import Image

    labels = json.loads(FIXTURE.read_text())["images"]
    return {name: (np.asarray(Image.open(media / name).convert("RGB")), item["faces"], item["ambiguous"])
            for name, item in labels.items()}


def small_face_canvases(stills: dict) -> dict[str, tuple[np.ndarray, list, list]]:
    """Canvases of 1920x1080 holding four labelled faces each, 75-125 px wide."""
    import cv2

    crops = []
    for image, boxes, _ in stills.values():
        for x0, y0, x1, y1 in boxes:
            pad = (x1 - x0) // 3  # some head and background around the face, as in a photo
            crops.append(image[max(0, y0 - pad):y1 + pad, max(0, x0 - pad):x1 + pad])
    canvases = {}
    for start in range(0, len(crops), 4):
        canvas, boxes = np.full((1080, 1920, 3), 128, np.uint8), []
        for slot, crop in enumerate(crops[start:start + 4]):
            width = SMALL_WIDTHS[slot % len(SMALL_WIDTHS)]
            scale = width / (crop.shape[1] / (1 + 2 / 3))  # the face (not the padded crop) is `width` px
            small = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            x, y = 100 + slot * 450, 300 + (slot % 2) * 350
            small = small[:1080 - y, :1920 - x]
            canvas[y:y + small.shape[0], x:x + small.shape[1]] = small
            boxes.append([x, y, x + small.shape[1], y + small.shape[0]])
        canvases[f"small_faces_{start // 4}"] = (canvas, boxes, [])
    return canvases


def score(detections: list, faces: list, ambiguous: list) -> tuple[int, int]:
    """(labelled faces found, false positives) for detections' boxes (x0, y0, x1, y1)."""
    def inside(point, box):
        return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]

    found, false = set(), 0
    for box in detections:
        centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        hits = [i for i, face in enumerate(faces) if inside(centre, face)]
        found.update(hits[:1])
        false += not hits and not any(inside(centre, region) for region in ambiguous)
    return len(found), false


def recall(analyzer, images: dict) -> dict:
    present = found = false = 0
    seconds, per_image = 0.0, {}
    for name, (image, faces, ambiguous) in images.items():
        start = time.perf_counter()
        detected = [f.bbox for f in analyzer.detect(image)]
        seconds += time.perf_counter() - start
        hit, fp = score(detected, faces, ambiguous)
        present, found, false = present + len(faces), found + hit, false + fp
        per_image[name] = f"{hit}/{len(faces)}" + (f" +{fp} false" if fp else "")
    return {"found": found, "present": present, "recall": round(found / max(present, 1), 4), "false_positives": false,
            "ms_per_image": round(1000 * seconds / max(len(images), 1), 1), "per_image": per_image}


def main(argv: list[str] | None = None) -> dict:
    from swapline.demo_media import fetch
    from swapline.ops.faces import AnalyzerSettings, FaceAnalyzer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", default="")
    args = parser.parse_args(argv)
    stills = labelled_stills(fetch())
    sets = {"stills": stills, "small_faces": small_face_canvases(stills)}
    results = {}
    for backend in ("dlib", "mediapipe"):
        analyzer = FaceAnalyzer(AnalyzerSettings(backend=backend), face_models_dir=args.models_dir)
        analyzer.detect(next(iter(stills.values()))[0])  # models load outside the timing
        results[backend] = {name: recall(analyzer, images) for name, images in sets.items()}
        for name, r in results[backend].items():
            print(f"{backend:>9} {name}: {r['found']}/{r['present']} faces (recall {r['recall']}), "
                  f"{r['false_positives']} false, {r['ms_per_image']} ms/image; {r['per_image']}")
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
