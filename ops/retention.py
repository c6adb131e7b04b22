"""The folder side of `swapline gc`: find the artifact versions under a root, measure them, and
remove one safely. Which versions are still needed is decided elsewhere (swapline/gc.py, from
Dagster's records); nothing here judges that.

Only `v-*` folders are ever removed. A version folder is first renamed to `.trash-...` beside
it and deleted from there: a reader that opens `<location>/v-<version>/...` finds either the
whole version or nothing, never a half-deleted one. Names never start with `v-` otherwise:
identity, swap and conversion names are slugs without `-`, partition keys start with the
source kind (ops/storage.py, swapline/project.py).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from swapline.ops.storage import POINTER

logger = logging.getLogger(__name__)

VERSION_PREFIX = "v-"
TRASH_PREFIX = ".trash-"
LOCK = ".gc.lock"


class Busy(RuntimeError):
    """Another gc is at work on the same root."""


@contextmanager
def exclusive(root: Path) -> Iterator[None]:
    """Hold the root's gc lock: one gc at a time, so one never sweeps the trash of another that
    may still put a version back (remove_version)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(f"another `swapline gc` is running on {root}") from None
        yield


@dataclass(frozen=True)
class Location:
    """One asset partition's folder: its version folders and the one its pointer names."""

    path: Path
    versions: tuple[Path, ...]
    current: Path | None


def locations(root: Path) -> Iterator[Location]:
    """Every folder under `root` holding versions. Caches (`_cache`), training work (`_work`),
    temp and trash folders are not entered: whatever they hold is not a published version."""
    for dirpath, dirnames, _ in os.walk(root):
        here = Path(dirpath)
        versions = tuple(sorted(here / d for d in dirnames if d.startswith(VERSION_PREFIX)))
        dirnames[:] = [d for d in dirnames if not d.startswith((VERSION_PREFIX, ".", "_"))]
        if versions:
            yield Location(here, versions, pointed(here))


def pointed(location: Path) -> Path | None:
    """The version folder `current.json` names, or None (no pointer, or one being replaced)."""
    try:
        return location / json.loads((location / POINTER).read_text())["dir"]
    except (OSError, ValueError, KeyError):
        return None


def folder_bytes(folder: Path) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except FileNotFoundError:  # removed meanwhile
                continue
    return total


def is_young(folder: Path, grace_s: float, now: float) -> bool:
    """Published (or republished: publish touches it) within the last `grace_s` seconds. A
    folder that vanished counts as young: there is nothing to remove."""
    try:
        return folder.stat().st_mtime > now - grace_s
    except FileNotFoundError:
        return True


def remove_version(location: Path, version: Path, grace_s: float) -> bool:
    """Remove one version folder the caller judged unneeded; False when it was kept after all.

    A publisher of identical content may pick the folder up between that judgement and the
    rename (it touches the folder, then points at it): after the rename the folder is looked at
    again and put back if that happened."""
    trash = location / f"{TRASH_PREFIX}{version.name}-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        os.rename(version, trash)
    except FileNotFoundError:
        return False
    if pointed(location) == version or is_young(trash, grace_s, time.time()):
        try:
            os.rename(trash, version)
        except OSError:  # the publisher placed its own identical copy meanwhile: ours is surplus
            shutil.rmtree(trash, ignore_errors=True)
        logger.info("%s: republished while being removed; kept", version)
        return False
    shutil.rmtree(trash, ignore_errors=True)
    return True


def sweep_trash(location: Path) -> int:
    """Finish removals a crashed gc left behind in `location` (`.trash-*` is only ever gc's own),
    the next time gc removes something there; bytes freed."""
    freed = 0
    for child in location.iterdir():
        if child.name.startswith(TRASH_PREFIX) and child.is_dir():
            freed += folder_bytes(child)
            shutil.rmtree(child, ignore_errors=True)
    return freed
