"""The target video analysed once, as data: every frame's faces, their tracks and identity evidence.

Conversion used to detect the target's faces while rendering, inside the GPU pool, again on
every re-render (more training, a changed option). Here one pass in a child process decodes
every frame (which is also the check that the file decodes completely), detects each face,
links faces across frames into tracks by box overlap, and embeds each track when it appears
and every `reverify` frames. The table (target_faces.parquet) then serves conversion (which
frames hold which faces, and which of them are the person to replace: decided at render from
the embeddings against that person's faceset, so a new faceset does not mean detecting again)
and the coverage checks (pose and light of every frame, not a sample).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np

from swapline.ops.detections import box_iou
from swapline.ops.faces import DetectedFace, embedding_distance

logger = logging.getLogger(__name__)

TABLE = "target_faces.parquet"
LINK_IOU = 0.3  # a face overlapping one of the previous frame this much is the same appearance
REVERIFY = 30  # frames between two embeddings of one track: a cut can swap who is in the box


class _Tracks:
    """Track ids by overlap with the previous frame; says when a face needs a fresh embedding."""

    def __init__(self, reverify: int):
        self.reverify, self.next_id = reverify, 0
        self.previous: list[tuple[tuple, int, int, int]] = []  # (bbox, track, age, evidence row)

    def assign(self, faces: list[DetectedFace], first_row: int) -> list[tuple[int, int | None]]:
        """(track, evidence row or None when this face must be embedded) per face."""
        out, now = [], []
        for k, face in enumerate(faces):
            match = max(self.previous, key=lambda p: box_iou(p[0], face.bbox), default=None)
            if match is not None and box_iou(match[0], face.bbox) > LINK_IOU and match[2] < self.reverify:
                out.append((match[1], match[3]))
                now.append((face.bbox, match[1], match[2] + 1, match[3]))
                continue
            track = match[1] if match is not None and box_iou(match[0], face.bbox) > LINK_IOU else self._new()
            out.append((track, None))
            now.append((face.bbox, track, 0, first_row + k))
        self.previous = now
        return out

    def _new(self) -> int:
        self.next_id += 1
        return self.next_id - 1


def _face_row(analyzer, rgb: np.ndarray, index: int, t: float, face: DetectedFace, track: int, evidence: int,
              embed: bool) -> dict[str, Any]:
    from swapline.ops.faces import align_face, alignment_matrix, head_pose, matrix_scale
    from swapline.ops.facetable import crop_metrics

    size, padding = analyzer.settings.face_size, analyzer.settings.padding
    matrix = alignment_matrix(face.landmarks, size, padding)  # (2, 3)
    metrics = crop_metrics(align_face(rgb, matrix, size), padding)
    yaw, pitch, roll = head_pose(face.landmarks, rgb.shape)
    return {
        "frame_index": index, "timestamp": t, "bbox": [int(v) for v in face.bbox], "score": float(face.score),
        "landmarks": np.asarray(face.landmarks, np.float32).reshape(-1).tolist(),  # (68*2,)
        "track": track, "evidence": evidence,
        "embedding": analyzer.embed(rgb, face).astype(np.float32).tolist() if embed else None,  # (128,)
        "yaw": yaw, "pitch": pitch, "roll": roll, "brightness": metrics["brightness"], "contrast": metrics["contrast"],
        "face_size": size / (1.0 + 2.0 * padding) / matrix_scale(matrix),
    }


def _analyse(video: str, out: str, settings, fan_weights_dir: str, device: str, seeds: dict[int, list[DetectedFace]],
             progress_file: str | None, reverify: int) -> dict[str, Any]:
    """The child's work: decode, detect (seeded frames excepted), track, embed, write the table."""
    import pandas as pd

    from swapline.ops.faces import FaceAnalyzer
    from swapline.ops.media import _check_complete, iter_timed, probe
    from swapline.ops.storage import atomic_write_bytes

    analyzer = FaceAnalyzer(settings, fan_weights_dir=fan_weights_dir, device=device)
    info, tracks, rows = probe(video), _Tracks(reverify), []
    counts = {"frames": 0, "detections_run": 0, "seeded": 0, "embeddings": 0}
    last = [time.monotonic()]

    def finish(index: int, t, rgb: np.ndarray, faces: list[DetectedFace]) -> None:
        for face, (track, evidence) in zip(faces, tracks.assign(faces, len(rows))):
            counts["embeddings"] += evidence is None
            rows.append(_face_row(analyzer, rgb, index, float(t), face, track, len(rows) if evidence is None else evidence,
                                  evidence is None))
        counts["frames"] += 1
        if progress_file and time.monotonic() - last[0] > 1.0:
            last[0] = time.monotonic()
            atomic_write_bytes(progress_file, f"{counts['frames']} {info.frames or 0}".encode())

    for index, t, rgb, faces in _detected(analyzer, iter_timed(video), seeds):
        counts["seeded" if index in seeds else "detections_run"] += 1
        finish(index, t, rgb, faces)
    _check_complete(Path(video), info, counts["frames"])
    pd.DataFrame(rows, columns=_COLUMNS).to_parquet(out, index=False)
    return {**counts, "faces": len(rows), "tracks": tracks.next_id, "width": info.width, "height": info.height,
            "fps": info.fps, "duration": info.duration, "audio": info.has_audio}


def _detected(analyzer, frames, seeds: dict[int, list[DetectedFace]]):
    """(index, t, rgb, faces) in frame order. MediaPipe detects in a thread per core (its
    interpreters are per thread and release the GIL; a 1080p target analysed at one core's pace
    on a 16-core machine); tracking and embedding stay in the caller's thread, in order. The
    dlib backends detect in the caller's thread: dlib runs one call at a time anyway
    (ops.detectors.LOCK), and dlib detection in threads beside the embedding once crashed this
    child (SIGSEGV)."""
    if analyzer.resolved_backend != "mediapipe" or (os.cpu_count() or 1) < 2:
        for index, t, rgb in frames:
            yield index, t, rgb, seeds[index] if index in seeds else analyzer.detect(rgb)
        return
    workers = os.cpu_count() or 2
    with ThreadPoolExecutor(workers, thread_name_prefix="target-detect") as pool:
        ahead: deque = deque()
        for index, t, rgb in frames:
            ahead.append((index, t, rgb, None if index in seeds else pool.submit(analyzer.detect, rgb)))
            while len(ahead) > 2 * workers:  # bounded: decoded frames wait in memory
                yield _resolved(ahead.popleft(), seeds)
        while ahead:
            yield _resolved(ahead.popleft(), seeds)


def _resolved(item: tuple, seeds: dict[int, list[DetectedFace]]) -> tuple:
    index, t, rgb, future = item
    return index, t, rgb, seeds[index] if future is None else future.result()


_COLUMNS = ["frame_index", "timestamp", "bbox", "score", "landmarks", "track", "evidence", "embedding",
            "yaw", "pitch", "roll", "brightness", "contrast", "face_size"]


def analyse_target(video: Path, out: Path, settings, *, fan_weights_dir: str = "", device: str = "cpu",
                   seeds: dict[int, list[DetectedFace]] | None = None,
                   progress: Callable[[int, int], None] | None = None, reverify: int = REVERIFY) -> dict[str, Any]:
    """Analyse every frame of `video` in a child process (damaged media can crash the decoder)
    into the table `out`; returns counts and the video's facts. `seeds`: frame index -> faces
    already found there (by extraction, when the target is also a training source)."""
    from swapline.ops.sandbox import run_isolated

    progress_file = out.with_name(out.name + ".progress")
    done = threading.Event()

    def watch() -> None:  # the child writes "done total"; relay it to the caller's progress lines
        while not done.wait(2.0):
            if progress and progress_file.is_file():
                done_s, total = progress_file.read_text().split()
                progress(int(done_s), int(total))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        return run_isolated(_analyse, str(video), str(out), settings, fan_weights_dir, device, seeds or {},
                            str(progress_file) if progress else None, reverify, label=f"analysing {video.name}")
    finally:
        done.set()
        progress_file.unlink(missing_ok=True)


def read_table(path: Path):
    import pandas as pd

    return pd.read_parquet(path)


def planned_faces(table, reference: np.ndarray | None, max_distance: float) -> dict[int, list[DetectedFace]]:
    """Frame index -> the faces to replace. With reference embeddings (the faceset of the person
    the video shows) a face is kept when its track's latest embedding is within `max_distance`
    of the nearest reference; without, the largest face of each frame (as the 2018 tools did)."""
    faces: dict[int, list[DetectedFace]] = {}
    if table.empty:
        return faces
    if reference is not None and len(reference):
        embedded = table["embedding"].notna()
        distance = {row: embedding_distance(np.asarray(e, np.float32), reference)
                    for row, e in zip(np.flatnonzero(embedded), table.loc[embedded, "embedding"])}
        keep = np.array([distance[int(e)] <= max_distance for e in table["evidence"]])
    else:
        area = table["bbox"].map(lambda b: (b[2] - b[0]) * (b[3] - b[1]))
        keep = np.zeros(len(table), bool)
        keep[table.assign(area=area).groupby("frame_index")["area"].idxmax().to_numpy()] = True
    for row in table.loc[keep].itertuples():
        box = tuple(int(v) for v in row.bbox)
        faces.setdefault(int(row.frame_index), []).append(
            DetectedFace(box, np.asarray(row.landmarks, np.float32).reshape(68, 2), float(row.score)))
    return faces


def largest_faces(table):
    """The largest face of each frame: the rows the coverage checks compare with a faceset."""
    if table.empty:
        return table
    area = table["bbox"].map(lambda b: (b[2] - b[0]) * (b[3] - b[1]))
    return table.loc[table.assign(area=area).groupby("frame_index")["area"].idxmax()].reset_index(drop=True)


def extraction_seeds(frames_manifest: dict, faces_table, analyzer_matches: bool) -> dict[int, list[DetectedFace]]:
    """What extraction already found in the same video (a training source also converted):
    every frame extraction analysed gets its faces from the face table, so only the frames it
    did not sample are detected. Nothing when extraction used another analyzer."""
    if not analyzer_matches:
        return {}
    sampled = [frame["index"] for frame in frames_manifest.get("frames", []) if frame.get("index", -1) >= 0]
    found: dict[int, list[DetectedFace]] = {index: [] for index in sampled}
    for row in faces_table.itertuples():
        if row.frame_index in found:
            box = tuple(int(v) for v in row.bbox)
            found[row.frame_index].append(DetectedFace(box, np.asarray(row.landmarks, np.float32).reshape(68, 2), 1.0))
    return found
