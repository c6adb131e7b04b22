"""Faceset building on real face crops: quality filter, near-duplicate removal, contact sheet."""

from __future__ import annotations

import dataclasses
import io

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from swapline.demo_media import fetch
from swapline.ops import faces, facetable
from swapline.ops.faceset import (
    FacesetSettings,
    build_faceset,
    contact_sheet,
    dedup_keep,
    hamming,
    phash_ints,
    render_sheet,
)
from tests.conftest import video_frames


def variant(record: facetable.FaceRecord, crop: np.ndarray, tag: str) -> facetable.FaceRecord:
    """The same face as a different row whose crop was altered (and re-measured)."""
    return dataclasses.replace(
        record, face_id=facetable.face_id(tag, record.frame_index, 0), image=crop,
        **facetable.crop_metrics(crop, 0.3),
    )


def jpeg(crop: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(crop).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


@pytest.fixture(scope="module")
def real():
    """Records of the woman (frame 2 is 4 bits of 256 from frame 0, frame 12 is 20 bits off) and of the man."""
    media = fetch()
    analyzer = faces.FaceAnalyzer(faces.AnalyzerSettings(backend="dlib"))  # thresholds measured on its crops
    out = {}
    woman = video_frames(media / "WolfgangLanger_Pexels.mp4", {0, 2, 12})
    man = video_frames(media / "single_face.mp4", {0})
    for name, frames, identity in (("w", woman, "anna"), ("m", man, "ben")):
        for index, image in frames.items():
            records, _ = facetable.extract_from_image(
                analyzer, image, identity=identity, source=f"{name}-clip", source_sha=name * 64,
                frame_index=index, timestamp=index / 24,
            )
            out[f"{name}{index}"] = records[0]
    return out


def as_table(tmp_path, name: str, records: list[facetable.FaceRecord]) -> pd.DataFrame:
    path = tmp_path / f"{name}.parquet"
    facetable.write_faces(path, records)
    return facetable.read_faces(path)


def test_real_near_duplicates_are_near(real):
    w0 = real["w0"]
    def dist(a, b):
        return hamming(phash_ints([a.phash])[0], phash_ints([b.phash]))[0]

    assert len(w0.phash) == 64  # 256-bit hash
    assert dist(w0, real["w2"]) <= FacesetSettings().dedup_distance  # measured 4: 1/12 s later
    assert dist(w0, real["w12"]) > 3 * FacesetSettings().dedup_distance  # measured 20: half a second later
    assert dist(w0, real["m0"]) > 60  # measured 98: the other person


def test_dedup_keeps_the_sharpest_and_the_other_person(tmp_path, real):
    w0 = real["w0"]
    copies = [
        variant(w0, w0.image, "exact-copy"),
        variant(w0, jpeg(w0.image, 70), "jpeg-70"),
        variant(w0, np.clip(w0.image.astype(int) + 12, 0, 255).astype(np.uint8), "brighter"),
        variant(w0, cv2.GaussianBlur(w0.image, (0, 0), 1.0), "soft"),  # sharpness ~24: passes
        variant(w0, cv2.GaussianBlur(w0.image, (0, 0), 3.0), "blurry"),  # sharpness ~5: fails
    ]
    woman = [w0, real["w2"], *copies]
    tables = [as_table(tmp_path, "a", woman), as_table(tmp_path, "b", [real["m0"]])]
    kept, stats = build_faceset(tables, FacesetSettings())
    assert stats == {"raw": 8, "kept": 2, "dropped_duplicate": 5, "dropped_blurry": 1, "dropped_small": 0}
    assert sorted(kept["identity"]) == ["anna", "ben"]
    assert list(kept["face_id"]) == sorted(kept["face_id"])
    anna = kept[kept["identity"] == "anna"].iloc[0]
    candidates = [r for r in woman if r.sharpness >= 15]
    assert anna["sharpness"] == max(r.sharpness for r in candidates)
    # The kept row is a whole row of the input, image bytes included. (The brightened copy
    # ties with the original on sharpness; ties go to the lower face_id.)
    source = next(r for r in woman if r.face_id == anna["face_id"])
    np.testing.assert_array_equal(facetable.decode_image(anna["image"]), source.image)


def test_sharpest_wins_whatever_the_order(tmp_path, real):
    soft = variant(real["w0"], cv2.GaussianBlur(real["w0"].image, (0, 0), 1.0), "soft")
    group = [soft, real["w2"], real["w0"]]
    best = max(group, key=lambda r: r.sharpness)
    assert best is real["w2"]  # measured: 114.4 vs 113.9 (frame 0) and ~24 (blurred)
    for order in (group, group[::-1]):
        kept, stats = build_faceset([as_table(tmp_path, "g", order)], FacesetSettings())
        assert list(kept["face_id"]) == [best.face_id] and stats["dropped_duplicate"] == 2


def test_dedup_distance(tmp_path, real):
    w0 = real["w0"]
    table = as_table(tmp_path, "t", [w0, variant(w0, w0.image, "exact"), real["w2"], real["w12"]])
    kept, stats = build_faceset([table], FacesetSettings(dedup_distance=6))
    assert sorted(kept["frame_index"]) == [2, 12] and stats["dropped_duplicate"] == 2
    # 0 = identical hashes only: frame 2 (4 bits off) survives, the exact copy does not.
    kept, stats = build_faceset([table], FacesetSettings(dedup_distance=0))
    assert sorted(kept["frame_index"]) == [0, 2, 12] and stats["dropped_duplicate"] == 1


def test_quality_filter_counts_reasons(tmp_path, real):
    # Measured face sizes: the woman ~188 source px, the man ~140.
    assert real["m0"].face_size < 150 < real["w0"].face_size
    table = as_table(tmp_path, "q", [real["w0"], real["m0"]])
    kept, stats = build_faceset([table], FacesetSettings(min_face_size=150))
    assert list(kept["identity"]) == ["anna"] and stats["dropped_small"] == 1
    kept, stats = build_faceset([table], FacesetSettings(min_sharpness=1e6))
    assert kept.empty and stats["dropped_blurry"] == 2


def test_same_face_twice_and_empty_input(tmp_path, real):
    table = as_table(tmp_path, "d", [real["w0"]])
    kept, stats = build_faceset([table, table], FacesetSettings())
    assert len(kept) == 1 and stats["dropped_duplicate"] == 1 and stats["raw"] == 2
    empty = as_table(tmp_path, "e", [])
    kept, stats = build_faceset([empty], FacesetSettings())
    assert kept.empty and stats == {"raw": 0, "kept": 0, "dropped_duplicate": 0, "dropped_blurry": 0, "dropped_small": 0}
    assert build_faceset([], FacesetSettings())[1]["raw"] == 0


def test_dedup_scales_to_thousands():
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, size=(4000, 4), dtype=np.int64).astype(np.uint64)  # 256-bit hashes
    hashes[2000:] = hashes[:2000] ^ np.uint64(0b101)  # every second half is 2 bits off in each word
    sharpness = rng.uniform(10, 200, size=4000)
    keep = dedup_keep(hashes, sharpness, 8)
    assert keep.sum() == 2000
    pairs = np.stack([keep[:2000], keep[2000:]], axis=1)
    sharper_second = sharpness[2000:] > sharpness[:2000]
    np.testing.assert_array_equal(pairs[:, 1], sharper_second)


@pytest.mark.parametrize("words,distance", [(4, 6), (4, 0), (1, 5), (4, 40)])
def test_dedup_keeps_what_comparing_with_every_kept_face_keeps(words, distance):
    """The block index only narrows whom a face is compared with: on clusters of hashes up to
    `distance` + 2 bits apart (so some pairs fall just outside), and unmeasurable sharpness,
    the mask is the greedy scan over every kept face."""
    rng = np.random.default_rng(words * 100 + distance)
    rows = []
    for base in rng.integers(0, 2**63, size=(120, words), dtype=np.int64).astype(np.uint64):
        for _ in range(5):
            row = base.copy()
            for _ in range(rng.integers(0, distance + 3)):
                row[rng.integers(words)] ^= np.uint64(1) << np.uint64(rng.integers(64))
            rows.append(row)
    hashes, sharpness = np.array(rows), rng.uniform(10, 200, size=len(rows))
    sharpness[::17] = np.nan
    kept: list[int] = []
    for index in np.argsort(-np.nan_to_num(sharpness, nan=-np.inf), kind="stable"):
        if not kept or hamming(hashes[index], hashes[kept]).min() > distance:
            kept.append(int(index))
    expected = np.zeros(len(rows), bool)
    expected[kept] = True
    np.testing.assert_array_equal(dedup_keep(hashes, sharpness, distance), expected)
    assert 0 < expected.sum() < len(rows)


def test_contact_sheet(real):
    images = [real["w0"].image, real["m0"].image, real["w12"].image]
    png = contact_sheet(images, columns=2, cell=64)
    sheet = facetable.decode_image(png)
    assert sheet.shape == (128, 128, 3)
    thumb = cv2.resize(real["m0"].image, (64, 64), interpolation=cv2.INTER_AREA)
    assert np.abs(sheet[:64, 64:].astype(int) - thumb).mean() < 1
    assert (sheet[64:, 64:] == 32).all()  # the empty cell
    assert facetable.decode_image(contact_sheet([], cell=32)).shape == (32, 32, 3)


def test_a_sheet_reuses_the_cells_of_the_previous_one(real):
    crops = {name: real[name].image for name in ("w0", "m0", "w12")}
    asked: list[list[str]] = []

    def load(ids):
        asked.append(ids)
        return {i: crops[i] for i in ids}

    first = render_sheet(load, ["w0", "m0"], cell=64)
    grown = render_sheet(load, ["w12", "w0", "m0"], previous=(first, ["w0", "m0"]), cell=64)
    assert asked == [["w0", "m0"], ["w12"]]  # only the new face is decoded
    assert grown == contact_sheet([crops["w12"], crops["w0"], crops["m0"]], cell=64)  # the bytes of a fresh sheet
    assert render_sheet(load, ["m0"], previous=(b"not a png", ["m0"]), cell=64) == contact_sheet([crops["m0"]], cell=64)
