"""Nothing lost silently: extraction counts and names what it did not use (photos without a face,
faces narrower than min_face, faces rejected as someone else with their distances), the counts
survive the face cache and add up across segments, and a source's bit depth is read back."""

from __future__ import annotations

import shutil

import pytest

from swapline.ops import collect, extract, facecache, unused
from swapline.ops.faces import AnalyzerSettings, FaceAnalyzer
from swapline.ops.facesegments import total_stats

THRESHOLD = 0.6


@pytest.fixture(scope="module")
def photos(tmp_path_factory, media_dir):
    """A man's portrait, a group photo of three others (dlib HOG at the default scale finds 3 of
    its 5), a black-and-white picture in which no face is found, and the frames manifest."""
    folder = tmp_path_factory.mktemp("photos")
    for name in ("single_face.jpg", "multi_face.jpg", "BWPictureHuman.jpg"):
        shutil.copy(media_dir / name, folder / name)
    frames_dir = tmp_path_factory.mktemp("frames")
    manifest = extract.sample_source(collect.collect_photos(folder), folder, frames_dir, sample_fps=1, skip_similar=0, max_frames=None)
    return frames_dir, manifest


def analyzer(**settings) -> FaceAnalyzer:
    return FaceAnalyzer(AnalyzerSettings(backend="dlib", face_size=96, **settings))


def test_rejected_faces_are_named_with_their_distances_and_survive_the_cache(photos, media_dir, tmp_path):
    frames_dir, manifest = photos
    faces = analyzer()
    reference = extract.reference_embeddings(faces, [media_dir / "single_face.jpg"])
    common = dict(identity="ben", source="photos", reference=reference, max_distance=THRESHOLD)

    records, stats = extract.extract_faces(frames_dir, manifest, faces, cache=facecache.FaceCache(tmp_path, faces, reference, THRESHOLD), **common)
    assert stats["faces"] == len(records) == 1  # the man himself
    assert stats["rejected_identity"] == 3 == len(stats["rejected_faces"])  # the group photo's three
    assert {r["file"] for r in stats["rejected_faces"]} == {"multi_face.jpg"}
    assert all(r["distance"] > THRESHOLD for r in stats["rejected_faces"])
    assert stats["no_face"] == 1 and stats["no_face_files"] == ["BWPictureHuman.jpg"]
    histogram = stats["identity_distances"]
    assert sum(histogram["rejected"].values()) == 3 and sum(histogram["kept"].values()) == 1

    margin = unused.margin(histogram, THRESHOLD)
    assert margin["kept"]["max"] <= THRESHOLD < margin["rejected"]["min"] <= margin["rejected"]["median"] <= margin["rejected"]["max"]
    assert sum(cell["rejected"] for cell in margin["histogram"].values()) == 3

    # The second time every photo comes from the cache (per-image stats are ints there): same report.
    again, cached = extract.extract_faces(frames_dir, manifest, faces, cache=facecache.FaceCache(tmp_path, faces, reference, THRESHOLD), **common)
    assert cached["cache_hits"] == 3 and cached["detections_run"] == 0
    assert {k: v for k, v in cached.items() if k not in extract.RUN_STATS} == {k: v for k, v in stats.items() if k not in extract.RUN_STATS}


def test_faces_below_min_face_are_counted_and_their_photos_named(photos):
    frames_dir, manifest = photos
    # The group photo's faces are ~146 px wide, the portrait's 174: min_face 160 drops only the group's.
    records, stats = extract.extract_faces(frames_dir, manifest, analyzer(min_face=160), identity="ben", source="photos",
                                           reference=None, max_distance=THRESHOLD)
    assert stats["faces"] == 1 and stats["too_small"] == 3 and stats["too_small_files"] == ["multi_face.jpg"]
    assert stats["rejected_identity"] == 0 and stats["rejected_faces"] == [] and stats["identity_distances"]["kept"] == {}


def test_segment_stats_add_up_and_lists_stay_bounded():
    zero = {"faces": 0, **unused.zero()}
    segment = {"faces": 2, "no_face": 15, "no_face_files": [f"p{i}.jpg" for i in range(15)], "too_small_files": [],
               "rejected_faces": [{"file": "g.jpg", "distance": 0.71}],
               "identity_distances": {"kept": {"0.41": 2}, "rejected": {"0.71": 1}}}
    older = {"faces": 3}  # a segment stored before these keys existed
    total = total_stats([{"stats": segment}, {"stats": segment}, {"stats": older}], zero)
    assert total["faces"] == 7 and total["no_face"] == 30
    assert len(total["no_face_files"]) == unused.LIMIT and total["no_face_files"][:15] == segment["no_face_files"]
    assert total["identity_distances"] == {"kept": {"0.41": 4}, "rejected": {"0.71": 2}}
    assert zero["no_face_files"] == [] and total_stats([], zero) == zero  # the zero is not changed in place
