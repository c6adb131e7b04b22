"""Downloading source videos with yt-dlp's Python API.

Embedded yt-dlp differs from its CLI: it retries nothing unless told, its max_filesize
is only checked when the server sends a length, and file:// URLs are off (and stay
off: a URL from a project file must not read local files). So retries are explicit,
the byte cap is enforced in a progress hook, and the download lands in a temp folder
inside dest_dir that is deleted whatever happens, partial files included; only a
complete file is renamed into dest_dir.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yt_dlp
from yt_dlp.utils import DownloadCancelled, YoutubeDLError

from swapline.ops import storage

logger = logging.getLogger(__name__)

# Small JSON-able fields of yt-dlp's info dict worth keeping (the rest can be megabytes).
INFO_KEYS = ("id", "title", "extractor", "webpage_url", "duration", "width", "height", "ext")


class DownloadError(RuntimeError):
    """A URL that could not be downloaded; the message names the URL and the reason."""


class AlreadyDownloaded(DownloadError):
    """The video is recorded in the download archive, so nothing was downloaded."""


@dataclass
class DownloadSettings:
    retries: int = 10
    fragment_retries: int = 10
    socket_timeout: float = 20
    max_bytes: int = 4 * 1024**3
    max_height: int = 1080
    archive: Path | None = None


@dataclass
class Downloaded:
    path: Path
    sha256: str
    bytes: int
    info: dict[str, Any] = field(default_factory=dict)


class _TooLarge(DownloadCancelled):
    # A DownloadCancelled subclass: yt-dlp lets those through its error handling
    # instead of turning them into a logged error and a normal return.
    pass


class _Log:
    """Routes yt-dlp's messages into our logging."""

    def debug(self, message: str) -> None:
        logger.debug("yt-dlp: %s", message)

    def info(self, message: str) -> None:
        logger.info("yt-dlp: %s", message)

    def warning(self, message: str) -> None:
        logger.warning("yt-dlp: %s", message)

    def error(self, message: str) -> None:
        # Not logged as an error: the same failure reaches the caller as DownloadError.
        logger.warning("yt-dlp: %s", message)


def _check_url(url: str) -> None:
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme == "file":
        raise DownloadError(f"{url}: file:// URLs are refused (add local files as files, not URLs)")
    if scheme not in {"http", "https"}:
        raise DownloadError(f"{url}: only http:// and https:// URLs can be downloaded")


def _format(max_height: int) -> str:
    cap = f"[height<=?{max_height}]"  # "?": direct links have no known height
    if shutil.which("ffmpeg"):
        return f"bv*{cap}+ba/b{cap}/wv*+ba/w"
    # Without ffmpeg yt-dlp cannot merge separate video and audio: single files only.
    return f"b{cap}/w"


def _byte_cap(max_bytes: int):
    def hook(status: dict) -> None:
        # total_bytes comes from Content-Length; downloaded_bytes covers servers that send none.
        size = max(status.get("total_bytes") or 0, status.get("downloaded_bytes") or 0)
        if size > max_bytes:
            raise _TooLarge(f"file is larger than the limit of {max_bytes} bytes")

    return hook


def _options(settings: DownloadSettings, folder: Path) -> dict[str, Any]:
    options: dict[str, Any] = {
        "format": _format(settings.max_height),
        "retries": settings.retries,
        "fragment_retries": settings.fragment_retries,
        "socket_timeout": settings.socket_timeout,
        "progress_hooks": [_byte_cap(settings.max_bytes)],
        "paths": {"home": str(folder), "temp": str(folder)},
        "outtmpl": {"default": "%(extractor_key)s-%(id).80B.%(ext)s"},
        "restrictfilenames": True,
        "noplaylist": True,
        "extract_flat": "in_playlist",  # a playlist URL lists its entries, downloads none
        "cachedir": False,
        "updatetime": False,
        "noprogress": True,
        "quiet": True,
        "color": {"stdout": "no_color", "stderr": "no_color"},
        "logger": _Log(),
    }
    if settings.archive is not None:
        options["download_archive"] = str(settings.archive)
    return options


def _reason(exc: Exception) -> str:
    return str(exc).removeprefix("ERROR: ").strip()


def _fetch(url: str, folder: Path, settings: DownloadSettings) -> tuple[dict, Path]:
    """Run yt-dlp into `folder`; return its sanitized info and the downloaded file."""
    with yt_dlp.YoutubeDL(_options(settings, folder)) as ydl:
        try:
            info = ydl.extract_info(url, download=True)
        except _TooLarge as exc:
            raise DownloadError(f"{url}: {exc}") from None
        except YoutubeDLError as exc:
            raise DownloadError(f"{url}: {_reason(exc)}") from exc
        if not info:
            raise DownloadError(f"{url}: yt-dlp returned no information")
        if info.get("_type") == "playlist":
            raise DownloadError(f"{url}: is a playlist; give the URL of a single video")
        files = [Path(d["filepath"]) for d in info.get("requested_downloads") or [] if d.get("filepath")]
        files = [file for file in files if file.is_file()]
        if not files and settings.archive is not None and ydl.in_download_archive(info):
            raise AlreadyDownloaded(f"{url}: already recorded in the download archive {settings.archive}")
        if len(files) != 1:
            raise DownloadError(f"{url}: expected one downloaded file, yt-dlp produced {len(files)}")
        return ydl.sanitize_info(info), files[0]


def download_url(url: str, dest_dir: Path, settings: DownloadSettings | None = None) -> Downloaded:
    """Download one video from `url` into dest_dir, or raise DownloadError."""
    settings = settings or DownloadSettings()
    _check_url(url)
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    # Inside dest_dir so the final rename never crosses filesystems.
    folder = Path(tempfile.mkdtemp(dir=dest_dir, prefix=".download-"))
    try:
        info, file = _fetch(url, folder, settings)
        size = file.stat().st_size
        if size > settings.max_bytes:  # e.g. a merged file past the cap
            raise DownloadError(f"{url}: file is larger than the limit of {settings.max_bytes} bytes")
        digest = storage.sha256_file(file)
        final = dest_dir / file.name
        with storage.atomic_file(final) as staged:
            os.replace(file, staged)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    kept = {key: info[key] for key in INFO_KEYS if info.get(key) is not None}
    kept["ext"] = final.suffix.lstrip(".")
    logger.info("downloaded %s -> %s (%d bytes)", url, final, size)
    return Downloaded(path=final, sha256=digest, bytes=size, info=kept)
