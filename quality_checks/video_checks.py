"""Checks on a converted video, run on the written file right after it is published.

`same_length` and `audio_kept` are WARN: a dropped frame or a lost soundtrack makes a worse
video, not a dangerous one. `labelled_synthetic` is ERROR and blocking: a swapped face that
does not say it is synthetic must never leave the pipeline unnoticed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np

SPECS = {
    "same_length": (
        "Fails when the converted video's frame count differs from the source's, or its duration by more "
        "than one frame: frames were dropped or duplicated, so picture and sound drift apart. What to do: "
        "re-materialize target_video (it re-checks that the source decodes completely), then this asset; "
        "if it persists, report it with both files' metadata."
    ),
    "audio_kept": (
        "Fails when the source video has an audio stream and the converted video has none. What to do: "
        "check the run log for an audio copy/encode error and re-materialize; the source's codec may "
        "need re-encoding to AAC."
    ),
    "labelled_synthetic": (
        "Fails (ERROR, blocking) when any synthetic-content label is missing: the container tags "
        "(title, comment, description naming the IPTC digital source type), the provenance sidecar with "
        "synthetic: true, or the visible SYNTHETIC mark on the frames. What to do: do not publish the "
        "file; this is a bug in swapline's conversion, report it."
    ),
}


def video_check_specs(key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    return [dg.AssetCheckSpec(name, asset=key, description=text, blocking=name == "labelled_synthetic")
            for name, text in SPECS.items()]


@dataclass
class Probe:
    frames: int  # video packets: one per frame, counted without decoding
    duration: float  # seconds, the video stream's
    fps: float
    audio: bool
    tags: dict[str, str]


def probe(path: Path) -> Probe:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        frames = sum(1 for packet in container.demux(stream) if packet.size)
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        else:
            duration = (container.duration or 0) / av.time_base
        return Probe(frames, duration, float(rate or 0), bool(container.streams.audio), dict(container.metadata))


def first_frame(path: Path) -> np.ndarray:
    from swapline.ops.media import iter_video

    return next(iter(iter_video(path)))[2]


def mark_visible(source: Path, output: Path, position: str) -> dict[str, Any]:
    """Is the first output frame, inside the mark's area, closer to the source frame with the
    mark drawn on it than to the source frame without it? Codec noise touches both equally."""
    from swapline.ops.provenance import draw_mark

    original, converted = first_frame(source).astype(np.int16), first_frame(output).astype(np.int16)
    if original.shape != converted.shape:
        return {"visible": False, "reason": f"frame size changed {original.shape} -> {converted.shape}"}
    blank = np.full(original.shape, 128, np.uint8)
    area = (draw_mark(blank.copy(), position) != blank).any(axis=2)  # (H, W) pixels the mark touches
    marked = draw_mark(original.astype(np.uint8).copy(), position).astype(np.int16)
    to_marked = float(np.abs(converted - marked)[area].mean())
    to_plain = float(np.abs(converted - original)[area].mean())
    return {"visible": to_marked < to_plain, "error_vs_marked": round(to_marked, 2), "error_vs_unmarked": round(to_plain, 2)}


def label_problems(output: Path, sidecar: Path, expected_tags: dict[str, str], mark: dict[str, Any],
                   tags: dict[str, str]) -> list[str]:
    problems = [f"container tag {name!r} missing or changed" for name, value in expected_tags.items() if tags.get(name) != value]
    if not sidecar.is_file():
        problems.append(f"provenance sidecar {sidecar.name} missing")
    elif json.loads(sidecar.read_text()).get("synthetic") is not True:
        problems.append(f"provenance sidecar {sidecar.name} does not say synthetic: true")
    if not mark["visible"]:
        problems.append("visible SYNTHETIC mark not found on the first frame")
    return problems


def evaluate_converted(key: dg.AssetKey, source: Path, output: Path, sidecar: Path, *, source_frames: int,
                       expected_tags: dict[str, str], mark_position: str) -> list[dg.AssetCheckResult]:
    """The three checks on a written conversion. `source_frames` is the decoded count recorded by
    target_video (a header can count frames an edit list hides)."""
    src, out = probe(source), probe(output)
    one_frame = 1.0 / (src.fps or out.fps or 30.0)
    length_ok = out.frames == source_frames and abs(out.duration - src.duration) <= one_frame + 1e-6
    mark = mark_visible(source, output, mark_position)
    problems = label_problems(output, sidecar, expected_tags, mark, out.tags)
    return [
        dg.AssetCheckResult(check_name="same_length", asset_key=key, passed=length_ok, severity=dg.AssetCheckSeverity.WARN,
                            metadata={"source_frames": source_frames, "output_frames": out.frames,
                                      "source_duration": round(src.duration, 4), "output_duration": round(out.duration, 4),
                                      "tolerance_s": round(one_frame, 4)}),
        dg.AssetCheckResult(check_name="audio_kept", asset_key=key, passed=out.audio or not src.audio,
                            severity=dg.AssetCheckSeverity.WARN, metadata={"source_audio": src.audio, "output_audio": out.audio}),
        dg.AssetCheckResult(check_name="labelled_synthetic", asset_key=key, passed=not problems,
                            severity=dg.AssetCheckSeverity.ERROR, description="; ".join(problems) or None,
                            metadata={"problems": dg.MetadataValue.json(problems), "mark": dg.MetadataValue.json(mark),
                                      "tags": dg.MetadataValue.json(out.tags)}),
    ]
