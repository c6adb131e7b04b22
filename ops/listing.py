"""What a URL source holds now: a single video, or the entries of a playlist, channel, feed,
page with several videos or search, listed flat by yt-dlp (one request, nothing downloaded).

Each entry gets a stable identity, so a new upload is recognised as new whatever its position:
the extractor and its id (for an RSS item, its <guid>), or, where the id is only a position
on a page (yt-dlp's html5 entries: "page-1", "page-2"), the media URL itself. The selection a
user asks for (newest N, after a date, duration bounds, a title regex, rejected ids) is
applied here on the flat list: yt-dlp's own date and match filters do not act on flat entries.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from swapline.ops.download_settings import DownloadSettings

logger = logging.getLogger(__name__)


class ListingError(RuntimeError):
    """The URL could not be listed (unreachable, malformed, not something yt-dlp understands)."""


@dataclass(frozen=True)
class Entry:
    id: str  # stable identity: "<extractor>:<id>", an RSS guid, or the media URL
    url: str  # what to download (yt-dlp's entry URL)
    title: str
    uploaded: float | None  # POSIX seconds, when the listing says
    duration: float | None  # seconds, when the listing says
    source_url: str  # the listed URL it came from

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Listing:
    url: str
    single: bool  # the URL is one video, not a list
    entries: list[Entry]


class Selection(BaseModel):
    """Which entries of an expanding URL source are collected (all of them by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_entries: int | None = Field(default=None, ge=1, description="Only the newest N entries (by upload time, else list order).")
    after: dt.date | None = Field(default=None, description="Only entries uploaded on or after this date (entries without a date are kept).")
    min_duration: float | None = Field(default=None, ge=0, description="Only entries at least this many seconds long (unknown durations are kept).")
    max_duration: float | None = Field(default=None, gt=0, description="Only entries at most this many seconds long (unknown durations are kept).")
    title: str | None = Field(default=None, description="Only entries whose title matches this regular expression (case-insensitive).")
    exclude: list[str] = Field(default_factory=list, description="Entry ids (as `collect` prints them) never to collect.")

    @field_validator("title")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"title is not a valid regular expression: {exc}") from None
        return value


def _entry_id(entry: dict[str, Any], url: str) -> str:
    from yt_dlp.utils import unsmuggle_url

    _, smuggled = unsmuggle_url(url, {})
    if guid := smuggled.get("force_videoid"):  # an RSS item: its <guid>
        return f"rss:{guid}"
    extractor = entry.get("ie_key") or entry.get("extractor_key") or entry.get("extractor") or "generic"
    if entry.get("id") and not str(extractor).lower().startswith("html5"):
        return f"{str(extractor).lower()}:{entry['id']}"
    return unsmuggle_url(url)[0]  # a position on a page is no identity: the media URL is


def _entry(raw: dict[str, Any], source_url: str) -> Entry | None:
    url = raw.get("url") or raw.get("webpage_url")
    if not url:
        return None
    url = urllib.parse.urljoin(source_url, url)
    return Entry(id=_entry_id(raw, url), url=url, title=str(raw.get("title") or ""), uploaded=_uploaded(raw),
                 duration=float(raw["duration"]) if raw.get("duration") else None, source_url=source_url)


def _uploaded(raw: dict[str, Any]) -> float | None:
    if raw.get("timestamp"):
        return float(raw["timestamp"])
    if date := raw.get("upload_date"):  # YYYYMMDD
        return dt.datetime.strptime(date, "%Y%m%d").replace(tzinfo=dt.timezone.utc).timestamp()
    return None


def list_url(url: str, settings: DownloadSettings | None = None, *, gate_dir: Path | None = None) -> Listing:
    """The entries `url` holds now (flat: one request for the list, nothing downloaded), with the
    project's stall timeout and retries, taking its turn on the host like a download does."""
    import yt_dlp
    from yt_dlp.utils import YoutubeDLError

    from swapline.ops import hostgate
    from swapline.ops.download import _check_url, _Log

    settings = settings or DownloadSettings()
    _check_url(url)
    options = {"extract_flat": "in_playlist", "skip_download": True, "quiet": True, "noprogress": True, "cachedir": False,
               "socket_timeout": settings.stall_timeout_seconds, "retries": settings.retries,
               "extractor_retries": settings.retries, "logger": _Log()}
    try:
        with hostgate.host_turn(url, settings.host_pause_seconds, gate_dir), yt_dlp.YoutubeDL(options) as ydl:
            info = ydl.sanitize_info(ydl.extract_info(url, download=False))
    except YoutubeDLError as exc:
        raise ListingError(f"{url}: cannot be listed: {str(exc).removeprefix('ERROR: ').strip()}") from None
    if not info:
        raise ListingError(f"{url}: yt-dlp returned nothing")
    if info.get("_type") not in ("playlist", "multi_video"):
        return Listing(url, True, [Entry(id=_entry_id(info, info.get("webpage_url") or url), url=url,
                                         title=str(info.get("title") or ""), uploaded=_uploaded(info),
                                         duration=float(info["duration"]) if info.get("duration") else None, source_url=url)])
    entries = [e for raw in info.get("entries") or [] if raw and (e := _entry(raw, url)) is not None]
    return Listing(url, False, list({e.id: e for e in entries}.values()))  # a page listing a video twice: once


def select(entries: list[Entry], selection: Selection) -> tuple[list[Entry], dict[str, str]]:
    """(kept, {entry id: why it was left out}), in the listing's order."""
    dropped: dict[str, str] = {}
    after = dt.datetime.combine(selection.after, dt.time(), dt.timezone.utc).timestamp() if selection.after else None
    pattern = re.compile(selection.title, re.IGNORECASE) if selection.title else None
    for e in entries:
        if e.id in selection.exclude:
            dropped[e.id] = "excluded"
        elif after is not None and e.uploaded is not None and e.uploaded < after:
            dropped[e.id] = f"uploaded before {selection.after}"
        elif selection.min_duration is not None and e.duration is not None and e.duration < selection.min_duration:
            dropped[e.id] = f"shorter than {selection.min_duration:g} s"
        elif selection.max_duration is not None and e.duration is not None and e.duration > selection.max_duration:
            dropped[e.id] = f"longer than {selection.max_duration:g} s"
        elif pattern is not None and not pattern.search(e.title):
            dropped[e.id] = f"title does not match {selection.title!r}"
    kept = [e for e in entries if e.id not in dropped]
    if selection.max_entries is not None and len(kept) > selection.max_entries:
        order = sorted(range(len(kept)), key=lambda i: (kept[i].uploaded is not None, kept[i].uploaded or 0, -i), reverse=True)
        newest = {kept[i].id for i in order[: selection.max_entries]}
        for e in kept:
            if e.id not in newest:
                dropped[e.id] = f"not among the newest {selection.max_entries}"
        kept = [e for e in kept if e.id in newest]
    return kept, dropped
