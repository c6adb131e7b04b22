"""Extraction of one source: sample frames, then detect, align and record every face.

Frames are sampled to JPEG at a modest rate (never the whole video as PNGs), and each aligned
face is written together with its landmarks and transform in one table (ops.facetable), so
faces and alignment data cannot drift apart.

Nothing is done twice (ops.facecache): photos are normalised once per content, and the faces
of an image are looked up by (content, settings) before anything is detected. What is left
to detect is spread over a pool of worker processes when there is enough of it: dlib's HOG
detector and landmarks are single-threaded and cost ~5 ms a 640x360 frame (decoding the same
frame costs well under 1 ms), so detection decides the stage's speed.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from swapline.ops import collect, unused
from swapline.ops.facecache import FaceCache, PhotoCache, face_indexes
from swapline.ops.media import load_image, normalize_photos, sample_video

logger = logging.getLogger(__name__)

# Stats that describe a run rather than its result: metadata, never the manifest (they would
# change the data version between a full and a cached run of the same content).
RUN_STATS = ("detections_run", "cache_hits", "workers")
# A worker needs ~1 s of CPU to start (imports ~0.5 s, dlib's models ~0.55 s) and a 640x360
# frame ~15 ms (benchmarks/extract_speed.py): below this many frames the pool costs more than
# it saves (the in-process path loads the models once per process, and may have them already).
POOL_MIN_FRAMES = 64
CHUNK_FRAMES = 8  # frames per task: amortises the hand-over, keeps the workers' tails short


def sample_source(source: dict[str, Any], source_dir: Path, out_dir: Path, *, sample_fps: float,
                  skip_similar: float, max_frames: int | None, photo_cache: PhotoCache | None = None) -> dict[str, Any]:
    """Frames of one collected source written into `out_dir`; returns the frames manifest.

    Videos are decoded in a child process (damaged media can crash FFmpeg); photos are
    normalised (EXIF orientation, colour mode) with a per-file reason for each one skipped;
    with `photo_cache`, only photos it does not hold yet are decoded.
    """
    if source["kind"] == "photos":
        kept, skipped = _normalize_photos(source["files"], out_dir, photo_cache)
        frames = [{"index": -1, "timestamp": 0.0, "file": k["file"], "sha256": k["sha256"], "photo": k["photo"]} for k in kept]
        return {"kind": "photos", "frames": frames, "skipped": skipped, "decoded": len(source["files"]), "skipped_similar": 0}
    if source["kind"] == "batch":
        return _sample_batch(source, source_dir, out_dir, sample_fps=sample_fps, skip_similar=skip_similar, max_frames=max_frames)
    path = collect.media_path(source, source_dir)
    result = sample_video(path, out_dir, sample_fps, skip_similar=skip_similar, max_frames=max_frames)
    frames = [{"index": f.index, "timestamp": f.timestamp, "file": f.file, "sha256": f.sha256, "photo": ""} for f in result.frames]
    info = result.info
    return {
        "kind": "video",
        "frames": frames,
        "skipped": [],
        "decoded": result.decoded,
        "skipped_similar": result.skipped_similar,
        "video": {"width": info.width, "height": info.height, "fps": info.fps, "duration": info.duration},
    }


def _sample_batch(source: dict[str, Any], source_dir: Path, out_dir: Path, *, sample_fps: float, skip_similar: float,
                  max_frames: int | None) -> dict[str, Any]:
    """Frames of every video of a URL source's batch, each in its own sub-folder (`max_frames`
    per video); a video that cannot be decoded is skipped with its reason, the others go on."""
    from swapline.ops.media import BadMedia
    from swapline.ops.sandbox import IsolatedCrash

    frames, skipped, decoded, similar = [], [], 0, 0
    for entry, path in collect.batch_videos(source, source_dir):
        folder = Path(entry["file"]).parent.name  # e0001: the entry's folder in source_media
        try:
            result = sample_video(path, out_dir / folder, sample_fps, skip_similar=skip_similar, max_frames=max_frames)
        except (BadMedia, IsolatedCrash) as exc:
            skipped.append({"file": entry["url"], "entry": entry["id"], "reason": str(exc)})
            continue
        decoded, similar = decoded + result.decoded, similar + result.skipped_similar
        frames += [{"index": f.index, "timestamp": f.timestamp, "file": f"{folder}/{f.file}", "sha256": f.sha256,
                    "photo": "", "entry": entry["id"]} for f in result.frames]
    if not frames and skipped:
        raise BadMedia(f"no video of this batch could be decoded: {skipped[0]['reason']}")
    return {"kind": "batch", "frames": frames, "skipped": skipped, "decoded": decoded, "skipped_similar": similar}


def _normalize_photos(files: list[dict], out_dir: Path, cache: PhotoCache | None) -> tuple[list[dict], list[dict]]:
    """normalize_photos for the files the cache lacks; the same (kept, skipped), in file order."""
    if cache is None:
        return normalize_photos([Path(f["path"]) for f in files], out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    found: dict[str, dict] = {}
    missing, placed = [], set()
    for f in files:  # the sha256 is the one collected: the content source_media vouched for
        name = f"p{f['sha256'][:16]}.jpg"
        if name in placed or cache.fetch(f["sha256"], out_dir / name):
            placed.add(name)
            found[f["path"]] = {"photo": f["path"], "file": name, "sha256": f["sha256"]}
        else:
            missing.append(Path(f["path"]))
    new, skipped = normalize_photos(missing, out_dir)
    for record in new:
        cache.store(record["sha256"], out_dir / record["file"])
        found[record["photo"]] = record
    # Duplicates across cached and new photos: the first in file order is kept, as without a cache.
    kept, seen = [], {}
    for f in files:
        record = found.get(f["path"])
        if record is None:
            continue
        if record["sha256"] in seen:
            skipped.append({"photo": f["path"], "reason": f"duplicate of {seen[record['sha256']]}"})
            continue
        seen[record["sha256"]] = f["path"]
        kept.append(record)
    order = {f["path"]: i for i, f in enumerate(files)}
    skipped.sort(key=lambda s: order.get(s["photo"], len(order)))
    return kept, skipped


def reference_embeddings(analyzer, photos: list[Path]) -> np.ndarray | None:
    """Embeddings (K, 128) of the largest face in each reference photo; None without references."""
    if not photos:
        return None
    rows = []
    for photo in photos:
        image = load_image(photo)
        faces = analyzer.detect(image)
        if not faces:
            raise ValueError(f"reference photo {photo} shows no detectable face: replace it")
        rows.append(analyzer.embed(image, faces[0]))
    return np.stack(rows).astype(np.float32)


def resolve_workers(workers: int) -> int:
    """`Extraction.workers` as a process count: 0 means one per CPU core this process may use,
    and more than that is capped to it (the work is CPU-bound: extra processes only add memory)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return min(workers, cores) if workers > 0 else cores


@dataclass(frozen=True)
class _Job:
    """What every frame of one extraction shares; sent once to each worker."""

    frames_dir: Path
    identity: str
    source: str
    reference: np.ndarray | None
    max_distance: float
    cache: FaceCache | None


def _analyse(analyzer, job: _Job, frame: dict[str, Any]) -> tuple[list, dict[str, int]]:
    """Detect, align and record the faces of one frame, and cache them."""
    from swapline.ops.facetable import encode_png, extract_from_image

    found, stats = extract_from_image(
        analyzer, load_image(job.frames_dir / frame["file"]), identity=job.identity, source=job.source,
        source_sha=frame["sha256"], frame_index=frame["index"], timestamp=frame["timestamp"],
        photo=frame["photo"], reference=job.reference, max_distance=job.max_distance, distances=True,
    )
    for record in found:  # PNG once, where the work is spread: the cache and the table reuse it
        record.image = encode_png(record.image)
    if job.cache is not None:
        indexes = face_indexes(found, frame["sha256"], frame["index"], stats["detected"])
        job.cache.put(frame["sha256"], found, indexes, stats)
    return found, stats


_worker: tuple[Any, _Job] | None = None  # this worker process's analyzer and job


def _init_worker(settings, models_dir: str, job: _Job) -> None:
    """Runs once per worker: the backend's models then load on its first frame and stay loaded
    (ops.faces caches them per process), so each worker pays for them once."""
    global _worker
    from swapline.ops.faces import FaceAnalyzer

    _worker = (FaceAnalyzer(settings, face_models_dir=models_dir), job)


def _analyse_chunk(chunk: list[tuple[int, dict[str, Any]]]) -> list[tuple[int, list, dict[str, int]]]:
    analyzer, job = _worker
    return [(i, *_analyse(analyzer, job, frame)) for i, frame in chunk]


def _pool_settings(analyzer) -> Any:
    """Settings a worker rebuilds the analyzer from, or None when it must stay in-process:
    dlib and mediapipe are CPU-bound per frame and small to load in each worker (FAN batches
    on its device, and its model would have to load in every worker). "auto" is pinned to what
    it resolved to, so a worker cannot resolve it otherwise."""
    from swapline.ops.faces import FaceAnalyzer

    backend = getattr(analyzer, "resolved_backend", "dlib")
    if not isinstance(analyzer, FaceAnalyzer) or backend not in ("dlib", "mediapipe"):
        return None
    return analyzer.settings.model_copy(update={"backend": backend})  # a frozen pydantic model (ops.faces)


def settings_for_threads(analyzer, reference: np.ndarray | None) -> bool:
    """Whether frames may be analysed in threads: the dlib backend (its detector runs behind a
    lock; landmarks, alignment and encoding release the GIL), without the identity filter
    (dlib's embedding network keeps state per call), on a plain analyzer (not a wrapper)."""
    from swapline.ops.faces import FaceAnalyzer

    return reference is None and isinstance(analyzer, FaceAnalyzer) and analyzer.resolved_backend == "dlib"


def _run_threads(analyzer, job: _Job, todo: list[tuple[int, dict]], workers: int):
    """Yield (position, records, stats) per frame, in order, analysed by `workers` threads."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="extract")
    try:
        yield from pool.map(lambda item: (item[0], *_analyse(analyzer, job, item[1])), todo)
    finally:  # a failure (or a consumer that stops) cancels the frames not started
        pool.shutdown(wait=True, cancel_futures=True)


def _run_pool(settings, models_dir: str, job: _Job, todo: list[tuple[int, dict]], workers: int):
    """Yield (position, records, stats) per frame, as the workers finish chunks of them."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    chunks = [todo[i:i + CHUNK_FRAMES] for i in range(0, len(todo), CHUNK_FRAMES)]
    # spawn, as ops.sandbox: the parent (Dagster) has threads, and forking those can deadlock.
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(settings, models_dir, job))
    try:
        for future in as_completed([pool.submit(_analyse_chunk, chunk) for chunk in chunks]):
            try:
                yield from future.result()
            except BrokenProcessPool as exc:
                raise RuntimeError(f"a face extraction worker died ({exc}); retry with extraction.workers: 1") from exc
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def extract_faces(frames_dir: Path, frames: dict[str, Any], analyzer, *, identity: str, source: str,
                  reference: np.ndarray | None, max_distance: float,
                  progress: Callable[[int], None] | None = None, cache: FaceCache | None = None,
                  workers: int = 1) -> tuple[list, dict[str, int]]:
    """Detect, align and describe every face in the sampled frames of one source.

    Frames whose content `cache` knows are not analysed again; the rest run in `workers`
    processes (0: one per core) when there are at least POOL_MIN_FRAMES of them, else in as
    many threads where the backend allows it (settings_for_threads), else one by one here.
    The records are in frame order and identical whichever way they were produced; the
    stats include RUN_STATS (detections_run, cache_hits, workers) and what was not used."""
    items = frames["frames"]
    results: list[tuple[list, dict] | None] = [None] * len(items)
    todo = []
    for i, frame in enumerate(items):
        hit = cache.get(frame["sha256"]) if cache is not None else None
        if hit is None:
            todo.append((i, frame))
        else:
            results[i] = hit.for_frame(frame, identity=identity, source=source), hit.stats
    done = len(items) - len(todo)
    if progress and done:
        progress(done)
    job = _Job(Path(frames_dir), identity, source, reference, max_distance, cache)
    cores = resolve_workers(workers)
    n_workers = min(cores, math.ceil(len(todo) / CHUNK_FRAMES))
    settings = _pool_settings(analyzer) if n_workers > 1 and len(todo) >= POOL_MIN_FRAMES else None
    if settings is not None:
        logger.info("analysing %d frames in %d worker processes", len(todo), n_workers)
        analysed = _run_pool(settings, getattr(analyzer, "face_models_dir", ""), job, todo, n_workers)
    elif min(cores, len(todo)) > 1 and settings_for_threads(analyzer, reference):
        n_workers = min(cores, len(todo))
        # Too few frames to pay for worker processes; dlib releases the GIL while it detects
        # and predicts, so threads use the other cores (2x on 2 for a refresh's few photos).
        analysed = _run_threads(analyzer, job, todo, n_workers)
    else:
        n_workers = 1 if todo else 0
        analysed = ((i, *_analyse(analyzer, job, frame)) for i, frame in todo)
    for i, found, frame_stats in analysed:
        results[i] = found, frame_stats
        done += 1
        if progress:
            progress(done)

    records: list = []
    stats = {"frames": len(items), "frames_with_face": 0, "faces": 0, "rejected_identity": 0, "too_small": 0}
    for found, frame_stats in results:
        _merge(stats, frame_stats)
        stats["frames_with_face"] += bool(found)
        records.extend(found)
    stats["faces"] = len(records)
    stats.update(unused.tally(items, results))  # what was not used, and where (ops/unused.py)
    stats.update(detections_run=len(todo), cache_hits=len(items) - len(todo), workers=n_workers)
    return records, stats


def _merge(stats: dict[str, int], frame_stats: dict[str, Any]) -> None:
    for key in ("rejected_identity", "too_small"):
        value = frame_stats.get(key, 0)
        if isinstance(value, (int, float)) and not math.isnan(value):
            stats[key] += int(value)
