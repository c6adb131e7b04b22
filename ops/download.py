"""Downloading source videos with yt-dlp's Python API.

Embedded yt-dlp differs from its CLI: it retries nothing unless told, its max_filesize
is only checked when the server sends a length, and file:// URLs are off (and stay
off: a URL from a project file must not read local files). So retries are explicit,
the byte cap is enforced by us, and the download lands in a temp folder inside
dest_dir that is deleted whatever happens, partial files included; only a complete
file is renamed into dest_dir.

The cap is checked three times: the length a HEAD request declares and the size yt-dlp's
extractor declares are refused before anything is written; a progress hook stops a
download that grows past it (servers that declare nothing, or lie).

Every request to a host goes through ops.hostgate: one at a time per host, `host_pause_seconds`
apart, so sources on different hosts download in parallel without hammering any one site.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yt_dlp
from yt_dlp.utils import DownloadCancelled, YoutubeDLError

from swapline.ops import hostgate, storage
from swapline.ops.download_settings import DownloadSettings  # noqa: F401 (re-exported)

logger = logging.getLogger(__name__)

# Small JSON-able fields of yt-dlp's info dict worth keeping (the rest can be megabytes).
INFO_KEYS = ("id", "title", "extractor", "webpage_url", "duration", "width", "height", "ext")
# Response headers that tell whether the file behind a URL changed, as recorded in a manifest.
VALIDATORS = {"etag": "ETag", "last_modified": "Last-Modified", "content_length": "Content-Length"}


class DownloadError(RuntimeError):
    """A URL that could not be downloaded; the message names the URL and the reason."""


class AlreadyDownloaded(DownloadError):
    """The video is recorded in the download archive, so nothing was downloaded."""


@dataclass
class Downloaded:
    path: Path
    sha256: str
    bytes: int
    info: dict[str, Any] = field(default_factory=dict)
    # ETag / Last-Modified / Content-Length of a direct file, seen before it was fetched;
    # empty for a page yt-dlp extracted the video from (see remote_change).
    validators: dict[str, str] = field(default_factory=dict)


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


def _too_large(settings: DownloadSettings, declared: int | None = None) -> str:
    limit = f"the limit of {settings.max_download_mb:g} MiB (downloads: max_download_mb)"
    if declared is None:
        return f"file is larger than {limit}"
    return f"file is larger than {limit}: {declared} bytes declared, nothing downloaded"


# http(s) handlers only: a redirect to file:// or ftp:// goes nowhere.
_OPENER = urllib.request.OpenerDirector()
for _handler in (urllib.request.ProxyHandler(), urllib.request.HTTPHandler(), urllib.request.HTTPSHandler(),
                 urllib.request.HTTPRedirectHandler(), urllib.request.HTTPDefaultErrorHandler(),
                 urllib.request.HTTPErrorProcessor()):
    _OPENER.add_handler(_handler)


def _head(url: str, settings: DownloadSettings) -> dict[str, str] | None:
    """The URL's validators from a HEAD request; None when the server answers HEAD with an
    error (many refuse HEAD, or only sign GETs). A stalled server raises DownloadError: it
    would stall yt-dlp's requests too, so its retries are not worth waiting for."""
    request = urllib.request.Request(url, method="HEAD", headers={"Accept-Encoding": "identity", "User-Agent": "swapline"})
    try:
        with _OPENER.open(request, timeout=settings.stall_timeout_seconds) as response:
            return {key: response.headers[name] for key, name in VALIDATORS.items() if response.headers.get(name)}
    except urllib.error.HTTPError:
        return None
    except (TimeoutError, urllib.error.URLError) as exc:
        if isinstance(exc, TimeoutError) or isinstance(exc.reason, TimeoutError):
            raise DownloadError(f"{url}: no answer within {settings.stall_timeout_seconds:g} s "
                                "(downloads: stall_timeout_seconds)") from None
        return None  # e.g. refused: yt-dlp retries and reports it in its own words
    except OSError:
        return None


def remote_change(url: str, recorded: dict[str, str] | None, settings: DownloadSettings | None = None,
                  *, gate_dir: Path | None = None) -> str | None:
    """What changed behind a direct-file URL since its `recorded` validators, in words; None when
    nothing did or nothing can be told. A page yt-dlp extracted the video from has none recorded
    (the page changes whenever its ads do): the URL stays its identity, as does a server that
    cannot be reached now (what was collected is kept rather than failing on it)."""
    if not recorded:
        return None
    settings = settings or DownloadSettings()
    _check_url(url)
    with hostgate.host_turn(url, settings.host_pause_seconds, gate_dir):
        try:
            now = _head(url, settings)
        except DownloadError as exc:
            now, reason = None, str(exc)
        else:
            reason = "no usable answer to a HEAD request"
    if now is None:
        logger.warning("%s: cannot check it for changes (%s); keeping what was collected", url, reason)
        return None
    changed = [f"{VALIDATORS[key]} {value!r} -> {now.get(key)!r}" for key, value in recorded.items()
               if key in VALIDATORS and now.get(key) != value]
    return ", ".join(changed) or None


def _format(max_height: int) -> str:
    cap = f"[height<=?{max_height}]"  # "?": direct links have no known height
    if shutil.which("ffmpeg"):
        return f"bv*{cap}+ba/b{cap}/wv*+ba/w"
    # Without ffmpeg yt-dlp cannot merge separate video and audio: single files only.
    return f"b{cap}/w"


def _byte_cap(settings: DownloadSettings):
    def hook(status: dict) -> None:
        # total_bytes comes from Content-Length; downloaded_bytes covers servers that send none.
        size = max(status.get("total_bytes") or 0, status.get("downloaded_bytes") or 0)
        if size > settings.max_bytes:
            raise _TooLarge(_too_large(settings))

    return hook


def _declared_size(settings: DownloadSettings, refused: list[str]):
    """A match_filter: yt-dlp calls it on the chosen format before requesting it. A refusal is
    returned, not raised (yt-dlp re-raises a cancel from a filter without its message), and
    noted in `refused`: yt-dlp then skips the video without recording it in the archive."""

    def check(info: dict, *, incomplete: bool = False) -> str | None:
        size = None if incomplete else info.get("filesize") or info.get("filesize_approx")
        if size and size > settings.max_bytes:
            refused.append(_too_large(settings, int(size)))
            return refused[-1]
        return None

    return check


def _options(settings: DownloadSettings, folder: Path, archive: Path | None, refused: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {
        "format": _format(settings.max_height),
        "retries": settings.retries,
        "fragment_retries": settings.fragment_retries,
        "skip_unavailable_fragments": False,  # else each stalled fragment costs the whole retry bill again
        "socket_timeout": settings.stall_timeout_seconds,
        "match_filter": _declared_size(settings, refused),
        "progress_hooks": [_byte_cap(settings)],
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
    if archive is not None:
        options["download_archive"] = str(archive)
    return options


def _reason(exc: Exception) -> str:
    return str(exc).removeprefix("ERROR: ").strip()


def _fetch(url: str, folder: Path, settings: DownloadSettings, archive: Path | None) -> tuple[dict, Path]:
    """Run yt-dlp into `folder`; return its sanitized info and the downloaded file."""
    refused: list[str] = []
    with yt_dlp.YoutubeDL(_options(settings, folder, archive, refused)) as ydl:
        try:
            info = ydl.extract_info(url, download=True)
        except _TooLarge as exc:
            raise DownloadError(f"{url}: {exc}") from None
        except YoutubeDLError as exc:
            raise DownloadError(f"{url}: {_reason(exc)}") from exc
        if refused:
            raise DownloadError(f"{url}: {refused[0]}")
        if not info:
            raise DownloadError(f"{url}: yt-dlp returned no information")
        if info.get("_type") == "playlist":
            raise DownloadError(f"{url}: is a playlist; give the URL of a single video")
        files = [Path(d["filepath"]) for d in info.get("requested_downloads") or [] if d.get("filepath")]
        files = [file for file in files if file.is_file()]
        if not files and archive is not None and ydl.in_download_archive(info):
            raise AlreadyDownloaded(f"{url}: already recorded in the download archive {archive}")
        if len(files) != 1:
            raise DownloadError(f"{url}: expected one downloaded file, yt-dlp produced {len(files)}")
        return ydl.sanitize_info(info), files[0]


def download_url(url: str, dest_dir: Path, settings: DownloadSettings | None = None, *,
                 archive: Path | None = None, gate_dir: Path | None = None) -> Downloaded:
    """Download one video from `url` into dest_dir, or raise DownloadError. `archive` is yt-dlp's
    record of what it fetched; `gate_dir` holds the per-host locks (ops.hostgate)."""
    settings = settings or DownloadSettings()
    _check_url(url)
    dest_dir = Path(dest_dir)
    with hostgate.host_turn(url, settings.host_pause_seconds, gate_dir):
        # Looked at before the download: had the file changed in between, the next check
        # sees new validators and fetches it again, rather than never.
        validators = _head(url, settings) or {}
        length = validators.get("content_length", "").strip()
        declared = int(length) if length.isdigit() else 0
        if declared > settings.max_bytes:
            raise DownloadError(f"{url}: {_too_large(settings, declared)}")
        dest_dir.mkdir(parents=True, exist_ok=True)
        # Inside dest_dir so the final rename never crosses filesystems.
        folder = Path(tempfile.mkdtemp(dir=dest_dir, prefix=".download-"))
        try:
            info, file = _fetch(url, folder, settings, archive)
            size = file.stat().st_size
            if size > settings.max_bytes:  # e.g. a merged file past the cap
                raise DownloadError(f"{url}: {_too_large(settings)}")
            digest = storage.sha256_file(file)
            final = dest_dir / file.name
            with storage.atomic_file(final) as staged:
                os.replace(file, staged)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    kept = {key: info[key] for key in INFO_KEYS if info.get(key) is not None}
    kept["ext"] = final.suffix.lstrip(".")
    logger.info("downloaded %s -> %s (%d bytes)", url, final, size)
    return Downloaded(path=final, sha256=digest, bytes=size, info=kept, validators=validators if info.get("direct") else {})
