"""One request at a time per host, with a pause between them, across every process on a machine.

Dagster runs each partition in its own process, so a lock inside Python would not do: each
host (host:port, so two servers on one address are two hosts) has a lock file taken with
`fcntl.flock`, and the file holds the time the host's last turn ended. Different hosts never
wait for each other; the same host is served one turn at a time, `pause` seconds apart.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)


def default_dir() -> Path:
    # Per user, machine-wide: every project and process of this user shares one view of a host.
    return Path(tempfile.gettempdir()) / f"swapline-hosts-{os.getuid()}"


def host_key(url: str) -> str:
    """host:port of a URL, the default port filled in, so http://a and http://a:80 are one host."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower(), 0)
    return f"{(parts.hostname or '').lower()}:{port}"


@contextmanager
def host_turn(url: str, pause: float, folder: Path | None = None) -> Iterator[None]:
    """Hold this URL's host for the duration of the block: wait for any other turn on the host
    to end, then until `pause` seconds have passed since it ended."""
    folder = Path(folder or default_dir())
    folder.mkdir(parents=True, exist_ok=True)
    key = host_key(url)
    path = folder / (re.sub(r"[^A-Za-z0-9.:-]+", "_", key).replace(":", "_") + ".lock")
    with open(path, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed, even if we crash
        lock.seek(0)
        try:
            last = float(lock.read().strip() or 0)
        except ValueError:
            last = 0.0
        # Clamped to `pause`: a clock set back, or a stale file, never makes us wait longer.
        wait = min(pause, max(0.0, last + pause - time.time()))
        if wait > 0:
            logger.debug("waiting %.1f s before the next request to %s", wait, key)
            time.sleep(wait)
        try:
            yield
        finally:
            lock.seek(0)
            lock.truncate()
            lock.write(f"{time.time():.3f}\n")
            lock.flush()
