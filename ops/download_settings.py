"""The `downloads:` settings, without yt-dlp: the project file embeds them, and loading a project
must not import the downloader (ops/download.py uses them)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DownloadSettings(BaseModel):
    """`downloads:` in the project file (defined here once). A stalled server fails a download
    after (retries + 1) x stall_timeout_seconds: 60 s with the defaults. yt-dlp sleeps nothing
    between retries unless told, and a stalled fragment of a segmented stream aborts the
    download rather than being skipped, so that is the whole bill."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_download_mb: float = Field(default=2048, gt=0, description="Refuse a file larger than this many MiB: a declared "
                                   "length over it is refused up front, a download growing past it is stopped and deleted.")
    stall_timeout_seconds: float = Field(default=20, gt=0, description="Seconds without a byte before a connection counts as stalled.")
    retries: int = Field(default=2, ge=0, le=20, description="Tries after the first on a stalled or failed connection.")
    fragment_retries: int = Field(default=3, ge=0, le=20, description="Tries after the first of a fragment of a segmented "
                                  "stream (HLS, DASH) that fails with an HTTP error.")
    max_height: int = Field(default=1080, ge=144, description="Take the best format at or below this height.")
    host_pause_seconds: float = Field(default=1, ge=0, le=600, description="Pause between two downloads (or change checks) "
                                      "from the same host; different hosts download in parallel.")

    @property
    def max_bytes(self) -> int:
        return int(self.max_download_mb * 1024 * 1024)
