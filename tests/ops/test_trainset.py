"""A faceset decoded once: the memory-mapped cache against decoding the PNGs, on real faces."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import torch

from swapline.ops import facetable, trainset
from swapline.ops.faces import AnalyzerSettings, FaceAnalyzer, hull_mask, transform_points
from tests.conftest import video_frames


@pytest.fixture(scope="module")
def faceset(media_dir, tmp_path_factory) -> Path:
    """A faceset folder holding the real faces of 12 frames of the demo clip."""
    analyzer = FaceAnalyzer(AnalyzerSettings(face_size=128))
    records = []
    for index, frame in sorted(video_frames(media_dir / "WolfgangLanger_Pexels.mp4", set(range(0, 240, 20))).items()):
        found, _ = facetable.extract_from_image(analyzer, frame, identity="anna", source="s", source_sha="a" * 64,
                                                frame_index=index, timestamp=0.0)
        records += found
    folder = tmp_path_factory.mktemp("faceset")
    facetable.write_faces(folder / "faceset.parquet", records)
    return folder


def _decoded_by_hand(folder: Path, feather: int = 5):
    table = facetable.read_faces(folder / "faceset.parquet")
    faces = np.stack([facetable.decode_image(b) for b in table["image"]])  # (N, S, S, 3)
    points = np.stack([transform_points(np.asarray(lm, np.float32).reshape(68, 2), np.asarray(m).reshape(2, 3))
                       for lm, m in zip(table["landmarks"], table["matrix"])])  # (N, 68, 2)
    masks = np.stack([np.round(hull_mask(p, faces.shape[1], feather) * 255).astype(np.uint8) for p in points])
    return table, faces, masks, points


def test_decoded_arrays_equal_the_decoded_pngs(faceset):
    table, faces, masks, points = _decoded_by_hand(faceset)
    decoded = trainset.open_faceset(faceset)
    assert isinstance(decoded.faces, np.memmap) and isinstance(decoded.masks, np.memmap)
    assert len(decoded) == len(table) >= 10
    np.testing.assert_array_equal(decoded.faces, faces)
    np.testing.assert_array_equal(decoded.masks, masks)
    np.testing.assert_allclose(decoded.points, points, atol=1e-4)
    assert list(decoded.face_ids) == list(table["face_id"])
    # The parquet path names the same cache; the folder holds only the published file and the cache.
    again = trainset.open_faceset(faceset / "faceset.parquet")
    assert again.folder == decoded.folder
    assert sorted(p.name for p in faceset.iterdir()) == [".decoded", "faceset.parquet"]


def test_second_open_decodes_nothing(faceset, monkeypatch):
    trainset.open_faceset(faceset)

    def no_decoding(*args):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(trainset, "decode_image", no_decoding)
    assert len(trainset.open_faceset(faceset)) > 0
    with pytest.raises(AssertionError, match="decoded again"):  # another feather is another cache
        trainset.open_faceset(faceset, feather=3)


def test_rewritten_table_and_damaged_cache_are_decoded_again(faceset, tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    table = facetable.read_faces(faceset / "faceset.parquet")
    facetable.write_table(folder / "faceset.parquet", table.iloc[:4])
    first = trainset.open_faceset(folder)
    assert len(first) == 4
    facetable.write_table(folder / "faceset.parquet", table.iloc[:6])  # rewritten in place
    assert len(trainset.open_faceset(folder)) == 6
    damaged = trainset.open_faceset(folder).folder
    (damaged / "masks.npy").write_bytes(b"not an array")
    np.testing.assert_array_equal(trainset.open_faceset(folder).masks, _decoded_by_hand(folder)[2])


def test_a_segmented_faceset_decodes_as_one_table(faceset, tmp_path):
    table = facetable.read_faces(faceset / "faceset.parquet")
    folder = tmp_path / "set"
    facetable.write_table(folder / "faceset.parquet" / "00000-a.parquet", table.iloc[:5])
    facetable.write_table(folder / "faceset.parquet" / "00001-b.parquet", table.iloc[5:])
    decoded, whole = trainset.open_faceset(folder), trainset.open_faceset(faceset)
    assert decoded.folder.parent == folder / trainset.DECODED and len(decoded) == len(table)
    np.testing.assert_array_equal(decoded.faces, whole.faces)
    np.testing.assert_array_equal(decoded.masks, whole.masks)
    assert list(decoded.face_ids) == list(whole.face_ids)
    facetable.write_table(folder / "faceset.parquet" / "00001-b.parquet", table.iloc[5:7])  # a segment replaced
    assert len(trainset.open_faceset(folder)) == 7


def _open_in_child(folder: str, queue) -> None:
    decoded = trainset.open_faceset(Path(folder))
    queue.put((len(decoded), int(decoded.faces.sum(dtype=np.int64))))


def test_two_processes_building_at_once_agree(faceset, tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "faceset.parquet").write_bytes((faceset / "faceset.parquet").read_bytes())
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    children = [context.Process(target=_open_in_child, args=(str(folder), queue)) for _ in range(2)]
    for child in children:
        child.start()
    results = [queue.get(timeout=120) for _ in children]
    for child in children:
        child.join(timeout=30)
        assert child.exitcode == 0
    _, faces, _, _ = _decoded_by_hand(folder)
    assert results == [(len(faces), int(faces.sum(dtype=np.int64)))] * 2
    caches = list((folder / trainset.DECODED).iterdir())
    assert len(caches) == 1 and not caches[0].name.startswith(".tmp-")  # the loser's copy is gone


def test_rows_are_copied_and_resized_onto_the_device(faceset):
    decoded = trainset.open_faceset(faceset)
    index = np.array([5, 1, 3])
    np.testing.assert_array_equal(trainset.take(decoded.faces, index), np.asarray(decoded.faces)[index])
    on_device = trainset.rows_to_device(decoded.masks, np.arange(len(decoded)), 64, torch.device("cpu"))
    assert on_device.shape == (len(decoded), 1, 64, 64) and on_device.dtype == torch.uint8
    assert trainset.rows_max(decoded.masks, np.arange(len(decoded))) == 255


def test_empty_faceset_is_refused(tmp_path):
    facetable.write_faces(tmp_path / "faceset.parquet", [])
    with pytest.raises(ValueError, match="no faces"):
        trainset.open_faceset(tmp_path)
