"""Incremental extraction: the face cache, the normalised-photo cache, and the worker pool."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import av
import numpy as np
import pytest

from swapline.demo_media import fetch
from swapline.ops import extract, facecache
from swapline.ops.faces import AnalyzerSettings, FaceAnalyzer
from swapline.ops.images import encode_jpeg


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> tuple[Path, dict]:
    """Six sampled frames of two people (one with no face) and their frames manifest."""
    folder = tmp_path_factory.mktemp("frames")
    media = fetch()
    wanted = {("WolfgangLanger_Pexels.mp4", i) for i in (0, 90, 180, 300)} | {("single_face.mp4", 10), ("no_face.mp4", 5)}
    entries = []
    for clip in ("WolfgangLanger_Pexels.mp4", "single_face.mp4", "no_face.mp4"):
        with av.open(str(media / clip)) as container:
            for index, frame in enumerate(container.decode(video=0)):
                if (clip, index) in wanted:
                    data = encode_jpeg(frame.to_ndarray(format="rgb24"))
                    name = f"{Path(clip).stem}_{index:06d}.jpg"
                    (folder / name).write_bytes(data)
                    entries.append({"index": index, "timestamp": index / 24, "file": name,
                                    "sha256": hashlib.sha256(data).hexdigest(), "photo": ""})
    return folder, {"frames": entries}


@pytest.fixture(scope="module")
def analyzer():
    return FaceAnalyzer(AnalyzerSettings(backend="dlib", face_size=96))


def run(frames, analyzer, **kwargs):
    folder, manifest = frames
    options = {"identity": "anna", "source": "clip", "reference": None, "max_distance": 0.6, **kwargs}
    return extract.extract_faces(folder, manifest, analyzer, **options)


def rows(records):
    """Table rows, NaN made comparable (no reference: identity_distance is NaN)."""
    return [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in record.row().items()}
            for record in records]


def test_second_run_is_all_cache_hits_with_identical_records(frames, analyzer, tmp_path):
    fresh, stats = run(frames, analyzer, cache=facecache.FaceCache(tmp_path, analyzer, None, 0.6))
    assert stats["detections_run"] == 6 and stats["cache_hits"] == 0 and stats["faces"] == 5
    cache = facecache.FaceCache(tmp_path, analyzer, None, 0.6)
    again, stats_again = run(frames, analyzer, cache=cache)
    assert stats_again["detections_run"] == 0 and stats_again["cache_hits"] == 6 == cache.hits
    assert rows(again) == rows(fresh)
    assert {k: v for k, v in stats_again.items() if k not in extract.RUN_STATS} == \
        {k: v for k, v in stats.items() if k not in extract.RUN_STATS}


def test_a_hit_is_rewritten_for_the_frame_that_asks(frames, analyzer, tmp_path):
    folder, manifest = frames
    run(frames, analyzer, cache=facecache.FaceCache(tmp_path, analyzer, None, 0.6))
    # The same pixels as another source's frame 42 of another person: only the frame's own fields change.
    moved = {"frames": [{**manifest["frames"][1], "index": 42, "timestamp": 1.75, "photo": "x.jpg"}]}
    hit, _ = extract.extract_faces(folder, moved, analyzer, identity="ben", source="other", reference=None,
                                   max_distance=0.6, cache=facecache.FaceCache(tmp_path, analyzer, None, 0.6))
    fresh, _ = extract.extract_faces(folder, moved, analyzer, identity="ben", source="other", reference=None,
                                     max_distance=0.6)
    assert rows(hit) == rows(fresh)
    assert (hit[0].identity, hit[0].source, hit[0].frame_index, hit[0].photo) == ("ben", "other", 42, "x.jpg")


def test_settings_and_references_have_their_own_entries(frames, analyzer, tmp_path):
    run(frames, analyzer, cache=facecache.FaceCache(tmp_path, analyzer, None, 0.6))
    finer = FaceAnalyzer(analyzer.settings.model_copy(update={"detect_scale": 1.0}))
    _, stats = run(frames, finer, cache=facecache.FaceCache(tmp_path, finer, None, 0.6))
    assert stats["cache_hits"] == 0 and stats["detections_run"] == 6
    reference = np.ones((1, 128), dtype=np.float32)
    keys = {facecache.FaceCache(tmp_path, analyzer, ref, dist).key
            for ref, dist in [(None, 0.6), (None, 0.5), (reference, 0.6), (reference, 0.5), (reference * 2, 0.6)]}
    assert len(keys) == 4  # without references the identity distance changes nothing


def test_damaged_entry_is_a_miss_and_is_rewritten(frames, analyzer, tmp_path):
    folder, manifest = frames
    one = {"frames": manifest["frames"][:1]}
    cache = facecache.FaceCache(tmp_path, analyzer, None, 0.6)
    extract.extract_faces(folder, one, analyzer, identity="a", source="s", reference=None, max_distance=0.6, cache=cache)
    entry = cache.path(one["frames"][0]["sha256"])
    entry.write_bytes(b"not arrow")
    _, stats = extract.extract_faces(folder, one, analyzer, identity="a", source="s", reference=None, max_distance=0.6, cache=cache)
    assert stats["detections_run"] == 1 and cache.get(one["frames"][0]["sha256"]) is not None


def test_worker_pool_gives_the_serial_records(frames, analyzer, tmp_path, monkeypatch):
    serial, serial_stats = run(frames, analyzer, workers=1)
    monkeypatch.setattr(extract, "POOL_MIN_FRAMES", 1)
    monkeypatch.setattr(extract, "CHUNK_FRAMES", 2)
    cache = facecache.FaceCache(tmp_path, analyzer, None, 0.6)
    pooled, pooled_stats = run(frames, analyzer, workers=2, cache=cache)
    assert pooled_stats["workers"] == 2 and serial_stats["workers"] == 1
    assert [r.face_id for r in pooled] == [r.face_id for r in serial]
    for a, b in zip(pooled, serial):
        np.testing.assert_array_equal(a.landmarks, b.landmarks)
    assert rows(pooled) == rows(serial)
    # The workers filled the cache.
    _, stats = run(frames, analyzer, cache=facecache.FaceCache(tmp_path, analyzer, None, 0.6))
    assert stats["cache_hits"] == 6


def test_threads_give_the_serial_records(frames, analyzer, tmp_path):
    """Fewer frames than a process pool pays for: dlib analyses them in threads, with the same result."""
    if extract.resolve_workers(2) < 2:
        pytest.skip("one core: nothing to run in parallel")
    serial, _ = run(frames, analyzer, workers=1)
    for attempt in range(3):  # a race (dlib's detector is not reentrant) shows as different boxes
        threaded, stats = run(frames, analyzer, workers=2, cache=facecache.FaceCache(tmp_path / str(attempt), analyzer, None, 0.6))
        assert stats["workers"] == 2 and stats["detections_run"] == 6 < extract.POOL_MIN_FRAMES
        assert rows(threaded) == rows(serial) and [r.face_id for r in threaded] == [r.face_id for r in serial]
    # The identity filter embeds with dlib's network, which keeps state per call: one by one.
    assert not extract.settings_for_threads(analyzer, np.zeros((1, 128), np.float32))


def test_photo_cache_decodes_only_new_photos(tmp_path, monkeypatch):
    media = fetch()
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("single_face.jpg", "multi_face.jpg", "0-f1-su-ph.jpg"):
        (folder / name).write_bytes((media / name).read_bytes())
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    decoded: list[str] = []
    real = extract.normalize_photos
    monkeypatch.setattr(extract, "normalize_photos", lambda paths, out: decoded.extend(map(str, paths)) or real(paths, out))

    from swapline.ops.collect import collect_photos

    def sample(out: Path, cache):
        return extract.sample_source(collect_photos(folder), folder, out, sample_fps=1, skip_similar=0,
                                     max_frames=None, photo_cache=cache)

    first = sample(tmp_path / "v1", facecache.PhotoCache(tmp_path / "cache"))
    assert len(first["frames"]) == 3 and len(decoded) == 4
    (folder / "a_copy.jpg").write_bytes((media / "single_face.jpg").read_bytes())  # sorts first: the original becomes the copy
    (folder / "new.jpg").write_bytes((media / "0-f15-hao-ph.jpg").read_bytes())
    decoded.clear()
    cache = facecache.PhotoCache(tmp_path / "cache")
    second = sample(tmp_path / "v2", cache)
    assert sorted(Path(p).name for p in decoded) == ["broken.jpg", "new.jpg"]  # failures are retried
    assert cache.hits == 3
    reasons = {Path(s["photo"]).name: s["reason"] for s in second["skipped"]}
    assert set(reasons) == {"broken.jpg", "single_face.jpg"} and "duplicate of" in reasons["single_face.jpg"]
    assert [Path(f["photo"]).name for f in second["frames"]] == ["0-f1-su-ph.jpg", "a_copy.jpg", "multi_face.jpg", "new.jpg"]
    # Linked, not copied, and identical to what decoding gives.
    uncached = sample(tmp_path / "v3", None)
    assert uncached == second
    for frame in second["frames"]:
        assert (tmp_path / "v2" / frame["file"]).read_bytes() == (tmp_path / "v3" / frame["file"]).read_bytes()
    assert (tmp_path / "v2" / second["frames"][0]["file"]).stat().st_nlink >= 2
