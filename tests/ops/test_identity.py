"""Keeping only the right person: reference filtering and the purity report, on real faces."""

from __future__ import annotations

import numpy as np
import pytest

from swapline.ops import facetable
from swapline.ops.faces import AnalyzerSettings, FaceAnalyzer
from swapline.ops.identity import EMBEDDINGS, faceset_embeddings, purity, read_embeddings, sample_embeddings, write_embeddings
from tests.conftest import video_frames


@pytest.fixture(scope="module")
def clips(media_dir):
    return video_frames(media_dir / "WolfgangLanger_Pexels.mp4", {0, 60, 300, 420}), video_frames(media_dir / "single_face.mp4", {0, 30, 60})


@pytest.fixture(scope="module")
def analyzer():
    return FaceAnalyzer(AnalyzerSettings(face_size=128))


def records(analyzer, images, identity: str, sha: str, reference=None):
    out = []
    for index, image in images.items():
        found, _ = facetable.extract_from_image(analyzer, image, identity=identity, source="s", source_sha=sha * 64,
                                               frame_index=index, timestamp=0.0, reference=reference)
        out += found
    return out


def test_side_by_side_frame_keeps_the_woman_and_rejects_the_man(analyzer, clips):
    woman, man = clips
    both = np.concatenate([man[30], woman[300]], axis=1)  # (360, 1280, 3): two people in one frame
    reference = analyzer.embed(woman[0], analyzer.detect(woman[0])[0])[None, :]
    kept, stats = facetable.extract_from_image(analyzer, both, identity="anna", source="s", source_sha="d" * 64,
                                               frame_index=0, timestamp=0.0, reference=reference)
    assert stats["detected"] == 2 and stats["rejected_identity"] == 1 and len(kept) == 1
    assert kept[0].bbox[0] >= 640  # the kept face is on the woman's (right) half
    assert kept[0].identity_distance < 0.6


def test_purity_flags_a_mixed_faceset_and_passes_a_clean_one(tmp_path, analyzer, clips):
    woman, man = clips
    clean = records(analyzer, woman, "anna", "a")
    mixed = clean + records(analyzer, man, "anna", "b")
    for name, recs in (("clean", clean), ("mixed", mixed)):
        facetable.write_faces(tmp_path / f"{name}.parquet", recs)
    ids, emb = sample_embeddings(analyzer, facetable.read_faces(tmp_path / "clean.parquet"))
    assert emb.shape == (4, 128) and purity(ids, emb, 0.6)["several_people"] is False
    ids, emb = sample_embeddings(analyzer, facetable.read_faces(tmp_path / "mixed.parquet"))
    report = purity(ids, emb, 0.6)
    man_ids = {r.face_id for r in mixed[len(clean):]}
    assert report["several_people"] is True and set(report["outliers"]) == man_ids  # 3 of 7 are the man


class NoEmbedding:  # where every embedding is known already, nothing may be computed
    def embed(self, *args):
        raise AssertionError("embedding recomputed despite the cache")


def test_embedding_sample_is_cached_and_stable_when_faces_are_added(tmp_path, analyzer, clips):
    woman, _ = clips
    recs = records(analyzer, woman, "anna", "a")
    facetable.write_faces(tmp_path / "t.parquet", recs)
    table = facetable.read_faces(tmp_path / "t.parquet")
    ids, first = sample_embeddings(analyzer, table.iloc[:3], cache_dir=tmp_path / "cache")
    again_ids, again = sample_embeddings(NoEmbedding(), table.iloc[:3], cache_dir=tmp_path / "cache")
    assert again_ids == ids and np.array_equal(again, first)
    # Adding a face keeps the sample of the others (hash order), so only the new face is embedded.
    grown_ids, _ = sample_embeddings(analyzer, table, limit=3, cache_dir=tmp_path / "cache")
    assert len(set(grown_ids) & set(ids)) >= 2


def test_embeddings_from_the_identity_filter_are_reused(tmp_path, analyzer, clips):
    woman, _ = clips
    reference = analyzer.embed(woman[0], analyzer.detect(woman[0])[0])[None, :]
    recs = records(analyzer, woman, "anna", "a", reference=reference)
    facetable.write_faces(tmp_path / "t.parquet", recs)
    ids, embeddings = sample_embeddings(NoEmbedding(), facetable.read_faces(tmp_path / "t.parquet"))
    by_id = {r.face_id: r.embedding for r in recs}
    assert len(ids) == len(recs) and np.array_equal(embeddings, np.stack([by_id[i] for i in ids]))


def test_faceset_embeddings_are_stored_once_and_read_back(tmp_path, analyzer, clips):
    from swapline.ops.detections import faceset_references

    woman, _ = clips
    folder = tmp_path / "faceset"
    facetable.write_faces(folder / "faceset.parquet", records(analyzer, woman, "anna", "a"))
    # An older faceset without the file: the same sample is computed (through the cache).
    computed = faceset_embeddings(folder, analyzer, tmp_path / "cache")
    assert len(computed[0]) == 4 and computed[1].shape == (4, 128)
    write_embeddings(folder, *computed)
    first = (folder / EMBEDDINGS).read_bytes()
    write_embeddings(folder, *computed)
    assert (folder / EMBEDDINGS).read_bytes() == first  # same faces, same bytes: the faceset version is stable
    ids, stored = read_embeddings(folder)
    assert ids == computed[0] and stored.dtype == np.float32 and np.array_equal(stored, computed[1])
    assert faceset_embeddings(folder, NoEmbedding())[0] == ids  # read, not computed
    gate = faceset_references(NoEmbedding(), folder / "faceset.parquet")
    assert np.array_equal(gate, stored)  # conversion's identity gate uses the same sample
    facetable.write_faces(tmp_path / "empty" / "faceset.parquet", [])
    assert faceset_references(NoEmbedding(), tmp_path / "empty") is None


def test_a_content_keyed_sample_reads_images_only_for_faces_not_cached(tmp_path, analyzer, clips):
    woman, _ = clips
    facetable.write_faces(tmp_path / "t.parquet", records(analyzer, woman, "anna", "a"))
    full = facetable.read_faces(tmp_path / "t.parquet")
    light = full.drop(columns=["image", "landmarks", "matrix", "embedding"]).assign(content=[f"k:{i}" for i in range(len(full))])
    loaded: list[int] = []

    def load(rows):
        loaded.extend(rows.index)
        return rows.assign(**{c: full.loc[rows.index, c].tolist() for c in ("image", "landmarks", "matrix", "embedding")})

    ids, first = sample_embeddings(analyzer, light, limit=3, cache_dir=tmp_path / "cache", load=load)
    assert sorted(loaded) == sorted(full.index[full["face_id"].isin(ids)])
    direct_ids, direct = sample_embeddings(analyzer, full, limit=3)
    assert direct_ids == ids and np.allclose(direct, first)  # the same embeddings as from the crops
    loaded.clear()
    again_ids, again = sample_embeddings(NoEmbedding(), light, limit=3, cache_dir=tmp_path / "cache", load=load)
    assert again_ids == ids and np.array_equal(again, first) and loaded == []  # cached: no image read
