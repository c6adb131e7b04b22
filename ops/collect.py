"""Collection: record where each source's media is and what its content is.

A local video or photo folder is recorded by content hash (not copied), so re-collecting an
unchanged source yields the same manifest and the same data version; a URL is downloaded
into the artifact folder once.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable

from swapline.ops.images import IMAGE_SUFFIXES
from swapline.ops.storage import files_under, hash_json, link_or_copy, sha256_file

logger = logging.getLogger(__name__)


class SourceChanged(RuntimeError):
    """A local source no longer matches what was collected."""


def collect_video(path: Path) -> dict[str, Any]:
    return {"kind": "video", "path": str(path), "sha256": sha256_file(path), "bytes": path.stat().st_size}


def list_photos(folder: Path) -> list[Path]:
    """Image files of a folder and its sub-folders, in a stable order (part by part); hidden
    files and folders skipped (storage.files_under: the source watch lists the folder every minute)."""
    return [Path(folder, name) for name in files_under(folder, skip_hidden=True)
            if os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES]


# path -> (size, mtime_ns, inode, sha256) of photos hashed by this process: the source watch
# runs in the long-lived code server, so after its first look a folder's changed files are
# the only ones it reads again. Bounded: a process that saw too many files starts over.
_HASHED: dict[str, tuple[int, int, int, str]] = {}
_HASHED_MAX = 500_000


def collect_photos(folder: Path, known: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The folder's photos with their content hashes. A file whose size and modification time
    are those of `known` (the files of a previous manifest), or of a file this process hashed
    before, keeps that hash instead of being read again (the source watch notices changes by
    the same stamps), so re-collecting a large folder after an addition reads the new photos."""
    stamps = {f["path"]: f for f in known or [] if "mtime_ns" in f}
    files = []
    for path in list_photos(folder):
        stat = path.stat()
        before, seen = stamps.get(str(path)), _HASHED.get(str(path))
        if before is not None and (before["bytes"], before["mtime_ns"]) == (stat.st_size, stat.st_mtime_ns):
            digest = before["sha256"]
        elif seen is not None and seen[:3] == (stat.st_size, stat.st_mtime_ns, stat.st_ino):
            digest = seen[3]
        else:
            digest = sha256_file(path)
        if len(_HASHED) >= _HASHED_MAX:
            _HASHED.clear()
        _HASHED[str(path)] = (stat.st_size, stat.st_mtime_ns, stat.st_ino, digest)
        files.append({"path": str(path), "sha256": digest, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    return {"kind": "photos", "path": str(folder), "files": files}


def collect_url(url: str, dest_dir: Path, fetch: Callable[[str, Path], Any]) -> dict[str, Any]:
    """Download `url` into `dest_dir` (the artifact's temp folder) with `fetch(url, dest_dir)`."""
    got = fetch(url, dest_dir)
    return {
        "kind": "url",
        "url": url,
        "file": Path(got.path).name,
        "sha256": got.sha256,
        "bytes": got.bytes,
        "info": got.info,
        # ETag / Last-Modified / Content-Length of a direct file: a HEAD later tells whether it changed.
        "validators": got.validators,
    }


def collect_batch(entries: list[dict[str, Any]], dest_dir: Path, fetch: Callable[[str, Path], Any],
                  previous: dict[str, Any] | None = None, previous_dir: Path | None = None,
                  changed: Callable[[str, dict[str, str]], str | None] | None = None) -> dict[str, Any]:
    """Download a batch's entries (a URL source's listing, ops/ledger.py) into `dest_dir`, one
    folder per entry. An entry the previous version of this batch already holds is linked from
    there, not downloaded again; an entry that fails is recorded with its reason and the others
    go on (the next collection retries it). Raises DownloadFailed when none could be collected."""
    held = {e["id"]: e for e in (previous or {}).get("entries", []) if e.get("file")}
    out = []
    for i, entry in enumerate(entries):
        kept = held.get(entry["id"])
        if (kept is not None and previous_dir is not None and not _changed_upstream(kept, changed)
                and link_or_copy(previous_dir / kept["file"], dest_dir / kept["file"])):
            out.append(kept)  # the previous version's file, linked: not downloaded again
            continue
        try:
            got = fetch(entry["url"], dest_dir / f"e{i:04d}")
        except Exception as exc:  # noqa: BLE001 - one entry's failure is recorded; the batch goes on
            logger.warning("%s: %s", entry["url"], exc)
            out.append({**entry, "error": str(exc)})
            continue
        out.append({**entry, "file": f"e{i:04d}/{Path(got.path).name}", "sha256": got.sha256, "bytes": got.bytes,
                    "validators": got.validators})
    if not any(e.get("file") for e in out):
        raise DownloadFailed("no entry of this batch could be collected: " + "; ".join(e["error"] for e in out[:3]))
    return {"kind": "batch", "entries": out}


def _changed_upstream(entry: dict[str, Any], changed: Callable[[str, dict[str, str]], str | None] | None) -> bool:
    """Whether the file behind a held entry's URL changed, asked with `changed(url, validators)`
    (one HEAD). Only a single-video URL (the entry is the source's own URL) that was a direct
    file (validators recorded) is asked: a page yt-dlp extracts from keeps its URL as its
    identity (a page changes with every ad), and a feed's entries are not asked one by one (a
    HEAD each, paused per host, every collection)."""
    if changed is None or entry["url"] != entry.get("source_url") or not entry.get("validators"):
        return False
    if reason := changed(entry["url"], entry["validators"]):
        logger.info("%s changed since it was collected (%s): downloading it again", entry["url"], reason)
        return True
    return False


class DownloadFailed(RuntimeError):
    """Not one entry of a batch could be downloaded."""


def batch_videos(manifest: dict[str, Any], artifact_dir: Path) -> list[tuple[dict[str, Any], Path]]:
    """(entry, video file) of every collected entry of a batch manifest."""
    return [(e, artifact_dir / e["file"]) for e in manifest["entries"] if e.get("file")]


def content_key(manifest: dict[str, Any]) -> dict[str, Any]:
    """The part of a manifest that identifies content: what the data version is computed from."""
    if manifest["kind"] == "photos":
        return {"kind": "photos", "files": sorted(f["sha256"] for f in manifest["files"])}
    if manifest["kind"] == "batch":
        return {"kind": "batch", "files": sorted(e["sha256"] for e in manifest["entries"] if e.get("file"))}
    return {"kind": manifest["kind"], "sha256": manifest["sha256"]}


def content_version(manifest: dict[str, Any]) -> str:
    """source_media's data version, and the version the source watch observes for a local source:
    one function, so an observation and the collection that follows it agree."""
    return hash_json(content_key(manifest))[:32]


def local_fingerprint(video: Path | None = None, photos: Path | None = None) -> str:
    """Names, sizes and modification times of a local source's files: cheap to take every minute,
    and it changes whenever a file is added, removed or rewritten (the content is hashed only then)."""
    if video is not None:
        stat = video.stat()
        return hash_json(["video", stat.st_size, stat.st_mtime_ns])
    entries = []
    for path in list_photos(photos):
        stat = path.stat()
        entries.append([str(path.relative_to(photos)), stat.st_size, stat.st_mtime_ns])
    return hash_json(["photos", entries])


def media_path(manifest: dict[str, Any], artifact_dir: Path) -> Path:
    """The video file a collected video/url manifest points at, checked against its hash."""
    path = artifact_dir / manifest["file"] if manifest["kind"] == "url" else Path(manifest["path"])
    if not path.is_file():
        raise SourceChanged(f"{path} is gone since it was collected: re-materialize source_media.")
    if manifest["kind"] == "video" and path.stat().st_size != manifest["bytes"]:
        raise SourceChanged(f"{path} changed since it was collected: re-materialize source_media.")
    return path
