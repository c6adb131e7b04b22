"""Atomic, content-addressed artifact storage.

Every artifact of an asset partition lives in its own folder:

    <root>/<asset path>/<partition>/
        current.json        the manifest pointer: {"version": ..., "dir": "v-<version>"}
        v-<version>/        the files of that materialization

A writer builds into a temp folder beside the final one, names it after a hash of its
content, renames it into place, then atomically replaces `current.json`. A crash at any
point leaves the previous `current.json` and its folder intact. Readers follow
`current.json` (or the version Dagster recorded), never "the latest file in a folder".
Publishing deletes no version: `swapline gc` (ops/retention.py) removes the ones nothing
needs any more.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

logger = logging.getLogger(__name__)

POINTER = "current.json"
ORPHAN_AGE_S = 6 * 3600  # a temp folder this old has no live writer
_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def hash_json(obj: Any) -> str:
    """A stable hash of JSON-able data (sorted keys), used for settings and manifests."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes, mode: int | None = None) -> Path:
    """Write `data` to `path` via a temp file in the same folder, fsync, then rename. `mode`: the
    file's permissions, set before it appears (the temp file is created 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


@contextmanager
def atomic_file(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path beside `path` (same suffix, so writers pick the right format);
    on success fsync and rename it onto `path`; on failure delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=suffix or path.suffix)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    finally:
        tmp_path.unlink(missing_ok=True)


def link_or_copy(src: Path, dest: Path, make_parent: bool = True) -> bool:
    """Hard-link (or, across filesystems, copy) a published file into a version being built;
    False when it is gone (gc removed its version meanwhile): the caller makes it afresh.
    `make_parent=False`: the caller made the folder (one system call per file, for thousands)."""
    if make_parent:
        dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except FileNotFoundError:
        return False
    except OSError:  # another filesystem, or one without hard links
        try:
            shutil.copyfile(src, dest)
        except FileNotFoundError:
            return False
    return True


def tree_hash(folder: Path) -> str:
    """Hash of every file's relative path and content under `folder`."""
    digest = hashlib.sha256()
    for relative in files_under(folder):
        digest.update(relative.encode() + b"\0")
        digest.update(known_sha256(Path(folder, relative)).encode())
    return digest.hexdigest()


def files_under(root: str | Path, skip_hidden: bool = False) -> list[str]:
    """Relative POSIX paths of the files under `root`, sorted part by part (as sorted Paths are);
    a linked folder is not walked (no cycles). `skip_hidden`: names starting with "." are left
    out, files and folders alike. os.scandir, not rglob: a folder of thousands of photos is
    listed by every source-watch tick and hashed at every refresh, and rglob costs ~2-10x more."""
    found: list[tuple[str, ...]] = []
    stack: list[tuple[str, tuple[str, ...]]] = [(str(root), ())]
    while stack:
        path, parts = stack.pop()
        with os.scandir(path) as entries:
            for entry in entries:
                if skip_hidden and entry.name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, (*parts, entry.name)))
                elif entry.is_file():
                    found.append((*parts, entry.name))
    return ["/".join(parts) for parts in sorted(found)]


_HASH_ATTR = "user.swapline.sha256"


def known_sha256(path: Path) -> str:
    """sha256_file, remembered on the file itself (an extended attribute naming the size and
    modification time it was taken at). A hard link shares it: a new version that links the
    unchanged segments of the previous one (ops/facesegments.py) hashes only what it wrote, so
    publishing an addition costs the addition, not everything already there. Where the
    filesystem has no user attributes, or the file changed, the content is hashed."""
    stat = os.stat(path)
    stamp = f"{stat.st_size}:{stat.st_mtime_ns}:"
    try:
        value = os.getxattr(path, _HASH_ATTR).decode()
        if value.startswith(stamp):
            return value[len(stamp):]
    except (OSError, AttributeError):
        pass
    digest = sha256_file(path)
    try:
        os.setxattr(path, _HASH_ATTR, (stamp + digest).encode())
    except (OSError, AttributeError):  # no user xattrs here (some filesystems, macOS): hash each time
        pass
    return digest


@dataclass(frozen=True)
class Published:
    """One materialization of an artifact: its content version and its folder."""

    version: str
    path: Path

    def manifest(self) -> dict[str, Any]:
        return json.loads((self.path / "manifest.json").read_text())


class MissingArtifact(FileNotFoundError):
    pass


class ArtifactStore:
    """Artifacts under one root folder, addressed by (asset path, partition)."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()

    def location(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def current(self, location: Path) -> Published:
        pointer = location / POINTER
        if not pointer.is_file():
            raise MissingArtifact(
                f"No materialization at {location}: materialize the upstream asset first."
            )
        info = json.loads(pointer.read_text())
        return Published(version=info["version"], path=location / info["dir"])

    def current_or_none(self, location: Path) -> Published | None:
        try:
            return self.current(location)
        except MissingArtifact:
            return None

    def publish(self, location: Path, build: Callable[[Path], Any]) -> Published:
        """Run `build(tmp_dir)`, then publish tmp_dir as the current version of `location`;
        the version is the hash of what `build` wrote. Earlier versions stay: a run may still be
        reading one, and the UI's older materializations name them (`swapline gc` reclaims them)."""
        location.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=location, prefix=".tmp-"))
        try:
            build(tmp)
            version = tree_hash(tmp)[:32]
            final = location / f"v-{version}"
            _place(tmp, final)
            _fsync_dir(location)
            atomic_write_json(location / POINTER, {"version": version, "dir": final.name, "at": time.time()})
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _sweep_orphans(location)
        return Published(version=version, path=final)


def _place(tmp: Path, final: Path) -> None:
    """Rename `tmp` to `final`, or, when `final` holds the same content already (published
    before, or by a concurrent writer between our build and this rename), keep that one.
    Either way `final`'s mtime becomes now: gc spares versions younger than its grace period,
    so a version just (re)published is not removed under the pointer about to name it."""
    while True:
        try:
            os.replace(tmp, final)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        else:
            os.utime(final)
            return
        try:
            os.utime(final)
        except FileNotFoundError:
            continue  # gc removed it between the rename and now: publish ours after all
        shutil.rmtree(tmp)
        return


def _sweep_orphans(location: Path) -> None:
    """Remove temp folders left by crashed writers, once old enough that no live writer owns one."""
    stale_before = time.time() - ORPHAN_AGE_S
    for child in location.iterdir():
        try:
            if child.name.startswith(".tmp-") and child.is_dir() and child.stat().st_mtime < stale_before:
                shutil.rmtree(child, ignore_errors=True)
        except FileNotFoundError:  # another writer's sweep or rename got there first
            continue


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """The manifest.json of an artifact being built (inside its temp folder: publish makes it atomic)."""
    (Path(folder) / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
