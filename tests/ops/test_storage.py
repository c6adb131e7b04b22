"""Atomic, content-addressed artifact storage: a crash keeps the previous materialization."""

from __future__ import annotations

import pytest

from swapline.ops.storage import ArtifactStore, MissingArtifact, write_manifest


def test_publish_and_read_back(tmp_path):
    store = ArtifactStore(tmp_path)
    location = store.location("anna", "frames", "p1")
    first = store.publish(location, lambda d: write_manifest(d, {"n": 1}))
    assert store.current(location) == first and first.manifest() == {"n": 1}
    again = store.publish(location, lambda d: write_manifest(d, {"n": 1}))
    assert again.version == first.version  # same content, same version
    second = store.publish(location, lambda d: write_manifest(d, {"n": 2}))
    assert second.version != first.version and not first.path.exists()  # old version collected


def test_crash_during_build_leaves_previous_intact(tmp_path):
    store = ArtifactStore(tmp_path)
    location = store.location("anna", "faceset")
    good = store.publish(location, lambda d: write_manifest(d, {"faces": 10}))

    def crash(folder):
        (folder / "half.bin").write_bytes(b"partial")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        store.publish(location, crash)
    assert store.current(location) == good and good.manifest() == {"faces": 10}
    assert [p.name for p in location.iterdir() if p.name.startswith(".tmp-")] == []


def test_missing_artifact_says_what_to_do(tmp_path):
    with pytest.raises(MissingArtifact, match="materialize the upstream asset first"):
        ArtifactStore(tmp_path).current(tmp_path / "nothing")
