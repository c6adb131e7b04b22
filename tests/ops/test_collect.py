"""Collecting a photo folder again reads only what changed."""

from __future__ import annotations

import os

from swapline.ops.collect import collect_photos, list_photos
from swapline.ops.storage import sha256_file


def test_unchanged_photos_keep_their_recorded_hash_and_changed_ones_are_read(tmp_path):
    for name in ("a.jpg", "b.jpg", "sub/c.png", ".hidden/d.jpg", "notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(name.encode() * 10)
    first = collect_photos(tmp_path)
    assert [f["path"] for f in first["files"]] == [str(p) for p in list_photos(tmp_path)]
    assert [os.path.relpath(f["path"], tmp_path) for f in first["files"]] == ["a.jpg", "b.jpg", "sub/c.png"]
    assert all(f["sha256"] == sha256_file(f["path"]) for f in first["files"])

    # A recorded hash is trusted while size and mtime stand (the marker proves a.jpg was not read) ...
    known = [dict(f, sha256="recorded") if f["path"].endswith("a.jpg") else f for f in first["files"]]
    # ... and b.jpg, rewritten with the same size, is read again because its mtime moved.
    b = tmp_path / "b.jpg"
    b.write_bytes(b"B" * b.stat().st_size)
    os.utime(b, ns=(b.stat().st_atime_ns, b.stat().st_mtime_ns + 10**9))
    again = {os.path.basename(f["path"]): f["sha256"] for f in collect_photos(tmp_path, known=known)["files"]}
    assert again == {"a.jpg": "recorded", "b.jpg": sha256_file(b), "c.png": sha256_file(tmp_path / "sub/c.png")}


def test_a_second_look_by_the_same_process_reads_only_changed_files(tmp_path, monkeypatch):
    from swapline.ops import collect

    for name in ("a.jpg", "b.jpg"):
        (tmp_path / name).write_bytes(name.encode() * 10)
    first = collect_photos(tmp_path)  # the watch's first look: every file read
    read: list[str] = []
    monkeypatch.setattr(collect, "sha256_file", lambda p: read.append(os.path.basename(p)) or sha256_file(p))
    (tmp_path / "c.jpg").write_bytes(b"new")
    b = tmp_path / "b.jpg"
    b.write_bytes(b"B" * b.stat().st_size)
    os.utime(b, ns=(b.stat().st_atime_ns, b.stat().st_mtime_ns + 10**9))
    again = collect_photos(tmp_path)
    assert sorted(read) == ["b.jpg", "c.jpg"]  # a.jpg's hash is remembered, the others are read
    assert again["files"][0] == first["files"][0] and all(f["sha256"] == sha256_file(f["path"]) for f in again["files"])
