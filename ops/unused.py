"""What extraction did not use, per source, so nothing is lost without a word: frames or
photos without a face, faces narrower than `extraction.min_face`, and faces the identity filter
rejected as someone else, each with its distance to the nearest reference photo.

These are counts and short lists in the stats each face-table segment carries in its manifest
(ops.facesegments.total_stats sums the numbers, joins the lists up to LIMIT names and adds the
histograms bin by bin), and the aligned_faces asset turns them into metadata.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

LIMIT = 20  # names kept per list: enough to find the files, bounded in every manifest and event
REJECTED_AT = "rejected_at_"  # per-image stat: one rejected face's distance, in thousandths
BIN = 0.01  # resolution of the distance histograms (a distance is floored to it)


def rejected_stats(distances: list[float]) -> dict[str, int]:
    """Per-image stats naming each rejected face's distance. The face cache stores per-image
    stats as plain ints (ops/facecache.py), so each distance is one integer key."""
    return {f"{REJECTED_AT}{i}": round(d * 1000) for i, d in enumerate(distances)}


def rejected_distances(image_stats: dict[str, Any]) -> list[float]:
    """The distances rejected_stats recorded, in face order (none for an older cache entry)."""
    found = {int(k[len(REJECTED_AT):]): v for k, v in image_stats.items() if k.startswith(REJECTED_AT)}
    return [found[i] / 1000 for i in sorted(found)]


def frame_name(frame: dict[str, Any]) -> str:
    """A frame as a user finds it: the photo's file name, or the frame's index and time."""
    if frame.get("photo"):
        return Path(frame["photo"]).name
    entry = f"{frame['entry']} " if frame.get("entry") else ""
    return f"{entry}frame {frame['index']} at {float(frame['timestamp']):.2f}s"


def zero() -> dict[str, Any]:
    return {"no_face": 0, "no_face_files": [], "too_small_files": [], "rejected_faces": [],
            "identity_distances": {"kept": {}, "rejected": {}}}


def tally(frames: list[dict[str, Any]], results: list[tuple[list, dict[str, Any]]]) -> dict[str, Any]:
    """The not-used stats of `frames` given each one's (records, per-image stats)."""
    out = zero()
    histogram = out["identity_distances"]
    for frame, (records, image_stats) in zip(frames, results):
        name = frame_name(frame)
        if not records and not image_stats.get("detected", 0) and not image_stats.get("too_small", 0):
            out["no_face"] += 1
            _add(out["no_face_files"], name)
        if image_stats.get("too_small", 0):
            _add(out["too_small_files"], name)
        for distance in rejected_distances(image_stats):
            _add(out["rejected_faces"], {"file": name, "distance": round(distance, 3)})
            _count(histogram["rejected"], distance)
        for record in records:
            if not math.isnan(record.identity_distance):
                _count(histogram["kept"], record.identity_distance)
    return out


def _add(names: list, item: Any) -> None:
    if len(names) < LIMIT:
        names.append(item)


def _count(histogram: dict[str, int], distance: float) -> None:
    label = f"{math.floor(distance / BIN + 1e-9) * BIN:.2f}"
    histogram[label] = histogram.get(label, 0) + 1


def margin(histograms: dict[str, dict[str, int]], threshold: float) -> dict[str, Any]:
    """How far the identity filter's decisions were from its threshold: the distances of the kept
    and of the rejected faces, to BIN (min: the lowest bin's lower edge, max: the highest bin's
    upper edge, so every distance lies between them; median: its bin's lower edge), and a
    histogram in 0.1-wide bins."""
    out: dict[str, Any] = {"threshold": threshold}
    coarse: dict[str, dict[str, int]] = {}
    for side in ("kept", "rejected"):
        counts = sorted((float(label), n) for label, n in (histograms.get(side) or {}).items() if n)
        total = sum(n for _, n in counts)
        if not total:
            continue
        seen, median = 0, counts[-1][0]
        for value, n in counts:
            seen += n
            if seen * 2 >= total:
                median = value
                break
        out[side] = {"faces": total, "min": counts[0][0], "median": median, "max": round(counts[-1][0] + BIN, 2)}
        for value, n in counts:
            low = math.floor(value * 10 + 1e-9) / 10
            cell = coarse.setdefault(f"{low:.1f}-{low + 0.1:.1f}", {"kept": 0, "rejected": 0})
            cell[side] += n
    out["histogram"] = dict(sorted(coarse.items()))
    return out
