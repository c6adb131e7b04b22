"""The face table: real faces written and read back with their crops and metadata."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from swapline.demo_media import fetch
from swapline.ops import faces, facetable
from tests.conftest import video_frame


@pytest.fixture(scope="module")
def media():
    return fetch()


@pytest.fixture(scope="module")
def analyzer():
    return faces.FaceAnalyzer()


@pytest.fixture(scope="module")
def woman(media):
    return video_frame(media / "WolfgangLanger_Pexels.mp4", 0), video_frame(media / "WolfgangLanger_Pexels.mp4", 300)


@pytest.fixture(scope="module")
def man(media):
    return video_frame(media / "single_face.mp4", 0)


@pytest.fixture(scope="module")
def records(analyzer, woman, media):
    out, stats = facetable.extract_from_image(
        analyzer, woman[0], identity="anna", source="clip-a", source_sha="a" * 64, frame_index=0, timestamp=0.0
    )
    assert stats == {"detected": 1, "too_small": 0, "rejected_identity": 0, "kept": 1}
    photo = np.asarray(Image.open(media / "single_face.jpg").convert("RGB"))
    more, _ = facetable.extract_from_image(
        analyzer, photo, identity="ben", source="photos-b", source_sha="b" * 64,
        frame_index=-1, timestamp=0.0, photo="single_face.jpg",
    )
    return out + more


def test_record_fields(records, analyzer):
    video, photo = records
    assert video.face_id == facetable.face_id("a" * 64, 0, 0) and len(video.face_id) == 16
    int(video.face_id, 16)
    assert photo.frame_index == -1 and photo.photo == "single_face.jpg"
    assert video.image.shape == (256, 256, 3) and (video.width, video.height) == (256, 256)
    assert len(video.phash) == 64 and math.isnan(video.identity_distance)
    # face_size is in source px, a bit under the detector box width (measured ~0.75x).
    box_width = video.bbox[2] - video.bbox[0]
    assert 0.5 * box_width < video.face_size < box_width
    # The crop is the face warped by the stored matrix: re-warping reproduces it.
    frame_crop = faces.align_face(video_frame(fetch() / "WolfgangLanger_Pexels.mp4", 0), video.matrix, 256)
    np.testing.assert_array_equal(frame_crop, video.image)
    assert video.sharpness > 15 and 0 < video.brightness < 255 and video.contrast > 0


def test_round_trip_with_pandas(tmp_path, records):
    path = tmp_path / "faces.parquet"
    assert facetable.write_faces(path, records) == 2
    table = pd.read_parquet(path)
    assert list(table.columns) == list(facetable.COLUMNS)
    for row, record in zip(table.itertuples(index=False), records):
        assert row.face_id == record.face_id and row.identity == record.identity
        assert row.frame_index == record.frame_index and row.photo == record.photo
        assert list(row.bbox) == list(record.bbox)
        np.testing.assert_array_equal(np.asarray(row.landmarks).reshape(68, 2), record.landmarks)
        np.testing.assert_array_equal(np.asarray(row.matrix).reshape(2, 3), record.matrix)
        for name in ("timestamp", "face_size", "sharpness", "brightness", "contrast", "yaw", "pitch", "roll"):
            assert getattr(row, name) == getattr(record, name)
        assert row.phash == record.phash
        assert row.image == facetable.encode_png(record.image)
        np.testing.assert_array_equal(facetable.decode_image(row.image), record.image)
    assert pq.read_schema(path).metadata[facetable.VERSION_KEY] == str(facetable.FORMAT_VERSION).encode()
    assert not [p for p in tmp_path.iterdir() if p.name != "faces.parquet"]  # no temp left


def test_read_faces_can_skip_images(tmp_path, records):
    path = tmp_path / "faces.parquet"
    facetable.write_faces(path, records)
    light = facetable.read_faces(path, with_images=False)
    assert "image" not in light.columns and len(light) == 2
    assert list(facetable.read_faces(path).columns) == list(facetable.COLUMNS)


def test_empty_table(tmp_path):
    path = tmp_path / "none.parquet"
    assert facetable.write_faces(path, []) == 0
    table = facetable.read_faces(path)
    assert len(table) == 0 and list(table.columns) == list(facetable.COLUMNS)


def test_newer_format_is_refused_by_name(tmp_path, records):
    path = tmp_path / "future.parquet"
    facetable.write_faces(path, records[:1])
    table = pq.read_table(path)
    newer = facetable.FORMAT_VERSION + 1
    pq.write_table(table.replace_schema_metadata({facetable.VERSION_KEY: str(newer).encode()}), path)
    with pytest.raises(ValueError, match=f"future.parquet.*format {newer}"):
        facetable.read_faces(path)
    pq.write_table(table.replace_schema_metadata({}), path)
    with pytest.raises(ValueError, match="not a swapline face table"):
        facetable.read_faces(path)


def test_failed_write_keeps_the_old_file(tmp_path, records, monkeypatch):
    path = tmp_path / "faces.parquet"
    facetable.write_faces(path, records)

    def crash_midway(table, where, **kwargs):
        open(where, "wb").write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", crash_midway)
    with pytest.raises(OSError):
        facetable.write_faces(path, records[:1])
    monkeypatch.undo()
    assert len(facetable.read_faces(path)) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["faces.parquet"]


def test_identity_filter(analyzer, woman, man):
    reference = analyzer.embed(woman[0], analyzer.detect(woman[0])[0])[None, :]
    common = dict(identity="anna", source="s", source_sha="c" * 64, timestamp=0.0, reference=reference)
    kept, stats = facetable.extract_from_image(analyzer, woman[1], frame_index=300, **common)
    assert stats["kept"] == 1 and kept[0].identity_distance < 0.6  # measured 0.50
    rejected, stats = facetable.extract_from_image(analyzer, man, frame_index=0, **common)
    assert rejected == [] and stats == {"detected": 1, "too_small": 0, "rejected_identity": 1, "kept": 0}
    with pytest.raises(ValueError):
        facetable.extract_from_image(analyzer, man, frame_index=0, **{**common, "reference": np.zeros((0, 128))})


def test_face_ids_are_stable(analyzer, woman):
    first, _ = facetable.extract_from_image(
        analyzer, woman[0], identity="x", source="s", source_sha="d" * 64, frame_index=7, timestamp=0.3
    )
    again, _ = facetable.extract_from_image(
        analyzer, woman[0], identity="x", source="s", source_sha="d" * 64, frame_index=7, timestamp=0.3
    )
    assert [r.face_id for r in first] == [r.face_id for r in again]
    assert first[0].phash == again[0].phash
    assert facetable.face_id("d" * 64, 7, 0) != facetable.face_id("d" * 64, 8, 0)


def test_filtered_table_written_back_reads_identically(tmp_path, records):
    facetable.write_faces(tmp_path / "all.parquet", records)
    table = facetable.read_faces(tmp_path / "all.parquet")
    subset = table.iloc[::-1].reset_index(drop=True)  # e.g. a faceset: reordered and filtered
    assert facetable.write_table(tmp_path / "subset.parquet", subset) == len(records)
    again = facetable.read_faces(tmp_path / "subset.parquet")
    assert list(again["face_id"]) == list(subset["face_id"]) and list(again["image"]) == list(subset["image"])
    assert np.array_equal(np.stack(again["landmarks"]), np.stack(subset["landmarks"]))
    assert facetable.table_version(tmp_path / "subset.parquet") == facetable.FORMAT_VERSION
    # Arrow to Arrow (a faceset's segment): the bytes write_table gives for the same rows.
    rows = list(range(len(records)))[::-1]
    assert facetable.copy_rows(tmp_path / "all.parquet", tmp_path / "copied.parquet", rows) == len(records)
    assert (tmp_path / "copied.parquet").read_bytes() == (tmp_path / "subset.parquet").read_bytes()


def test_identity_filter_keeps_each_face_embedding(tmp_path, analyzer, woman, man):
    """With reference photos every face is embedded to filter it: the table keeps that
    embedding (so the faceset need not embed it again); without them none is computed."""
    frame = woman[1]
    reference = analyzer.embed(woman[0], analyzer.detect(woman[0])[0])[None, :]
    kw = dict(identity="anna", source="s", source_sha="e" * 64, frame_index=3, timestamp=0.1)
    filtered, _ = facetable.extract_from_image(analyzer, frame, reference=reference, **kw)
    plain, _ = facetable.extract_from_image(analyzer, frame, **kw)
    assert plain[0].embedding is None and filtered[0].embedding.shape == (128,)
    expected = analyzer.embed(frame, analyzer.detect(frame)[0])
    np.testing.assert_allclose(filtered[0].embedding, expected, atol=1e-6)
    path = tmp_path / "faces.parquet"
    facetable.write_faces(path, filtered + plain)
    table = facetable.read_faces(path)
    np.testing.assert_allclose(np.asarray(table["embedding"][0], np.float32), expected, atol=1e-6)
    assert table["embedding"][1] is None
    facetable.write_table(tmp_path / "again.parquet", table)  # a faceset written back keeps them
    np.testing.assert_array_equal(facetable.read_faces(tmp_path / "again.parquet")["embedding"][0], table["embedding"][0])


def test_version_1_table_reads_without_embeddings(tmp_path, records):
    """A table written before the embedding column (format 1) still reads, the column null."""
    path = tmp_path / "old.parquet"
    facetable.write_faces(path, records)
    table = pq.read_table(path)
    old = table.drop(["embedding"]).replace_schema_metadata({facetable.VERSION_KEY: b"1"})
    pq.write_table(old, path)
    read = facetable.read_faces(path)
    assert list(read.columns) == list(facetable.COLUMNS) and read["embedding"].isna().all()
    assert list(read["face_id"]) == [r.face_id for r in records]
    assert facetable.write_table(tmp_path / "rewritten.parquet", read.drop(columns=["embedding"])) == len(records)
