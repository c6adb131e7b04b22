"""Evidence that a face model works, measured on faces it never trained on.

Three questions, each answered on the held-out 5% of each faceset (split_holdout), read from
the faceset's decoded memory maps (ops.trainset), not by decoding its PNGs again:
  reconstruction - does decoder a rebuild A (and b rebuild B)? L1, SSIM, PSNR at model size.
  identity       - does A decoded by b look like B? dlib ResNet embeddings of each swap,
                   compared with the centroids of A's and B's real faces (the faceset's stored
                   embedding sample, ops.identity, minus held-out faces): the share of A->B
                   swaps nearer B's centroid is the number that says "it swaps".
  pose           - does the swap keep the source's expression and head pose? 68 landmarks of
                   the swap against those of its source, in inter-ocular distances, and the
                   yaw/pitch difference.
Identity and pose look at JUDGED_FACES held-out faces per side at most: each face costs six
dlib embeddings (~75 ms each on CPU, and dlib holds the GIL), so all 230 held-out faces of a
4,600-face set took over a minute. Plus a preview PNG and the loss curve PNG. No dagster here; torch, cv2 and dlib load lazily
through the modules that own them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

HOLDOUT_SHARE = 0.05
JUDGED_FACES = 24  # held-out faces per side for identity and pose: 144 embeddings, ~11 s on CPU
PREVIEW_FACES = 8
EMBED_SIZE = 150  # dlib's face chip side: smaller swaps are upscaled to it before embedding


def split_holdout(n: int, share: float = HOLDOUT_SHARE, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices), both sorted. A seeded permutation, not the table's
    tail: faces are stored source by source, so a tail would hold out one video only. At least
    one face is held out when n >= 2, and at least one is always left to train on."""
    if n < 0 or not 0.0 <= share < 1.0:
        raise ValueError(f"need n >= 0 and 0 <= share < 1, got n={n}, share={share}")
    n_val = 0 if n < 2 else min(n - 1, max(1, round(n * share)))
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


# ---------------------------------------------------------------- reconstruction

def _to_model(faces: np.ndarray, resolution: int, device) -> Any:
    """uint8 (N,S,S,3) -> float (N,3,R,R) in [0,1] on device."""
    import torch

    from swapline.ops.inference import images_to_device

    return images_to_device(faces, resolution, torch.device(device)).float() / 255.0


def reconstruction_metrics(model, faces: np.ndarray, side: str, device: str = "cpu") -> dict[str, float]:
    """Mean L1 (0..1 scale), SSIM and PSNR (dB) of decoder `side` rebuilding `faces`, at the
    model resolution: resizing the output up would blur the target's detail into the score."""
    import torch
    from pytorch_msssim import ssim

    x = _to_model(faces, model.config.resolution, device)  # (N,3,R,R)
    with torch.inference_mode():
        y = torch.cat([model(x[i : i + 64], side)[0].float() for i in range(0, len(x), 64)])  # (N,3,R,R)
    mse = (y - x).square().flatten(1).mean(1).clamp_min(1e-10)  # (N,); floor: identical -> 100 dB
    return {
        "l1": float((y - x).abs().mean()),
        "ssim": float(ssim(y, x, data_range=1.0, size_average=True)),
        "psnr": float((10 * torch.log10(1.0 / mse)).mean()),
    }


# ---------------------------------------------------------------- identity and pose

def crop_points(landmarks: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Source-frame landmarks (68*2,) through the alignment matrix (2*3,) -> crop px (68,2)."""
    from swapline.ops.faces import transform_points

    return transform_points(np.asarray(landmarks, np.float32).reshape(68, 2), np.asarray(matrix, np.float64).reshape(2, 3))


def _box(points: np.ndarray, size: int) -> tuple[int, int, int, int]:
    x0, y0 = np.clip(np.floor(points.min(axis=0)), 0, size - 1).astype(int)
    x1, y1 = np.clip(np.ceil(points.max(axis=0)), 1, size).astype(int)
    return int(x0), int(y0), int(x1), int(y1)


def _upscaled(crops: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crops smaller than dlib's 150 px chip, upscaled to it (points scaled alike)."""
    import cv2

    size = crops.shape[1]
    if size >= EMBED_SIZE:
        return crops, points
    scale = EMBED_SIZE / size
    big = np.stack([cv2.resize(c, (EMBED_SIZE, EMBED_SIZE), interpolation=cv2.INTER_CUBIC) for c in crops])
    return big, points * scale


def embed_crops(analyzer, crops: np.ndarray, points: np.ndarray, cache_dir: Path | None = None) -> np.ndarray:
    """(N,S,S,3) crops with their (N,68,2) crop-px landmarks -> (N,128) dlib embeddings. With
    `cache_dir`, each is cached by exactly what it is computed from (crop and landmarks): real
    faces are embedded once, not again by every evaluation of a resumed model (~77 ms each)."""
    from swapline.ops.faces import DetectedFace

    def one(crop: np.ndarray, pts: np.ndarray) -> np.ndarray:
        crop, pts = _upscaled(crop[None], pts[None])
        return analyzer.embed(crop[0], DetectedFace(bbox=_box(pts[0], crop.shape[1]), landmarks=pts[0], score=1.0))

    return np.stack([_cached(one, c, p, cache_dir) for c, p in zip(crops, points)]).reshape(-1, 128)


def _cached(compute, crop: np.ndarray, points: np.ndarray, cache_dir: Path | None) -> np.ndarray:
    import hashlib
    import io

    from swapline.ops.storage import atomic_write_bytes

    if cache_dir is None:
        return compute(crop, points)
    digest = hashlib.sha256(b"crop:" + np.ascontiguousarray(crop).tobytes() + np.asarray(points, np.float32).tobytes()).hexdigest()
    path = Path(cache_dir) / digest[:2] / f"{digest}.npy"
    try:
        return np.load(path)
    except (OSError, ValueError):  # absent, or damaged: computed again
        pass
    embedding = compute(crop, points)
    buffer = io.BytesIO()
    np.save(buffer, embedding)
    atomic_write_bytes(path, buffer.getvalue())
    return embedding


def _nearer_share(embeddings: np.ndarray, target: np.ndarray, other: np.ndarray) -> float:
    d_target = np.linalg.norm(embeddings - target[None], axis=1)
    d_other = np.linalg.norm(embeddings - other[None], axis=1)
    return float((d_target < d_other).mean()) if len(embeddings) else math.nan


def identity_transfer(analyzer, model, faces_a: np.ndarray, faces_b: np.ndarray, points_a: np.ndarray,
                      points_b: np.ndarray, device: str = "cpu", centroids: tuple[np.ndarray, np.ndarray] | None = None,
                      cache_dir: Path | None = None) -> dict[str, float]:
    """Share of A faces decoded by b whose embedding is nearer B's centroid than A's
    ("a_to_b"), and the reverse; "a_to_a"/"b_to_b" are the same test on reconstructions, the
    control that says the embeddings still recognise people at the model's resolution.

    faces_*: held-out uint8 crops (N,S,S,3); points_*: their landmarks in crop px (N,68,2).
    centroids: (A's, B's) mean embeddings (128,), best from faces other than these (evaluate
    uses the faceset's embedding sample minus held-out faces); by default the real faces given here.

    The swaps are embedded with the SOURCE crop's landmarks, not with a fresh detection on
    the swap: the swap is decoded in the source crop's frame, so the face sits where the
    source's landmarks say, while HOG on a blurry 64 px decode misses faces often enough
    that the share would count the detector's failures (and drop the worst swaps)."""
    from swapline.ops.inference import swap_batch

    # The real faces' embeddings are cached (cache_dir); the swaps change with every checkpoint.
    real = {"a": embed_crops(analyzer, faces_a, points_a, cache_dir), "b": embed_crops(analyzer, faces_b, points_b, cache_dir)}
    centre = dict(zip("ab", centroids)) if centroids is not None else {s: e.mean(0) for s, e in real.items()}
    out = {}
    for src, faces, points in (("a", faces_a, points_a), ("b", faces_b, points_b)):
        for dst in "ab":
            swapped = swap_batch(model, faces, dst, device)[0]  # (N,S,S,3)
            other = "b" if dst == "a" else "a"
            out[f"{src}_to_{dst}"] = _nearer_share(embed_crops(analyzer, swapped, points), centre[dst], centre[other])
    # Chance level for these faces: the real faces themselves on the same test (~1.0 each).
    out["real_a"] = _nearer_share(real["a"], centre["a"], centre["b"])
    out["real_b"] = _nearer_share(real["b"], centre["b"], centre["a"])
    return out


def _landmarks_in_box(analyzer, crop: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """68 landmarks (68,2) found in `box` of `crop` by the analyzer's landmark model. The box
    comes from the source, not a detector: landmark models refine a box, so the points
    follow what is drawn in the crop, and no detector miss drops a face from the mean."""
    fan = getattr(analyzer, "_fan", None)
    if fan is not None:
        return np.asarray(fan.landmarks_batch([crop], [[box]])[0][0], np.float32)
    return analyzer._dlib_landmarks(crop, [box])[0]


def pose_preservation(analyzer, model, faces: np.ndarray, points: np.ndarray, to_side: str,
                      device: str = "cpu") -> dict[str, float]:
    """Landmarks of each swap against those of its source (both found by the same model in
    the same box, so the landmark model's own bias cancels), normalised by the source's
    inter-ocular distance (outer eye corners 36-45), and |yaw| / |pitch| differences in degrees."""
    from swapline.ops.faces import head_pose
    from swapline.ops.inference import swap_batch

    swapped = swap_batch(model, faces, to_side, device)[0]
    big_src, pts = _upscaled(faces, points)
    big_swap, _ = _upscaled(swapped, points)
    errors, yaw, pitch = [], [], []
    for src, swap, p in zip(big_src, big_swap, pts):
        box = _box(p, src.shape[0])
        ls, lw = _landmarks_in_box(analyzer, src, box), _landmarks_in_box(analyzer, swap, box)
        iod = max(float(np.linalg.norm(ls[45] - ls[36])), 1.0)
        errors.append(float(np.linalg.norm(lw - ls, axis=1).mean()) / iod)
        ps, pw = head_pose(ls, src.shape), head_pose(lw, swap.shape)
        yaw.append(abs(ps[0] - pw[0]))
        pitch.append(abs(ps[1] - pw[1]))
    return {"landmark_error_iod": float(np.nanmean(errors)), "yaw_diff": float(np.nanmean(yaw)),
            "pitch_diff": float(np.nanmean(pitch))}


# ---------------------------------------------------------------- pictures

def _png(image_rgb: np.ndarray) -> bytes:
    import cv2

    ok, data = cv2.imencode(".png", np.ascontiguousarray(image_rgb[..., ::-1]))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return data.tobytes()


def preview_png(model, faces_a: np.ndarray, faces_b: np.ndarray, device: str = "cpu", n: int = PREVIEW_FACES) -> bytes:
    """PNG of rows A, A->A, A->B, B, B->B, B->A, `n` faces each, at the model resolution."""
    from swapline.ops.inference import preview_grid

    return _png(preview_grid(model, faces_a, faces_b, n=n, device=device))


def loss_curve_png(losses: list, width: int = 640, height: int = 320) -> bytes:
    """PNG of loss_a (red) and loss_b (blue) against step; losses: [(step, loss_a, loss_b)]."""
    import cv2

    canvas = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 60, width - 10, 10, height - 30
    cv2.rectangle(canvas, (left, top), (right, bottom), (0, 0, 0), 1)
    rows = np.asarray([r[:3] for r in losses], np.float64).reshape(-1, 3)
    rows = rows[np.isfinite(rows).all(axis=1)]
    if len(rows):
        steps, values = rows[:, 0], rows[:, 1:]
        lo, hi = float(values.min()), float(values.max())
        hi = hi if hi > lo else lo + 1e-6
        s0, s1 = float(steps.min()), float(max(steps.max(), steps.min() + 1))
        x = left + (steps - s0) / (s1 - s0) * (right - left)
        for column, colour in ((0, (220, 40, 40)), (1, (40, 40, 220))):
            y = bottom - (values[:, column] - lo) / (hi - lo) * (bottom - top)
            cv2.polylines(canvas, [np.stack([x, y], 1).round().astype(np.int32)], False, colour, 2, cv2.LINE_AA)
        font = cv2.FONT_HERSHEY_SIMPLEX
        for text, pos in ((f"{hi:.3f}", (2, top + 12)), (f"{lo:.3f}", (2, bottom)), (f"{s0:.0f}", (left, height - 10)),
                          (f"step {s1:.0f}", (right - 90, height - 10)), ("loss a", (left + 10, top + 20))):
            cv2.putText(canvas, text, pos, font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(canvas, "loss a", (left + 10, top + 20), font, 0.4, (220, 40, 40), 1, cv2.LINE_AA)
        cv2.putText(canvas, "loss b", (left + 70, top + 20), font, 0.4, (40, 40, 220), 1, cv2.LINE_AA)
    return _png(canvas)


# ---------------------------------------------------------------- everything

def _load(faceset: Path, share: float, seed: int, analyzer, cache_dir: Path | None) -> dict[str, Any]:
    """Held-out crops (N,S,S,3) with crop-px landmarks (N,68,2), a few training crops for the
    preview, and the centroid (128,) of the faceset's embedding sample without held-out faces."""
    from swapline.ops.identity import faceset_embeddings
    from swapline.ops.trainset import faceset_parquet, open_faceset, take

    decoded = open_faceset(faceset)
    train_idx, val_idx = split_holdout(len(decoded), share, seed)
    ids, embeddings = faceset_embeddings(faceset_parquet(faceset).parent, analyzer, cache_dir)
    held_out = set(decoded.face_ids[val_idx].tolist())
    kept = [i for i, face_id in enumerate(ids) if face_id not in held_out] or list(range(len(ids)))
    return {"val": take(decoded.faces, val_idx), "val_points": decoded.points[val_idx],
            "train": take(decoded.faces, train_idx[:PREVIEW_FACES]), "centroid": embeddings[kept].mean(0)}


def _judged(side: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """At most JUDGED_FACES of the held-out faces, spread evenly over them."""
    n = len(side["val"])
    pick = np.unique(np.linspace(0, n - 1, min(n, JUDGED_FACES)).astype(int))
    return side["val"][pick], side["val_points"][pick]


def evaluate(checkpoint_dir: Path, faceset_a_path: Path, faceset_b_path: Path, analyzer, device: str = "cpu",
             share: float = HOLDOUT_SHARE, seed: int = 0, cache_dir: Path | None = None) -> dict[str, Any]:
    """Every metric above on the held-out faces of both facesets (the split the trainer uses
    with the same share and seed). Facesets: folders or their faceset.parquet; `cache_dir`:
    the embedding cache, used only for a faceset stored without its embeddings. Numbers
    under their names; PNG bytes under "images"."""
    from swapline.ops.checkpoint import read_state
    from swapline.ops.inference import load_for_inference

    model = load_for_inference(Path(checkpoint_dir), device)
    a, b = (_load(path, share, seed, analyzer, cache_dir) for path in (faceset_a_path, faceset_b_path))
    if len(a["val"]) == 0 or len(b["val"]) == 0:
        raise ValueError("a faceset has fewer than 2 faces: nothing to hold out")
    (ja, pa), (jb, pb) = _judged(a), _judged(b)
    state = read_state(Path(checkpoint_dir))
    losses = state.get("extra", {}).get("losses", [])
    return {
        "step": state.get("step"),
        "held_out": {"a": len(a["val"]), "b": len(b["val"])},
        "judged": {"a": len(ja), "b": len(jb)},  # of them, the faces identity and pose looked at
        "reconstruction": {"a_to_a": reconstruction_metrics(model, a["val"], "a", device),
                           "b_to_b": reconstruction_metrics(model, b["val"], "b", device)},
        "identity": identity_transfer(analyzer, model, ja, jb, pa, pb, device, (a["centroid"], b["centroid"]), cache_dir),
        "pose": {"a_to_b": pose_preservation(analyzer, model, ja, pa, "b", device),
                 "b_to_a": pose_preservation(analyzer, model, jb, pb, "a", device)},
        # Held-out faces first, topped up with training ones when fewer than 8 are held out.
        "images": {"preview.png": preview_png(model, np.concatenate([a["val"], a["train"]]), np.concatenate([b["val"], b["train"]]), device),
                   "loss_curve.png": loss_curve_png(losses)},
    }
