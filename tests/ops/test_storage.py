"""Atomic, content-addressed artifact storage: a crash keeps the previous materialization, a new
one keeps the earlier ones, and writers racing on one location all succeed."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from swapline.ops.retention import remove_version
from swapline.ops.storage import ArtifactStore, MissingArtifact, tree_hash, write_manifest


def test_publish_and_read_back(tmp_path):
    store = ArtifactStore(tmp_path)
    location = store.location("anna", "frames", "p1")
    first = store.publish(location, lambda d: write_manifest(d, {"n": 1}))
    assert store.current(location) == first and first.manifest() == {"n": 1}
    again = store.publish(location, lambda d: write_manifest(d, {"n": 1}))
    assert again.version == first.version  # same content, same version
    second = store.publish(location, lambda d: write_manifest(d, {"n": 2}))
    assert second.version != first.version and store.current(location) == second


def test_a_new_version_keeps_the_previous_one_readable(tmp_path):
    """A run still reading the previous version (or the UI's earlier materialization) finds it whole."""
    store = ArtifactStore(tmp_path)
    location = store.location("anna", "faceset")

    def build(n):
        def write(folder):
            (folder / "faces").mkdir()
            (folder / "faces" / "0.bin").write_bytes(bytes([n]) * 1000)
            write_manifest(folder, {"n": n})
        return write

    first = store.publish(location, build(1))
    store.publish(location, build(2))
    store.publish(location, build(3))
    assert store.current(location).manifest() == {"n": 3}
    assert first.manifest() == {"n": 1}
    with open(first.path / "faces" / "0.bin", "rb") as handle:
        assert handle.read() == bytes([1]) * 1000
    assert tree_hash(first.path)[:32] == first.version


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


def test_a_removal_puts_back_a_version_republished_meanwhile(tmp_path):
    """gc judged both versions unneeded (old, not current); then identical content of the first
    was published again before gc got to it: that one stays, the other goes, no trash is left."""
    store = ArtifactStore(tmp_path)
    location = store.location("anna", "faceset")
    first = store.publish(location, lambda d: write_manifest(d, {"n": 1}))
    second = store.publish(location, lambda d: write_manifest(d, {"n": 2}))
    hours_ago = time.time() - 7200
    for version in (first, second):
        os.utime(version.path, (hours_ago, hours_ago))
    assert store.publish(location, lambda d: write_manifest(d, {"n": 1})) == first
    assert first.path.stat().st_mtime > time.time() - 60  # republishing restarts its grace period
    assert remove_version(location, first.path, grace_s=3600) is False
    assert first.manifest() == {"n": 1} and store.current(location) == first
    assert remove_version(location, second.path, grace_s=3600) is True
    assert not second.path.exists()
    assert sorted(p.name for p in location.iterdir()) == sorted(["current.json", first.path.name])


# One writer process: publishes `rounds` times to one location, meeting the other writer at the
# start of each round (a file each) so that their renames and pointer writes collide.
WRITER = r"""
import sys, time
from pathlib import Path
from swapline.ops.storage import ArtifactStore
root, meet_dir, me, other, rounds, mode = Path(sys.argv[1]), Path(sys.argv[2]), *sys.argv[3:5], int(sys.argv[5]), sys.argv[6]
store = ArtifactStore(root)
for i in range(rounds):
    tag = str(i) if mode == "same" else f"{me}{i}"
    def build(folder, tag=tag):
        (folder / "faces").mkdir()
        for n in range(20):
            (folder / "faces" / f"{n}.bin").write_bytes(tag.encode() * 2000)
        (folder / "manifest.json").write_text(tag)
    (meet_dir / f"{i}-{me}").touch()
    deadline = time.monotonic() + 30
    while not (meet_dir / f"{i}-{other}").exists() and time.monotonic() < deadline:
        time.sleep(0.0002)
    store.publish(store.location("anna", "faceset"), build)
"""


def assert_complete(published) -> None:
    """Every file of the version is there and its content is what its name says."""
    assert (published.path / "manifest.json").is_file()
    assert len(list((published.path / "faces").iterdir())) == 20
    assert tree_hash(published.path)[:32] == published.version


@pytest.mark.parametrize("mode", ["same", "different"])
def test_two_processes_publishing_one_location_at_once_both_succeed(tmp_path, mode):
    """Identical content: the slower writer finds the faster one's folder (even between its own
    check and rename) and keeps it. Different content: both versions stay, the pointer names one
    of them. Meanwhile a reader always finds the pointer naming a complete version."""
    rounds, meet_dir = 150, tmp_path / "meet"
    meet_dir.mkdir()
    store = ArtifactStore(tmp_path / "artifacts")
    location = store.location("anna", "faceset")
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(store.root), str(meet_dir), me, other, str(rounds), mode],
                                stderr=subprocess.PIPE, text=True) for me, other in (("a", "b"), ("b", "a"))]
    seen = 0
    while any(w.poll() is None for w in writers):
        if (published := store.current_or_none(location)) is not None:
            assert_complete(published)
            seen += 1
    errors = [w.communicate()[1] for w in writers]
    assert [w.returncode for w in writers] == [0, 0], errors
    assert seen > 0  # the reader did look while the writers were at work
    final = store.current(location)
    assert_complete(final)
    versions = [p for p in location.iterdir() if p.name.startswith("v-")]
    assert len(versions) == (rounds if mode == "same" else 2 * rounds)  # nothing deleted, nothing doubled
    assert not [p for p in location.iterdir() if p.name.startswith(".tmp-")]
    last = {"same": {str(rounds - 1)}, "different": {f"a{rounds - 1}", f"b{rounds - 1}"}}[mode]
    assert (final.path / "manifest.json").read_text() in last
