"""Face tables as segments: growth links what did not change, and the bytes never depend on history."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from swapline.ops import extract, facesegments, facetable
from swapline.ops.facecache import FaceCache
from swapline.ops.faces import AnalyzerSettings, FaceAnalyzer
from swapline.ops.faceset import FacesetSettings, build_faceset, face_files, read_metadata, with_images, write_faceset
from swapline.ops.images import encode_jpeg
from swapline.ops.storage import tree_hash
from tests.conftest import video_frames

SETTINGS = {"identity": "anna", "source": "clip"}


@pytest.fixture(scope="module")
def frames(media_dir, tmp_path_factory) -> tuple[Path, list[dict]]:
    """Sixteen sampled frames of the demo clip as JPEGs, and their frames-manifest entries."""
    folder = tmp_path_factory.mktemp("frames")
    entries = []
    for index, frame in sorted(video_frames(media_dir / "WolfgangLanger_Pexels.mp4", set(range(0, 320, 20))).items()):
        data = encode_jpeg(frame)
        (folder / f"{index:06d}.jpg").write_bytes(data)
        entries.append({"index": index, "timestamp": index / 24, "file": f"{index:06d}.jpg",
                        "sha256": hashlib.sha256(data).hexdigest(), "photo": ""})
    return folder, entries


@pytest.fixture
def small_segments(monkeypatch):
    """Segments of ~3 frames, so 16 frames make several."""
    monkeypatch.setattr(facesegments, "SEGMENT_FRAMES", 3)
    monkeypatch.setattr(facesegments, "MAX_FRAMES", 6)


def build(table: Path, frames, entries: list[dict], cache_dir: Path, reuse=None) -> tuple[list[dict], list[dict]]:
    """A face table of `entries` built as the aligned_faces asset builds it; returns its
    manifest entries and the frames handed to extraction."""
    folder, _ = frames
    analyzer = FaceAnalyzer(AnalyzerSettings(backend="dlib", face_size=96))
    cache = FaceCache(cache_dir, analyzer, None, 0.6)
    extracted = []

    def extract_frames(frame_list, first):
        extracted.extend(frame_list if first else [])
        records, stats = extract.extract_faces(folder, {"frames": frame_list}, analyzer, identity="anna", source="clip",
                                               reference=None, max_distance=0.6, cache=cache)
        return records, {k: v for k, v in stats.items() if k not in extract.RUN_STATS}

    segments = facesegments.plan_segments(entries, SETTINGS)
    return facesegments.write_face_table(table, segments, reuse or {}, extract_frames), extracted


def test_boundaries_depend_on_the_frames_alone():
    frames = [{"sha256": hashlib.sha256(str(i).encode()).hexdigest(), "index": i, "timestamp": 0.0, "photo": ""}
              for i in range(2000)]
    grown = frames[:700] + [dict(f, index=-1, photo=f"new{i}.jpg") for i, f in enumerate(frames[:5])] + frames[700:]
    before, after = (facesegments.plan_segments(f, SETTINGS) for f in (frames, grown))
    assert [f for s in after for f in s.frames] == grown  # every frame once, in manifest order
    assert max(len(s.frames) for s in after) <= facesegments.MAX_FRAMES
    assert sorted(s.name for s in after) == [s.name for s in after]  # name order is frame order
    changed = {s.key for s in after} - {s.key for s in before}
    # Five frames inserted in one place: the segment they land in changes, all others are kept.
    assert 1 <= len(changed) <= 2 and len(before) >= 10
    assert sum(len(s.frames) for s in after if s.key in changed) < 3 * facesegments.MAX_FRAMES
    assert facesegments.plan_segments(grown, SETTINGS) == after
    assert {s.key for s in facesegments.plan_segments(frames, {**SETTINGS, "source": "other"})}.isdisjoint(
        {s.key for s in before})  # other settings: nothing shared


def test_growth_links_unchanged_segments_and_gives_the_same_bytes(frames, small_segments, tmp_path):
    _, entries = frames
    first = [e for i, e in enumerate(entries) if i not in (5, 6, 11)]
    old_entries, _ = build(tmp_path / "old", frames, first, tmp_path / "cache")
    assert len(old_entries) >= 3
    reuse = facesegments.reusable_entries(tmp_path / "old", old_entries)
    grown_entries, extracted = build(tmp_path / "grown", frames, entries, tmp_path / "cache", reuse)
    fresh_entries, _ = build(tmp_path / "fresh", frames, entries, tmp_path / "fresh-cache")

    # Built from scratch or grown: the same files, bytes and stats.
    assert tree_hash(tmp_path / "grown") == tree_hash(tmp_path / "fresh") and grown_entries == fresh_entries
    linked = [e for e in grown_entries if e["key"] in reuse]
    assert linked and len(linked) < len(grown_entries)
    for entry in linked:  # a link, not a copy
        assert os.stat(tmp_path / "grown" / entry["file"]).st_ino == os.stat(reuse[entry["key"]][0]).st_ino
    # Only the frames of the segments that changed were handed to extraction.
    rebuilt = {f["sha256"] for e in grown_entries if e["key"] not in reuse
               for s in facesegments.plan_segments(entries, SETTINGS) if s.key == e["key"] for f in s.frames}
    assert {f["sha256"] for f in extracted} == rebuilt and len(rebuilt) < len(entries)

    table = facetable.read_faces(tmp_path / "grown")
    assert len(table) == sum(e["stats"]["faces"] for e in grown_entries) > 10
    assert list(pd.read_parquet(tmp_path / "grown")["face_id"]) == list(table["face_id"])  # pandas reads the folder
    assert list(table["frame_index"]) == sorted(table["frame_index"])  # frame order across segments


def test_read_images_reads_the_rows_asked(frames, small_segments, tmp_path):
    _, entries = frames
    build(tmp_path / "t", frames, entries, tmp_path / "cache")
    file = facesegments.segment_paths(tmp_path / "t")[0]
    table = facetable.read_faces(file)
    rows = [len(table) - 1, 0]
    assert facesegments.read_images(file, rows) == [table["image"][r] for r in rows]


def test_faceset_rewrites_only_segments_whose_kept_faces_changed(frames, small_segments, tmp_path):
    _, entries = frames
    build(tmp_path / "old", frames, entries[:12], tmp_path / "cache")
    build(tmp_path / "new", frames, entries, tmp_path / "cache")
    settings = FacesetSettings(min_sharpness=0.0)

    def faceset(table: Path, out: Path, previous: dict):
        files = face_files(table, "unused")
        kept, _ = build_faceset([read_metadata(files)], settings)
        return kept, files, write_faceset(out, kept, files, previous)

    faceset(tmp_path / "old", tmp_path / "fs-old", {})
    kept, files, counts = faceset(tmp_path / "new", tmp_path / "fs-new", facesegments.previous_segments(tmp_path / "fs-old"))
    assert 0 < counts["segments_written"] < counts["segments"]
    faceset(tmp_path / "new", tmp_path / "fs-fresh", {})
    assert tree_hash(tmp_path / "fs-new") == tree_hash(tmp_path / "fs-fresh")

    stored = facetable.read_faces(tmp_path / "fs-new")
    assert sorted(stored["face_id"]) == list(kept["face_id"])  # kept is sorted by face_id
    expected = with_images(kept, files).set_index("face_id")["image"]
    assert all(expected[i] == png for i, png in zip(stored["face_id"], stored["image"]))
    shared = set(os.listdir(tmp_path / "fs-old")) & set(os.listdir(tmp_path / "fs-new"))
    assert shared and all(np.array_equal(*(facetable.read_faces(tmp_path / d / name)["face_id"] for d in ("fs-old", "fs-new")))
                          for name in shared)


def test_candidates_read_only_the_files_the_previous_build_did_not_list(frames, small_segments, tmp_path):
    from swapline.ops.candidates import file_candidates, landmarks_in_box, read_candidates, write_candidates
    from swapline.ops.faceset import FaceFile

    _, entries = frames
    build(tmp_path / "old", frames, entries[:12], tmp_path / "cache")
    build(tmp_path / "new", frames, entries, tmp_path / "cache")
    old, new = face_files(tmp_path / "old", "v1"), face_files(tmp_path / "new", "v2")
    write_candidates(tmp_path / "old.parquet", read_candidates(old, None), old)

    # A file the previous candidates list is never opened: its key vouches for its rows.
    known = {f.key for f in old}
    moved = [FaceFile(tmp_path / "gone" / f.path.name, f.key) if f.key in known else f for f in new]
    assert any(f.key in known for f in new) and any(f.key not in known for f in new)
    grown = read_candidates(moved, tmp_path / "old.parquet")
    fresh = read_candidates(new, None)
    assert grown.equals(fresh)
    metadata = read_metadata(new)  # what the faceset read before: the same faces, files and rows
    assert list(grown["face_id"]) == list(metadata["face_id"]) and list(grown["_row"]) == list(metadata["_row"])
    assert np.allclose(grown["landmarks_in_box"], landmarks_in_box(metadata["landmarks"], metadata["bbox"]))
    assert 0.5 < grown["landmarks_in_box"].min() and grown["landmarks_in_box"].max() <= 1.0

    # Same faces, same bytes, whatever order they were read in.
    write_candidates(tmp_path / "a.parquet", fresh, new)
    write_candidates(tmp_path / "b.parquet", fresh.iloc[::-1], new)
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    assert len(file_candidates(new[0].path, new[0].key)) == len(read_metadata(new[:1])) > 0
    kept, stats = build_faceset([grown], FacesetSettings(min_sharpness=0.0))
    assert stats["raw"] == len(grown) and set(kept["face_id"]) <= set(grown["face_id"])
