"""Conversion: swap the face in every frame of a video and blend it back, audio kept.

    decode (thread) -> detect (thread pool, cached per video) -> keep the replaced person
    (IdentityGate) -> track + smooth landmarks, bridge missed detections (temporal.py)
    -> batched encoder/decoder on the TorchDevice -> mask (minus hands, held per track, with
    mask 'occlusion': occlusion.py), colour match with smoothed statistics, paste back inside
    the face's box (blend.py) -> 'synthetic' mark -> encode (thread)

Stages hand frames over through bounded queues, so memory stays bounded for any length and
decode, detection, inference and encode overlap. Each frame keeps its source timestamp.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from swapline.ops.blend import color_stats, face_mask, match_color, paste_face
from swapline.ops.convert_options import ConvertOptions
from swapline.ops.detections import DetectionCache, IdentityGate
from swapline.ops.faces import align_face, alignment_matrix, hull_mask, transform_points
from swapline.ops.media import iter_timed, probe, stream_format, write_video
from swapline.ops.occlusion import Occlusion, interior, overlay, to_frame
from swapline.ops.provenance import draw_mark
from swapline.ops.temporal import ColorStatsSmoother, FaceTracker, landmark_jitter

logger = logging.getLogger(__name__)
STAGES = ("decode", "detect", "infer", "blend", "encode")


@dataclass
class _Frame:
    index: int
    time: Any  # Fraction seconds
    rgb: np.ndarray
    in_range: bool
    shown: np.ndarray | None = None  # (H, W, 2) blend mask used and occluder cut, for a side_by_side preview


@dataclass
class Stats:
    frames: int = 0
    swapped: int = 0
    faces: int = 0
    bridged: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    raw_tracks: dict[int, "_Jitter"] = field(default_factory=dict)  # track id -> jitter of its raw landmarks
    smooth_tracks: dict[int, "_Jitter"] = field(default_factory=dict)  # ... of the landmarks that placed the face
    preview: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)


class _Jitter:
    """landmark_jitter of one track, accumulated frame by frame: memory stays constant however
    long the video (a list of every frame's landmarks would not)."""

    def __init__(self):
        self.window: deque = deque(maxlen=3)
        self.total, self.count = 0.0, 0

    def add(self, landmarks: np.ndarray | None) -> None:
        self.window.append(landmarks)
        if len(self.window) == 3 and all(x is not None for x in self.window):
            self.total += landmark_jitter(list(self.window))
            self.count += 1

    @property
    def value(self) -> float:
        return self.total / self.count if self.count else float("nan")


class Converter:
    """Everything between a decoded frame and the frame to encode, for one model and side."""

    def __init__(self, analyzer, model, to_side: str, device: str, options: ConvertOptions, *,
                 reference: np.ndarray | None = None, cache: DetectionCache | None = None,
                 planned: dict[int, list] | None = None, models_dir: str = ""):
        """`planned`: frame index -> the faces to replace, decided beforehand (ops.target's table
        of the target): then nothing is detected or embedded here. Without it each frame is
        detected (through `cache`) and gated by `reference` as it streams by. `models_dir`: the
        MediaPipe models folder (default: tflite.models_dir()), read for mask 'occlusion'."""
        self.analyzer, self.model, self.to_side, self.device, self.options = analyzer, model, to_side, device, options
        self.size, self.padding = analyzer.settings.face_size, analyzer.settings.padding
        self.blend_options = options.blend()
        self.gate = IdentityGate(analyzer, reference, options.identity_distance)
        self.cache = cache or DetectionCache(None, analyzer, None)
        self.colors = (ColorStatsSmoother(), ColorStatsSmoother())  # swapped face, original face
        self.planned, self.detections_run = planned, 0
        # Loads the hand models now: a missing file fails before any frame is converted.
        self.occlusion = Occlusion(options.occluders(), models_dir) if options.mask == "occlusion" else None

    def detect(self, frame: _Frame) -> list:
        if not frame.in_range:
            return []
        if self.planned is not None:
            return self.planned.get(frame.index, [])
        found = self.cache.get(frame.index)
        if found is None:
            self.detections_run += 1
            found = self.analyzer.detect(frame.rgb)
            self.cache.put(frame.index, found)
        return found

    def select(self, frame: _Frame, faces: list) -> list:
        """The faces of the person being replaced (already chosen when planned)."""
        return faces if self.planned is not None else self.gate.select(frame.rgb, faces)

    def render(self, batch: list[tuple[_Frame, list]], stats: Stats) -> list[np.ndarray]:
        """Swap every tracked face of a batch of frames with one model call."""
        from swapline.ops.inference import swap_batch

        started = time.perf_counter()
        jobs = []  # (frame position, face, matrix, crop, hard hull)
        for k, (frame, faces) in enumerate(batch):
            for face in faces if frame.in_range else []:
                matrix = alignment_matrix(face.landmarks, self.size, self.padding)  # (2,3)
                crop = align_face(frame.rgb, matrix, self.size)  # (S,S,3)
                jobs.append((k, face, matrix, crop, hull_mask(transform_points(face.landmarks, matrix), self.size, 0)))
        outputs = [frame.rgb for frame, _ in batch]
        if not jobs:
            return outputs
        rgb, learned = swap_batch(self.model, np.stack([j[3] for j in jobs]), self.to_side, self.device)  # (N,S,S,3), (N,S,S)
        stats.seconds["infer"] += time.perf_counter() - started
        started = time.perf_counter()
        occluders = {}  # frame position -> (H, W) occluder; once per frame, in order (hand tracking keeps state)
        for (k, face, matrix, crop, hull), swapped, learned_mask in zip(jobs, rgb, learned):
            if self.occlusion is not None and k not in occluders:
                occluders[k] = self.occlusion.frame_mask(batch[k][0].rgb, [f.bbox for f in batch[k][1]], batch[k][0].index)
            outputs[k] = self._blend(batch[k][0], outputs[k], face, matrix, crop, hull, swapped, learned_mask,
                                     occluders.get(k))
            stats.faces += 1
        stats.swapped += len({j[0] for j in jobs})
        stats.seconds["blend"] += time.perf_counter() - started
        return outputs

    def _blend(self, frame: _Frame, canvas, face, matrix, crop, hull, swapped, learned_mask, occluder=None) -> np.ndarray:
        cut = None
        if self.occlusion is not None:  # the frame's occluder in this face's crop, held for its track
            inside = interior(hull, self.blend_options.feather) if self.occlusion.crop_occluders else None
            cut = self.occlusion.crop_mask(occluder, matrix, self.size, face.track_id, float(frame.time), crop, inside)  # (S,S)
        mask = face_mask(hull, learned_mask, self.blend_options, cut)  # (S,S)
        if cut is not None and self.options.side_by_side:
            shown = np.stack([to_frame(mask, matrix, frame.rgb.shape), to_frame(cut, matrix, frame.rgb.shape)], axis=-1)
            frame.shown = shown if frame.shown is None else np.maximum(frame.shown, shown)  # (H, W, 2)
        mode, smoothed = self.options.color_match, None
        if mode == "mean_std" and self.options.smooth:
            t = float(frame.time)
            smoothed = (self.colors[0](face.track_id, t, color_stats(swapped, mask)),
                        self.colors[1](face.track_id, t, color_stats(crop, mask)))
        matched = match_color(swapped, crop, mask, mode, stats=smoothed)
        return paste_face(canvas, matched, mask, matrix, seamless=mode == "seamless")


def _decode(video: Path, options: ConvertOptions, out: queue.Queue, stats: Stats, stop: threading.Event) -> None:
    started = time.perf_counter()
    try:
        for index, t, rgb in iter_timed(video):
            stats.seconds["decode"] += time.perf_counter() - started
            if stop.is_set():
                return
            out.put(_Frame(index, t, rgb, options.in_range(float(t))))
            started = time.perf_counter()
        out.put(None)
    except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
        out.put(exc)


def _frames(decoded: queue.Queue) -> Iterator[_Frame]:
    while (item := decoded.get()) is not None:
        if isinstance(item, BaseException):
            raise item
        yield item


def _tracked(converter: Converter, frames: Iterator[_Frame], stats: Stats) -> Iterator[tuple[_Frame, list]]:
    """Detect ahead in a thread pool (results in order), gate, track, smooth."""
    options = converter.options
    tracker = FaceTracker(smooth=options.smooth, max_gap=options.max_gap)
    with ThreadPoolExecutor(max(1, options.workers)) as pool:
        ahead: deque = deque()
        for frame in frames:
            ahead.append((frame, pool.submit(converter.detect, frame)))
            while len(ahead) > 2 * options.workers or (ahead and ahead[0][1].done()):
                yield from _track(converter, tracker, *_pop(ahead, stats), stats)
        while ahead:
            yield from _track(converter, tracker, *_pop(ahead, stats), stats)
    for _, frame, faces in tracker.flush():
        yield _note(frame, faces, stats)


def _pop(ahead: deque, stats: Stats) -> tuple[_Frame, list]:
    started = time.perf_counter()
    frame, future = ahead.popleft()
    faces = future.result()
    stats.seconds["detect"] += time.perf_counter() - started  # time the pipeline waited on detection
    return frame, faces


def _track(converter: Converter, tracker: FaceTracker, frame: _Frame, faces: list, stats: Stats):
    chosen = converter.select(frame, faces) if faces else []
    for _, released, tracked in tracker.push(float(frame.time), frame, [(f.landmarks, f.bbox, None) for f in chosen]):
        yield _note(released, tracked, stats)


def _note(frame: _Frame, faces: list, stats: Stats) -> tuple[_Frame, list]:
    for face in faces:
        stats.bridged += face.interpolated
        stats.smooth_tracks.setdefault(face.track_id, _Jitter()).add(face.landmarks)
        stats.raw_tracks.setdefault(face.track_id, _Jitter()).add(face.raw)
    return frame, faces


def _rendered(converter: Converter, tracked: Iterator, stats: Stats, total: int,
              progress: Callable[[int], None] | None) -> Iterator[tuple[np.ndarray, Any]]:
    """Batches of frames through the model, then mark (and pair) each output frame."""
    options, batch = converter.options, []
    picks = set(np.linspace(0, max(total - 1, 0), 4).astype(int).tolist()) if total else set()
    for item in tracked:
        batch.append(item)
        if sum(len(f) for _, f in batch) >= options.batch_size or len(batch) >= 2 * options.batch_size:
            yield from _finish(converter, batch, stats, picks, progress)
            batch = []
    yield from _finish(converter, batch, stats, picks, progress)


def _finish(converter, batch, stats: Stats, picks: set, progress) -> Iterator[tuple[np.ndarray, Any]]:
    for (frame, _), out in zip(batch, converter.render(batch, stats) if batch else []):
        if frame.index in picks and len(stats.preview) < 4:
            stats.preview.append((frame.rgb, out))
        if converter.options.side_by_side:
            left = frame.rgb if frame.shown is None else overlay(frame.rgb, frame.shown[..., 0], frame.shown[..., 1])
            out = np.concatenate([left, out], axis=1)  # (H, 2W, 3)
        elif out is frame.rgb and frame.index in picks:
            out = out.copy()  # the mark must not land on the original kept for the preview
        stats.frames += 1
        if progress:
            progress(stats.frames)
        yield draw_mark(out, converter.options.mark_position), frame.time


def convert_video(video: Path, out_path: Path, converter: Converter, *, tags: dict[str, str],
                  progress: Callable[[int], None] | None = None, mark: Callable | None = None) -> dict:
    """Write the converted video to `out_path` (atomically) and return counts, timings and
    temporal-stability figures. Decode, detection, the model and encode run concurrently. `mark`
    (the invisible watermark) is applied to each frame the encoder receives."""
    info, fmt, options, stats = probe(video), stream_format(video), converter.options, Stats()
    decoded: queue.Queue = queue.Queue(maxsize=4 * options.batch_size)
    encoded: queue.Queue = queue.Queue(maxsize=2 * options.batch_size)
    stop, result = threading.Event(), {}

    def encode() -> None:
        try:
            result["written"] = write_video(_drain(encoded, stats), out_path, fmt.rate, audio_from=video, metadata=tags,
                                            crf=options.crf, time_base=fmt.time_base, pix_fmt=fmt.pix_fmt, mark=mark)
        except BaseException as exc:  # noqa: BLE001 - re-raised below, in the caller's thread
            result["error"] = exc

    reader = threading.Thread(target=_decode, args=(video, options, decoded, stats, stop), daemon=True)
    writer = threading.Thread(target=encode, daemon=True)
    start = time.monotonic()
    reader.start()
    writer.start()
    try:
        for item in _rendered(converter, _tracked(converter, _frames(decoded), stats), stats, info.frames or 0, progress):
            if not _put(encoded, item, writer):
                break
        _put(encoded, None, writer)
    except BaseException as exc:
        _put(encoded, RuntimeError(f"conversion stopped: {exc}"), writer)  # the writer discards its temp file
        raise
    finally:
        stop.set()
        writer.join()
        while reader.is_alive():  # unblock a reader waiting on a full queue
            with contextlib.suppress(queue.Empty):
                decoded.get_nowait()
            reader.join(0.05)
    if "error" in result:
        raise result["error"]
    converter.cache.save()
    return _summary(stats, result["written"], time.monotonic() - start, info, converter)


def _put(q: queue.Queue, item: Any, consumer: threading.Thread) -> bool:
    """Put unless the consumer has died (then its error is raised by the caller)."""
    while consumer.is_alive():
        with contextlib.suppress(queue.Full):
            q.put(item, timeout=0.1)
            return True
    return False


def _drain(q: queue.Queue, stats: Stats) -> Iterator:
    """The writer's frames; the time the encoder spends on each counts as encode time."""
    while (item := q.get()) is not None:
        if isinstance(item, BaseException):
            raise item
        started = time.perf_counter()
        yield item
        stats.seconds["encode"] += time.perf_counter() - started


def _summary(stats: Stats, written: dict, seconds: float, info, converter: Converter) -> dict:
    raw = [t.value for t in stats.raw_tracks.values() if t.count]
    smooth = [t.value for t in stats.smooth_tracks.values() if t.count]
    summary = {
        "frames": stats.frames, "swapped": stats.swapped, "faces": stats.faces, "bridged": stats.bridged,
        "tracks": len(stats.smooth_tracks), "audio": written["audio"], "seconds": round(seconds, 2),
        "fps": round(stats.frames / max(seconds, 1e-6), 2), "source_frames": info.frames,
        "stage_seconds": {k: round(v, 2) for k, v in stats.seconds.items()},
        "detections_cached": converter.cache.hits, "detections_run": converter.detections_run,
        "embeddings_computed": converter.gate.embedded,
        "options": converter.options.model_dump(mode="json"),
    }
    if raw and smooth:
        summary["track_jitter_raw"] = round(float(np.nanmean(raw)), 5)
        summary["track_jitter_smoothed"] = round(float(np.nanmean(smooth)), 5)
    summary["preview"] = stats.preview
    return summary
