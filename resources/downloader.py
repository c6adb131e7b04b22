"""Downloads URL sources with yt-dlp, with the limits an unattended pipeline needs."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

from swapline.ops.download import AlreadyDownloaded, Downloaded, DownloadSettings, download_url


class Downloader(dg.ConfigurableResource):
    """yt-dlp with explicit retries, a timeout, a byte cap we enforce and a resolution cap."""

    retries: int = Field(default=10, ge=0, description="HTTP retries (embedded yt-dlp retries nothing unless told).")
    fragment_retries: int = Field(default=10, ge=0, description="Retries per fragment of segmented streams.")
    socket_timeout: float = Field(default=20.0, gt=0, description="Seconds before a stalled connection fails.")
    max_megabytes: int = Field(default=4096, ge=1, description="Abort a download larger than this (enforced by us).")
    max_height: int = Field(default=1080, ge=144, description="Best format at or below this height.")

    def fetch(self, url: str, dest_dir: Path, archive: Path | None = None) -> Downloaded:
        """Download into dest_dir, recording the video in `archive`. A video the archive already
        lists whose file we no longer hold is fetched again rather than failing."""
        try:
            return download_url(url, dest_dir, self._settings(archive))
        except AlreadyDownloaded:
            return download_url(url, dest_dir, self._settings(None))

    def _settings(self, archive: Path | None) -> DownloadSettings:
        return DownloadSettings(
            retries=self.retries,
            fragment_retries=self.fragment_retries,
            socket_timeout=self.socket_timeout,
            max_bytes=self.max_megabytes * 1024 * 1024,
            max_height=self.max_height,
            archive=archive,
        )
